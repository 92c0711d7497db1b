use std::{
    net::SocketAddr,
    sync::atomic::{AtomicUsize, Ordering},
    task::Context,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::watch,
};

use super::*;

/// A client that never sends, whose transport once reports it readable when nothing came.
struct Spurious {
    readable_calls: Arc<AtomicUsize>,
}

impl AsyncRead for Spurious {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

impl AsyncWrite for Spurious {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Transport for Spurious {
    fn parks(&self) -> bool {
        true
    }

    fn poll_readable(&self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.readable_calls.fetch_add(1, Ordering::Relaxed) {
            0 => Poll::Ready(Ok(())),
            _ => Poll::Pending,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_spurious_wake_up_of_a_parked_connection_parks_it_again() {
    let idle = IntGauge::new("idle", "idle").unwrap();
    let settings = Settings {
        header_read_timeout: Duration::from_secs(10),
        max_head: 64 * 1024,
        idle: idle.clone(),
        body_timeout: Duration::from_secs(60),
    };
    let readable_calls = Arc::new(AtomicUsize::new(0));
    let io = Spurious {
        readable_calls: readable_calls.clone(),
    };
    let (_stop, shutdown) = watch::channel(false);
    let handler = Arc::new(|_: Peer, _: Request<Body>| async { Response::new(body::empty()) });
    let peer = Peer {
        addr: SocketAddr::from(([127, 0, 0, 1], 1)),
        tls: false,
    };
    let serving = tokio::spawn(async move { serve(io, handler, peer, &settings, shutdown).await });

    // Parked after the park delay, then woken for nothing on its first wait for readability.
    tokio::time::sleep(PARK_AFTER + Duration::from_millis(10)).await;
    assert_eq!(readable_calls.load(Ordering::Relaxed), 1);
    assert_eq!(idle.get(), 0, "woken, it holds its buffers again");
    // Nothing came: after the park delay it gives them back and waits on readiness again.
    tokio::time::sleep(PARK_AFTER).await;
    assert_eq!(idle.get(), 1, "parked again");
    assert_eq!(readable_calls.load(Ordering::Relaxed), 2);
    serving.abort();
}
