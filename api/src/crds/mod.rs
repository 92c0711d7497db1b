//! Weir's own resources (group `weir.dev`, version `v1alpha1`), as kube `CustomResource`
//! types with OpenAPI schemas. They are read like any other object; `compile` turns them into
//! the plain model.

mod access_policy;
mod auth_policy;
mod mesh_tls_policy;
mod rate_limit_policy;
mod traffic_policy;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use access_policy::{
    AccessDefault, AccessMethod, AccessPath, AccessPolicy, AccessPolicySpec, AccessPort,
    AccessRule, AccessSource, AccessTarget, NAMESPACE_PATTERN, SERVICE_ACCOUNT_PATTERN,
    SPIFFE_ID_PATTERN, TRUST_DOMAIN_PATTERN,
};
pub use auth_policy::{ApiKeys, AuthPolicy, AuthPolicySpec, JwksSource, Jwt, JwtProvider};
pub use mesh_tls_policy::{MeshTLSMode, MeshTLSPolicy, MeshTLSPolicySpec};
pub use rate_limit_policy::{Empty, Limit, LimitKey, Rate, RateLimitPolicy, RateLimitPolicySpec};
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

/// A reference to the route a policy applies to, in the policy's namespace: a Gateway API
/// `HTTPRoute` or a `networking.k8s.io` `Ingress`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteTargetRef {
    /// `gateway.networking.k8s.io` or `networking.k8s.io`.
    #[schemars(regex(pattern = r"^(gateway\.networking\.k8s\.io|networking\.k8s\.io)$"))]
    pub group: String,
    /// `HTTPRoute` or `Ingress`.
    #[schemars(regex(pattern = r"^(HTTPRoute|Ingress)$"))]
    pub kind: String,
    /// Name of the route.
    pub name: String,
}

/// A Secret in the policy's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    /// The Secret's name.
    pub name: String,
}
