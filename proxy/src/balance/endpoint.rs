//! One endpoint's state: outstanding requests, the peak-EWMA latency estimate, the circuit
//! breaker and active health. Kept by address across config reloads.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use weir_api::model::BreakerPolicy;

use crate::resilience::breaker::{Breaker, State};

/// How long a latency sample takes to decay (EWMA time constant).
const DECAY: Duration = Duration::from_secs(10);
/// The latency assumed for an endpoint that has not answered yet.
const DEFAULT_RTT: Duration = Duration::from_millis(1);
/// The latency recorded for a failed connection, so the balancer steers away at once.
const FAILURE_PENALTY: Duration = Duration::from_secs(1);

/// One backend address and what the balancer knows about it.
#[derive(Debug)]
pub struct Endpoint {
    /// Where it listens.
    pub addr: SocketAddr,
    /// `addr` as a URI authority, made once rather than per request.
    pub authority: http::uri::Authority,
    /// Its name in session tickets ([`super::session::endpoint_id`]).
    pub session: u64,
    in_flight: AtomicUsize,
    ewma: Mutex<Ewma>,
    breaker: Mutex<Breaker>,
    /// Mirrors the breaker's state (`State::gauge`) so picking needs no lock while closed.
    state: AtomicU8,
    /// False while active health checks fail.
    healthy: AtomicBool,
    /// Health check results in a row: positive passes, negative failures.
    health_streak: Mutex<i32>,
}

#[derive(Debug)]
struct Ewma {
    nanos: f64,
    updated: Instant,
}

impl Endpoint {
    pub(super) fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            authority: http::uri::Authority::try_from(addr.to_string().as_str())
                .unwrap_or_else(|_| http::uri::Authority::from_static("invalid")),
            session: super::session::endpoint_id(addr),
            in_flight: AtomicUsize::new(0),
            ewma: Mutex::new(Ewma {
                nanos: DEFAULT_RTT.as_nanos() as f64,
                updated: Instant::now(),
            }),
            breaker: Mutex::new(Breaker::default()),
            state: AtomicU8::new(0),
            healthy: AtomicBool::new(true),
            health_streak: Mutex::new(0),
        }
    }

    /// Whether active health checks consider it healthy.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Records one health check result; returns the new health if it changed.
    pub fn health_check(
        &self,
        passed: bool,
        unhealthy_after: u32,
        healthy_after: u32,
    ) -> Option<bool> {
        let mut streak = crate::lock(&self.health_streak);
        *streak = match (passed, *streak) {
            (true, s) if s > 0 => s.saturating_add(1),
            (true, _) => 1,
            (false, s) if s < 0 => s.saturating_sub(1),
            (false, _) => -1,
        };
        let healthy = self.healthy();
        let flip = if healthy {
            *streak <= -(unhealthy_after as i32)
        } else {
            *streak >= healthy_after as i32
        };
        flip.then(|| {
            self.healthy.store(!healthy, Ordering::Relaxed);
            !healthy
        })
    }

    /// May a request go here now? Closed and healthy, or half-open with nothing in flight
    /// (a single probe at a time).
    pub fn usable(&self) -> bool {
        if !self.healthy() {
            return false;
        }
        if self.state.load(Ordering::Relaxed) == 0 {
            return true;
        }
        let state = crate::lock(&self.breaker).state(Instant::now());
        self.state.store(state.gauge() as u8, Ordering::Relaxed);
        match state {
            State::Closed => true,
            State::HalfOpen => self.in_flight() == 0,
            State::Open => false,
        }
    }

    /// Ejected or half-open (counts against the cluster's ejection cap).
    pub(super) fn ejected(&self) -> bool {
        self.state.load(Ordering::Relaxed) != 0
    }

    /// Feeds one try's outcome to the breaker; `may_eject` says whether the cluster's ejection
    /// cap leaves room. Returns the new state if it changed.
    pub(super) fn record(
        &self,
        policy: &BreakerPolicy,
        success: bool,
        may_eject: impl FnOnce() -> bool,
    ) -> Option<State> {
        let now = Instant::now();
        let changed = if success {
            crate::lock(&self.breaker).success(policy, now)
        } else {
            // The ejection cap is only consulted when a failure could eject.
            let may_eject = may_eject();
            crate::lock(&self.breaker).failure(policy, now, may_eject)
        };
        if let Some(state) = changed {
            self.state.store(state.gauge() as u8, Ordering::Relaxed);
        }
        changed
    }

    /// The breaker state as the `weir_endpoint_state` gauge shows it.
    pub(super) fn state_gauge(&self) -> i64 {
        i64::from(self.state.load(Ordering::Relaxed))
    }

    /// Marks a request started; the guard ends it (and feeds the latency) when dropped or
    /// observed.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.start_at(Instant::now())
    }

    /// [`Endpoint::start`] for a request the caller timed as sent at `started`.
    pub fn start_at(self: &Arc<Self>, started: Instant) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            endpoint: self.clone(),
            started,
            done: false,
        }
    }

    /// Requests currently outstanding.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Feeds a request that started at `started` and answered at `now`.
    pub(super) fn observe(&self, started: Instant, now: Instant, floor: Duration) {
        let rtt = now.saturating_duration_since(started).max(floor);
        let mut e = crate::lock(&self.ewma);
        let sample = rtt.as_nanos() as f64;
        if sample > e.nanos {
            e.nanos = sample; // peak-sensitive: jump up at once, decay slowly
        } else {
            let elapsed = now.saturating_duration_since(e.updated).as_secs_f64();
            let w = (-elapsed / DECAY.as_secs_f64()).exp();
            e.nanos = e.nanos * w + sample * (1.0 - w);
        }
        e.updated = now;
    }

    pub(super) fn cost(&self) -> f64 {
        let ewma = crate::lock(&self.ewma).nanos;
        ewma * (self.in_flight() as f64 + 1.0)
    }
}

/// An outstanding request on an endpoint.
pub struct InFlight {
    endpoint: Arc<Endpoint>,
    started: Instant,
    done: bool,
}

impl InFlight {
    /// Records how long the endpoint took to answer (response headers); returns when it did.
    pub fn success(mut self) -> Instant {
        let now = Instant::now();
        self.endpoint.observe(self.started, now, Duration::ZERO);
        self.done = true;
        now
    }

    /// Records a failure (connection refused, reset, timeout): a latency penalty. Returns
    /// when it was seen.
    pub fn failure(mut self) -> Instant {
        let now = Instant::now();
        self.endpoint.observe(self.started, now, FAILURE_PENALTY);
        self.done = true;
        now
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.done {
            let now = Instant::now();
            self.endpoint.observe(self.started, now, Duration::ZERO);
        }
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
