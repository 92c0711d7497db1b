//! RateLimitPolicy end to end: local limits per key with the RateLimit headers, a global limit
//! shared by three gateways through a real redis-server, and Redis dying under load with
//! `failureMode` open (keeps serving) and closed (503), both recovering by themselves.

use std::time::Duration;

use weir_e2e::{
    eventually, gateway, http_route, redis::Redis, request, route_policy, service, ConfigDir, Echo,
    Weir,
};

fn app_route(name: &str, host: &str) -> String {
    http_route(name, &[host], "  - backendRefs: [{name: app, port: 80}]\n")
}

async fn get_as(weir: &Weir, host: &str, user: &str) -> weir_e2e::Reply {
    request(
        weir.addr,
        host,
        "/",
        &[("x-user", user)],
        Default::default(),
        "GET",
    )
    .await
}

/// Service `app`, a Gateway, HTTPRoute `shop` for shop.example.com, and RateLimitPolicy
/// `name` on it with `spec`.
fn shop_limited_by(app: &Echo, name: &str, spec: &str) -> ConfigDir {
    ConfigDir::new()
        .with("svc.yaml", &service("app", &[app]))
        .with("gw.yaml", &gateway())
        .with("route.yaml", &app_route("shop", "shop.example.com"))
        .with(
            "limit.yaml",
            &route_policy("RateLimitPolicy", name, "shop", spec),
        )
}

#[tokio::test]
async fn a_local_limit_counts_each_key_and_answers_429_with_retry_after() {
    let app = Echo::start("app");
    let dir = shop_limited_by(&app, "per-user", "  limits:\n  - {name: per-user, key: {header: X-User}, rate: {requests: 3, per: 1m}, burst: 2}\n  - {name: route, key: {route: {}}, rate: {requests: 1000, per: 1s}, burst: 100}\n");
    let weir = Weir::start(&dir);
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = get_as(&weir, "shop.example.com", "alice").await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("ratelimit-limit"),
            Some("3"),
            "the tightest limit is reported"
        );
        remaining.push(r.header("ratelimit-remaining").unwrap().to_string());
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let refused = get_as(&weir, "shop.example.com", "alice").await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("x-weir-error"), Some("rate-limited"));
    assert_eq!(
        refused.header("retry-after"),
        Some("20"),
        "one request every 20 s"
    );
    assert_eq!(refused.header("ratelimit-remaining"), Some("0"));
    // Another key has its own count.
    assert_eq!(get_as(&weir, "shop.example.com", "bob").await.status, 200);
    assert_eq!(
        weir.metric("weir_rate_limit_decisions_total{limit=\"default/per-user/per-user\",result=\"limited\"}")
            .await,
        Some(1.0)
    );
    // gRPC clients get RESOURCE_EXHAUSTED.
    let grpc = request(
        weir.addr,
        "shop.example.com",
        "/svc/M",
        &[("x-user", "alice"), ("content-type", "application/grpc")],
        Default::default(),
        "POST",
    )
    .await;
    assert_eq!(grpc.header("grpc-status"), Some("8"));
}

#[tokio::test]
async fn three_gateways_share_one_global_limit_in_redis() {
    let redis = Redis::start();
    let app = Echo::start("app");
    // 100 at once and a refill too slow to matter during the test: exactly 100 may pass.
    let dir = shop_limited_by(&app, "global", "  failureMode: closed\n  limits:\n  - {name: all, key: {route: {}}, rate: {requests: 100, per: 1h}, burst: 99, scope: global}\n");
    let url = redis.url();
    let flags = ["--redis", url.as_str(), "--redis-timeout", "1s"];
    let gateways = [
        Weir::start_with(&dir, &flags),
        Weir::start_with(&dir, &flags),
        Weir::start_with(&dir, &flags),
    ];
    // Wait until each is connected (a closed limit answers 503 until then); a probe request
    // would spend the budget, so read the log instead.
    for weir in &gateways {
        eventually(Duration::from_secs(10), "connected to Redis", || async {
            let s = weir.stderr().join("\n");
            s.contains("connected to Redis").then_some(())
        })
        .await;
    }
    let mut tasks = Vec::new();
    for worker in 0..12 {
        let addr = gateways[worker % 3].addr;
        tasks.push(tokio::spawn(async move {
            let mut admitted = 0u32;
            for _ in 0..40 {
                let r = request(
                    addr,
                    "shop.example.com",
                    "/",
                    &[],
                    Default::default(),
                    "GET",
                )
                .await;
                match r.status.as_u16() {
                    200 => admitted += 1,
                    429 => {}
                    other => panic!("unexpected {other}"),
                }
            }
            admitted
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        admitted += t.await.unwrap();
    }
    assert!(
        (98..=102).contains(&admitted),
        "admitted {admitted} of 480 against a limit of 100"
    );
}

#[tokio::test]
async fn redis_dying_fails_open_or_closed_as_configured_and_both_recover() {
    let mut redis = Redis::start();
    let app = Echo::start("app");
    let limit = |mode: &str| {
        format!("  failureMode: {mode}\n  limits:\n  - {{name: users, key: {{header: X-User}}, rate: {{requests: 1000, per: 1s}}, burst: 1000, scope: global}}\n")
    };
    let dir = ConfigDir::new()
        .with("svc.yaml", &service("app", &[&app]))
        .with("gw.yaml", &gateway())
        .with(
            "routes.yaml",
            &[
                app_route("open", "open.example.com"),
                app_route("closed", "closed.example.com"),
            ]
            .join("---\n"),
        )
        .with(
            "limits.yaml",
            &[
                route_policy("RateLimitPolicy", "open", "open", &limit("open")),
                route_policy("RateLimitPolicy", "closed", "closed", &limit("closed")),
            ]
            .join("---\n"),
        );
    let url = redis.url();
    let weir = Weir::start_with(&dir, &["--redis", &url, "--redis-timeout", "100ms"]);
    eventually(
        Duration::from_secs(10),
        "the closed route via Redis",
        || async { (get_as(&weir, "closed.example.com", "u").await.status == 200).then_some(()) },
    )
    .await;

    redis.kill();
    for i in 0..50 {
        let user = format!("u{}", i % 5);
        let open = get_as(&weir, "open.example.com", &user).await;
        assert_eq!(open.status, 200, "fail-open keeps serving without Redis");
        let closed = get_as(&weir, "closed.example.com", &user).await;
        assert_eq!(closed.status, 503, "fail-closed refuses without Redis");
        assert_eq!(
            closed.header("x-weir-error"),
            Some("rate-limit-unavailable")
        );
    }
    assert!(
        weir.metric(
            "weir_rate_limit_decisions_total{limit=\"default/open/users\",result=\"fallback\"}"
        )
        .await
        .unwrap()
            >= 50.0
    );

    redis.restart();
    eventually(
        Duration::from_secs(15),
        "the closed route recovers",
        || async { (get_as(&weir, "closed.example.com", "u").await.status == 200).then_some(()) },
    )
    .await;
    assert_eq!(get_as(&weir, "open.example.com", "u").await.status, 200);
}
