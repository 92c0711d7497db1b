//! The sidecar's own metrics, registered next to the engine's (one `/metrics`).

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts,
};
use std::{cell::RefCell, time::Instant};

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
    /// The registry's ([`Metrics::id`]): tells its series from another's in the per-thread
    /// cache.
    id: u64,
}

impl MeshMetrics {
    /// Records one request: its count by `direction`, `peer`, `destination` and the status
    /// class of `response`, and its time since `started`. The series are looked up by label
    /// once per thread and kept: each lookup costs a hash of every label and a lock.
    pub fn request(
        &self,
        direction: &'static str,
        peer: &str,
        destination: &str,
        status: http::StatusCode,
        started: Instant,
    ) {
        let class = status_class(status);
        let elapsed = started.elapsed().as_secs_f64();
        KEPT.with_borrow_mut(|kept| {
            let slot = &mut kept[slot(direction, peer, destination, class)];
            let series = match slot {
                Some(k)
                    if k.metrics == self.id
                        && k.direction == direction
                        && k.class == class
                        && *k.peer == *peer
                        && *k.destination == *destination =>
                {
                    k
                }
                _ => slot.insert(Kept {
                    metrics: self.id,
                    direction,
                    peer: peer.into(),
                    destination: destination.into(),
                    class,
                    requests: self.requests.with_label_values(&[
                        direction,
                        peer,
                        destination,
                        class,
                    ]),
                    duration: self
                        .duration
                        .with_label_values(&[direction, peer, destination]),
                }),
            };
            series.requests.inc();
            series.duration.observe(elapsed);
        });
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
                "Time from request to response headers, by direction, peer identity and destination",
            )
            .buckets(latency),
            &["direction", "peer", "destination"],
        )
        .expect("valid metric");
        metrics
            .registry()
            .register(Box::new(duration.clone()))
            .expect("metric registered once");
        Self {
            id: metrics.id(),
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

/// A request's series as [`MeshMetrics::request`] keeps them, with the labels that found them.
struct Kept {
    metrics: u64,
    direction: &'static str,
    peer: Box<str>,
    destination: Box<str>,
    class: &'static str,
    requests: IntCounter,
    duration: Histogram,
}

const KEPT_SLOTS: usize = 32;

thread_local! {
    static KEPT: RefCell<[Option<Kept>; KEPT_SLOTS]> =
        const { RefCell::new([const { None }; KEPT_SLOTS]) };
}

/// Where the series for these labels are kept: from what can be read without walking the
/// names (their lengths and last bytes); labels that share a slot are looked up again.
fn slot(direction: &str, peer: &str, destination: &str, class: &str) -> usize {
    let last = |s: &str| usize::from(s.as_bytes().last().copied().unwrap_or(0));
    let mix = direction.len()
        ^ peer.len().wrapping_mul(31)
        ^ destination.len().wrapping_mul(7)
        ^ last(peer).wrapping_mul(13)
        ^ last(destination).wrapping_mul(17)
        ^ usize::from(class.as_bytes()[0]);
    mix % KEPT_SLOTS
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn count(mesh: &MeshMetrics, labels: [&str; 4]) -> u64 {
        mesh.requests.with_label_values(&labels).get()
    }

    #[test]
    fn requests_are_counted_by_their_labels_whatever_the_cache_holds() {
        let (one, two) = (
            MeshMetrics::new(&Metrics::new()),
            MeshMetrics::new(&Metrics::new()),
        );
        let ok = http::StatusCode::OK;
        let started = Instant::now() - Duration::from_millis(2);
        let peer = "spiffe://cluster.local/ns/shop/sa/web";
        for _ in 0..3 {
            one.request("outbound", peer, "cart", ok, started);
        }
        // The same text from another allocation is the same series.
        let copy = String::from(peer);
        one.request("outbound", &copy, "cart", ok, started);
        one.request("inbound", peer, "cart", ok, started);
        one.request("outbound", "plaintext", "cart", ok, started);
        one.request(
            "outbound",
            peer,
            "cart",
            http::StatusCode::BAD_GATEWAY,
            started,
        );
        two.request("outbound", peer, "cart", ok, started);
        // Many destinations share the slots, and each still lands in its own series.
        for _ in 0..2 {
            for i in 0..100 {
                one.request("outbound", peer, &format!("svc-{i}"), ok, started);
            }
        }

        assert_eq!(count(&one, ["outbound", peer, "cart", "2xx"]), 4);
        assert_eq!(count(&one, ["inbound", peer, "cart", "2xx"]), 1);
        assert_eq!(count(&one, ["outbound", "plaintext", "cart", "2xx"]), 1);
        assert_eq!(count(&one, ["outbound", peer, "cart", "5xx"]), 1);
        assert_eq!(count(&two, ["outbound", peer, "cart", "2xx"]), 1);
        assert!((0..100).all(|i| count(&one, ["outbound", peer, &format!("svc-{i}"), "2xx"]) == 2));
        // Latency by source too: the caller's identity is a label of its own series.
        let timed = one.duration.with_label_values(&["outbound", peer, "cart"]);
        assert_eq!(timed.get_sample_count(), 5);
        assert!(timed.get_sample_sum() >= 5.0 * 0.002);
        let plaintext = one
            .duration
            .with_label_values(&["outbound", "plaintext", "cart"]);
        assert_eq!(plaintext.get_sample_count(), 1);
    }
}
