//! The kinds the test API server knows: where each lives and how it behaves.

use serde_json::Value;

/// One kind the server knows: where it lives and how it behaves.
#[derive(Debug, PartialEq, Eq)]
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// Has a `/status` subresource: writes to the object ignore `status`.
    pub status: bool,
}

const fn resource(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    status: bool,
) -> Resource {
    Resource {
        group,
        version,
        plural,
        kind,
        namespaced,
        status,
    }
}

/// Every kind Weir reads or writes.
pub static RESOURCES: &[Resource] = &[
    resource("", "v1", "namespaces", "Namespace", false, true),
    resource("", "v1", "services", "Service", true, true),
    resource("", "v1", "secrets", "Secret", true, false),
    resource("", "v1", "configmaps", "ConfigMap", true, false),
    resource("", "v1", "pods", "Pod", true, true),
    resource("", "v1", "events", "Event", true, false),
    resource("apps", "v1", "deployments", "Deployment", true, true),
    resource(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        true,
    ),
    resource(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "EndpointSlice",
        true,
        false,
    ),
    resource(
        "networking.k8s.io",
        "v1",
        "ingresses",
        "Ingress",
        true,
        true,
    ),
    resource(
        "networking.k8s.io",
        "v1",
        "ingressclasses",
        "IngressClass",
        false,
        false,
    ),
    resource("coordination.k8s.io", "v1", "leases", "Lease", true, false),
    resource(
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        false,
        false,
    ),
    resource("events.k8s.io", "v1", "events", "Event", true, false),
    resource(
        "authentication.k8s.io",
        "v1",
        "tokenreviews",
        "TokenReview",
        false,
        false,
    ),
    resource(
        "gateway.networking.k8s.io",
        "v1",
        "gatewayclasses",
        "GatewayClass",
        false,
        true,
    ),
    resource(
        "gateway.networking.k8s.io",
        "v1",
        "gateways",
        "Gateway",
        true,
        true,
    ),
    resource(
        "gateway.networking.k8s.io",
        "v1",
        "httproutes",
        "HTTPRoute",
        true,
        true,
    ),
    resource(
        "gateway.networking.k8s.io",
        "v1",
        "grpcroutes",
        "GRPCRoute",
        true,
        true,
    ),
    resource(
        "gateway.networking.k8s.io",
        "v1",
        "tlsroutes",
        "TLSRoute",
        true,
        true,
    ),
    resource(
        "gateway.networking.k8s.io",
        "v1",
        "listenersets",
        "ListenerSet",
        true,
        true,
    ),
    resource(
        "gateway.networking.k8s.io",
        "v1",
        "tcproutes",
        "TCPRoute",
        true,
        true,
    ),
    resource(
        "gateway.networking.k8s.io",
        "v1",
        "backendtlspolicies",
        "BackendTLSPolicy",
        true,
        true,
    ),
    resource(
        "gateway.networking.k8s.io",
        "v1beta1",
        "referencegrants",
        "ReferenceGrant",
        true,
        false,
    ),
    resource(
        "weir.dev",
        "v1alpha1",
        "trafficpolicies",
        "TrafficPolicy",
        true,
        true,
    ),
    resource(
        "weir.dev",
        "v1alpha1",
        "authpolicies",
        "AuthPolicy",
        true,
        true,
    ),
    resource(
        "weir.dev",
        "v1alpha1",
        "ratelimitpolicies",
        "RateLimitPolicy",
        true,
        true,
    ),
    resource(
        "weir.dev",
        "v1alpha1",
        "meshtlspolicies",
        "MeshTLSPolicy",
        true,
        true,
    ),
    resource(
        "weir.dev",
        "v1alpha1",
        "accesspolicies",
        "AccessPolicy",
        true,
        true,
    ),
];

impl Resource {
    /// `v1`, or `GROUP/VERSION`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The resource an object of this `apiVersion` and `kind` is stored as.
    pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static Resource> {
        RESOURCES
            .iter()
            .find(|r| r.kind == kind && r.api_version() == api_version)
    }

    /// The resource of an object, by its `apiVersion` and `kind`.
    pub fn of(value: &Value) -> Option<&'static Resource> {
        Self::by_kind(value["apiVersion"].as_str()?, value["kind"].as_str()?)
    }

    /// How errors name it: `ingresses.networking.k8s.io`, or `services` for the core group.
    pub(super) fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Built-in kinds leave `kind`/`apiVersion` out of list items; custom resources keep them.
    pub(super) fn builtin(&self) -> bool {
        !matches!(self.group, "weir.dev" | "gateway.networking.k8s.io")
    }
}
