//! Prometheus metrics for the data plane, in one registry served at the admin `/metrics`: the
//! engine's own series, beside the protocol's and the mesh identity's (registered here too). A
//! role adds its own to [`Metrics::registry`] (the ingress: auth, JWKS, rate limits).

use std::{
    cell::RefCell,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use weir_http::metrics::HttpMetrics;
use weir_mesh::metrics::IdentityMetrics;

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric a proxy process exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Tells this registry's series apart from another's in the per-thread cache of a route's
    /// series (a process may hold several registries: tests do).
    id: u64,
    /// The protocol layer's series (connections, TLS handshakes).
    pub http: HttpMetrics,
    /// The mesh identity layer's series (mTLS handshakes, the workload certificate).
    pub identity: IdentityMetrics,
    /// Requests by route and status class (`2xx`…).
    pub requests: IntCounterVec,
    /// Whole-request latency by route and status class, until the response headers.
    pub request_duration: HistogramVec,
    /// Time spent in Weir itself by route: the request latency minus the time waiting on the
    /// backend.
    pub overhead: HistogramVec,
    /// Responses Weir produced itself, by `x-weir-error` reason and side at fault.
    pub errors: IntCounterVec,
    /// Version of the configuration being served.
    pub config_version: IntGauge,
    /// Reload attempts by result (`ok`, `rejected`).
    pub config_reloads: IntCounterVec,
    /// Objects the served configuration was compiled without (`--config-dir`: refused, the
    /// rest serving).
    pub config_refused_objects: IntGauge,
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
    /// When each served certificate expires (Unix seconds), by Secret.
    pub tls_certificate_expiry: IntGaugeVec,
    /// Connections a TLSRoute or TCPRoute took, by route and result (`carried`, `no_backend`,
    /// `connect_error`, `over_limit`).
    pub stream_connections: IntCounterVec,
    /// Bytes carried for TLSRoutes and TCPRoutes, by route and direction (`received` from clients, `sent`
    /// to them).
    pub stream_bytes: IntCounterVec,
}

impl Metrics {
    /// Records a request to `route` (`None`: none matched) answered with `status` after
    /// `elapsed`: its count and latency. A route's series are looked up once per thread and
    /// status class, then kept: by label, each costs two hashes and a lock.
    pub fn request(
        &self,
        route: Option<&Arc<str>>,
        status: http::StatusCode,
        elapsed: Duration,
        overhead: Duration,
    ) {
        let class = status_class(status);
        ROUTE_SERIES.with_borrow_mut(|cache| {
            let slot = &mut cache[series_slot(route, status)];
            let series = match slot {
                Some(kept) if kept.is(self.id, route, class) => kept,
                _ => {
                    let label = route.map_or("none", |r| r);
                    slot.insert(Series {
                        metrics: self.id,
                        route: route.cloned(),
                        class,
                        requests: self.requests.with_label_values(&[label, class]),
                        duration: self.request_duration.with_label_values(&[label, class]),
                        overhead: self.overhead.with_label_values(&[label]),
                    })
                }
            };
            series.requests.inc();
            series.duration.observe(elapsed.as_secs_f64());
            series.overhead.observe(overhead.as_secs_f64());
        });
    }

    /// Which registry this is, among those of the process: what per-thread caches of its
    /// series (here and in the roles) tell registries apart by.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Counts an error Weir answered with, by reason and side.
    pub fn proxy_error(&self, e: weir_http::error::ProxyError) {
        self.errors
            .with_label_values(&[e.reason(), e.side().label()])
            .inc();
    }

    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        static IDS: AtomicU64 = AtomicU64::new(0);
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
        let overhead = HistogramVec::new(
            HistogramOpts::new(
                "weir_overhead_seconds",
                "Time spent in Weir per request, excluding the backend, by route",
            )
            .buckets(overhead_buckets),
            &["route"],
        );
        let errors = IntCounterVec::new(
            Opts::new(
                "weir_proxy_errors_total",
                "Responses Weir produced itself, by reason and side at fault",
            ),
            &["reason", "side"],
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
        let tls_certificate_expiry = IntGaugeVec::new(
            Opts::new(
                "weir_tls_certificate_expiry_timestamp_seconds",
                "When each served certificate expires, by Secret",
            ),
            &["secret"],
        );
        let stream_connections = IntCounterVec::new(
            Opts::new(
                "weir_stream_connections_total",
                "Connections a TLSRoute or TCPRoute took, by route and result (carried, no_backend, connect_error, over_limit)",
            ),
            &["route", "result"],
        );
        let stream_bytes = IntCounterVec::new(
            Opts::new(
                "weir_stream_bytes_total",
                "Bytes carried for TLSRoutes and TCPRoutes, by route and direction (received from clients, sent to them)",
            ),
            &["route", "direction"],
        );
        // The names and label sets above are constants that Prometheus accepts; a failure here
        // is a programming error caught by every test run, so panicking is the right answer.
        #[allow(clippy::expect_used)]
        let metrics = Metrics {
            http: HttpMetrics::register(&registry),
            identity: IdentityMetrics::register(&registry),
            requests: requests.expect("valid metric"),
            request_duration: request_duration.expect("valid metric"),
            overhead: overhead.expect("valid metric"),
            errors: errors.expect("valid metric"),
            config_version: IntGauge::new(
                "weir_config_version",
                "Version of the configuration being served",
            )
            .expect("valid metric"),
            config_reloads: config_reloads.expect("valid metric"),
            config_refused_objects: IntGauge::new(
                "weir_config_refused_objects",
                "Objects the served configuration was compiled without (refused; the rest serves)",
            )
            .expect("valid metric"),
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
            tls_certificate_expiry: tls_certificate_expiry.expect("valid metric"),
            stream_connections: stream_connections.expect("valid metric"),
            stream_bytes: stream_bytes.expect("valid metric"),
            registry,
            id: IDS.fetch_add(1, Ordering::Relaxed),
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
            Box::new(self.config_version.clone()),
            Box::new(self.config_reloads.clone()),
            Box::new(self.config_refused_objects.clone()),
            Box::new(self.access_log_dropped.clone()),
            Box::new(self.retries.clone()),
            Box::new(self.retry_budget_exhausted.clone()),
            Box::new(self.ejections.clone()),
            Box::new(self.endpoint_state.clone()),
            Box::new(self.health_checks.clone()),
            Box::new(self.tls_certificate_expiry.clone()),
            Box::new(self.stream_connections.clone()),
            Box::new(self.stream_bytes.clone()),
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

/// A route's request counter and latency histogram for one status class, from one registry.
/// The entry holds the route's name, so no other name can take its address while it is kept.
struct Series {
    metrics: u64,
    route: Option<Arc<str>>,
    class: &'static str,
    requests: IntCounter,
    duration: Histogram,
    overhead: Histogram,
}

impl Series {
    fn is(&self, metrics: u64, route: Option<&Arc<str>>, class: &str) -> bool {
        let same_route = match (&self.route, route) {
            (Some(kept), Some(route)) => Arc::ptr_eq(kept, route),
            (kept, route) => kept.is_none() && route.is_none(),
        };
        self.metrics == metrics && same_route && self.class == class
    }
}

/// Where a route's series for `status` is kept: by the address of the route's name (separate
/// allocations, at least 16 bytes apart) and the status class.
fn series_slot(route: Option<&Arc<str>>, status: http::StatusCode) -> usize {
    let address = route.map_or(0, |r| Arc::as_ptr(r).cast::<u8>() as usize);
    ((address >> 4) ^ usize::from(status.as_u16() / 100)) % SERIES_SLOTS
}

/// Routes' series kept per thread, one per slot: a request's route is found in one probe, and
/// a slot taken by another route is simply looked up again.
const SERIES_SLOTS: usize = 64;

thread_local! {
    static ROUTE_SERIES: RefCell<[Option<Series>; SERIES_SLOTS]> =
        const { RefCell::new([const { None }; SERIES_SLOTS]) };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn count(metrics: &Metrics, route: &str, class: &str) -> u64 {
        metrics.requests.with_label_values(&[route, class]).get()
    }

    fn observed(metrics: &Metrics, route: &str, class: &str) -> u64 {
        metrics
            .request_duration
            .with_label_values(&[route, class])
            .get_sample_count()
    }

    #[test]
    fn requests_are_counted_by_route_and_class_whatever_the_cache_holds() {
        let (one, two) = (Metrics::new(), Metrics::new());
        let api: Arc<str> = Arc::from("default/api");
        let web: Arc<str> = Arc::from("default/web");
        // Another Arc with the same name (a reload) is the same series.
        let api_again: Arc<str> = Arc::from("default/api");
        let ok = http::StatusCode::OK;
        let missing = http::StatusCode::NOT_FOUND;
        let ms = Duration::from_millis(1);
        for _ in 0..3 {
            one.request(Some(&api), ok, ms, ms / 10);
        }
        one.request(Some(&api), missing, ms, ms / 10);
        one.request(Some(&web), ok, ms, ms / 10);
        one.request(Some(&api_again), ok, ms, ms / 10);
        one.request(None, missing, ms, ms / 10);
        two.request(Some(&api), ok, ms, ms / 10);
        // Many routes: slots are shared, and each still lands in its own series.
        let many: Vec<Arc<str>> = (0..200).map(|i| Arc::from(format!("r{i}"))).collect();
        for _ in 0..2 {
            for r in &many {
                one.request(Some(r), ok, ms, ms / 10);
            }
        }

        assert_eq!(count(&one, "default/api", "2xx"), 4);
        assert_eq!(observed(&one, "default/api", "2xx"), 4);
        assert_eq!(count(&one, "default/api", "4xx"), 1);
        assert_eq!(count(&one, "default/web", "2xx"), 1);
        assert_eq!(count(&one, "none", "4xx"), 1);
        assert_eq!(count(&two, "default/api", "2xx"), 1);
        assert_eq!(count(&two, "default/web", "2xx"), 0);
        assert!((0..200).all(|i| count(&one, &format!("r{i}"), "2xx") == 2));
        // Weir's own time, by route whatever the status.
        let overhead =
            |m: &Metrics, route: &str| m.overhead.with_label_values(&[route]).get_sample_count();
        assert_eq!(overhead(&one, "default/api"), 5);
        assert_eq!(overhead(&one, "none"), 1);
        assert_eq!(overhead(&two, "default/web"), 0);
        assert!(one
            .render()
            .contains("weir_requests_total{route=\"default/api\",status=\"2xx\"} 4"));
    }
}
