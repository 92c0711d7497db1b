//! The sliding-window counter, the default algorithm: `requests` at once, and about
//! `requests` in any span of `per`.
//!
//! A key counts in fixed windows of length `per`, the first starting at its first request
//! (after `2 × per` without one, the next request starts them anew). A request at `x` into the
//! current window passes when the previous window's count, weighted by the part of it the
//! span `(now − per, now]` still covers (rounded down), plus the current count, leaves room
//! for one more:
//!
//! ```text
//!   ⌊prev × (per − x) / per⌋ + cur + 1 ≤ requests
//!   |---- previous ----|---- current ----|
//!          |======== span of per ====|now
//! ```
//!
//! The bound, whatever the timing: in any span of `d ≤ per` at most
//! `⌊requests × (1 + d / per)⌋ + 1` pass (the previous window's `prev` can lie at its very end
//! while the estimate forgets it linearly; the rounding adds the one), and over `k` whole
//! windows at most `k × requests`. A burst at a window boundary therefore gets at most one
//! extra request right after it; a client that sends everything at the end of one window and
//! then as fast as allowed through the next can approach `2 × requests` in one span of `per`.
//! Traffic not timed against the windows is counted within a few percent, and traffic that
//! never pauses gets exactly `requests` per window. The same arithmetic runs in Redis (the
//! script in `redis.rs`).

use std::time::Duration;

use super::{local::Counter, Decision};

/// A limit's parameters in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// The window, `per`.
    pub per: u64,
    /// `requests`.
    pub limit: u64,
}

impl Params {
    /// `requests` per `per`.
    pub fn new(requests: u64, per: Duration) -> Self {
        Self {
            per: (per.as_micros() as u64).max(1),
            limit: requests,
        }
    }
}

/// One key's two windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Windows {
    /// When the current window began (microseconds).
    pub start: u64,
    /// Requests passed in the current window.
    pub cur: u64,
    /// Requests passed in the window before it.
    pub prev: u64,
}

impl Windows {
    /// `stored` as of `now`: as it is within its window, rolled into the next window, or new
    /// windows from `now` once both have passed.
    pub fn at(stored: Option<Windows>, per: u64, now: u64) -> Windows {
        match stored {
            Some(w) if now < w.start.saturating_add(per) => w,
            Some(w) if now < w.start.saturating_add(per.saturating_mul(2)) => Windows {
                start: w.start + per,
                cur: 0,
                prev: w.cur,
            },
            _ => Windows {
                start: now,
                cur: 0,
                prev: 0,
            },
        }
    }
}

/// The previous window's count weighted at `x` into the current one, rounded down: a
/// window's last request fits while any of the previous one's weight is left, so traffic that
/// never pauses gets `requests` per window rather than one fewer.
fn weighted(p: Params, prev: u64, x: u64) -> u64 {
    let left = u128::from(p.per - x.min(p.per));
    (u128::from(prev) * left / u128::from(p.per)) as u64
}

/// Where, into a window with `prev` before it and `cur` in it, `need` more first fit (in
/// `0..=per`, `per` meaning not before the window ends); `None` if they never fit in it.
fn first_fit(p: Params, prev: u64, cur: u64, need: u64) -> Option<u64> {
    let room = p.limit.checked_sub(cur.checked_add(need)?)?;
    // weighted(x) ≤ room ⟺ prev × (per − x) < (room + 1) × per.
    let (per, bar) = (
        u128::from(p.per),
        (u128::from(room) + 1) * u128::from(p.per),
    );
    if u128::from(prev) * per < bar {
        return Some(0);
    }
    let x = per + 1 - bar.div_ceil(u128::from(prev));
    Some(u64::try_from(x).unwrap_or(p.per).min(p.per))
}

/// Microseconds from `x` into window `w` until `need` more requests fit: later in this
/// window as the previous one's weight falls, or in the next one, where this window's count
/// becomes the previous.
pub fn until_fit(p: Params, w: Windows, x: u64, need: u64) -> u64 {
    match first_fit(p, w.prev, w.cur, need) {
        Some(at) if at < p.per => at.saturating_sub(x),
        _ => (p.per - x) + first_fit(p, w.cur, 0, need).unwrap_or(p.per),
    }
}

/// The decision for windows `w` (after it) at `x` into the current one.
pub fn decision(p: Params, allowed: bool, w: Windows, x: u64) -> Decision {
    let x = x.min(p.per - 1);
    let remaining = p
        .limit
        .saturating_sub(w.cur)
        .saturating_sub(weighted(p, w.prev, x));
    Decision {
        allowed,
        limit: p.limit,
        remaining,
        reset: Duration::from_micros(until_fit(p, w, x, p.limit)),
        retry_after: Duration::from_micros(if allowed { 0 } else { until_fit(p, w, x, 1) }),
    }
}

/// One request at `now` against `stored` (`None`: never seen). Returns the decision and the
/// windows to keep.
pub fn step(p: Params, stored: Option<Windows>, now: u64) -> (Decision, Windows) {
    let mut w = Windows::at(stored, p.per, now);
    let x = now.saturating_sub(w.start);
    let allowed = weighted(p, w.prev, x) + w.cur < p.limit;
    if allowed {
        w.cur += 1;
    }
    (decision(p, allowed, w, x), w)
}

impl Counter for Params {
    type State = Windows;

    fn step(&self, stored: Option<Windows>, now: u64) -> (Decision, Windows) {
        step(*self, stored, now)
    }

    /// Both windows have passed: the next request starts anew.
    fn idle(&self, w: &Windows, now: u64) -> bool {
        now >= w.start.saturating_add(self.per.saturating_mul(2))
    }

    /// The weighted count, in hundredths of a request.
    fn debt(&self, w: &Windows, now: u64) -> u64 {
        let w = Windows::at(Some(*w), self.per, now);
        let x = u128::from(now.saturating_sub(w.start).min(self.per));
        let per = u128::from(self.per);
        let weighted = (u128::from(w.prev) * (per - x) * 100) / per + u128::from(w.cur) * 100;
        u64::try_from(weighted).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1000;
    const S: u64 = 1_000_000;

    fn params(requests: u64, per: u64) -> Params {
        Params {
            per,
            limit: requests,
        }
    }

    /// Sends one request at each time in `at` (sorted), returning the times that passed.
    fn run(p: Params, at: impl IntoIterator<Item = u64>) -> Vec<u64> {
        let mut w = None;
        let mut passed = Vec::new();
        for now in at {
            let (d, next) = step(p, w, now);
            if d.allowed {
                w = Some(next);
                passed.push(now);
            }
        }
        passed
    }

    /// The most requests passed in any span of `d` (both ends included).
    fn most_in_span(passed: &[u64], d: u64) -> usize {
        let mut most = 0;
        for (i, start) in passed.iter().enumerate() {
            let n = passed[i..].iter().take_while(|t| **t <= start + d).count();
            most = most.max(n);
        }
        most
    }

    #[test]
    fn admits_requests_at_once_then_says_when_to_come_back() {
        let p = params(5, 60 * S);
        let mut w = None;
        let mut remaining = Vec::new();
        for _ in 0..20 {
            let (d, next) = step(p, w, 7 * S);
            if d.allowed {
                w = Some(next);
                remaining.push(d.remaining);
                // Wholly available once the `n` passed so far, weighing from the next window
                // on, weigh less than 1 there: `60 − 60 / n` s into it.
                let n = 5 - d.remaining;
                assert_eq!(d.reset.as_micros(), (120 - 60 / n as u128) * 1_000_000 + 1);
            } else {
                assert_eq!(d.remaining, 0);
                // The 5 weigh 4.99… (rounded down 4) just after the next window starts.
                assert_eq!(d.retry_after, Duration::from_micros(60_000_001));
            }
        }
        assert_eq!(remaining, [4, 3, 2, 1, 0]);
    }

    #[test]
    fn retry_after_and_remaining_are_exact() {
        let p = params(7, 3 * S);
        // A mix of states: every millisecond-ish step through three windows.
        let mut w = None;
        for i in 0..900u64 {
            let now = i * 10 * MS + (i * 7919 % 1000);
            let (d, next) = step(p, w, now);
            if d.allowed {
                w = Some(next);
                // `remaining` more pass at the same moment, and not one more.
                let mut probe = next;
                for _ in 0..d.remaining {
                    let (d, n) = step(p, Some(probe), now);
                    assert!(d.allowed);
                    probe = n;
                }
                assert!(!step(p, Some(probe), now).0.allowed);
            } else {
                let wait = d.retry_after.as_micros() as u64;
                assert!(wait > 0);
                assert!(step(p, w, now + wait).0.allowed, "at {now} + {wait}");
                assert!(
                    !step(p, w, now + wait - 1).0.allowed,
                    "at {now} + {wait} - 1"
                );
            }
        }
    }

    #[test]
    fn steady_overload_is_counted_within_a_few_percent() {
        let p = params(100, 10 * S); // 100 per 10 s
                                     // Ten times the rate, a request every 10 ms, for 100 s.
        let passed = run(p, (0..10_000u64).map(|i| i * 10 * MS));
        assert!((990..=1010).contains(&passed.len()), "{}", passed.len());
        let most = most_in_span(&passed, 10 * S - 1);
        assert!(most <= 103, "{most} in one span of 10 s");
        // And no span of 10 s after the first window gets much less than the limit.
        let late: Vec<u64> = passed.iter().copied().filter(|t| *t >= 10 * S).collect();
        for start in (10..89).map(|s| s * S) {
            let n = late
                .iter()
                .filter(|t| (start..start + 10 * S).contains(*t))
                .count();
            assert!(n >= 97, "{n} from {start}");
        }
    }

    #[test]
    fn a_burst_at_a_window_boundary_gets_nothing_extra() {
        let p = params(10, 2 * S);
        // The first request starts the windows at 0; the client then bursts at the end of the
        // first window and again just after the boundary.
        let mut at = vec![0];
        at.extend(std::iter::repeat_n(2 * S - MS, 20));
        at.extend(std::iter::repeat_n(2 * S + MS, 20));
        at.extend(std::iter::repeat_n(2 * S + 500 * MS, 20));
        let passed = run(p, at);
        let before = passed.iter().filter(|t| **t < 2 * S).count();
        let after: Vec<_> = passed.iter().filter(|t| **t >= 2 * S).collect();
        assert_eq!(before, 10);
        // 1 ms after the boundary the burst still weighs 9.995, rounded down 9: one more.
        // 500 ms after, a quarter of it has been forgotten (7.5, rounded down 7): two more.
        assert_eq!(
            after,
            [&(2 * S + MS), &(2 * S + 500 * MS), &(2 * S + 500 * MS)]
        );
    }

    #[test]
    fn no_schedule_beats_the_documented_bound() {
        let p = params(10, 2 * S);
        // Hostile schedules: bursts of every size at pseudo-random moments, and the worst
        // case the bound describes (everything at a window's end, then as fast as allowed).
        let mut schedules: Vec<Vec<u64>> = Vec::new();
        let mut rng = fastrand::Rng::with_seed(30);
        for _ in 0..200 {
            let mut at: Vec<u64> = (0..300).map(|_| rng.u64(0..12 * S)).collect();
            for _ in 0..5 {
                let t = rng.u64(0..12 * S);
                at.extend(std::iter::repeat_n(t, rng.usize(1..30)));
            }
            at.sort_unstable();
            schedules.push(at);
        }
        let mut worst = vec![0];
        worst.extend(std::iter::repeat_n(2 * S - 1, 20));
        worst.extend((0..4000).map(|i| 2 * S + i * MS));
        schedules.push(worst.clone());
        for at in &schedules {
            let passed = run(p, at.iter().copied());
            for d in [0, MS, 100 * MS, 500 * MS, S, 2 * S - 1] {
                let bound = 10 + (10 * d / (2 * S)) as usize + 1;
                let most = most_in_span(&passed, d);
                assert!(most <= bound, "{most} in a span of {d} µs, bound {bound}");
            }
        }
        // The worst case comes close to twice the limit in one span, as documented.
        let most = most_in_span(&run(p, worst), 2 * S - 2);
        assert!(most >= 18, "{most}");
    }

    #[test]
    fn a_key_idle_for_two_windows_starts_anew() {
        let p = params(3, S);
        let passed = run(p, [0, 0, 0, 0, 3 * S / 2, 2 * S, 2 * S, 2 * S, 2 * S]);
        // At 1.5 s the first window's 3 still weigh 1.5 (1): one more fits. At 2 s the windows
        // started at 0 have both passed (the one from 1 s holds the 1.5 s request), so it
        // rolls: prev 1 at full weight, two more.
        assert_eq!(passed, [0, 0, 0, 3 * S / 2, 2 * S, 2 * S]);
        let w = Windows::at(
            Some(Windows {
                start: 0,
                cur: 3,
                prev: 0,
            }),
            S,
            2 * S,
        );
        assert_eq!(
            w,
            Windows {
                start: 2 * S,
                cur: 0,
                prev: 0
            }
        );
    }
}
