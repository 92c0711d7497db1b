//! weir-sidecar: the east-west proxy next to every meshed workload.
//!
//! ```text
//!  caller ─▶ inbound :15006 ─ mode (STRICT/PERMISSIVE/DISABLED) ─ mTLS ─ AccessPolicy ─▶ app (localhost)
//!  app ─▶ outbound :15001 ─ Host or original destination → Service ─ engine pool ─ mTLS ─▶ peer's inbound
//!  controller ─ SidecarView ─▶ view::split ─▶ ConfigStore<MeshState>: clusters + policy, services
//!  controller ─ Identity.Certify ─▶ WorkloadIdentity (renewed at half life) ─▶ both directions
//! ```

pub mod access;
pub mod health;
pub mod inbound;
pub mod init;
pub mod metrics;
pub mod opaque;
pub mod outbound;
pub mod view;

#[cfg(test)]
mod tests;

/// The header carrying the caller's SPIFFE ID to the app.
pub const PEER_IDENTITY: &str = "x-weir-peer-identity";
