//! Opaque TCP: bytes copied both ways, and where a redirected connection was going.

use std::net::SocketAddr;

use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

/// Where a connection redirected by iptables (or ip6tables) was going (`SO_ORIGINAL_DST`);
/// `None` when it was not redirected (it came to the listener's own address). An IPv4
/// connection accepted on a dual-stack socket is asked the IPv4 way.
pub fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    let local = SocketAddr::new(local.ip().to_canonical(), local.port());
    let socket = socket2::SockRef::from(stream);
    let dst = match local {
        SocketAddr::V4(_) => socket.original_dst_v4(),
        SocketAddr::V6(_) => socket.original_dst_v6(),
    };
    let dst = dst.ok()?.as_socket()?;
    let dst = SocketAddr::new(dst.ip().to_canonical(), dst.port());
    (dst != local).then_some(dst)
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
