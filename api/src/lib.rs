//! weir-api: Weir's configuration model.
//!
//! The only configuration language is Kubernetes objects. This crate turns them into one
//! plain-Rust [`Snapshot`] that the data plane serves:
//!
//! ```text
//!  YAML files ──load──▶ Objects (k8s-openapi / gateway-api types) ──compile──▶ Snapshot
//!  (or the API server)          typed, with where each came from          routes + clusters
//! ```
//!
//! [`compile`] is a pure function: the controller, `weir-ingress --config-dir` and the tests all
//! call the same code. Everything in [`model`] is valid by construction; errors name the file,
//! the object and the field that was wrong.

pub mod compile;
pub mod crds;
pub mod duration;
pub mod error;
pub mod load;
pub mod model;
pub mod objects;
pub mod process;
pub mod proto;
pub mod wire;

pub use compile::compile;
pub use error::{ConfigError, Location};
pub use load::load_dir;
pub use model::Snapshot;
pub use objects::{Object, ObjectKey, Objects};

/// How every Weir binary logs: to stderr at `info`, or as `WEIR_LOG` says (`debug`,
/// `weir_proxy=trace`, ...).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
}
