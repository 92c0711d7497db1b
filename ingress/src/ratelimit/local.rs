//! In-process counts for one limit: sharded to keep lock hold times short, with bounded
//! memory (at most a fixed number of keys, see [`Shard::make_room`] for which go first).
//! Generic over the algorithm ([`Counter`]): GCRA keeps one number per key, the sliding
//! window three.

use std::{
    collections::HashMap,
    sync::{Mutex, OnceLock},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use weir_proxy::lock;

use super::Decision;

/// What the local store needs of an algorithm.
pub trait Counter: Copy + Send + Sync + 'static {
    /// What is kept per key.
    type State: Copy + Send + Sync + 'static;
    /// Decides one request at `now` (microseconds); returns the state to keep if it passes.
    fn step(&self, stored: Option<Self::State>, now: u64) -> (Decision, Self::State);
    /// Whether forgetting `state` at `now` changes nothing (it counts nothing any more).
    fn idle(&self, state: &Self::State, now: u64) -> bool;
    /// How far from a fresh key `state` is at `now`: the least indebted keys go first.
    fn debt(&self, state: &Self::State, now: u64) -> u64;
}

/// Microseconds on a process-wide monotonic clock that reads Unix time at its first use, so
/// that windows and times in logs line up with the wall clock of that moment.
pub fn now_micros() -> u64 {
    static START: OnceLock<(Instant, u64)> = OnceLock::new();
    let (start, unix) = START.get_or_init(|| {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        (Instant::now(), unix)
    });
    unix + start.elapsed().as_micros() as u64
}

const SHARDS: usize = 16;
/// Keys one local limit holds by default (spread over [`SHARDS`] shards): 16 Ki per shard.
pub const DEFAULT_KEYS: usize = SHARDS * 16 * 1024;

/// One shard's keys.
struct Shard<S> {
    states: HashMap<String, S>,
    /// The most indebted state of a busy key this shard had to forget. A key the shard does
    /// not hold starts from it (while it counts anything) rather than fresh, so a forgotten
    /// key comes back at least as far in debt as it left and never gets a fresh burst.
    floor: Option<S>,
}

impl<S> Default for Shard<S> {
    fn default() -> Self {
        Self {
            states: HashMap::new(),
            floor: None,
        }
    }
}

impl<S: Copy> Shard<S> {
    /// Makes room for one more key once the shard holds `cap`: first drops idle keys
    /// (forgetting them changes nothing); if too few were idle, forgets the eighth of the
    /// keys nearest to fresh, and raises the floor to the most indebted one forgotten. Never
    /// empties the shard.
    fn make_room<C: Counter<State = S>>(&mut self, c: &C, cap: usize, now: u64) {
        if self.states.len() < cap {
            return;
        }
        self.states.retain(|_, s| !c.idle(s, now));
        if self.states.len() < cap {
            return;
        }
        // Forget several at once, so a flood of new keys pays for one scan per many keys.
        let forget = (cap / 8).max(1);
        let mut debts: Vec<u64> = self.states.values().map(|s| c.debt(s, now)).collect();
        let (_, highest_forgotten, _) = debts.select_nth_unstable(forget - 1);
        let cut = *highest_forgotten;
        let mut left = forget;
        let mut deepest: Option<S> = None;
        self.states.retain(|_, s| {
            if left > 0 && c.debt(s, now) <= cut {
                left -= 1;
                if deepest.is_none_or(|d| c.debt(&d, now) < c.debt(s, now)) {
                    deepest = Some(*s);
                }
                false
            } else {
                true
            }
        });
        let floor_debt = self.floor.map_or(0, |f| c.debt(&f, now));
        if let Some(d) = deepest.filter(|d| c.debt(d, now) >= floor_debt) {
            self.floor = Some(d);
        }
    }
}

/// In-process counts for one limit.
pub struct LocalBuckets<C: Counter> {
    counter: C,
    shards: Vec<Mutex<Shard<C::State>>>,
    per_shard: usize,
}

impl<C: Counter> LocalBuckets<C> {
    /// Counts by `counter`, holding at most about `keys` keys (at least one per shard).
    pub fn new(counter: C, keys: usize) -> Self {
        Self {
            counter,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: keys.div_ceil(SHARDS).max(1),
        }
    }

    /// Decides one request for `key` now.
    pub fn check(&self, key: &str) -> Decision {
        self.check_at(key, now_micros())
    }

    /// Decides one request for `key` at `now` (microseconds).
    pub fn check_at(&self, key: &str, now: u64) -> Decision {
        let c = &self.counter;
        let mut shard = lock(&self.shards[shard_of(key)]);
        let stored = match shard.states.get(key) {
            Some(s) => Some(*s),
            None => shard.floor.filter(|floor| !c.idle(floor, now)),
        };
        let (decision, state) = c.step(stored, now);
        if decision.allowed {
            match shard.states.get_mut(key) {
                Some(s) => *s = state,
                None => {
                    shard.make_room(c, self.per_shard, now);
                    shard.states.insert(key.to_string(), state);
                }
            }
        }
        decision
    }

    /// Keys held (for tests of the memory bound).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).states.len()).sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A limit's local counts whatever its algorithm.
pub trait Local: Send + Sync {
    /// Decides one request for `key` now.
    fn check(&self, key: &str) -> Decision;
}

impl<C: Counter> Local for LocalBuckets<C> {
    fn check(&self, key: &str) -> Decision {
        LocalBuckets::check(self, key)
    }
}

fn shard_of(key: &str) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(key) as usize % SHARDS
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ratelimit::{gcra, window};

    fn gcra(requests: u64, per_ms: u64, burst: u64) -> gcra::Params {
        gcra::Params::new(requests, Duration::from_millis(per_ms), burst)
    }

    fn sliding(requests: u64, per_ms: u64) -> window::Params {
        window::Params::new(requests, Duration::from_millis(per_ms))
    }

    #[test]
    fn remaining_counts_down_and_idle_keys_are_swept() {
        let buckets = LocalBuckets::new(gcra(1000, 1000, 2), DEFAULT_KEYS);
        let first = buckets.check("a");
        assert_eq!((first.allowed, first.remaining), (true, 2));
        assert_eq!(buckets.check("a").remaining, 1);
        assert_eq!(buckets.check("a").remaining, 0);
        assert!(!buckets.check("a").allowed);
        assert!(buckets.check("b").allowed, "keys are counted apart");
        // Many one-off keys: memory stays bounded, for both algorithms.
        let quick = LocalBuckets::new(gcra(1_000_000, 1, 0), 1024); // TAT passes at once
        let windows = LocalBuckets::new(sliding(5, 1), 1024);
        for i in 0..(1024 * 8u64) {
            quick.check_at(&format!("k{i}"), i * 10);
            windows.check_at(&format!("k{i}"), i * 10_000);
        }
        assert!(quick.len() <= 1024);
        assert!(windows.len() <= 1024);
    }

    /// Spends a handful of victim keys, floods the store with far more spent keys than it
    /// holds (none idle, so busy ones must be forgotten), and checks no victim gets through.
    fn flood<C: Counter>(counter: C, spend: usize) {
        let buckets = LocalBuckets::new(counter, 64);
        let now = 5_000_000;
        let victims: Vec<String> = (0..8).map(|i| format!("victim{i}")).collect();
        for v in &victims {
            for _ in 0..spend {
                assert!(buckets.check_at(v, now).allowed);
            }
            assert!(!buckets.check_at(v, now).allowed, "{v} is spent");
        }
        for i in 0..5_000 {
            let key = format!("flood{i}");
            for _ in 0..spend {
                buckets.check_at(&key, now);
            }
            if i % 50 == 0 {
                for v in &victims {
                    assert!(
                        !buckets.check_at(v, now).allowed,
                        "{v} got through after {i}"
                    );
                }
            }
        }
        assert!(buckets.len() <= 64 + SHARDS, "{} keys held", buckets.len());
        for v in &victims {
            assert!(!buckets.check_at(v, now).allowed, "{v} got through");
        }
    }

    #[test]
    fn a_flood_of_new_keys_never_lets_a_spent_key_through() {
        // One request per hour, burst 1 (GCRA), or two per hour (sliding window): nothing
        // refills during the test.
        flood(gcra(1, 3_600_000, 1), 2);
        flood(sliding(2, 3_600_000), 2);
    }

    #[test]
    fn a_full_shard_forgets_the_keys_nearest_to_fresh_and_never_all() {
        let c = gcra(1, 1, 0);
        let mut shard = Shard::default();
        for (i, tat) in [5u64, 50, 40, 30, 20, 10, 60, 70].iter().enumerate() {
            shard.states.insert(format!("k{i}"), *tat);
        }
        shard.make_room(&c, 8, 1); // nothing idle: one eighth (one key) goes, the nearest to full
        assert_eq!(shard.states.len(), 7);
        assert!(!shard.states.contains_key("k0"));
        assert_eq!(shard.floor, Some(5));
        shard.make_room(&c, 8, 1); // below the cap: nothing to do
        assert_eq!(shard.states.len(), 7);
        shard.states.insert("k8".into(), 80);
        shard.make_room(&c, 8, 35); // k5, k4, k3 are idle at 35
        assert_eq!(shard.states.len(), 5);
        assert_eq!(shard.floor, Some(5));
    }
}
