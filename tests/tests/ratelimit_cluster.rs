//! Global rate limits against a real Redis Cluster on loopback (six redis-server processes:
//! three primaries, three replicas) and real weir-ingress processes started with
//! `--redis-cluster`: per-request and batched (`syncInterval`) limits count on every primary
//! under load, within their documented bounds; and a primary killed under load fails over to
//! its replica with `failureMode: open` answering no 5xx, `closed` answering 503
//! `rate-limit-unavailable` until the replica is promoted, no request waiting past
//! `--redis-timeout`, and counting resuming on the promoted replica.
//!
//! What each test measured is printed (`--no-capture`); docs/security.md quotes it.

use std::time::{Duration, Instant};

use weir_e2e::{
    eventually, gateway,
    limits::{app_route, connected_with},
    redis_cluster::{RedisCluster, NODE_TIMEOUT},
    route_policy, service,
    shots::{latencies, passed, shot, volley, Load, Shot},
    ConfigDir, Echo, Weir,
};

/// The Redis timeout of the failover tests.
const TIMEOUT: Duration = Duration::from_millis(200);

/// What a request may take beyond the Redis timeout: the proxy hop to a loopback backend on
/// a busy test machine. A request that waited on a dead node's connection would take seconds.
const MARGIN: Duration = Duration::from_millis(800);

/// Service `app`, a Gateway, and for each `(name, spec)` a route `name.example.com` limited by
/// RateLimitPolicy `name` with `spec`.
fn limited(app: &Echo, policies: &[(&str, String)]) -> ConfigDir {
    let mut dir = ConfigDir::new()
        .with("svc.yaml", &service("app", &[app]))
        .with("gw.yaml", &gateway());
    for (name, spec) in policies {
        let route = app_route(name, &format!("{name}.example.com"));
        let policy = route_policy("RateLimitPolicy", name, name, spec);
        dir = dir.with(&format!("{name}.yaml"), &[route, policy].join("---\n"));
    }
    dir
}

/// A policy spec with one limit `users` keyed on `X-User`.
fn users_limit(mode: &str, rate: &str, extra: &str) -> String {
    format!(
        "  failureMode: {mode}\n  limits:\n  - {{name: users, key: {{header: X-User}}, rate: {rate}, scope: global{extra}}}\n"
    )
}

/// The Redis key of `user` under policy `policy`'s limit `users` (a sliding window).
fn key(policy: &str, user: &str) -> String {
    format!("weir:sw:{{default/{policy}/users|{user}}}")
}

/// The first user named `prefix0`, `prefix1`, … whose key under `policy` lives on `primary`.
fn user_on(cluster: &RedisCluster, policy: &str, primary: u16, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|u| cluster.primary_of(&key(policy, u)) == primary)
        .expect("some user hashes onto every primary")
}

/// `n` gateways counting in `cluster` with the Redis timeout `timeout`.
async fn gateways(cluster: &RedisCluster, dir: &ConfigDir, n: usize, timeout: &str) -> Vec<Weir> {
    let seeds = cluster.seeds();
    let flags = [
        "--redis",
        &seeds,
        "--redis-cluster",
        "--redis-timeout",
        timeout,
    ];
    connected_with(dir, n, &flags).await
}

fn report(what: &str, shots: &[Shot]) {
    let [p50, p99, max] = latencies(shots);
    eprintln!(
        "{what}: {} requests, {} passed; latency p50 {p50:?}, p99 {p99:?}, max {max:?}",
        shots.len(),
        passed(shots)
    );
}

/// Three users, one on each primary, each limited to `rate` by policy `policy` in `spec`;
/// three gateways; two clients per user per gateway for `length`. Returns the shots per user
/// and the scripts each primary ran meanwhile.
async fn load_each_primary(
    policy: &str,
    spec: String,
    length: Duration,
) -> (RedisCluster, Vec<Vec<Shot>>, Vec<u64>) {
    let cluster = RedisCluster::start();
    let app = Echo::start("app");
    let dir = limited(&app, &[(policy, spec)]);
    let weirs = gateways(&cluster, &dir, 3, "1s").await;
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3);
    let users: Vec<String> = primaries
        .iter()
        .map(|p| user_on(&cluster, policy, *p, "user"))
        .collect();
    let before: Vec<u64> = primaries.iter().map(|p| cluster.scripts_run(*p)).collect();
    let addrs: Vec<_> = weirs.iter().map(|w| w.addr).collect();
    let host = format!("{policy}.example.com");
    let loads: Vec<Load> = users
        .iter()
        .map(|u| Load::start(&addrs, &host, &[("x-user", u)], 2))
        .collect();
    tokio::time::sleep(length).await;
    let mut shots = Vec::new();
    for load in loads {
        shots.push(load.stop().await);
    }
    let scripts = primaries
        .iter()
        .zip(before)
        .map(|(p, b)| cluster.scripts_run(*p) - b)
        .collect();
    (cluster, shots, scripts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_request_limits_count_exactly_on_every_primary_under_load() {
    let spec = users_limit("closed", "{requests: 100, per: 1m}", "");
    let (_cluster, shots, scripts) = load_each_primary("exact", spec, Duration::from_secs(5)).await;
    for (i, user) in shots.iter().enumerate() {
        report(&format!("per-request, user on primary {i}"), user);
        for s in user {
            let status = s.reply.status.as_u16();
            assert!([200, 429].contains(&status), "{status}");
        }
        // One atomic script per request on the key's primary, all in one window: exact.
        assert_eq!(passed(user), 100, "100 per minute across three gateways");
        assert!(user.len() > 200, "the limit was hammered: {}", user.len());
    }
    eprintln!("scripts run per primary: {scripts:?}");
    for (i, user) in shots.iter().enumerate() {
        assert!(
            scripts[i] >= user.len() as u64,
            "primary {i} ran {} scripts for {} requests",
            scripts[i],
            user.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_limits_stay_within_their_bound_on_every_primary_under_load() {
    let spec = users_limit(
        "closed",
        "{requests: 300, per: 10s}",
        ", syncInterval: 100ms",
    );
    let length = Duration::from_secs(10);
    let (_cluster, shots, scripts) = load_each_primary("batched", spec, length).await;
    let ticks = length.as_millis() as u64 / 100;
    for (i, user) in shots.iter().enumerate() {
        report(&format!("batched, user on primary {i}"), user);
        for s in user {
            let status = s.reply.status.as_u16();
            assert!([200, 429].contains(&status), "{status}");
        }
        // docs/security.md: the gateways together stay within the sliding window's bound,
        // plus what a share granted in one window and spent in the next adds; the run is one
        // window long.
        let admitted = passed(user);
        assert!(
            (270..=360).contains(&admitted),
            "admitted {admitted} of {} against 300 per 10 s",
            user.len()
        );
        // A call per interval per gateway, and a few top-ups while the limit still had room.
        assert!(
            scripts[i] <= 2 * 3 * (ticks + 3),
            "primary {i}: {} Redis calls in {ticks} intervals",
            scripts[i]
        );
        assert!(scripts[i] * 2 < user.len() as u64);
    }
    eprintln!("scripts run per primary: {scripts:?}");
}

/// What a failover under load showed.
struct Failover {
    cluster: RedisCluster,
    _app: Echo,
    weirs: Vec<Weir>,
    /// Shots per policy, in the order given.
    shots: Vec<Vec<Shot>>,
    /// The users the load sent as, per policy (their keys are on the killed primary).
    load: Vec<String>,
    /// Users whose keys are on the killed primary too, untouched so far, per policy.
    fresh: Vec<String>,
    killed_at: Instant,
    promoted: u16,
}

/// The failover tests' policies: a per-request limit and a batched one, both 20 per minute.
const POLICIES: [&str; 2] = ["request", "batched"];

/// Two gateways and the [`POLICIES`], failing `mode`; clients send as a user whose key is on
/// one primary, which is killed (SIGKILL) a second into the load; the load goes on until its
/// replica is promoted and three seconds more. No request may wait past the Redis timeout.
async fn fail_over_under_load(mode: &str) -> Failover {
    let twenty = "{requests: 20, per: 1m}";
    let policies = [
        ("request", users_limit(mode, twenty, "")),
        (
            "batched",
            users_limit(mode, twenty, ", syncInterval: 100ms"),
        ),
    ];
    let cluster = RedisCluster::start();
    let app = Echo::start("app");
    let dir = limited(&app, &policies);
    let weirs = gateways(&cluster, &dir, 2, "200ms").await;
    let victim = cluster.primaries()[0];
    let addrs: Vec<_> = weirs.iter().map(|w| w.addr).collect();
    let mut loads = Vec::new();
    let (mut load, mut fresh) = (Vec::new(), Vec::new());
    for name in POLICIES {
        let user = user_on(&cluster, name, victim, "load");
        fresh.push(user_on(&cluster, name, victim, "fresh"));
        let host = format!("{name}.example.com");
        loads.push(Load::start(&addrs, &host, &[("x-user", &user)], 2));
        load.push(user);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let names = POLICIES.map(String::from);
    let admins: Vec<_> = weirs.iter().map(|w| w.admin).collect();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let watch = tokio::spawn(async move { without_redis(&admins, &names, stopped).await });
    let mut cluster = cluster;
    let slot = cluster.slot(&key(POLICIES[0], &fresh[0]));
    let killed_at = Instant::now();
    cluster.kill(victim);
    let promoted =
        tokio::task::block_in_place(|| cluster.promoted(victim, slot, Duration::from_secs(20)));
    eprintln!(
        "primary {victim} killed; replica {promoted} promoted after {:?} (cluster-node-timeout {NODE_TIMEOUT:?})",
        killed_at.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut shots = Vec::new();
    for load in loads {
        shots.push(load.stop().await);
    }
    let _ = stop.send(());
    let changes = watch.await.expect("metrics task");
    let after_kill = |t: Instant| t.saturating_duration_since(killed_at);
    let without_redis = changes.first().zip(changes.last());
    let without_redis = without_redis.map(|(a, b)| (after_kill(*a), after_kill(*b)));
    eprintln!("{mode}: decided without Redis from/to, after the kill: {without_redis:?}");
    for (name, shots) in POLICIES.iter().zip(&shots) {
        report(&format!("{name}, {mode}, through the failover"), shots);
        none_waited(shots);
    }
    Failover {
        cluster,
        _app: app,
        weirs,
        shots,
        load,
        fresh,
        killed_at,
        promoted,
    }
}

/// Until `stop`, every 50 ms: the moments at which the `fallback` or `unavailable` decisions of
/// `policies` grew on the gateways at `admins` (decided without Redis).
async fn without_redis(
    admins: &[std::net::SocketAddr],
    policies: &[String],
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Vec<Instant> {
    let mut last = None;
    let mut changes = Vec::new();
    while stop.try_recv().is_err() {
        let mut sum = 0.0;
        for admin in admins {
            for policy in policies {
                for result in ["fallback", "unavailable"] {
                    let series = format!("weir_rate_limit_decisions_total{{limit=\"default/{policy}/users\",result=\"{result}\"}}");
                    sum += weir_e2e::metric(*admin, &series).await.unwrap_or(0.0);
                }
            }
        }
        if last.is_some_and(|l| sum > l) {
            changes.push(Instant::now());
        }
        last = Some(sum);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    changes
}

/// Every request answered within the Redis timeout plus the margin.
fn none_waited(shots: &[Shot]) {
    for s in shots {
        let took = s.answered - s.sent;
        assert!(
            took <= TIMEOUT + MARGIN,
            "a request took {took:?} ({}), the Redis timeout is {TIMEOUT:?}",
            s.reply.status
        );
    }
}

/// `n` requests as `user` on each gateway at once: how many passed; the others must be 429.
async fn volleys(weirs: &[Weir], host: &str, user: &str, n: usize) -> usize {
    let mut admitted = 0;
    for weir in weirs {
        let shots = volley(weir.addr, host, &[("x-user", user)], n).await;
        for s in shots.iter().filter(|s| !s.passed()) {
            assert_eq!(s.reply.status, 429, "{:?}", s.reply.header("x-weir-error"));
        }
        admitted += passed(&shots);
    }
    admitted
}

/// `result` decisions of `policy`'s limit, summed over `weirs`.
async fn decisions(weirs: &[Weir], policy: &str, result: &str) -> f64 {
    let series = format!(
        "weir_rate_limit_decisions_total{{limit=\"default/{policy}/users\",result=\"{result}\"}}"
    );
    let mut sum = 0.0;
    for w in weirs {
        sum += w.metric(&series).await.unwrap_or(0.0);
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_failing_over_under_load_fails_open_and_counting_resumes_on_its_replica() {
    let f = fail_over_under_load("open").await;
    for (name, shots) in POLICIES.iter().zip(&f.shots) {
        for s in shots {
            assert!(
                [200, 429].contains(&s.reply.status.as_u16()),
                "fail-open answered {} at {:?} after the kill",
                s.reply.status,
                s.answered.saturating_duration_since(f.killed_at)
            );
        }
        let fell_back = decisions(&f.weirs, name, "fallback").await;
        eprintln!("{name}: {fell_back} decisions fell back to local counts");
        assert!(fell_back > 0.0, "the failover was not noticed");
    }
    // The promoted replica counts: 20 per minute across both gateways, not 20 on each as local
    // fallback counts would admit, and nothing falls back any more.
    for (i, name) in POLICIES.iter().enumerate() {
        let host = format!("{name}.example.com");
        let fell_back = decisions(&f.weirs, name, "fallback").await;
        let admitted = volleys(&f.weirs, &host, &f.fresh[i], 30).await;
        assert_eq!(admitted, 20, "{name}: 20 per minute across two gateways");
        assert_eq!(decisions(&f.weirs, name, "fallback").await, fell_back);
        let count = f
            .cluster
            .cli(f.promoted, &["hget", &key(name, &f.fresh[i]), "c"]);
        assert_eq!(
            count.trim(),
            "20",
            "{name}: counted on the promoted replica"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_failing_over_under_load_fails_closed_until_its_replica_is_promoted() {
    let f = fail_over_under_load("closed").await;
    for (name, shots) in POLICIES.iter().zip(&f.shots) {
        for s in shots {
            let status = s.reply.status.as_u16();
            assert!([200, 429, 503].contains(&status), "{status}");
            if status == 503 {
                let error = s.reply.header("x-weir-error");
                assert_eq!(error, Some("rate-limit-unavailable"));
            }
        }
        let refused: Vec<&Shot> = shots.iter().filter(|s| s.reply.status == 503).collect();
        assert!(!refused.is_empty(), "{name}: the failover was not noticed");
        let first = refused[0].sent.saturating_duration_since(f.killed_at);
        let last = refused[refused.len() - 1]
            .answered
            .saturating_duration_since(f.killed_at);
        eprintln!(
            "{name}: {} answered 503 from {first:?} to {last:?} after the kill",
            refused.len()
        );
    }
    // Once promoted, the limits count again by themselves: the fresh user gets 20 across both
    // gateways and 429 after that.
    for (i, name) in POLICIES.iter().enumerate() {
        let host = format!("{name}.example.com");
        for weir in &f.weirs {
            let spent = [("x-user", f.load[i].as_str())];
            eventually(Duration::from_secs(5), "429 again", || async {
                let r = shot(weir.addr, &host, &spent).await;
                (r.reply.status == 429).then_some(())
            })
            .await;
        }
        assert_eq!(
            volleys(&f.weirs, &host, &f.fresh[i], 30).await,
            20,
            "{name}"
        );
    }
}
