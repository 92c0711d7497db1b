//! GCRA (the generic cell rate algorithm), for `algorithm: gcra`: a token bucket kept as one
//! number per key, the theoretical arrival time (TAT) of the next request. `requests` per
//! `per` with `burst` extra at once: emission interval `T = per / requests`, tolerance
//! `τ = burst × T`; a request at `now` is allowed when `max(tat, now) + T − (τ + T) ≤ now`.
//! The same arithmetic runs in process (here) and in Redis (the script in `redis.rs`), so both
//! scopes behave alike.

use std::time::Duration;

use super::{local::Counter, Decision};

/// A limit's parameters in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Emission interval `T`.
    pub interval: u64,
    /// Burst tolerance `τ`.
    pub tau: u64,
    /// `requests`, for `RateLimit-Limit`.
    pub limit: u64,
}

impl Params {
    /// `requests` per `per`, `burst` more at once.
    pub fn new(requests: u64, per: Duration, burst: u64) -> Self {
        let interval = (per.as_micros() as u64 / requests.max(1)).max(1);
        Self {
            interval,
            tau: interval.saturating_mul(burst),
            limit: requests,
        }
    }
}

/// The decision from the TAT after it (`tat_ahead` = TAT − now) and, when refused, the wait.
pub fn decision(p: Params, allowed: bool, tat_ahead: u64, retry_after: u64) -> Decision {
    let room = (p.tau + p.interval).saturating_sub(tat_ahead);
    Decision {
        allowed,
        limit: p.limit,
        remaining: room / p.interval,
        reset: Duration::from_micros(tat_ahead),
        retry_after: Duration::from_micros(retry_after),
    }
}

/// One GCRA step on a stored TAT (`None`: never seen). Returns the decision and the TAT to
/// store (unchanged when refused).
pub fn step(p: Params, stored: Option<u64>, now: u64) -> (Decision, u64) {
    let tat = stored.unwrap_or(now).max(now);
    let new_tat = tat + p.interval;
    let allow_at = new_tat.saturating_sub(p.tau + p.interval);
    if now < allow_at {
        (decision(p, false, tat - now, allow_at - now), tat)
    } else {
        (decision(p, true, new_tat - now, 0), new_tat)
    }
}

impl Counter for Params {
    type State = u64;

    fn step(&self, stored: Option<u64>, now: u64) -> (Decision, u64) {
        step(*self, stored, now)
    }

    /// The TAT has passed: the bucket is full again.
    fn idle(&self, tat: &u64, now: u64) -> bool {
        *tat <= now
    }

    fn debt(&self, tat: &u64, _now: u64) -> u64 {
        *tat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(requests: u64, per_ms: u64, burst: u64) -> Params {
        Params::new(requests, Duration::from_millis(per_ms), burst)
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
}
