//! The compiled configuration snapshot: plain Rust, no Kubernetes or protobuf types. A value
//! that exists here is valid; [`compile`](crate::compile) is the only way to make one from
//! objects. It serializes to JSON for the admin `/config` page (secrets redacted) and to the
//! controller's binary wire encoding ([`crate::wire`]).

use std::{collections::BTreeMap, sync::Arc};

use serde::{Deserialize, Serialize};

mod action;
mod cluster;
mod coverage;
pub mod features;
mod mesh;
mod ports;
mod security;

pub use action::{
    AllowedOrigin, Cors, Filter, Forward, HeaderModifier, Mirror, PathRewrite, Redirect,
    RouteAction, Session, Timeouts, UrlRewrite, WeightedBackend,
};
pub use cluster::{
    BackendTls, Balancer, BreakerPolicy, Cluster, HashKey, HealthCheckPolicy, Protocol, Resilience,
    RetryOn, RetryPolicy, SubjectAltName, DEFAULT_BUDGET_MIN_PER_SECOND, DEFAULT_BUDGET_RATIO,
};
pub use coverage::{OptOut, StrictCoverage, Uncovered};
pub use mesh::{
    AccessPolicy, AccessRule, AccessRules, Caller, Identities, Inbound, Mesh, MeshPod, MeshPort,
    MeshService, Operation, Requirement, Selector, SidecarView, SidecarViewRef, TlsMode, TlsPolicy,
};
pub use ports::{plan_ports, PortPlan, Speaks, Unserved};
pub use security::{
    Algorithm, ApiKeys, Auth, Jwks, JwtProvider, LimitKey, RateLimit, SecretBytes, TlsCertificate,
    TLS_CERT_KEY, TLS_KEY_KEY,
};
/// Everything a gateway needs to serve: the routes and the clusters they point at.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// Routes from every Ingress and attached HTTPRoute, unordered; the router orders them.
    /// Shared with the router's index rather than copied into it.
    pub routes: Vec<Arc<Route>>,
    /// Backend clusters by name (`namespace/service:port`).
    pub clusters: BTreeMap<String, Cluster>,
    /// Serves requests no route matched (the oldest `Ingress.spec.defaultBackend`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_route: Option<Arc<Route>>,
    /// Certificates for the TLS listener, chosen by SNI; one per Secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<TlsCertificate>,
    /// TLSRoutes: connections on the TLS listener carried to a backend as bytes, chosen by
    /// SNI, either passed through unopened or after the gateway's own TLS ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<Arc<StreamRoute>>,
    /// The Gateway listeners that take routes (valid, not conflicted): which ports a gateway
    /// serves, and whether with TLS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<GatewayListener>,
    /// Client certificates the Gateways' TLS ports ask for (`spec.tls.frontend`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frontend: Vec<FrontendValidation>,
    /// Things that are not errors but deserve a look (a backend Service that doesn't exist yet).
    pub warnings: Vec<String>,
    /// What sidecars are sent (each its own [`SidecarView`]); not part of the ingress view.
    #[serde(skip)]
    pub mesh: Arc<Mesh>,
}

/// Which requests a route is for, by `Host`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    /// Protocols a client may switch to (`weir.dev/upgrades` annotation: names, lowercase,
    /// never `h2c`); WebSocket alone when the object names none. A node that does not know
    /// the field reads the default: it can only allow less.
    #[serde(default = "websocket_only")]
    pub upgrades: Vec<String>,
    /// The Gateway listeners it is attached to: a request takes it only on one of their ports.
    /// Empty for an Ingress's routes, which every gateway's own ports serve.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerRef>,
    /// Hosts that a more specific listener of its Gateway on the same port takes: a request
    /// for one of them is that listener's routes' alone (Gateway API listener isolation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_hosts: Vec<HostMatch>,
    /// Who may use the route (an AuthPolicy targeting its HTTPRoute or Ingress).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<Arc<Auth>>,
    /// Rate limits, all of which must pass (every RateLimitPolicy targeting its object).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<Arc<RateLimit>>,
}

/// A Gateway listener a route is attached to, as the gateway tells its ports apart.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerRef {
    /// `namespace/name` of the Gateway.
    pub gateway: String,
    /// The listener's port.
    pub port: u16,
    /// The listener's name (empty for certificates' placement, which goes by port).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// How a Gateway's TLS port checks client certificates (`spec.tls.frontend`, its `perPort`
/// entry or its `default`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FrontendValidation {
    /// `namespace/name` of the Gateway.
    pub gateway: String,
    /// The port of its HTTPS listeners it applies to.
    pub port: u16,
    /// The CA certificates (PEM) a client certificate must chain to; none usable: no client
    /// is let in (unless `insecure_fallback`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_pem: Vec<String>,
    /// `AllowInsecureFallback`: a certificate is asked for, but a client without one (or with
    /// one that does not verify) is let in.
    #[serde(default)]
    pub insecure_fallback: bool,
}

/// A Gateway listener that takes routes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayListener {
    /// When its Gateway was created (RFC 3339; empty for objects from files): of two Gateways
    /// that want one port for different things, the older keeps it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub created: String,
    /// `namespace/name` of the Gateway.
    pub gateway: String,
    /// The listener's name.
    pub name: String,
    /// The listener's port.
    pub port: u16,
    /// `HTTPS` or `TLS`: connections on its port begin with a TLS handshake.
    pub tls: bool,
    /// `TCP`: connections on its port are carried as bytes (TCPRoutes), never read as HTTP.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tcp: bool,
    /// A ListenerSet's listener taken by the Gateway: it may use a port no other Gateway has,
    /// never take one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_set: bool,
}

impl Route {
    /// Whether a request that came to port `port` of the gateway may take this route: one of
    /// its listeners is there (and `serves` its Gateway), or it has none and `home` says the
    /// port serves Ingresses.
    pub fn listens(&self, port: u16, home: bool, serves: impl Fn(&str) -> bool) -> bool {
        listens(&self.listeners, port, home, serves)
    }
}

impl StreamRoute {
    /// As [`Route::listens`].
    pub fn listens(&self, port: u16, home: bool, serves: impl Fn(&str) -> bool) -> bool {
        listens(&self.listeners, port, home, serves)
    }
}

fn listens(
    listeners: &[ListenerRef],
    port: u16,
    home: bool,
    serves: impl Fn(&str) -> bool,
) -> bool {
    if listeners.is_empty() {
        return home;
    }
    listeners
        .iter()
        .any(|l| l.port == port && serves(&l.gateway))
}

/// What a route allows when its object names no upgrades: WebSocket alone.
pub fn websocket_only() -> Vec<String> {
    vec!["websocket".to_string()]
}

/// A Gateway API `TLSRoute` attached to a `TLS` listener: connections whose SNI it names are
/// carried to a backend byte for byte.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamRoute {
    /// `tlsroute:ns/name`, for metrics and logs.
    pub name: Arc<str>,
    /// The SNI names it takes: the route's hostnames within its listeners' (never `Any`: a
    /// TLSRoute names its hosts). A name the gateway serves as HTTP with a host match as
    /// specific stays HTTP's.
    pub hosts: Vec<HostMatch>,
    /// `Terminate`: the gateway ends the client's TLS with the listener's certificate and
    /// carries what is inside; `Passthrough` (false): the client's TLS goes on unopened.
    pub terminate: bool,
    /// Which of two routes for the same name wins: the older object, then `namespace/name`.
    pub order: RouteOrder,
    /// The TLS listeners it is attached to (see [`Route::listeners`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerRef>,
    /// Backends with weights; a connection for a backend with no endpoint, or for an
    /// unresolved one, is closed.
    pub backends: Vec<WeightedBackend>,
}

/// Ordering key for routes whose matches are equally specific.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    /// The path condition, on the normalised path.
    pub path: PathMatch,
    /// The method, if restricted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Header conditions (names lowercase).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatch>,
    /// Query parameter conditions (names exact, case-sensitive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<ValueMatch>,
}

/// A path condition.
#[derive(Clone, Debug, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValueMatch {
    /// Header name (lowercase) or query parameter name.
    pub name: String,
    /// What the value must be.
    pub value: StringMatch,
}

/// How a value is compared.
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    use serde::Deserialize;

    pub(super) fn serialize<S: serde::Serializer>(
        r: &super::Regex,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(r.as_str())
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<super::Regex, D::Error> {
        let text = String::deserialize(d)?;
        regex::Regex::new(&text)
            .map(std::sync::Arc::new)
            .map_err(serde::de::Error::custom)
    }
}
