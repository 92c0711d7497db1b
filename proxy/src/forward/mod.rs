//! The one forward path: from a request a role has decided to send (routed, authorised,
//! filtered) to an endpoint and back. The ingress and both sidecar directions call it; a role
//! decides what happens before and after it (auth, limits, mTLS mode, access policy), never
//! how a request is sent.
//!
//! 0. hop-by-hop: every role strips them first, before it checks anything ([`strip_request`])
//! 1. upgrade:   a switch the client offered goes on only to a protocol allowed, and only to
//!    an HTTP/1.1 destination                                          (weir_http::upgrade)
//! 2. version:   the destination's; a `Host` from an h2 `:authority` (the URI's authority
//!    becomes the endpoint's)
//! 3. body:      read once, up to 64 KiB, when retries or mirrors need copies (Replay)
//! 4. mirrors:   the copies the filter chain took, sent with that body (crate::filter::mirror)
//! 5. send:      a cluster: pending cap → endpoint (its balancer; the hash key from this
//!    request when it hashes) → try → retry within budget, breaker, deadlines
//!    (crate::resilience::retry) → 502 / 503 / 504; the workload itself: once
//! 6. respond:   an offered switch spliced (502 for one not offered), hop-by-hop out, the
//!    filters' response halves                                         (crate::filter)

use std::{
    net::{IpAddr, SocketAddr},
    time::Instant,
};

use http::{request::Parts, Method, Request, Response, Uri, Version};
use weir_api::model::{Balancer, Filter, Protocol};

use crate::{
    balance::Pool,
    filter::{self, mirror, Mirrored},
    headers,
    resilience::{
        retry::{self, Outgoing, Replay, Report, Tries},
        ring::request_key,
    },
};
use weir_http::{
    body::Body,
    error::ProxyError,
    upgrade,
    upstream::{classify_and_log, Upstream},
};

/// Where a request goes.
pub enum Destination<'a> {
    /// An endpoint of a cluster, as its TrafficPolicy says (balancer, retries, breaker,
    /// timeouts), within the route's deadlines, with the route's retries if it has any.
    Cluster {
        /// The cluster.
        pool: &'a Pool,
        /// The route's timeouts and retries.
        tries: Tries<'a>,
    },
    /// The workload itself (a sidecar's inbound): this address, in the request's own HTTP
    /// version, once.
    Local(SocketAddr),
}

/// One request's way out.
pub struct Forward<'a> {
    /// Connections to endpoints.
    pub upstream: &'a Upstream,
    /// Where it goes.
    pub destination: Destination<'a>,
    /// The protocols the client may switch to.
    pub upgrades: &'a [String],
    /// The route's filters (their response halves run here).
    pub filters: &'a [Filter],
    /// The chosen backend's own filters (their response halves run after the route's).
    pub backend_filters: &'a [Filter],
    /// Copies the filters took, to send with the body.
    pub mirrors: Vec<Mirrored>,
    /// The client's address, for a cluster that hashes by it.
    pub client: IpAddr,
}

/// Stage 0 of every role: hop-by-hop fields out, and whatever `Connection` names, before
/// anything is stamped or checked, so none of that can be named away. An upgrade the server
/// offered keeps `Connection: upgrade` until the forward path decides on it.
pub fn strip_request(parts: &mut Parts) {
    let offered = parts.extensions.get::<upgrade::OnUpgrade>().is_some();
    headers::strip_hop_by_hop(
        &mut parts.headers,
        offered && parts.method != Method::CONNECT,
    );
}

/// Sends the request and returns the response for the client; `report` says what was tried.
/// (`parts` is taken; the caller keeps its own copy of nothing.)
pub async fn forward(
    f: Forward<'_>,
    parts: &mut Parts,
    body: Body,
    report: &mut Report,
) -> Result<Response<Body>, ProxyError> {
    let Forward {
        upstream,
        destination,
        upgrades,
        filters,
        backend_filters,
        mirrors,
        client,
    } = f;
    // 1. upgrade
    let protocol = match &destination {
        Destination::Cluster { pool, .. } => pool.cluster.protocol,
        Destination::Local(_) if parts.version == Version::HTTP_2 => Protocol::H2c,
        Destination::Local(_) => Protocol::Http1,
    };
    let allowed = match protocol {
        Protocol::Http1 => upgrades,
        Protocol::H2c => &[],
    };
    let downstream = upgrade::requested(parts, allowed);
    // 2. version
    parts.version = match protocol {
        Protocol::Http1 => Version::HTTP_11,
        Protocol::H2c => Version::HTTP_2,
    };
    // The host asked for stays with the request whatever the hop: a `Host` from an h2
    // `:authority` (the URI's authority becomes the endpoint's when it is sent).
    headers::host_from_authority(parts);
    // 3. body, 4. mirrors
    let retries = match &destination {
        Destination::Cluster { pool, tries } => tries.retries(pool),
        Destination::Local(_) => false,
    };
    let needed = downstream.is_none() && (retries || !mirrors.is_empty());
    let body = Replay::of(body, &parts.headers, needed).await?;
    if !mirrors.is_empty() {
        mirror::send(mirrors, upstream, &body);
    }
    // 5. send
    let response = match destination {
        Destination::Cluster { pool, tries } => {
            let key = match &pool.cluster.balancer {
                Balancer::ConsistentHash(k) => request_key(k, &parts.headers, client),
                _ => None,
            };
            let out = Outgoing {
                parts: take_parts(parts),
                body,
            };
            retry::send(upstream, pool, out, tries, key, report).await?
        }
        Destination::Local(addr) => {
            let request = local_request(addr, parts, body)?;
            report.attempts = 1;
            report.endpoint = Some(addr);
            let started = Instant::now();
            let sent = upstream.send(protocol, request).await;
            report.upstream_wait = started.elapsed();
            sent.map_err(|e| classify_and_log(&e, addr))?
        }
    };
    // 6. respond
    let (mut parts, body) = response.into_parts();
    let switching = upgrade::switch(downstream, &mut parts)?;
    headers::strip_hop_by_hop(&mut parts.headers, switching);
    filter::response(filters, &mut parts);
    filter::response(backend_filters, &mut parts);
    Ok(Response::from_parts(parts, body))
}

/// The request to the workload at `addr`: its path and query, that authority.
fn local_request(
    addr: SocketAddr,
    parts: &mut Parts,
    body: Replay,
) -> Result<Request<Body>, ProxyError> {
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri = Uri::try_from(format!("http://{addr}{path_and_query}"))
        .map_err(|_| ProxyError::BadRequest)?;
    let mut local = take_parts(parts);
    local.uri = uri;
    local.extensions = std::mem::take(&mut parts.extensions);
    Ok(Request::from_parts(local, body.into_body()))
}

/// Moves method, version, URI and headers out of `parts` (which are not used again).
fn take_parts(parts: &mut Parts) -> Parts {
    let (mut taken, ()) = Request::new(()).into_parts();
    taken.method = parts.method.clone();
    taken.version = parts.version;
    taken.uri = std::mem::take(&mut parts.uri);
    taken.headers = std::mem::take(&mut parts.headers);
    taken
}
