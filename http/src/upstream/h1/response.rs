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
    upstream::connect::{BoxError, Counted},
    wire::Framing,
};

/// Where a connection goes when its response has ended.
pub(super) struct Release {
    pub(super) pool: Arc<Pool>,
    pub(super) authority: Authority,
    /// The mesh identity the connection proved (`None`: plaintext): it is reused only for
    /// requests expecting the same. (Kept here, not in `Conn`, which every request moves.)
    pub(super) peer: Option<Arc<str>>,
}

impl Release {
    pub(super) fn put(self, conn: Conn) {
        // Bytes beyond the response would be read as the next one's: never reuse then.
        if conn.reusable && conn.wire.read.is_empty() {
            self.pool.put(&self.authority, self.peer, conn);
        }
    }
}

/// A response body read from its connection.
pub(super) struct ResponseBody {
    pub(super) conn: Option<Conn>,
    pub(super) framing: Framing,
    pub(super) release: Option<Release>,
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        let step = ready!(this.framing.poll_step(&mut conn.wire, cx));
        Poll::Ready(step.into_frame(|whole| {
            // Read whole, the connection goes back to the pool (or closes); broken, it closes.
            let conn = this.conn.take();
            if let (true, Some(conn), Some(release)) = (whole, conn, this.release.take()) {
                release.put(conn);
            }
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.conn {
            None => SizeHint::with_exact(0),
            Some(_) => self.framing.size_hint(),
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
