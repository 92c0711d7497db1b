//! The sidecar's own metrics, registered next to the engine's (one `/metrics`).

use prometheus::{exponential_buckets, HistogramOpts, HistogramVec, IntCounterVec, Opts};
use std::time::Instant;

use weir_proxy::metrics::{status_class, Metrics};

/// Requests, connections and refusals by direction, peer identity and destination.
#[derive(Clone)]
pub struct MeshMetrics {
    /// Requests by direction (`inbound`, `outbound`), peer identity (the caller inbound, the
    /// endpoint's identity outbound; `plaintext` without mTLS), destination service and
    /// status class.
    pub requests: IntCounterVec,
    /// Time to response headers by direction and destination service.
    pub duration: HistogramVec,
    /// Requests and connections the AccessPolicy denied, by peer identity and policy.
    pub denied: IntCounterVec,
    /// Connections by direction and what they spoke (`mtls`, `http`, `opaque`).
    pub connections: IntCounterVec,
    /// Inbound connections refused by the mTLS mode (`plaintext` under STRICT).
    pub refused: IntCounterVec,
    /// Connections that sent nothing within the detection timeout and became opaque TCP,
    /// by direction.
    pub detect_timeouts: IntCounterVec,
}

impl MeshMetrics {
    /// Records one request: its count by `direction`, `peer`, `destination` and the status
    /// class of `response`, and its time since `started`.
    pub fn request(
        &self,
        direction: &str,
        peer: &str,
        destination: &str,
        status: http::StatusCode,
        started: Instant,
    ) {
        self.requests
            .with_label_values(&[direction, peer, destination, status_class(status)])
            .inc();
        self.duration
            .with_label_values(&[direction, destination])
            .observe(started.elapsed().as_secs_f64());
    }

    /// Creates them in `metrics`' registry.
    #[allow(clippy::expect_used)]
    pub fn new(metrics: &Metrics) -> Self {
        let latency = exponential_buckets(0.0001, 2.0, 20).unwrap_or_default();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let counter = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            metrics
                .registry()
                .register(Box::new(counter.clone()))
                .expect("metric registered once");
            counter
        };
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "weir_mesh_request_duration_seconds",
                "Time from request to response headers, by direction and destination",
            )
            .buckets(latency),
            &["direction", "destination"],
        )
        .expect("valid metric");
        metrics
            .registry()
            .register(Box::new(duration.clone()))
            .expect("metric registered once");
        Self {
            requests: counter(
                "weir_mesh_requests_total",
                "Mesh requests by direction, peer identity, destination and status class",
                &["direction", "peer", "destination", "status"],
            ),
            duration,
            denied: counter(
                "weir_mesh_access_denied_total",
                "Requests and connections denied by AccessPolicy, by peer identity and policy",
                &["peer", "policy"],
            ),
            connections: counter(
                "weir_mesh_connections_total",
                "Connections by direction and protocol (mtls, http, opaque)",
                &["direction", "protocol"],
            ),
            refused: counter(
                "weir_mesh_refused_connections_total",
                "Inbound connections the mTLS mode refused, by what they spoke",
                &["reason"],
            ),
            detect_timeouts: counter(
                "weir_mesh_protocol_detect_timeouts_total",
                "Connections silent for the detection timeout, proxied as opaque TCP",
                &["direction"],
            ),
        }
    }
}
