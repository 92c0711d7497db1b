//! Prometheus metrics for the data plane, in one registry served at the admin `/metrics`.

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric a proxy process exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Requests by route and status class (`2xx`…).
    pub requests: IntCounterVec,
    /// Whole-request latency by route and status class, until the response headers.
    pub request_duration: HistogramVec,
    /// Time spent in Weir itself: the request latency minus the time waiting on the backend.
    pub overhead: Histogram,
    /// Responses Weir produced itself, by `x-weir-error` reason and side at fault.
    pub errors: IntCounterVec,
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
    /// Version of the configuration being served.
    pub config_version: IntGauge,
    /// Reload attempts by result (`ok`, `rejected`).
    pub config_reloads: IntCounterVec,
    /// Access-log lines dropped because the writer could not keep up.
    pub access_log_dropped: IntCounter,
    /// Retries sent, by cluster.
    pub retries: IntCounterVec,
    /// Retries not sent because the cluster's retry budget was spent, by cluster.
    pub retry_budget_exhausted: IntCounterVec,
    /// Endpoints ejected by the circuit breaker, by cluster.
    pub ejections: IntCounterVec,
    /// Breaker state per endpoint: 0 closed, 1 open (ejected), 2 half-open.
    pub endpoint_state: IntGaugeVec,
    /// Active health check results by cluster and result (`pass`, `fail`).
    pub health_checks: IntCounterVec,
    /// TLS handshakes on the TLS listener by result (`ok`, `error`, `timeout`).
    pub tls_handshakes: IntCounterVec,
    /// When each served certificate expires (Unix seconds), by Secret.
    pub tls_certificate_expiry: IntGaugeVec,
    /// Authentication decisions by result (`allowed`, `anonymous`, `missing`, `invalid`,
    /// `forbidden`).
    pub auth_decisions: IntCounterVec,
    /// JWKS fetches by provider and result (`ok`, `error`).
    pub jwks_fetches: IntCounterVec,
    /// Rate-limit decisions by limit and result (`allowed`, `limited`, `fallback`,
    /// `unavailable`).
    pub rate_limit_decisions: IntCounterVec,
    /// Mesh mTLS handshakes by direction (`inbound`, `outbound`) and result (`ok`, `error`).
    pub mesh_handshakes: IntCounterVec,
    /// When the workload certificate expires (Unix seconds); 0 before the first.
    pub workload_certificate_expiry: IntGauge,
}

impl Metrics {
    /// Counts an error Weir answered with, by reason and side.
    pub fn proxy_error(&self, e: crate::error::ProxyError) {
        self.errors
            .with_label_values(&[e.reason(), e.side().label()])
            .inc();
    }

    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        // 100 µs .. ~52 s: proxy latencies span from sub-millisecond to long timeouts.
        let latency = exponential_buckets(0.0001, 2.0, 20).unwrap_or_default();
        // 5 µs .. ~80 ms: Weir's own overhead should live at the bottom of this range.
        let overhead_buckets = exponential_buckets(0.000005, 2.0, 15).unwrap_or_default();
        let requests = IntCounterVec::new(
            Opts::new(
                "weir_requests_total",
                "Requests handled, by route and status class",
            ),
            &["route", "status"],
        );
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "weir_request_duration_seconds",
                "Time from request to response headers",
            )
            .buckets(latency),
            &["route", "status"],
        );
        let overhead = Histogram::with_opts(
            HistogramOpts::new(
                "weir_overhead_seconds",
                "Time spent in Weir per request, excluding the backend",
            )
            .buckets(overhead_buckets),
        );
        let errors = IntCounterVec::new(
            Opts::new(
                "weir_proxy_errors_total",
                "Responses Weir produced itself, by reason and side at fault",
            ),
            &["reason", "side"],
        );
        let upstream_connects = IntCounterVec::new(
            Opts::new(
                "weir_upstream_connects_total",
                "Connection attempts to backends, by result",
            ),
            &["result"],
        );
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "weir_config_reloads_total",
                "Configuration reload attempts, by result",
            ),
            &["result"],
        );
        let by_cluster =
            |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), &["cluster"]);
        let retries = by_cluster("weir_retries_total", "Retries sent, by cluster");
        let retry_budget_exhausted = by_cluster(
            "weir_retry_budget_exhausted_total",
            "Retries not sent because the retry budget was spent, by cluster",
        );
        let ejections = by_cluster(
            "weir_endpoint_ejections_total",
            "Endpoints ejected by the circuit breaker, by cluster",
        );
        let endpoint_state = IntGaugeVec::new(
            Opts::new(
                "weir_endpoint_state",
                "Circuit breaker state per endpoint: 0 closed, 1 open, 2 half-open",
            ),
            &["cluster", "endpoint"],
        );
        let health_checks = IntCounterVec::new(
            Opts::new(
                "weir_health_checks_total",
                "Active health checks, by cluster and result",
            ),
            &["cluster", "result"],
        );
        let tls_handshakes = IntCounterVec::new(
            Opts::new(
                "weir_tls_handshakes_total",
                "TLS handshakes on the TLS listener, by result",
            ),
            &["result"],
        );
        let tls_certificate_expiry = IntGaugeVec::new(
            Opts::new(
                "weir_tls_certificate_expiry_timestamp_seconds",
                "When each served certificate expires, by Secret",
            ),
            &["secret"],
        );
        let mesh_handshakes = IntCounterVec::new(
            Opts::new(
                "weir_mesh_tls_handshakes_total",
                "Mesh mTLS handshakes, by direction and result",
            ),
            &["direction", "result"],
        );
        let workload_certificate_expiry = IntGauge::new(
            "weir_workload_certificate_expiry_timestamp_seconds",
            "When the workload certificate expires (0 before the first)",
        );
        let auth_decisions = IntCounterVec::new(
            Opts::new(
                "weir_auth_decisions_total",
                "Authentication decisions, by result",
            ),
            &["result"],
        );
        let jwks_fetches = IntCounterVec::new(
            Opts::new(
                "weir_jwks_fetches_total",
                "JWKS fetches, by provider and result",
            ),
            &["provider", "result"],
        );
        let rate_limit_decisions = IntCounterVec::new(
            Opts::new(
                "weir_rate_limit_decisions_total",
                "Rate-limit decisions, by limit and result",
            ),
            &["limit", "result"],
        );
        // The names and label sets above are constants that Prometheus accepts; a failure here
        // is a programming error caught by every test run, so panicking is the right answer.
        #[allow(clippy::expect_used)]
        let metrics = Metrics {
            requests: requests.expect("valid metric"),
            request_duration: request_duration.expect("valid metric"),
            overhead: overhead.expect("valid metric"),
            errors: errors.expect("valid metric"),
            downstream_connections: IntGauge::new(
                "weir_downstream_connections",
                "Open client connections",
            )
            .expect("valid metric"),
            downstream_accepted: IntCounter::new(
                "weir_downstream_connections_total",
                "Client connections accepted",
            )
            .expect("valid metric"),
            downstream_idle: IntGauge::new(
                "weir_downstream_idle_connections",
                "Client keep-alive connections idle between requests, holding no buffers",
            )
            .expect("valid metric"),
            upstream_connections: IntGauge::new(
                "weir_upstream_connections",
                "Open connections to backends",
            )
            .expect("valid metric"),
            upstream_connects: upstream_connects.expect("valid metric"),
            config_version: IntGauge::new(
                "weir_config_version",
                "Version of the configuration being served",
            )
            .expect("valid metric"),
            config_reloads: config_reloads.expect("valid metric"),
            access_log_dropped: IntCounter::new(
                "weir_access_log_dropped_total",
                "Access-log lines dropped because the writer could not keep up",
            )
            .expect("valid metric"),
            retries: retries.expect("valid metric"),
            retry_budget_exhausted: retry_budget_exhausted.expect("valid metric"),
            ejections: ejections.expect("valid metric"),
            endpoint_state: endpoint_state.expect("valid metric"),
            health_checks: health_checks.expect("valid metric"),
            tls_handshakes: tls_handshakes.expect("valid metric"),
            tls_certificate_expiry: tls_certificate_expiry.expect("valid metric"),
            auth_decisions: auth_decisions.expect("valid metric"),
            jwks_fetches: jwks_fetches.expect("valid metric"),
            rate_limit_decisions: rate_limit_decisions.expect("valid metric"),
            mesh_handshakes: mesh_handshakes.expect("valid metric"),
            workload_certificate_expiry: workload_certificate_expiry.expect("valid metric"),
            registry,
        };
        metrics.register_all();
        metrics
    }

    #[allow(clippy::expect_used)]
    fn register_all(&self) {
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.requests.clone()),
            Box::new(self.request_duration.clone()),
            Box::new(self.overhead.clone()),
            Box::new(self.errors.clone()),
            Box::new(self.downstream_connections.clone()),
            Box::new(self.downstream_accepted.clone()),
            Box::new(self.downstream_idle.clone()),
            Box::new(self.upstream_connections.clone()),
            Box::new(self.upstream_connects.clone()),
            Box::new(self.config_version.clone()),
            Box::new(self.config_reloads.clone()),
            Box::new(self.access_log_dropped.clone()),
            Box::new(self.retries.clone()),
            Box::new(self.retry_budget_exhausted.clone()),
            Box::new(self.ejections.clone()),
            Box::new(self.endpoint_state.clone()),
            Box::new(self.health_checks.clone()),
            Box::new(self.tls_handshakes.clone()),
            Box::new(self.tls_certificate_expiry.clone()),
            Box::new(self.auth_decisions.clone()),
            Box::new(self.jwks_fetches.clone()),
            Box::new(self.rate_limit_decisions.clone()),
            Box::new(self.mesh_handshakes.clone()),
            Box::new(self.workload_certificate_expiry.clone()),
        ];
        for c in collectors {
            // Distinct names in a fresh registry: registration cannot collide.
            self.registry.register(c).expect("metric registered once");
        }
    }

    /// The registry, for a role's own metrics (they are rendered with these).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec only fails on invalid metric data, which the types rule out.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `2xx`, `4xx`, … for a status code.
pub fn status_class(status: http::StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
