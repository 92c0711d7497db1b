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
