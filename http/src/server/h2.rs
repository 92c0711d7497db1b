//! HTTP/2 client connections, on hyper's server: what Weir adds around it is what keeps a
//! client from holding a connection (and what it pins) forever.
//!
//! ```text
//!   client ══ streams ══▶ hyper ── Request<ClientBody> ──▶ handler
//!                           ▲ ◀── Response (the stream open until its body ends) ─┘
//!   idle watch: no stream open for the idle timeout ──▶ graceful shutdown (GOAWAY, close)
//! ```
//!
//! hyper itself sends PINGs on the keepalive interval and closes a connection whose peer does
//! not answer one in time; it has no notion of an idle connection, so every stream is counted
//! from its request to the end of its response body, and a connection with none open for the
//! idle timeout is asked to go away, as nginx's `http2_idle_timeout` (now
//! `keepalive_timeout`) and Envoy's `idle_timeout` do. Request bodies get the per-read
//! timeout of [`ClientBody`].

use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};

use http::{Request, Response};
use hyper::{
    body::{Body as _, Incoming},
    server::conn::http2,
    service::service_fn,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::watch;

use super::{client_body::ClientBody, cork, Peer, Shutdown, Transport};
use crate::body::{self, Body, Observed};

/// What an HTTP/2 connection is given besides hyper's own settings.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    /// Close the connection once no stream has been open for this long (zero: never).
    pub(super) idle_timeout: Duration,
    /// A request body's per-read timeout (zero: none).
    pub(super) body_timeout: Duration,
}

/// Serves one HTTP/2 connection with `handler` until it ends: the client closes it, it idles
/// past the idle timeout, or shutdown begins (then in-flight streams finish first).
pub(super) async fn serve<I, H, F>(
    builder: &http2::Builder<TokioExecutor>,
    limits: Limits,
    io: I,
    handler: Arc<H>,
    peer: Peer,
    mut shutdown: Shutdown,
) -> Result<(), hyper::Error>
where
    I: Transport,
    H: Fn(Peer, Request<Body>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let (open, streams) = watch::channel(0usize);
    let open = Arc::new(open);
    let body_timeout = limits.body_timeout;
    let service = service_fn(move |req: Request<Incoming>| {
        let stream = Stream::open(&open);
        // Most requests have no body (END_STREAM on their headers): nothing to box or time.
        let req = req.map(|b| match b.is_end_stream() {
            true => body::empty(),
            false => body::boxed(ClientBody::new(b, body_timeout)),
        });
        // hyper keeps a slot the size of the service future for the connection's whole life;
        // boxing the handler's (large) future keeps that slot pointer-sized.
        let response = Box::pin(handler(peer, req));
        async move {
            let response = response.await;
            // The stream stays counted until its response body has ended or is dropped.
            Ok::<_, Infallible>(response.map(|body| Observed::new(body, move |_| drop(stream))))
        }
    });
    // Boxed: an HTTP/2 connection's state is large; inline, it would size the future of every
    // HTTP/1 connection too. Corked: what one turn of it writes goes out in one write.
    let io = cork::cork(io);
    let conn = Box::pin(builder.serve_connection(TokioIo::new(io.clone()), service));
    let mut conn = cork::Flushing::new(conn, &io);
    tokio::select! {
        // The connection first: it is what wakes this task nearly every time.
        biased;
        result = &mut conn => return result,
        () = idle(streams, limits.idle_timeout) => {
            tracing::debug!(addr = %peer.addr, "HTTP/2 connection idle; going away");
        }
        () = super::stopped(&mut shutdown) => {}
    }
    conn.conn().as_mut().graceful_shutdown();
    conn.await
}

/// Returns once no stream has been open for `timeout`; never when `timeout` is zero.
async fn idle(mut streams: watch::Receiver<usize>, timeout: Duration) {
    if timeout.is_zero() {
        return std::future::pending().await;
    }
    loop {
        // The sender lives as long as the connection's service: an error cannot come first.
        if streams.wait_for(|open| *open == 0).await.is_err() {
            return std::future::pending().await;
        }
        // Any stream opening (or a stream opening and closing) starts the wait again.
        match tokio::time::timeout(timeout, streams.changed()).await {
            Err(_elapsed) => return,
            Ok(Ok(())) => {}
            Ok(Err(_)) => return std::future::pending().await,
        }
    }
}

/// One open stream, counted until dropped: with the handler's future until the response
/// comes, then with the response body until hyper has sent all of it (or the stream is reset).
struct Stream(Arc<watch::Sender<usize>>);

impl Stream {
    fn open(count: &Arc<watch::Sender<usize>>) -> Self {
        count.send_modify(|open| *open += 1);
        Self(count.clone())
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.0.send_modify(|open| *open -= 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_returns_only_after_the_timeout_with_no_stream_open() {
        let (open, streams) = watch::channel(0usize);
        let open = Arc::new(open);
        let started = tokio::time::Instant::now();
        let watching = tokio::spawn(idle(streams, Duration::from_secs(10)));

        // A stream open for 30 s, ending at 35 s: idle from then, so done at 45 s.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let stream = Stream::open(&open);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!watching.is_finished(), "a stream is open");
        drop(stream);
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(!watching.is_finished());
        watching.await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(45));
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_idle_timeout_never_ends() {
        let (_open, streams) = watch::channel(0usize);
        let result =
            tokio::time::timeout(Duration::from_secs(86_400), idle(streams, Duration::ZERO)).await;
        assert!(result.is_err());
    }
}
