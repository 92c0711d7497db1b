//! `TrafficPolicy`: how the data plane talks to a Service's endpoints — timeouts, retries with a
//! budget, circuit breaking (outlier detection), active health checks and load balancing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::TargetRef;

/// Resilience settings for the Services named in `targetRefs`.
///
/// ```yaml
/// apiVersion: weir.dev/v1alpha1
/// kind: TrafficPolicy
/// metadata: {name: orders, namespace: shop}
/// spec:
///   targetRefs: [{group: "", kind: Service, name: orders}]
///   timeout: 5s
///   retry: {attempts: 3, perTryTimeout: 1s, retryOn: [connect-failure, reset, "503"]}
///   circuitBreaker: {consecutiveFailures: 5, baseEjectionTime: 30s}
/// ```
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "TrafficPolicy",
    namespaced,
    status = "PolicyStatus",
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.targetRefs.all(t, t.group == '' && t.kind == 'Service')").message("a TrafficPolicy targets Services (group \"\", kind Service)"))]
pub struct TrafficPolicySpec {
    /// The Services (`group: ""`, `kind: Service`) in this namespace the policy applies to.
    #[schemars(length(min = 1))]
    pub target_refs: Vec<TargetRef>,
    /// Deadline for the whole request, all tries and backoffs included (e.g. `5s`). A request
    /// that runs out of time gets 504.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub timeout: Option<String>,
    /// Retries; without it a request is tried once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Passive outlier detection per endpoint, and a cap on queued requests per Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Active HTTP health checks of every endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// How an endpoint is chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
}

/// When and how often a failed try is repeated.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retry {
    /// Tries in all, the first included (default 2, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub attempts: Option<u32>,
    /// Deadline of one try (e.g. `1s`); the `timeout` still bounds them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub per_try_timeout: Option<String>,
    /// What is worth another try: `connect-failure`, `reset`, `timeout`, `5xx`,
    /// `gateway-error` (502, 503, 504) or a status code such as `"503"`. Default:
    /// `[connect-failure, reset, gateway-error]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(
        pattern = r"^(connect-failure|reset|timeout|5xx|gateway-error|[1-5][0-9][0-9])$"
    )))]
    pub retry_on: Vec<String>,
    /// Retry POST and PATCH too. Only do this when the backend deduplicates requests.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub non_idempotent: bool,
    /// Pause between tries: exponential from `base` up to `max`, with full jitter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Cap on retries as a share of recent requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<RetryBudget>,
}

/// Exponential backoff with full jitter.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("!has(self.base) || !has(self.max) || duration(self.max) >= duration(self.base)").message("max must not be less than base"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backoff {
    /// First pause ceiling (default `25ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub base: Option<String>,
    /// Largest pause (default `250ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub max: Option<String>,
}

/// Retries allowed over the last 10 seconds: `percent` of the requests plus `minPerSecond`
/// each second, so a failing backend never sees much more than its offered load.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    /// Retries as a percentage of requests, 0–100 (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub percent: Option<f64>,
    /// Retries always allowed per second, whatever the traffic (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_per_second: Option<u32>,
}

/// Outlier detection: eject an endpoint after consecutive failures, let it back half-open.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreaker {
    /// Failures in a row (connect errors, resets, timeouts, 5xx) that eject an endpoint
    /// (default 5, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub consecutive_failures: Option<u32>,
    /// Failures further apart than this do not add up; each interval without an ejection
    /// also shortens the next ejection again (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub interval: Option<String>,
    /// First ejection time; each repeated ejection lasts one more multiple (default `30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub base_ejection_time: Option<String>,
    /// Most endpoints of a Service ejected at once, in percent (default 50; at least one
    /// endpoint can always be ejected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub max_ejection_percent: Option<u32>,
    /// Successes in a row a half-open endpoint needs to close again (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub half_open_probes: Option<u32>,
    /// Requests waiting on or sent to the Service at once; above it requests fail fast
    /// (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_pending_requests: Option<u32>,
}

/// Active health checks: `GET path` on every endpoint each interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    /// Path to request, starting with `/`.
    #[schemars(regex(pattern = r"^/"))]
    pub path: String,
    /// Time between checks (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub interval: Option<String>,
    /// Deadline of one check (default `1s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub timeout: Option<String>,
    /// Failed checks in a row that take an endpoint out (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub unhealthy_threshold: Option<u32>,
    /// Passed checks in a row that put it back (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub healthy_threshold: Option<u32>,
}

/// Endpoint selection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.algorithm) && self.algorithm == 'consistentHash' ? has(self.hashOn) : !has(self.hashOn)").message("hashOn is required by, and only allowed with, algorithm consistentHash"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancer {
    /// `ewma` (default: power of two choices over peak-EWMA latency), `roundRobin`,
    /// `leastRequest` (power of two choices over outstanding requests) or `consistentHash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["ewma", "roundRobin", "leastRequest", "consistentHash"]))]
    pub algorithm: Option<String>,
    /// What `consistentHash` hashes; requests without it are spread like `ewma`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<HashOn>,
}

/// The request property a consistent hash is computed from (exactly one).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("(has(self.header) ? 1 : 0) + (has(self.cookie) ? 1 : 0) + (has(self.sourceIP) && self.sourceIP ? 1 : 0) == 1").message("set exactly one of header, cookie or sourceIP"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HashOn {
    /// A request header, e.g. `x-user-id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A cookie by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// The client's IP address.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub source_ip: bool,
}

/// What the controller reports about a policy (`Accepted`, `ResolvedRefs` conditions).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// Standard Kubernetes conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
