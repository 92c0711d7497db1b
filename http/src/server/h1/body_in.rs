//! A request body read from the client connection. The body holds the connection while it is
//! read and gives it back to the connection's task the moment it ends (or is dropped).

use std::{
    future::poll_fn,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{ready, Context, Poll, Waker},
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::Conn;
use crate::transport::Transport;
use crate::{
    body::BoxError,
    codec::{Chunked, RequestBodyLength},
    wire::Framing,
};

/// The interim response a client that sent `Expect: 100-continue` waits for.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Where the connection is while the handler runs.
pub(super) enum Lent<T> {
    /// With the connection's task (the request has no body).
    Here(Conn<T>),
    /// With the request body, which gives it back through the slot.
    Body(Arc<Slot<T>>),
}

impl<T> Lent<T> {
    /// The connection, once the body has ended or been dropped, and whether the request was
    /// read to its end (else the connection cannot carry another one).
    pub(super) async fn reclaim(self) -> (Conn<T>, bool) {
        match self {
            Lent::Here(conn) => (conn, true),
            Lent::Body(slot) => {
                poll_fn(|cx| {
                    let mut state = crate::lock(&slot.state);
                    match state.back.take() {
                        Some(back) => Poll::Ready(back),
                        None => {
                            state.waker = Some(cx.waker().clone());
                            Poll::Pending
                        }
                    }
                })
                .await
            }
        }
    }
}

/// The connection on its way back from a request body.
pub(super) struct Slot<T> {
    state: Mutex<SlotState<T>>,
}

struct SlotState<T> {
    back: Option<(Conn<T>, bool)>,
    waker: Option<Waker>,
}

impl<T> Slot<T> {
    fn give_back(&self, conn: Conn<T>, whole: bool) {
        let mut state = crate::lock(&self.state);
        state.back = Some((conn, whole));
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }
}

/// A request body streaming from the client connection.
pub(super) struct RequestBody<T> {
    conn: Option<Conn<T>>,
    framing: Framing,
    /// Bytes of `100 Continue` still to send before reading: `Some` only when the client
    /// asked for it and has not been answered yet.
    continuing: Option<usize>,
    slot: Arc<Slot<T>>,
}

impl<T> RequestBody<T> {
    /// Gives the connection back; `whole` when the body was read to its end.
    fn end(&mut self, whole: bool) {
        if let Some(conn) = self.conn.take() {
            self.slot.give_back(conn, whole);
        }
    }
}

impl<T: Transport> RequestBody<T> {
    /// A body of `length` on `conn`; the slot through which the connection comes back.
    pub(super) fn new(
        conn: Conn<T>,
        length: RequestBodyLength,
        expect_continue: bool,
    ) -> (Self, Arc<Slot<T>>) {
        let slot = Arc::new(Slot {
            state: Mutex::new(SlotState {
                back: None,
                waker: None,
            }),
        });
        let framing = match length {
            RequestBodyLength::Chunked => Framing::Chunked(Chunked::default()),
            RequestBodyLength::Length(n) => Framing::Length(n),
            RequestBodyLength::Empty => Framing::Length(0),
        };
        let body = Self {
            conn: Some(conn),
            framing,
            // Bytes already sent behind the head need no invitation.
            continuing: expect_continue.then_some(0),
            slot: slot.clone(),
        };
        (body, slot)
    }

    /// Sends `100 Continue` if the client waits for it and nothing of the body is here yet.
    fn poll_continue(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        while let Some(sent) = self.continuing {
            if sent == 0 && !conn.read.is_empty() {
                // The body is already on its way: no invitation needed.
                self.continuing = None;
            } else if sent == CONTINUE.len() {
                ready!(Pin::new(&mut conn.io).poll_flush(cx))?;
                self.continuing = None;
            } else {
                let n = ready!(Pin::new(&mut conn.io).poll_write(cx, &CONTINUE[sent..]))?;
                if n == 0 {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                self.continuing = Some(sent + n);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T> Drop for RequestBody<T> {
    /// A body dropped before its end: if the rest of it has already arrived (a small body sent
    /// with its head), it is skipped and the connection can still carry another request, as
    /// nginx does; otherwise the connection closes after the response.
    fn drop(&mut self) {
        let whole = self
            .conn
            .as_mut()
            .is_some_and(|conn| self.framing.skip_buffered(&mut conn.read));
        self.end(whole);
    }
}

impl<T: Transport> HttpBody for RequestBody<T> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Err(e) = ready!(this.poll_continue(cx)) {
            this.end(false);
            return Poll::Ready(Some(Err(e.into())));
        }
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        let step = ready!(this.framing.poll_step(conn, cx));
        Poll::Ready(step.into_frame(|whole| this.end(whole)))
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
