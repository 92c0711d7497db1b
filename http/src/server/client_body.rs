//! A request body as it comes from a client, over HTTP/1.1 or HTTP/2: whatever goes wrong with
//! it is the client's doing, and a client that stops sending it mid-way is cut off.
//!
//! Its failures (a malformed chunked coding, a connection cut short, a stream reset) come out
//! as [`ClientBodyError`], which the forward path recognises wherever it surfaces (the backend
//! client's error for a body it was sending, a body read for replay) and answers as the
//! client's error (400, or 408 for the timeout), counted downstream and never against the
//! backend. The timeout is per read, like nginx's `client_body_timeout`: it runs only while
//! the body is being waited on, and restarts with every frame, so a slow but steady upload
//! goes on while one that trickles a byte now and then cannot hold a backend connection open
//! indefinitely.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::body::{BoxError, ClientBodyError};

pin_project_lite::pin_project! {
    /// A client's request body with a per-read timeout; its errors are [`ClientBodyError`]s.
    pub struct ClientBody<B> {
        #[pin]
        inner: B,
        // Zero: no timeout.
        timeout: Duration,
        // Made the first time the body is waited on (most bodies arrive with their head and
        // never need one), reset after each frame.
        timer: Option<Pin<Box<Sleep>>>,
        // Whether `timer` runs for the current wait (it is re-armed after each frame).
        armed: bool,
    }
}

impl<B> ClientBody<B> {
    /// Wraps `inner`; fails with [`ClientBodyError::TimedOut`] once it has been waited on for
    /// `timeout` without a frame coming (never when `timeout` is zero).
    pub fn new(inner: B, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            timer: None,
            armed: false,
        }
    }
}

impl<B> HttpBody for ClientBody<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                *this.armed = false;
                return Poll::Ready(
                    frame.map(|f| f.map_err(|e| ClientBodyError::Failed(e.into()).into())),
                );
            }
            Poll::Pending if this.timeout.is_zero() => return Poll::Pending,
            Poll::Pending => {}
        }
        // The clock is read when a wait begins, not at every poll of a wait (a slow upload's
        // reader polls again and again while it waits).
        let timeout = *this.timeout;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if !*this.armed {
            timer.as_mut().reset(Instant::now() + timeout);
            *this.armed = true;
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(Some(Err(ClientBodyError::TimedOut(*this.timeout).into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;

    use super::*;
    use crate::error::ProxyError;

    type Sent = Result<Frame<Bytes>, BoxError>;

    fn channel_body(
        timeout: Duration,
    ) -> (
        mpsc::Sender<Sent>,
        ClientBody<StreamBody<ReceiverStream<Sent>>>,
    ) {
        let (tx, rx) = mpsc::channel(4);
        (
            tx,
            ClientBody::new(StreamBody::new(ReceiverStream::new(rx)), timeout),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_for_the_timeout_fails_as_the_clients_timeout() {
        let (tx, mut body) = channel_body(Duration::from_secs(60));
        // Each byte comes within the timeout: the timer restarts with every frame.
        for _ in 0..3 {
            let send = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(59)).await;
                let _ = send.send(Ok(Frame::data(Bytes::from_static(b"x")))).await;
            });
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), "x");
        }
        let started = Instant::now();
        let error = body.frame().await.unwrap().unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        assert_eq!(
            ProxyError::from_client_body(&*error),
            Some(ProxyError::ClientTimeout)
        );
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_timeout_waits_as_long_as_it_takes() {
        let (tx, mut body) = channel_body(Duration::ZERO);
        let mut next = Box::pin(body.frame());
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let pending = next
            .as_mut()
            .poll(&mut Context::from_waker(std::task::Waker::noop()));
        assert!(pending.is_pending());
        tx.send(Ok(Frame::data(Bytes::from_static(b"late"))))
            .await
            .unwrap();
        assert_eq!(next.await.unwrap().unwrap().into_data().unwrap(), "late");
    }

    #[tokio::test]
    async fn the_bodys_own_failures_are_the_clients() {
        let (tx, mut body) = channel_body(Duration::from_secs(60));
        tx.send(Err("malformed chunked body".into())).await.unwrap();
        let error = body.frame().await.unwrap().unwrap_err();
        assert_eq!(
            ProxyError::from_client_body(&*error),
            Some(ProxyError::BadRequest)
        );
        // Any error that does not come from a client body is not the client's.
        let other: BoxError = "backend reset".into();
        assert_eq!(ProxyError::from_client_body(&*other), None);
    }
}
