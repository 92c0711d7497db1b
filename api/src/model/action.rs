//! What a matched route does: redirect, or forward through its filters to weighted backends,
//! with the route's timeouts, retries and session persistence.

use std::{sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};

use super::RetryPolicy;

/// What a matched route does.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RouteAction {
    /// Answer with a redirect (`RequestRedirect`).
    Redirect(Redirect),
    /// Send to backends.
    Forward(Forward),
}

/// `RequestRedirect`: each `None` keeps the request's own value.
#[derive(Clone, Debug, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PathRewrite {
    /// Replace the whole path.
    Full(String),
    /// Replace the matched prefix (only valid on a `Prefix` match).
    Prefix(String),
}

/// Forwarding to weighted backends, with the filters that apply on the way.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Forward {
    /// Backends with weights; a weight of 0 gets no traffic. No backend with a weight: 500.
    pub backends: Vec<WeightedBackend>,
    /// The rule's filters, in the order the route lists them: each runs on the request as the
    /// ones before it left it, and the response halves run in the same order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
    /// `timeouts`.
    pub timeouts: Timeouts,
    /// `retry` (GEP-1731): in place of the backend's TrafficPolicy retry, within its cluster's
    /// retry budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// `sessionPersistence` (GEP-1619): later requests of a client go to the endpoint its
    /// first one went to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Session>,
}

/// A route's session persistence: the gateway names the endpoint that answered in a cookie
/// (or a response header the client sends back), and sends later requests carrying it there
/// while it is usable and the session has not timed out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// The cookie's (or header's) name.
    pub name: String,
    /// `Header`: a header rather than a cookie.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub header: bool,
    /// `Permanent` cookies: their `Max-Age` (the absolute timeout).
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_age: Option<Duration>,
    /// A session is not kept past this long after it began.
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub absolute: Option<Duration>,
    /// Nor this long after its last request.
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub idle: Option<Duration>,
}

impl Forward {
    /// The `URLRewrite` among the filters, if any (a rule has at most one).
    pub fn rewrite(&self) -> Option<&UrlRewrite> {
        self.filters.iter().find_map(|f| match f {
            Filter::UrlRewrite(r) => Some(r),
            _ => None,
        })
    }

    /// The `CORS` filter among the filters, if any (the first: a second is refused).
    pub fn cors(&self) -> Option<&Arc<Cors>> {
        self.filters.iter().find_map(|f| match f {
            Filter::Cors(c) => Some(c),
            _ => None,
        })
    }
}

/// One HTTPRoute filter that acts on a forwarded request (a `RequestRedirect` is a
/// [`RouteAction`] of its own: it answers instead of forwarding). A node that does not know a
/// variant cannot decode the snapshot and refuses it: a filter is never skipped.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Filter {
    /// `RequestHeaderModifier`.
    RequestHeaderModifier(HeaderModifier),
    /// `ResponseHeaderModifier`.
    ResponseHeaderModifier(HeaderModifier),
    /// `URLRewrite`.
    UrlRewrite(UrlRewrite),
    /// `RequestMirror`: a copy sent and forgotten.
    RequestMirror(Mirror),
    /// `CORS`: preflight requests answered by the gateway (before authentication: browsers
    /// send them without credentials), and the `Access-Control-*` headers on every response
    /// to an allowed origin.
    Cors(Arc<Cors>),
}

/// A `CORS` filter (the Gateway API's `HTTPCORSFilter`), validated.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cors {
    /// `allowOrigins` had `*`: every origin.
    pub any_origin: bool,
    /// The other origins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub origins: Vec<AllowedOrigin>,
    /// `allowCredentials`.
    pub credentials: bool,
    /// `allowMethods` had `*`.
    pub any_method: bool,
    /// The methods listed (case as written: methods are case-sensitive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// `allowHeaders` had `*`.
    pub any_header: bool,
    /// The request headers listed (lowercase).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// `exposeHeaders` had `*`.
    pub expose_any: bool,
    /// The response headers listed (lowercase).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<String>,
    /// `maxAge`, seconds (5 when unset, as the spec says).
    pub max_age: u32,
}

/// One allowed origin: `scheme://host[:port]`, the port made explicit (80 for http, 443 for
/// https). A host of `*.example.com` matches any host ending in `.example.com` (one label or
/// more to the left); `*` alone any host of that scheme and port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllowedOrigin {
    /// `http` or `https`.
    pub scheme: String,
    /// Lowercase; may start with `*`.
    pub host: String,
    /// The port.
    pub port: u16,
}

/// A backend and its share of traffic.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WeightedBackend {
    /// Key into [`Snapshot::clusters`].
    pub cluster: String,
    /// Relative weight.
    pub weight: u32,
    /// Filters for requests sent to this backend alone (`backendRefs[].filters`: header
    /// modifiers), run after the rule's. A node that does not know the field cannot decode
    /// the snapshot only if a filter's variant is new to it; an older one ignores the field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
}

/// Set, add and remove headers (names lowercase).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderModifier {
    /// Replace (or add) these headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<(String, String)>,
    /// Append these values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<(String, String)>,
    /// Remove these headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl HeaderModifier {
    /// True when it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// `URLRewrite`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UrlRewrite {
    /// New `Host` sent to the backend.
    pub hostname: Option<String>,
    /// New path sent to the backend.
    pub path: Option<PathRewrite>,
}

/// `RequestMirror`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mirror {
    /// Key into [`Snapshot::clusters`].
    pub cluster: String,
    /// Share of requests mirrored, in parts per million (1_000_000 = all).
    pub per_million: u32,
}

/// Route timeouts (`HTTPRoute.spec.rules[].timeouts`).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// Whole request, from arrival to the response headers.
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub request: Option<Duration>,
    /// One request to a backend.
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
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

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<std::time::Duration>, D::Error> {
        use serde::Deserialize;
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        text.strip_suffix("ms")
            .and_then(|ms| ms.parse().ok())
            .map(|ms| Some(std::time::Duration::from_millis(ms)))
            .ok_or_else(|| serde::de::Error::custom(format!("not a duration in ms: {text:?}")))
    }
}
