//! The ingress request pipeline, top to bottom. Every request goes through these stages in
//! this order; each stage is a function in `weir-proxy` (or below) and returns early with a
//! [`ProxyError`] that becomes the client's response.
//!
//! 0. hop-by-hop: what `Connection` names and hop-by-hop fields out, before anything is
//!    stamped or checked, so none of that can be named away     (proxy::forward)
//! 1. identify:   x-request-id, W3C traceparent                 (proxy::headers)
//! 2. limit:      header block size → 431                        (proxy::headers::size)
//!    2a. lookalikes: names with `_` dropped (with --underscore-headers keep, those that
//!    read as a header Weir sets or vouches for)                (proxy::headers::trusted)
//! 3. normalise:  path → 400 if malformed, or a form the path policy refuses (%2F, %5C,
//!    `\`, `;` parameters: --escaped-slashes, --path-parameters) (proxy::normalize)
//! 4. route:      host + path + method/headers/query → 404       (proxy::router)
//!    over TLS, a host a TLSRoute carries connections for → 421 (SNI named another)
//!    4'. CORS:   a preflight answered by the rule's CORS filter (the rule for the method it
//!    asks about, if the OPTIONS itself matches none with one); every other response of a
//!    CORS rule, refusals included, gets what the policy grants its origin (proxy::filter::cors)
//!    4a. auth:   JWT / API key → 401 / 403, claims to headers    (crate::auth)
//!    4b. limit:  every rate limit of the route → 429 / 503       (crate::ratelimit)
//! 5. body limit: the route's max body → 413                     (proxy::body::Limited)
//! 6. redirect:   RequestRedirect answers here                   (proxy::filter::redirect)
//! 7. backend:    weighted backendRef → 500 / cluster        (proxy::balance::weighted)
//! 8. fields:     X-Forwarded-*, the `Host` asked for, the path as matched (normalised)
//! 9. filters:    the rule's filters in the order it lists them — RequestHeaderModifier,
//!    URLRewrite, RequestMirror (a copy taken here) — then the chosen backendRef's own
//!    (header modifiers)                                         (proxy::filter)
//! 10. forward:   the forward path every role shares: upgrades the route allows (websocket
//!     by default; never h2c), version, the body read once for retries and mirrors, the
//!     cluster's TrafficPolicy (balancer and hash key, pending cap, retries in budget,
//!     breaker, deadlines) → 502 / 503 / 504, the response: an offered switch spliced (502 for
//!     one not offered), hop-by-hop out, the filters' response halves  (proxy::forward)
//! 11. observe:   metrics at headers, access log when the body ends (proxy::metrics, access_log)

use std::{borrow::Cow, future::Future, sync::Arc, time::Instant};

use http::{header, request::Parts, HeaderName, HeaderValue, Request, Response, Uri};
use hyper::body::Body as _;
use weir_api::{
    compile::CLIENT_HEADER,
    model::{Cors, Forward, Route, RouteAction},
};

use crate::{metrics::GuardMetrics, security::Guards};
use weir_http::{
    body::{self, boxed, Body, Limited},
    error::{is_grpc, ProxyError},
    server::Peer,
    upstream::Upstream,
};
use weir_proxy::{
    access_log::{AccessLog, Arrival, Outcome},
    balance::{session, weighted},
    config::{Active, ConfigStore},
    filter::{self, cors},
    forward::{self, Destination},
    headers::{self, FieldPolicy, Stamps, UnderscoreHeaders},
    metrics::Metrics,
    normalize::{normalize_path, PathPolicy},
    resilience::retry::{Report, Tries},
    router::RequestView,
    trace::{Hop, SpanStart, Tracer},
};

mod guard;
mod request;
#[cfg(test)]
mod tests;

use request::{asked_host, content_length, request_host};

/// Everything the pipeline uses, shared by all connections.
pub struct Gateway {
    /// The active configuration.
    pub store: Arc<ConfigStore<Guards>>,
    /// Backend connection pools.
    pub upstream: Upstream,
    /// Metrics.
    pub metrics: Metrics,
    /// The auth and rate-limit series.
    pub guard_metrics: GuardMetrics,
    /// The access log.
    pub access_log: AccessLog,
    /// Largest request header block accepted (bytes).
    pub max_header_bytes: usize,
    /// Which request fields the gateway sets (request id, trace context, X-Forwarded-*).
    pub fields: FieldPolicy,
    /// What paths backends read differently become before routing (`--escaped-slashes`,
    /// `--path-parameters`).
    pub paths: PathPolicy,
    /// What happens to request header names with `_` (`--underscore-headers`).
    pub underscores: UnderscoreHeaders,
    /// Exports sampled requests' spans (`--otlp-endpoint`); none: no spans.
    pub tracer: Option<Arc<Tracer>>,
}

/// What is known about a request as it moves through the stages, for the log and metrics, and
/// what an early stage hands a later one (taken when used).
pub(crate) struct Exchange {
    /// The client (as accepted; X-Forwarded-For adds its address).
    client: Peer,
    /// The Gateway listener port it came to (which routes it may take).
    port: u16,
    /// The client's address as text, for X-Forwarded-For (taken when it is set; none when
    /// the gateway sets no X-Forwarded-*).
    forwarded_for: Option<HeaderValue>,
    /// The host the client asked for, as it sent it (taken when the request is sent on).
    asked: Option<HeaderValue>,
    route: Option<Arc<str>>,
    backend: Option<Arc<str>>,
    /// Who the request was authenticated as (a JWT's `sub`, an API key's client), for the log.
    user: Option<Box<str>>,
    /// Tries, last endpoint and time waiting on backends (zero tries: never sent).
    sent: Report,
    /// Headers for the client's response, whatever it is (rate-limit state, challenges).
    extra: Vec<(HeaderName, HeaderValue)>,
    /// The route's CORS policy and what it grants this request, for whatever response it gets.
    cors: Option<(Arc<Cors>, cors::Reply)>,
}

/// Handles one request that came to the gateway's port `port` (as its Gateway listeners name
/// it) end to end. (A block, not an `async fn`, which would hold the request in the future as
/// well as its parts: every request's future is moved whole once.)
pub fn handle(
    gw: Arc<Gateway>,
    port: u16,
    client: Peer,
    req: Request<Body>,
) -> impl Future<Output = Response<Body>> {
    let started = Instant::now();
    let (mut parts, body) = req.into_parts();
    async move {
        // Room for the headers added below (id, trace, X-Forwarded-*), so the map grows at most
        // once (HTTP/1.1 heads come with it).
        parts.headers.reserve(5);
        // 0. hop-by-hop. An upgrade the server offered keeps `Connection: upgrade` until its
        // route says whether it is allowed.
        forward::strip_request(&mut parts);
        let Stamps {
            request_id,
            client: forwarded_for,
            sampled,
        } = headers::stamp(&mut parts.headers, client.addr.ip(), gw.fields);
        // Looked up once: the route, the Host sent on and X-Forwarded-Host need it.
        let asked = asked_host(&parts);
        let host = request_host(asked.as_ref());
        // A span only for a sampled request, when spans are exported.
        let span = sampled.filter(|_| gw.tracer.is_some()).map(|ids| {
            let mut span = SpanStart::new(ids, Hop::Server, &parts.method, &host, parts.uri.path());
            span.attribute("client.address", client.addr.ip().to_string());
            span
        });
        let grpc = is_grpc(&parts.headers);
        // What only the access log needs is taken only when it is on.
        let mut arrival = gw
            .access_log
            .enabled()
            .then(|| Arrival::of(&parts, client.addr, &host, started));
        let mut x = Exchange {
            client,
            port,
            forwarded_for,
            asked: asked.clone(),
            route: None,
            backend: None,
            user: None,
            sent: Report::default(),
            extra: Vec::new(),
            cors: None,
        };

        let result = proxy(&gw, &mut x, arrival.as_mut(), &host, &mut parts, body).await;
        let (mut response, error) = match result {
            Ok(response) => (response, None),
            Err(e) => {
                gw.metrics.proxy_error(e);
                let response = if grpc {
                    e.grpc_response()
                } else {
                    e.response()
                };
                (response, Some(e.reason()))
            }
        };
        if let Some(id) = request_id {
            // Never indexed by HPACK: a value unique to each response would only churn the
            // HTTP/2 connection's table (and be compared against every entry in it).
            let mut id = id;
            id.set_sensitive(true);
            response.headers_mut().insert(headers::REQUEST_ID, id);
        }
        for (name, value) in x.extra.drain(..) {
            response.headers_mut().insert(name, value);
        }
        if let Some((policy, reply)) = &x.cors {
            reply.apply(policy, response.headers_mut());
        }

        // Metrics at response headers: what a client waits for.
        let status = response.status();
        let to_headers = started.elapsed();
        let overhead = to_headers.saturating_sub(x.sent.upstream_wait);
        gw.metrics
            .request(x.route.as_ref(), status, to_headers, overhead);

        if let (Some(tracer), Some(span)) = (&gw.tracer, span) {
            response = tracer.finish(span, x.route.as_deref(), response);
        }
        match arrival {
            Some(arrival) => {
                let outcome = Outcome {
                    route: x.route,
                    backend: x.backend,
                    sent: x.sent,
                    error,
                    user: x.user,
                };
                gw.access_log.on_end(arrival, outcome, response)
            }
            None => response,
        }
    }
}

async fn proxy(
    gw: &Gateway,
    x: &mut Exchange,
    arrival: Option<&mut Arrival>,
    host: &str,
    parts: &mut Parts,
    body: Body,
) -> Result<Response<Body>, ProxyError> {
    // 2. limit
    if headers::size(&parts.headers) > gw.max_header_bytes {
        return Err(ProxyError::HeadersTooLarge);
    }
    // 2a. lookalikes of what Weir sets (whatever the field modes) or an AuthPolicy vouches for
    let active = gw.store.load();
    let guards = &active.role;
    headers::drop_lookalikes(&mut parts.headers, gw.underscores, |name| {
        headers::STAMPED.contains(&name) || name == CLIENT_HEADER || guards.vouches(name)
    });
    // 3. normalise (a copy only when that changed the path)
    let normalized =
        match normalize_path(parts.uri.path(), gw.paths).map_err(|_| ProxyError::BadRequest)? {
            Cow::Owned(changed) => Some(changed),
            Cow::Borrowed(_) => None,
        };
    if let (Some(arrival), Some(changed)) = (arrival, &normalized) {
        arrival.set_path(changed);
    }
    let path = normalized.as_deref().unwrap_or(parts.uri.path());
    // 4. route
    let view = |method| RequestView {
        host,
        path,
        query: parts.uri.query(),
        method,
        headers: &parts.headers,
    };
    // A name TLS connections are carried for (a TLSRoute) is not served as HTTP: a request
    // for it over TLS came on a connection whose SNI named another (domain fronting).
    let router = active.router_at(x.port);
    if x.client.tls && router.carried(host) {
        return Err(ProxyError::Misdirected);
    }
    let route = router.route(&view(&parts.method)).cloned();
    // 4'. CORS: a preflight is answered here, before authentication (a browser sends it
    // without credentials); every other response gets what the policy grants its origin. A
    // preflight asks about another method: when no rule with a CORS filter takes the OPTIONS
    // itself, the rule for the method asked about answers it (and nothing is forwarded).
    let policy = |r: &Route| match &r.action {
        RouteAction::Forward(f) => f.cors().cloned(),
        RouteAction::Redirect(_) => None,
    };
    if let Some(asked) = cors::asked_method(&parts.method, &parts.headers) {
        let found = route.as_ref().and_then(|r| Some((r.clone(), policy(r)?)));
        let found = found.or_else(|| {
            let r = router.route(&view(&asked))?;
            Some((r.clone(), policy(r)?))
        });
        if let Some((r, policy)) = found {
            x.route = Some(r.name.clone());
            return Ok(cors::preflight(&policy, &parts.headers));
        }
    }
    let route = route.ok_or(ProxyError::NoRoute)?;
    x.route = Some(route.name.clone());
    if let Some(policy) = policy(&route) {
        let reply = cors::reply(&policy, &parts.headers);
        x.cors = Some((policy, reply));
    }
    // 4a. authenticate, 4b. rate limit
    if route.auth.is_some() || !route.limits.is_empty() {
        let guard = guards.get(&route.name).cloned();
        if let Some(guard) = guard {
            // Boxed: checks that may call out (JWKS, Redis) take a larger future than the
            // rest of the request, which would size every request's future, guarded or not.
            Box::pin(guard::check(gw, x, &guard, &mut parts.headers)).await?;
        }
    }
    // 5. body limit
    let body: Body = match route.max_request_body {
        _ if body.is_end_stream() => body::empty(),
        Some(limit) if content_length(parts).is_some_and(|n| n > limit) => {
            return Err(ProxyError::BodyTooLarge)
        }
        Some(limit) => boxed(Limited::new(body, limit)),
        None => body,
    };
    match &route.action {
        // 6. redirect
        RouteAction::Redirect(r) => {
            let listener = (!route.listeners.is_empty()).then_some(x.port);
            let tls = x.client.tls;
            Ok(filter::redirect(
                r, &route, host, path, parts, tls, listener,
            ))
        }
        RouteAction::Forward(f) => {
            forward(gw, x, &active, &route, f, host, normalized, parts, body).await
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    gw: &Gateway,
    x: &mut Exchange,
    active: &Active<Guards>,
    route: &Route,
    f: &Forward,
    host: &str,
    normalized: Option<String>,
    parts: &mut Parts,
    body: Body,
) -> Result<Response<Body>, ProxyError> {
    // 7. backend: the one the client's session names, if it still may, else by weight.
    let ticket = f
        .session
        .as_ref()
        .and_then(|s| session::asked(s, &parts.headers, session::now()));
    let sticky = ticket.and_then(|t| {
        f.backends.iter().find(|b| {
            let pool = active.pools.get(&b.cluster);
            b.weight > 0 && pool.is_some_and(|p| p.sticky(t.endpoint).is_some())
        })
    });
    let backend = sticky
        .or_else(|| weighted(&f.backends))
        .ok_or(ProxyError::BackendNotFound)?;
    let tries = Tries {
        request: f.timeouts.request.map(|t| tokio::time::Instant::now() + t),
        per_try: f.timeouts.backend_request,
        retry: f.retry.as_ref(),
        sticky: ticket.map(|t| t.endpoint),
    };
    let cluster = backend.cluster.as_str();
    let pool = active.pools.get(cluster);
    if gw.access_log.enabled() {
        x.backend = Some(pool.map_or_else(|| Arc::from(cluster), |p| p.name.clone()));
    }
    let pool = pool
        .filter(|p| p.cluster.resolved)
        .ok_or(ProxyError::BackendNotFound)?;

    // 8. fields. In a block: what is worked out here is dead by the awaits below, and a local
    // still in scope there would keep its own room in this future (which every request moves
    // whole) even after being moved away.
    {
        let scheme = if x.client.tls { "https" } else { "http" };
        let asked = x.asked.take();
        // Usually the client's own Host, still in place: inserting it again would cost as much
        // as a new field (and may grow the map).
        let in_place = parts.uri.authority().is_none() && asked.is_some();
        let client_host = asked.or_else(|| HeaderValue::from_str(host).ok());
        let upstream_host = match in_place {
            true => None,
            false => client_host.clone(),
        };
        // None when the gateway sets no X-Forwarded-* (stamp made no address for them).
        if let Some(client) = x.forwarded_for.take() {
            let forwarded = gw.fields.forwarded;
            headers::set_forwarded(&mut parts.headers, forwarded, client, scheme, client_host);
        }
        if let Some(v) = upstream_host {
            parts.headers.insert(header::HOST, v);
        }
        // The path as matched (normalised); the request's own when that changed nothing.
        if let Some(path) = normalized {
            let path_and_query = match parts.uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            parts.uri = Uri::try_from(path_and_query).map_err(|_| ProxyError::BadRequest)?;
        }
    }
    // 9. filters
    let mut cx = filter::Context {
        route,
        pools: &active.pools,
        mirrors: Vec::new(),
    };
    filter::request(&f.filters, &mut cx, parts)?;
    filter::request(&backend.filters, &mut cx, parts)?;

    // 10. forward
    let out = forward::Forward {
        upstream: &gw.upstream,
        destination: Destination::Cluster { pool, tries },
        upgrades: &route.upgrades,
        filters: &f.filters,
        backend_filters: &backend.filters,
        mirrors: cx.mirrors,
        client: x.client.addr.ip(),
    };
    let mut response = forward::forward(out, parts, body, &mut x.sent).await?;
    // A session begins (or goes on) with an endpoint that answered, not one that failed.
    if let (Some(s), Some(addr)) = (&f.session, x.sent.endpoint) {
        let endpoint = pool
            .endpoint(addr)
            .filter(|_| !response.status().is_server_error());
        if let Some(endpoint) = endpoint {
            let (id, tls, now) = (endpoint.session, x.client.tls, session::now());
            session::stamp(s, ticket, id, tls, now, response.headers_mut());
        }
    }
    Ok(response)
}
