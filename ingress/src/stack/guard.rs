//! Stages 4a and 4b: the route's AuthPolicy, then its rate limits. A refusal adds its
//! headers (`WWW-Authenticate`; `Retry-After` and `RateLimit-*`) to the exchange, which puts
//! them on whatever response the client gets; a request that passes carries the `RateLimit-*`
//! headers of its tightest limit.

use http::{header, HeaderMap, HeaderName, HeaderValue};
use weir_http::error::ProxyError;

use super::{Exchange, Gateway};
use crate::{
    auth::{Denied, Identity},
    ratelimit::{Decision, Outcome},
    security::RouteGuard,
};

pub(super) async fn check(
    gw: &Gateway,
    x: &mut Exchange,
    guard: &RouteGuard,
    headers: &mut HeaderMap,
) -> Result<(), ProxyError> {
    let identity = match &guard.auth {
        Some(auth) => match auth.check(headers).await {
            Ok(identity) => {
                let result = match identity {
                    Identity::Anonymous => "anonymous",
                    _ => "allowed",
                };
                gw.guard_metrics
                    .auth_decisions
                    .with_label_values(&[result])
                    .inc();
                identity
            }
            Err(denied) => {
                gw.guard_metrics
                    .auth_decisions
                    .with_label_values(&[denied.label()])
                    .inc();
                x.extra.push((header::WWW_AUTHENTICATE, denied.challenge()));
                return Err(match denied {
                    Denied::Forbidden(_) => ProxyError::Forbidden,
                    Denied::Missing | Denied::Invalid(_) => ProxyError::Unauthenticated,
                });
            }
        },
        None => Identity::Anonymous,
    };
    if gw.access_log.enabled() {
        x.user = identity.user().map(Into::into);
    }
    let mut tightest: Option<Decision> = None;
    for limiter in &guard.limits {
        let key = limiter.key(&identity, headers, x.client.addr.ip());
        match limiter.check(&key).await {
            Outcome::Allowed(d) => {
                if tightest.is_none_or(|t| d.remaining < t.remaining) {
                    tightest = Some(d);
                }
            }
            Outcome::Limited(d) => {
                rate_headers(&mut x.extra, &d);
                x.extra
                    .push((header::RETRY_AFTER, seconds(d.retry_after.as_micros())));
                return Err(ProxyError::RateLimited);
            }
            Outcome::Unavailable => return Err(ProxyError::RateLimitUnavailable),
        }
    }
    if let Some(d) = tightest {
        rate_headers(&mut x.extra, &d);
    }
    Ok(())
}

const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

fn rate_headers(extra: &mut Vec<(HeaderName, HeaderValue)>, d: &Decision) {
    extra.push((LIMIT, HeaderValue::from(d.limit)));
    extra.push((REMAINING, HeaderValue::from(d.remaining)));
    extra.push((RESET, seconds(d.reset.as_micros())));
}

/// Whole seconds, rounded up (a client that waits that long is let in).
fn seconds(micros: u128) -> HeaderValue {
    HeaderValue::from(micros.div_ceil(1_000_000) as u64)
}
