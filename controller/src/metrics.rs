//! The controller's metrics, served on its admin port.

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use weir_api::model::StrictCoverage;

/// Every metric the controller exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `weir_controller_snapshot_version`.
    pub snapshot_version: IntGauge,
    /// `weir_controller_compile_seconds`.
    pub compile_seconds: Histogram,
    /// `weir_controller_rejected_objects`.
    pub rejected_objects: IntGauge,
    /// `weir_controller_connected_nodes{role,node_version}`.
    pub connected_nodes: IntGaugeVec,
    /// `weir_controller_acks_total{role,result}`.
    pub acks: IntCounterVec,
    /// `weir_controller_refusing_nodes{role}`: nodes whose latest reply was a NACK.
    pub refusing_nodes: IntGaugeVec,
    /// `weir_controller_nodes_behind{role}`: nodes that have not applied their latest view
    /// within 30 s of its publication (set when scraped).
    pub nodes_behind: IntGaugeVec,
    /// `weir_controller_ca_expiry_timestamp_seconds`: when the first of the trust bundle's
    /// roots expires (set when scraped).
    pub ca_expiry: IntGauge,
    /// `weir_controller_push_seconds`: from a view's publication to a node's ACK of it.
    pub push_seconds: Histogram,
    /// `weir_controller_certificates_total{result}`.
    pub certificates: IntCounterVec,
    /// `weir_controller_streams_refused_total{reason}`.
    pub streams_refused: IntCounterVec,
    /// `weir_controller_strict_uncovered_pods{policy}`: per STRICT MeshTLSPolicy
    /// (`namespace/name`), the pods it governs that still take plaintext.
    pub strict_uncovered_pods: IntGaugeVec,
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        let registry = Registry::new();
        let seconds = exponential_buckets(0.0005, 2.0, 16).expect("valid buckets");
        let metrics = Self {
            snapshot_version: IntGauge::new(
                "weir_controller_snapshot_version",
                "Version of the last accepted compile",
            )
            .expect("valid metric"),
            compile_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "weir_controller_compile_seconds",
                    "Time to load and compile the objects",
                )
                .buckets(seconds.clone()),
            )
            .expect("valid metric"),
            rejected_objects: IntGauge::new(
                "weir_controller_rejected_objects",
                "Objects whose current version was refused at the last compile",
            )
            .expect("valid metric"),
            connected_nodes: IntGaugeVec::new(
                Opts::new(
                    "weir_controller_connected_nodes",
                    "Data-plane nodes with an open config stream",
                ),
                &["role", "node_version"],
            )
            .expect("valid metric"),
            acks: IntCounterVec::new(
                Opts::new(
                    "weir_controller_acks_total",
                    "Versions nodes applied (ack) or refused (nack)",
                ),
                &["role", "result"],
            )
            .expect("valid metric"),
            refusing_nodes: IntGaugeVec::new(
                Opts::new(
                    "weir_controller_refusing_nodes",
                    "Connected nodes refusing their current view (they serve an older one)",
                ),
                &["role"],
            )
            .expect("valid metric"),
            nodes_behind: IntGaugeVec::new(
                Opts::new(
                    "weir_controller_nodes_behind",
                    "Connected nodes that have not applied their latest view within 30s of its publication",
                ),
                &["role"],
            )
            .expect("valid metric"),
            ca_expiry: IntGauge::new(
                "weir_controller_ca_expiry_timestamp_seconds",
                "When the first of the trust bundle's CA roots expires (Unix seconds)",
            )
            .expect("valid metric"),
            push_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "weir_controller_push_seconds",
                    "From a view's publication to a node's acknowledgement of it",
                )
                .buckets(seconds),
            )
            .expect("valid metric"),
            certificates: IntCounterVec::new(
                Opts::new(
                    "weir_controller_certificates_total",
                    "Certificate requests, by result",
                ),
                &["result"],
            )
            .expect("valid metric"),
            streams_refused: IntCounterVec::new(
                Opts::new(
                    "weir_controller_streams_refused_total",
                    "Config streams refused, by reason",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            strict_uncovered_pods: IntGaugeVec::new(
                Opts::new(
                    "weir_controller_strict_uncovered_pods",
                    "Pods a STRICT MeshTLSPolicy governs that still take plaintext (opted out of injection or of inbound ports)",
                ),
                &["policy"],
            )
            .expect("valid metric"),
            registry,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(metrics.snapshot_version.clone()),
            Box::new(metrics.compile_seconds.clone()),
            Box::new(metrics.rejected_objects.clone()),
            Box::new(metrics.connected_nodes.clone()),
            Box::new(metrics.acks.clone()),
            Box::new(metrics.refusing_nodes.clone()),
            Box::new(metrics.nodes_behind.clone()),
            Box::new(metrics.ca_expiry.clone()),
            Box::new(metrics.push_seconds.clone()),
            Box::new(metrics.certificates.clone()),
            Box::new(metrics.streams_refused.clone()),
            Box::new(metrics.strict_uncovered_pods.clone()),
        ];
        for c in collectors {
            metrics
                .registry
                .register(c)
                .expect("distinct names in a fresh registry");
        }
        metrics
    }

    /// Sets `weir_controller_strict_uncovered_pods` to the last compile's STRICT policies:
    /// one series per policy (0 when it covers every pod), none for a policy that is gone.
    pub fn set_strict_coverage(&self, strict: &[StrictCoverage]) {
        self.strict_uncovered_pods.reset();
        for policy in strict {
            self.strict_uncovered_pods
                .with_label_values(&[policy.policy()])
                .set(policy.uncovered.len() as i64);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
