//! weir-proxy: the data-plane engine that the ingress gateway and the sidecar compose. It
//! stands on the protocol (weir-http) and the mesh identity (weir-mesh) and names neither role.
//!
//! ```text
//!  weir_http::server ─▶ role pipeline (ingress/src/stack, sidecar inbound/outbound)
//!                        │ normalize → router → (role: auth, limits, AccessPolicy) → filter chain
//!                        └▶ forward: upgrade, version, replay body, mirrors, balance + hash key,
//!                           retries/breaker/deadlines (resilience) ─▶ weir_http::upstream ─▶ endpoint
//!                        headers, metrics, access_log on the way
//!  weir_http::server (TLS listener) ─▶ stream: a TLSRoute by SNI, passed through or after the
//!                        handshake ─▶ an endpoint, bytes both ways
//!  snapshot (controller, or the ingress's --config-dir) ─▶ config::Installer (dialer, pools, health checks,
//!                        certificates) ─▶ ConfigStore<RoleState> (atomic swap) ─▶ every new request
//! ```
//!
//! One concern per module; each role assembles them in one place.

pub mod access_log;
pub mod admin;
pub mod backend_tls;
pub mod balance;
pub mod config;
pub mod filter;
pub mod forward;
pub mod headers;
pub mod metrics;
pub mod normalize;
pub mod resilience;
pub mod router;
pub mod stream;
pub mod tls;
pub mod trace;

// Shared with the controller; re-exported so that the engine's modules say `crate::lock`.
pub use weir_api::process::{lock, unix_now};
