use std::time::Duration;

use super::*;

fn pool(n: u16, balancer: Balancer) -> Pool {
    let cluster = Cluster {
        name: "t".into(),
        balancer,
        resolved: true,
        endpoints: (0..n)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 1000 + i)))
            .collect(),
        ..Cluster::default()
    };
    Pool::new(cluster, &HashMap::new(), None, &Metrics::new())
}

#[test]
fn round_robin_visits_every_endpoint_evenly() {
    let p = pool(4, Balancer::RoundRobin);
    let mut counts = HashMap::new();
    for _ in 0..400 {
        *counts.entry(p.pick(&[], None).unwrap().addr).or_insert(0) += 1;
    }
    assert_eq!(counts.len(), 4);
    assert!(counts.values().all(|&c| c == 100), "{counts:?}");
}

#[test]
fn ewma_steers_away_from_a_slow_endpoint() {
    let p = pool(2, Balancer::PeakEwma);
    let slow = p.endpoints[0].clone();
    let now = std::time::Instant::now();
    slow.observe(now - Duration::from_millis(500), now, Duration::ZERO);
    let mut slow_picks = 0;
    for _ in 0..1000 {
        if p.pick(&[], None).unwrap().addr == slow.addr {
            slow_picks += 1;
        }
    }
    // With two endpoints, P2C compares both every time: the slow one is never chosen.
    assert_eq!(slow_picks, 0);
}

#[test]
fn ewma_counts_outstanding_requests() {
    let p = pool(2, Balancer::PeakEwma);
    let busy = p.endpoints[0].clone();
    let _guards: Vec<_> = (0..10).map(|_| busy.start()).collect();
    assert_ne!(p.pick(&[], None).unwrap().addr, busy.addr);
}

#[test]
fn exclusion_and_empty() {
    let p = pool(2, Balancer::RoundRobin);
    let first = p.endpoints[0].addr;
    for _ in 0..10 {
        assert_ne!(p.pick(&[first], None).unwrap().addr, first);
    }
    assert!(pool(0, Balancer::PeakEwma).pick(&[], None).is_err());
}

#[test]
fn consistent_hash_keeps_keys_home_and_spreads_them() {
    let p = pool(
        3,
        Balancer::ConsistentHash(weir_api::model::HashKey::SourceIp),
    );
    let mut homes = std::collections::HashSet::new();
    for k in 0..30u64 {
        let key = crate::resilience::ring::hash(&k);
        let home = p.pick(&[], Some(key)).unwrap().addr;
        assert_eq!(p.pick(&[], Some(key)).unwrap().addr, home);
        assert_ne!(
            p.pick(&[home], Some(key)).unwrap().addr,
            home,
            "a retry moves on"
        );
        homes.insert(home);
    }
    assert_eq!(homes.len(), 3);
}

#[test]
fn state_survives_a_rebuild() {
    let p = pool(2, Balancer::PeakEwma);
    let _g = p.endpoints[0].start();
    let previous = p.endpoints.iter().map(|e| (e.addr, e.clone())).collect();
    let again = Pool::new(p.cluster.clone(), &previous, Some(&p), &Metrics::new());
    assert_eq!(again.endpoints[0].in_flight(), 1);
}
