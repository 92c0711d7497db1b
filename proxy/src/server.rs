//! Listeners: accept connections, serve HTTP/1.1 and HTTP/2 (h2c prior knowledge, detected from
//! the first bytes) with upgrades, and drain gracefully on shutdown.

use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use http::{Request, Response};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{net::TcpListener, sync::watch};

use crate::{body::Body, metrics::Metrics};

/// Limits and timeouts for client connections.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// A client must send its request headers within this time, or the connection is closed.
    pub header_read_timeout: Duration,
    /// Largest header block hyper will buffer. Weir's own 431 limit is enforced below this by
    /// the handler, so the client gets a proper error response.
    pub max_buffer: usize,
    /// On shutdown, wait at most this long for in-flight requests.
    pub drain_timeout: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_buffer: 256 * 1024,
            drain_timeout: Duration::from_secs(15),
        }
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
    metrics: Metrics,
    mut shutdown: Shutdown,
) where
    H: Fn(SocketAddr, Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_buffer)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(settings.max_buffer as u32)
        .max_concurrent_streams(1024);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
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
        let handler = handler.clone();
        let service = service_fn(move |req| {
            let response = handler(peer, req);
            async move { Ok::<_, Infallible>(response.await) }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        let gauge = metrics.downstream_connections.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "client connection ended with an error");
            }
            gauge.dec();
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(settings.drain_timeout) => {
            tracing::warn!(timeout = ?settings.drain_timeout, "drain timeout reached; closing remaining connections");
        }
    }
}
