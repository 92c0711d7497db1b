//! Corked writes for an HTTP/2 connection: everything the connection writes in one turn of its
//! task goes out in one write (over TLS, in as few records as fit).
//!
//! ```text
//!   hyper h2 ── poll_write ──▶ Corked (copies into `out`; flush is a no-op)
//!   Flushing(conn): poll conn ──▶ then drain `out` into the transport once
//! ```
//!
//! The h2 crate writes a DATA frame of 256 bytes or more as a buffer of its own beside the frame
//! head and then flushes before it takes the next frame, so with many streams on a connection
//! each response cost a `writev` (and a TLS record) of its own: nginx answers the same load with
//! one write per batch. Here the connection's writes gather in `out` while its task runs, and
//! the transport sees them once when the turn ends. At most [`MAX`] bytes gather before they are
//! written; a larger write goes straight through after them. A transport that cannot take more
//! makes writes wait (`Pending`), as it would without the cork.

use std::{
    future::Future,
    io::{self, IoSlice},
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{ready, Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What gathers before it is written regardless of the turn.
pub(super) const MAX: usize = 64 * 1024;

struct Shared<I> {
    io: I,
    out: Vec<u8>,
    /// How much of `out` has been written.
    sent: usize,
    /// Why the transport failed, for the connection's next write.
    failed: Option<io::ErrorKind>,
}

/// A drained buffer larger than this is given back: an idle connection holds none of a burst.
const KEEP: usize = 16 * 1024;

impl<I: AsyncWrite + Unpin> Shared<I> {
    /// Writes what gathered, then flushes the transport (a TLS stream writes its records).
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(kind) = self.failed {
            return Poll::Ready(Err(kind.into()));
        }
        let result = ready!(self.write_out(cx));
        if let Err(e) = &result {
            self.failed = Some(e.kind());
        }
        Poll::Ready(result)
    }

    fn write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        if self.out.capacity() > KEEP {
            self.out = Vec::new();
        }
        self.out.clear();
        self.sent = 0;
        Pin::new(&mut self.io).poll_flush(cx)
    }
}

/// The transport as the connection sees it.
pub(super) struct Corked<I>(Arc<Mutex<Shared<I>>>);

impl<I> Clone for Corked<I> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

/// Drains the cork after each turn of the connection's future; once the connection is done,
/// finishes writing what it left before giving its result.
pub(super) struct Flushing<F, I, O> {
    conn: F,
    cork: Arc<Mutex<Shared<I>>>,
    done: Option<O>,
}

/// Corks `io`: give it to the connection and wrap the connection's future with
/// [`Flushing::new`].
pub(super) fn cork<I>(io: I) -> Corked<I> {
    Corked(Arc::new(Mutex::new(Shared {
        io,
        out: Vec::new(),
        sent: 0,
        failed: None,
    })))
}

impl<I> Corked<I> {
    fn lock(&self) -> MutexGuard<'_, Shared<I>> {
        // Only this connection's task takes it: a poisoned lock is a panic already unwinding.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<F, I, O> Flushing<F, I, O> {
    /// `conn`, serving over `corked`.
    pub(super) fn new(conn: F, corked: &Corked<I>) -> Self {
        Self {
            conn,
            cork: corked.0.clone(),
            done: None,
        }
    }
}

impl<F, I, O> Future for Flushing<F, I, O>
where
    F: Future<Output = O> + Unpin,
    I: AsyncWrite + Unpin,
    O: Unpin,
{
    type Output = O;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<O> {
        let this = &mut *self;
        if this.done.is_none() {
            if let Poll::Ready(result) = Pin::new(&mut this.conn).poll(cx) {
                this.done = Some(result);
            }
        }
        let drained = this
            .cork
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(cx);
        // Pending: the transport wakes this task when it can take more. An error: remembered,
        // the connection's next write fails with it.
        match (this.done.take(), drained) {
            (Some(result), Poll::Ready(_)) => Poll::Ready(result),
            (done, _) => {
                this.done = done;
                Poll::Pending
            }
        }
    }
}

impl<F, I, O> Flushing<F, I, O> {
    /// The connection, for its own calls (graceful shutdown).
    pub(super) fn conn(&mut self) -> &mut F {
        &mut self.conn
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Corked<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.lock().io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Corked<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut shared = self.lock();
        if let Some(kind) = shared.failed {
            return Poll::Ready(Err(kind.into()));
        }
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if shared.out.len() + len > MAX {
            ready!(shared.drain(cx))?;
            if len >= MAX {
                return Pin::new(&mut shared.io).poll_write_vectored(cx, bufs);
            }
        }
        for buf in bufs {
            shared.out.extend_from_slice(buf);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written when the connection's turn ends (Flushing).
        match self.lock().failed {
            Some(kind) => Poll::Ready(Err(kind.into())),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut shared = self.lock();
        ready!(shared.drain(cx))?;
        Pin::new(&mut shared.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn writes_of_one_turn_reach_the_transport_together_and_in_order() {
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        let mut corked = cork(ours);
        let flusher = Flushing::new(std::future::pending::<()>(), &corked);
        // One turn: three writes, nothing on the wire until the turn ends.
        corked.write_all(b"one ").await.unwrap();
        corked.write_all(b"two ").await.unwrap();
        corked.flush().await.unwrap();
        corked.write_all(b"three").await.unwrap();
        let mut peek = [0; 16];
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(50), theirs.read(&mut peek))
                .await;
        assert!(early.is_err(), "bytes went out before the turn ended");
        let _ = tokio::time::timeout(std::time::Duration::from_millis(10), flusher).await;
        let mut got = vec![0; 13];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"one two three");
    }

    #[tokio::test]
    async fn a_write_past_the_limit_goes_out_after_what_gathered_and_shutdown_drains() {
        let (ours, mut theirs) = tokio::io::duplex(4 * MAX);
        let mut corked = cork(ours);
        corked.write_all(b"head").await.unwrap();
        let big = vec![7u8; MAX + 1];
        corked.write_all(&big).await.unwrap();
        corked.write_all(b"tail").await.unwrap();
        corked.shutdown().await.unwrap();
        let mut got = Vec::new();
        theirs.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), 4 + MAX + 1 + 4);
        assert!(got.starts_with(b"head") && got.ends_with(b"tail"));
        assert!(got[4..4 + MAX + 1].iter().all(|&b| b == 7));
    }

    #[tokio::test]
    async fn a_stuck_transport_holds_writes_back_at_the_limit() {
        // The peer never reads and its pipe holds little: writes past MAX wait.
        let (ours, _theirs) = tokio::io::duplex(1024);
        let mut corked = cork(ours);
        let chunk = vec![1u8; 8 * 1024];
        let mut taken = 0;
        let filling = async {
            loop {
                corked.write_all(&chunk).await.unwrap();
                taken += chunk.len();
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_millis(100), filling).await;
        assert!(
            taken <= MAX + 1024,
            "{taken} bytes taken for a peer that reads nothing"
        );
    }
}
