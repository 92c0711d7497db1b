//! Weir's own resources (group `weir.dev`, version `v1alpha1`), as kube `CustomResource`
//! types with OpenAPI schemas. They are read like any other object; `compile` turns them into
//! the plain model.

mod traffic_policy;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use traffic_policy::{
    Backoff, CircuitBreaker, HashOn, HealthCheck, LoadBalancer, PolicyStatus, Retry, RetryBudget,
    TrafficPolicy, TrafficPolicySpec,
};

/// A Gateway API style reference to the object a policy applies to, in the policy's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// API group of the target (`""` for core objects such as Service).
    pub group: String,
    /// Kind of the target, e.g. `Service`.
    pub kind: String,
    /// Name of the target.
    pub name: String,
}
