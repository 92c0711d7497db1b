//! TLS certificates from Secrets, AuthPolicy and RateLimitPolicy attachment and errors, and the
//! quickstart (which uses both policies).

use super::{errors, ok, route};
use std::time::Duration;

use weir_api::{
    compile,
    model::{Algorithm, HostMatch},
};

const TLS_GATEWAY: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: tls, namespace: shop}
spec:
  gatewayClassName: weir
  listeners:
  - name: a
    protocol: HTTPS
    port: 443
    hostname: a.example.com
    tls: {certificateRefs: [{name: shared}]}
  - name: b
    protocol: HTTPS
    port: 443
    tls: {certificateRefs: [{name: elsewhere, namespace: certs}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: i, namespace: shop}
spec:
  ingressClassName: weir
  tls: [{hosts: ['*.b.example.com'], secretName: shared}, {secretName: missing}]
---
apiVersion: v1
kind: Secret
metadata: {name: shared, namespace: shop}
type: kubernetes.io/tls
data: {tls.crt: Y2VydA==}
stringData: {tls.key: key}
---
apiVersion: v1
kind: Secret
metadata: {name: elsewhere, namespace: certs}
type: kubernetes.io/tls
stringData: {tls.crt: c, tls.key: k}
";

#[test]
fn tls_certificates_come_from_secrets_named_by_ingresses_and_https_listeners() {
    let snapshot = ok(TLS_GATEWAY);
    // One certificate per Secret, with every name asked of it.
    assert_eq!(snapshot.tls.len(), 1, "{:?}", snapshot.tls);
    let shared = &snapshot.tls[0];
    assert_eq!(shared.secret, "shop/shared");
    assert_eq!(
        shared.hosts,
        vec![
            HostMatch::Exact("a.example.com".into()),
            HostMatch::Wildcard(".b.example.com".into())
        ]
    );
    assert_eq!(&*shared.chain.0, b"cert", "data is base64-decoded");
    assert_eq!(&*shared.key.0, b"key", "stringData is read too");
    let json = serde_json::to_string(&snapshot).unwrap();
    assert!(json.contains(r#""key":"<3 secret bytes>""#), "{json}");
    let warnings = snapshot.warnings.join("\n");
    assert!(
        warnings.contains("Secret shop/missing not found: Ingress shop/i"),
        "{warnings}"
    );
    assert!(
        warnings
            .contains("certs/elsewhere is in another namespace and no ReferenceGrant allows it"),
        "{warnings}"
    );

    // A ReferenceGrant in the Secret's namespace lets the Gateway use it; a listener without
    // a hostname makes it the default certificate.
    let granted = format!("{TLS_GATEWAY}---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: g, namespace: certs}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: Gateway, namespace: shop}}]\n  to: [{{group: '', kind: Secret}}]\n");
    let snapshot = ok(&granted);
    let elsewhere = snapshot
        .tls
        .iter()
        .find(|c| c.secret == "certs/elsewhere")
        .unwrap();
    assert_eq!(elsewhere.hosts, vec![HostMatch::Any]);
}

#[test]
fn an_https_listener_without_certificates_is_an_error() {
    let yaml = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: shop}\nspec:\n  gatewayClassName: weir\n  listeners: [{name: s, protocol: HTTPS, port: 443}]\n";
    let errors = errors(yaml);
    assert!(errors[0].contains("spec.listeners[0].tls"), "{errors:?}");
}

#[test]
fn auth_and_rate_limit_policies_attach_to_their_routes_and_bad_fields_are_named() {
    let policies = "---
apiVersion: weir.dev/v1alpha1
kind: AuthPolicy
metadata: {name: a, namespace: shop}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]
  jwt: {providers: [{name: idp, issuer: 'https://idp', jwks: {uri: 'https://idp/jwks'}, forwardClaims: {sub: X-User}}]}
---
apiVersion: weir.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: l, namespace: shop}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]
  limits: [{name: u, key: {claim: sub}, rate: {requests: 10, per: 1m}, algorithm: gcra, burst: 5, scope: global}]
";
    let snapshot = ok(&(route("  - backendRefs: [{name: app, port: 80}]\n") + policies));
    let r = &snapshot.routes[0];
    let auth = r.auth.as_ref().expect("auth attached");
    assert_eq!(auth.policy, "shop/a");
    assert!(auth.required);
    assert_eq!(auth.strip_headers, vec!["x-user", "x-weir-client"]);
    assert_eq!(r.limits.len(), 1);
    assert_eq!(r.limits[0].id, "shop/l/u");
    assert!(r.limits[0].global && r.limits[0].fail_open);
    assert_eq!(r.limits[0].algorithm, Algorithm::Gcra { burst: 5 });

    let bad = "---
apiVersion: weir.dev/v1alpha1
kind: AuthPolicy
metadata: {name: b, namespace: shop}
spec:
  targetRefs: [{group: '', kind: Service, name: r}]
  jwt: {providers: [{name: idp, issuer: i, jwks: {uri: 'http://idp/jwks'}}, {name: x, issuer: i, jwks: {inline: '{}', uri: 'https://a'}}]}
---
apiVersion: weir.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: m, namespace: shop}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]
  failureMode: sometimes
  limits: [{name: u, key: {}, rate: {requests: 1, per: 0s}}, {name: u, key: {route: {}}, rate: {requests: 1, per: 1s}}]
";
    let errors = errors(&(route("  - backendRefs: [{name: app, port: 80}]\n") + bad)).join("\n");
    for expected in [
        "AuthPolicy shop/b: spec.targetRefs[0]",
        "spec.jwt.providers[0].jwks.uri: \"http://idp/jwks\" is not an https:// URL",
        "spec.jwt.providers[1].issuer",
        "spec.jwt.providers[1].jwks: exactly one of uri, inline or secretRef",
        "RateLimitPolicy shop/m: spec.failureMode",
        "spec.limits[0].key: exactly one of claim, header, clientIP or route",
        "spec.limits[1].name: \"u\" is also the name of limits[0]",
    ] {
        assert!(
            errors.contains(expected),
            "missing {expected:?} in:\n{errors}"
        );
    }
}

#[test]
fn limits_count_by_sliding_window_unless_gcra_is_asked_for_and_batch_only_when_global() {
    let policy = |limits: &str| {
        format!(
            "---
apiVersion: weir.dev/v1alpha1
kind: RateLimitPolicy
metadata: {{name: l, namespace: shop}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}}]
  limits: {limits}
"
        )
    };
    let good = policy(
        "[{name: a, key: {route: {}}, rate: {requests: 5, per: 1m}}, \
         {name: b, key: {route: {}}, rate: {requests: 5, per: 1m}, algorithm: slidingWindow}, \
         {name: c, key: {route: {}}, rate: {requests: 5, per: 1m}, algorithm: gcra, burst: 0}, \
         {name: d, key: {route: {}}, rate: {requests: 5, per: 1m}, scope: global, syncInterval: 250ms}, \
         {name: e, key: {route: {}}, rate: {requests: 5, per: 1m}, burst: 3}]",
    );
    let snapshot = ok(&(route("  - backendRefs: [{name: app, port: 80}]\n") + &good));
    let algorithms: Vec<_> = snapshot.routes[0]
        .limits
        .iter()
        .map(|l| l.algorithm)
        .collect();
    assert_eq!(
        algorithms,
        [
            Algorithm::SlidingWindow,
            Algorithm::SlidingWindow,
            Algorithm::Gcra { burst: 0 },
            Algorithm::SlidingWindow,
            // A burst with no algorithm: GCRA, as a policy written before the sliding window
            // meant it.
            Algorithm::Gcra { burst: 3 },
        ]
    );
    let batched = &snapshot.routes[0].limits[3];
    assert_eq!(batched.sync_interval, Some(Duration::from_millis(250)));
    assert_eq!(snapshot.routes[0].limits[0].sync_interval, None);

    let bad = policy(
        "[{name: a, key: {route: {}}, rate: {requests: 5, per: 1m}, burst: 2}, \
         {name: b, key: {route: {}}, rate: {requests: 5, per: 1m}, algorithm: slidingWindow, burst: 2}, \
         {name: c, key: {route: {}}, rate: {requests: 5, per: 1m}, algorithm: gcra}, \
         {name: d, key: {route: {}}, rate: {requests: 5, per: 1m}, algorithm: leakyBucket}, \
         {name: e, key: {route: {}}, rate: {requests: 5, per: 1m}, syncInterval: 100ms}, \
         {name: f, key: {route: {}}, rate: {requests: 5, per: 1m}, scope: global, algorithm: gcra, burst: 1, syncInterval: 100ms}, \
         {name: g, key: {route: {}}, rate: {requests: 5, per: 1s}, scope: global, syncInterval: 1s}, \
         {name: h, key: {route: {}}, rate: {requests: 5, per: 1s}, scope: global, syncInterval: soon}]",
    );
    let errors = errors(&(route("  - backendRefs: [{name: app, port: 80}]\n") + &bad)).join("\n");
    for expected in [
        "RateLimitPolicy shop/l: spec.limits[1].burst: applies to algorithm: gcra only",
        "spec.limits[2].burst: is required with algorithm: gcra",
        "spec.limits[3].algorithm: \"leakyBucket\": use slidingWindow or gcra",
        "spec.limits[4].syncInterval: applies to scope: global only",
        "spec.limits[5].syncInterval: batching works with the sliding window only",
        "spec.limits[6].syncInterval: \"1s\" must be longer than 0 and shorter than rate.per (1s)",
        "spec.limits[7].syncInterval: \"soon\" is not a duration",
    ] {
        assert!(
            errors.contains(expected),
            "missing {expected:?} in:\n{errors}"
        );
    }
}

#[test]
fn the_quickstart_compiles_and_protects_its_api_route() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart");
    let objects = weir_api::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    let snapshot = compile(&objects).unwrap_or_else(|e| panic!("{e}"));
    let api = snapshot
        .routes
        .iter()
        .find(|r| r.name.starts_with("ingress:demo/api:"))
        .expect("the api Ingress route");
    assert!(api
        .auth
        .as_ref()
        .and_then(|a| a.api_keys.as_ref())
        .is_some_and(|k| k.keys.len() == 2));
    assert_eq!(api.limits.len(), 1);
}
