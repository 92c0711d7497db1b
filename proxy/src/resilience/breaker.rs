//! Passive outlier detection for one endpoint: a small state machine, driven by the outcomes
//! of real requests, with the time passed in so tests need no clock.
//!
//! ```text
//!  Closed ──N failures in a row──▶ Open ──ejection time over──▶ HalfOpen ──M successes──▶ Closed
//!                                   ▲                              │
//!                                   └──────── any failure ─────────┘  (ejection grows)
//! ```
//! Each repeated ejection lasts one more `baseEjectionTime`; every `interval` spent closed
//! takes one multiple off again, so an endpoint that flaps is kept out longer and longer, and
//! one that recovered for good is forgiven.

use std::time::Instant;

use weir_api::model::BreakerPolicy;

/// Where an endpoint stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Taking traffic.
    Closed,
    /// Ejected until its ejection time is over.
    Open,
    /// Back on probation: one request at a time until enough succeed in a row.
    HalfOpen,
}

impl State {
    /// The value of the `weir_endpoint_state` gauge.
    pub fn gauge(self) -> i64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        }
    }
}

/// The breaker of one endpoint.
#[derive(Debug)]
pub struct Breaker {
    state: State,
    consecutive_failures: u32,
    last_failure: Option<Instant>,
    open_until: Option<Instant>,
    /// How many base ejection times the next ejection lasts, minus one.
    ejections: u32,
    /// When the endpoint last closed (for forgiving old ejections).
    closed_at: Option<Instant>,
    successes: u32,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            state: State::Closed,
            consecutive_failures: 0,
            last_failure: None,
            open_until: None,
            ejections: 0,
            closed_at: None,
            successes: 0,
        }
    }
}

impl Breaker {
    /// The current state, moving Open to HalfOpen once the ejection time is over.
    pub fn state(&mut self, now: Instant) -> State {
        if self.state == State::Open && self.open_until.is_some_and(|t| now >= t) {
            self.state = State::HalfOpen;
            self.successes = 0;
        }
        self.state
    }

    /// Records a success; returns the new state if it changed.
    pub fn success(&mut self, policy: &BreakerPolicy, now: Instant) -> Option<State> {
        self.consecutive_failures = 0;
        match self.state(now) {
            State::HalfOpen => {
                self.successes += 1;
                (self.successes >= policy.half_open_probes).then(|| {
                    self.state = State::Closed;
                    self.closed_at = Some(now);
                    State::Closed
                })
            }
            State::Closed | State::Open => None,
        }
    }

    /// Records a failure; `may_eject` says whether the cluster's ejection cap leaves room.
    /// Returns the new state if it changed.
    pub fn failure(
        &mut self,
        policy: &BreakerPolicy,
        now: Instant,
        may_eject: bool,
    ) -> Option<State> {
        match self.state(now) {
            // A failed probe: straight back out, for longer (it is already counted as ejected).
            State::HalfOpen => Some(self.eject(policy, now)),
            State::Open => None,
            State::Closed => {
                let stale = self
                    .last_failure
                    .is_some_and(|t| now.saturating_duration_since(t) > policy.interval);
                if stale {
                    self.consecutive_failures = 0;
                }
                self.consecutive_failures += 1;
                self.last_failure = Some(now);
                (self.consecutive_failures >= policy.consecutive_failures && may_eject)
                    .then(|| self.eject(policy, now))
            }
        }
    }

    fn eject(&mut self, policy: &BreakerPolicy, now: Instant) -> State {
        if self.state == State::Closed {
            // Forgive one multiple per interval spent closed since the last ejection.
            let forgiven = self.closed_at.map_or(0, |t| {
                (now.saturating_duration_since(t).as_nanos() / policy.interval.as_nanos().max(1))
                    as u32
            });
            self.ejections = self.ejections.saturating_sub(forgiven);
        }
        self.ejections = self.ejections.saturating_add(1);
        self.state = State::Open;
        self.open_until = Some(now + policy.base_ejection_time * self.ejections);
        self.consecutive_failures = 0;
        self.successes = 0;
        State::Open
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            consecutive_failures: 3,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 50,
            half_open_probes: 2,
            max_pending_requests: 100,
        }
    }

    #[test]
    fn ejects_after_consecutive_failures_and_closes_after_probes() {
        let (p, t0) = (policy(), Instant::now());
        let mut b = Breaker::default();
        assert_eq!(b.failure(&p, t0, true), None);
        assert_eq!(b.failure(&p, t0, true), None);
        assert_eq!(b.failure(&p, t0, true), Some(State::Open));
        assert_eq!(b.state(t0 + Duration::from_secs(29)), State::Open);
        assert_eq!(b.state(t0 + Duration::from_secs(30)), State::HalfOpen);
        let t1 = t0 + Duration::from_secs(31);
        assert_eq!(
            b.success(&p, t1),
            None,
            "one success is not enough (hysteresis)"
        );
        assert_eq!(b.success(&p, t1), Some(State::Closed));
    }

    #[test]
    fn a_success_resets_the_count_and_old_failures_expire() {
        let (p, t0) = (policy(), Instant::now());
        let mut b = Breaker::default();
        b.failure(&p, t0, true);
        b.failure(&p, t0, true);
        b.success(&p, t0);
        b.failure(&p, t0, true);
        b.failure(&p, t0, true);
        assert_eq!(b.state(t0), State::Closed);
        // Two more, but the first is older than the interval.
        let later = t0 + Duration::from_secs(11);
        assert_eq!(b.failure(&p, later, true), None);
        assert_eq!(b.state(later), State::Closed);
    }

    #[test]
    fn a_failed_probe_ejects_again_for_longer_and_the_cap_is_respected() {
        let (p, t0) = (policy(), Instant::now());
        let mut b = Breaker::default();
        for _ in 0..3 {
            b.failure(&p, t0, true);
        }
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(b.failure(&p, t1, false), Some(State::Open), "probe failed");
        assert_eq!(b.state(t1 + Duration::from_secs(59)), State::Open);
        assert_eq!(b.state(t1 + Duration::from_secs(60)), State::HalfOpen);

        let mut capped = Breaker::default();
        for _ in 0..5 {
            assert_eq!(capped.failure(&p, t0, false), None);
        }
        assert_eq!(capped.state(t0), State::Closed);
    }
}
