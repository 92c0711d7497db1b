//! Choosing an endpoint: power of two choices over peak-EWMA latency (the Finagle/Linkerd
//! balancer: a slow or loaded endpoint gets less traffic, quickly), or plain round robin.
//!
//! Endpoint state (in-flight count, latency estimate, breaker, health) is keyed by address and
//! carried across config reloads, so a reload does not reset what the balancer has learned.
//! Endpoints that the circuit breaker ejected or health checks failed are skipped; a
//! half-open endpoint takes one request at a time.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use prometheus::IntCounter;
use weir_api::model::{Balancer, Cluster};

use crate::{
    error::ProxyError,
    metrics::Metrics,
    resilience::{
        breaker::{Breaker, State},
        budget::RetryBudget,
        ring::Ring,
    },
};

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
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            authority: http::uri::Authority::try_from(addr.to_string().as_str())
                .unwrap_or_else(|_| http::uri::Authority::from_static("invalid")),
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
    fn usable(&self, now: Instant) -> bool {
        if !self.healthy() {
            return false;
        }
        if self.state.load(Ordering::Relaxed) == 0 {
            return true;
        }
        let state = crate::lock(&self.breaker).state(now);
        self.state.store(state.gauge() as u8, Ordering::Relaxed);
        match state {
            State::Closed => true,
            State::HalfOpen => self.in_flight() == 0,
            State::Open => false,
        }
    }

    /// Ejected or half-open (counts against the cluster's ejection cap).
    fn ejected(&self) -> bool {
        self.state.load(Ordering::Relaxed) != 0
    }

    /// Marks a request started; the guard ends it (and feeds the latency) when dropped or
    /// observed.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            endpoint: self.clone(),
            started: Instant::now(),
            done: false,
        }
    }

    /// Requests currently outstanding.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn observe(&self, rtt: Duration) {
        let mut e = crate::lock(&self.ewma);
        let now = Instant::now();
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

    fn cost(&self) -> f64 {
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
    /// Records how long the endpoint took to answer (response headers).
    pub fn success(mut self) {
        self.endpoint.observe(self.started.elapsed());
        self.done = true;
    }

    /// Records a failure (connection refused, reset, timeout): a latency penalty.
    pub fn failure(mut self) {
        self.endpoint
            .observe(FAILURE_PENALTY.max(self.started.elapsed()));
        self.done = true;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.done {
            self.endpoint.observe(self.started.elapsed());
        }
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A cluster as the data plane runs it: its endpoints with state, the algorithm, and the
/// resilience state of its TrafficPolicy.
#[derive(Debug)]
pub struct Pool {
    /// The compiled cluster.
    pub cluster: Cluster,
    endpoints: Vec<Arc<Endpoint>>,
    next: AtomicUsize,
    ring: Option<Ring>,
    /// Requests in flight to the cluster (for `maxPendingRequests`).
    pending: Arc<AtomicUsize>,
    /// The retry budget, carried across reloads while its settings stay the same.
    pub budget: Option<Arc<RetryBudget>>,
    /// This cluster's series of the shared metrics.
    pub metrics: ClusterMetrics,
}

/// A cluster's metric handles, resolved once per config version.
#[derive(Debug, Clone)]
pub struct ClusterMetrics {
    /// Retries sent.
    pub retries: IntCounter,
    /// Retries refused by the budget.
    pub budget_exhausted: IntCounter,
    ejections: IntCounter,
    all: Metrics,
}

impl Pool {
    /// Builds a pool, reusing endpoint state from `endpoints` (keyed by address) and the retry
    /// budget from the cluster's `previous` pool.
    pub fn new(
        cluster: Cluster,
        endpoints: &HashMap<SocketAddr, Arc<Endpoint>>,
        previous: Option<&Pool>,
        metrics: &Metrics,
    ) -> Self {
        let ring = matches!(cluster.balancer, Balancer::ConsistentHash(_))
            .then(|| Ring::new(&cluster.endpoints));
        let budget = cluster.resilience.retry.as_ref().map(|r| {
            previous
                .and_then(|p| p.budget.clone())
                .filter(|b| b.same_settings(r.budget_ratio, r.budget_min_per_second))
                .unwrap_or_else(|| {
                    Arc::new(RetryBudget::new(r.budget_ratio, r.budget_min_per_second))
                })
        });
        let name = cluster.name.as_str();
        let cluster_metrics = ClusterMetrics {
            retries: metrics.retries.with_label_values(&[name]),
            budget_exhausted: metrics.retry_budget_exhausted.with_label_values(&[name]),
            ejections: metrics.ejections.with_label_values(&[name]),
            all: metrics.clone(),
        };
        let endpoints: Vec<Arc<Endpoint>> = cluster
            .endpoints
            .iter()
            .map(|addr| {
                endpoints
                    .get(addr)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Endpoint::new(*addr)))
            })
            .collect();
        if cluster.resilience.breaker.is_some() {
            for e in &endpoints {
                cluster_metrics.set_state(name, e);
            }
        }
        Self {
            endpoints,
            next: AtomicUsize::new(fastrand::usize(..usize::MAX / 2)),
            ring,
            pending: previous.map(|p| p.pending.clone()).unwrap_or_default(),
            budget,
            metrics: cluster_metrics,
            cluster,
        }
    }

    /// The endpoints, for carrying their state into the next snapshot.
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// Admits a request to the cluster, or fails fast when `maxPendingRequests` are already
    /// in flight. The guard releases the slot.
    pub fn admit(&self) -> Result<Pending, ProxyError> {
        let n = self.pending.fetch_add(1, Ordering::Relaxed) + 1;
        let guard = Pending(self.pending.clone());
        match &self.cluster.resilience.breaker {
            Some(b) if n > b.max_pending_requests as usize => Err(ProxyError::CircuitOpen),
            _ => Ok(guard),
        }
    }

    /// Picks an endpoint, avoiding those in `tried` when another exists; `key` is the request's
    /// hash for consistent hashing. Fails with 503 `no-healthy-endpoint` when the cluster has
    /// none, and `circuit-open` when every endpoint is ejected.
    pub fn pick(
        &self,
        tried: &[SocketAddr],
        key: Option<u64>,
    ) -> Result<&Arc<Endpoint>, ProxyError> {
        let now = Instant::now();
        let ok = |e: &Arc<Endpoint>| e.usable(now);
        let fresh = |e: &Arc<Endpoint>| !tried.contains(&e.addr);
        let n = self.endpoints.len();
        if n == 0 {
            return Err(ProxyError::NoHealthyEndpoint);
        }
        if let (Some(ring), Some(key)) = (&self.ring, key) {
            let mut usable = ring.walk(key).map(|i| &self.endpoints[i]).filter(|e| ok(e));
            let first = usable.next();
            return match first {
                Some(e) if fresh(e) => Ok(e),
                Some(e) => Ok(usable.find(|e| fresh(e)).unwrap_or(e)),
                None => Err(self.none_usable()),
            };
        }
        // The common case, without allocating: two random (or the next) endpoints, both fine.
        let fast = match self.cluster.balancer {
            Balancer::RoundRobin => {
                let e = &self.endpoints[self.next.fetch_add(1, Ordering::Relaxed) % n];
                (ok(e) && fresh(e)).then_some(e)
            }
            _ if n == 1 => {
                let e = &self.endpoints[0];
                (ok(e) && fresh(e)).then_some(e)
            }
            _ => {
                let a = fastrand::usize(..n);
                let mut b = fastrand::usize(..n - 1);
                if b >= a {
                    b += 1;
                }
                let (ea, eb) = (&self.endpoints[a], &self.endpoints[b]);
                (ok(ea) && ok(eb) && fresh(ea) && fresh(eb)).then(|| self.better(ea, eb))
            }
        };
        if let Some(e) = fast {
            return Ok(e);
        }
        // Some endpoints are out or already tried: choose among the rest.
        let usable: Vec<&Arc<Endpoint>> = self.endpoints.iter().filter(|e| ok(e)).collect();
        if usable.is_empty() {
            return Err(self.none_usable());
        }
        let untried: Vec<&Arc<Endpoint>> = usable.iter().copied().filter(|e| fresh(e)).collect();
        let choices = if untried.is_empty() { usable } else { untried };
        Ok(match (&self.cluster.balancer, choices.len()) {
            (_, 1) | (Balancer::RoundRobin, _) => choices[fastrand::usize(..choices.len())],
            (_, m) => {
                let a = fastrand::usize(..m);
                let b = (a + 1 + fastrand::usize(..m - 1)) % m;
                self.better(choices[a], choices[b])
            }
        })
    }

    fn better<'e>(&self, a: &'e Arc<Endpoint>, b: &'e Arc<Endpoint>) -> &'e Arc<Endpoint> {
        let a_wins = match self.cluster.balancer {
            Balancer::LeastRequest => a.in_flight() <= b.in_flight(),
            _ => a.cost() <= b.cost(),
        };
        if a_wins {
            a
        } else {
            b
        }
    }

    fn none_usable(&self) -> ProxyError {
        if self.endpoints.iter().any(|e| e.ejected()) {
            ProxyError::CircuitOpen
        } else {
            ProxyError::NoHealthyEndpoint
        }
    }

    /// Feeds the outcome of a try to `endpoint`'s circuit breaker. A failure is a connect
    /// error, a reset, a timeout or a 5xx response.
    pub fn record(&self, endpoint: &Endpoint, success: bool) {
        let Some(policy) = &self.cluster.resilience.breaker else {
            return;
        };
        let now = Instant::now();
        let changed = if success {
            crate::lock(&endpoint.breaker).success(policy, now)
        } else {
            // The ejection cap is only consulted when a failure could eject.
            let ejected = self.endpoints.iter().filter(|e| e.ejected()).count();
            let cap = (self.endpoints.len() * policy.max_ejection_percent as usize / 100).max(1);
            crate::lock(&endpoint.breaker).failure(policy, now, ejected < cap)
        };
        if let Some(state) = changed {
            endpoint.state.store(state.gauge() as u8, Ordering::Relaxed);
            if state == State::Open {
                self.metrics.ejections.inc();
                tracing::warn!(cluster = %self.cluster.name, endpoint = %endpoint.addr, "endpoint ejected");
            } else {
                tracing::info!(cluster = %self.cluster.name, endpoint = %endpoint.addr, ?state, "endpoint breaker state changed");
            }
            self.metrics.set_state(&self.cluster.name, endpoint);
        }
    }
}

impl ClusterMetrics {
    fn set_state(&self, cluster: &str, endpoint: &Endpoint) {
        self.all
            .endpoint_state
            .with_label_values(&[cluster, &endpoint.addr.to_string()])
            .set(i64::from(endpoint.state.load(Ordering::Relaxed)));
    }

    /// Counts a health check result.
    pub fn health_check(&self, cluster: &str, passed: bool) {
        self.all
            .health_checks
            .with_label_values(&[cluster, if passed { "pass" } else { "fail" }])
            .inc();
    }
}

/// A request counted against its cluster's `maxPendingRequests`.
#[derive(Debug)]
pub struct Pending(Arc<AtomicUsize>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
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
        slow.observe(Duration::from_millis(500));
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
}
