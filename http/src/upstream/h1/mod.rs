//! Weir's HTTP/1.1 client to backends, with pooled keep-alive connections.
//!
//! ```text
//!   request task ── checkout ──▶ Conn ── write head + body ──▶ backend
//!        ▲                        │ ◀── read head ───────────────┘
//!        └── Response<ResponseBody(Conn)> ── body read to its end ──▶ pool
//! ```
//!
//! The request's own task writes the request and reads the response; the response body reads
//! straight from the connection, and the connection goes back to the pool the moment the body
//! ends. hyper's client instead drives each connection on a task of its own and passes the
//! request, the response and every body chunk across channels to it: two more task wake-ups
//! and several channel operations per request, a third of what a proxied request costs in
//! user space. HTTP/2 to backends stays on hyper, whose multiplexing is what HTTP/2 is for.
//!
//! A request without a body that finds its pooled connection closed by the backend (the
//! keep-alive race: the backend closed it just as it was reused, and nothing came back) is
//! sent again on another connection, as browsers and hyper do.

use std::{
    future::{poll_fn, Future},
    io,
    sync::Arc,
    time::Duration,
};

use http::{request, uri::Authority, Method, Request, Response, StatusCode};
use http_body::Body as HttpBody;
use tower::Service;

use self::pool::Pool;
use super::connect::{BoxError, Counted, CountingConnector, Expect, Expected};
use crate::{
    body::{self, Body},
    codec::{self, BodyLength, Chunked, Head, ProtocolError, RequestFraming},
    wire::{Framing, Sending, Wire},
};

mod pool;
mod response;

pub use response::Switched;
use response::{Release, ResponseBody};

/// A request goes out again at most this many times after finding a pooled connection closed.
const MAX_STALE: usize = 3;

/// Why an HTTP/1.1 exchange with a backend failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request's URI names no backend.
    #[error("the request URI has no authority")]
    NoAuthority,
    /// No connection could be made (refused, timed out, mesh handshake failed).
    #[error("connecting to the backend failed")]
    Connect(#[source] BoxError),
    /// Writing the request failed.
    #[error("sending the request to the backend failed")]
    Write(#[source] io::Error),
    /// Reading the response head failed.
    #[error("reading the backend's response failed")]
    Read(#[source] io::Error),
    /// The backend closed the connection before its response head was complete.
    #[error("the backend closed the connection before responding")]
    Closed,
    /// The backend's response is not valid HTTP/1.1.
    #[error("the backend's response is invalid")]
    Protocol(#[from] ProtocolError),
    /// The request body failed while it was being sent (the client went away, or it is over
    /// the route's limit).
    #[error("the request body failed")]
    RequestBody(#[source] BoxError),
}

/// The HTTP/1.1 client: a connector and a pool of idle connections.
#[derive(Clone)]
pub struct Client {
    connector: CountingConnector,
    pool: Arc<Pool>,
}

impl Client {
    /// A client dialing with `connector`, keeping idle connections for `idle_timeout`.
    pub fn new(connector: CountingConnector, idle_timeout: Duration) -> Self {
        Self {
            connector,
            pool: Pool::new(idle_timeout),
        }
    }

    /// Sends `request` to the authority of its URI and returns the response, whose body
    /// streams from the connection. (Taken apart before the future is made: an `async fn`
    /// would hold the request in it as well as its parts.)
    pub fn request(
        &self,
        request: Request<Body>,
    ) -> impl Future<Output = Result<Response<Body>, Error>> + '_ {
        let (parts, body) = request.into_parts();
        async move {
            let authority = parts.uri.authority().cloned().ok_or(Error::NoAuthority)?;
            let expected = parts.extensions.get::<Expected>().map(|e| e.0.clone());
            let resend = body.is_end_stream() && idempotent(&parts.method);
            let mut body = Some(body);
            let mut stale = 0;
            loop {
                let pooled = (stale < MAX_STALE)
                    .then(|| self.pool.checkout(&authority, expected.as_ref()))
                    .flatten();
                let reused = pooled.is_some();
                let mut conn = match pooled {
                    Some(conn) => conn,
                    None => self.connect(&parts.uri, expected.clone()).await?,
                };
                let sending = body.take().unwrap_or_else(body::empty);
                match exchange(&mut conn, &parts, &authority, sending).await {
                    Ok(head) => {
                        let response = self.respond(conn, authority, expected, &parts.method, head);
                        codec::recycle(parts.headers);
                        return response;
                    }
                    Err(failed) if reused && resend && failed.nothing_back => stale += 1,
                    Err(failed) => return Err(failed.error),
                }
            }
        }
    }

    async fn connect(&self, uri: &http::Uri, expected: Option<Arc<str>>) -> Result<Conn, Error> {
        let mut connector = match &expected {
            Some(id) => self.connector.expecting(Expect::Peer(id.clone())),
            None => self.connector.clone(),
        };
        poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(Error::Connect)?;
        let io = connector.call(uri.clone()).await.map_err(Error::Connect)?;
        Ok(Conn::new(io.into_inner()))
    }

    /// The response to hand on: its body reads from `conn`, which goes back to the pool when
    /// the body ends (and the connection may be kept).
    fn respond(
        &self,
        mut conn: Conn,
        authority: Authority,
        peer: Option<Arc<str>>,
        method: &Method,
        head: Head,
    ) -> Result<Response<Body>, Error> {
        let length = codec::body_length(method, &head)?;
        conn.reusable &= head.keep_alive;
        let mut response = Response::new(body::empty());
        *response.status_mut() = head.status;
        *response.version_mut() = head.version;
        *response.headers_mut() = head.headers;
        if head.status == StatusCode::SWITCHING_PROTOCOLS {
            response.extensions_mut().insert(Switched::new(conn));
            return Ok(response);
        }
        let release = Release {
            pool: self.pool.clone(),
            authority,
            peer,
        };
        let framing = match length {
            BodyLength::Empty => {
                release.put(conn);
                return Ok(response);
            }
            BodyLength::Length(n) => Framing::Length(n),
            BodyLength::Chunked => Framing::Chunked(Chunked::default()),
            BodyLength::UntilClose => {
                conn.reusable = false;
                Framing::UntilClose
            }
        };
        *response.body_mut() = body::boxed(ResponseBody {
            conn: Some(conn),
            framing,
            release: Some(release),
        });
        Ok(response)
    }
}

/// A connection to a backend with its buffers.
pub(crate) struct Conn {
    wire: Wire<Counted>,
    /// False once anything makes a further exchange unsafe.
    reusable: bool,
}

impl Conn {
    fn new(io: Counted) -> Self {
        Self {
            wire: Wire::new(io),
            reusable: true,
        }
    }

    /// Whether an idle connection is still open: nothing arrived on it, and the backend has
    /// not closed it.
    fn is_open(&self) -> bool {
        self.wire.read.is_empty() && self.wire.io.is_open()
    }
}

/// An exchange that failed; `nothing_back` when not a byte of a response arrived.
struct Failed {
    error: Error,
    nothing_back: bool,
}

/// Writes the request on `conn` and reads the response head.
async fn exchange(
    conn: &mut Conn,
    parts: &request::Parts,
    authority: &Authority,
    body: Body,
) -> Result<Head, Failed> {
    let framing = RequestFraming::of(
        &parts.method,
        body.is_end_stream(),
        body.size_hint().exact(),
    );
    conn.wire.write.clear();
    codec::encode_head(&mut conn.wire.write, parts, authority.as_str(), framing);
    // Without a body (most requests) the head is all there is. Sending a body takes a future
    // of half a kilobyte, boxed so that it does not size every request's future, which each
    // request moves whole.
    let sent = match body.is_end_stream() {
        true => conn.wire.flush_write().await.map_err(Sending::Io),
        false => Box::pin(send_body(conn, body, framing)).await,
    };
    match sent {
        Ok(()) => {}
        Err(Sending::Body(e)) => {
            return Err(Failed {
                error: Error::RequestBody(e),
                nothing_back: false,
            })
        }
        // The backend may have answered early (a 413, say) and closed: read what it said.
        Err(Sending::Io(e)) => {
            conn.reusable = false;
            return read_head(conn).await.map_err(|failed| Failed {
                error: Error::Write(e),
                nothing_back: failed.nothing_back,
            });
        }
    }
    read_head(conn).await
}

/// Writes the head and the body, framed as `framing` says.
async fn send_body(conn: &mut Conn, body: Body, framing: RequestFraming) -> Result<(), Sending> {
    let length = match framing {
        RequestFraming::None => Some(0),
        RequestFraming::Length(n) => Some(n),
        RequestFraming::Chunked => None,
    };
    conn.wire
        .send_body(body, length, framing == RequestFraming::Chunked)
        .await
}

/// Reads until a final response head (or `101`) has arrived; informational responses before
/// it are dropped.
async fn read_head(conn: &mut Conn) -> Result<Head, Failed> {
    let mut nothing_back = true;
    loop {
        while !conn.wire.read.is_empty() {
            nothing_back = false;
            let parsed =
                codec::parse_head(&mut conn.wire.read, &mut conn.wire.fields).map_err(|e| {
                    Failed {
                        error: e.into(),
                        nothing_back,
                    }
                })?;
            match parsed {
                Some(head)
                    if head.status.is_informational()
                        && head.status != StatusCode::SWITCHING_PROTOCOLS => {}
                Some(head) => return Ok(head),
                None => break,
            }
        }
        let read = poll_fn(|cx| conn.wire.poll_fill(cx)).await;
        let error = match read {
            Ok(0) => Error::Closed,
            Ok(_) => continue,
            Err(e) => Error::Read(e),
        };
        return Err(Failed {
            error,
            nothing_back,
        });
    }
}

/// Methods that may be sent twice without changing the outcome (RFC 9110 §9.2.2).
pub fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}
