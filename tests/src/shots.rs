//! Requests whose send and answer moments are recorded, for rate-limit tests that check bounds
//! without timed assertions. A gateway decides each request somewhere between the moment it
//! was sent and the moment its answer arrived, so the passed requests surely decided inside a
//! span are bounded by what the client saw: a slow machine only widens the spans, which
//! loosens the bound, never tightens it.
//!
//! ```ignore
//! let shots = volley(weir.addr, "shop.example.com", &[], 20).await;
//! assert_eq!(passed(&shots), 5);
//! for (d, n) in spans(&shots) { assert!(n <= bound(d)); }
//! ```

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;

use crate::{request, Reply};

/// One request and when it went and came back.
#[derive(Debug)]
pub struct Shot {
    /// Before it was sent.
    pub sent: Instant,
    /// After its answer was read.
    pub answered: Instant,
    /// The answer.
    pub reply: Reply,
}

impl Shot {
    /// Whether the gateway let it through.
    pub fn passed(&self) -> bool {
        self.reply.status == 200
    }
}

/// One GET of `/` as `host` with `headers`, timed.
pub async fn shot(addr: SocketAddr, host: &str, headers: &[(&str, &str)]) -> Shot {
    let sent = Instant::now();
    let reply = request(addr, host, "/", headers, Bytes::new(), "GET").await;
    Shot {
        sent,
        answered: Instant::now(),
        reply,
    }
}

/// `n` requests at once, each on its own connection.
pub async fn volley(addr: SocketAddr, host: &str, headers: &[(&str, &str)], n: usize) -> Vec<Shot> {
    let owned: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (host, owned) = (host.to_string(), owned.clone());
            tokio::spawn(async move {
                let headers: Vec<(&str, &str)> = owned
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                shot(addr, &host, &headers).await
            })
        })
        .collect();
    let mut shots = Vec::new();
    for t in tasks {
        shots.push(t.await.expect("request task"));
    }
    shots
}

/// `workers` loops per address, each sending one request after another for `length`.
pub async fn hammer(
    addrs: &[SocketAddr],
    host: &str,
    workers: usize,
    length: Duration,
) -> Vec<Shot> {
    let until = Instant::now() + length;
    let mut tasks = Vec::new();
    for addr in addrs.iter().copied() {
        for _ in 0..workers {
            let host = host.to_string();
            tasks.push(tokio::spawn(async move {
                let mut shots = Vec::new();
                while Instant::now() < until {
                    shots.push(shot(addr, &host, &[]).await);
                }
                shots
            }));
        }
    }
    let mut shots = Vec::new();
    for t in tasks {
        shots.extend(t.await.expect("request task"));
    }
    shots.sort_by_key(|s| s.sent);
    shots
}

/// How many passed.
pub fn passed(shots: &[Shot]) -> usize {
    shots.iter().filter(|s| s.passed()).count()
}

/// For every pair of passed requests `a`, `b`: the span from `a` sent to `b` answered, and how
/// many passed requests surely were decided inside it (sent after `a` was, answered before
/// `b` was).
pub fn spans(shots: &[Shot]) -> Vec<(Duration, usize)> {
    let passed: Vec<&Shot> = shots.iter().filter(|s| s.passed()).collect();
    let mut out = Vec::new();
    for a in &passed {
        for b in passed.iter().filter(|b| b.answered >= a.sent) {
            let inside = passed
                .iter()
                .filter(|s| s.sent >= a.sent && s.answered <= b.answered)
                .count();
            out.push((b.answered - a.sent, inside));
        }
    }
    out
}

/// Clients sending one request after another until stopped, for load that must outlast
/// something the test does meanwhile (a node killed, a failover).
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Shot>>>,
}

impl Load {
    /// `workers` clients per address, each sending GET `/` as `host` with `headers`.
    pub fn start(
        addrs: &[SocketAddr],
        host: &str,
        headers: &[(&str, &str)],
        workers: usize,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let owned: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut tasks = Vec::new();
        for addr in addrs.iter().copied() {
            for _ in 0..workers {
                let (host, owned, stop) = (host.to_string(), owned.clone(), stop.clone());
                tasks.push(tokio::spawn(async move {
                    let headers: Vec<(&str, &str)> = owned
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    let mut shots = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        shots.push(shot(addr, &host, &headers).await);
                    }
                    shots
                }));
            }
        }
        Self { stop, tasks }
    }

    /// Stops every client after its request in flight; all requests, by when they were sent.
    pub async fn stop(self) -> Vec<Shot> {
        self.stop.store(true, Ordering::Relaxed);
        let mut shots = Vec::new();
        for t in self.tasks {
            shots.extend(t.await.expect("request task"));
        }
        shots.sort_by_key(|s| s.sent);
        shots
    }
}

/// Each request's latency as the client saw it: the median, the 99th percentile and the
/// slowest.
pub fn latencies(shots: &[Shot]) -> [Duration; 3] {
    let mut all: Vec<Duration> = shots.iter().map(|s| s.answered - s.sent).collect();
    all.sort_unstable();
    let at = |q: f64| {
        let i = ((all.len() as f64 - 1.0) * q).round() as usize;
        all.get(i).copied().unwrap_or_default()
    };
    [at(0.5), at(0.99), at(1.0)]
}
