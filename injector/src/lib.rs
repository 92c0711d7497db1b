//! weir-injector: the mutating admission webhook that adds Weir's sidecar to pods.
//!
//! ```text
//!  API server ──AdmissionReview (Pod CREATE)──▶ /inject ──▶ review::answer ──▶ inject::pod
//!             ◀──────────── allowed + JSON patch (or unchanged, or denied with why) ──
//! ```

pub mod config;
pub mod inject;
pub mod metrics;
pub mod review;
pub mod server;
