//! Choosing an endpoint: power of two choices over peak-EWMA latency (the Finagle/Linkerd
//! balancer: a slow or loaded endpoint gets less traffic, quickly), round robin, least
//! outstanding requests, or a consistent-hash ring.
//!
//! Endpoint state (in-flight count, latency estimate, breaker, health) is keyed by address and
//! carried across config reloads, so a reload does not reset what the balancer has learned.
//! Endpoints that the circuit breaker ejected or health checks failed are skipped; a
//! half-open endpoint takes one request at a time.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use prometheus::IntCounter;
use weir_api::model::{
    Balancer, Cluster, Protocol, WeightedBackend, DEFAULT_BUDGET_MIN_PER_SECOND,
    DEFAULT_BUDGET_RATIO,
};

use crate::{
    metrics::Metrics,
    resilience::{breaker::State, budget::RetryBudget, ring::Ring},
};
use weir_http::error::ProxyError;

mod endpoint;
pub mod session;

pub use endpoint::{Endpoint, InFlight};

/// A cluster as the data plane runs it: its endpoints with state, the algorithm, and the
/// resilience state of its TrafficPolicy.
#[derive(Debug)]
pub struct Pool {
    /// The compiled cluster.
    pub cluster: Cluster,
    /// Its name, shared (the access log names it on every request).
    pub name: Arc<str>,
    endpoints: Vec<Arc<Endpoint>>,
    next: AtomicUsize,
    ring: Option<Ring>,
    /// Requests in flight to the cluster (for `maxPendingRequests`).
    pending: Arc<AtomicUsize>,
    /// The retry budget (its TrafficPolicy's, else the default one, which routes' retries
    /// spend), carried across reloads while its settings stay the same.
    pub budget: Arc<RetryBudget>,
    /// This cluster's series of the shared metrics.
    pub metrics: ClusterMetrics,
}

/// Picks a cluster by weight: the Gateway API's weighted backendRefs. `None` when no backend
/// has weight (an HTTP route answers 500, a TLSRoute closes the connection).
pub fn weighted(backends: &[WeightedBackend]) -> Option<&WeightedBackend> {
    let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut n = fastrand::u64(..total);
    for b in backends {
        if n < u64::from(b.weight) {
            return Some(b);
        }
        n -= u64::from(b.weight);
    }
    None
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
        let (ratio, min) = cluster
            .resilience
            .retry
            .as_ref()
            .map_or((DEFAULT_BUDGET_RATIO, DEFAULT_BUDGET_MIN_PER_SECOND), |r| {
                (r.budget_ratio, r.budget_min_per_second)
            });
        let budget = previous
            .map(|p| p.budget.clone())
            .filter(|b| b.same_settings(ratio, min))
            .unwrap_or_else(|| Arc::new(RetryBudget::new(ratio, min)));
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
            name: Arc::from(name),
            cluster,
        }
    }

    /// The endpoints, for carrying their state into the next snapshot.
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// The usable endpoint a session ticket names ([`session::endpoint_id`]), if there is one.
    pub fn sticky(&self, id: u64) -> Option<&Arc<Endpoint>> {
        self.endpoints
            .iter()
            .find(|e| e.session == id && e.usable())
    }

    /// The endpoint at `addr`, if it is one of this cluster's.
    pub fn endpoint(&self, addr: SocketAddr) -> Option<&Arc<Endpoint>> {
        self.endpoints.iter().find(|e| e.addr == addr)
    }

    /// Whether its policy may send a request more than once (then the body must be kept).
    pub fn retries(&self) -> bool {
        let retry = self.cluster.resilience.retry.as_ref();
        retry.is_some_and(|r| r.attempts > 1)
    }

    /// The HTTP version its backends speak.
    pub fn version(&self) -> http::Version {
        match self.cluster.protocol {
            Protocol::Http1 => http::Version::HTTP_11,
            Protocol::H2c => http::Version::HTTP_2,
        }
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
        let ok = |e: &Arc<Endpoint>| e.usable();
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
        let changed = endpoint.record(policy, success, || {
            let ejected = self.endpoints.iter().filter(|e| e.ejected()).count();
            ejected < (self.endpoints.len() * policy.max_ejection_percent as usize / 100).max(1)
        });
        if let Some(state) = changed {
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
            .set(endpoint.state_gauge());
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
mod tests;
