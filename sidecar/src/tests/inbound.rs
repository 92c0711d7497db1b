//! The inbound pipeline: the pod's AccessPolicy lets in who it names for what it names (403
//! for the rest, which never reaches the app), and the app learns the caller's identity from
//! `x-weir-peer-identity`, never from a copy the caller sent.

use http::Method;

use super::{stub::Stub, Sidecar};

const FRONTEND: &str = "spiffe://cluster.local/ns/default/sa/frontend";
const BATCH: &str = "spiffe://cluster.local/ns/default/sa/batch";

/// Default deny; `frontend` may GET under `/api/`.
const ACCESS: &str = "apiVersion: weir.dev/v1alpha1
kind: AccessPolicy
metadata: {name: app, namespace: default}
spec:
  default: deny
  rules:
  - from: [{serviceAccount: frontend}]
    to: [{methods: [GET], paths: [/api/*]}]
";

#[tokio::test]
async fn an_allowed_caller_reaches_the_app_with_its_proven_identity() {
    let app = Stub::start("app").await;
    let sidecar = Sidecar::serving(&[ACCESS]);
    let r = sidecar
        .inbound(app.addr, "/api/orders")
        .from(FRONTEND)
        .header(
            "x-weir-peer-identity",
            "spiffe://cluster.local/ns/default/sa/admin",
        )
        .header(
            "x_weir_peer_identity",
            "spiffe://cluster.local/ns/default/sa/admin",
        )
        .send()
        .await;
    assert_eq!((r.status.as_u16(), r.stub()), (200, Some("app")));
    let seen = app.one();
    assert_eq!(seen.all("x-weir-peer-identity"), [FRONTEND]);
    assert_eq!(seen.header("x_weir_peer_identity"), None);
    assert_eq!(seen.target, "/api/orders");
}

#[tokio::test]
async fn what_the_policy_does_not_allow_is_403_and_never_reaches_the_app() {
    let app = Stub::start("app").await;
    let sidecar = Sidecar::serving(&[ACCESS]);
    let denied = [
        sidecar.inbound(app.addr, "/api/orders").from(BATCH),
        sidecar
            .inbound(app.addr, "/api/orders")
            .from(FRONTEND)
            .method(Method::POST),
        sidecar.inbound(app.addr, "/admin").from(FRONTEND),
        sidecar.inbound(app.addr, "/api/../admin").from(FRONTEND),
        sidecar.inbound(app.addr, "/api/orders"),
    ];
    for call in denied {
        let r = call.send().await;
        assert_eq!(r.failure(), (403, Some("access-denied")));
    }
    assert_eq!(app.count(), 0);
}

#[tokio::test]
async fn without_a_policy_plaintext_is_let_in_and_carries_no_identity() {
    let app = Stub::start("app").await;
    let sidecar = Sidecar::serving(&[]);
    let r = sidecar
        .inbound(app.addr, "/")
        .header("x-weir-peer-identity", FRONTEND)
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        app.one().header("x-weir-peer-identity"),
        None,
        "a forged identity is removed"
    );
}
