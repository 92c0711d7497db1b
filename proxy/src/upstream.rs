//! Connections to backends: pooled keep-alive HTTP/1.1 clients and HTTP/2 (h2c, prior
//! knowledge) clients, with every open connection counted in `weir_upstream_connections`.
//! With a mesh [`Dialer`], a connection to a meshed endpoint is mTLS (HTTP/2 or HTTP/1.1 by
//! ALPN, as the cluster speaks), checked against the identity the configuration expects there;
//! other endpoints stay plaintext.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::{
    client::legacy::{
        connect::{Connected, Connection, HttpConnector},
        Client,
    },
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use prometheus::{IntCounter, IntGauge};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use weir_api::model::Protocol;

use crate::{
    body::{Body, TooLarge},
    error::ProxyError,
    metrics::Metrics,
    mtls::{Dialer, H2_ALPN, HTTP1_ALPN},
};

/// The two client pools a proxy keeps.
#[derive(Clone)]
pub struct Upstream {
    http1: Client<CountingConnector, Body>,
    h2c: Client<CountingConnector, Body>,
}

/// How backend connections behave.
#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    /// Give up connecting after this long (then 502).
    pub connect_timeout: Duration,
    /// Close pooled connections idle this long.
    pub idle_timeout: Duration,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

impl Upstream {
    /// Builds both pools, plaintext only.
    pub fn new(settings: &UpstreamSettings, metrics: &Metrics) -> Self {
        Self::build(settings, metrics, None)
    }

    /// Builds both pools; connections to meshed endpoints go through `dialer`.
    pub fn with_mesh(settings: &UpstreamSettings, metrics: &Metrics, dialer: Arc<Dialer>) -> Self {
        Self::build(settings, metrics, Some(dialer))
    }

    fn build(settings: &UpstreamSettings, metrics: &Metrics, dialer: Option<Arc<Dialer>>) -> Self {
        let metrics = Arc::new(ConnectMetrics {
            open: metrics.upstream_connections.clone(),
            ok: metrics.upstream_connects.with_label_values(&["ok"]),
            failed: metrics.upstream_connects.with_label_values(&["error"]),
        });
        let counting = |alpn| CountingConnector {
            inner: MeshConnector::new(settings.connect_timeout, dialer.clone(), alpn),
            metrics: metrics.clone(),
        };
        let http1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(settings.idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(counting(HTTP1_ALPN));
        let h2c = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .pool_idle_timeout(settings.idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_keep_alive_interval(Duration::from_secs(30))
            .build(counting(H2_ALPN));
        Self { http1, h2c }
    }

    /// The pool for a protocol.
    pub fn client(&self, protocol: Protocol) -> &Client<CountingConnector, Body> {
        match protocol {
            Protocol::Http1 => &self.http1,
            Protocol::H2c => &self.h2c,
        }
    }
}

/// Dials backends: TCP, then mTLS (offering its ALPN) to the endpoints the mesh dialer knows
/// as meshed, checked against the identity expected there. The pools use it through
/// [`CountingConnector`]; health checks use it directly, so they reach meshed endpoints the
/// way requests do.
#[derive(Clone)]
pub struct MeshConnector {
    inner: HttpConnector,
    mesh: Option<(Arc<Dialer>, &'static [u8])>,
}

impl MeshConnector {
    /// TCP with `connect_timeout` (and no Nagle); mTLS offering `alpn` to meshed endpoints
    /// when `dialer` is given.
    pub fn new(
        connect_timeout: Duration,
        dialer: Option<Arc<Dialer>>,
        alpn: &'static [u8],
    ) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        http.enforce_http(true);
        Self {
            inner: http,
            mesh: dialer.map(|d| (d, alpn)),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<Uri> for MeshConnector {
    type Response = Io;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Io, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        // Endpoints are IP:port authorities; the dialer knows which of them are meshed.
        let meshed = self.mesh.as_ref().and_then(|(dialer, alpn)| {
            let addr = uri.authority()?.as_str().parse().ok()?;
            Some((dialer.clone(), dialer.expected(addr)?, *alpn))
        });
        let connecting = self.inner.call(uri);
        Box::pin(async move {
            let io = connecting.await?;
            Ok(match meshed {
                None => Io::Plain(io),
                Some((dialer, expected, alpn)) => {
                    let tls = dialer.handshake(io.into_inner(), &expected, alpn).await?;
                    Io::Tls(Box::new(TokioIo::new(tls)))
                }
            })
        })
    }
}

/// A [`MeshConnector`] that counts connections in the metrics. The client clones its
/// connector for every request (even when a pooled connection is used), so the handles sit
/// behind one `Arc` rather than cloning every metric.
#[derive(Clone)]
pub struct CountingConnector {
    inner: MeshConnector,
    metrics: Arc<ConnectMetrics>,
}

struct ConnectMetrics {
    open: IntGauge,
    ok: IntCounter,
    failed: IntCounter,
}

impl tower::Service<Uri> for CountingConnector {
    type Response = Counted;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Counted, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            match connecting.await {
                Ok(io) => {
                    metrics.ok.inc();
                    metrics.open.inc();
                    Ok(Counted {
                        io,
                        gauge: metrics.open.clone(),
                    })
                }
                Err(e) => {
                    metrics.failed.inc();
                    Err(e)
                }
            }
        })
    }
}

/// A backend connection: plaintext, or mesh mTLS.
pub enum Io {
    /// Plaintext TCP.
    Plain(TokioIo<TcpStream>),
    /// Mesh mTLS.
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Connection for Io {
    fn connected(&self) -> Connected {
        match self {
            Io::Plain(io) => io.connected(),
            Io::Tls(io) => {
                let (tcp, tls) = io.inner().get_ref();
                let connected = tcp.connected();
                if tls.alpn_protocol() == Some(H2_ALPN) {
                    connected.negotiated_h2()
                } else {
                    connected
                }
            }
        }
    }
}

/// Forwards a hyper I/O call to whichever connection it is.
macro_rules! either {
    ($self:ident, $io:ident => $call:expr) => {
        match $self.get_mut() {
            Io::Plain($io) => $call,
            Io::Tls($io) => $call,
        }
    };
}

impl Read for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        either!(self, io => Pin::new(io).poll_read(cx, buf))
    }
}

impl Write for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        either!(self, io => Pin::new(io).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        either!(self, io => Pin::new(io).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        either!(self, io => Pin::new(io).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        either!(self, io => Pin::new(io).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(io) => io.is_write_vectored(),
            Io::Tls(io) => io.is_write_vectored(),
        }
    }
}

/// A backend connection that decrements the open-connection gauge when it closes.
pub struct Counted {
    io: Io,
    gauge: IntGauge,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl Connection for Counted {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl Read for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl Write for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Maps a client error to what the user sees.
pub fn classify(e: &hyper_util::client::legacy::Error) -> ProxyError {
    if e.is_connect() {
        return ProxyError::ConnectFailed;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = source {
        if err.is::<TooLarge>() {
            return ProxyError::BodyTooLarge;
        }
        source = err.source();
    }
    ProxyError::BackendReset
}
