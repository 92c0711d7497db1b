//! BackendTLSPolicy: the gateway speaks TLS to a Service's endpoints and checks their
//! certificates against the policy's CA and names, as upstream's BackendTLSPolicy and
//! BackendTLSPolicySANValidation tests (kubernetes-sigs/gateway-api, conformance/tests) check
//! it; and it never falls back to plaintext: a policy whose CA cannot be had, a certificate
//! for another name, or a plaintext backend get the client an error, never an unchecked
//! answer. A policy only reaches Services in its own namespace.

use std::{net::SocketAddr, time::Duration};

use weir_e2e::{
    eventually, gateway, http_route, service, service_with,
    tls::{https_echo, KeyType, Pki},
    ConfigDir, Echo, Weir,
};

/// An HTTPS echo backend `name` with a certificate from `pki` for `names`.
async fn tls_backend(pki: &Pki, name: &str, names: &[&str]) -> SocketAddr {
    https_echo(
        name,
        &pki.issue(names, KeyType::Ecdsa),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
}

/// A ConfigMap `name` in `default` with `ca.crt`.
fn ca_config_map(name: &str, pem: &str) -> String {
    let indented = pem.trim_end().replace('\n', "\n    ");
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: default}}\ndata:\n  ca.crt: |\n    {indented}\n")
}

/// A BackendTLSPolicy `name` in `namespace` for Service `service`, with the `validation:`
/// body given (indented by 4).
fn policy(name: &str, namespace: &str, service: &str, validation: &str) -> String {
    format!("apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  targetRefs: [{{group: \"\", kind: Service, name: {service}}}]\n  validation:\n{validation}")
}

fn trusting(config_map: &str, hostname: &str) -> String {
    format!("    caCertificateRefs: [{{group: \"\", kind: ConfigMap, name: {config_map}}}]\n    hostname: {hostname}\n")
}

/// Routes `/NAME` to Service `NAME` for each name, and the Gateway.
fn routes(names: &[&str]) -> ConfigDir {
    let rules: String = names
        .iter()
        .map(|n| format!("  - matches: [{{path: {{type: PathPrefix, value: /{n}}}}}]\n    backendRefs: [{{name: {n}, port: 80}}]\n"))
        .collect();
    ConfigDir::new()
        .with("gw.yaml", &gateway())
        .with("route.yaml", &http_route("backends", &[], &rules))
}

/// BackendTLSPolicy: the backend's certificate is checked against the policy's CA and
/// hostname; one for another name, or signed by another CA, is refused.
#[tokio::test]
async fn backend_tls_policy() {
    let pki = Pki::new();
    let other = Pki::new();
    let good = tls_backend(&pki, "good", &["abc.example.com"]).await;
    let wrong_name = tls_backend(&pki, "wrong-name", &["other.example.com"]).await;
    let wrong_ca = tls_backend(&other, "wrong-ca", &["abc.example.com"]).await;
    let services = [
        service_with("good", &[(good, true)], ""),
        service_with("wrong-name", &[(wrong_name, true)], ""),
        service_with("wrong-ca", &[(wrong_ca, true)], ""),
    ];
    let dir = routes(&["good", "wrong-name", "wrong-ca"])
        .with("svc.yaml", &services.join("---\n"))
        .with(
            "ca.yaml",
            &ca_config_map("backend-tls-checks-certificate", &pki.ca_pem()),
        )
        .with(
            "policy.yaml",
            &["good", "wrong-name", "wrong-ca"]
                .map(|s| {
                    policy(
                        &format!("{s}-tls"),
                        "default",
                        s,
                        &trusting("backend-tls-checks-certificate", "abc.example.com"),
                    )
                })
                .join("---\n"),
        );
    let weir = Weir::start(&dir);
    let reply = weir.get("example.com", "/good").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.backend(), "good");
    for refused in ["/wrong-name", "/wrong-ca"] {
        let reply = weir.get("example.com", refused).await;
        assert!(
            reply.status.is_server_error(),
            "{refused}: {}",
            reply.status
        );
        assert!(!reply.text().contains("\"backend\""), "{refused}");
    }
}

/// BackendTLSPolicySANValidation: with subjectAltNames, the certificate must carry one of
/// them (the hostname is still the SNI); without, the hostname.
#[tokio::test]
async fn backend_tls_policy_san_validation() {
    let pki = Pki::new();
    let backend = tls_backend(&pki, "san", &["san.example.com"]).await;
    let dir = routes(&["san", "no-match"])
        .with(
            "svc.yaml",
            &[
                service_with("san", &[(backend, true)], ""),
                service_with("no-match", &[(backend, true)], ""),
            ]
            .join("---\n"),
        )
        .with("ca.yaml", &ca_config_map("ca", &pki.ca_pem()))
        .with(
            "policy.yaml",
            &[
                policy(
                    "san",
                    "default",
                    "san",
                    &format!(
                        "{}    subjectAltNames: [{{type: Hostname, hostname: other.example.com}}, {{type: Hostname, hostname: san.example.com}}]\n",
                        trusting("ca", "abc.example.com")
                    ),
                ),
                policy(
                    "no-match",
                    "default",
                    "no-match",
                    &format!(
                        "{}    subjectAltNames: [{{type: Hostname, hostname: other.example.com}}, {{type: URI, uri: \"spiffe://cluster.local/ns/default/sa/web\"}}]\n",
                        trusting("ca", "san.example.com")
                    ),
                ),
            ]
            .join("---\n"),
        );
    let weir = Weir::start(&dir);
    let reply = weir.get("example.com", "/san").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.backend(), "san");
    // The hostname matches the certificate, but the SANs given instead do not.
    let reply = weir.get("example.com", "/no-match").await;
    assert!(reply.status.is_server_error(), "{}", reply.status);
}

/// A policy never turns into plaintext: a plaintext backend behind one gets an error (the
/// backend sees no request), and so does one whose CA ConfigMap does not exist (a warning
/// names it); a policy in another namespace does not reach this one's Service.
#[tokio::test]
async fn a_backend_tls_policy_fails_closed_and_stays_in_its_namespace() {
    let pki = Pki::new();
    let plain = Echo::start("plain");
    let tls = tls_backend(&pki, "tls", &["abc.example.com"]).await;
    let web = Echo::start("web");
    let dir = routes(&["plain", "tls", "web"])
        .with(
            "svc.yaml",
            &[
                service("plain", &[&plain]),
                service_with("tls", &[(tls, true)], ""),
                service("web", &[&web]),
            ]
            .join("---\n"),
        )
        .with("ca.yaml", &ca_config_map("ca", &pki.ca_pem()))
        .with(
            "policy.yaml",
            &[
                policy(
                    "plain",
                    "default",
                    "plain",
                    &trusting("ca", "abc.example.com"),
                ),
                policy(
                    "tls",
                    "default",
                    "tls",
                    &trusting("nonexistent", "abc.example.com"),
                ),
                "apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n".to_string(),
                policy(
                    "foreign",
                    "other",
                    "web",
                    &trusting("ca", "abc.example.com"),
                ),
            ]
            .join("---\n"),
        );
    let weir = Weir::start(&dir);
    for path in ["/plain", "/tls"] {
        let reply = weir.get("example.com", path).await;
        assert!(reply.status.is_server_error(), "{path}: {}", reply.status);
    }
    let plain_seen = weir_e2e::request(
        plain.addr,
        "plain",
        "/__requests",
        &[],
        bytes::Bytes::new(),
        "GET",
    )
    .await;
    assert_eq!(plain_seen.text().trim(), "0", "{}", plain_seen.text());
    let warnings = eventually(Duration::from_secs(5), "the warning", || async {
        let config = weir.admin_get("/config").await.json();
        let warnings = config["snapshot"]["warnings"].as_array()?.clone();
        warnings
            .iter()
            .any(|w| {
                w.as_str()
                    .is_some_and(|w| w.contains("InvalidCACertificateRef"))
            })
            .then_some(warnings)
    })
    .await;
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap_or_default().contains("nonexistent")),
        "{warnings:?}"
    );
    // The other namespace's policy names a Service `web` there, not this one.
    let reply = weir.get("example.com", "/web").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.backend(), "web");
}

/// A policy targeting something other than a Service is refused by field; the rest serves.
#[tokio::test]
async fn a_backend_tls_policy_for_another_kind_is_refused_by_field() {
    let pki = Pki::new();
    let tls = tls_backend(&pki, "tls", &["abc.example.com"]).await;
    let dir = routes(&["tls"])
        .with("svc.yaml", &service_with("tls", &[(tls, true)], ""))
        .with("ca.yaml", &ca_config_map("ca", &pki.ca_pem()))
        .with(
            "policy.yaml",
            &[
                policy("tls", "default", "tls", &trusting("ca", "abc.example.com")),
                policy("bad", "default", "tls", &trusting("ca", "abc.example.com"))
                    .replace("kind: Service", "kind: Deployment"),
            ]
            .join("---\n"),
        );
    let weir = Weir::start(&dir);
    let reply = weir.get("example.com", "/tls").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let refused = weir.refusals().await;
    assert_eq!(
        refused[0]["object"], "BackendTLSPolicy default/bad",
        "{refused:?}"
    );
    assert_eq!(
        refused[0]["field"], "spec.targetRefs[0].kind",
        "{refused:?}"
    );
}
