//! Listeners: accept connections, serve HTTP/1.1 (Weir's own server, [`h1`]) and HTTP/2
//! (hyper's, with an idle timeout, [`h2`]), and drain gracefully on shutdown. In cleartext,
//! HTTP/2 is h2c prior knowledge, detected from the first bytes; over TLS, ALPN chooses.
//! Request bodies of both come as [`ClientBody`], which times out a client that stops sending.

use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use http::{Request, Response};
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
};

use prometheus::IntCounter;

use crate::{
    body::{Body, BoxError},
    detect::{peek_until, H2_PREFACE},
    metrics::HttpMetrics,
};

mod client_body;
mod cork;
pub mod h1;
mod h2;
mod hello;

pub use crate::{detect::HttpVersion, transport::Transport};
pub use client_body::ClientBody;
use hello::{hello_sni, Hello};

/// Limits and timeouts for client connections.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// A client must send its request headers within this time, or the connection is closed.
    pub header_read_timeout: Duration,
    /// Largest request head (HTTP/1.1) or header list (HTTP/2) accepted. Weir's own 431
    /// limit is enforced below this by the handler.
    pub max_buffer: usize,
    /// On shutdown, wait at most this long for in-flight requests.
    pub drain_timeout: Duration,
    /// Terminate TLS with this configuration (the handshake must finish within
    /// `header_read_timeout`); cleartext when `None`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// On a TLS listener, the connections that are carried as bytes instead of served as
    /// HTTP (the Gateway API's TLSRoutes), by SNI.
    pub streams: Option<Arc<dyn Streams>>,
    /// A TCP listener (the Gateway API's TCPRoutes): every connection is carried as bytes by
    /// `streams` ([`Streams::tcp`]), never read; one it has no route for is closed.
    pub tcp: bool,
    /// A request body that has been waited on this long without a byte arriving fails: 408
    /// when its response has not started (nginx's `client_body_timeout`). Zero: no limit.
    pub client_body_timeout: Duration,
    /// An HTTP/2 connection with no stream open for this long is closed (GOAWAY). Zero: never.
    pub http2_idle_timeout: Duration,
    /// HTTP/2 PINGs go out on a connection this often; zero: none.
    pub http2_keepalive_interval: Duration,
    /// A connection whose client has not answered a PING within this time is closed.
    pub http2_keepalive_timeout: Duration,
}

/// Who sent a request.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    /// The client's address as accepted.
    pub addr: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_buffer: 256 * 1024,
            drain_timeout: Duration::from_secs(15),
            tls: None,
            streams: None,
            tcp: false,
            client_body_timeout: Duration::from_secs(60),
            http2_idle_timeout: Duration::from_secs(180),
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// A client connection handed over whole, to be carried as bytes.
pub type Carry = Box<dyn FnOnce(Box<dyn Transport>) -> BoxFuture + Send>;

/// A future a carried connection runs as.
pub type BoxFuture = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Connections on a TLS listener that are carried as bytes rather than served as HTTP, by
/// the SNI name their ClientHello asks for (`None`: no SNI). Implemented by the proxy, which
/// knows the routes; asked once per connection, never per request.
pub trait Streams: Send + Sync + std::fmt::Debug {
    /// Whether some connection may be passed through unopened: only then is each ClientHello
    /// read ahead (peeked, not consumed) for its SNI before the handshake.
    fn passes_through(&self) -> bool;
    /// Passes the connection (from `peer`) through with its TLS unopened: the ClientHello is
    /// still unread.
    fn passthrough(&self, sni: Option<&str>, peer: SocketAddr) -> Option<Carry>;
    /// Carries what is inside the gateway's TLS once the handshake is done, instead of HTTP.
    fn terminated(&self, sni: Option<&str>, peer: SocketAddr) -> Option<Carry>;
    /// Carries a connection to a TCP listener as it comes (nothing read from it first).
    fn tcp(&self, peer: SocketAddr) -> Option<Carry>;
}

/// Runs a carried connection until it ends, or until shutdown begins: then it is closed (both
/// sides see it end), so a drain waits for requests, not for connections carried as bytes that
/// may never end.
async fn carried(carry: BoxFuture, mut shutdown: Shutdown) {
    tokio::select! {
        _ = carry => {}
        _ = stopped(&mut shutdown) => {}
    }
}

/// A shutdown signal: `true` once shutdown has begun.
pub type Shutdown = watch::Receiver<bool>;

/// Serves `listener` with `handler` until `shutdown` turns true, then stops accepting, lets
/// in-flight requests finish (at most `drain_timeout`) and returns.
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    settings: ServerSettings,
    metrics: HttpMetrics,
    shutdown: Shutdown,
) where
    H: Fn(Peer, Request<Body>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let http = Arc::new(Http::new(&settings, &metrics));
    let tls = settings
        .tls
        .clone()
        .map(|config| Arc::new(Terminator::new(config, &metrics)));
    let handshake_timeout = settings.header_read_timeout;
    let streams = settings.streams.clone();
    let tcp = settings.tcp;
    let connections = shutdown.clone();
    accept_loop(
        listener,
        settings.drain_timeout,
        &metrics,
        shutdown,
        move |stream, peer| {
            let (handler, http, tls) = (handler.clone(), http.clone(), tls.clone());
            let streams = streams.clone();
            let shutdown = connections.clone();
            let client = Peer {
                addr: peer,
                tls: tls.is_some(),
            };
            async move {
                if tcp {
                    if let Some(carry) = streams.as_deref().and_then(|s| s.tcp(peer)) {
                        carried(carry(Box::new(stream)), shutdown).await;
                    }
                    return;
                }
                let result = match tls {
                    // Boxed: the handshake's state (rustls's whole connection) is large and
                    // only needed until it is done; inline, it would size the future every
                    // idle connection keeps.
                    Some(tls) => {
                        // One deadline for the ClientHello read ahead and the handshake.
                        let deadline = tokio::time::Instant::now() + handshake_timeout;
                        if let Some(streams) = streams.as_deref().filter(|s| s.passes_through()) {
                            let sni = tokio::time::timeout_at(deadline, hello_sni(&stream));
                            match sni.await {
                                Ok(Ok(Hello::Sni(sni))) => {
                                    if let Some(carry) = streams.passthrough(sni.as_deref(), peer) {
                                        tls.passed.inc();
                                        carried(carry(Box::new(stream)), shutdown).await;
                                        return;
                                    }
                                }
                                // Not TLS, or too large.
                                Ok(Ok(Hello::Invalid)) => {
                                    tls.error.inc();
                                    return;
                                }
                                // Silent, or stalled half-way, for the whole timeout.
                                Err(_) => {
                                    tls.timeout.inc();
                                    return;
                                }
                                Ok(Err(_)) | Ok(Ok(Hello::Closed)) => return,
                            }
                        }
                        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                        match Box::pin(tls.accept(stream, left, peer)).await {
                            Some((stream, _)) if streams.is_some() => {
                                let sni = stream.get_ref().1.server_name();
                                match streams.as_deref().and_then(|s| s.terminated(sni, peer)) {
                                    Some(carry) => {
                                        carried(carry(Box::new(stream)), shutdown).await;
                                        Ok(())
                                    }
                                    None => {
                                        let version = negotiated(&stream);
                                        Box::pin(
                                            http.serve(stream, version, handler, client, shutdown),
                                        )
                                        .await
                                    }
                                }
                            }
                            // Boxed: a TLS connection's state (rustls's buffers and keys) would
                            // otherwise size the future of every plaintext connection too.
                            Some((stream, version)) => {
                                Box::pin(http.serve(stream, version, handler, client, shutdown))
                                    .await
                            }
                            None => Ok(()),
                        }
                    }
                    None => match tokio::time::timeout(handshake_timeout, sniff(&stream)).await {
                        Ok(Ok(Some(version))) => {
                            http.serve(stream, version, handler, client, shutdown).await
                        }
                        // Closed before sending anything, a socket error, or silence for the
                        // whole header-read timeout: nothing to answer.
                        Ok(Ok(None)) | Ok(Err(_)) | Err(_) => Ok(()),
                    },
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "client connection ended with an error");
                }
            }
        },
    )
    .await;
}

/// Accepts connections until `shutdown` turns true, each handled by `connection` on its own
/// task and counted in the downstream metrics; then waits for those tasks to end, at most
/// `drain_timeout` (connections see `shutdown` too, and finish gracefully).
pub async fn accept_loop<C, Fut>(
    listener: TcpListener,
    drain_timeout: Duration,
    metrics: &HttpMetrics,
    mut shutdown: Shutdown,
    connection: C,
) where
    C: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    // Every connection task holds a sender; when the last one is gone, the drain is complete.
    let (drained_tx, mut drained) = mpsc::channel::<Infallible>(1);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        metrics.downstream_accepted.inc();
        metrics.downstream_connections.inc();
        let gauge = metrics.downstream_connections.clone();
        let drained_tx = drained_tx.clone();
        // Boxed: a future moved into an async block and awaited there is laid out twice
        // (the captured value and the awaited one), and this task lives as long as the
        // connection, idle or not.
        let handling = Box::pin(connection(stream, peer));
        tokio::spawn(async move {
            handling.await;
            gauge.dec();
            drop(drained_tx);
        });
    }
    drop(listener);
    drop(drained_tx);
    tokio::select! {
        _ = drained.recv() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(drain_timeout) => {
            tracing::warn!(timeout = ?drain_timeout, "drain timeout reached; closing remaining connections");
        }
    }
}

/// The HTTP version ALPN chose on a TLS connection.
fn negotiated(stream: &tokio_rustls::server::TlsStream<TcpStream>) -> HttpVersion {
    match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => HttpVersion::Http2,
        _ => HttpVersion::Http1,
    }
}

/// TLS termination for a listener, with its handshake counters resolved once.
struct Terminator {
    acceptor: tokio_rustls::TlsAcceptor,
    ok: IntCounter,
    error: IntCounter,
    timeout: IntCounter,
    /// Connections passed through unopened (TLSRoute `Passthrough`).
    passed: IntCounter,
}

impl Terminator {
    fn new(config: Arc<rustls::ServerConfig>, metrics: &HttpMetrics) -> Self {
        let counter = |result: &str| metrics.tls_handshakes.with_label_values(&[result]);
        Self {
            acceptor: tokio_rustls::TlsAcceptor::from(config),
            ok: counter("ok"),
            error: counter("error"),
            timeout: counter("timeout"),
            passed: counter("passthrough"),
        }
    }

    /// The handshake, within `timeout`; the stream and the protocol ALPN chose, or `None` when
    /// it failed (counted, logged at debug).
    async fn accept(
        &self,
        stream: TcpStream,
        timeout: Duration,
        peer: SocketAddr,
    ) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, HttpVersion)> {
        match tokio::time::timeout(timeout, self.acceptor.accept(stream)).await {
            Ok(Ok(stream)) => {
                self.ok.inc();
                let protocol = negotiated(&stream);
                Some((stream, protocol))
            }
            Ok(Err(e)) => {
                self.error.inc();
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                self.timeout.inc();
                None
            }
        }
    }
}

/// HTTP/1.1 and HTTP/2 server settings, made once per listener.
pub struct Http {
    http1: h1::Settings,
    http2: http2::Builder<TokioExecutor>,
    limits: h2::Limits,
}

impl Http {
    /// The HTTP/1.1 server's and hyper's HTTP/2 settings from `settings`' limits and timeouts.
    pub fn new(settings: &ServerSettings, metrics: &HttpMetrics) -> Self {
        let http1 = h1::Settings {
            header_read_timeout: settings.header_read_timeout,
            max_head: settings.max_buffer,
            idle: metrics.downstream_idle.clone(),
            body_timeout: settings.client_body_timeout,
        };
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(settings.max_buffer as u32)
            .max_concurrent_streams(1024);
        if !settings.http2_keepalive_interval.is_zero() {
            http2
                .keep_alive_interval(settings.http2_keepalive_interval)
                .keep_alive_timeout(settings.http2_keepalive_timeout);
        }
        let limits = h2::Limits {
            idle_timeout: settings.http2_idle_timeout,
            body_timeout: settings.client_body_timeout,
        };
        Self {
            http1,
            http2,
            limits,
        }
    }

    /// Serves one connection speaking `version` with `handler` until it ends (gracefully after
    /// shutdown begins); every request is told it came from `peer`. Idle HTTP/1.1 connections
    /// hold no buffers where the transport allows it (see [`h1`]).
    pub async fn serve<I, H, F>(
        &self,
        io: I,
        version: HttpVersion,
        handler: Arc<H>,
        peer: Peer,
        shutdown: Shutdown,
    ) -> Result<(), BoxError>
    where
        I: Transport,
        H: Fn(Peer, Request<Body>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        match version {
            HttpVersion::Http2 => {
                Ok(h2::serve(&self.http2, self.limits, io, handler, peer, shutdown).await?)
            }
            HttpVersion::Http1 => Ok(h1::serve(io, handler, peer, &self.http1, shutdown).await?),
        }
    }
}

/// Tells HTTP/2 prior knowledge from HTTP/1 by peeking at the first bytes, without consuming
/// them, so hyper reads the connection from its first byte into a buffer of its usual size.
/// `None` when the client closed without sending anything.
async fn sniff(stream: &TcpStream) -> std::io::Result<Option<HttpVersion>> {
    let mut buf = [0u8; H2_PREFACE.len()];
    peek_until(stream, &mut buf, |first| {
        if *first != H2_PREFACE[..first.len()] {
            Some(HttpVersion::Http1)
        } else if first.len() == H2_PREFACE.len() {
            Some(HttpVersion::Http2)
        } else {
            None
        }
    })
    .await
}

/// Waits for shutdown to begin, forever when the sender is gone.
async fn stopped(shutdown: &mut Shutdown) {
    if !stopping(shutdown).await {
        std::future::pending::<()>().await;
    }
}

/// Waits for shutdown to begin; `false` when the sender is gone and it never will.
async fn stopping(shutdown: &mut Shutdown) -> bool {
    shutdown.wait_for(|stop| *stop).await.is_ok()
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::tcp_pair as pair;

    #[tokio::test]
    async fn sniff_tells_h2_prior_knowledge_from_http1_even_when_the_preface_arrives_split() {
        let (mut client, server) = pair().await;
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert!(matches!(sniff(&server).await, Ok(Some(HttpVersion::Http1))));

        // "POST" shares its first letter with the preface.
        let (mut client, server) = pair().await;
        client.write_all(b"POST /x HTTP/1.1\r\n").await.unwrap();
        assert!(matches!(sniff(&server).await, Ok(Some(HttpVersion::Http1))));

        let (mut client, server) = pair().await;
        client.write_all(&H2_PREFACE[..7]).await.unwrap();
        let sniffing = tokio::spawn(async move { sniff(&server).await.map(|p| (p, server)) });
        tokio::time::sleep(Duration::from_millis(30)).await;
        client.write_all(&H2_PREFACE[7..]).await.unwrap();
        let (protocol, server) = sniffing.await.unwrap().unwrap();
        assert!(matches!(protocol, Some(HttpVersion::Http2)));
        // Nothing was consumed: hyper will read the preface itself.
        let mut buf = [0u8; 24];
        assert_eq!(server.peek(&mut buf).await.unwrap(), 24);

        let (client, server) = pair().await;
        drop(client);
        assert!(matches!(sniff(&server).await, Ok(None)));
    }
}
