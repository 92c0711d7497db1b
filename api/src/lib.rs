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
//! `compile` is a pure function: the controller, `weir-ingress --config-dir` and the tests all
//! call the same code. Everything in [`model`] is valid by construction; errors name the file,
//! the object and the field that was wrong.
//!
//! Features: `compile` (default) is the left half of the picture plus [`watch`], polling a
//! directory of objects — Kubernetes and Gateway API types, YAML. A sidecar turns it off: it
//! links only the model, its [`wire`] decoding and the [`proto`] messages. `logging` is the
//! binaries' log setup.

#[cfg(feature = "compile")]
pub mod compile;
#[cfg(feature = "compile")]
pub mod crds;
pub mod duration;
pub mod error;
#[cfg(feature = "compile")]
pub mod load;
pub mod model;
#[cfg(feature = "compile")]
pub mod objects;
#[cfg(feature = "compile")]
pub mod partial;
pub mod process;
pub mod proto;
#[cfg(feature = "compile")]
pub mod watch;
pub mod wire;

#[cfg(feature = "compile")]
pub use compile::compile;
pub use error::{ConfigError, Location};
#[cfg(feature = "compile")]
pub use load::load_dir;
pub use model::Snapshot;
#[cfg(feature = "compile")]
pub use objects::{Object, ObjectKey, Objects};
#[cfg(feature = "compile")]
pub use partial::{Compiled, Compiler, Rejection};

/// How every Weir binary logs: to stderr at `info`, or as `WEIR_LOG` says (`debug`,
/// `weir_proxy=trace`, ...).
#[cfg(feature = "logging")]
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
}
