//! Stages 7 and 10, backends: a TrafficPolicy's retries and consistent hashing, and every way
//! a backend can fail mapped to the status and `x-weir-error` the client gets.

use std::{net::SocketAddr, time::Duration};

use http::Method;

use super::{
    policy, route, service,
    stub::{self, Answer, Stub},
    Pipeline,
};

/// Service `app` with `endpoints` behind `shop.example.com`, the rule carrying `extra` (YAML
/// lines indented by 4), and `more` objects.
fn shop(endpoints: &[SocketAddr], extra: &str, more: &[&str]) -> Pipeline {
    let rules = format!("  - backendRefs: [{{name: app, port: 80}}]\n{extra}");
    let svc = service("app", endpoints);
    let shop = route("shop", &["shop.example.com"], &rules);
    let mut objects = vec![svc.as_str(), shop.as_str()];
    objects.extend(more);
    Pipeline::serving(&objects)
}

fn traffic(spec: &str) -> String {
    policy("TrafficPolicy", "app", "Service/app", spec)
}

#[tokio::test]
async fn a_5xx_is_retried_on_another_endpoint_and_the_client_sees_the_success() {
    let bad = Stub::answering("bad", Answer::Status(503)).await;
    let good = Stub::start("good").await;
    let retry = traffic(
        "  retry: {attempts: 2, retryOn: [5xx], backoff: {base: 1ms, max: 1ms}, budget: {percent: 100}}\n  loadBalancer: {algorithm: roundRobin}\n",
    );
    let pipe = shop(&[bad.addr, good.addr], "", &[&retry]);
    for _ in 0..4 {
        let r = pipe.get("shop.example.com/").send().await;
        assert_eq!((r.status.as_u16(), r.stub()), (200, Some("good")));
    }
    assert_eq!(
        good.count(),
        4,
        "every request reached the good endpoint once"
    );
    assert!(
        (1..=4).contains(&bad.count()),
        "round robin tried the failing endpoint first at least once, at most once a request: {}",
        bad.count()
    );
}

#[tokio::test]
async fn without_a_retry_the_client_sees_the_backend_status() {
    let bad = Stub::answering("bad", Answer::Status(503)).await;
    let pipe = shop(&[bad.addr], "", &[&traffic("  retry: {attempts: 1}\n")]);
    let r = pipe.get("shop.example.com/").send().await;
    assert_eq!((r.status.as_u16(), r.stub()), (503, Some("bad")));
    assert_eq!(
        r.error(),
        None,
        "the backend's own answer, not the gateway's"
    );
    assert_eq!(bad.count(), 1);
}

#[tokio::test]
async fn consistent_hashing_sends_equal_keys_to_the_same_endpoint() {
    let stubs = stub::three().await;
    let hash =
        traffic("  loadBalancer: {algorithm: consistentHash, hashOn: {header: x-user-id}}\n");
    let pipe = shop(&stubs.each_ref().map(|s| s.addr), "", &[&hash]);
    stub::assert_keys_stick(|key| {
        let call = pipe.get("shop.example.com/").header("x-user-id", &key);
        call.send()
    })
    .await;
}

#[tokio::test]
async fn a_refused_connection_is_502_connect_failed() {
    let pipe = shop(&[Stub::refusing().await], "", &[]);
    let r = pipe.get("shop.example.com/").send().await;
    assert_eq!(r.failure(), (502, Some("connect-failed")));
}

#[tokio::test]
async fn a_connection_closed_unanswered_is_502_backend_reset() {
    let app = Stub::answering("app", Answer::Reset).await;
    let pipe = shop(&[app.addr], "", &[]);
    let r = pipe.get("shop.example.com/").send().await;
    assert_eq!(r.failure(), (502, Some("backend-reset")));
    assert!(app.count() >= 1, "the backend was reached");
}

#[tokio::test(start_paused = true)]
async fn a_backend_slower_than_the_route_timeout_is_504() {
    let app = Stub::answering("app", Answer::After(Duration::from_secs(30))).await;
    let pipe = shop(&[app.addr], "    timeouts: {request: 2s}\n", &[]);
    let started = tokio::time::Instant::now();
    let r = pipe.get("shop.example.com/").send().await;
    assert_eq!(r.failure(), (504, Some("timeout")));
    let waited = started.elapsed();
    assert!(
        (Duration::from_secs(2)..Duration::from_secs(30)).contains(&waited),
        "answered after {waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_try_slower_than_its_per_try_timeout_is_retried_on_another_endpoint() {
    let slow = Stub::answering("slow", Answer::After(Duration::from_secs(30))).await;
    let fast = Stub::start("fast").await;
    let retry = traffic(
        "  retry: {attempts: 2, perTryTimeout: 1s, retryOn: [timeout], backoff: {base: 1ms, max: 1ms}, budget: {percent: 100}}\n  loadBalancer: {algorithm: roundRobin}\n",
    );
    let pipe = shop(&[slow.addr, fast.addr], "", &[&retry]);
    let started = tokio::time::Instant::now();
    for _ in 0..4 {
        let r = pipe.get("shop.example.com/").send().await;
        assert_eq!((r.status.as_u16(), r.stub()), (200, Some("fast")));
    }
    assert_eq!(fast.count(), 4);
    let waited = started.elapsed();
    let slow_tries = slow.count() as u32;
    assert!(slow_tries >= 1, "round robin never tried the slow endpoint");
    assert!(
        waited >= Duration::from_secs(1) * slow_tries && waited < Duration::from_secs(30),
        "{slow_tries} slow tries took {waited:?}: one per-try timeout each"
    );
}

#[tokio::test]
async fn a_service_with_no_endpoints_is_503_and_a_missing_one_500() {
    let pipe = shop(&[], "", &[]);
    let r = pipe.get("shop.example.com/").send().await;
    assert_eq!(r.failure(), (503, Some("no-healthy-endpoint")));

    let rules = "  - backendRefs: [{name: nowhere, port: 80}]\n";
    let pipe = Pipeline::serving(&[&route("shop", &["shop.example.com"], rules)]);
    let r = pipe.get("shop.example.com/").send().await;
    assert_eq!(r.failure(), (500, Some("backend-not-found")));
}

#[tokio::test]
async fn a_body_over_the_route_limit_is_413_and_never_sent() {
    let app = Stub::start("app").await;
    let svc = service("app", &[app.addr]);
    let limited = route(
        "shop",
        &["shop.example.com"],
        "  - backendRefs: [{name: app, port: 80}]\n",
    )
    .replace(
        "namespace: default}",
        "namespace: default, annotations: {weir.dev/max-request-body: '16'}}",
    );
    let pipe = Pipeline::serving(&[&svc, &limited]);
    let post = |body: &str| {
        pipe.call(Method::POST, "shop.example.com/upload")
            .body(body)
            .send()
    };
    let r = post("far more than sixteen bytes").await;
    assert_eq!(r.failure(), (413, Some("body-too-large")));
    assert_eq!(app.count(), 0);

    assert_eq!(post("small").await.status, 200);
    assert_eq!(app.one().body, "small");

    let unsaid = pipe.call(Method::POST, "shop.example.com/upload");
    let r = unsaid.chunked("far more than sixteen bytes").send().await;
    assert_eq!(
        r.failure(),
        (413, Some("body-too-large")),
        "no length said: counted"
    );
    assert_eq!(app.count(), 1, "nothing more reached the backend");
}
