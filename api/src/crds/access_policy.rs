//! `AccessPolicy`: which callers may reach which methods, paths and ports of the workloads a
//! selector picks. Sidecars enforce it on their inbound port, with the caller's identity read
//! from its mTLS certificate.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::PolicyStatus;

/// Access rules for the pods `selector` picks in this namespace.
///
/// ```yaml
/// apiVersion: weir.dev/v1alpha1
/// kind: AccessPolicy
/// metadata: {name: backend, namespace: shop}
/// spec:
///   selector: {matchLabels: {app: backend}}
///   default: deny
///   rules:
///   - from: [{serviceAccount: frontend}]              # shop/frontend
///     to: [{methods: [GET], paths: [/api/*]}]
///   - from: [{namespace: monitoring}]
///     to: [{paths: [/metrics], ports: [9090]}]
///   - from: [{identity: spiffe://cluster.local/ns/ops/sa/admin}]   # anything
/// ```
///
/// A request is allowed when one rule matches it: one of its `from` entries names the
/// caller, and one of its `to` entries (or no `to` at all) matches the request. Otherwise
/// `default` decides. A caller without a verified identity (plaintext) matches no `from`.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "AccessPolicy",
    namespaced,
    status = "PolicyStatus",
    printcolumn = r#"{"name":"Default","type":"string","jsonPath":".spec.default"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessPolicySpec {
    /// The pods it applies to; absent or empty: every pod in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// What happens to a request no rule allows: `deny` (default; 403) or `allow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<AccessDefault>,
    /// Allow rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<AccessRule>,
}

/// The verdict for requests no rule allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AccessDefault {
    /// Let them through.
    Allow,
    /// Refuse them with 403.
    Deny,
}

/// One allow rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessRule {
    /// Who: any one of these.
    #[schemars(length(min = 1))]
    pub from: Vec<AccessSource>,
    /// What: any one of these; absent: everything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<AccessTarget>,
}

/// What `from[].identity` must look like (the schema's pattern and the directory check).
pub const SPIFFE_ID_PATTERN: &str = r"^spiffe://[a-z0-9._-]+/ns/[a-z0-9-]+/sa/[a-z0-9.-]+$";
/// What `from[].trustDomain` must look like.
pub const TRUST_DOMAIN_PATTERN: &str = r"^[a-z0-9._-]+$";
/// What `from[].namespace` must look like.
pub const NAMESPACE_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// What `from[].serviceAccount` must look like: `NAME` or `NAMESPACE/NAME`.
pub const SERVICE_ACCOUNT_PATTERN: &str =
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?/)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?$";

/// A caller, by exactly one of identity, namespace or ServiceAccount.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("(has(self.identity) ? 1 : 0) + (has(self.namespace) ? 1 : 0) + (has(self.serviceAccount) ? 1 : 0) == 1").message("set exactly one of identity, namespace or serviceAccount"))]
#[x_kube(validation = Rule::new("!has(self.identity) || !has(self.trustDomain)").message("trustDomain goes with namespace or serviceAccount: an identity names its own trust domain"))]
pub struct AccessSource {
    /// A SPIFFE ID, `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = SPIFFE_ID_PATTERN))]
    pub identity: Option<String>,
    /// Every workload of this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = NAMESPACE_PATTERN))]
    pub namespace: Option<String>,
    /// A ServiceAccount: `NAME` (in the policy's namespace) or `NAMESPACE/NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?/)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
    ))]
    pub service_account: Option<String>,
    /// With `namespace` or `serviceAccount`: the caller's trust domain. Absent: the mesh's own
    /// (a certificate from another trust domain the mesh trusts never matches by namespace or
    /// ServiceAccount alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = TRUST_DOMAIN_PATTERN))]
    pub trust_domain: Option<String>,
}

/// Requests, by method, path and port; each list absent or empty matches anything.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessTarget {
    /// HTTP methods, uppercase.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<AccessMethod>,
    /// Paths, exact or with a trailing `*` matching any rest (`/api/*`), on the normalised
    /// path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<AccessPath>,
    /// The workload's ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<AccessPort>,
}

/// An HTTP method.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct AccessMethod(#[schemars(regex(pattern = r"^[A-Z]+$"))] pub String);

/// A path pattern: starts with `/`; `*` only as the last character.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct AccessPath(#[schemars(regex(pattern = r"^/[^*]*\*?$"))] pub String);

/// A port number.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct AccessPort(#[schemars(range(min = 1, max = 65535))] pub u32);
