//! TrafficPolicy end to end: real backends that fail on command (refuse, reset, hang, 503,
//! unhealthy), and what clients and backends see.

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::task::JoinSet;
use weir_e2e::{
    eventually, free_port, gateway, http_route, service, service_with, traffic_policy, ConfigDir,
    Echo, Weir,
};

/// A gateway routing `HOST.example.com` to Service `HOST` for each `(service yaml, policy)`.
fn setup(services: &[(&str, String, String)]) -> (ConfigDir, Weir) {
    let mut dir = ConfigDir::new().with("gw.yaml", &gateway());
    for (name, svc, policy) in services {
        let route = http_route(
            name,
            &[&format!("{name}.example.com")],
            &format!("  - backendRefs: [{{name: {name}, port: 80}}]\n"),
        );
        dir = dir.with(
            &format!("{name}.yaml"),
            &[svc.as_str(), &route, policy].join("---\n"),
        );
    }
    let weir = Weir::start(&dir);
    (dir, weir)
}

fn host(name: &str) -> String {
    format!("{name}.example.com")
}

#[tokio::test]
async fn retries_go_to_another_endpoint_and_only_for_idempotent_methods() {
    let echoes = Echo::group(&["good", "broken"]);
    echoes[1].mode("reset").await;
    let policy = traffic_policy(
        "p",
        "app",
        "  retry: {attempts: 3, retryOn: [connect-failure, reset, \"503\"], backoff: {base: 1ms, max: 5ms}, budget: {percent: 100}}\n  loadBalancer: {algorithm: roundRobin}\n",
    );
    let (_dir, weir) = setup(&[("app", service("app", &[&echoes[0], &echoes[1]]), policy)]);

    for _ in 0..20 {
        let reply = weir.get(&host("app"), "/").await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(reply.backend(), "good");
    }
    assert!(
        echoes[1].served().await >= 5,
        "the broken endpoint got tries"
    );
    // Lines reach the log within a writer's sweep.
    eventually(
        Duration::from_secs(5),
        "the access log showing 2 attempts on 5 retried requests",
        || async {
            let retried = weir
                .access_log()
                .iter()
                .filter(|e| e["attempts"] == 2)
                .count();
            (retried >= 5).then_some(())
        },
    )
    .await;
    assert!(
        weir.metric("weir_retries_total{cluster=\"default/app:80\"}")
            .await
            >= Some(5.0)
    );

    // POST is not idempotent: a reset is the client's answer, not a retry.
    let mut failed = 0;
    for _ in 0..20 {
        let reply = weir.send("POST", &host("app"), "/", &[], "order").await;
        if reply.status == 502 {
            assert_eq!(reply.header("x-weir-error"), Some("backend-reset"));
            failed += 1;
        }
    }
    assert!(
        failed >= 5,
        "round robin sent POSTs to the broken endpoint: {failed}"
    );
}

#[tokio::test]
async fn the_retry_budget_caps_the_load_on_a_failing_backend() {
    let echo = Echo::start("sick");
    echo.mode("fail").await;
    let policy = traffic_policy(
        "p",
        "sick",
        "  retry: {attempts: 5, retryOn: [\"503\"], backoff: {base: 1ms, max: 1ms}, budget: {percent: 20, minPerSecond: 1}}\n",
    );
    let (_dir, weir) = setup(&[("sick", service("sick", &[&echo]), policy)]);

    let offered = 300;
    let mut clients = JoinSet::new();
    for _ in 0..10 {
        let (addr, host) = (weir.addr, host("sick"));
        clients.spawn(async move {
            for _ in 0..offered / 10 {
                let reply =
                    weir_e2e::request(addr, &host, "/", &[], Default::default(), "GET").await;
                assert_eq!(reply.status, 503, "the backend's own answer comes through");
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    let seen = echo.served().await;
    // Without the budget this would be 5 tries each: 1,500.
    assert!(
        seen as f64 <= 1.25 * offered as f64,
        "the failing backend saw {seen} requests for {offered} offered"
    );
    assert!(seen > offered, "some retries were still allowed");
    assert!(
        weir.metric("weir_retry_budget_exhausted_total{cluster=\"default/sick:80\"}")
            .await
            > Some(0.0)
    );
}

#[tokio::test]
async fn a_dead_endpoint_is_ejected_within_a_second_and_comes_back_without_flapping() {
    let mut echoes = Echo::group(&["a", "b"]);
    let b_addr = echoes[1].addr;
    let policy = traffic_policy(
        "p",
        "app",
        "  retry: {attempts: 2, retryOn: [connect-failure], backoff: {base: 1ms, max: 1ms}}\n  circuitBreaker: {consecutiveFailures: 2, baseEjectionTime: 1s, halfOpenProbes: 2, maxEjectionPercent: 50}\n  loadBalancer: {algorithm: roundRobin}\n",
    );
    let (_dir, weir) = setup(&[("app", service("app", &[&echoes[0], &echoes[1]]), policy)]);
    let state = format!("weir_endpoint_state{{cluster=\"default/app:80\",endpoint=\"{b_addr}\"}}");
    assert_eq!(weir.metric(&state).await, Some(0.0), "closed at start");

    drop(echoes.pop()); // b dies: connections are refused
    let died = Instant::now();
    let ejected_after = eventually(Duration::from_secs(3), "b ejected", || async {
        let reply = weir.get(&host("app"), "/").await;
        assert_eq!(reply.status, 200, "retries hide the dead endpoint");
        (weir.metric(&state).await == Some(1.0)).then(|| died.elapsed())
    })
    .await;
    assert!(
        ejected_after < Duration::from_secs(1),
        "ejected after {ejected_after:?}"
    );

    // While ejected, b gets no tries at all: nothing is retried.
    let retries = "weir_retries_total{cluster=\"default/app:80\"}";
    let before = weir.metric(retries).await;
    for _ in 0..10 {
        assert_eq!(weir.get(&host("app"), "/").await.backend(), "a");
    }
    assert_eq!(weir.metric(retries).await, before);

    // b recovers; after the ejection time it is probed half-open and closes after 2 successes.
    let b = Echo::start_at("b", b_addr);
    eventually(Duration::from_secs(5), "b back in rotation", || async {
        weir.get(&host("app"), "/").await;
        (weir.metric(&state).await == Some(0.0) && b.served().await >= 2).then_some(())
    })
    .await;
    for _ in 0..20 {
        assert_eq!(weir.get(&host("app"), "/").await.status, 200);
    }
    assert!(b.served().await >= 10, "b takes its share again");
    assert_eq!(
        weir.metric("weir_endpoint_ejections_total{cluster=\"default/app:80\"}")
            .await,
        Some(1.0),
        "one ejection, no flapping"
    );
}

#[tokio::test]
async fn health_checks_take_an_endpoint_out_and_put_it_back() {
    let echoes = Echo::group(&["a", "b"]);
    let policy = traffic_policy(
        "p",
        "app",
        "  healthCheck: {path: /healthz, interval: 100ms, timeout: 500ms, unhealthyThreshold: 2, healthyThreshold: 2}\n  loadBalancer: {algorithm: roundRobin}\n",
    );
    let (_dir, weir) = setup(&[("app", service("app", &[&echoes[0], &echoes[1]]), policy)]);
    let backends = || async {
        let mut seen = HashMap::new();
        for _ in 0..10 {
            *seen
                .entry(weir.get(&host("app"), "/").await.backend())
                .or_insert(0) += 1;
        }
        seen
    };

    echoes[1].mode("unhealthy").await;
    eventually(Duration::from_secs(3), "b taken out", || async {
        (!backends().await.contains_key("b")).then_some(())
    })
    .await;
    let served = echoes[1].served().await;
    assert_eq!(backends().await.get("a"), Some(&10));
    assert_eq!(
        echoes[1].served().await,
        served,
        "no traffic to an unhealthy endpoint"
    );

    echoes[1].mode("ok").await;
    eventually(Duration::from_secs(3), "b back", || async {
        backends().await.contains_key("b").then_some(())
    })
    .await;
    assert!(
        weir.metric("weir_health_checks_total{cluster=\"default/app:80\",result=\"fail\"}")
            .await
            >= Some(2.0)
    );
}

#[tokio::test]
async fn timeouts_end_in_504_and_a_slow_try_is_retried_elsewhere() {
    let flaky = Echo::group(&["fast", "stuck"]);
    flaky[1].mode("hang").await;
    let stuck = Echo::start("stuck");
    stuck.mode("hang").await;
    let (_dir, weir) = setup(&[
        (
            "flaky",
            service("flaky", &[&flaky[0], &flaky[1]]),
            traffic_policy(
                "flaky",
                "flaky",
                "  retry: {attempts: 2, perTryTimeout: 200ms, retryOn: [timeout], backoff: {base: 1ms, max: 1ms}}\n  loadBalancer: {algorithm: roundRobin}\n",
            ),
        ),
        (
            "stuck",
            service("stuck", &[&stuck]),
            traffic_policy("stuck", "stuck", "  timeout: 300ms\n"),
        ),
    ]);
    for _ in 0..6 {
        let started = Instant::now();
        let reply = weir.get(&host("flaky"), "/").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.backend(), "fast");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    let started = Instant::now();
    let reply = weir.get(&host("stuck"), "/").await;
    assert_eq!(reply.status, 504);
    assert_eq!(reply.header("x-weir-error"), Some("timeout"));
    assert!(started.elapsed() >= Duration::from_millis(300));

    let grpc = weir
        .send(
            "POST",
            &host("stuck"),
            "/pkg.Svc/Call",
            &[("content-type", "application/grpc")],
            "",
        )
        .await;
    assert_eq!(grpc.status, 200, "gRPC errors travel as grpc-status");
    assert_eq!(grpc.header("grpc-status"), Some("4"), "DEADLINE_EXCEEDED");
}

#[tokio::test]
async fn requests_fail_fast_when_every_endpoint_is_ejected_or_too_many_are_pending() {
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let slow = Echo::start("slow");
    let (_dir, weir) = setup(&[
        (
            "dead",
            service_with("dead", &[(dead, true)], ""),
            traffic_policy(
                "dead",
                "dead",
                "  circuitBreaker: {consecutiveFailures: 1, baseEjectionTime: 30s, maxEjectionPercent: 100}\n",
            ),
        ),
        (
            "slow",
            service("slow", &[&slow]),
            traffic_policy("slow", "slow", "  circuitBreaker: {maxPendingRequests: 1}\n"),
        ),
    ]);
    let first = weir.get(&host("dead"), "/").await;
    assert_eq!(first.header("x-weir-error"), Some("connect-failed"));
    let started = Instant::now();
    let open = weir.get(&host("dead"), "/").await;
    assert_eq!(open.status, 503);
    assert_eq!(open.header("x-weir-error"), Some("circuit-open"));
    assert!(started.elapsed() < Duration::from_millis(500), "fails fast");
    let grpc = weir
        .send(
            "POST",
            &host("dead"),
            "/pkg.Svc/Call",
            &[("content-type", "application/grpc")],
            "",
        )
        .await;
    assert_eq!(grpc.header("grpc-status"), Some("14"), "UNAVAILABLE");
    assert_eq!(grpc.header("x-weir-error"), Some("circuit-open"));

    let pending = weir.get_in_background(&host("slow"), "/sleep/1500");
    eventually(
        Duration::from_secs(2),
        "the slow request at the backend",
        || async { (slow.served().await >= 1).then_some(()) },
    )
    .await;
    let busy = weir.get(&host("slow"), "/").await;
    assert_eq!(busy.status, 503, "over maxPendingRequests");
    assert_eq!(busy.header("x-weir-error"), Some("circuit-open"));
    assert_eq!(pending.await.unwrap().status, 200, "the first one finishes");
    assert_eq!(
        weir.get(&host("slow"), "/").await.status,
        200,
        "and the slot is free again"
    );
}

#[tokio::test]
async fn consistent_hashing_keeps_a_key_on_one_endpoint() {
    let echoes = Echo::group(&["a", "b", "c"]);
    let policy = traffic_policy(
        "p",
        "app",
        "  loadBalancer: {algorithm: consistentHash, hashOn: {header: x-user-id}}\n",
    );
    let refs: Vec<&Echo> = echoes.iter().collect();
    let (_dir, weir) = setup(&[("app", service("app", &refs), policy)]);
    let mut homes = HashMap::new();
    for user in 0..12 {
        let id = format!("user-{user}");
        let first = weir
            .send("GET", &host("app"), "/", &[("x-user-id", &id)], "")
            .await
            .backend();
        for _ in 0..4 {
            let again = weir
                .send("GET", &host("app"), "/", &[("x-user-id", &id)], "")
                .await;
            assert_eq!(again.backend(), first, "{id} moved");
        }
        homes.insert(id, first);
    }
    let distinct: std::collections::HashSet<_> = homes.values().collect();
    assert!(distinct.len() >= 2, "keys spread over endpoints: {homes:?}");
}

#[tokio::test]
async fn an_invalid_policy_is_rejected_naming_the_field_and_the_last_good_one_stays() {
    let echo = Echo::start("app");
    let (dir, weir) = setup(&[("app", service("app", &[&echo]), String::new())]);
    let version = weir.version().await;
    dir.write(
        "policy.yaml",
        &traffic_policy("p", "app", "  retry: {attempts: 2}\n"),
    );
    weir.wait_version(version + 1, Duration::from_secs(5)).await;
    let version = version + 1;

    let bad = traffic_policy(
        "p",
        "app",
        "  retry: {attempts: 0, budget: {percent: 150}}\n  loadBalancer: {algorithm: random}\n",
    );
    dir.write("policy.yaml", &bad);
    let errors = weir.refusals().await;
    let fields: Vec<&str> = errors.iter().filter_map(|e| e["field"].as_str()).collect();
    for field in [
        "spec.retry.attempts",
        "spec.retry.budget.percent",
        "spec.loadBalancer.algorithm",
    ] {
        assert!(fields.contains(&field), "{field} not named in {errors:?}");
    }
    assert!(errors
        .iter()
        .all(|e| e["object"] == "TrafficPolicy default/p"));
    // The policy's last good version stays (the config version may move on: the rest of the
    // directory applies).
    assert!(weir.version().await >= version);
    assert_eq!(weir.get(&host("app"), "/").await.status, 200);

    // A typo in a field name is an error too, not silently ignored.
    dir.write(
        "policy.yaml",
        &traffic_policy("p", "app", "  retry: {atempts: 2}\n"),
    );
    eventually(Duration::from_secs(5), "the typo reported", || async {
        let errors = weir.refusals().await;
        errors
            .iter()
            .any(|e| {
                e["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("atempts")
            })
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_flapping_endpoint_is_kept_out_longer_each_time_and_clients_see_no_errors() {
    let echoes = Echo::group(&["steady", "flappy"]);
    echoes[1].mode("flap").await; // 503 and 200 by turns, 200 ms each
    let policy = traffic_policy(
        "p",
        "app",
        "  retry: {attempts: 2, retryOn: [\"503\"], backoff: {base: 1ms, max: 1ms}, budget: {percent: 100}}\n  circuitBreaker: {consecutiveFailures: 2, baseEjectionTime: 300ms, halfOpenProbes: 3, maxEjectionPercent: 50}\n  loadBalancer: {algorithm: roundRobin}\n",
    );
    let (_dir, weir) = setup(&[("app", service("app", &[&echoes[0], &echoes[1]]), policy)]);
    let started = Instant::now();
    let mut requests = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let reply = weir.get(&host("app"), "/").await;
        assert_eq!(reply.status, 200, "a retry hides every failure");
        requests += 1;
    }
    let ejections = weir
        .metric("weir_endpoint_ejections_total{cluster=\"default/app:80\"}")
        .await
        .unwrap_or(0.0);
    assert!(ejections >= 1.0, "the flapping endpoint was ejected");
    // A fixed 300 ms ejection would allow about 6 in 3 s; growing ejections (300 ms, 600 ms,
    // 900 ms, ...) fit at most 4, and half-open probes that fail re-eject at once.
    assert!(
        ejections <= 5.0,
        "{ejections} ejections in 3 s: the breaker is flapping"
    );
    assert!(requests > 50);
}
