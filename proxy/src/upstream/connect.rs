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
use hyper::rt::{Read, ReadBufCursor, Write};
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

impl Io {
    fn tcp(&self) -> &TcpStream {
        match self {
            Io::Plain(io) => io.inner(),
            Io::Tls(io) => io.inner().get_ref().0,
        }
    }
}

/// Forwards a tokio I/O call to whichever connection it is.
macro_rules! either_tokio {
    ($self:ident, $io:ident => $call:expr) => {
        match &mut $self.get_mut().io {
            Io::Plain($io) => {
                let $io = Pin::new($io.inner_mut());
                $call
            }
            Io::Tls($io) => {
                let $io = Pin::new($io.inner_mut());
                $call
            }
        }
    };
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

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        either_tokio!(self, io => io.poll_read(cx, buf))
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        either_tokio!(self, io => io.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        either_tokio!(self, io => io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        either_tokio!(self, io => io.poll_shutdown(cx))
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
