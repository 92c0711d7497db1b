//! The controller end to end: the real `weir-controller` in directory mode, a real
//! `weir-ingress` connected to it over gRPC with TLS, and the CA signing over gRPC.

use std::time::{Duration, Instant};

use rustls::{
    pki_types::{pem::PemObject, CertificateDer, UnixTime},
    server::WebPkiClientVerifier,
    RootCertStore,
};
use weir_api::{
    model::TlsMode,
    proto::{watch_request, Ack, CertifyRequest, WatchRequest},
};
use weir_e2e::{
    api_key_policy, certify_request, csr_for, eventually, gateway, http_route, mesh_tls,
    next_sidecar_view, service, ConfigDir, Controller, Echo, Weir, API_KEYS, MESH,
};

fn route(name: &str, host: &str) -> String {
    http_route(name, &[host], "  - backendRefs: [{name: app, port: 80}]\n")
}

/// A config dir with one backend, the Gateway and a route for shop.example.com.
fn base(app: &Echo) -> ConfigDir {
    ConfigDir::new()
        .with("svc.yaml", &service("app", &[app]))
        .with("gw.yaml", &gateway())
        .with("shop.yaml", &route("shop", "shop.example.com"))
}

async fn connected_ingress(controller: &Controller) -> Weir {
    let token = controller.token_file("weir-system", "weir-ingress");
    let weir = Weir::connect(controller, &token, &[]);
    weir.wait_ready_config().await;
    weir
}

/// A backend, its config, a controller on it and an ingress connected to that.
async fn running() -> (Echo, ConfigDir, Controller, Weir) {
    let app = Echo::start("app");
    let dir = base(&app);
    let controller = Controller::start(&dir);
    let weir = connected_ingress(&controller).await;
    (app, dir, controller, weir)
}

async fn status_of(weir: &Weir, host: &str) -> u16 {
    weir.get(host, "/").await.status.as_u16()
}

#[tokio::test]
async fn an_httproute_created_is_routable_through_a_connected_ingress_within_a_second() {
    let (_app, dir, controller, weir) = running().await;
    assert_eq!(status_of(&weir, "shop.example.com").await, 200);
    assert_eq!(status_of(&weir, "new.example.com").await, 404);

    let written = Instant::now();
    dir.write("new.yaml", &route("new", "new.example.com"));
    eventually(
        Duration::from_secs(1),
        "the new route is served",
        || async { (status_of(&weir, "new.example.com").await == 200).then_some(()) },
    )
    .await;
    let took = written.elapsed();
    println!("object change to served: {took:?}");

    // The node acknowledged both versions it was sent.
    let acks = controller
        .metric(r#"weir_controller_acks_total{result="ack",role="ingress"}"#)
        .await;
    assert_eq!(acks, Some(2.0));
    let nodes = controller
        .metric(r#"weir_controller_connected_nodes{node_version="0.1.0",role="ingress"}"#)
        .await;
    assert_eq!(nodes, Some(1.0));
}

#[tokio::test]
async fn an_invalid_policy_is_refused_with_its_reason_while_the_last_good_one_keeps_serving() {
    let app = Echo::start("app");
    let keys = API_KEYS;
    let policy = api_key_policy;
    let dir = base(&app)
        .with("keys.yaml", keys)
        .with("auth.yaml", &policy("X-API-Key"));
    let controller = Controller::start(&dir);
    let weir = connected_ingress(&controller).await;
    let with_key = |weir: &Weir| {
        let weir = weir.addr;
        async move {
            weir_e2e::request(
                weir,
                "shop.example.com",
                "/",
                &[("x-api-key", "k-mobile-123")],
                bytes::Bytes::new(),
                "GET",
            )
            .await
            .status
            .as_u16()
        }
    };
    assert_eq!(status_of(&weir, "shop.example.com").await, 401);
    assert_eq!(with_key(&weir).await, 200);

    // The policy breaks while another route is added in the same change.
    dir.write("auth.yaml", &policy("not a header"));
    dir.write("new.yaml", &route("new", "new.example.com"));
    eventually(
        Duration::from_secs(5),
        "the rest of the change applies",
        || async { (status_of(&weir, "new.example.com").await == 200).then_some(()) },
    )
    .await;
    let status = controller.status().await;
    let rejected = &status["rejected"][0];
    assert_eq!(rejected["object"], "AuthPolicy default/shop", "{status}");
    assert_eq!(rejected["serving"], "previous", "{status}");
    let error = &rejected["errors"][0];
    assert_eq!(error["field"], "spec.apiKeys.header", "{status}");
    assert!(
        error["message"].as_str().unwrap().contains("not a header"),
        "{status}"
    );
    // The last good policy still protects the route.
    assert_eq!(status_of(&weir, "shop.example.com").await, 401);
    assert_eq!(with_key(&weir).await, 200);

    // Fixed: the rejection clears.
    dir.write("auth.yaml", &policy("X-Key"));
    eventually(
        Duration::from_secs(5),
        "the fixed policy applies",
        || async {
            let status = controller.status().await;
            status["rejected"].as_array()?.is_empty().then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn the_ingress_keeps_serving_while_the_controller_is_away_and_resyncs_when_it_returns() {
    let (_app, dir, mut controller, weir) = running().await;

    controller.kill();
    for _ in 0..20 {
        assert_eq!(status_of(&weir, "shop.example.com").await, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready = weir.admin_get("/readyz").await.status;
    assert_eq!(ready, 200, "a node without its controller stays ready");

    // Changed while the controller was down; picked up when it returns.
    dir.write("new.yaml", &route("new", "new.example.com"));
    controller.restart();
    eventually(Duration::from_secs(20), "resync after restart", || async {
        (status_of(&weir, "new.example.com").await == 200).then_some(())
    })
    .await;
    assert_eq!(status_of(&weir, "shop.example.com").await, 200);
}

#[tokio::test]
async fn sigterm_ends_the_config_streams_and_the_controller_exits() {
    let (_app, _dir, mut controller, weir) = running().await;
    assert_eq!(controller.terminate(Duration::from_secs(5)), Some(0));
    assert_eq!(status_of(&weir, "shop.example.com").await, 200);
}

#[tokio::test]
async fn a_node_gets_nothing_until_it_proves_it_may_be_an_ingress() {
    let app = Echo::start("app");
    let dir = base(&app);
    let controller = Controller::start(&dir);

    // A valid token for a workload account: not allowed the ingress view (it has keys).
    let web = controller.token_file("shop", "web");
    let weir = Weir::connect(
        &controller,
        &web,
        &["--namespace", "shop", "--service-account", "web"],
    );
    eventually(Duration::from_secs(5), "the refusal", || async {
        controller
            .metric(r#"weir_controller_streams_refused_total{reason="not-an-ingress"}"#)
            .await
    })
    .await;
    assert_eq!(weir.admin_get("/readyz").await.status, 503);
    assert_eq!(status_of(&weir, "shop.example.com").await, 404);

    // A token that claims a different account than the Hello.
    let ingress = controller.token_file("weir-system", "weir-ingress");
    let liar = Weir::connect(&controller, &ingress, &["--service-account", "other"]);
    eventually(Duration::from_secs(5), "the refusal", || async {
        controller
            .metric(r#"weir_controller_streams_refused_total{reason="identity-mismatch"}"#)
            .await
    })
    .await;
    assert_eq!(liar.admin_get("/readyz").await.status, 503);

    // A token from another controller's key.
    let forged = ConfigDir::new();
    let other = Controller::start(&forged);
    let foreign = other.token_file("weir-system", "weir-ingress");
    let stranger = Weir::connect(&controller, &foreign, &[]);
    eventually(Duration::from_secs(5), "the refusal", || async {
        controller
            .metric(r#"weir_controller_streams_refused_total{reason="unauthenticated"}"#)
            .await
    })
    .await;
    assert_eq!(stranger.admin_get("/readyz").await.status, 503);
}

#[tokio::test]
async fn the_ca_signs_only_the_identity_a_token_proves() {
    let dir = ConfigDir::new();
    let controller = Controller::start(&dir);
    let mut client = controller.identity_client().await;
    let token = controller.token("shop", "web");

    let refused = client
        .certify(certify_request(
            csr_for("spiffe://cluster.local/ns/shop/sa/admin"),
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused
            .message()
            .contains("the caller proved spiffe://cluster.local/ns/shop/sa/web"),
        "{refused:?}"
    );
    let anonymous = client
        .certify(tonic::Request::new(CertifyRequest {
            csr_pem: csr_for("spiffe://cluster.local/ns/shop/sa/web"),
        }))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);

    let issued = client
        .certify(certify_request(
            csr_for("spiffe://cluster.local/ns/shop/sa/web"),
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(issued.spiffe_id, "spiffe://cluster.local/ns/shop/sa/web");
    let mut roots = RootCertStore::empty();
    for root in &issued.trust_bundle_pem {
        roots
            .add(CertificateDer::from_pem_slice(root.as_bytes()).unwrap())
            .unwrap();
    }
    let leaf = CertificateDer::from_pem_slice(issued.certificate_pem.as_bytes()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
        .build()
        .unwrap()
        .verify_client_cert(&leaf, &[], UnixTime::now())
        .expect("rustls accepts the certificate");
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap().value;
    assert_eq!(
        san.general_names,
        vec![x509_parser::extensions::GeneralName::URI(
            "spiffe://cluster.local/ns/shop/sa/web"
        )]
    );
    let in_a_day = UnixTime::now().as_secs() as i64 + 24 * 3600;
    assert!((issued.not_after - in_a_day).abs() < 60, "24 h by default");
    assert_eq!(
        controller
            .metric(r#"weir_controller_certificates_total{result="issued"}"#)
            .await,
        Some(1.0)
    );
}

#[test]
fn a_plaintext_controller_url_or_an_empty_trust_bundle_is_refused_at_start() {
    let dir = ConfigDir::new().with("ca.pem", "not a certificate\n");
    let token = dir.path.join("token");
    std::fs::write(&token, "x").unwrap();
    let run = |url: &str, ca: &std::path::Path| {
        let out = std::process::Command::new(weir_e2e::binary("weir-ingress"))
            .args(["--controller", url, "--controller-ca"])
            .arg(ca)
            .arg("--identity-token-file")
            .arg(&token)
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let ca = dir.path.join("ca.pem");
    let plaintext = run("http://127.0.0.1:15010", &ca);
    assert!(
        plaintext.contains("only runs over TLS: use https://HOST:PORT"),
        "{plaintext}"
    );
    let empty = run("https://127.0.0.1:15010", &ca);
    assert!(empty.contains("no PEM certificate in it"), "{empty}");
}

#[tokio::test]
async fn a_sidecar_gets_its_pods_policy_and_the_services_it_may_call() {
    let dir = ConfigDir::new()
        .with("mesh.yaml", MESH)
        .with("tls.yaml", &mesh_tls("STRICT"));
    let controller = Controller::start(&dir);
    let token = controller.token("shop", "backend");
    let (mut updates, acks) = controller
        .sidecar_stream(&token, "shop", "backend", "backend-a")
        .await
        .unwrap();
    let (version, view) = next_sidecar_view(&mut updates).await;
    assert_eq!(view.inbound.mode, TlsMode::Strict);
    assert_eq!(view.inbound.access[0].policy, "AccessPolicy shop/backend");
    let backend = view.services.iter().find(|s| s.name == "backend").unwrap();
    let cluster = &view.clusters[&backend.ports[0].cluster];
    assert_eq!(
        cluster.identities.values().collect::<Vec<_>>(),
        ["shop/backend"],
        "the endpoint's pod is meshed and runs as shop/backend"
    );
    acks.send(WatchRequest {
        kind: Some(watch_request::Kind::Ack(Ack { version })),
    })
    .await
    .unwrap();

    // The security team relaxes the namespace: the sidecar gets the next version.
    dir.write("tls.yaml", &mesh_tls("PERMISSIVE"));
    let (next, view) = next_sidecar_view(&mut updates).await;
    assert_eq!(next, version + 1);
    assert_eq!(view.inbound.mode, TlsMode::Permissive);

    // Another account cannot read this pod's view.
    let other = controller.token("shop", "frontend");
    let refused = controller
        .sidecar_stream(&other, "shop", "frontend", "backend-a")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("runs as ServiceAccount backend"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_workload_certificate_is_renewed_at_half_its_life_and_outlives_a_controller_outage() {
    use std::sync::Arc;
    use weir_mesh::{
        control::ControlSettings,
        identity::{maintain, WorkloadIdentity},
    };
    let dir = ConfigDir::new();
    let mut controller = Controller::start_with(&dir, &["--cert-lifetime", "6s"]);
    let settings = ControlSettings {
        url: format!("https://{}", controller.grpc),
        ca_pem: Some(std::fs::read(controller.bundle()).unwrap()),
        token_file: controller.token_file("shop", "web"),
        role: weir_api::proto::Role::Sidecar,
        namespace: "shop".into(),
        service_account: "web".into(),
        pod: "web-0".into(),
    };
    let web = "spiffe://cluster.local/ns/shop/sa/web";
    let identity = Arc::new(WorkloadIdentity::default());
    assert!(!identity.ready(), "not ready before the first certificate");
    let task = tokio::spawn(maintain(
        settings,
        web.to_string(),
        identity.clone(),
        weir_proxy::metrics::Metrics::new()
            .identity
            .certificate_expiry,
    ));

    let first = eventually(Duration::from_secs(10), "a certificate", || async {
        identity.current()
    })
    .await;
    assert_eq!(first.spiffe_id, web);
    let mut roots = RootCertStore::empty();
    for root in &first.bundle {
        roots.add(root.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
        .build()
        .unwrap()
        .verify_client_cert(&first.certified.cert[0], &[], UnixTime::now())
        .expect("the bundle that came with it accepts it");

    // Renewed half way through its 6 s (with a new key), before it expires.
    let second = eventually(Duration::from_secs(8), "a renewal", || async {
        identity.current().filter(|c| !Arc::ptr_eq(c, &first))
    })
    .await;
    assert!(
        second.issued < first.not_after,
        "renewed before the first one expired"
    );
    assert_ne!(second.certified.cert[0], first.certified.cert[0]);

    // The controller goes away: the certificate in hand keeps serving.
    controller.kill();
    assert!(identity.ready());
    tokio::time::sleep(Duration::from_secs(1)).await;
    controller.restart();
    let third = eventually(Duration::from_secs(15), "renewals resume", || async {
        identity.current().filter(|c| !Arc::ptr_eq(c, &second))
    })
    .await;
    assert_eq!(third.spiffe_id, web);
    task.abort();
}
