//! The retry budget (Finagle, Linkerd): over the last ten seconds, retries may add at most
//! `ratio` of the requests plus `min_per_second` per second. Unlike a bare retry count, it
//! caps what a failing backend receives at about `1 + ratio` times the offered load.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// Seconds of history the budget looks at.
const WINDOW: usize = 10;

/// One cluster's retry budget.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    min_per_second: u32,
    start: Instant,
    slots: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    /// The second (since `start`) the newest slot counts.
    second: u64,
    requests: [u32; WINDOW],
    retries: [u32; WINDOW],
}

impl Slots {
    /// Moves the window forward to `second`, clearing the slots that fell out of it.
    fn advance(&mut self, second: u64) {
        if second <= self.second {
            return;
        }
        let gap = (second - self.second).min(WINDOW as u64);
        for s in 1..=gap {
            let i = ((self.second + s) % WINDOW as u64) as usize;
            self.requests[i] = 0;
            self.retries[i] = 0;
        }
        self.second = second;
    }
}

impl RetryBudget {
    /// A budget of `ratio` (0.0–1.0) of requests plus `min_per_second`.
    pub fn new(ratio: f64, min_per_second: u32) -> Self {
        Self {
            ratio,
            min_per_second,
            start: Instant::now(),
            slots: Mutex::new(Slots::default()),
        }
    }

    /// Whether this budget has the same settings as a policy's.
    pub fn same_settings(&self, ratio: f64, min_per_second: u32) -> bool {
        self.ratio == ratio && self.min_per_second == min_per_second
    }

    /// Counts a request (first tries only).
    pub fn deposit(&self, now: Instant) {
        let second = self.second(now);
        let mut slots = crate::lock(&self.slots);
        slots.advance(second);
        slots.requests[(second % WINDOW as u64) as usize] += 1;
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn withdraw(&self, now: Instant) -> bool {
        let second = self.second(now);
        let mut slots = crate::lock(&self.slots);
        slots.advance(second);
        let requests: u64 = slots.requests.iter().map(|&n| u64::from(n)).sum();
        let retries: u64 = slots.retries.iter().map(|&n| u64::from(n)).sum();
        let allowed = self.ratio * requests as f64 + f64::from(self.min_per_second) * WINDOW as f64;
        if (retries as f64) < allowed {
            slots.retries[(second % WINDOW as u64) as usize] += 1;
            true
        } else {
            false
        }
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_secs()
    }
}

/// The longest a retry waits: full jitter over an exponential ceiling (AWS architecture blog,
/// "Exponential Backoff And Jitter"). `retry` counts from 1.
pub fn backoff(base: Duration, max: Duration, retry: u32) -> Duration {
    let ceiling = base
        .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
        .min(max);
    ceiling.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_capped_at_the_ratio_plus_the_minimum() {
        let budget = RetryBudget::new(0.2, 1);
        let now = Instant::now();
        for _ in 0..1000 {
            budget.deposit(now);
        }
        let granted = (0..1000).filter(|_| budget.withdraw(now)).count();
        // 20 % of 1000 plus 1/s over the 10 s window.
        assert_eq!(granted, 210);
    }

    #[test]
    fn the_window_slides() {
        let budget = RetryBudget::new(0.5, 0);
        let t0 = Instant::now();
        for _ in 0..10 {
            budget.deposit(t0);
        }
        assert_eq!((0..10).filter(|_| budget.withdraw(t0)).count(), 5);
        // Eleven seconds later the old requests no longer count.
        let later = t0 + Duration::from_secs(11);
        assert!(!budget.withdraw(later));
        budget.deposit(later);
        budget.deposit(later);
        assert!(budget.withdraw(later));
    }

    #[test]
    fn backoff_stays_under_its_exponential_ceiling() {
        let (base, max) = (Duration::from_millis(25), Duration::from_millis(250));
        for retry in 1..10 {
            let ceiling = (base * (1 << (retry - 1))).min(max);
            for _ in 0..50 {
                assert!(backoff(base, max, retry) <= ceiling);
            }
        }
    }
}
