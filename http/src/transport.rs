//! The transport a client connection runs on (TCP, or TLS over it), and whether it can wait
//! for readiness without a buffer: what the HTTP/1.1 server parks idle connections with and
//! what a protocol switch hands over.

use std::{
    io,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

/// A client connection's transport.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Whether [`Transport::poll_readable`] can tell readiness, so that an idle connection
    /// needs no read buffer to wait for its next request.
    fn parks(&self) -> bool {
        false
    }

    /// Readiness to read, without a buffer to read into. Only called when
    /// [`Transport::parks`].
    fn poll_readable(&self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Pending
    }

    /// Makes closing the connection a reset (RST) rather than an orderly end (FIN): how a
    /// refused connection is ended, so the client can tell refusal from an empty answer.
    fn reset(&self) {}
}

impl Transport for TcpStream {
    fn parks(&self) -> bool {
        true
    }

    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }

    fn reset(&self) {
        let _ = self.set_zero_linger();
    }
}

impl Transport for tokio_rustls::server::TlsStream<TcpStream> {
    fn reset(&self) {
        self.get_ref().0.reset();
    }
}
