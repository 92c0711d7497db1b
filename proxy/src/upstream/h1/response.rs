//! The response side of an exchange once its head is read: the body streaming from the
//! connection, which goes back to the pool when the body ends, and the connection handed over
//! after a `101 Switching Protocols`.

use std::{
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use http::uri::Authority;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::{pool::Pool, Conn};
use crate::{
    codec::{Chunked, Decoded},
    upstream::connect::{BoxError, Counted},
};

/// Where a connection goes when its response has ended.
pub(super) struct Release {
    pub(super) pool: Arc<Pool>,
    pub(super) authority: Authority,
}

impl Release {
    pub(super) fn put(self, conn: Conn) {
        // Bytes beyond the response would be read as the next one's: never reuse then.
        if conn.reusable && conn.wire.read.is_empty() {
            self.pool.put(self.authority, conn);
        }
    }
}

/// A response body read from its connection.
pub(super) struct ResponseBody {
    pub(super) conn: Option<Conn>,
    pub(super) state: State,
    pub(super) release: Option<Release>,
}

pub(super) enum State {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
}

impl ResponseBody {
    /// The body has ended: the connection goes back to the pool (or closes).
    fn finish(&mut self) {
        if let (Some(conn), Some(release)) = (self.conn.take(), self.release.take()) {
            release.put(conn);
        }
    }
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if !conn.wire.read.is_empty() {
                match &mut this.state {
                    State::Length(left) => {
                        let n = usize::try_from(*left)
                            .unwrap_or(usize::MAX)
                            .min(conn.wire.read.len());
                        let data = conn.wire.read.split_to(n).freeze();
                        *left -= n as u64;
                        if *left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    State::UntilClose => {
                        let data = conn.wire.read.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    State::Chunked(chunked) => match chunked.decode(&mut conn.wire.read) {
                        Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                        Ok(Decoded::Trailers(trailers)) => {
                            this.finish();
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                        Ok(Decoded::Done) => {
                            this.finish();
                            return Poll::Ready(None);
                        }
                        Ok(Decoded::More) => {}
                        Err(e) => {
                            this.conn = None;
                            return Poll::Ready(Some(Err(e.into())));
                        }
                    },
                }
            }
            let read = ready!(conn.wire.poll_fill(cx));
            match (read, &this.state) {
                (Ok(0), State::UntilClose) => {
                    this.conn = None;
                    return Poll::Ready(None);
                }
                (Ok(0), _) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(
                        "the backend closed the connection before the body ended".into(),
                    )));
                }
                (Ok(_), _) => {}
                (Err(e), _) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.conn, &self.state) {
            (None, _) => SizeHint::with_exact(0),
            (Some(_), State::Length(n)) => SizeHint::with_exact(*n),
            _ => SizeHint::default(),
        }
    }
}

/// A backend's connection after it answered `101 Switching Protocols`, in the response's
/// extensions: taken once, to be spliced with the client's.
#[derive(Clone)]
pub struct Switched(Arc<Mutex<Option<Conn>>>);

impl Switched {
    pub(super) fn new(conn: Conn) -> Self {
        Self(Arc::new(Mutex::new(Some(conn))))
    }

    /// The connection, and any bytes the backend sent after its `101` head.
    pub fn take(&self) -> Option<(Counted, Bytes)> {
        let conn = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        Some((conn.wire.io, conn.wire.read.freeze()))
    }
}
