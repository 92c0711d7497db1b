//! TLSRoutes on the TLS listener: a connection whose SNI names a route is carried to one of the
//! route's backends byte for byte, passed through unopened (`Passthrough`) or after the
//! gateway's own TLS ends (`Terminate`).
//!
//! Names are looked up as the HTTP router looks up hosts: the exact name, then the most
//! specific wildcard, then a route for any name (which alone takes a ClientHello without SNI).
//! Two routes for one name: the older object serves, then `namespace/name`. A name the gateway
//! also serves as HTTP stays HTTP's unless the TLSRoute names it more specifically (an exact
//! name over an HTTP route's wildcard): a TLSRoute cannot take a name from the HTTPS routes
//! and Ingresses already serving it ([`crate::router::Router::stream`]).
//!
//! A route whose backend cannot be had (none with weight, unresolved, no endpoint, every
//! endpoint refusing) resets the connection, as the Gateway API asks: the client sees it
//! refused, never another backend.

use std::{
    collections::HashMap,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use weir_api::model::{HostMatch, StreamRoute};
use weir_http::server::{Carry, Streams, Transport};

use crate::{
    access_log::{AccessLog, Addr, Entry, Millis, Stamp},
    balance::{weighted, Pool},
    config::ConfigStore,
    metrics::Metrics,
};

/// The index over a snapshot's TLSRoutes, one for each way a listener takes them.
#[derive(Default)]
pub struct Index {
    passthrough: Names,
    terminate: Names,
}

#[derive(Default)]
struct Names {
    exact: HashMap<String, Arc<StreamRoute>>,
    /// `(suffix, route)`, longest suffix first.
    wildcard: Vec<(String, Arc<StreamRoute>)>,
    any: Option<Arc<StreamRoute>>,
}

impl Index {
    /// Indexes `routes`.
    pub fn new(routes: &[Arc<StreamRoute>]) -> Self {
        let mut sorted: Vec<&Arc<StreamRoute>> = routes.iter().collect();
        // Oldest first, so that the first to claim a name keeps it.
        sorted.sort_by(|a, b| a.order.cmp(&b.order));
        let mut index = Index::default();
        for route in sorted {
            let names = if route.terminate {
                &mut index.terminate
            } else {
                &mut index.passthrough
            };
            for host in &route.hosts {
                match host {
                    HostMatch::Exact(h) => {
                        names.exact.entry(h.clone()).or_insert(route.clone());
                    }
                    HostMatch::Wildcard(suffix) => {
                        if !names.wildcard.iter().any(|(s, _)| s == suffix) {
                            names.wildcard.push((suffix.clone(), route.clone()));
                        }
                    }
                    HostMatch::Any => {
                        names.any.get_or_insert(route.clone());
                    }
                }
            }
        }
        for names in [&mut index.passthrough, &mut index.terminate] {
            names
                .wildcard
                .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        }
        index
    }

    /// Whether it holds no route.
    pub fn is_empty(&self) -> bool {
        !self.passes_through() && !self.terminates()
    }

    /// Whether some route passes connections through.
    pub fn passes_through(&self) -> bool {
        let p = &self.passthrough;
        !p.exact.is_empty() || !p.wildcard.is_empty() || p.any.is_some()
    }

    /// Whether some route carries terminated connections.
    pub fn terminates(&self) -> bool {
        let t = &self.terminate;
        !t.exact.is_empty() || !t.wildcard.is_empty() || t.any.is_some()
    }

    /// The route for an SNI name (lowercase; `None`: the ClientHello had none), with how
    /// specifically it names it.
    pub fn route(&self, sni: Option<&str>, terminate: bool) -> Option<(&Arc<StreamRoute>, Rank)> {
        let names = if terminate {
            &self.terminate
        } else {
            &self.passthrough
        };
        let any = names.any.as_ref().map(|r| (r, Rank::Any));
        let Some(sni) = sni else {
            return any;
        };
        if let Some(route) = names.exact.get(sni) {
            return Some((route, Rank::Exact));
        }
        names
            .wildcard
            .iter()
            .find(|(suffix, _)| sni.len() > suffix.len() && sni.ends_with(suffix.as_str()))
            .map(|(suffix, route)| (route, Rank::Wildcard(suffix.len())))
            .or(any)
    }
}

/// How specifically a host match names a host: an exact name, then a wildcard by the length
/// of its suffix, then any host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rank {
    /// A route for any host.
    Any,
    /// `*.` and the suffix's length.
    Wildcard(usize),
    /// The name itself.
    Exact,
}

/// The TLS listener's TLSRoutes, from the configuration being served.
pub struct StreamRouting<R> {
    store: Arc<ConfigStore<R>>,
    settings: StreamSettings,
    metrics: Metrics,
    log: AccessLog,
}

/// How carried connections are dialed and kept.
#[derive(Clone, Copy, Debug)]
pub struct StreamSettings {
    /// A backend must accept within this time.
    pub connect_timeout: Duration,
    /// A connection that carries no byte either way for this long is closed (Envoy's TCP
    /// proxy default: an hour).
    pub idle_timeout: Duration,
}

impl<R> StreamRouting<R> {
    /// Routes by `store`'s configuration, logging each carried connection to `log`.
    pub fn new(
        store: Arc<ConfigStore<R>>,
        settings: StreamSettings,
        metrics: Metrics,
        log: AccessLog,
    ) -> Self {
        Self {
            store,
            settings,
            metrics,
            log,
        }
    }
}

impl<R: Send + Sync + 'static> StreamRouting<R> {
    fn carry(&self, sni: Option<&str>, terminate: bool, peer: SocketAddr) -> Option<Carry> {
        let active = self.store.load();
        let route = active.router.stream(sni, terminate)?.clone();
        let cluster = weighted(&route.backends).map(|b| b.cluster.as_str());
        let trip = Trip {
            started: (SystemTime::now(), Instant::now()),
            peer,
            sni: sni.map(str::to_string).unwrap_or_default(),
            pool: cluster.and_then(|c| active.pools.get(c).cloned()),
            cluster: cluster.map(Arc::from),
            route,
            terminate,
        };
        let (settings, metrics, log) = (self.settings, self.metrics.clone(), self.log.clone());
        Some(Box::new(move |client| {
            Box::pin(carry(trip, client, settings, metrics, log))
        }))
    }
}

impl<R> std::fmt::Debug for StreamRouting<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamRouting")
    }
}

impl<R: Send + Sync + 'static> Streams for StreamRouting<R> {
    fn passes_through(&self) -> bool {
        self.store.load().router.passes_through()
    }

    fn passthrough(&self, sni: Option<&str>, peer: SocketAddr) -> Option<Carry> {
        self.carry(sni, false, peer)
    }

    fn terminated(&self, sni: Option<&str>, peer: SocketAddr) -> Option<Carry> {
        self.carry(sni, true, peer)
    }
}

/// One carried connection, as chosen.
struct Trip {
    /// When it was accepted (wall clock for the log, monotonic for its duration).
    started: (SystemTime, Instant),
    peer: SocketAddr,
    sni: String,
    route: Arc<StreamRoute>,
    terminate: bool,
    cluster: Option<Arc<str>>,
    pool: Option<Arc<Pool>>,
}

/// Why a carried connection got no backend, as its metric and log line say.
enum Refused {
    /// No backend with weight, an unresolved one, or one without a usable endpoint.
    NoBackend,
    /// The backend is a meshed workload: its sidecar takes mTLS from meshed peers only, and
    /// TLSRoutes dial plain TCP.
    Meshed,
    /// Every endpoint tried refused or did not answer.
    ConnectError,
}

impl Refused {
    fn reason(&self) -> &'static str {
        match self {
            Refused::NoBackend => "no_backend",
            Refused::Meshed => "meshed_backend",
            Refused::ConnectError => "connect_error",
        }
    }
}

/// Dials an endpoint of the trip's pool (a second one when the first refuses) and copies bytes
/// both ways until both sides are done, or nothing moves for the idle timeout; resets the
/// client's connection when there is no backend. Counts it, and logs a line for it.
async fn carry(
    trip: Trip,
    mut client: Box<dyn Transport>,
    settings: StreamSettings,
    metrics: Metrics,
    log: AccessLog,
) {
    let route = trip.route.name.clone();
    // Counted as soon as it is known, so a long connection shows while it lasts.
    let count = |result: &str| {
        metrics
            .stream_connections
            .with_label_values(&[&route, result])
            .inc();
    };
    let outcome = match dial(&trip, settings.connect_timeout).await {
        Err(refused) => {
            client.reset();
            count(refused.reason());
            Err(refused)
        }
        Ok((mut upstream, endpoint)) => {
            count("carried");
            let moved = Moved::new();
            let mut counted = Counted {
                inner: &mut client,
                moved: &moved,
            };
            let idle = idle(&moved, settings.idle_timeout);
            tokio::select! {
                result = tokio::io::copy_bidirectional(&mut counted, &mut upstream) => {
                    if let Err(error) = result {
                        tracing::debug!(route = %route, %error, "TLSRoute connection ended with an error");
                    }
                }
                () = idle => tracing::debug!(route = %route, "TLSRoute connection idle; closed"),
            }
            Ok((endpoint, moved))
        }
    };
    let (endpoint, received, sent) = match &outcome {
        Ok((endpoint, moved)) => {
            let (received, sent) = moved.totals();
            for (direction, n) in [("received", received), ("sent", sent)] {
                metrics
                    .stream_bytes
                    .with_label_values(&[&route, direction])
                    .inc_by(n);
            }
            (Some(*endpoint), received, sent)
        }
        Err(_) => (None, 0, 0),
    };
    log.log(&Entry {
        time: Stamp::of(trip.started.0),
        client: Addr(trip.peer),
        protocol: if trip.terminate {
            "tls-terminate"
        } else {
            "tls-passthrough"
        },
        method: "-",
        host: &trip.sni,
        path: "",
        status: 0,
        route: Some(&route),
        backend: trip.cluster.as_deref(),
        endpoint: endpoint.map(Addr),
        error: outcome.as_ref().err().map(Refused::reason),
        attempts: u32::from(endpoint.is_some()),
        duration_ms: Millis(trip.started.1.elapsed()),
        upstream_ms: None,
        bytes_in: received,
        bytes_out: sent,
        request_id: "",
        trace_id: "",
        user_agent: None,
        user: None,
    });
}

/// A connection to an endpoint of the trip's backend: a second endpoint is tried when the
/// first refuses.
async fn dial(trip: &Trip, timeout: Duration) -> Result<(TcpStream, SocketAddr), Refused> {
    let Some(pool) = trip.pool.as_ref().filter(|p| p.cluster.resolved) else {
        return Err(Refused::NoBackend);
    };
    let mut tried = Vec::new();
    while tried.len() < 2 {
        let Ok(endpoint) = pool.pick(&tried, None) else {
            break;
        };
        if tried.contains(&endpoint.addr) {
            break;
        }
        if pool.cluster.identities.contains_key(&endpoint.addr) {
            return Err(Refused::Meshed);
        }
        tried.push(endpoint.addr);
        let route = &trip.route.name;
        match tokio::time::timeout(timeout, TcpStream::connect(endpoint.addr)).await {
            Ok(Ok(stream)) => {
                pool.record(endpoint, true);
                let _ = stream.set_nodelay(true);
                return Ok((stream, endpoint.addr));
            }
            Ok(Err(error)) => {
                pool.record(endpoint, false);
                tracing::debug!(route = %route, endpoint = %endpoint.addr, %error, "TLSRoute backend refused");
            }
            Err(_) => {
                pool.record(endpoint, false);
                tracing::debug!(route = %route, endpoint = %endpoint.addr, "TLSRoute backend did not answer in time");
            }
        }
    }
    Err(if tried.is_empty() {
        Refused::NoBackend
    } else {
        Refused::ConnectError
    })
}

/// Bytes a carried connection moved each way, and when it last moved any.
struct Moved {
    received: AtomicU64,
    sent: AtomicU64,
    /// Milliseconds since `since`, at the last byte either way.
    last: AtomicU64,
    since: Instant,
}

impl Moved {
    fn new() -> Self {
        Self {
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            last: AtomicU64::new(0),
            since: Instant::now(),
        }
    }

    fn moved(&self, counter: &AtomicU64, n: usize) {
        if n > 0 {
            counter.fetch_add(n as u64, Ordering::Relaxed);
            let now = self.since.elapsed().as_millis() as u64;
            self.last.store(now, Ordering::Relaxed);
        }
    }

    fn totals(&self) -> (u64, u64) {
        (
            self.received.load(Ordering::Relaxed),
            self.sent.load(Ordering::Relaxed),
        )
    }

    /// How long since a byte last moved.
    fn quiet(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.since.elapsed().saturating_sub(last)
    }
}

/// Resolves once nothing has moved for `timeout`.
async fn idle(moved: &Moved, timeout: Duration) {
    loop {
        let quiet = moved.quiet();
        if quiet >= timeout {
            return;
        }
        tokio::time::sleep(timeout - quiet).await;
    }
}

/// The client's side of a carried connection, counting what it reads (received) and writes
/// (sent).
struct Counted<'a> {
    inner: &'a mut Box<dyn Transport>,
    moved: &'a Moved,
}

impl AsyncRead for Counted<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut **self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.moved.moved(&self.moved.received, n);
        polled
    }
}

impl AsyncWrite for Counted<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut **self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = polled {
            self.moved.moved(&self.moved.sent, n);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut **self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut **self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_api::model::RouteOrder;

    fn route(name: &str, created: &str, hosts: &[HostMatch], terminate: bool) -> Arc<StreamRoute> {
        Arc::new(StreamRoute {
            name: name.into(),
            hosts: hosts.to_vec(),
            terminate,
            order: RouteOrder {
                created: created.into(),
                object: name.into(),
                rule: 0,
                matcher: 0,
            },
            backends: Vec::new(),
        })
    }

    #[test]
    fn names_are_looked_up_exact_then_wildcard_then_any_and_the_older_route_keeps_a_name() {
        let exact = |h: &str| HostMatch::Exact(h.into());
        let routes = [
            route(
                "newer",
                "2026-02-01T00:00:00Z",
                &[exact("abc.example.com")],
                false,
            ),
            route(
                "older",
                "2026-01-01T00:00:00Z",
                &[exact("abc.example.com")],
                false,
            ),
            route(
                "wild",
                "",
                &[HostMatch::Wildcard(".example.com".into())],
                false,
            ),
            route(
                "deep",
                "",
                &[HostMatch::Wildcard(".b.example.com".into())],
                false,
            ),
            route("ended", "", &[exact("abc.example.com")], true),
        ];
        let index = Index::new(&routes);
        let name = |sni: Option<&str>, terminate| {
            index.route(sni, terminate).map(|(r, _)| r.name.to_string())
        };
        assert_eq!(
            name(Some("abc.example.com"), false).as_deref(),
            Some("older")
        );
        assert_eq!(name(Some("x.example.com"), false).as_deref(), Some("wild"));
        assert_eq!(
            name(Some("a.b.example.com"), false).as_deref(),
            Some("deep")
        );
        assert_eq!(
            name(Some("example.com"), false),
            None,
            "a wildcard needs a label"
        );
        assert_eq!(name(None, false), None, "no SNI, no route for any name");
        assert_eq!(
            name(Some("abc.example.com"), true).as_deref(),
            Some("ended")
        );
        assert!(index.passes_through() && index.terminates());
        assert!(!Index::new(&[]).passes_through());
    }
}
