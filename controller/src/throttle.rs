//! Token buckets per peer address, in front of what costs the API server work: a client of
//! the gRPC port may present any number of made-up tokens, and each one the controller has not
//! seen would otherwise become a TokenReview.
//!
//! IPv6 peers are grouped by /64 (a host usually holds a whole one), IPv4-mapped addresses
//! count as their IPv4 address. Memory is bounded: when the table is full, peers whose bucket
//! is full again are forgotten (that changes nothing for them); if every peer is busy, a new
//! peer is refused rather than a busy one forgotten, so flooding from many addresses cannot
//! reset anyone's bucket.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Mutex,
    time::Instant,
};

use crate::lock;

/// Peers remembered at most.
const MAX_PEERS: usize = 65_536;

/// A peer's bucket.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Per-peer token buckets.
pub struct Throttle {
    /// Tokens added per second.
    rate: f64,
    /// Tokens a bucket holds at most (and starts with).
    burst: f64,
    peers: Mutex<HashMap<IpAddr, Bucket>>,
    max_peers: usize,
}

impl Throttle {
    /// `rate` attempts per second per peer, `burst` at once.
    pub fn new(rate: f64, burst: u32) -> Self {
        Self::with_max_peers(rate, burst, MAX_PEERS)
    }

    fn with_max_peers(rate: f64, burst: u32, max_peers: usize) -> Self {
        Self {
            rate: rate.max(0.0),
            burst: f64::from(burst.max(1)),
            peers: Mutex::default(),
            max_peers,
        }
    }

    /// Takes one token from `peer`'s bucket; false when it is empty (or the peer is new and
    /// every remembered peer is busy). `None` (no address known) is one peer of its own.
    pub fn allow(&self, peer: Option<IpAddr>) -> bool {
        self.allow_at(peer, Instant::now())
    }

    fn allow_at(&self, peer: Option<IpAddr>, now: Instant) -> bool {
        let peer = group(peer);
        let mut peers = lock(&self.peers);
        if !peers.contains_key(&peer) && peers.len() >= self.max_peers {
            peers.retain(|_, b| self.refilled(b, now) < self.burst);
            if peers.len() >= self.max_peers {
                return false;
            }
        }
        let bucket = peers.entry(peer).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        bucket.tokens = self.refilled(bucket, now);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.tokens + elapsed * self.rate).min(self.burst)
    }
}

/// The address a peer is counted under.
fn group(peer: Option<IpAddr>) -> IpAddr {
    match peer.map(|p| p.to_canonical()) {
        Some(IpAddr::V6(v6)) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        Some(v4) => v4,
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn a_peer_gets_its_burst_then_the_rate() {
        let throttle = Throttle::new(5.0, 10);
        let start = Instant::now();
        let allowed = (0..100)
            .filter(|_| throttle.allow_at(ip("10.0.0.1"), start))
            .count();
        assert_eq!(allowed, 10);
        assert!(
            throttle.allow_at(ip("10.0.0.2"), start),
            "peers count apart"
        );
        // One second later, five more.
        let later = start + Duration::from_secs(1);
        let allowed = (0..100)
            .filter(|_| throttle.allow_at(ip("10.0.0.1"), later))
            .count();
        assert_eq!(allowed, 5);
    }

    #[test]
    fn ipv6_peers_share_their_64_and_mapped_ipv4_is_ipv4() {
        let throttle = Throttle::new(0.0, 2);
        let now = Instant::now();
        assert!(throttle.allow_at(ip("2001:db8:1:2::1"), now));
        assert!(throttle.allow_at(ip("2001:db8:1:2::ffff"), now));
        assert!(!throttle.allow_at(ip("2001:db8:1:2:abcd::9"), now));
        assert!(throttle.allow_at(ip("2001:db8:1:3::1"), now));
        assert!(throttle.allow_at(ip("192.0.2.1"), now));
        assert!(throttle.allow_at(ip("::ffff:192.0.2.1"), now));
        assert!(!throttle.allow_at(ip("192.0.2.1"), now));
    }

    #[test]
    fn a_full_table_forgets_idle_peers_but_never_a_busy_one() {
        let throttle = Throttle::with_max_peers(1.0, 1, 4);
        let now = Instant::now();
        for i in 1..=4 {
            assert!(throttle.allow_at(ip(&format!("10.0.0.{i}")), now));
        }
        // Every peer is busy: a newcomer is refused, nobody is forgotten.
        assert!(!throttle.allow_at(ip("10.0.1.1"), now));
        assert!(!throttle.allow_at(ip("10.0.0.1"), now), "still spent");
        // Later every bucket is full again: they may be forgotten, making room.
        let later = now + Duration::from_secs(2);
        assert!(throttle.allow_at(ip("10.0.1.1"), later));
    }
}
