//! Clusters: a Service port's endpoints, its wire protocol, how an endpoint is picked, and the
//! resilience a TrafficPolicy gives it.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};

/// How to talk to a cluster's endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Protocol {
    /// HTTP/1.1 with keep-alive.
    #[default]
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (Service port `appProtocol: kubernetes.io/h2c`).
    H2c,
}

/// One Service port and its ready endpoints.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    /// `namespace/service:port`.
    pub name: String,
    /// Wire protocol to the endpoints.
    pub protocol: Protocol,
    /// How an endpoint is chosen.
    pub balancer: Balancer,
    /// False when the Service (or its port) does not exist: requests get 500, as the Gateway
    /// API asks for an unresolved backend reference.
    pub resolved: bool,
    /// Ready endpoints, sorted.
    pub endpoints: Vec<SocketAddr>,
    /// The meshed ones among them (their pod runs a sidecar), with the identity
    /// (`namespace/serviceaccount`) their certificate must prove.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub identities: super::Identities,
    /// Timeouts, retries, breaker and health checks (from a TrafficPolicy).
    pub resilience: Arc<Resilience>,
    /// TLS to the endpoints (a BackendTLSPolicy targeting the Service); none: plaintext (or
    /// the mesh's mTLS to meshed endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Arc<BackendTls>>,
}

/// How the gateway speaks TLS to a Service's endpoints and checks their certificates (a
/// Gateway API `BackendTLSPolicy`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendTls {
    /// `namespace/name` of the policy, for logs.
    pub policy: String,
    /// The SNI sent, and the name the certificate must carry when `subject_alt_names` is
    /// empty.
    pub hostname: String,
    /// Trusted CA certificates (PEM), from the policy's ConfigMaps or Secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_pem: Vec<String>,
    /// Trust the system's roots (`wellKnownCACertificates: System`).
    #[serde(default)]
    pub system_roots: bool,
    /// Names the certificate may carry instead of `hostname` (any one of them will do).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<SubjectAltName>,
}

/// A name a backend's certificate may prove.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SubjectAltName {
    /// A DNS name (`*.example.com` matches one label).
    Hostname(String),
    /// A URI, such as a SPIFFE ID, compared whole.
    Uri(String),
}

/// Load-balancing algorithm (Service annotation `weir.dev/load-balancer`, or a TrafficPolicy).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Balancer {
    /// Power of two choices over peak-EWMA latency times outstanding requests (`ewma`).
    #[default]
    PeakEwma,
    /// Each endpoint in turn (`round-robin`).
    RoundRobin,
    /// Power of two choices over outstanding requests (`leastRequest`).
    LeastRequest,
    /// A hash ring over a request property: the same key keeps the same endpoint.
    ConsistentHash(HashKey),
}

/// What a consistent hash is computed from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HashKey {
    /// A request header (lowercase name).
    Header(String),
    /// A cookie by name.
    Cookie(String),
    /// The client's IP address.
    SourceIp,
}

/// How the data plane protects a cluster and itself when endpoints fail (a TrafficPolicy).
/// The default is what a cluster without a policy gets: one try, no breaker, no checks.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resilience {
    /// `namespace/name` of the TrafficPolicy this came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Deadline for the whole request, all tries included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Retries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Outlier detection and the pending-request cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerPolicy>,
    /// Active health checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckPolicy>,
}

/// The retry budget a cluster gets when no TrafficPolicy sets one: retries may add 20 % of
/// its requests, plus 10 a second (Linkerd's default).
pub const DEFAULT_BUDGET_RATIO: f64 = 0.2;
/// See [`DEFAULT_BUDGET_RATIO`].
pub const DEFAULT_BUDGET_MIN_PER_SECOND: u32 = 10;

/// Retry settings, validated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Tries in all (≥ 1).
    pub attempts: u32,
    /// Deadline of one try.
    pub per_try_timeout: Option<Duration>,
    /// What is worth another try.
    pub retry_on: RetryOn,
    /// Whether POST/PATCH (and other non-idempotent methods) are retried.
    pub non_idempotent: bool,
    /// Backoff ceiling of the first retry; doubles each time up to `backoff_max`.
    pub backoff_base: Duration,
    /// Largest backoff.
    pub backoff_max: Duration,
    /// No retry goes out sooner than this after the try before (an HTTPRoute's `backoff`,
    /// which the Gateway API makes a minimum); zero for a TrafficPolicy's full jitter.
    #[serde(default, skip_serializing_if = "Duration::is_zero")]
    pub min_backoff: Duration,
    /// Retries allowed as a fraction of recent requests (0.0–1.0).
    pub budget_ratio: f64,
    /// Retries always allowed per second.
    pub budget_min_per_second: u32,
}

/// The failures a retry is attempted for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryOn {
    /// The connection could not be made.
    pub connect_failure: bool,
    /// The connection was reset or closed before a response.
    pub reset: bool,
    /// The try ran out of its per-try timeout.
    pub timeout: bool,
    /// Any 5xx response.
    pub any_5xx: bool,
    /// These response statuses.
    pub statuses: Vec<u16>,
}

impl RetryOn {
    /// Whether a response with `status` is retried.
    pub fn status(&self, status: u16) -> bool {
        (self.any_5xx && (500..600).contains(&status)) || self.statuses.contains(&status)
    }
}

/// Circuit breaking, validated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BreakerPolicy {
    /// Failures in a row that eject an endpoint.
    pub consecutive_failures: u32,
    /// Failures further apart do not add up; an ejection multiplier decays by one per interval.
    pub interval: Duration,
    /// First ejection time; grows by this much with each repeated ejection.
    pub base_ejection_time: Duration,
    /// Most endpoints ejected at once, in percent (at least one may always be ejected).
    pub max_ejection_percent: u32,
    /// Successes in a row that close a half-open endpoint.
    pub half_open_probes: u32,
    /// Requests in flight to the cluster at once; more fail fast.
    pub max_pending_requests: u32,
}

/// Active health checking, validated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckPolicy {
    /// Path requested with GET.
    pub path: String,
    /// Time between checks.
    pub interval: Duration,
    /// Deadline of one check.
    pub timeout: Duration,
    /// Failed checks in a row that take an endpoint out.
    pub unhealthy_threshold: u32,
    /// Passed checks in a row that put it back.
    pub healthy_threshold: u32,
}
