//! Connections to backends: pooled keep-alive HTTP/1.1 clients and HTTP/2 (h2c, prior
//! knowledge) clients, with every open connection counted in `weir_upstream_connections`.

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
use weir_api::model::Protocol;

use crate::{
    body::{Body, TooLarge},
    error::ProxyError,
    metrics::Metrics,
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
    /// Builds both pools.
    pub fn new(settings: &UpstreamSettings, metrics: &Metrics) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.connect_timeout));
        http.enforce_http(true);
        let connector = CountingConnector {
            inner: http,
            metrics: Arc::new(ConnectMetrics {
                open: metrics.upstream_connections.clone(),
                ok: metrics.upstream_connects.with_label_values(&["ok"]),
                failed: metrics.upstream_connects.with_label_values(&["error"]),
            }),
        };
        let http1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(settings.idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector.clone());
        let h2c = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .pool_idle_timeout(settings.idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_keep_alive_interval(Duration::from_secs(30))
            .build(connector);
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

/// An HTTP connector that counts connections in the metrics. The client clones its connector
/// for every request (even when a pooled connection is used), so the handles sit behind one
/// `Arc` rather than cloning every metric.
#[derive(Clone)]
pub struct CountingConnector {
    inner: HttpConnector,
    metrics: Arc<ConnectMetrics>,
}

struct ConnectMetrics {
    open: IntGauge,
    ok: IntCounter,
    failed: IntCounter,
}

impl tower::Service<Uri> for CountingConnector {
    type Response = Counted;
    type Error = <HttpConnector as tower::Service<Uri>>::Error;
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

/// A backend connection that decrements the open-connection gauge when it closes.
pub struct Counted {
    io: TokioIo<TcpStream>,
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
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
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
