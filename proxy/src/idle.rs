//! Idle HTTP/1.1 keep-alive connections that hold no buffers.
//!
//! hyper keeps an HTTP/1 connection's read buffer, header write buffer and cached header map
//! for the connection's whole life, idle or not: most of what an idle keep-alive connection
//! costs. Like nginx, Weir gives them back between requests. The socket is served through
//! [`Parkable`], which tells when the connection is idle: every request read whole (its head
//! and `Content-Length` body, nothing more), every response sent and flushed. When hyper then
//! asks for the next request and none has arrived, it is told the client closed; hyper ends the
//! connection cleanly, the socket is handed back instead of shut down, and the caller parks it
//! (waiting for readability costs no buffer) until the next request starts a fresh hyper
//! connection. A connection is parked once it has been idle for [`PARK_AFTER`]: a busy one,
//! whose next request is already on its way, keeps its hyper connection rather than paying for
//! a new one per request. Whatever cannot be accounted for exactly (chunked request bodies, a request head
//! split across reads, pipelined requests, upgrades) leaves the connection served the usual
//! way for the rest of its life.

use std::{
    future::Future,
    io,
    mem::MaybeUninit,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::StatusCode;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::{Instant, Sleep},
};

use crate::body::{Body, BoxError};

/// Most request headers hyper accepts; a request with more is not accounted for.
const MAX_HEADERS: usize = 100;

/// How long a connection stays idle before it is parked.
pub(crate) const PARK_AFTER: Duration = Duration::from_millis(100);

/// What a client connection's socket wrapper and its requests share.
#[derive(Default)]
pub(crate) struct Shared {
    /// Responses hyper has not finished with.
    in_flight: AtomicUsize,
    /// A response switched protocols: the connection no longer speaks HTTP/1.1.
    upgraded: AtomicBool,
    /// The socket, handed back by a hyper connection that ended because it went idle.
    parked: Mutex<Option<TcpStream>>,
}

impl Shared {
    /// A request started; its response will be wrapped by [`Shared::respond`].
    pub(crate) fn request(&self) {
        self.in_flight.fetch_add(1, Relaxed);
    }

    /// The response to a request, counted until hyper has sent it and let it go.
    /// `connect`: the request was a CONNECT, which a 2xx turns into a tunnel.
    pub(crate) fn respond(
        self: &Arc<Self>,
        connect: bool,
        response: http::Response<Body>,
    ) -> http::Response<Tracked> {
        let status = response.status();
        if status == StatusCode::SWITCHING_PROTOCOLS || (connect && status.is_success()) {
            self.upgraded.store(true, Relaxed);
        }
        response.map(|inner| Tracked {
            inner,
            shared: self.clone(),
        })
    }

    /// The socket of a connection that ended idle, to be parked; `None` when it really ended.
    pub(crate) fn take_parked(&self) -> Option<TcpStream> {
        crate::lock(&self.parked).take()
    }
}

/// A response body that marks its exchange finished when hyper lets it go.
pub(crate) struct Tracked {
    inner: Body,
    shared: Arc<Shared>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Relaxed);
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Where the bytes read so far leave the request stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// Every request read so far was read whole: the next byte starts a new one.
    Boundary,
    /// This many bytes of the current request's body are still to come.
    Body(u64),
    /// Not accounted for (see the module docs): never parked again.
    Unknown,
}

impl Framing {
    /// The framing after `read` more bytes arrived.
    fn after(self, read: &[u8]) -> Framing {
        match self {
            Framing::Boundary => head(read),
            Framing::Body(left) => match left.checked_sub(read.len() as u64) {
                Some(0) => Framing::Boundary,
                Some(left) => Framing::Body(left),
                // More than the body: the client pipelined its next request.
                None => Framing::Unknown,
            },
            Framing::Unknown => Framing::Unknown,
        }
    }
}

/// The framing after a read that starts a request: the head must be whole, and its body (by
/// `Content-Length`) either whole too or still to come, with nothing after it.
fn head(read: &[u8]) -> Framing {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let Ok(httparse::Status::Complete(head_len)) =
        request.parse_with_uninit_headers(read, &mut headers)
    else {
        return Framing::Unknown;
    };
    let mut length = None;
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Framing::Unknown;
        }
        if header.name.eq_ignore_ascii_case("content-length") {
            let parsed = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            match (parsed, length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                // hyper refuses these; nothing to account for.
                _ => return Framing::Unknown,
            }
        }
    }
    let after_head = (read.len() - head_len) as u64;
    match length.unwrap_or(0).checked_sub(after_head) {
        Some(0) => Framing::Boundary,
        Some(left) => Framing::Body(left),
        None => Framing::Unknown,
    }
}

/// A client socket that tells hyper the client closed when the connection is idle and no
/// request has arrived, and then hands the socket back (in [`Shared`]) instead of shutting it
/// down.
pub(crate) struct Parkable {
    stream: Option<TcpStream>,
    shared: Arc<Shared>,
    framing: Framing,
    /// The last write could not go out: hyper still holds unsent bytes.
    write_blocked: bool,
    /// When an idle connection is parked, once it is armed.
    park: Option<Pin<Box<Sleep>>>,
    /// The idle period `park` measures has begun (and no request has started since).
    armed: bool,
    /// hyper was told the client closed; its shutdown hands the socket back.
    idled: bool,
}

impl Parkable {
    pub(crate) fn new(stream: TcpStream, shared: Arc<Shared>) -> Self {
        Self {
            stream: Some(stream),
            shared,
            framing: Framing::Boundary,
            write_blocked: false,
            park: None,
            armed: false,
            idled: false,
        }
    }

    /// Whether the idle period is over; starts it on the first call, and until it is over,
    /// wakes `cx` when it will be.
    fn park_due(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.armed {
            self.armed = true;
            let at = Instant::now() + PARK_AFTER;
            match &mut self.park {
                Some(park) => park.as_mut().reset(at),
                None => self.park = Some(Box::pin(tokio::time::sleep_until(at))),
            }
        }
        self.park
            .as_mut()
            .is_some_and(|park| park.as_mut().poll(cx).is_ready())
    }

    fn idle(&self) -> bool {
        self.framing == Framing::Boundary
            && !self.write_blocked
            && self.shared.in_flight.load(Relaxed) == 0
            && !self.shared.upgraded.load(Relaxed)
    }

    fn stream(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        match self.stream.as_mut() {
            Some(stream) => Ok(Pin::new(stream)),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

impl AsyncRead for Parkable {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let idle = this.idle();
        let before = buf.filled().len();
        match this.stream()?.poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if !read.is_empty() {
                    this.framing = this.framing.after(read);
                    this.armed = false;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if idle && this.park_due(cx) => {
                // Idle long enough between requests: end this hyper connection (an empty read
                // is the client closing) and keep the socket.
                this.idled = true;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl AsyncWrite for Parkable {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = this.stream()?.poll_write(cx, buf);
        this.write_blocked = written.is_pending();
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = this.stream()?.poll_write_vectored(cx, bufs);
        this.write_blocked = written.is_pending();
        written
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stream()?.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.idled {
            *crate::lock(&this.shared.parked) = this.stream.take();
            return Poll::Ready(Ok(()));
        }
        this.stream()?.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_request_leaves_the_stream_at_a_boundary() {
        let get = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(head(get), Framing::Boundary);
        let post = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(head(post), Framing::Boundary);
        // Leading empty lines are allowed before a request, as hyper allows them.
        assert_eq!(head(b"\r\nGET / HTTP/1.1\r\n\r\n"), Framing::Boundary);
    }

    #[test]
    fn a_body_still_to_come_is_counted_down_to_the_boundary() {
        let post = b"POST /a HTTP/1.1\r\ncontent-length: 10\r\n\r\nhel";
        let framing = head(post);
        assert_eq!(framing, Framing::Body(7));
        let framing = framing.after(b"lo, w");
        assert_eq!(framing, Framing::Body(2));
        assert_eq!(framing.after(b"o!"), Framing::Boundary);
        // One byte more than the body is the start of a pipelined request.
        assert_eq!(Framing::Body(2).after(b"o!G"), Framing::Unknown);
    }

    #[test]
    fn what_cannot_be_accounted_for_exactly_is_unknown_for_good() {
        // Chunked body.
        let chunked =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        assert_eq!(head(chunked), Framing::Unknown);
        // A head split across reads.
        assert_eq!(head(b"GET / HTTP/1.1\r\nHost: "), Framing::Unknown);
        // Two pipelined requests, or one and the start of the next.
        assert_eq!(
            head(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"),
            Framing::Unknown
        );
        assert_eq!(head(b"GET /1 HTTP/1.1\r\n\r\nGE"), Framing::Unknown);
        // Conflicting lengths, and a malformed one.
        let conflicting = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(head(conflicting), Framing::Unknown);
        assert_eq!(
            head(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            Framing::Unknown
        );
        // Garbage.
        assert_eq!(head(b"\x16\x03\x01"), Framing::Unknown);
        assert_eq!(
            Framing::Unknown.after(b"GET / HTTP/1.1\r\n\r\n"),
            Framing::Unknown
        );
    }
}
