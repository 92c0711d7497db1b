//! The mesh identity layer's Prometheus series: mTLS handshakes and the workload
//! certificate's expiry. The engine registers them with its own in the process's one registry.

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use weir_http::metrics::registered;

/// Handshakes and the certificate.
#[derive(Clone, Debug)]
pub struct IdentityMetrics {
    /// Mesh mTLS handshakes by direction (`inbound`, `outbound`) and result (`ok`, `error`).
    pub handshakes: IntCounterVec,
    /// When the workload certificate expires (Unix seconds); 0 before the first.
    pub certificate_expiry: IntGauge,
}

impl IdentityMetrics {
    /// The series, registered in `registry`.
    #[allow(clippy::expect_used)] // constant names, labels and help: valid by construction
    pub fn register(registry: &Registry) -> Self {
        let handshakes = IntCounterVec::new(
            Opts::new(
                "weir_mesh_tls_handshakes_total",
                "Mesh mTLS handshakes, by direction and result",
            ),
            &["direction", "result"],
        )
        .expect("valid metric");
        let certificate_expiry = IntGauge::new(
            "weir_workload_certificate_expiry_timestamp_seconds",
            "When the workload certificate expires (0 before the first)",
        )
        .expect("valid metric");
        Self {
            handshakes: registered(registry, handshakes),
            certificate_expiry: registered(registry, certificate_expiry),
        }
    }
}
