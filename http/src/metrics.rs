//! The protocol layer's Prometheus series: connections in both directions and TLS handshakes
//! on a listener. The engine registers them with its own in the process's one registry.

use prometheus::{core::Collector, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Registers `collector` in `registry` and returns it. Names are fixed and distinct, so a
/// fresh registry never refuses one; a registry that already holds the name keeps its own and
/// this copy counts unseen, which beats taking the process down.
pub fn registered<C: Collector + Clone + 'static>(registry: &Registry, collector: C) -> C {
    if let Err(error) = registry.register(Box::new(collector.clone())) {
        tracing::warn!(%error, "a metric could not be registered");
    }
    collector
}

/// Connections and handshakes.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    /// Open client connections.
    pub downstream_connections: IntGauge,
    /// Client connections accepted since start.
    pub downstream_accepted: IntCounter,
    /// Client HTTP/1.1 keep-alive connections idle between requests, holding no buffers.
    pub downstream_idle: IntGauge,
    /// Open connections to backends.
    pub upstream_connections: IntGauge,
    /// Connection attempts to backends by result (`ok`, `error`).
    pub upstream_connects: IntCounterVec,
    /// TLS handshakes on the TLS listener by result (`ok`, `error`, `timeout`).
    pub tls_handshakes: IntCounterVec,
}

impl HttpMetrics {
    /// The series, registered in `registry`.
    #[allow(clippy::expect_used)] // constant names, labels and help: valid by construction
    pub fn register(registry: &Registry) -> Self {
        let gauge = |name: &str, help: &str| {
            registered(registry, IntGauge::new(name, help).expect("valid metric"))
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let vec = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registered(registry, vec)
        };
        Self {
            downstream_connections: gauge("weir_downstream_connections", "Open client connections"),
            downstream_accepted: registered(
                registry,
                IntCounter::new(
                    "weir_downstream_connections_total",
                    "Client connections accepted",
                )
                .expect("valid metric"),
            ),
            downstream_idle: gauge(
                "weir_downstream_idle_connections",
                "Client keep-alive connections idle between requests, holding no buffers",
            ),
            upstream_connections: gauge(
                "weir_upstream_connections",
                "Open connections to backends",
            ),
            upstream_connects: counter_vec(
                "weir_upstream_connects_total",
                "Connection attempts to backends, by result",
                &["result"],
            ),
            tls_handshakes: counter_vec(
                "weir_tls_handshakes_total",
                "TLS handshakes on the TLS listener, by result (ok, error, timeout; passthrough: handed unopened to a TLSRoute's backend)",
                &["result"],
            ),
        }
    }
}
