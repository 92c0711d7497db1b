//! The attempt loop: admit the request to its cluster, pick an endpoint, send with the per-try
//! deadline, feed the breaker, and retry — to another endpoint, after a jittered backoff, only
//! while the policy, the method, the body, the deadline and the retry budget all allow it.

use std::{
    future::Future,
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{
    request::Parts,
    uri::{Authority, PathAndQuery, Scheme},
    Request, Response, Uri,
};
use weir_api::model::{Protocol, RetryPolicy};

use super::budget::backoff;
use crate::balance::{Endpoint, Pool};
use weir_http::{
    body::{self, Body},
    error::{ProxyError, Side},
    upstream::{classify_and_log, h1::idempotent, Expected, Upstream},
};

/// Request bodies up to this size are kept so the request can be retried.
pub const REPLAY_LIMIT: u64 = 64 * 1024;

/// A request ready to go to some endpoint of a cluster: everything but the authority.
pub struct Outgoing {
    /// Method, version, headers; the URI's path and query.
    pub parts: Parts,
    /// The body.
    pub body: Replay,
}

/// A request body that can be sent again, or only once.
pub enum Replay {
    /// Buffered (or empty): every try gets a copy.
    Bytes(Bytes),
    /// Streamed: the first try takes it, so there is no retry.
    Once(Option<Body>),
}

impl Replay {
    /// The request body, read into memory when copies of it are `needed` (retries, mirrors)
    /// and it is small (or absent); streamed otherwise (then it is sent once).
    pub async fn of(
        body: Body,
        headers: &http::HeaderMap,
        needed: bool,
    ) -> Result<Self, ProxyError> {
        use http_body_util::BodyExt;
        use hyper::body::Body as _;
        // The length is looked up only when it matters.
        let small = needed
            && (body.is_end_stream()
                || headers
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .is_some_and(|n| n <= REPLAY_LIMIT));
        if !small {
            return Ok(Replay::Once(Some(body)));
        }
        let bytes = body.collect().await.map_err(|e| {
            if e.is::<body::TooLarge>() {
                ProxyError::BodyTooLarge
            } else {
                ProxyError::from_client_body(&*e).unwrap_or(ProxyError::BadRequest)
            }
        })?;
        Ok(Replay::Bytes(bytes.to_bytes()))
    }

    /// The body to send once.
    pub fn into_body(mut self) -> Body {
        self.take()
    }

    fn take(&mut self) -> Body {
        match self {
            Replay::Bytes(b) => body::full(b.clone()),
            Replay::Once(b) => b.take().unwrap_or_else(body::empty),
        }
    }

    fn replayable(&self) -> bool {
        matches!(self, Replay::Bytes(_))
    }
}

/// How the route has its request tried: its deadlines (Gateway API `timeouts`), which the
/// cluster's policy may tighten, and its retries (`retry`), which replace the cluster's.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tries<'a> {
    /// The whole request (`timeouts.request`).
    pub request: Option<tokio::time::Instant>,
    /// One try (`timeouts.backendRequest`).
    pub per_try: Option<Duration>,
    /// The route's own retries, if it has any.
    pub retry: Option<&'a RetryPolicy>,
    /// The endpoint the client's session names ([`crate::balance::session`]): the first try
    /// goes there while it is usable.
    pub sticky: Option<u64>,
}

impl Tries<'_> {
    /// Whether the request may be sent more than once to `pool` (so its body is kept).
    pub fn retries(&self, pool: &Pool) -> bool {
        match self.retry {
            Some(r) => r.attempts > 1,
            None => pool.retries(),
        }
    }
}

/// What happened, for the access log and metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct Report {
    /// Tries made.
    pub attempts: u32,
    /// The endpoint of the last try.
    pub endpoint: Option<SocketAddr>,
    /// Time spent waiting on backends, over all tries.
    pub upstream_wait: Duration,
}

/// Sends `out` to an endpoint of `pool`, retrying as the route (`tries`), else the cluster's
/// TrafficPolicy, allows, within the cluster's retry budget.
/// `key` is the consistent-hash key, if the cluster hashes. (A block, not an `async fn`, which
/// would hold each argument twice in the future that every request moves whole once.)
#[allow(clippy::manual_async_fn)]
pub fn send<'a>(
    upstream: &'a Upstream,
    pool: &'a Pool,
    mut out: Outgoing,
    tries: Tries<'a>,
    key: Option<u64>,
    report: &'a mut Report,
) -> impl Future<Output = Result<Response<Body>, ProxyError>> + 'a {
    async move {
        let resilience = &pool.cluster.resilience;
        let deadline = match (tries.request, resilience.timeout) {
            (Some(d), Some(t)) => Some(d.min(tokio::time::Instant::now() + t)),
            (d, t) => d.or_else(|| t.map(|t| tokio::time::Instant::now() + t)),
        };
        let retry = tries.retry.or(resilience.retry.as_ref());
        let per_try = retry.and_then(|r| r.per_try_timeout).or(tries.per_try);
        let retry_method = retry.is_some_and(|r| r.non_idempotent || idempotent(&out.parts.method));
        let _pending = pool.admit()?;
        // Only requests that may be retried count towards the budget their retries spend.
        if retry.is_some_and(|r| r.attempts > 1) && out.body.replayable() {
            pool.budget.deposit(Instant::now());
        }
        let protocol = pool.cluster.protocol;
        let mut tried: Vec<SocketAddr> = Vec::new();
        // The endpoint of the next try, chosen before a retry is paid for.
        let mut next = None;
        loop {
            report.attempts += 1;
            let sticky = tries.sticky.filter(|_| tried.is_empty());
            let endpoint = match (next.take(), sticky.and_then(|id| pool.sticky(id))) {
                (Some(endpoint), _) | (None, Some(endpoint)) => endpoint.clone(),
                (None, None) => pool.pick(&tried, key)?.clone(),
            };
            report.endpoint = Some(endpoint.addr);
            let last =
                retry.is_none_or(|r| report.attempts >= r.attempts) || !out.body.replayable();
            let expected = upstream.expected(&pool.cluster.name, endpoint.addr);
            let request = build(&mut out, &endpoint.authority, last, expected)?;
            let try_deadline = match (per_try.map(|t| tokio::time::Instant::now() + t), deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let sent = Instant::now();
            let (outcome, answered) =
                attempt(upstream, protocol, request, &endpoint, sent, try_deadline).await;
            report.upstream_wait += answered.saturating_duration_since(sent);
            let success = matches!(&outcome, Ok(r) if !r.status().is_server_error());
            // The client's own failures (its body too large, malformed, stalled) say nothing
            // about the endpoint.
            let endpoint_failure = !matches!(&outcome, Err(e) if e.side() == Side::Downstream);
            if success || endpoint_failure {
                pool.record(&endpoint, success);
            }
            let worth_retrying = match (&outcome, retry) {
                (_, None) => false,
                (Ok(response), Some(r)) => r.retry_on.status(response.status().as_u16()),
                (Err(e), Some(r)) => retryable(*e, r, deadline),
            };
            // A connection that was never made carried nothing: any method may try again.
            let never_sent = matches!(outcome, Err(ProxyError::ConnectFailed));
            let more = worth_retrying
                && (retry_method || never_sent)
                && out.body.replayable()
                && retry.is_some_and(|r| report.attempts < r.attempts)
                && deadline.is_none_or(|d| tokio::time::Instant::now() < d);
            if !more {
                return outcome;
            }
            // A retry that could not go out before the request's deadline is not made: the
            // tries did not fit in `timeouts.request`, which ends the request (504), as the
            // Gateway API asks, without waiting for the deadline.
            let pause = retry.map_or(Duration::ZERO, |r| {
                backoff(r.backoff_base, r.backoff_max, report.attempts).max(r.min_backoff)
            });
            if deadline.is_some_and(|d| tokio::time::Instant::now() + pause >= d) {
                return Err(ProxyError::Timeout);
            }
            // No endpoint left to try (every one ejected by now): the client gets this answer.
            tried.push(endpoint.addr);
            let Ok(retry_at) = pool.pick(&tried, key) else {
                return outcome;
            };
            if !pool.budget.withdraw(Instant::now()) {
                pool.metrics.budget_exhausted.inc();
                return outcome;
            }
            next = Some(retry_at);
            pool.metrics.retries.inc();
            drop(outcome);
            tokio::time::sleep(pause).await;
        }
    }
}

/// One try sent at `sent`, bounded by `deadline`; feeds the endpoint's latency estimate.
/// Returns the outcome and when it came.
async fn attempt(
    upstream: &Upstream,
    protocol: Protocol,
    request: Request<Body>,
    endpoint: &std::sync::Arc<Endpoint>,
    sent: Instant,
    deadline: Option<tokio::time::Instant>,
) -> (Result<Response<Body>, ProxyError>, Instant) {
    let in_flight = endpoint.start_at(sent);
    let sending = upstream.send(protocol, request);
    let result = match deadline {
        Some(at) => tokio::time::timeout_at(at, sending)
            .await
            .map_err(|_| ProxyError::Timeout),
        None => Ok(sending.await),
    };
    match result {
        Ok(Ok(response)) => (Ok(response), in_flight.success()),
        // No latency penalty for what the client did.
        Ok(Err(e)) => match classify_and_log(&e, endpoint.addr) {
            e if e.side() == Side::Downstream => (Err(e), Instant::now()),
            e => (Err(e), in_flight.failure()),
        },
        Err(e) => (Err(e), in_flight.failure()),
    }
}

/// Whether a failed try may be retried: the condition is in `retryOn`, and a timeout was the
/// try's own (not the request's deadline).
fn retryable(e: ProxyError, r: &RetryPolicy, deadline: Option<tokio::time::Instant>) -> bool {
    match e {
        ProxyError::ConnectFailed => r.retry_on.connect_failure,
        ProxyError::BackendReset => r.retry_on.reset,
        ProxyError::Timeout => {
            r.retry_on.timeout && deadline.is_none_or(|d| tokio::time::Instant::now() < d)
        }
        _ => false,
    }
}

/// The request for one try, pointed at `authority`: a copy of the headers, or the headers
/// themselves when this is the `last` try there can be.
fn build(
    out: &mut Outgoing,
    authority: &Authority,
    last: bool,
    expected: Option<Expected>,
) -> Result<Request<Body>, ProxyError> {
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(authority.clone());
    uri.path_and_query = Some(
        out.parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    let uri = Uri::from_parts(uri).map_err(|_| ProxyError::BadRequest)?;
    let mut request = Request::new(out.body.take());
    *request.method_mut() = out.parts.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = out.parts.version;
    *request.headers_mut() = if last {
        std::mem::take(&mut out.parts.headers)
    } else {
        out.parts.headers.clone()
    };
    // Set where the request is made: tagging it afterwards moved the whole request once more.
    if let Some(expected) = expected {
        request.extensions_mut().insert(expected);
    }
    Ok(request)
}
