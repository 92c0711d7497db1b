//! BackendTLSPolicy: the gateway speaks TLS to a Service's endpoints and checks their
//! certificates against the policy's CA and names, as upstream's BackendTLSPolicy and
//! BackendTLSPolicySANValidation tests (kubernetes-sigs/gateway-api, conformance/tests) check
//! it; and it never falls back to plaintext: a policy whose CA cannot be had, a certificate
//! for another name, or a plaintext backend get the client an error, never an unchecked
//! answer. A policy only reaches Services in its own namespace.

use std::{net::SocketAddr, time::Duration};

use weir_e2e::{
    ca_config_map, eventually, gateway, http_route, service, service_with,
    tls::{echo_lines, https_echo, KeyType, Pki},
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
    assert_eq!(
        reply.json()["sni"],
        "abc.example.com",
        "the policy's hostname"
    );
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
    let backend = tls_backend(
        &pki,
        "san",
        &["san.example.com", "spiffe://abc.example.com/test-identity"],
    )
    .await;
    let dir = routes(&["san", "no-match", "wild", "uri"])
        .with(
            "svc.yaml",
            &[
                service_with("san", &[(backend, true)], ""),
                service_with("no-match", &[(backend, true)], ""),
                service_with("wild", &[(backend, true)], ""),
                service_with("uri", &[(backend, true)], ""),
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
                    "uri",
                    "default",
                    "uri",
                    &format!(
                        "{}    subjectAltNames: [{{type: URI, uri: \"spiffe://abc.example.com/test-identity\"}}]\n",
                        trusting("ca", "abc.example.com")
                    ),
                ),
                policy(
                    "wild",
                    "default",
                    "wild",
                    &format!(
                        "{}    subjectAltNames: [{{type: Hostname, hostname: \"*.example.com\"}}]\n",
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
    assert_eq!(
        reply.json()["sni"],
        "abc.example.com",
        "the hostname is still the SNI"
    );
    // A URI SAN the certificate carries.
    let reply = weir.get("example.com", "/uri").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // A wildcard SAN takes a name one label under it.
    let reply = weir.get("example.com", "/wild").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
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

/// A policy with a field Weir cannot take is not refused (a refused policy would be compiled
/// without, which would mean plaintext): it trusts nothing, so its Service gets errors, and a
/// warning names the field; a target that is not a Service is skipped, the rest served.
#[tokio::test]
async fn an_invalid_backend_tls_policy_fails_closed_with_its_field_named() {
    let pki = Pki::new();
    let tls = tls_backend(&pki, "tls", &["abc.example.com"]).await;
    let dir = routes(&["tls", "tls2"])
        .with(
            "svc.yaml",
            &[
                service_with("tls", &[(tls, true)], ""),
                service_with("tls2", &[(tls, true)], ""),
            ]
            .join("---\n"),
        )
        .with("ca.yaml", &ca_config_map("ca", &pki.ca_pem()))
        .with(
            "policy.yaml",
            &[
                policy(
                    "bad-host",
                    "default",
                    "tls",
                    &trusting("ca", "\"not a name\""),
                ),
                policy(
                    "mixed",
                    "default",
                    "tls2",
                    &trusting("ca", "abc.example.com"),
                )
                .replace(
                    "targetRefs: [",
                    "targetRefs: [{group: apps, kind: Deployment, name: tls2}, ",
                ),
            ]
            .join("---\n"),
        );
    let weir = Weir::start(&dir);
    let reply = weir.get("example.com", "/tls").await;
    assert!(reply.status.is_server_error(), "{}", reply.status);
    let reply = weir.get("example.com", "/tls2").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["sni"], "abc.example.com");
    let config = weir.admin_get("/config").await.json();
    assert_eq!(
        config["reload"]["refused"],
        serde_json::json!([]),
        "{config}"
    );
    let warnings = config["snapshot"]["warnings"].to_string();
    for expected in [
        "BackendTLSPolicy default/bad-host: Invalid: spec.validation.hostname",
        "BackendTLSPolicy default/mixed: Invalid: spec.targetRefs[0]",
    ] {
        assert!(warnings.contains(expected), "{expected}: {warnings}");
    }
}

/// A policy that changes (here its CA, to one that did not sign the backend) applies to the
/// next request: connections checked under the old policy are not reused.
#[tokio::test]
async fn a_tightened_backend_tls_policy_applies_to_the_next_request() {
    let pki = Pki::new();
    let tls = tls_backend(&pki, "tls", &["abc.example.com"]).await;
    let dir = routes(&["tls"])
        .with("svc.yaml", &service_with("tls", &[(tls, true)], ""))
        .with("ca.yaml", &ca_config_map("ca", &pki.ca_pem()))
        .with(
            "policy.yaml",
            &policy("tls", "default", "tls", &trusting("ca", "abc.example.com")),
        );
    let weir = Weir::start(&dir);
    for _ in 0..3 {
        assert_eq!(weir.get("example.com", "/tls").await.status, 200);
    }
    let version = weir.version().await;
    dir.write("ca.yaml", &ca_config_map("ca", &Pki::new().ca_pem()));
    weir.wait_version(version + 1, Duration::from_secs(5)).await;
    for _ in 0..3 {
        let reply = weir.get("example.com", "/tls").await;
        assert!(reply.status.is_server_error(), "{}", reply.status);
    }
}

/// BackendTLSPolicyConflictResolution: of two policies for the same Service the older applies
/// (then `namespace/name`), the other is warned `Conflicted`; a policy naming a port
/// (`sectionName`) applies to that port before one for the whole Service.
#[tokio::test]
async fn backend_tls_policy_conflict_resolution() {
    let pki = Pki::new();
    let backend = tls_backend(&pki, "tls", &["abc.example.com", "other.example.com"]).await;
    let two_ports = format!("apiVersion: v1\nkind: Service\nmetadata: {{name: two-ports, namespace: default}}\nspec:\n  ports:\n  - {{name: https-1, port: 443, targetPort: {p}}}\n  - {{name: https-2, port: 8443, targetPort: {p}}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: two-ports, namespace: default, labels: {{kubernetes.io/service-name: two-ports}}}}\naddressType: IPv4\nports: [{{name: https-1, port: {p}}}, {{name: https-2, port: {p}}}]\nendpoints:\n- addresses: [\"127.0.0.1\"]\n  conditions: {{ready: true}}\n", p = backend.port());
    let rules = "  - matches: [{path: {type: PathPrefix, value: /one}}]\n    backendRefs: [{name: one, port: 80}]\n  - matches: [{path: {type: PathPrefix, value: /https-1}}]\n    backendRefs: [{name: two-ports, port: 443}]\n  - matches: [{path: {type: PathPrefix, value: /https-2}}]\n    backendRefs: [{name: two-ports, port: 8443}]\n";
    let with_section = |name: &str, service: &str, section: Option<&str>, hostname: &str| {
        let mut p = policy(name, "default", service, &trusting("ca", hostname));
        if let Some(section) = section {
            p = p.replace(
                &format!("name: {service}}}]"),
                &format!("name: {service}, sectionName: {section}}}]"),
            );
        }
        p
    };
    let dir = ConfigDir::new()
        .with("gw.yaml", &gateway())
        .with("route.yaml", &http_route("conflicts", &[], rules))
        .with(
            "svc.yaml",
            &[service_with("one", &[(backend, true)], ""), two_ports].join("---\n"),
        )
        .with("ca.yaml", &ca_config_map("ca", &pki.ca_pem()))
        .with(
            "policy.yaml",
            &[
                with_section("conflicted-1", "one", None, "other.example.com"),
                with_section("conflicted-2", "one", None, "abc.example.com"),
                with_section("port-1", "two-ports", Some("https-1"), "other.example.com"),
                with_section("whole", "two-ports", None, "abc.example.com"),
            ]
            .join("---\n"),
        );
    let weir = Weir::start(&dir);
    for (path, sni) in [
        ("/one", "other.example.com"),
        ("/https-1", "other.example.com"),
        ("/https-2", "abc.example.com"),
    ] {
        let reply = weir.get("example.com", path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        assert_eq!(reply.json()["sni"], sni, "{path}");
    }
    let config = weir.admin_get("/config").await.json();
    let warnings = config["snapshot"]["warnings"].to_string();
    assert!(
        warnings.contains("BackendTLSPolicy default/conflicted-2: Conflicted"),
        "{warnings}"
    );
}

/// Endpoint state is each cluster's own: another Service naming the same address in
/// plaintext, whose health check fails there, does not take it out for the Service that
/// speaks TLS to it (nor could another namespace's Service do that to this one's pods).
#[tokio::test]
async fn another_services_health_check_cannot_eject_a_shared_endpoint() {
    let pki = Pki::new();
    let tls = tls_backend(&pki, "tls", &["abc.example.com"]).await;
    let dir = routes(&["secure", "plain"])
        .with(
            "svc.yaml",
            &[
                service_with("secure", &[(tls, true)], ""),
                service_with("plain", &[(tls, true)], ""),
            ]
            .join("---\n"),
        )
        .with("ca.yaml", &ca_config_map("ca", &pki.ca_pem()))
        .with(
            "policy.yaml",
            &[
                policy("secure", "default", "secure", &trusting("ca", "abc.example.com")),
                weir_e2e::traffic_policy(
                    "plain",
                    "plain",
                    "  healthCheck: {path: /healthz, interval: 100ms, timeout: 500ms, unhealthyThreshold: 1, healthyThreshold: 1}\n",
                ),
            ]
            .join("---\n"),
        );
    let weir = Weir::start(&dir);
    // The plaintext health check fails against the TLS port: `plain` has no healthy endpoint.
    eventually(Duration::from_secs(5), "plain ejected", || async {
        weir.get("example.com", "/plain")
            .await
            .status
            .is_server_error()
            .then_some(())
    })
    .await;
    // A new version carries endpoint state over: by cluster, not by address.
    let version = weir.version().await;
    dir.write(
        "touch.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: touched}\n",
    );
    weir.wait_version(version + 1, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        let reply = weir.get("example.com", "/secure").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
}

/// BackendTLSPolicyReencrypt: an HTTPS listener's request goes on to the backend in the
/// policy's TLS (the client's SNI is the listener's name, the backend's the policy's).
#[tokio::test]
async fn backend_tls_policy_reencrypt() {
    let pki = Pki::new();
    let backend = tls_backend(&pki, "reencrypt", &["abc.example.com"]).await;
    let front = pki.issue(&["https-listener.org"], KeyType::Ecdsa);
    let listener = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\nspec:\n  gatewayClassName: weir\n  listeners:\n  - {name: https, protocol: HTTPS, port: 443, tls: {certificateRefs: [{name: front}]}}\n";
    let dir = ConfigDir::new()
        .with("gw.yaml", listener)
        .with("front.yaml", &weir_e2e::tls_secret("front", &front))
        .with(
            "route.yaml",
            &http_route(
                "backendtlspolicy-reencrypt",
                &["https-listener.org"],
                "  - backendRefs: [{name: reencrypt, port: 80}]\n",
            ),
        )
        .with(
            "svc.yaml",
            &service_with("reencrypt", &[(backend, true)], ""),
        )
        .with("ca.yaml", &ca_config_map("ca", &pki.ca_pem()))
        .with(
            "policy.yaml",
            &policy(
                "reencrypt",
                "default",
                "reencrypt",
                &trusting("ca", "abc.example.com"),
            ),
        );
    let weir = Weir::start(&dir);
    let client = pki.client(&["http/1.1"], false);
    let reply = weir_e2e::tls::https_get(weir.tls, "https-listener.org", client, "/", &[])
        .await
        .unwrap();
    assert_eq!(reply.reply.status, 200, "{}", reply.reply.text());
    assert_eq!(reply.reply.backend(), "reencrypt");
    assert_eq!(reply.reply.json()["sni"], "abc.example.com");
}

/// A server-first TCP backend over TLS: it greets with `hello NAME SNI`, then sends every
/// line back.
async fn tls_tcp_backend(pki: &Pki, name: &str, names: &[&str]) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    let issued = pki.issue(names, KeyType::Ecdsa);
    let chain = rustls::pki_types::CertificateDer::pem_slice_iter(issued.chain.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(issued.key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let name = name.to_string();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, name) = (acceptor.clone(), name.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().unwrap_or("-").to_string();
                echo_lines(tls, format!("hello {name} {sni}\n")).await;
            });
        }
    });
    addr
}

/// BackendTLSPolicyTLSRouteTerminate: a TLSRoute on a Terminate listener carries what is
/// inside the client's TLS to the backend in the policy's TLS, with its SNI.
#[tokio::test]
async fn backend_tls_policy_tls_route_terminate() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let pki = Pki::new();
    let backend = tls_tcp_backend(&pki, "btls-terminate-tcp-backend", &["abc.example.com"]).await;
    let front = pki.issue(&["tls.example.com"], KeyType::Ecdsa);
    let gateway = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\nspec:\n  gatewayClassName: weir\n  listeners:\n  - {name: tls, protocol: TLS, port: 443, hostname: tls.example.com, tls: {mode: Terminate, certificateRefs: [{name: front}]}}\n";
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: TLSRoute\nmetadata: {name: terminate, namespace: default}\nspec:\n  parentRefs: [{name: gw}]\n  hostnames: [tls.example.com]\n  rules:\n  - backendRefs: [{name: btls-terminate-tcp-backend, port: 80}]\n";
    let dir = ConfigDir::new()
        .with("gw.yaml", gateway)
        .with("front.yaml", &weir_e2e::tls_secret("front", &front))
        .with("route.yaml", route)
        .with(
            "svc.yaml",
            &service_with("btls-terminate-tcp-backend", &[(backend, true)], ""),
        )
        .with("ca.yaml", &ca_config_map("ca", &pki.ca_pem()))
        .with(
            "policy.yaml",
            &policy(
                "btls-tlsroute-terminate-test",
                "default",
                "btls-terminate-tcp-backend",
                &trusting("ca", "abc.example.com"),
            ),
        );
    let weir = Weir::start(&dir);
    let connector = tokio_rustls::TlsConnector::from(pki.client(&[], false));
    let tcp = tokio::net::TcpStream::connect(weir.tls).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("tls.example.com").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let (read, mut write) = tokio::io::split(tls);
    let mut lines = BufReader::new(read).lines();
    let greeting = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        greeting.as_deref(),
        Some("hello btls-terminate-tcp-backend abc.example.com")
    );
    write.write_all(b"ping\n").await.unwrap();
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("ping"));
}

/// BackendTLSPolicyGRPCRoute: a GRPCRoute's backends behind a BackendTLSPolicy are spoken to
/// over TLS (HTTP/2 by ALPN), checked against the policy: a call reaches the backend whose
/// certificate the policy's CA signed for its hostname, and fails (never plaintext, never
/// unchecked) for a policy whose hostname the certificate does not name, or whose CA did not
/// sign it.
#[tokio::test]
async fn backend_tls_policy_grpc_route() {
    use weir_e2e::grpc::{call_at, SERVICE};
    let (pki, other) = (Pki::new(), Pki::new());
    let v1 = Echo::start_tls(
        "grpc-infra-backend-v1",
        &pki.issue(&["abc.example.com"], KeyType::Ecdsa),
    );
    let mismatch = Echo::start_tls(
        "grpc-infra-backend-v2",
        &pki.issue(&["abc.example.com"], KeyType::Ecdsa),
    );
    let wrong_ca = Echo::start_tls(
        "grpc-infra-backend-v3",
        &other.issue(&["abc.example.com"], KeyType::Ecdsa),
    );
    let services = [
        service("grpc-infra-backend-v1", &[&v1]),
        service("grpc-infra-backend-v2", &[&mismatch]),
        service("grpc-infra-backend-v3", &[&wrong_ca]),
    ];
    let policies = [
        policy(
            "grpc-normative-test",
            "default",
            "grpc-infra-backend-v1",
            &trusting("backend-tls-checks-certificate", "abc.example.com"),
        ),
        policy(
            "grpc-host-mismatch",
            "default",
            "grpc-infra-backend-v2",
            &trusting("backend-tls-checks-certificate", "mismatch.example.com"),
        ),
        policy(
            "grpc-cert-mismatch",
            "default",
            "grpc-infra-backend-v3",
            &trusting("backend-tls-checks-certificate", "abc.example.com"),
        ),
    ];
    let method = |m: &str, backend: &str| {
        format!("  - matches: [{{method: {{service: {SERVICE}, method: {m}}}}}]\n    backendRefs: [{{name: {backend}, port: 80}}]\n")
    };
    let grpc_route = |name: &str, host: &str, rules: &str| {
        format!("apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [{host}]\n  rules:\n{rules}")
    };
    let routes = [
        grpc_route(
            "backendtlspolicy-grpcroute",
            "abc.example.com",
            &(method("Echo", "grpc-infra-backend-v1")
                + &method("EchoTwo", "grpc-infra-backend-v2")),
        ),
        grpc_route(
            "backendtlspolicy-grpcroute-cert-mismatch",
            "cert-mismatch.example.com",
            &method("Echo", "grpc-infra-backend-v3"),
        ),
    ];
    let dir = ConfigDir::new()
        .with("gw.yaml", &gateway())
        .with("svc.yaml", &services.join("---\n"))
        .with(
            "ca.yaml",
            &ca_config_map("backend-tls-checks-certificate", &pki.ca_pem()),
        )
        .with("policy.yaml", &policies.join("---\n"))
        .with("route.yaml", &routes.join("---\n"));
    let weir = Weir::start(&dir);
    let called = call_at(weir.addr, "abc.example.com", "Echo", &[]).await;
    assert_eq!(
        (called.status.as_str(), called.backend.as_str()),
        ("0", "grpc-infra-backend-v1")
    );
    for (authority, m) in [
        ("abc.example.com", "EchoTwo"),
        ("cert-mismatch.example.com", "Echo"),
    ] {
        let called = call_at(weir.addr, authority, m, &[]).await;
        assert_ne!(
            called.status, "0",
            "{authority} {m} answered by {}",
            called.backend
        );
        assert!(
            called.backend.is_empty() || !called.backend.starts_with("grpc-infra"),
            "{authority} {m}: {}",
            called.backend
        );
    }
}
