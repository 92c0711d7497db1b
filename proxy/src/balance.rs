//! Choosing an endpoint: power of two choices over peak-EWMA latency (the Finagle/Linkerd
//! balancer: a slow or loaded endpoint gets less traffic, quickly), or plain round robin.
//!
//! Endpoint state (in-flight count, latency estimate) is keyed by address and carried across
//! config reloads, so a reload does not reset what the balancer has learned.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use weir_api::model::{Balancer, Cluster};

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
    in_flight: AtomicUsize,
    ewma: Mutex<Ewma>,
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
            in_flight: AtomicUsize::new(0),
            ewma: Mutex::new(Ewma {
                nanos: DEFAULT_RTT.as_nanos() as f64,
                updated: Instant::now(),
            }),
        }
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
        // A poisoned lock only means another request panicked mid-update; the value is a
        // plain number and still usable.
        let mut e = self.ewma.lock().unwrap_or_else(|p| p.into_inner());
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
        let ewma = self.ewma.lock().unwrap_or_else(|p| p.into_inner()).nanos;
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

/// A cluster as the data plane runs it: its endpoints with state, and the algorithm.
#[derive(Debug)]
pub struct Pool {
    /// The compiled cluster.
    pub cluster: Cluster,
    endpoints: Vec<Arc<Endpoint>>,
    next: AtomicUsize,
}

impl Pool {
    /// Builds a pool, reusing endpoint state from `previous` (keyed by address).
    pub fn new(cluster: Cluster, previous: &HashMap<SocketAddr, Arc<Endpoint>>) -> Self {
        let endpoints = cluster
            .endpoints
            .iter()
            .map(|addr| {
                previous
                    .get(addr)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Endpoint::new(*addr)))
            })
            .collect();
        Self {
            cluster,
            endpoints,
            next: AtomicUsize::new(fastrand::usize(..usize::MAX / 2)),
        }
    }

    /// The endpoints, for carrying their state into the next snapshot.
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// Picks an endpoint, avoiding `exclude` when another exists. `None` when there are none.
    pub fn pick(&self, exclude: Option<SocketAddr>) -> Option<&Arc<Endpoint>> {
        let n = self.endpoints.len();
        match n {
            0 => None,
            1 => self.endpoints.first(),
            _ => {
                let candidate = match self.cluster.balancer {
                    Balancer::RoundRobin => {
                        &self.endpoints[self.next.fetch_add(1, Ordering::Relaxed) % n]
                    }
                    Balancer::PeakEwma => {
                        let a = fastrand::usize(..n);
                        let mut b = fastrand::usize(..n - 1);
                        if b >= a {
                            b += 1;
                        }
                        let (ea, eb) = (&self.endpoints[a], &self.endpoints[b]);
                        if ea.cost() <= eb.cost() {
                            ea
                        } else {
                            eb
                        }
                    }
                };
                if Some(candidate.addr) == exclude {
                    self.endpoints.iter().find(|e| Some(e.addr) != exclude)
                } else {
                    Some(candidate)
                }
            }
        }
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
        Pool::new(cluster, &HashMap::new())
    }

    #[test]
    fn round_robin_visits_every_endpoint_evenly() {
        let p = pool(4, Balancer::RoundRobin);
        let mut counts = HashMap::new();
        for _ in 0..400 {
            *counts.entry(p.pick(None).unwrap().addr).or_insert(0) += 1;
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
            if p.pick(None).unwrap().addr == slow.addr {
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
        assert_ne!(p.pick(None).unwrap().addr, busy.addr);
    }

    #[test]
    fn exclusion_and_empty() {
        let p = pool(2, Balancer::RoundRobin);
        let first = p.endpoints[0].addr;
        for _ in 0..10 {
            assert_ne!(p.pick(Some(first)).unwrap().addr, first);
        }
        assert!(pool(0, Balancer::PeakEwma).pick(None).is_none());
    }

    #[test]
    fn state_survives_a_rebuild() {
        let p = pool(2, Balancer::PeakEwma);
        let _g = p.endpoints[0].start();
        let previous = p.endpoints.iter().map(|e| (e.addr, e.clone())).collect();
        let again = Pool::new(p.cluster.clone(), &previous);
        assert_eq!(again.endpoints[0].in_flight(), 1);
    }
}
