//! weir-http: the HTTP protocol layer of Weir's data plane. It knows HTTP and nothing of
//! routes, policies or meshes.
//!
//! ```text
//!  accepted socket ─▶ detect (h1 / h2c preface / TLS / opaque) ─▶ server (h1 codec, h2 via hyper,
//!                     limits, timeouts, drain) ─▶ handler(Peer, Request) ─▶ Response
//!  Request ─▶ upstream (h1 pool, h2 via hyper; TCP, or a PeerDialer's mTLS) ─▶ backend
//!             upgrade: a protocol switch spliced between the two once both sides agreed
//! ```
//!
//! The codec and body types are shared by server and client; `hop` says which fields are the
//! connection's own. Errors are classified here ([`error::ProxyError`]: what the client is
//! told, which side was at fault); the cause is logged where it is known.

pub mod body;
pub mod codec;
pub mod detect;
pub mod error;
pub mod hop;
pub mod metrics;
pub mod server;
pub mod transport;
pub mod upgrade;
pub mod upstream;
mod wire;

/// ALPN id of HTTP/2.
pub const H2_ALPN: &[u8] = b"h2";
/// ALPN id of HTTP/1.1.
pub const HTTP1_ALPN: &[u8] = b"http/1.1";

// Shared with the controller; re-exported so that this crate's modules say `crate::lock`.
pub(crate) use weir_api::process::lock;

/// A connected loopback TCP pair (client, server), for tests.
#[cfg(test)]
pub(crate) async fn tcp_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}
