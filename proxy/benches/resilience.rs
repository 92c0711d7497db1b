//! The cost of the resilience layer per request on the happy path (target: under 2 µs), and
//! how fast a request fails when the breaker is open.
//!
//! "plain" is what a request costs in the balancer without a TrafficPolicy: pick an endpoint,
//! track it in flight, record its latency. "with policy" adds everything a full policy does on
//! a request that succeeds first time: the pending-request cap, the retry budget deposit, the
//! breaker check while picking and the breaker update after.

use std::{collections::HashMap, hint::black_box, net::SocketAddr, sync::Arc, time::Duration};

use criterion::{criterion_group, criterion_main, Criterion};
use weir_api::model::{BreakerPolicy, Cluster, Resilience, RetryOn, RetryPolicy};
use weir_http::error::ProxyError;
use weir_proxy::{balance::Pool, metrics::Metrics};

fn cluster(resilience: Resilience) -> Cluster {
    Cluster {
        name: "bench/app:80".into(),
        resolved: true,
        endpoints: (0..10)
            .map(|i| SocketAddr::from(([10, 0, 0, i + 1], 8080)))
            .collect(),
        resilience: Arc::new(resilience),
        ..Cluster::default()
    }
}

fn full_policy() -> Resilience {
    Resilience {
        policy: Some("bench/p".into()),
        timeout: Some(Duration::from_secs(5)),
        retry: Some(RetryPolicy {
            attempts: 3,
            per_try_timeout: Some(Duration::from_secs(1)),
            retry_on: RetryOn {
                connect_failure: true,
                reset: true,
                statuses: vec![502, 503, 504],
                ..RetryOn::default()
            },
            non_idempotent: false,
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
            min_backoff: Duration::ZERO,
            budget_ratio: 0.2,
            budget_min_per_second: 10,
        }),
        breaker: Some(BreakerPolicy {
            consecutive_failures: 5,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 100,
            half_open_probes: 5,
            max_pending_requests: 1024,
        }),
        health_check: None,
    }
}

fn bench(c: &mut Criterion) {
    let metrics = Metrics::new();
    let plain = Pool::new(
        cluster(Resilience::default()),
        &HashMap::new(),
        None,
        &metrics,
    );
    let guarded = Pool::new(cluster(full_policy()), &HashMap::new(), None, &metrics);

    c.bench_function("plain: pick + in-flight + latency", |b| {
        b.iter(|| {
            let e = plain.pick(&[], None).unwrap().clone();
            e.start().success();
            black_box(e);
        })
    });
    c.bench_function("with policy: admit + budget + pick + breaker", |b| {
        b.iter(|| {
            let pending = guarded.admit().unwrap();
            guarded.budget.deposit(std::time::Instant::now());
            let e = guarded.pick(&[], None).unwrap().clone();
            e.start().success();
            guarded.record(&e, true);
            black_box((e, pending));
        })
    });

    // Eject every endpoint, then measure the fail-fast path: admit, find nothing usable,
    // build the 503 the client gets.
    let open = Pool::new(cluster(full_policy()), &HashMap::new(), None, &metrics);
    for e in open.endpoints().to_vec() {
        for _ in 0..5 {
            open.record(&e, false);
        }
    }
    assert_eq!(open.pick(&[], None).unwrap_err(), ProxyError::CircuitOpen);
    c.bench_function("breaker open: fail fast with 503", |b| {
        b.iter(|| {
            let _pending = open.admit().unwrap();
            let err = open.pick(&[], None).unwrap_err();
            black_box(err.response());
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
