//! `MeshTLSPolicy`: the security team's mTLS mode for the workloads of a namespace, or the
//! ones a label selector picks. Sidecars enforce it on their inbound port.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::PolicyStatus;

/// Whether meshed workloads accept plaintext.
///
/// ```yaml
/// apiVersion: weir.dev/v1alpha1
/// kind: MeshTLSPolicy
/// metadata: {name: default, namespace: shop}
/// spec:
///   mode: STRICT            # the whole namespace: mTLS only
/// ---
/// apiVersion: weir.dev/v1alpha1
/// kind: MeshTLSPolicy
/// metadata: {name: legacy-metrics, namespace: shop}
/// spec:
///   selector: {matchLabels: {app: legacy}}
///   mode: PERMISSIVE        # these pods also take plaintext while clients migrate
/// ```
///
/// A policy with a selector is more specific than one without; among equally specific ones
/// the oldest wins. Without any policy, a meshed workload is `PERMISSIVE`.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "MeshTLSPolicy",
    namespaced,
    status = "PolicyStatus",
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Enforced","type":"string","jsonPath":".status.conditions[?(@.type==\"Enforced\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshTLSPolicySpec {
    /// The pods it applies to; absent or empty: every pod in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// `STRICT`: mTLS only, plaintext is refused. `PERMISSIVE`: both (TLS is detected from the
    /// first bytes). `DISABLED`: plaintext only.
    pub mode: MeshTLSMode,
}

/// The mTLS mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum MeshTLSMode {
    /// mTLS only.
    Strict,
    /// mTLS or plaintext.
    Permissive,
    /// Plaintext only.
    Disabled,
}
