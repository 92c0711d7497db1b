//! weir-proxy: the data-plane engine that the ingress gateway and the sidecar share.
//!
//! ```text
//!  client ─▶ server (h1/h2c, limits, drain) ─▶ role stack (ingress/src/stack/) ─▶ upstream pool ─▶ backend
//!                                              │ normalize → router → filters → balance
//!                                              └ headers, metrics, access_log on the way
//!  config::watch_dir ─▶ weir_api::compile ─▶ ConfigStore (atomic swap) ─▶ every new request
//! ```
//!
//! One concern per module; each role assembles them in one place.

pub mod access_log;
pub mod admin;
pub mod balance;
pub mod config;
pub mod filter;
pub mod forward;
pub mod headers;
pub mod metrics;
pub mod normalize;
pub mod resilience;
pub mod router;
pub mod tls;

// Shared with the controller; re-exported so that the engine's modules say `crate::lock`.
pub use weir_api::process::{lock, unix_now};
