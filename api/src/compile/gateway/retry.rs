//! HTTPRoute `retry` (GEP-1731) as Weir's retry policy for the rule, in place of the backend's
//! TrafficPolicy retry:
//!
//! | `retry`            | Weir                                                          |
//! |--------------------|---------------------------------------------------------------|
//! | `attempts: N`      | N retries after the first try (0: none, whatever the Service's policy says); unset: 1 |
//! | `codes`            | the response statuses retried (400–599)                       |
//! | (always)           | a connection that could not be made; a try that ran out of `timeouts.backendRequest` |
//! | `backoff: D`       | a retry waits at least D, and up to D doubling per retry (jittered), at most 10 × D; unset: 25ms |
//!
//! Retries come out of the backend cluster's retry budget (its TrafficPolicy's, else 20 % of
//! the requests that may be retried plus 10 a second, per gateway replica), so a failing
//! backend sees about 1.2 times the offered load at most (plus that floor), whatever
//! `attempts` says; `timeouts.request` bounds the tries together. Only
//! idempotent requests are tried again on a response (a connection that was never made is
//! tried again whatever the method), and only bodies up to 64 KiB are kept to be sent again.

use std::time::Duration;

use gateway_api::apis::experimental::httproutes::HttpRouteRulesRetry;

use crate::{
    duration::parse_duration,
    model::{RetryOn, RetryPolicy, DEFAULT_BUDGET_MIN_PER_SECOND, DEFAULT_BUDGET_RATIO},
};

/// More retries than this for one request are refused as a mistake (the budget would cut
/// them short anyway).
const MAX_ATTEMPTS: i64 = 100;

/// The longest `backoff` taken.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The rule's retry policy, or the field under `retry` that is wrong and why.
pub(super) fn route_retry(retry: &HttpRouteRulesRetry) -> Result<RetryPolicy, (String, String)> {
    let mut statuses = Vec::new();
    for (i, &code) in retry.codes.iter().flatten().enumerate() {
        match u16::try_from(code) {
            Ok(status) if (400..600).contains(&status) => statuses.push(status),
            _ => {
                let why = format!("{code} is not an HTTP status from 400 to 599");
                return Err((format!(".codes[{i}]"), why));
            }
        }
    }
    statuses.sort_unstable();
    statuses.dedup();
    let retries = match retry.attempts {
        None => 1,
        Some(n @ 0..=MAX_ATTEMPTS) => n as u32,
        Some(n) => {
            let why = format!("{n} is not a number of retries from 0 to {MAX_ATTEMPTS}");
            return Err((".attempts".into(), why));
        }
    };
    let backoff_base = match retry.backoff.as_deref().map(parse_duration) {
        None => Duration::from_millis(25),
        Some(Ok(d)) if d.is_zero() || d > MAX_BACKOFF => {
            let why = "must be longer than 0s and at most 1m (a try that waits holds its place among the cluster's pending requests)";
            return Err((".backoff".into(), why.into()));
        }
        Some(Ok(d)) => d,
        Some(Err(e)) => return Err((".backoff".into(), e)),
    };
    Ok(RetryPolicy {
        attempts: retries + 1,
        per_try_timeout: None,
        retry_on: RetryOn {
            connect_failure: true,
            reset: false,
            timeout: true,
            any_5xx: false,
            statuses,
        },
        non_idempotent: false,
        backoff_base,
        backoff_max: backoff_base.saturating_mul(10),
        min_backoff: backoff_base,
        budget_ratio: DEFAULT_BUDGET_RATIO,
        budget_min_per_second: DEFAULT_BUDGET_MIN_PER_SECOND,
    })
}
