//! Dialing backends: TCP, or mesh mTLS to the endpoints the mesh [`Dialer`] knows as meshed
//! (checked against the identity the configuration expects there), with every open
//! connection counted in `weir_upstream_connections`.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::Uri;
use hyper_util::{
    client::legacy::connect::{Connected, Connection, HttpConnector},
    rt::TokioIo,
};
use prometheus::{IntCounter, IntGauge};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::client::TlsStream;

use crate::{
    metrics::Metrics,
    mtls::{Dialer, H2_ALPN},
};

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

/// Any error dialing can produce.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<Uri> for MeshConnector {
    type Response = TokioIo<Io>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

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
            let tcp = connecting.await?.into_inner();
            Ok(TokioIo::new(match meshed {
                None => Io::Plain(tcp),
                Some((dialer, expected, alpn)) => {
                    Io::Tls(Box::new(dialer.handshake(tcp, &expected, alpn).await?))
                }
            }))
        })
    }
}

/// A [`MeshConnector`] that counts connections in the metrics. hyper's client clones its
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

impl CountingConnector {
    /// Dials with `inner`, counting in `metrics`' upstream connection metrics.
    pub fn new(inner: MeshConnector, metrics: &Metrics) -> Self {
        Self {
            inner,
            metrics: Arc::new(ConnectMetrics {
                open: metrics.upstream_connections.clone(),
                ok: metrics.upstream_connects.with_label_values(&["ok"]),
                failed: metrics.upstream_connects.with_label_values(&["error"]),
            }),
        }
    }
}

impl tower::Service<Uri> for CountingConnector {
    type Response = TokioIo<Counted>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

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
                    Ok(TokioIo::new(Counted {
                        io: io.into_inner(),
                        gauge: metrics.open.clone(),
                    }))
                }
                Err(e) => {
                    metrics.failed.inc();
                    Err(e)
                }
            }
        })
    }
}

/// A backend connection: plaintext, or mesh mTLS. Weir's HTTP/1.1 client reads and writes it
/// as tokio I/O; hyper's clients (HTTP/2, health checks) get it wrapped in [`TokioIo`].
pub enum Io {
    /// Plaintext TCP.
    Plain(TcpStream),
    /// Mesh mTLS.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Io {
    fn tcp(&self) -> &TcpStream {
        match self {
            Io::Plain(tcp) => tcp,
            Io::Tls(tls) => tls.get_ref().0,
        }
    }
}

impl Connection for Io {
    fn connected(&self) -> Connected {
        let connected = self.tcp().connected();
        match self {
            Io::Tls(tls) if tls.get_ref().1.alpn_protocol() == Some(H2_ALPN) => {
                connected.negotiated_h2()
            }
            _ => connected,
        }
    }
}

/// Forwards a tokio I/O call to whichever connection it is.
macro_rules! either {
    ($self:ident, $io:ident => $call:expr) => {
        match $self.get_mut() {
            Io::Plain($io) => {
                let $io = Pin::new($io);
                $call
            }
            Io::Tls($io) => {
                let $io = Pin::new(&mut **$io);
                $call
            }
        }
    };
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        either!(self, io => io.poll_read(cx, buf))
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        either!(self, io => io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        either!(self, io => io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(io) => io.is_write_vectored(),
            Io::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        either!(self, io => io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        either!(self, io => io.poll_shutdown(cx))
    }
}

/// A backend connection that decrements the open-connection gauge when it closes.
pub struct Counted {
    io: Io,
    gauge: IntGauge,
}

impl Counted {
    /// Whether the backend has not closed the connection and sent nothing on it: what an
    /// idle keep-alive connection must be to be used again. Costs no system call unless the
    /// event loop saw the socket become readable.
    pub fn is_open(&self) -> bool {
        matches!(
            self.io.tcp().try_read(&mut [0; 1]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
        )
    }
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

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
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

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
