//! North-south security in the snapshot: TLS certificates, authentication and rate limits.
//! Secret material is held in [`SecretBytes`]: never printed, and carried only by the binary
//! wire encoding (see [`crate::wire`]).

use std::{sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};

use super::HostMatch;

/// Secret key holding the PEM certificate chain of a [`TlsCertificate`].
pub const TLS_CERT_KEY: &str = "tls.crt";
/// Secret key holding the PEM private key of a [`TlsCertificate`].
pub const TLS_KEY_KEY: &str = "tls.key";

/// A certificate and key from a `kubernetes.io/tls` Secret, and the SNI names it serves. The
/// proxy parses and checks it; a bad one is refused there and the previous one keeps serving.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsCertificate {
    /// The Secret, `namespace/name`.
    pub secret: String,
    /// The names it is offered for; `Any` makes it the certificate for clients without SNI
    /// and for names no other certificate has.
    pub hosts: Vec<HostMatch>,
    /// The objects that asked for it (`Ingress ns/name`, `Gateway ns/name listener https`).
    pub used_by: Vec<String>,
    /// The Gateway listeners that use it: it is offered on their ports only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<super::ListenerRef>,
    /// An Ingress uses it: it is offered on the gateway's own TLS port.
    #[serde(default)]
    pub ingress: bool,
    /// `tls.crt`: the PEM chain, leaf first (empty when the Secret has none).
    pub chain: SecretBytes,
    /// `tls.key`: the PEM private key (empty when the Secret has none).
    pub key: SecretBytes,
}

/// Bytes from a Secret: shared, never printed.
///
/// A human-readable serializer (the JSON of the admin `/config` page, logs) gets only
/// `"<N secret bytes>"`; a binary one (the controller's wire encoding, which is how a node
/// receives its certificates) gets the bytes. Reading the redacted text back is refused.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretBytes(pub Arc<[u8]>);

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} secret bytes>", self.0.len())
    }
}

impl Serialize for SecretBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(&format_args!("{self:?}"))
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for SecretBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl serde::de::Visitor<'_> for Bytes {
            type Value = SecretBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("secret bytes (only binary encodings carry them)")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<SecretBytes, E> {
                Ok(SecretBytes(v.into()))
            }
        }
        if d.is_human_readable() {
            return Err(serde::de::Error::custom(
                "secret bytes are only carried by binary encodings",
            ));
        }
        d.deserialize_bytes(Bytes)
    }
}

/// Authentication for a route, from an AuthPolicy.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Auth {
    /// The policy, `namespace/name`.
    pub policy: String,
    /// JWT identity providers, by issuer.
    pub jwt: Vec<Arc<JwtProvider>>,
    /// API keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_keys: Option<ApiKeys>,
    /// Refuse requests without credentials; otherwise they pass anonymously.
    pub required: bool,
    /// Headers removed from every request (lowercase): the forwarded-claim headers and
    /// `x-weir-client`, so a client cannot set them.
    pub strip_headers: Vec<String>,
}

/// An identity provider whose tokens a route accepts.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtProvider {
    /// Identity of its key cache across reloads: `namespace/policy/provider` plus the source.
    pub id: String,
    /// `spec.jwt.providers[].name`.
    pub name: String,
    /// The required `iss`.
    pub issuer: String,
    /// Accepted `aud` values (empty: not checked).
    pub audiences: Vec<String>,
    /// Where the keys come from.
    pub jwks: Jwks,
    /// Claim → header name (lowercase).
    pub forward_claims: Vec<(String, String)>,
    /// Scopes a token must have.
    pub required_scopes: Vec<String>,
    /// Allowed clock skew on `exp` and `nbf`.
    pub clock_skew: Duration,
}

/// Where an identity provider's keys come from.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Jwks {
    /// Fetched from this `https://` URL and refreshed.
    Uri(String),
    /// A JWKS document given in the policy or a Secret.
    Static(SecretBytes),
}

/// API keys for a route.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeys {
    /// The header carrying the key (lowercase).
    pub header: String,
    /// Client name → key.
    pub keys: Vec<(String, SecretBytes)>,
}

/// A rate limit on a route.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Identity of its counters: `namespace/policy/limit`.
    pub id: String,
    /// `spec.limits[].name`.
    pub name: String,
    /// What is counted separately.
    pub key: LimitKey,
    /// Requests allowed per `per`.
    pub requests: u64,
    /// The period.
    pub per: Duration,
    /// How requests are counted.
    pub algorithm: Algorithm,
    /// Counted across all gateways in Redis (else per process).
    pub global: bool,
    /// When Redis cannot answer: count locally (`true`) or answer 503.
    pub fail_open: bool,
    /// Global sliding-window limits only: admit from a share leased from Redis and reconcile
    /// once per this interval per active key, instead of a Redis call per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_interval: Option<Duration>,
}

/// How a rate limit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Algorithm {
    /// A sliding-window counter: `requests` at once, and about `requests` in any span of
    /// `per` (the previous fixed window's count weighted by how much of it the span covers).
    SlidingWindow,
    /// GCRA: one request every `per / requests`, and `burst` more at once.
    Gcra {
        /// Requests allowed at once above the rate.
        burst: u64,
    },
}

/// What a rate limit counts by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LimitKey {
    /// A verified JWT claim.
    Claim(String),
    /// A request header (lowercase name).
    Header(String),
    /// The client's IP address.
    ClientIp,
    /// Everyone on the route together.
    Route,
}
