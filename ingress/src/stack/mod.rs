//! The ingress request pipeline, top to bottom. Every request goes through these stages in
//! this order; each stage is a function in `weir-proxy` (or below) and returns early with a
//! [`ProxyError`] that becomes the client's response.
//!
//! 0. hop-by-hop: what `Connection` names and hop-by-hop fields out, before anything is
//!    stamped or checked, so none of that can be named away     (proxy::headers)
//! 1. identify:   x-request-id, W3C traceparent                 (proxy::headers)
//! 2. limit:      header block size → 431                        (proxy::headers::size)
//!    2a. lookalikes: names with `_` dropped (with --underscore-headers keep, those that
//!    read as a header Weir sets or vouches for)                (proxy::headers::trusted)
//! 3. normalise:  path → 400 if malformed, or a form the path policy refuses (%2F, %5C,
//!    `\`, `;` parameters: --escaped-slashes, --path-parameters) (proxy::normalize)
//! 4. route:      host + path + method/headers/query → 404       (proxy::router)
//!    4a. auth:   JWT / API key → 401 / 403, claims to headers    (crate::auth)
//!    4b. limit:  every rate limit of the route → 429 / 503       (crate::ratelimit)
//! 5. body limit: the route's max body → 413                     (proxy::body::Limited)
//! 6. redirect:   RequestRedirect answers here                   (redirect)
//! 7. backend:    weighted backendRef → 500 / cluster            (pick_backend)
//! 8. rewrite:    upgrades the route allows (websocket by default; never h2c) or plain
//!    HTTP/1.1 (proxy::upgrade), X-Forwarded-*, URLRewrite, RequestHeaderModifier
//! 9. mirror:     RequestMirror copies, fire and forget          (replayable, mirror)
//!    (a body up to 64 KiB is read once, for mirrors and retries alike)
//! 10. send:      pending cap → endpoint → try → retry in budget (proxy::resilience::retry)
//!     (the cluster's TrafficPolicy: balancer, breaker, health, deadlines) → 502 / 503 / 504
//! 11. respond:   hop-by-hop out, ResponseHeaderModifier, splice of an offered switch → 502
//!     for a switch not offered
//! 12. observe:   metrics at headers, access log when the body ends (proxy::metrics, access_log)

use std::{borrow::Cow, future::Future, sync::Arc, time::Instant};

use http::{header, request::Parts, HeaderName, HeaderValue, Method, Request, Response, Uri};
use hyper::body::Body as _;
use weir_api::{
    compile::CLIENT_HEADER,
    model::{Balancer, Forward, Route, RouteAction},
};

use crate::security::Guards;
use weir_proxy::{
    access_log::{now_rfc3339, AccessLog, Entry},
    balance::Pool,
    body::{self, boxed, Body, Limited, Observed},
    config::{Active, ConfigStore},
    error::{is_grpc, ProxyError, ERROR_HEADER},
    headers::{self, FieldPolicy, Stamps, UnderscoreHeaders},
    metrics::Metrics,
    normalize::{normalize_path, PathPolicy},
    resilience::{
        retry::{self, Deadlines, Outgoing, Replay, Report},
        ring::request_key,
    },
    router::RequestView,
    server::Peer,
    upgrade,
    upstream::Upstream,
};

mod filters;
mod guard;
mod request;

use filters::{mirror, redirect, rewrite_path};
use request::{asked_host, content_length, request_host, take_parts, version_name};

/// Everything the pipeline uses, shared by all connections.
pub struct Gateway {
    /// The active configuration.
    pub store: Arc<ConfigStore>,
    /// Backend connection pools.
    pub upstream: Upstream,
    /// Metrics.
    pub metrics: Metrics,
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
}

/// What is known about a request as it moves through the stages, for the log and metrics, and
/// what an early stage hands a later one (taken when used).
pub(crate) struct Exchange {
    /// The client (as accepted; X-Forwarded-For adds its address).
    client: Peer,
    /// The client's address as text, for X-Forwarded-For (taken when it is set; none when
    /// the gateway sets no X-Forwarded-*).
    forwarded_for: Option<HeaderValue>,
    /// The host the client asked for, as it sent it (taken when the request is sent on).
    asked: Option<HeaderValue>,
    route: Option<Arc<str>>,
    backend: Option<String>,
    /// Tries, last endpoint and time waiting on backends (zero tries: never sent).
    sent: Report,
    /// Headers for the client's response, whatever it is (rate-limit state, challenges).
    extra: Vec<(HeaderName, HeaderValue)>,
}

/// Handles one request end to end. (A block, not an `async fn`, which would hold the request
/// in the future as well as its parts: every request's future is moved whole once.)
pub fn handle(
    gw: Arc<Gateway>,
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
        let offered = parts.extensions.get::<upgrade::OnUpgrade>().is_some();
        headers::strip_hop_by_hop(
            &mut parts.headers,
            offered && parts.method != Method::CONNECT,
        );
        let Stamps {
            request_id,
            client: forwarded_for,
        } = headers::stamp(&mut parts.headers, client.addr.ip(), gw.fields);
        // What only the access log needs is taken only when it is on.
        let logging = gw.access_log.enabled();
        let traceparent = match logging {
            true => parts.headers.get(headers::TRACEPARENT).cloned(),
            false => None,
        };
        // Looked up once: the route, the Host sent on and X-Forwarded-Host need it.
        let asked = asked_host(&parts);
        let host = request_host(asked.as_ref());
        let method = parts.method.clone();
        let protocol = version_name(parts.version);
        let user_agent = if logging {
            parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        } else {
            None
        };
        let bytes_in = match logging {
            true => content_length(&parts).unwrap_or(0),
            false => 0,
        };
        let grpc = is_grpc(&parts.headers);
        // The path as received, then as normalised: for the access log only.
        let mut logged_path = String::new();
        if logging {
            logged_path.push_str(parts.uri.path());
        }
        let mut x = Exchange {
            client,
            forwarded_for,
            asked: asked.clone(),
            route: None,
            backend: None,
            sent: Report::default(),
            extra: Vec::new(),
        };

        let result = proxy(&gw, &mut x, &mut logged_path, &host, &mut parts, body).await;
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
        if let Some(id) = &request_id {
            response
                .headers_mut()
                .insert(headers::REQUEST_ID, id.clone());
        }
        for (name, value) in x.extra.drain(..) {
            response.headers_mut().insert(name, value);
        }

        // Metrics at response headers: what a client waits for.
        let status = response.status();
        let to_headers = started.elapsed();
        gw.metrics.request(x.route.as_ref(), status, to_headers);
        gw.metrics.overhead.observe(
            to_headers
                .saturating_sub(x.sent.upstream_wait)
                .as_secs_f64(),
        );

        if !logging {
            return response;
        }
        let log = gw.access_log.clone();
        let host_logged = host.into_owned();
        let time = now_rfc3339();
        let (parts, body) = response.into_parts();
        let error = error.map(str::to_string).or_else(|| {
            parts
                .headers
                .get(ERROR_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        });
        let observed = Observed::new(body, move |bytes_out| {
            log.log(&Entry {
                time,
                client: client.addr,
                protocol,
                method: method.as_str(),
                host: &host_logged,
                path: &logged_path,
                status: status.as_u16(),
                route: x.route.as_deref(),
                backend: x.backend.as_deref(),
                endpoint: x.sent.endpoint,
                error: error.as_deref(),
                attempts: x.sent.attempts,
                duration_ms: started.elapsed().as_secs_f64() * 1e3,
                upstream_ms: (x.sent.attempts > 0)
                    .then_some(x.sent.upstream_wait.as_secs_f64() * 1e3),
                bytes_in,
                bytes_out,
                request_id: request_id
                    .as_ref()
                    .map_or("", |v| v.to_str().unwrap_or_default()),
                trace_id: traceparent.as_ref().map_or("", headers::trace_id),
                user_agent: user_agent.as_deref(),
            });
        });
        Response::from_parts(parts, boxed(observed))
    }
}

async fn proxy(
    gw: &Gateway,
    x: &mut Exchange,
    logged_path: &mut String,
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
    let guards = active
        .role
        .as_ref()
        .and_then(|r| r.downcast_ref::<Guards>());
    headers::drop_lookalikes(&mut parts.headers, gw.underscores, |name| {
        headers::STAMPED.contains(&name)
            || name == CLIENT_HEADER
            || guards.is_some_and(|g| g.vouches(name))
    });
    // 3. normalise (a copy only when that changed the path)
    let normalized =
        match normalize_path(parts.uri.path(), gw.paths).map_err(|_| ProxyError::BadRequest)? {
            Cow::Owned(changed) => Some(changed),
            Cow::Borrowed(_) => None,
        };
    let path = normalized.as_deref().unwrap_or(parts.uri.path());
    if gw.access_log.enabled() {
        path.clone_into(logged_path);
    }
    // 4. route
    let route = active
        .router
        .route(&RequestView {
            host,
            path,
            query: parts.uri.query(),
            method: &parts.method,
            headers: &parts.headers,
        })
        .cloned()
        .ok_or(ProxyError::NoRoute)?;
    x.route = Some(route.name.clone());
    // 4a. authenticate, 4b. rate limit
    if route.auth.is_some() || !route.limits.is_empty() {
        let guard = guards.and_then(|g| g.get(&route.name)).cloned();
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
        RouteAction::Redirect(r) => Ok(redirect(r, &route, host, path, parts)),
        RouteAction::Forward(f) => {
            forward(gw, x, &active, &route, f, host, normalized, parts, body).await
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    gw: &Gateway,
    x: &mut Exchange,
    active: &Active,
    route: &Route,
    f: &Forward,
    host: &str,
    normalized: Option<String>,
    parts: &mut Parts,
    body: Body,
) -> Result<Response<Body>, ProxyError> {
    let deadlines = Deadlines {
        request: f.timeouts.request.map(|t| tokio::time::Instant::now() + t),
        per_try: f.timeouts.backend_request,
    };
    // 7. backend
    let cluster = pick_backend(f).ok_or(ProxyError::BackendNotFound)?;
    if gw.access_log.enabled() {
        x.backend = Some(cluster.to_string());
    }
    let pool = active
        .pools
        .get(cluster)
        .filter(|p| p.cluster.resolved)
        .ok_or(ProxyError::BackendNotFound)?;

    // 8. rewrite. In a block: what is worked out here is dead by the awaits below, and a local
    // still in scope there would keep its own room in this future (which every request moves
    // whole) even after being moved away.
    // (hop-by-hop fields went at stage 0; an upgrade goes on only to a protocol the route
    // allows, never h2c)
    let downstream_upgrade = upgrade::requested(parts, &route.upgrades);
    let upgrade = downstream_upgrade.is_some();
    {
        let scheme = if x.client.tls { "https" } else { "http" };
        let rewrite = f.rewrite.as_ref();
        let asked = x.asked.take();
        // Usually the client's own Host, still in place: inserting it again would cost as much
        // as a new field (and may grow the map).
        let in_place = rewrite.is_none_or(|r| r.hostname.is_none())
            && parts.uri.authority().is_none()
            && asked.is_some()
            && f.request_headers.is_empty();
        let client_host = asked.or_else(|| HeaderValue::from_str(host).ok());
        let upstream_host = match rewrite.and_then(|r| r.hostname.as_deref()) {
            Some(h) => HeaderValue::from_str(h).ok(),
            None if in_place => None,
            None => client_host.clone(),
        };
        // None when the gateway sets no X-Forwarded-* (stamp made no address for them).
        if let Some(client) = x.forwarded_for.take() {
            let forwarded = gw.fields.forwarded;
            headers::set_forwarded(&mut parts.headers, forwarded, client, scheme, client_host);
        }
        headers::modify(&mut parts.headers, &f.request_headers);
        if let Some(v) = upstream_host {
            parts.headers.insert(header::HOST, v);
        }
        // The path as matched (normalised), or rewritten; the request's own when neither
        // changed it.
        let upstream_path = match (rewrite.and_then(|r| r.path.as_ref()), normalized) {
            (Some(p), normalized) => {
                let matched = normalized.as_deref().unwrap_or(parts.uri.path());
                Some(rewrite_path(p, route, matched))
            }
            (None, normalized) => normalized,
        };
        if let Some(path) = upstream_path {
            let path_and_query = match parts.uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            parts.uri = Uri::try_from(path_and_query).map_err(|_| ProxyError::BadRequest)?;
        }
    }
    parts.version = pool.version();

    // 9. mirror (a small body is read once for mirrors and retries alike)
    let body = replayable(pool, f, parts, body, upgrade).await?;
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    mirror(gw, active, f, parts, path_and_query, &body);

    // 10. send, with the cluster's retries, breaker and timeouts
    let key = match &pool.cluster.balancer {
        Balancer::ConsistentHash(k) => request_key(k, &parts.headers, x.client.addr.ip()),
        _ => None,
    };
    let out = Outgoing {
        parts: take_parts(parts),
        body,
    };
    let response = retry::send(&gw.upstream, pool, out, deadlines, key, &mut x.sent).await?;

    // 11. respond
    let (mut rparts, rbody) = response.into_parts();
    let switching = upgrade::switch(downstream_upgrade, &mut rparts)?;
    headers::strip_hop_by_hop(&mut rparts.headers, switching);
    headers::modify(&mut rparts.headers, &f.response_headers);
    Ok(Response::from_parts(rparts, rbody))
}

/// The body, read into memory when mirrors or the cluster's retries need copies of it and it
/// is small (or absent); streamed otherwise (then it is sent once, and mirrors get none).
async fn replayable(
    pool: &Pool,
    f: &Forward,
    parts: &Parts,
    body: Body,
    upgrade: bool,
) -> Result<Replay, ProxyError> {
    let needed = !upgrade && (pool.retries() || !f.mirrors.is_empty());
    Replay::of(body, &parts.headers, needed).await
}

/// Picks a cluster by weight; `None` when no backend has weight (the Gateway API's 500).
fn pick_backend(f: &Forward) -> Option<&str> {
    let total: u64 = f.backends.iter().map(|b| u64::from(b.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut n = fastrand::u64(..total);
    for b in &f.backends {
        if n < u64::from(b.weight) {
            return Some(&b.cluster);
        }
        n -= u64::from(b.weight);
    }
    None
}
