//! The compile step end to end: Kubernetes objects as YAML in, the snapshot or the errors
//! naming each bad field out, through the crate's public API (`load_str`, `compile`).

use weir_api::{
    compile,
    load::load_str,
    model::{HostMatch, PathMatch, Protocol, RouteAction},
    Objects, Snapshot,
};

fn objects(yaml: &str) -> Objects {
    let mut objects = Objects::new();
    let mut errors = Vec::new();
    load_str(yaml, "test.yaml", &mut objects, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    objects
}

fn ok(yaml: &str) -> Snapshot {
    compile(&objects(yaml)).unwrap_or_else(|e| panic!("{e}"))
}

fn errors(yaml: &str) -> Vec<String> {
    compile(&objects(yaml))
        .expect_err("should be rejected")
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

const BACKEND: &str = "
apiVersion: v1
kind: Service
metadata: {name: app, namespace: shop}
spec:
  ports: [{name: web, port: 80, appProtocol: kubernetes.io/h2c}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: app-a, namespace: shop, labels: {kubernetes.io/service-name: app}}
addressType: IPv4
ports: [{name: web, port: 8080}]
endpoints:
- addresses: [10.0.0.1]
- addresses: [10.0.0.2]
  conditions: {ready: false}
- addresses: [10.0.0.3]
  conditions: {ready: true}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: shop}
spec:
  gatewayClassName: weir
  listeners:
  - {name: web, protocol: HTTP, port: 80, hostname: '*.example.com'}
";

fn route(rules: &str) -> String {
    format!(
        "{BACKEND}---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: shop}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules:\n{rules}"
    )
}

#[test]
fn endpoints_come_from_slices_and_only_ready_ones() {
    let snapshot = ok(&route("  - backendRefs: [{name: app, port: 80}]\n"));
    let cluster = &snapshot.clusters["shop/app:80"];
    assert!(cluster.resolved);
    assert_eq!(cluster.protocol, Protocol::H2c);
    let addrs: Vec<String> = cluster.endpoints.iter().map(ToString::to_string).collect();
    assert_eq!(addrs, ["10.0.0.1:8080", "10.0.0.3:8080"]);
    // No route hostnames: the listener's hostname applies.
    assert_eq!(
        snapshot.routes[0].hosts,
        [HostMatch::Wildcard(".example.com".into())]
    );
}

#[test]
fn route_hostnames_intersect_the_listener() {
    let yaml = route("  - backendRefs: [{name: app, port: 80}]\n").replace(
        "  parentRefs: [{name: gw}]\n",
        "  parentRefs: [{name: gw}]\n  hostnames: [shop.example.com, other.org]\n",
    );
    let snapshot = ok(&yaml);
    assert_eq!(
        snapshot.routes[0].hosts,
        [HostMatch::Exact("shop.example.com".into())]
    );
}

#[test]
fn errors_name_the_file_object_and_field() {
    let errs = errors(&route(
        "  - matches: [{path: {type: PathPrefix, value: no-slash}}]\n    backendRefs: [{name: app, port: 80}]\n  - matches: [{headers: [{name: 'bad header', value: x}]}]\n  - timeouts: {request: forever}\n",
    ));
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(
        errs[0].starts_with(
            "test.yaml (document 4): HTTPRoute shop/r: spec.rules[0].matches[0].path.value:"
        ),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].contains("spec.rules[1].matches[0].headers[0].name"),
        "{}",
        errs[1]
    );
    assert!(
        errs[2].contains("spec.rules[2].timeouts.request"),
        "{}",
        errs[2]
    );
}

#[test]
fn replace_prefix_match_needs_a_prefix_match() {
    let errs = errors(&route(
        "  - matches: [{path: {type: Exact, value: /a}}]\n    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]\n    backendRefs: [{name: app, port: 80}]\n",
    ));
    assert!(
        errs[0].contains("ReplacePrefixMatch needs a PathPrefix match"),
        "{errs:?}"
    );
}

#[test]
fn schema_errors_name_the_field_path() {
    let mut objects = Objects::new();
    let mut errs = Vec::new();
    load_str(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: [{port: eighty}]\n",
        "svc.yaml",
        &mut objects,
        &mut errs,
    );
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].object, "Service s");
    assert_eq!(errs[0].field, "spec.ports[0].port");
}

#[test]
fn cross_namespace_backends_need_a_reference_grant() {
    let other = "
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: intruder, namespace: elsewhere}
spec:
  parentRefs: [{name: gw, namespace: shop}]
  rules: [{backendRefs: [{name: app, namespace: shop, port: 80}]}]
";
    let yaml = BACKEND.replace("listeners:\n  - {name: web, protocol: HTTP, port: 80, hostname: '*.example.com'}", "listeners:\n  - {name: web, protocol: HTTP, port: 80, allowedRoutes: {namespaces: {from: All}}}");
    let denied = ok(&format!("{yaml}{other}"));
    let RouteAction::Forward(f) = &denied.routes[0].action else {
        panic!()
    };
    assert!(
        !denied.clusters[&f.backends[0].cluster].resolved,
        "no grant: unresolved (500)"
    );

    let grant = "
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: allow, namespace: shop}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: elsewhere}]
  to: [{group: '', kind: Service}]
";
    let allowed = ok(&format!("{yaml}{other}{grant}"));
    let RouteAction::Forward(f) = &allowed.routes[0].action else {
        panic!()
    };
    assert_eq!(f.backends[0].cluster, "shop/app:80");
    assert!(allowed.clusters["shop/app:80"].resolved);
}

#[test]
fn routes_from_other_namespaces_need_allowed_routes() {
    let yaml = format!(
        "{BACKEND}---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: other}}\nspec:\n  parentRefs: [{{name: gw, namespace: shop}}]\n  rules: [{{}}]\n"
    );
    let snapshot = ok(&yaml);
    assert!(
        snapshot.routes.is_empty(),
        "listener allows Same namespace only"
    );
    assert!(
        snapshot.warnings.iter().any(|w| w.contains("not attached")),
        "{:?}",
        snapshot.warnings
    );
}

#[test]
fn ingress_prefixes_are_normalised_and_other_classes_ignored() {
    let yaml = format!(
        "{BACKEND}---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: i, namespace: shop}}
spec:
  ingressClassName: weir
  rules:
  - host: Shop.Example.com
    http:
      paths: [{{path: /api/, pathType: Prefix, backend: {{service: {{name: app, port: {{name: web}}}}}}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: not-ours, namespace: shop}}
spec:
  ingressClassName: nginx
  rules: [{{http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: app, port: {{number: 80}}}}}}}}]}}}}]
"
    );
    let snapshot = ok(&yaml);
    assert_eq!(snapshot.routes.len(), 1);
    assert_eq!(
        snapshot.routes[0].hosts,
        [HostMatch::Exact("shop.example.com".into())]
    );
    assert!(matches!(&snapshot.routes[0].matcher.path, PathMatch::Prefix(p) if p == "/api"));
}

#[test]
fn a_duplicate_object_is_an_error() {
    let mut objects = Objects::new();
    let mut errs = Vec::new();
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: a}\n";
    load_str(svc, "one.yaml", &mut objects, &mut errs);
    load_str(svc, "two.yaml", &mut objects, &mut errs);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].message.contains("one.yaml"), "{}", errs[0]);
}

fn with_policies(policies: &[(&str, &str, &str)]) -> String {
    let mut yaml = route("  - backendRefs: [{name: app, port: 80}]\n");
    for (name, created, spec) in policies {
        yaml.push_str(&format!(
            "---\napiVersion: weir.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: {name}, namespace: shop, creationTimestamp: \"{created}\"}}\nspec:\n{spec}"
        ));
    }
    yaml
}

#[test]
fn a_traffic_policy_reaches_the_clusters_of_its_service_with_defaults_filled_in() {
    let snapshot = ok(&with_policies(&[(
        "p",
        "2026-01-01T00:00:00Z",
        "  targetRefs: [{group: \"\", kind: Service, name: app}]\n  timeout: 5s\n  retry: {attempts: 3, retryOn: [reset, \"503\", 5xx]}\n  circuitBreaker: {}\n  loadBalancer: {algorithm: leastRequest}\n",
    )]));
    let cluster = &snapshot.clusters["shop/app:80"];
    let r = &cluster.resilience;
    assert_eq!(r.policy.as_deref(), Some("shop/p"));
    assert_eq!(r.timeout, Some(std::time::Duration::from_secs(5)));
    let retry = r.retry.as_ref().unwrap();
    assert_eq!(retry.attempts, 3);
    assert!(retry.retry_on.reset && !retry.retry_on.connect_failure);
    assert!(
        retry.retry_on.status(503) && retry.retry_on.status(500) && !retry.retry_on.status(404)
    );
    assert!((retry.budget_ratio - 0.2).abs() < 1e-9);
    let breaker = r.breaker.as_ref().unwrap();
    assert_eq!(
        (
            breaker.consecutive_failures,
            breaker.max_ejection_percent,
            breaker.half_open_probes
        ),
        (5, 50, 5)
    );
    assert_eq!(cluster.balancer, weir_api::model::Balancer::LeastRequest);
}

#[test]
fn the_oldest_policy_on_a_service_wins_and_the_other_is_a_warning() {
    let target = "  targetRefs: [{group: \"\", kind: Service, name: app}]\n";
    let snapshot = ok(&with_policies(&[
        (
            "newer",
            "2026-02-01T00:00:00Z",
            &format!("{target}  timeout: 1s\n"),
        ),
        (
            "older",
            "2026-01-01T00:00:00Z",
            &format!("{target}  timeout: 9s\n"),
        ),
    ]));
    let r = &snapshot.clusters["shop/app:80"].resilience;
    assert_eq!(r.policy.as_deref(), Some("shop/older"));
    assert!(
        snapshot
            .warnings
            .iter()
            .any(|w| w.contains("TrafficPolicy shop/newer") && w.contains("shop/older")),
        "{:?}",
        snapshot.warnings
    );
}

#[test]
fn traffic_policy_errors_name_the_field() {
    let errs = errors(&with_policies(&[(
        "p",
        "2026-01-01T00:00:00Z",
        "  targetRefs: [{group: apps, kind: Deployment, name: app}]\n  timeout: soon\n  retry: {retryOn: [sometimes], backoff: {base: 1s, max: 10ms}}\n  circuitBreaker: {maxEjectionPercent: 101, halfOpenProbes: 0}\n  healthCheck: {path: healthz, interval: 0s}\n  loadBalancer: {algorithm: consistentHash}\n",
    )]));
    for field in [
        "spec.targetRefs[0]",
        "spec.timeout",
        "spec.retry.retryOn[0]",
        "spec.retry.backoff.max",
        "spec.circuitBreaker.maxEjectionPercent",
        "spec.circuitBreaker.halfOpenProbes",
        "spec.healthCheck.path",
        "spec.healthCheck.interval",
        "spec.loadBalancer.hashOn",
    ] {
        assert!(
            errs.iter()
                .any(|e| e.contains(&format!("TrafficPolicy shop/p: {field}: "))),
            "{field} missing in {errs:#?}"
        );
    }
}

mod filters;
mod optout;
mod security;
mod tenancy;
mod upgrades;

const STRICT_SHOP: &str = "apiVersion: weir.dev/v1alpha1
kind: MeshTLSPolicy
metadata: {name: default, namespace: shop}
spec: {mode: STRICT}
";

#[test]
fn mesh_policies_load_and_bad_access_rules_are_named() {
    let good = STRICT_SHOP.to_string()
        + "---
apiVersion: weir.dev/v1alpha1
kind: AccessPolicy
metadata: {name: backend, namespace: shop}
spec:
  selector: {matchLabels: {app: backend}}
  default: deny
  rules:
  - from: [{serviceAccount: frontend}, {namespace: monitoring}]
    to: [{methods: [GET], paths: [/api/*], ports: [8080]}]
";
    ok(&good);
    let bad = "
apiVersion: weir.dev/v1alpha1
kind: AccessPolicy
metadata: {name: backend, namespace: shop}
spec:
  rules:
  - from: [{identity: 'spiffe://cluster.local/shop/web'}, {namespace: a, serviceAccount: b}]
    to: [{methods: [get], paths: ['/a*/b'], ports: [70000]}]
";
    let errors = errors(bad);
    for expected in [
        "spec.rules[0].from[0]: \"spiffe://cluster.local/shop/web\" is not a SPIFFE ID",
        "spec.rules[0].from[1]: set exactly one of identity, namespace or serviceAccount",
        "spec.rules[0].to[0].methods[0]: \"get\" is not an HTTP method in uppercase",
        "spec.rules[0].to[0].paths[0]: \"/a*/b\" must start with / and may only end with *",
        "spec.rules[0].to[0].ports[0]: 70000 is not a port",
    ] {
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{expected:?} not in {errors:#?}"
        );
    }
    let mode = "
apiVersion: weir.dev/v1alpha1
kind: MeshTLSPolicy
metadata: {name: default, namespace: shop}
spec: {mode: strict}
";
    let mut objects = Objects::new();
    let mut load_errors = Vec::new();
    load_str(mode, "mesh.yaml", &mut objects, &mut load_errors);
    assert!(
        load_errors[0]
            .to_string()
            .contains("spec.mode: unknown variant `strict`"),
        "{load_errors:?}"
    );
}

#[test]
fn the_mesh_knows_who_serves_each_endpoint_and_which_policy_each_pod_enforces() {
    // The e2e tests' mesh (Service shop/backend, its injected pod backend-a running as
    // shop/backend, an AccessPolicy for it), plus an unmeshed pod and two MeshTLSPolicies.
    let yaml = format!("{}---\n{STRICT_SHOP}---\n{}", include_str!("../../../tests/fixtures/mesh.yaml"), "
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: backend-2, namespace: shop, labels: {kubernetes.io/service-name: backend}}
addressType: IPv4
ports: [{name: http, port: 15006}]
endpoints:
- addresses: [10.0.0.2]
  targetRef: {kind: Pod, name: legacy-b, namespace: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: legacy-b, namespace: shop, labels: {app: legacy}}
spec: {serviceAccountName: legacy, containers: [{name: app}]}
---
apiVersion: v1
kind: Pod
metadata: {name: reports, namespace: shop, labels: {app: reports}, annotations: {weir.dev/injected: 0.1.0}}
spec: {containers: [{name: app}]}
---
apiVersion: weir.dev/v1alpha1
kind: MeshTLSPolicy
metadata: {name: reports, namespace: shop}
spec: {selector: {matchExpressions: [{key: app, operator: In, values: [reports]}]}, mode: PERMISSIVE}
");
    let snapshot = ok(&yaml);
    let mesh = &snapshot.mesh;
    let service = &mesh.services[0];
    assert_eq!(
        (service.namespace.as_str(), service.name.as_str()),
        ("shop", "backend")
    );
    assert_eq!(
        service.cluster_ips,
        ["10.96.0.20".parse::<std::net::IpAddr>().unwrap()]
    );
    let cluster = &mesh.clusters[&service.ports[0].cluster];
    assert_eq!(cluster.endpoints.len(), 2);
    // Only the injected pod is meshed; its identity is its ServiceAccount.
    let identities: Vec<_> = cluster
        .identities
        .iter()
        .map(|(a, id)| (a.to_string(), id.as_str()))
        .collect();
    assert_eq!(
        identities,
        [("127.0.0.1:15006".to_string(), "shop/backend")]
    );
    assert!(
        snapshot.clusters.is_empty(),
        "no route uses it: the ingress view has no cluster"
    );

    let backend = mesh.inbound("shop", "backend-a");
    assert_eq!(backend.mode, weir_api::model::TlsMode::Strict);
    assert_eq!(
        backend.mode_from.as_deref(),
        Some("MeshTLSPolicy shop/default")
    );
    assert_eq!(backend.access.len(), 1);
    let rules = &backend.access[0];
    assert!(rules.deny_by_default, "deny is the default");
    assert_eq!(
        rules.rules[0].from,
        [
            weir_api::model::Caller::ServiceAccount {
                namespace: "shop".into(),
                name: "frontend".into(),
                trust_domain: None,
            },
            weir_api::model::Caller::ServiceAccount {
                namespace: "ops".into(),
                name: "oncall".into(),
                trust_domain: None,
            },
        ]
    );
    // A selector beats the namespace-wide policy.
    let reports = mesh.inbound("shop", "reports");
    assert_eq!(reports.mode, weir_api::model::TlsMode::Permissive);
    assert!(reports.access.is_empty());
    assert_eq!(
        mesh.pod("shop", "reports").unwrap().service_account,
        "default"
    );
    // Elsewhere: no policy, PERMISSIVE.
    assert_eq!(
        mesh.inbound("web", "x").mode,
        weir_api::model::TlsMode::Permissive
    );
}
