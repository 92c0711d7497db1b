//! One carried connection: its backend dialed (a second endpoint when the first refuses, a
//! reset when none can be had), bytes copied both ways and counted until both sides are done
//! or nothing moves for the idle timeout, then its metrics and access-log line.

use std::{
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
use weir_api::model::StreamRoute;
use weir_http::{server::Transport, upstream::PeerDialer};

use super::StreamSettings;
use crate::{
    access_log::{AccessLog, Addr, Entry, Millis, Stamp},
    balance::Pool,
    metrics::Metrics,
};

/// One carried connection, as chosen.
pub(super) struct Trip {
    /// When it was accepted (wall clock for the log, monotonic for its duration).
    pub(super) started: (SystemTime, Instant),
    pub(super) peer: SocketAddr,
    pub(super) sni: String,
    pub(super) route: Arc<StreamRoute>,
    pub(super) terminate: bool,
    /// Came to a TCP listener (no TLS at all).
    pub(super) tcp: bool,
    pub(super) cluster: Option<Arc<str>>,
    pub(super) pool: Option<Arc<Pool>>,
    /// Speaks a BackendTLSPolicy's TLS to the backend (after the gateway's own TLS ends).
    pub(super) dialer: Option<Arc<dyn PeerDialer>>,
}

/// The connection to the backend: TCP, or TLS over it for a Service with a BackendTLSPolicy.
trait Upstream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Upstream for T {}

/// Why a carried connection got no backend, as its metric and log line say.
enum Refused {
    /// No backend with weight, an unresolved one, or one without a usable endpoint.
    NoBackend,
    /// The backend is a meshed workload: its sidecar takes mTLS from meshed peers only, and
    /// TLSRoutes dial plain TCP.
    Meshed,
    /// The backend's Service has a BackendTLSPolicy, and the route passes the client's TLS
    /// through (a policy is for what the gateway opened), or its TLS failed: refused rather
    /// than carried in plaintext.
    BackendTls,
    /// Every endpoint tried refused or did not answer.
    ConnectError,
}

impl Refused {
    fn reason(&self) -> &'static str {
        match self {
            Refused::NoBackend => "no_backend",
            Refused::Meshed => "meshed_backend",
            Refused::BackendTls => "backend_tls",
            Refused::ConnectError => "connect_error",
        }
    }
}

/// Dials an endpoint of the trip's pool (a second one when the first refuses) and copies bytes
/// both ways until both sides are done, nothing moves for the idle timeout, or the
/// configuration no longer carries it (`revoked`); resets the client's connection when there
/// is no backend. Counts it, and logs a line for it.
pub(super) async fn carry(
    trip: Trip,
    mut client: Box<dyn Transport>,
    settings: StreamSettings,
    metrics: Metrics,
    log: AccessLog,
    revoked: super::Revoked,
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
                        tracing::debug!(route = %route, %error, "carried connection ended with an error");
                    }
                }
                () = idle => tracing::debug!(route = %route, "carried connection idle; closed"),
                () = revoked => tracing::info!(route = %route, "the configuration no longer carries this connection (its route or backend changed); closed"),
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
        protocol: match (trip.tcp, trip.terminate) {
            (true, _) => "tcp",
            (false, true) => "tls-terminate",
            (false, false) => "tls-passthrough",
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
async fn dial(trip: &Trip, timeout: Duration) -> Result<(Box<dyn Upstream>, SocketAddr), Refused> {
    let Some(pool) = trip.pool.as_ref().filter(|p| p.cluster.resolved) else {
        return Err(Refused::NoBackend);
    };
    // A BackendTLSPolicy's TLS, after the gateway's own TLS ended (re-encrypted); a passed
    // through connection is the client's TLS, which the gateway never opened.
    let tls = match (&pool.cluster.tls, &trip.dialer) {
        (None, _) => None,
        (Some(_), Some(dialer)) if trip.terminate => Some(dialer),
        (Some(_), _) => return Err(Refused::BackendTls),
    };
    let (tcp, endpoint) = dial_tcp(trip, pool, timeout).await?;
    let Some(dialer) = tls else {
        return Ok((Box::new(tcp), endpoint));
    };
    let expected = dialer
        .expected(&pool.cluster.name, endpoint)
        .ok_or(Refused::BackendTls)?;
    match tokio::time::timeout(timeout, dialer.handshake(tcp, &expected, b"")).await {
        Ok(Ok(tls)) => Ok((Box::new(tls), endpoint)),
        Ok(Err(error)) => {
            tracing::debug!(route = %trip.route.name, %endpoint, %error, "TLSRoute backend's TLS failed");
            Err(Refused::BackendTls)
        }
        Err(_) => Err(Refused::BackendTls),
    }
}

/// A TCP connection to an endpoint of `pool`: a second endpoint is tried when the first
/// refuses.
async fn dial_tcp(
    trip: &Trip,
    pool: &Pool,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), Refused> {
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
