//! The compiled configuration snapshot: plain Rust, no Kubernetes or protobuf types. A value
//! that exists here is valid; [`compile`](crate::compile) is the only way to make one from
//! objects. It serializes to JSON for the admin `/config` page (it never holds secrets).

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use serde::Serialize;

/// Everything a gateway needs to serve: the routes and the clusters they point at.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Snapshot {
    /// Routes from every Ingress and attached HTTPRoute, unordered; the router orders them.
    pub routes: Vec<Route>,
    /// Backend clusters by name (`namespace/service:port`).
    pub clusters: BTreeMap<String, Cluster>,
    /// Serves requests no route matched (the oldest `Ingress.spec.defaultBackend`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_route: Option<Route>,
    /// Certificates for the TLS listener, chosen by SNI; one per Secret.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<TlsCertificate>,
    /// Things that are not errors but deserve a look (a backend Service that doesn't exist yet).
    pub warnings: Vec<String>,
}

/// A certificate and key from a `kubernetes.io/tls` Secret, and the SNI names it serves. The
/// proxy parses and checks it; a bad one is refused there and the previous one keeps serving.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsCertificate {
    /// The Secret, `namespace/name`.
    pub secret: String,
    /// The names it is offered for; `Any` makes it the certificate for clients without SNI
    /// and for names no other certificate has.
    pub hosts: Vec<HostMatch>,
    /// The objects that asked for it (`Ingress ns/name`, `Gateway ns/name listener https`).
    pub used_by: Vec<String>,
    /// `tls.crt`: the PEM chain, leaf first (empty when the Secret has none).
    #[serde(skip)]
    pub chain: SecretBytes,
    /// `tls.key`: the PEM private key (empty when the Secret has none).
    #[serde(skip)]
    pub key: SecretBytes,
}

/// Bytes from a Secret: shared, never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretBytes(pub Arc<[u8]>);

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} secret bytes>", self.0.len())
    }
}

/// Which requests a route is for, by `Host`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum HostMatch {
    /// `shop.example.com` (lowercase, no port).
    Exact(String),
    /// `*.example.com`, stored as the suffix `.example.com`: matches one or more labels.
    Wildcard(String),
    /// Any host.
    Any,
}

/// One match of one rule: the unit the router orders and picks.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Stable name for metrics and logs: `httproute:ns/name:rule` or `ingress:ns/name:rule`.
    pub name: Arc<str>,
    /// Hosts this route answers; never empty (`[Any]` when the object named none).
    pub hosts: Vec<HostMatch>,
    /// The request conditions.
    pub matcher: RouteMatch,
    /// Tie-breaker after the Gateway API precedence rules: older object first, then
    /// `namespace/name`, then rule and match index.
    pub order: RouteOrder,
    /// What happens to a request that matched.
    pub action: RouteAction,
    /// Largest request body accepted (`weir.dev/max-request-body` annotation); `None`: no limit.
    pub max_request_body: Option<u64>,
    /// Who may use the route (an AuthPolicy targeting its HTTPRoute or Ingress).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<Arc<Auth>>,
    /// Rate limits, all of which must pass (every RateLimitPolicy targeting its object).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<Arc<RateLimit>>,
}

/// Authentication for a route, from an AuthPolicy.
#[derive(Clone, Debug, Serialize)]
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
#[derive(Clone, Debug, Serialize)]
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
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Jwks {
    /// Fetched from this `https://` URL and refreshed.
    Uri(String),
    /// A JWKS document given in the policy or a Secret.
    Static(#[serde(skip)] SecretBytes),
}

/// API keys for a route.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeys {
    /// The header carrying the key (lowercase).
    pub header: String,
    /// Client name → key.
    #[serde(skip)]
    pub keys: Vec<(String, SecretBytes)>,
}

/// A rate limit on a route.
#[derive(Clone, Debug, Serialize)]
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
    /// Requests allowed at once above the rate.
    pub burst: u64,
    /// Counted across all gateways in Redis (else per process).
    pub global: bool,
    /// When Redis cannot answer: count locally (`true`) or answer 503.
    pub fail_open: bool,
}

/// What a rate limit counts by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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

/// Ordering key for routes whose matches are equally specific.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteOrder {
    /// `metadata.creationTimestamp` as RFC 3339 (empty sorts first: objects from files).
    pub created: String,
    /// `namespace/name` of the object.
    pub object: String,
    /// Index of the rule in the object.
    pub rule: usize,
    /// Index of the match in the rule.
    pub matcher: usize,
}

/// Conditions on a request. All of them must hold.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    /// The path condition, on the normalised path.
    pub path: PathMatch,
    /// The method, if restricted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Header conditions (names lowercase).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatch>,
    /// Query parameter conditions (names exact, case-sensitive).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<ValueMatch>,
}

/// A path condition.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum PathMatch {
    /// The whole path, exactly.
    Exact(String),
    /// Whole path segments: `/a` matches `/a` and `/a/b`, never `/ab`. Stored without a
    /// trailing slash (`/` stays `/`).
    Prefix(String),
    /// A regular expression that must match the whole path.
    Regex(#[serde(with = "regex_text")] Regex),
}

impl Default for PathMatch {
    fn default() -> Self {
        PathMatch::Prefix("/".to_string())
    }
}

/// A named value condition for headers and query parameters.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ValueMatch {
    /// Header name (lowercase) or query parameter name.
    pub name: String,
    /// What the value must be.
    pub value: StringMatch,
}

/// How a value is compared.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum StringMatch {
    /// Byte for byte.
    Exact(String),
    /// Whole-value regular expression.
    Regex(#[serde(with = "regex_text")] Regex),
}

impl StringMatch {
    /// True when `value` satisfies this condition.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatch::Exact(s) => s == value,
            StringMatch::Regex(r) => r.is_match(value),
        }
    }
}

/// A compiled, anchored regular expression (shared: cloning a snapshot doesn't recompile).
pub type Regex = Arc<regex::Regex>;

mod regex_text {
    pub(super) fn serialize<S: serde::Serializer>(
        r: &super::Regex,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(r.as_str())
    }
}

/// What a matched route does.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RouteAction {
    /// Answer with a redirect (`RequestRedirect`).
    Redirect(Redirect),
    /// Send to backends.
    Forward(Forward),
}

/// `RequestRedirect`: each `None` keeps the request's own value.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Redirect {
    /// `http` or `https`.
    pub scheme: Option<String>,
    /// New host name.
    pub hostname: Option<String>,
    /// New port; when the scheme changes and no port is given, the scheme's default is used.
    pub port: Option<u16>,
    /// New path.
    pub path: Option<PathRewrite>,
    /// 301, 302 (default), 303, 307 or 308.
    pub status: u16,
}

/// Rewriting a path: the whole of it or the part the `PathPrefix` matched.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum PathRewrite {
    /// Replace the whole path.
    Full(String),
    /// Replace the matched prefix (only valid on a `Prefix` match).
    Prefix(String),
}

/// Forwarding to weighted backends, with the filters that apply on the way.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Forward {
    /// Backends with weights; a weight of 0 gets no traffic. No backend with a weight: 500.
    pub backends: Vec<WeightedBackend>,
    /// `RequestHeaderModifier`.
    pub request_headers: HeaderModifier,
    /// `ResponseHeaderModifier`.
    pub response_headers: HeaderModifier,
    /// `URLRewrite`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<UrlRewrite>,
    /// `RequestMirror`: copies sent and forgotten.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<Mirror>,
    /// `timeouts`.
    pub timeouts: Timeouts,
}

/// A backend and its share of traffic.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WeightedBackend {
    /// Key into [`Snapshot::clusters`].
    pub cluster: String,
    /// Relative weight.
    pub weight: u32,
}

/// Set, add and remove headers (names lowercase).
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderModifier {
    /// Replace (or add) these headers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<(String, String)>,
    /// Append these values.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<(String, String)>,
    /// Remove these headers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl HeaderModifier {
    /// True when it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// `URLRewrite`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UrlRewrite {
    /// New `Host` sent to the backend.
    pub hostname: Option<String>,
    /// New path sent to the backend.
    pub path: Option<PathRewrite>,
}

/// `RequestMirror`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mirror {
    /// Key into [`Snapshot::clusters`].
    pub cluster: String,
    /// Share of requests mirrored, in parts per million (1_000_000 = all).
    pub per_million: u32,
}

/// Route timeouts (`HTTPRoute.spec.rules[].timeouts`).
#[derive(Clone, Copy, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// Whole request, from arrival to the response headers.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub request: Option<Duration>,
    /// One request to a backend.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<Duration>,
}

mod opt_duration {
    pub(super) fn serialize<S: serde::Serializer>(
        d: &Option<std::time::Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format!("{}ms", d.as_millis())),
            None => s.serialize_none(),
        }
    }
}

/// How to talk to a cluster's endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Protocol {
    /// HTTP/1.1 with keep-alive.
    #[default]
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (Service port `appProtocol: kubernetes.io/h2c`).
    H2c,
}

/// One Service port and its ready endpoints.
#[derive(Clone, Debug, Default, Serialize)]
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
    /// Timeouts, retries, breaker and health checks (from a TrafficPolicy).
    pub resilience: Arc<Resilience>,
}

/// Load-balancing algorithm (Service annotation `weir.dev/load-balancer`, or a TrafficPolicy).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
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

/// Retry settings, validated.
#[derive(Clone, Debug, PartialEq, Serialize)]
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
    /// Retries allowed as a fraction of recent requests (0.0–1.0).
    pub budget_ratio: f64,
    /// Retries always allowed per second.
    pub budget_min_per_second: u32,
}

/// The failures a retry is attempted for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
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
#[derive(Clone, Debug, PartialEq, Serialize)]
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
#[derive(Clone, Debug, PartialEq, Serialize)]
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
