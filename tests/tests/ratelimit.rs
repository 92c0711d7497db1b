//! RateLimitPolicy end to end: the sliding window (the default) admitting `requests` at once
//! and holding its documented bound in every span, at window boundaries too; GCRA pacing
//! evenly; RateLimit headers for both; global limits shared by several gateways through a
//! real redis-server; and Redis dying under load with `failureMode` open (keeps serving) and
//! closed (503), both recovering by themselves. No assertion depends on how fast the machine
//! is: bounds are checked over the spans the client measured (see `weir_e2e::shots`).

use std::time::{Duration, Instant};

use weir_e2e::{
    eventually,
    limits::{connected, open_and_closed, shop_limited_by},
    redis::Redis,
    request,
    shots::{passed, shot, spans, volley},
    Echo, Weir,
};

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

/// An app behind a gateway whose route `shop` has one RateLimitPolicy, `name`, with `limit`
/// as its only limit.
fn limited(name: &str, limit: &str) -> (Echo, Weir) {
    let app = Echo::start("app");
    let spec = format!("  limits:\n  - {limit}\n");
    let weir = Weir::start(&shop_limited_by(&app, name, &spec));
    (app, weir)
}

#[tokio::test]
async fn five_a_minute_admits_five_of_twenty_sent_together() {
    let limit = "{name: five, key: {header: X-User}, rate: {requests: 5, per: 1m}}";
    let (_app, weir) = limited("five", limit);
    let shots = volley(weir.addr, "shop.example.com", &[("x-user", "alice")], 20).await;
    assert_eq!(passed(&shots), 5, "5 per minute admits 5 at once");
    let mut remaining: Vec<&str> = shots
        .iter()
        .filter(|s| s.passed())
        .map(|s| s.reply.header("ratelimit-remaining").unwrap())
        .collect();
    remaining.sort_unstable();
    assert_eq!(remaining, ["0", "1", "2", "3", "4"]);
    // How far into its first window the volley went, at most.
    let took = seconds(shots.iter().map(|s| s.answered).max().unwrap() - shots[0].sent);
    for s in &shots {
        assert_eq!(s.reply.header("ratelimit-limit"), Some("5"));
        let header = |name| -> u64 { s.reply.header(name).unwrap().parse().unwrap() };
        // Wholly available once the n passed so far, weighing from the next window on, weigh
        // less than 1 there: 60 − 60 / n s into it.
        let n = 5 - header("ratelimit-remaining");
        let reset = 120 - 60 / n;
        assert!(
            (reset.saturating_sub(took + 1)..=reset + 1).contains(&header("ratelimit-reset")),
            "{n} passed: reset {}",
            header("ratelimit-reset")
        );
        if !s.passed() {
            assert_eq!(s.reply.status, 429);
            assert_eq!(n, 5);
            // One more fits just after the next window starts (the 5 weigh 4.99…, rounded
            // down).
            let retry = header("retry-after");
            assert!(
                (59u64.saturating_sub(took)..=61).contains(&retry),
                "retry after {retry}"
            );
        }
    }
    // Another key has its own count.
    assert_eq!(
        passed(&volley(weir.addr, "shop.example.com", &[("x-user", "bob")], 20).await),
        5
    );
}

#[tokio::test]
async fn a_sliding_window_holds_its_bound_in_every_span_and_at_window_boundaries() {
    // 10 per 2 s: in any span of d ≤ 2 s at most ⌊10 × (1 + d / 2 s)⌋ + 1 pass
    // (docs/security.md).
    let (_app, weir) = limited(
        "ten",
        "{name: ten, key: {route: {}}, rate: {requests: 10, per: 2s}}",
    );
    let per = Duration::from_secs(2);
    let host = "shop.example.com";
    // The first request starts the windows, somewhere between its sending and its answer.
    let first = shot(weir.addr, host, &[]).await;
    assert!(first.passed());
    let mut shots = vec![first];
    // A hostile client: 20 at once just before the window ends, 20 just after it, then one
    // volley after another through the next windows.
    tokio::time::sleep_until((shots[0].sent + per - Duration::from_millis(150)).into()).await;
    shots.extend(volley(weir.addr, host, &[], 20).await);
    tokio::time::sleep_until((shots[0].answered + per + Duration::from_millis(30)).into()).await;
    shots.extend(volley(weir.addr, host, &[], 20).await);
    let until = Instant::now() + 2 * per;
    while Instant::now() < until {
        shots.extend(volley(weir.addr, host, &[], 4).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut checked = 0;
    for (d, inside) in spans(&shots).into_iter().filter(|(d, _)| *d <= per) {
        let bound = 10 + (10 * d.as_micros() / per.as_micros()) as usize + 1;
        assert!(
            inside <= bound,
            "{inside} passed within {d:?}, bound {bound}"
        );
        checked += 1;
    }
    assert!(checked > 0);
    // Never more than the limit per window over the whole run, give or take one window.
    let run = shots.iter().map(|s| s.answered).max().unwrap() - shots[0].sent;
    let most = 10 * (run.as_micros() / per.as_micros() + 1) as usize;
    assert!(
        passed(&shots) <= most,
        "{} passed in {run:?}",
        passed(&shots)
    );
    // Once RateLimit-Reset has passed, the whole limit is there again.
    let last = shots.iter().max_by_key(|s| s.answered).unwrap();
    let reset: u64 = last
        .reply
        .header("ratelimit-reset")
        .unwrap()
        .parse()
        .unwrap();
    assert!(reset <= 4, "reset {reset} s is at most two windows");
    tokio::time::sleep_until((last.answered + Duration::from_secs(reset)).into()).await;
    assert_eq!(passed(&volley(weir.addr, host, &[], 20).await), 10);
}

#[tokio::test]
async fn gcra_counts_each_key_and_answers_429_with_retry_after() {
    let app = Echo::start("app");
    let dir = shop_limited_by(&app, "per-user", "  limits:\n  - {name: per-user, key: {header: X-User}, rate: {requests: 3, per: 1m}, algorithm: gcra, burst: 2}\n  - {name: route, key: {route: {}}, rate: {requests: 1000, per: 1s}}\n");
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
async fn gcra_with_burst_0_lets_one_request_through_per_interval() {
    let limit = "{name: paced, key: {header: X-Paced}, rate: {requests: 10, per: 1s}, algorithm: gcra, burst: 0}";
    let (_app, weir) = limited("paced", limit);
    // One request every 100 ms: in any span of d at most 1 + d / 100 ms pass, and a refusal
    // says when to come back.
    let paced = [("x-paced", "p")];
    let mut shots = Vec::new();
    for _ in 0..1000 {
        if passed(&shots) >= 6 {
            break;
        }
        let batch = volley(weir.addr, "shop.example.com", &paced, 3).await;
        for s in batch.iter().filter(|s| !s.passed()) {
            assert_eq!(s.reply.status, 429);
            let retry = s.reply.header("retry-after");
            assert_eq!(retry, Some("1"), "100 ms at most, rounded up");
        }
        shots.extend(batch);
    }
    assert!(passed(&shots) >= 6);
    for (d, inside) in spans(&shots) {
        let bound = 1 + (d.as_micros() / 100_000) as usize;
        assert!(inside <= bound, "{inside} passed within {d:?}");
    }
}

/// A redis-server and `n` gateways, each connected to it, in front of an app whose route
/// `shop` has `limit` (failing closed).
async fn sharing(n: usize, limit: &str) -> (Redis, Echo, Vec<Weir>) {
    let (redis, app) = (Redis::start(), Echo::start("app"));
    let spec = format!("  failureMode: closed\n  limits:\n  - {limit}\n");
    let gateways = connected(&redis, &shop_limited_by(&app, "global", &spec), n, &[]).await;
    (redis, app, gateways)
}

#[tokio::test]
async fn two_gateways_share_one_sliding_window_in_redis() {
    let limit = "{name: all, key: {route: {}}, rate: {requests: 20, per: 1m}, scope: global}";
    let (_redis, _app, gateways) = sharing(2, limit).await;
    let host = "shop.example.com";
    let (a, b) = tokio::join!(
        volley(gateways[0].addr, host, &[], 30),
        volley(gateways[1].addr, host, &[], 30)
    );
    assert_eq!(
        passed(&a) + passed(&b),
        20,
        "20 per minute across both gateways"
    );
    let all: Vec<_> = a.iter().chain(&b).collect();
    let first = all.iter().map(|s| s.sent).min().unwrap();
    let took = seconds(all.iter().map(|s| s.answered).max().unwrap() - first);
    for s in all {
        assert_eq!(s.reply.header("ratelimit-limit"), Some("20"));
        if !s.passed() {
            assert_eq!(s.reply.status, 429);
            let retry: u64 = s.reply.header("retry-after").unwrap().parse().unwrap();
            assert!(
                (59u64.saturating_sub(took)..=61).contains(&retry),
                "retry after {retry}"
            );
        }
    }
}

/// Whole seconds in `d`, rounded up.
fn seconds(d: Duration) -> u64 {
    d.as_micros().div_ceil(1_000_000) as u64
}

#[tokio::test]
async fn three_gateways_share_one_global_gcra_limit_in_redis() {
    // 100 at once and a refill too slow to matter during the test: exactly 100 may pass.
    let limit = "{name: all, key: {route: {}}, rate: {requests: 100, per: 1h}, algorithm: gcra, burst: 99, scope: global}";
    let (_redis, _app, gateways) = sharing(3, limit).await;
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
    let limit =
        "{name: users, key: {header: X-User}, rate: {requests: 1000, per: 1s}, scope: global}";
    let dir = open_and_closed(&app, limit);
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
