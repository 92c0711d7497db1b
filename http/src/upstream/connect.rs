//! Dialing backends: TCP, or mesh mTLS to meshed endpoints (checked against the identity the
//! endpoint's cluster expects there: [`Expect`]), with every open connection counted in
//! `weir_upstream_connections`. What the mesh adds is behind [`PeerDialer`]: this layer knows
//! that a connection may have to prove an identity, not how.

use std::{
    future::Future,
    net::SocketAddr,
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

use crate::{metrics::HttpMetrics, H2_ALPN};

/// A handshake in progress.
pub type Handshake<'a> =
    Pin<Box<dyn Future<Output = std::io::Result<TlsStream<TcpStream>>> + Send + 'a>>;

/// A dialer, the identity to prove and the ALPN to offer: what makes a connection mTLS.
type Meshed = (Arc<dyn PeerDialer>, Arc<str>, &'static [u8]);

/// The mesh's part in dialing: whom an endpoint of a cluster must prove, and the mTLS
/// handshake that makes it prove it (`weir_mesh::mtls::Dialer`).
pub trait PeerDialer: Send + Sync + 'static {
    /// The identity the endpoint at `addr` of `cluster` must prove, when it is meshed there.
    fn expected(&self, cluster: &str, addr: SocketAddr) -> Option<Arc<str>>;
    /// The handshake over `tcp` with a peer that must prove `expected`, offering `alpn`.
    fn handshake<'a>(
        &'a self,
        tcp: TcpStream,
        expected: &'a Arc<str>,
        alpn: &'static [u8],
    ) -> Handshake<'a>;
}

/// Dials backends: TCP, then mTLS (offering its ALPN) to meshed endpoints, checked against
/// the identity [`Expect`] names. The pools use it through [`CountingConnector`]; health
/// checks use it directly, so they reach meshed endpoints the way requests do.
#[derive(Clone)]
pub struct MeshConnector {
    inner: HttpConnector,
    mesh: Option<(Arc<dyn PeerDialer>, &'static [u8])>,
    expect: Expect,
}

/// Whom a connection must prove. Expected identities belong to a cluster, never to an address
/// alone: another namespace's EndpointSlice may name the same address with an identity of its
/// own, and must not change how this cluster's endpoints are verified.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Expect {
    /// Nobody: plaintext.
    #[default]
    Nothing,
    /// This SPIFFE ID.
    Peer(Arc<str>),
    /// Whoever the dialer expects at the dialed address in this cluster (plaintext when the
    /// endpoint is not meshed there).
    Cluster(Arc<str>),
}

/// The identity a request's endpoint must prove, carried in the request's extensions from the
/// forward path (which knows the cluster) to the client (which dials).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected(pub Arc<str>);

impl MeshConnector {
    /// TCP with `connect_timeout` (and no Nagle); mTLS offering `alpn` to meshed endpoints
    /// when `dialer` is given.
    pub fn new(
        connect_timeout: Duration,
        dialer: Option<Arc<dyn PeerDialer>>,
        alpn: &'static [u8],
    ) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        http.enforce_http(true);
        Self {
            inner: http,
            mesh: dialer.map(|d| (d, alpn)),
            expect: Expect::Nothing,
        }
    }

    /// The same connector, its connections proving `expect`.
    pub fn expecting(&self, expect: Expect) -> Self {
        Self {
            expect,
            ..self.clone()
        }
    }

    /// The SPIFFE ID a connection to `uri` must prove, when it is mTLS.
    fn peer(&self, uri: &Uri) -> Option<Meshed> {
        let (dialer, alpn) = self.mesh.as_ref()?;
        let expected = match &self.expect {
            Expect::Nothing => return None,
            Expect::Peer(id) => id.clone(),
            Expect::Cluster(cluster) => {
                let addr = uri.authority()?.as_str().parse().ok()?;
                dialer.expected(cluster, addr)?
            }
        };
        Some((dialer.clone(), expected, *alpn))
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
        let meshed = self.peer(&uri);
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
    /// The same connector, its connections proving `expect`.
    pub fn expecting(&self, expect: Expect) -> Self {
        Self {
            inner: self.inner.expecting(expect),
            metrics: self.metrics.clone(),
        }
    }

    /// Dials with `inner`, counting in `metrics`' upstream connection metrics.
    pub fn new(inner: MeshConnector, metrics: &HttpMetrics) -> Self {
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
