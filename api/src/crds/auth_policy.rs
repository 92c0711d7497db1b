//! `AuthPolicy`: who may use a route — JWTs verified against an identity provider's JWKS, API
//! keys from a Secret, or either, and whether a request without credentials is let through.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{PolicyStatus, RouteTargetRef, SecretRef};

/// Authentication for the HTTPRoutes or Ingresses named in `targetRefs`.
///
/// ```yaml
/// apiVersion: weir.dev/v1alpha1
/// kind: AuthPolicy
/// metadata: {name: shop, namespace: shop}
/// spec:
///   targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: shop}]
///   jwt:
///     providers:
///     - name: idp
///       issuer: https://idp.example.com
///       audiences: [shop]
///       jwks: {uri: https://idp.example.com/.well-known/jwks.json}
///       forwardClaims: {sub: X-User-Id}
///   apiKeys: {secretRef: {name: shop-keys}, header: X-API-Key}
///   required: true
/// ```
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "AuthPolicy",
    namespaced,
    status = "PolicyStatus",
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.jwt) || has(self.apiKeys)").message("an AuthPolicy needs jwt, apiKeys or both"))]
pub struct AuthPolicySpec {
    /// The HTTPRoutes or Ingresses in this namespace the policy protects.
    #[schemars(length(min = 1))]
    pub target_refs: Vec<RouteTargetRef>,
    /// Bearer tokens (`Authorization: Bearer <JWT>`), verified against the providers' keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<Jwt>,
    /// Static API keys in a header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys: Option<ApiKeys>,
    /// Refuse requests without credentials (401). When false, a request without any is let
    /// through anonymously; wrong credentials are refused either way. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
}

/// JWT verification.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Jwt {
    /// Identity providers; a token is checked against the one whose `issuer` it names.
    #[schemars(length(min = 1))]
    pub providers: Vec<JwtProvider>,
}

/// One identity provider.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtProvider {
    /// A name for logs and metrics.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The exact `iss` claim its tokens carry.
    #[schemars(length(min = 1))]
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one. Empty: `aud` is not checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Where the public keys are.
    pub jwks: JwksSource,
    /// Claims to send to the backend as headers, e.g. `{sub: X-User-Id}`. Clients' own copies
    /// of these headers are always removed.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub forward_claims: std::collections::BTreeMap<String, String>,
    /// Scopes the token must have (from `scope`, space-separated, or `scp`); missing: 403.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_scopes: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf` (default `30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub clock_skew: Option<String>,
}

/// A JWKS: fetched over HTTPS, inline, or from a Secret's `jwks.json`. Exactly one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwksSource {
    /// An `https://` URL, fetched and refreshed in the background.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// The JWKS JSON itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
    /// A Secret in this namespace whose `jwks.json` holds the JWKS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
}

/// API keys.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeys {
    /// A Secret in this namespace: each entry is a client name and its key.
    pub secret_ref: SecretRef,
    /// The request header carrying the key (default `X-API-Key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}
