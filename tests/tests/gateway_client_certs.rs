//! Client certificates on a Gateway's TLS ports (`spec.tls.frontend`), as upstream's
//! GatewayFrontendClientCertificateValidation and ...InsecureFallback check them
//! (kubernetes-sigs/gateway-api, conformance/tests): the default CA on 443, a `perPort` CA on
//! the second listener's port (a free port here, 8443 upstream), clients with a certificate
//! from the right CA, the other CA, or none. A port whose CA cannot be had lets nobody in.

use std::sync::Arc;

use rustls::{pki_types::pem::PemObject, ClientConfig, RootCertStore};
use weir_e2e::{
    ca_config_map, free_port, service,
    tls::{https_get, Issued, KeyType, Pki},
    tls_secret, ConfigDir, Echo, Weir,
};

/// A client trusting `trust`'s CA, presenting `cert` (or none).
fn client(trust: &Pki, cert: Option<&Issued>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for ca in rustls::pki_types::CertificateDer::pem_slice_iter(trust.ca_pem().as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let mut config = match cert {
        Some(issued) => {
            let chain = rustls::pki_types::CertificateDer::pem_slice_iter(issued.chain.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key =
                rustls::pki_types::PrivateKeyDer::from_pem_slice(issued.key.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

struct Setup {
    _backends: Vec<Echo>,
    dir: ConfigDir,
    weir: Weir,
    port: u16,
    server: Pki,
    default_ca: Pki,
    per_port_ca: Pki,
}

/// The Gateway with `frontend` (the body of `spec.tls.frontend`, `{PORT}` the second port),
/// its two HTTPS listeners and their routes.
fn setup(frontend: &str, default_ca_map: &str) -> Setup {
    let port = free_port();
    let (server, default_ca, per_port_ca) = (Pki::new(), Pki::new(), Pki::new());
    let backends = vec![
        Echo::start("infra-backend-v1"),
        Echo::start("infra-backend-v2"),
    ];
    let cert = server.issue(&["example.org", "second-example.org"], KeyType::Ecdsa);
    let gateway = gateway_yaml(frontend, port);
    let routes = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: client-certificate-validation-https-test, namespace: default}\nspec:\n  parentRefs: [{name: client-validation, sectionName: https}]\n  hostnames: [example.org]\n  rules:\n  - backendRefs: [{name: infra-backend-v1, port: 80}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: client-certificate-validation-https-test-no-hostname, namespace: default}\nspec:\n  parentRefs: [{name: client-validation, sectionName: https-with-hostname}]\n  rules:\n  - backendRefs: [{name: infra-backend-v2, port: 80}]\n";
    let dir = ConfigDir::new()
        .with(
            "svc.yaml",
            &[
                service("infra-backend-v1", &[&backends[0]]),
                service("infra-backend-v2", &[&backends[1]]),
            ]
            .join("---\n"),
        )
        .with("cert.yaml", &tls_secret("server-cert", &cert))
        .with(
            "ca.yaml",
            &[
                ca_config_map(default_ca_map, &default_ca.ca_pem()),
                ca_config_map(
                    "tls-validity-checks-per-port-ca-certificate",
                    &per_port_ca.ca_pem(),
                ),
            ]
            .join("---\n"),
        )
        .with("gw.yaml", &gateway)
        .with("routes.yaml", routes);
    let weir = Weir::start(&dir);
    Setup {
        _backends: backends,
        dir,
        weir,
        port,
        server,
        default_ca,
        per_port_ca,
    }
}

/// The Gateway with `frontend` (the body of `spec.tls.frontend`, `{PORT}` the second port).
fn gateway_yaml(frontend: &str, port: u16) -> String {
    let frontend = frontend.replace("{PORT}", &port.to_string());
    format!("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: client-validation, namespace: default}}\nspec:\n  gatewayClassName: weir\n  tls:\n    frontend:\n{frontend}  listeners:\n  - {{name: https, port: 443, protocol: HTTPS, tls: {{certificateRefs: [{{name: server-cert}}]}}}}\n  - {{name: https-with-hostname, port: {port}, protocol: HTTPS, hostname: second-example.org, tls: {{certificateRefs: [{{name: server-cert}}]}}}}\n")
}

const VALIDATION: &str = "      default:\n        validation:\n          caCertificateRefs: [{group: \"\", kind: ConfigMap, name: tls-validity-checks-ca-certificate}]\n          MODE\n      perPort:\n      - port: {PORT}\n        tls:\n          validation:\n            caCertificateRefs: [{group: \"\", kind: ConfigMap, name: tls-validity-checks-per-port-ca-certificate}]\n            MODE\n";

/// `(port, SNI, certificate)`: the backend that answered, or why it failed.
async fn get(s: &Setup, port: u16, sni: &str, cert: Option<&Issued>) -> Result<String, String> {
    let addr = if port == 443 {
        s.weir.tls
    } else {
        std::net::SocketAddr::from(([127, 0, 0, 1], port))
    };
    weir_e2e::eventually(
        std::time::Duration::from_secs(5),
        "the port open",
        || async { tokio::net::TcpStream::connect(addr).await.ok().map(|_| ()) },
    )
    .await;
    let reply = https_get(addr, sni, client(&s.server, cert), "/", &[]).await?;
    match reply.reply.status.as_u16() {
        200 => Ok(reply.reply.backend()),
        status => Err(format!("status {status}")),
    }
}

/// GatewayFrontendClientCertificateValidation
#[tokio::test]
async fn gateway_frontend_client_certificate_validation() {
    let s = setup(
        &VALIDATION
            .replace("            MODE\n", "")
            .replace("          MODE\n", ""),
        "tls-validity-checks-ca-certificate",
    );
    let default_cert = s.default_ca.issue(&["client.example.org"], KeyType::Ecdsa);
    let per_port_cert = s.per_port_ca.issue(&["client.example.org"], KeyType::Ecdsa);
    assert_eq!(
        get(&s, 443, "example.org", Some(&default_cert)).await,
        Ok("infra-backend-v1".into())
    );
    let refused = get(&s, 443, "example.org", Some(&per_port_cert)).await;
    assert!(refused.is_err(), "{refused:?}");
    let refused = get(&s, 443, "example.org", None).await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(
        get(&s, s.port, "second-example.org", Some(&per_port_cert)).await,
        Ok("infra-backend-v2".into())
    );
    let refused = get(&s, s.port, "second-example.org", Some(&default_cert)).await;
    assert!(refused.is_err(), "{refused:?}");
}

/// GatewayFrontendClientCertificateValidationInsecureFallback: a certificate is asked for;
/// clients with one from either CA, or none, are all let in.
#[tokio::test]
async fn gateway_frontend_client_certificate_validation_insecure_fallback() {
    let s = setup(
        &VALIDATION.replace("MODE", "mode: AllowInsecureFallback"),
        "tls-validity-checks-ca-certificate",
    );
    let default_cert = s.default_ca.issue(&["client.example.org"], KeyType::Ecdsa);
    let per_port_cert = s.per_port_ca.issue(&["client.example.org"], KeyType::Ecdsa);
    for cert in [Some(&default_cert), Some(&per_port_cert), None] {
        assert_eq!(
            get(&s, 443, "example.org", cert).await,
            Ok("infra-backend-v1".into())
        );
        assert_eq!(
            get(&s, s.port, "second-example.org", cert).await,
            Ok("infra-backend-v2".into())
        );
    }
}

/// GatewayFrontendInvalidDefaultClientCertificateValidation: a default CA that cannot be had
/// lets no client in on the ports it applies to (the per-port one still works), and a
/// warning says why.
#[tokio::test]
async fn gateway_frontend_invalid_default_client_certificate_validation() {
    let s = setup(
        &VALIDATION
            .replace("            MODE\n", "")
            .replace("          MODE\n", ""),
        "some-other-config-map",
    );
    let default_cert = s.default_ca.issue(&["client.example.org"], KeyType::Ecdsa);
    let per_port_cert = s.per_port_ca.issue(&["client.example.org"], KeyType::Ecdsa);
    for cert in [Some(&default_cert), None] {
        let refused = get(&s, 443, "example.org", cert).await;
        assert!(refused.is_err(), "{refused:?}");
    }
    assert_eq!(
        get(&s, s.port, "second-example.org", Some(&per_port_cert)).await,
        Ok("infra-backend-v2".into())
    );
    let config = s.weir.admin_get("/config").await.json();
    let warnings = config["snapshot"]["warnings"].to_string();
    assert!(
        warnings.contains("frontend validation for port 443: InvalidCACertificateRef")
            && warnings.contains("frontend validation for port 443: NoValidCACertificate"),
        "{warnings}"
    );
}

/// A client that got in when the port asked for no valid certificate cannot resume its TLS
/// session past the rules of now: rustls does not check client certificates again on
/// resumption, so sessions are bound to the rules they were made under.
#[tokio::test]
async fn a_session_from_before_validation_does_not_resume_past_it() {
    let fallback = VALIDATION.replace("MODE", "mode: AllowInsecureFallback");
    let s = setup(&fallback, "tls-validity-checks-ca-certificate");
    let anonymous = client(&s.server, None);
    for _ in 0..2 {
        let reply = https_get(s.weir.tls, "example.org", anonymous.clone(), "/", &[])
            .await
            .unwrap();
        assert_eq!(reply.reply.backend(), "infra-backend-v1");
    }
    let resumed = https_get(s.weir.tls, "example.org", anonymous.clone(), "/", &[])
        .await
        .unwrap();
    assert!(resumed.resumed, "the client resumes while the rules stay");

    let version = s.weir.version().await;
    let strict = VALIDATION
        .replace("            MODE\n", "")
        .replace("          MODE\n", "");
    s.dir.write("gw.yaml", &gateway_yaml(&strict, s.port));
    s.weir
        .wait_version(version + 1, std::time::Duration::from_secs(5))
        .await;
    let refused = https_get(s.weir.tls, "example.org", anonymous, "/", &[]).await;
    assert!(
        refused.is_err(),
        "a session from before got in: {:?}",
        refused.map(|r| (r.resumed, r.reply.status))
    );
    let cert = s.default_ca.issue(&["client.example.org"], KeyType::Ecdsa);
    assert_eq!(
        get(&s, 443, "example.org", Some(&cert)).await,
        Ok("infra-backend-v1".into())
    );
}
