//! The control plane against its own clients (issue 24): the real `weir-controller`, in
//! Kubernetes mode against the test API server where tokens are reviewed, attacked through its
//! gRPC port.
//!
//! - made-up tokens cost the API server a bounded number of TokenReviews;
//! - a token bound to one pod cannot open a stream for another, and one ServiceAccount cannot
//!   hold more than its share of streams;
//! - a node given `--controller-ca` trusts that CA alone, even when the system roots would
//!   vouch for an impostor controller.

use std::{path::PathBuf, time::Duration};

use tonic::Code;
use weir_e2e::{
    apiserver::ApiServer, certify_request, csr_for, eventually, routed, Controller, Echo, Weir,
};

const NAMESPACES: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: weir-system}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n";

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-hardening-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A controller in Kubernetes mode on an empty cluster, with `extra` flags.
fn kubernetes(extra: &[&str]) -> (ApiServer, Controller) {
    let api = ApiServer::start();
    api.apply(NAMESPACES);
    let controller = Controller::start_kubernetes(&api, &scratch(), extra);
    (api, controller)
}

#[tokio::test]
async fn made_up_tokens_cost_the_api_server_a_bounded_number_of_reviews() {
    let (api, controller) = kubernetes(&["--token-review-rate", "1", "--token-review-burst", "5"]);
    let mut client = controller.identity_client().await;
    let csr = csr_for("spiffe://cluster.local/ns/shop/sa/web");
    let before = api.token_reviews();
    let started = std::time::Instant::now();
    let mut throttled = 0;
    for i in 0..60 {
        let request = certify_request(csr.clone(), &format!("made-up-token-{i}"));
        match client.certify(request).await {
            Err(s) if s.code() == Code::ResourceExhausted => throttled += 1,
            Err(s) if s.code() == Code::Unauthenticated => {}
            other => panic!("a made-up token got {other:?}"),
        }
    }
    let reviews = api.token_reviews() - before;
    // The burst, plus what the rate (1/s) refilled while the attempts ran.
    let allowed = 5 + started.elapsed().as_secs() as usize + 1;
    assert!(
        reviews <= allowed,
        "{reviews} TokenReviews for 60 made-up tokens (at most {allowed})"
    );
    assert!(throttled > 0, "no attempt was refused for its rate");

    // One bad token repeated is reviewed once: the refusal is remembered.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = api.token_reviews();
    for _ in 0..20 {
        let status = client
            .certify(certify_request(csr.clone(), "the-same-bad-token"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    assert_eq!(api.token_reviews() - before, 1);

    // A real token from the same address still gets its certificate once the bucket refills.
    api.add_token("web-token", "shop", "web", &["weir"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let issued = client
        .certify(certify_request(csr, "web-token"))
        .await
        .expect("a real token is certified")
        .into_inner();
    assert_eq!(issued.spiffe_id, "spiffe://cluster.local/ns/shop/sa/web");
}

#[tokio::test]
async fn a_pod_bound_token_opens_streams_only_for_its_own_pod() {
    let (api, controller) = kubernetes(&[]);
    api.add_pod_token("web-1-token", "shop", "web", "web-1");
    let own = controller
        .sidecar_stream("web-1-token", "shop", "web", "web-1")
        .await;
    assert!(own.is_ok(), "its own pod: {:?}", own.err());
    let status = controller
        .sidecar_stream("web-1-token", "shop", "web", "web-2")
        .await
        .expect_err("another pod's stream is refused");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("web-1"), "{}", status.message());
}

#[tokio::test]
async fn one_service_account_holds_at_most_its_share_of_streams() {
    let (api, controller) = kubernetes(&["--max-streams-per-account", "3"]);
    api.add_token("web-token", "shop", "web", &["weir"]);
    api.add_token("db-token", "shop", "db", &["weir"]);
    let mut open = Vec::new();
    for i in 0..3 {
        let stream = controller
            .sidecar_stream("web-token", "shop", "web", &format!("made-up-pod-{i}"))
            .await
            .expect("within the cap");
        open.push(stream);
    }
    let status = controller
        .sidecar_stream("web-token", "shop", "web", "made-up-pod-3")
        .await
        .expect_err("a fourth stream is refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("--max-streams-per-account"),
        "{}",
        status.message()
    );
    // Other accounts are not affected.
    assert!(controller
        .sidecar_stream("db-token", "shop", "db", "db-0")
        .await
        .is_ok());
    // A stream that ends gives its slot back.
    open.pop();
    eventually(Duration::from_secs(10), "a freed slot", || async {
        controller
            .sidecar_stream("web-token", "shop", "web", "made-up-pod-4")
            .await
            .ok()
    })
    .await;
}

#[tokio::test]
async fn a_node_trusts_only_its_controller_ca_not_the_system_roots() {
    let app = Echo::start("app");
    let config = || routed(&app, "shop", "shop.example.com");
    // Two controllers, each with its own CA (its own state directory): `real` is the one
    // nodes are told to trust; `impostor` holds a certificate from a CA the system roots
    // trust.
    let (real_dir, impostor_dir) = (config(), config());
    let real = Controller::start(&real_dir);
    let impostor = Controller::start(&impostor_dir);
    let token = impostor.token_file("weir-system", "weir-ingress");
    let system_roots = impostor.bundle().display().to_string();
    let env = [("SSL_CERT_FILE", system_roots.as_str())];

    // Control: trusting the impostor's CA explicitly, the node connects (the setup works).
    let trusting = Weir::connect_trusting(&impostor, &impostor.bundle(), &token, &[], &env);
    trusting.wait_ready_config().await;
    drop(trusting);
    eventually(
        Duration::from_secs(5),
        "the control node's stream",
        || async { impostor.logs().contains("node connected").then_some(()) },
    )
    .await;
    let connected_before = impostor.logs().matches("node connected").count();

    // Told to trust the real controller's CA, the node refuses the impostor although the
    // system roots vouch for it, so its token never reaches it.
    let node = Weir::connect_trusting(&impostor, &real.bundle(), &token, &[], &env);
    eventually(Duration::from_secs(10), "a refused certificate", || async {
        node.stderr()
            .iter()
            .any(|l| {
                l.contains("config stream failed")
                    && (l.contains("UnknownIssuer") || l.contains("invalid peer certificate"))
            })
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_ne!(node.admin_get("/readyz").await.status, 200);
    assert_eq!(
        impostor.logs().matches("node connected").count(),
        connected_before,
        "the impostor saw a stream:\n{}",
        impostor.logs()
    );
}
