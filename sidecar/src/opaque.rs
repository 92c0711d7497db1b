//! Opaque TCP: bytes copied both ways, and where a redirected connection was going.

use std::net::SocketAddr;

use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

/// Where a connection redirected by iptables was going (`SO_ORIGINAL_DST`); `None` when it was
/// not redirected (it came to the listener's own address).
pub fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    let dst = socket2::SockRef::from(stream)
        .original_dst_v4()
        .ok()?
        .as_socket()?;
    (Some(dst) != stream.local_addr().ok()).then_some(dst)
}

/// Copies bytes both ways until both sides are done.
pub async fn splice<A, B>(mut a: A, mut b: B)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    if let Err(error) = tokio::io::copy_bidirectional(&mut a, &mut b).await {
        tracing::debug!(%error, "opaque connection ended with an error");
    }
}
