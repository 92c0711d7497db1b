//! Stages 1 and 8, what the gateway stamps on a request: `x-request-id` (kept or made, and
//! returned to the client), `X-Forwarded-For/-Proto/-Host`, and the `Host` the client asked
//! for.

use super::{route, service, stub::Stub, Pipeline, CLIENT};

async fn shop() -> (Pipeline, Stub) {
    let app = Stub::start("app").await;
    let rules = "  - backendRefs: [{name: app, port: 80}]\n";
    let pipe = Pipeline::serving(&[
        &service("app", &[app.addr]),
        &route("shop", &["shop.example.com"], rules),
    ]);
    (pipe, app)
}

#[tokio::test]
async fn the_backend_learns_who_asked_for_what_over_which_scheme() {
    let (pipe, app) = shop().await;
    let r = pipe
        .get("Shop.Example.com:8080/")
        .header("x-forwarded-for", "198.51.100.1")
        .send()
        .await;
    assert_eq!(r.status, 200);
    let seen = app.one();
    let client_ip = CLIENT.split(':').next().expect("an IPv4 address");
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some(format!("198.51.100.1, {client_ip}").as_str()),
        "the client's address after what it sent"
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some("Shop.Example.com:8080")
    );
    assert_eq!(
        seen.header("host"),
        Some("Shop.Example.com:8080"),
        "the Host asked for"
    );
}

#[tokio::test]
async fn a_request_id_is_made_when_missing_and_kept_when_sent() {
    let (pipe, app) = shop().await;
    let made = pipe.get("shop.example.com/").send().await;
    let id = made.header("x-request-id").expect("an id for the client");
    assert!(!id.is_empty());
    assert_eq!(
        app.one().header("x-request-id"),
        Some(id),
        "the same id upstream"
    );

    let kept = pipe
        .get("shop.example.com/")
        .header("x-request-id", "req-42")
        .send()
        .await;
    assert_eq!(kept.header("x-request-id"), Some("req-42"));
    assert_eq!(app.seen()[1].header("x-request-id"), Some("req-42"));
}

#[tokio::test]
async fn a_failed_request_still_carries_its_id() {
    let (pipe, _app) = shop().await;
    let r = pipe
        .get("nowhere.example.com/")
        .header("x-request-id", "req-404")
        .send()
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-request-id"), Some("req-404"));
}
