//! weir-proxy: the data-plane engine that the ingress gateway and the sidecar share.
//!
//! ```text
//!  client ─▶ server (h1/h2c, limits, drain) ─▶ role stack (ingress/src/stack/) ─▶ upstream pool ─▶ backend
//!                                              │ normalize → router → filters → balance
//!                                              └ headers, metrics, access_log on the way
//!  control::follow (or the ingress's --config-dir) ─▶ ConfigStore (atomic swap) ─▶ every new request
//! ```
//!
//! One concern per module; each role assembles them in one place.

pub mod access_log;
pub mod admin;
pub mod balance;
pub mod body;
pub mod codec;
pub mod config;
pub mod control;
pub mod detect;
pub mod error;
pub mod filter;
pub mod forward;
pub mod headers;
pub mod identity;
pub mod metrics;
pub mod mtls;
pub mod normalize;
pub mod resilience;
pub mod router;
pub mod server;
pub mod tls;
pub mod upgrade;
pub mod upstream;
mod wire;

// Shared with the controller; re-exported so that the engine's modules say `crate::lock`.
pub use weir_api::process::{lock, unix_now};

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
