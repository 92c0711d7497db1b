//! GCRA (the generic cell rate algorithm): a token bucket kept as one number per key, the
//! theoretical arrival time (TAT) of the next request. `requests` per `per` with `burst`
//! extra at once: emission interval `T = per / requests`, tolerance `τ = burst × T`; a request
//! at `now` is allowed when `max(tat, now) + T − (τ + T) ≤ now`. The same arithmetic runs in
//! process (here) and in Redis (the script in `redis.rs`), so both scopes behave alike.

use std::{
    collections::HashMap,
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use weir_api::model::RateLimit;
use weir_proxy::lock;

/// A limit's parameters in microseconds.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// Emission interval `T`.
    pub interval: u64,
    /// Burst tolerance `τ`.
    pub tau: u64,
    /// `requests`, for `RateLimit-Limit`.
    pub limit: u64,
}

impl Params {
    /// From a compiled limit.
    pub fn of(limit: &RateLimit) -> Self {
        let interval = (limit.per.as_micros() as u64 / limit.requests).max(1);
        Self {
            interval,
            tau: interval.saturating_mul(limit.burst),
            limit: limit.requests,
        }
    }
}

/// The outcome for one request under one limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether it may pass.
    pub allowed: bool,
    /// `RateLimit-Limit`.
    pub limit: u64,
    /// `RateLimit-Remaining`: requests that could pass right now.
    pub remaining: u64,
    /// `RateLimit-Reset`: until the bucket is full again.
    pub reset: Duration,
    /// `Retry-After` when refused.
    pub retry_after: Duration,
}

impl Decision {
    /// From the TAT after the decision (`tat_ahead` = TAT − now) and, when refused, the wait.
    pub fn new(p: Params, allowed: bool, tat_ahead: u64, retry_after: u64) -> Self {
        let room = (p.tau + p.interval).saturating_sub(tat_ahead);
        Self {
            allowed,
            limit: p.limit,
            remaining: room / p.interval,
            reset: Duration::from_micros(tat_ahead),
            retry_after: Duration::from_micros(retry_after),
        }
    }
}

/// One GCRA step on a stored TAT (`None`: never seen). Returns the decision and the TAT to
/// store (unchanged when refused).
pub fn step(p: Params, stored: Option<u64>, now: u64) -> (Decision, u64) {
    let tat = stored.unwrap_or(now).max(now);
    let new_tat = tat + p.interval;
    let allow_at = new_tat.saturating_sub(p.tau + p.interval);
    if now < allow_at {
        (Decision::new(p, false, tat - now, allow_at - now), tat)
    } else {
        (Decision::new(p, true, new_tat - now, 0), new_tat)
    }
}

/// Microseconds on a process-wide monotonic clock.
pub fn now_micros() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

const SHARDS: usize = 16;
/// Keys one local limit holds by default (spread over [`SHARDS`] shards): 16 Ki per shard.
pub const DEFAULT_KEYS: usize = SHARDS * 16 * 1024;

/// One shard's buckets.
#[derive(Default)]
struct Shard {
    /// TAT by key.
    tats: HashMap<String, u64>,
    /// The latest TAT of a busy key this shard had to forget. A key the shard does not hold
    /// starts from it (while it lies ahead) rather than from a full bucket, so a forgotten
    /// key comes back at least as far in debt as it left and never gets a fresh burst.
    floor: u64,
}

impl Shard {
    /// Makes room for one more key once the shard holds `cap`: first drops idle keys (TAT
    /// passed: the bucket is full again, so forgetting it changes nothing); if too few were
    /// idle, forgets the eighth of the keys nearest to full, and raises the floor to the
    /// latest TAT forgotten. Never empties the shard.
    fn make_room(&mut self, cap: usize, now: u64) {
        if self.tats.len() < cap {
            return;
        }
        self.tats.retain(|_, tat| *tat > now);
        if self.tats.len() < cap {
            return;
        }
        // Forget several at once, so a flood of new keys pays for one scan per many keys.
        let forget = (cap / 8).max(1);
        let mut tats: Vec<u64> = self.tats.values().copied().collect();
        let (_, highest_forgotten, _) = tats.select_nth_unstable(forget - 1);
        let cut = *highest_forgotten;
        let mut left = forget;
        self.tats.retain(|_, tat| {
            if *tat <= cut && left > 0 {
                left -= 1;
                false
            } else {
                true
            }
        });
        self.floor = self.floor.max(cut);
    }
}

/// In-process buckets for one limit, sharded to keep lock hold times short, with bounded
/// memory: at most a fixed number of keys, see [`Shard::make_room`] for which go first.
pub struct LocalBuckets {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
}

impl Default for LocalBuckets {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_KEYS)
    }
}

impl LocalBuckets {
    /// Buckets holding at most about `keys` keys (at least one per shard).
    pub fn with_capacity(keys: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: keys.div_ceil(SHARDS).max(1),
        }
    }

    /// Decides one request for `key`.
    pub fn check(&self, p: Params, key: &str) -> Decision {
        let now = now_micros();
        let mut shard = lock(&self.shards[shard_of(key)]);
        let stored = match shard.tats.get(key) {
            Some(tat) => Some(*tat),
            None => Some(shard.floor).filter(|floor| *floor > now),
        };
        let (decision, tat) = step(p, stored, now);
        if decision.allowed {
            match shard.tats.get_mut(key) {
                Some(t) => *t = tat,
                None => {
                    shard.make_room(self.per_shard, now);
                    shard.tats.insert(key.to_string(), tat);
                }
            }
        }
        decision
    }

    /// Keys held (for tests of the memory bound).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).tats.len()).sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn shard_of(key: &str) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(key) as usize % SHARDS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(requests: u64, per_ms: u64, burst: u64) -> Params {
        let interval = (per_ms * 1000 / requests).max(1);
        Params {
            interval,
            tau: interval * burst,
            limit: requests,
        }
    }

    #[test]
    fn allows_burst_plus_one_at_once_then_one_per_interval() {
        let p = params(10, 1000, 4); // T = 100 ms, τ = 400 ms
        let mut tat = None;
        let now = 1_000_000;
        let mut allowed = 0;
        for _ in 0..20 {
            let (d, t) = step(p, tat, now);
            if d.allowed {
                allowed += 1;
                tat = Some(t);
            }
        }
        assert_eq!(allowed, 5);
        let (d, _) = step(p, tat, now);
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.retry_after, Duration::from_millis(100));
        // One interval later, exactly one more.
        let (d, t) = step(p, tat, now + 100_000);
        assert!(d.allowed);
        assert!(!step(p, Some(t), now + 100_000).0.allowed);
    }

    #[test]
    fn over_a_window_admits_the_rate_plus_burst() {
        let p = params(100, 10_000, 0); // 100 per 10 s
        let mut tat = None;
        let mut allowed = 0;
        // A request every millisecond for 10 s.
        for ms in 0..10_000u64 {
            let (d, t) = step(p, tat, ms * 1000);
            if d.allowed {
                allowed += 1;
                tat = Some(t);
            }
        }
        assert_eq!(allowed, 100);
    }

    #[test]
    fn remaining_counts_down_and_idle_keys_are_swept() {
        let buckets = LocalBuckets::default();
        let p = params(1000, 1000, 2);
        let first = buckets.check(p, "a");
        assert_eq!((first.allowed, first.remaining), (true, 2));
        assert_eq!(buckets.check(p, "a").remaining, 1);
        assert_eq!(buckets.check(p, "a").remaining, 0);
        assert!(!buckets.check(p, "a").allowed);
        assert!(buckets.check(p, "b").allowed, "keys are counted apart");
        // Many one-off keys: memory stays bounded.
        let buckets = LocalBuckets::with_capacity(1024);
        let quick = params(1_000_000, 1, 0); // TAT passes within a microsecond
        for i in 0..(1024 * 8) {
            buckets.check(quick, &format!("k{i}"));
        }
        assert!(buckets.len() <= 1024);
    }

    #[test]
    fn a_flood_of_new_keys_never_lets_a_spent_key_through() {
        // One request per hour, burst 1: nothing refills during the test.
        let slow = params(1, 3_600_000, 1);
        let buckets = LocalBuckets::with_capacity(64);
        let victims: Vec<String> = (0..8).map(|i| format!("victim{i}")).collect();
        for v in &victims {
            assert!(buckets.check(slow, v).allowed);
            assert!(buckets.check(slow, v).allowed);
            assert!(!buckets.check(slow, v).allowed, "{v} is spent");
        }
        // Far more new keys than the buckets hold, each spent as well, so no key is idle and
        // the shards must forget busy ones.
        for i in 0..5_000 {
            let key = format!("flood{i}");
            buckets.check(slow, &key);
            buckets.check(slow, &key);
            if i % 50 == 0 {
                for v in &victims {
                    assert!(
                        !buckets.check(slow, v).allowed,
                        "{v} got through after {i} keys"
                    );
                }
            }
        }
        assert!(buckets.len() <= 64 + SHARDS, "{} keys held", buckets.len());
        for v in &victims {
            assert!(!buckets.check(slow, v).allowed, "{v} got through");
        }
    }

    #[test]
    fn a_full_shard_forgets_the_keys_nearest_to_full_and_never_all() {
        let mut shard = Shard::default();
        for (i, tat) in [5u64, 50, 40, 30, 20, 10, 60, 70].iter().enumerate() {
            shard.tats.insert(format!("k{i}"), *tat);
        }
        shard.make_room(8, 1); // nothing idle: one eighth (one key) goes, the nearest to full
        assert_eq!(shard.tats.len(), 7);
        assert!(!shard.tats.contains_key("k0"));
        assert_eq!(shard.floor, 5);
        shard.make_room(8, 1); // below the cap: nothing to do
        assert_eq!(shard.tats.len(), 7);
        shard.tats.insert("k8".into(), 80);
        shard.make_room(8, 35); // k5, k4, k3 are idle at 35
        assert_eq!(shard.tats.len(), 5);
        assert_eq!(shard.floor, 5);
    }
}
