//! Weir's HTTP/1.1 server: one client connection, its requests one after another.
//!
//! ```text
//!   client ── head ──▶ Conn ── Request (body reads from the Conn) ──▶ handler
//!      ▲                 ▲ ◀── the Conn back when the body ends ────────┘
//!      └── response ─────┘ (head and small bodies in one write)
//! ```
//!
//! The connection's own task reads each request head, runs the handler and writes the
//! response. A request body holds the connection while it is read and gives it back the moment
//! it ends, so nothing crosses a task or a channel. hyper's server builds the same request but
//! pays, per request, for a header-read timer of its own, a dispatcher and buffered I/O layers
//! between the socket and the handler; this one keeps one timer per connection and resets it.
//!
//! Between requests a connection holds no buffer once it has been idle for [`PARK_AFTER`]
//! (where the transport can wait for readability without one, as TCP can): an idle keep-alive
//! connection costs little more than its socket, as in nginx. It is closed when the next
//! request's head has not arrived within the header-read timeout, or when shutdown begins.

use std::{
    future::{poll_fn, Future},
    io,
    pin::Pin,
    sync::Arc,
    task::Poll,
    time::Duration,
};

use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as HttpBody;
use prometheus::IntGauge;
use tokio::{
    io::AsyncWriteExt,
    sync::oneshot,
    time::{Instant, Sleep},
};

use super::{ClientBody, Peer, Shutdown};
use crate::{
    body::{self, Body},
    codec::{self, ProtocolError, RequestBodyLength, RequestHead, ResponseFraming},
    error::ProxyError,
    transport::Transport,
    upgrade::{OnUpgrade, Upgraded},
    wire::{Sending, Wire},
};

mod body_in;
mod date;
#[cfg(test)]
mod tests;

use body_in::{Lent, RequestBody};

/// How long a connection stays idle between requests before it gives its buffers back.
pub(crate) const PARK_AFTER: Duration = Duration::from_millis(100);
/// After a response that ends a connection whose request was not read to its end, what the
/// client still sends is read and dropped for at most this long, so that closing does not
/// reset the connection before the client has read the response.
const LINGER: Duration = Duration::from_secs(2);

/// Limits and timeouts of HTTP/1.1 client connections.
#[derive(Clone, Debug)]
pub struct Settings {
    /// A request head must arrive whole within this time after the previous response (or the
    /// connection's start).
    pub header_read_timeout: Duration,
    /// Largest request head accepted; a larger one gets 431.
    pub max_head: usize,
    /// Idle keep-alive connections, parked without buffers.
    pub idle: IntGauge,
    /// A request body's per-read timeout (zero: none); see [`super::ClientBody`].
    pub body_timeout: Duration,
}

/// A client connection with its buffers.
pub(super) type Conn<T> = Wire<T>;

/// Serves HTTP/1.1 on `io` with `handler` until the client closes, a request ends the
/// connection, or shutdown begins (the request in flight, if any, is answered first).
pub async fn serve<T, H, F>(
    io: T,
    handler: Arc<H>,
    peer: Peer,
    settings: &Settings,
    shutdown: Shutdown,
) -> io::Result<()>
where
    T: Transport,
    H: Fn(Peer, Request<Body>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let mut conn = Conn::new(io);
    let stopping = shutdown.clone();
    let mut waiting = Waiting {
        timer: Box::pin(tokio::time::sleep(settings.header_read_timeout)),
        stop: Box::pin(async move {
            let mut shutdown = shutdown;
            super::stopped(&mut shutdown).await
        }),
        stopped: false,
    };
    let mut handling = Handling(None);
    loop {
        let head = match next_head(&mut conn, settings, &mut waiting, &mut handling).await {
            Ok(Some(head)) => head,
            Ok(None) => return Ok(()),
            Err(e) => {
                tracing::debug!(addr = %peer.addr, error = %e, "malformed request");
                let error = match e {
                    ProtocolError::HeadTooLarge => ProxyError::HeadersTooLarge,
                    ProtocolError::UnsupportedCoding => ProxyError::UnsupportedTransferCoding,
                    _ => ProxyError::BadRequest,
                };
                write_response(
                    &mut conn,
                    &Method::GET,
                    Version::HTTP_11,
                    error.response(),
                    true,
                )
                .await?;
                return linger(conn).await;
            }
        };
        let RequestHead {
            parts,
            body: length,
            keep_alive,
            expect_continue,
            upgrade,
        } = head;
        let method = parts.method.clone();
        let version = parts.version;
        let upgrading = method == Method::CONNECT || upgrade;
        let mut request = Request::from_parts(parts, body::empty());
        let upgrade = upgrading.then(|| {
            let (tx, rx) = oneshot::channel();
            request.extensions_mut().insert(OnUpgrade::new(rx));
            tx
        });
        let lent = match length {
            RequestBodyLength::Empty => Lent::Here(conn),
            length => {
                let (body, slot) = RequestBody::new(conn, length, expect_continue);
                *request.body_mut() = body::boxed(ClientBody::new(body, settings.body_timeout));
                Lent::Body(slot)
            }
        };
        let response = handling.start(handler(peer, request)).await;
        let (back, read_whole) = lent.reclaim().await;
        conn = back;

        let status = response.status();
        let switching = status == StatusCode::SWITCHING_PROTOCOLS
            || (method == Method::CONNECT && status.is_success());
        if switching {
            write_response(&mut conn, &method, version, response, false).await?;
            if let Some(upgrade) = upgrade {
                let _ = upgrade.send(Upgraded {
                    io: Box::new(conn.io),
                    read_ahead: conn.read.freeze(),
                });
            }
            return Ok(());
        }
        let close = !keep_alive || !read_whole || waiting.stopped || *stopping.borrow();
        if !write_response(&mut conn, &method, version, response, close).await? {
            return if read_whole {
                conn.io.shutdown().await
            } else {
                linger(conn).await
            };
        }
    }
}

/// Where the handler's future runs: one allocation kept from request to request, since the
/// future is large (kilobytes) and inline it would size what every idle connection keeps.
/// Released once the connection has been idle for the park delay. A finished future stays
/// until the next request replaces it: handlers are async blocks, which hold nothing once
/// done, and writing an empty slot would copy the whole slot.
struct Handling<F>(Option<Pin<Box<F>>>);

impl<F: Future> Handling<F> {
    /// `future`, in the kept allocation (made on first use).
    #[inline]
    fn start(&mut self, future: F) -> Pin<&mut F> {
        let slot = match self.0.take() {
            Some(mut slot) => {
                slot.set(future);
                slot
            }
            None => Box::pin(future),
        };
        self.0.insert(slot).as_mut()
    }
}

/// What an idle connection waits on besides the client: its timer (the park delay, then the
/// header-read deadline) and shutdown.
struct Waiting {
    timer: Pin<Box<Sleep>>,
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Shutdown has begun (`stop` is done and must not be polled again).
    stopped: bool,
}

enum Woken {
    Read(io::Result<usize>),
    Readable(io::Result<()>),
    Timer,
    Stop,
}

/// Reads the next request head: `None` when the client closed, went silent past the
/// header-read timeout, or shutdown began before a request started.
async fn next_head<T: Transport, F>(
    conn: &mut Conn<T>,
    settings: &Settings,
    waiting: &mut Waiting,
    handling: &mut Handling<F>,
) -> Result<Option<RequestHead>, ProtocolError> {
    // A pipelined request is already here: no clock, no timer.
    if let Some(head) = parse(conn, settings)? {
        return Ok(Some(head));
    }
    let now = Instant::now();
    let deadline = now + settings.header_read_timeout;
    // Nothing of a next request here yet: the connection may idle first.
    let mut parked = false;
    let first = if conn.read.is_empty() {
        now + PARK_AFTER.min(settings.header_read_timeout)
    } else {
        deadline
    };
    waiting.timer.as_mut().reset(first);
    loop {
        let woken = poll_fn(|cx| {
            let io = if parked {
                conn.io.poll_readable(cx).map(Woken::Readable)
            } else {
                conn.poll_fill(cx).map(Woken::Read)
            };
            if io.is_ready() {
                return io;
            }
            if !waiting.stopped && waiting.stop.as_mut().poll(cx).is_ready() {
                waiting.stopped = true;
                return Poll::Ready(Woken::Stop);
            }
            waiting.timer.as_mut().poll(cx).map(|()| Woken::Timer)
        })
        .await;
        match woken {
            Woken::Read(Ok(0)) | Woken::Read(Err(_)) | Woken::Readable(Err(_)) => break,
            Woken::Read(Ok(_)) => {
                if let Some(head) = parse(conn, settings)? {
                    return Ok(Some(head));
                }
            }
            // Readable, and the buffers are back. Should nothing come (a spurious wake-up), the
            // park delay parks it again.
            Woken::Readable(Ok(())) => {
                parked = false;
                settings.idle.dec();
                waiting
                    .timer
                    .as_mut()
                    .reset((Instant::now() + PARK_AFTER).min(deadline));
            }
            // The park delay (the timer is at the deadline after it). Still idle: the
            // handler's allocation goes, and the buffers too when the transport can wait on
            // readiness alone (TLS keeps its own state and reads on). Part of a head may have
            // come meanwhile: it has until the deadline.
            Woken::Timer if Instant::now() < deadline => {
                if conn.read.is_empty() {
                    handling.0 = None;
                    if conn.io.parks() {
                        parked = true;
                        settings.idle.inc();
                        conn.release();
                    }
                }
                waiting.timer.as_mut().reset(deadline);
            }
            // Silent past the header-read timeout, or shutdown: close, unless a request has
            // begun to arrive and shutdown is all there is.
            Woken::Timer => break,
            Woken::Stop if conn.read.is_empty() => break,
            Woken::Stop => {}
        }
    }
    if parked {
        settings.idle.dec();
    }
    Ok(None)
}

fn parse<T>(conn: &mut Conn<T>, settings: &Settings) -> Result<Option<RequestHead>, ProtocolError> {
    if conn.read.is_empty() {
        return Ok(None);
    }
    codec::parse_request(&mut conn.read, &mut conn.fields, settings.max_head)
}

/// Writes `response` to a request of `method` from a client speaking `client`; `close` when
/// the connection ends after it. Returns whether the connection may carry another request.
async fn write_response<T: Transport>(
    conn: &mut Conn<T>,
    method: &Method,
    client: Version,
    response: Response<Body>,
    close: bool,
) -> io::Result<bool> {
    let (parts, body) = response.into_parts();
    let framing = codec::response_framing(
        method,
        &parts,
        body.is_end_stream(),
        body.size_hint().exact(),
        client,
    );
    let close = close || framing == ResponseFraming::UntilClose;
    conn.write.clear();
    let close =
        codec::encode_response_head(&mut conn.write, &parts, framing, close, client, |out| {
            date::with(|now| out.extend_from_slice(now));
        });
    codec::recycle(parts.headers);
    let length = match framing {
        ResponseFraming::None | ResponseFraming::Described | ResponseFraming::Length(0) => {
            conn.flush_write().await?;
            return Ok(!close);
        }
        ResponseFraming::Length(n) => Some(n),
        ResponseFraming::Chunked | ResponseFraming::UntilClose => None,
    };
    let sent = conn
        .send_body(body, length, framing == ResponseFraming::Chunked)
        .await;
    match sent {
        Ok(()) => Ok(!close),
        Err(Sending::Io(e)) => Err(e),
        Err(Sending::Body(e)) => Err(io::Error::other(e)),
    }
}

/// Ends a connection whose client may still be sending (a request not read to its end): the
/// write side is shut, and what arrives is dropped until the client closes too, for at most
/// [`LINGER`]. Closing at once would reset the connection, and a reset can destroy the
/// response before the client has read it.
async fn linger<T: Transport>(mut conn: Conn<T>) -> io::Result<()> {
    conn.io.shutdown().await?;
    let drain = async {
        loop {
            conn.read.clear();
            match poll_fn(|cx| conn.poll_fill(cx)).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
    Ok(())
}
