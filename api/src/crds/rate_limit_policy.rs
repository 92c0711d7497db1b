//! `RateLimitPolicy`: how many requests a client, tenant or route may send, counted in each
//! gateway process (`local`) or across all of them in Redis (`global`).

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{PolicyStatus, RouteTargetRef};

/// Rate limits for the HTTPRoutes or Ingresses named in `targetRefs`. Every limit that applies
/// must pass.
///
/// ```yaml
/// apiVersion: weir.dev/v1alpha1
/// kind: RateLimitPolicy
/// metadata: {name: shop, namespace: shop}
/// spec:
///   targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: shop}]
///   failureMode: open
///   limits:
///   - {name: per-user, key: {claim: sub}, rate: {requests: 100, per: 1m}, scope: global}
///   - {name: paced, key: {clientIP: {}}, rate: {requests: 10, per: 1s}, algorithm: gcra, burst: 5}
/// ```
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "RateLimitPolicy",
    namespaced,
    status = "PolicyStatus",
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitPolicySpec {
    /// The HTTPRoutes or Ingresses in this namespace the limits apply to.
    #[schemars(length(min = 1))]
    pub target_refs: Vec<RouteTargetRef>,
    /// When Redis cannot answer in time: `open` (default) counts locally instead, `closed`
    /// answers 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(open|closed)$"))]
    pub failure_mode: Option<String>,
    /// The limits; all must pass.
    #[schemars(length(min = 1))]
    pub limits: Vec<Limit>,
}

/// One limit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limit {
    /// A name for headers, logs and metrics; unique in the policy.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// What is counted separately.
    pub key: LimitKey,
    /// The sustained rate.
    pub rate: Rate,
    /// How requests are counted: `slidingWindow` (default) admits `requests` at once and
    /// about `requests` in any span of `per`; `gcra` paces them evenly, one every
    /// `per / requests`, with `burst` more at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(slidingWindow|gcra)$"))]
    pub algorithm: Option<String>,
    /// GCRA's requests allowed at once above the rate: required with `algorithm: gcra`; with
    /// no `algorithm`, it means GCRA (as before the sliding window); refused with
    /// `slidingWindow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    /// `local` (default): per gateway process; `global`: one count across all, in Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(local|global)$"))]
    pub scope: Option<String>,
    /// `scope: global` with the sliding window only: each gateway admits from a share leased
    /// from Redis and reconciles once per this interval per active key (e.g. `100ms`), instead
    /// of one Redis call per request. Shorter than `rate.per`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub sync_interval: Option<String>,
}

/// What a limit counts by. Exactly one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitKey {
    /// A claim of the verified JWT (an AuthPolicy must verify it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    /// A request header (requests without it share one count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// The client's address.
    #[serde(default, rename = "clientIP", skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<Empty>,
    /// The route: one count for everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Empty>,
}

/// `{}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// `requests` per `per`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rate {
    /// Requests per period (at least 1).
    #[schemars(range(min = 1))]
    pub requests: u64,
    /// The period, e.g. `1s`, `1m`, `1h`.
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub per: String,
}
