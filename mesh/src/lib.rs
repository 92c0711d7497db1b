//! weir-mesh: who a workload is and how it proves it. It knows certificates, SPIFFE IDs and
//! the controller's streams, and nothing of routes.
//!
//! ```text
//!  controller ─ Identity.Certify ─▶ identity::maintain ─▶ WorkloadIdentity (renewed at half life)
//!                                                        │
//!            mtls::server_config (inbound) ◀─────────────┴────▶ mtls::Dialer (outbound: whom each
//!                                                                endpoint of a cluster must prove)
//!  controller ─ ConfigDiscovery.Watch ─▶ control::follow ─▶ control::Apply (the engine installs)
//! ```

pub mod control;
pub mod identity;
pub mod metrics;
pub mod mtls;

// Shared with the controller; re-exported so that this crate's modules say `crate::lock`.
pub(crate) use weir_api::process::lock;
