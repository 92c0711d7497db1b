//! HTTPRoute `retry` (GEP-1731), as the upstream conformance tests check it
//! (kubernetes-sigs/gateway-api, conformance/tests, httproute-retry*): the backend is told to
//! fail the first N requests of a uuid (`/retry?uuid=U&succeedAfter=N&responseCode=C`, as
//! upstream's echo server is), and a 200 proves the gateway tried again. Then what a careless
//! route or a failing backend would do with it: a hundred attempts against a backend that
//! always fails stay within the retry budget, `attempts: 0` turns the Service's own retries
//! off, a POST is not tried again once sent, and a route with a wrong `retry` is refused
//! alone.

use std::net::SocketAddr;

use bytes::Bytes;
use weir_e2e::{
    free_port, gateway, http_route, request, service, service_with, traffic_policy, ConfigDir,
    Echo, Reply, Weir,
};

/// An HTTPRoute `name` for `host` with one rule per `(prefix, retry)`, each to `backend`.
fn retry_route(name: &str, host: &str, rules: &[(&str, &str)], backend: &str) -> String {
    let rules: String = rules
        .iter()
        .map(|(prefix, retry)| {
            format!("  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]\n    {retry}\n    backendRefs: [{{name: {backend}, port: 80}}]\n")
        })
        .collect();
    http_route(name, &[host], &rules)
}

/// The gateway serving one HTTPRoute for `retry.example` with a rule per `(prefix, retry)`,
/// each to `backend` (named `name`), and `extra` objects.
fn serve(name: &str, backend: &Echo, rules: &[(&str, &str)], extra: &[(&str, &str)]) -> Weir {
    let mut dir = ConfigDir::new()
        .with("svc.yaml", &service(name, &[backend]))
        .with("gw.yaml", &gateway())
        .with(
            "route.yaml",
            &retry_route("retries", "retry.example", rules, name),
        );
    for (file, yaml) in extra {
        dir = dir.with(file, yaml);
    }
    Weir::start(&dir)
}

/// `GET path?uuid=U&succeedAfter=N[&responseCode=C][&delayRetry=D]` with a fresh uuid.
async fn probe(
    weir: &Weir,
    path: &str,
    succeed_after: u32,
    code: Option<u16>,
    delay: &str,
) -> Reply {
    let uuid = fastrand::u64(..);
    let mut query = format!("uuid={uuid}&succeedAfter={succeed_after}");
    if let Some(code) = code {
        query.push_str(&format!("&responseCode={code}"));
    }
    if !delay.is_empty() {
        query.push_str(&format!("&delayRetry={delay}"));
    }
    weir.get("retry.example", &format!("{path}?{query}")).await
}

/// HTTPRouteRetry: codes and attempts as the route says; a code it does not name is not
/// tried again.
#[tokio::test]
async fn http_route_retry() {
    let backend = Echo::start("infra-backend-v3");
    let weir = serve(
        "infra-backend-v3",
        &backend,
        &[
            (
                "/retry/code-500-attempts-3",
                "retry: {codes: [500], attempts: 3}",
            ),
            (
                "/retry/code-all-attempts-2",
                "retry: {codes: [500, 502, 503, 504], attempts: 2}",
            ),
            (
                "/retry/code-all-attempts-0",
                "retry: {codes: [500, 502, 503, 504], attempts: 0}",
            ),
        ],
        &[],
    );
    let path = "/retry/code-500-attempts-3";
    for (succeed_after, code, expected) in [(2, 500, 200), (4, 500, 500), (2, 503, 503)] {
        let reply = probe(&weir, path, succeed_after, Some(code), "").await;
        assert_eq!(
            reply.status, expected,
            "{path} {code} after {succeed_after}"
        );
    }
    let path = "/retry/code-all-attempts-2";
    for code in [500, 502, 503, 504] {
        assert_eq!(
            probe(&weir, path, 1, Some(code), "").await.status,
            200,
            "{code}"
        );
        assert_eq!(
            probe(&weir, path, 3, Some(code), "").await.status,
            code,
            "{code}"
        );
    }
    let path = "/retry/code-all-attempts-0";
    assert_eq!(probe(&weir, path, 1, Some(500), "").await.status, 500);
    // Each try reached the backend: 1 + 3 + 2 + 2 + 4 × (2 + 3) + 1.
    assert_eq!(backend.served().await, 29);
}

/// HTTPRouteRetryWithTimeouts: a try that runs out of `timeouts.backendRequest` is tried
/// again; `timeouts.request` bounds the tries together (504).
#[tokio::test]
async fn http_route_retry_with_timeouts() {
    let backend = Echo::start("infra-backend-v3");
    let weir = serve("infra-backend-v3", &backend, &[
            (
                "/retry/backend-request-timeout-200ms",
                "retry: {attempts: 2}\n    timeouts: {backendRequest: 200ms}",
            ),
            (
                "/retry/request-timeout-200ms",
                "retry: {codes: [500], attempts: 5}\n    timeouts: {backendRequest: 200ms, request: 400ms}",
            ),
        ], &[]);
    let path = "/retry/backend-request-timeout-200ms";
    assert_eq!(probe(&weir, path, 2, Some(500), "300ms").await.status, 200);
    assert_eq!(probe(&weir, path, 3, Some(500), "300ms").await.status, 504);
    let path = "/retry/request-timeout-200ms";
    assert_eq!(probe(&weir, path, 1, Some(500), "").await.status, 200);
    assert_eq!(probe(&weir, path, 4, Some(500), "100ms").await.status, 504);
}

/// HTTPRouteRetryConnectionError: a Service with an endpoint that refuses connections and a
/// healthy one answers every request from the healthy one.
#[tokio::test]
async fn http_route_retry_connection_error() {
    // Both endpoints on one port, as a Service's are: nothing listens on the second address.
    let port = free_port();
    let healthy = Echo::start_at(
        "infra-backend-connection-error-healthy",
        SocketAddr::from(([127, 0, 0, 1], port)),
    );
    let refused = SocketAddr::from(([127, 0, 0, 2], port));
    let svc = service_with(
        "infra-backend-connection-error",
        &[(refused, true), (healthy.addr, true)],
        "",
    );
    let route = retry_route(
        "retries-connection-error",
        "retry.example",
        &[("/retry-on-connection-errors", "retry: {attempts: 100}")],
        "infra-backend-connection-error",
    );
    let dir = ConfigDir::new()
        .with("svc.yaml", &svc)
        .with("gw.yaml", &gateway())
        .with("route.yaml", &route);
    let weir = Weir::start(&dir);
    for _ in 0..20 {
        let reply = weir
            .get("retry.example", "/retry-on-connection-errors")
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.backend(), "infra-backend-connection-error-healthy");
    }
}

/// A hundred attempts against a backend that always fails: the retries come out of the
/// cluster's budget (20 % of its requests plus 10 a second over ten seconds), so the backend
/// sees a bounded multiple of the offered load, not a hundred times it.
#[tokio::test]
async fn retries_stay_within_the_budget_whatever_attempts_says() {
    let backend = Echo::start("app");
    backend.mode("fail").await;
    let rules = [("/", "retry: {codes: [503], attempts: 100, backoff: 1ms}")];
    let weir = serve("app", &backend, &rules, &[]);
    for _ in 0..200 {
        assert_eq!(weir.get("retry.example", "/").await.status, 503);
    }
    let served = backend.served().await;
    // 200 first tries, retries at most 0.2 × 200 + 10/s × 10 s.
    assert!((200..=340).contains(&served), "{served}");
    let exhausted = weir
        .metric("weir_retry_budget_exhausted_total{cluster=\"default/app:80\"}")
        .await;
    assert!(exhausted > Some(0.0), "{exhausted:?}");
}

/// `attempts: 0` turns retries off even where the Service's TrafficPolicy retries; a POST is
/// not sent again once it reached the backend (a connection that was never made is).
#[tokio::test]
async fn attempts_zero_wins_over_the_services_policy_and_a_post_is_sent_once() {
    let backend = Echo::start("app");
    let policy = traffic_policy(
        "retry-everything",
        "app",
        "  retry: {attempts: 3, retryOn: [\"5xx\"]}\n",
    );
    let rules = [
        ("/retry/off", "retry: {attempts: 0}"),
        ("/retry/on", "retry: {codes: [500], attempts: 2}"),
    ];
    let weir = serve("app", &backend, &rules, &[("policy.yaml", &policy)]);
    assert_eq!(
        probe(&weir, "/retry/off", 1, Some(500), "").await.status,
        500
    );
    assert_eq!(backend.served().await, 1);
    let post = request(
        weir.addr,
        "retry.example",
        &format!(
            "/retry/on?uuid={}&succeedAfter=1&responseCode=500",
            fastrand::u64(..)
        ),
        &[],
        Bytes::from_static(b"pay once"),
        "POST",
    )
    .await;
    assert_eq!(post.status, 500);
    assert_eq!(backend.served().await, 2);
    assert_eq!(
        probe(&weir, "/retry/on", 1, Some(500), "").await.status,
        200
    );
}

/// A `retry` Weir cannot take (a code that is no HTTP error, more attempts than it allows, a
/// backoff that is no duration) refuses that route alone, naming the field; the rest serves.
#[tokio::test]
async fn a_route_with_a_wrong_retry_is_refused_alone() {
    let backend = Echo::start("app");
    let good = retry_route(
        "good",
        "good.example",
        &[("/", "retry: {attempts: 1}")],
        "app",
    );
    let wrong = [
        (
            "codes",
            "retry: {codes: [200]}",
            "spec.rules[0].retry.codes[0]",
        ),
        (
            "attempts",
            "retry: {attempts: 1000}",
            "spec.rules[0].retry.attempts",
        ),
        (
            "backoff",
            "retry: {backoff: soon}",
            "spec.rules[0].retry.backoff",
        ),
    ];
    let mut dir = ConfigDir::new()
        .with("svc.yaml", &service("app", &[&backend]))
        .with("gw.yaml", &gateway())
        .with("good.yaml", &good);
    for (name, retry, _) in wrong {
        let route = retry_route(name, &format!("{name}.example"), &[("/", retry)], "app");
        dir = dir.with(&format!("{name}.yaml"), &route);
    }
    let weir = Weir::start(&dir);
    assert_eq!(weir.get("good.example", "/").await.status, 200);
    let refused = weir.admin_get("/config").await.json()["reload"]["refused"].to_string();
    for (name, _, field) in wrong {
        assert_eq!(weir.get(&format!("{name}.example"), "/").await.status, 404);
        assert!(refused.contains(field), "{field}: {refused}");
    }
}

/// `backoff` is a minimum (GEP-1731): the retry does not go out sooner.
#[tokio::test]
async fn a_retry_waits_at_least_its_backoff() {
    let backend = Echo::start("app");
    let rules = [(
        "/retry",
        "retry: {codes: [500], attempts: 1, backoff: 300ms}",
    )];
    let weir = serve("app", &backend, &rules, &[]);
    let started = std::time::Instant::now();
    assert_eq!(probe(&weir, "/retry", 1, Some(500), "").await.status, 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
}

/// When the breaker ejects the only endpoint after a try, there is nothing to retry on: the
/// client gets the backend's own answer, not the gateway's `circuit-open`.
#[tokio::test]
async fn a_retry_with_no_endpoint_left_returns_the_backends_answer() {
    let backend = Echo::start("app");
    backend.mode("fail").await;
    let policy = traffic_policy(
        "eject",
        "app",
        "  circuitBreaker: {consecutiveFailures: 1, baseEjectionTime: 30s, maxEjectionPercent: 100}\n",
    );
    let rules = [("/", "retry: {codes: [503], attempts: 3}")];
    let weir = serve("app", &backend, &rules, &[("policy.yaml", &policy)]);
    let reply = weir.get("retry.example", "/").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("x-weir-error"), None, "{}", reply.text());
    assert_eq!(backend.served().await, 1);
}
