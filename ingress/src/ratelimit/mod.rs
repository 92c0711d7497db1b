//! Rate limiting (stage 4b of the stack): every limit on the route must pass. `local` limits
//! count in this process; `global` ones in Redis, falling back per the policy's `failureMode`
//! when Redis cannot answer in time: `open` counts on a local bucket instead, `closed`
//! answers 503.

pub mod gcra;
pub mod redis;

use std::{net::IpAddr, sync::Arc};

use http::HeaderMap;
use prometheus::IntCounter;
use weir_api::model::{LimitKey, RateLimit};
use weir_proxy::metrics::Metrics;

use crate::auth::Identity;
use gcra::{Decision, LocalBuckets, Params};
use redis::GlobalStore;

/// One limit of one route, ready to count.
pub struct Limiter {
    /// The compiled limit.
    pub limit: Arc<RateLimit>,
    params: Params,
    local: Arc<LocalBuckets>,
    global: Option<Arc<GlobalStore>>,
    /// `weir_rate_limit_decisions_total` for this limit, resolved once, not per request.
    counted: Counters,
}

struct Counters {
    allowed: IntCounter,
    limited: IntCounter,
    fallback: IntCounter,
    unavailable: IntCounter,
}

/// What a limit said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Under the limit.
    Allowed(Decision),
    /// Over it (429).
    Limited(Decision),
    /// Redis could not answer and the limit fails closed (503).
    Unavailable,
}

impl Limiter {
    /// A limiter counting in `local` (and in `global` when the limit is global).
    pub fn new(
        limit: Arc<RateLimit>,
        local: Arc<LocalBuckets>,
        global: Option<Arc<GlobalStore>>,
        metrics: &Metrics,
    ) -> Self {
        let counter = |result: &str| {
            metrics
                .rate_limit_decisions
                .with_label_values(&[&limit.id, result])
        };
        Self {
            params: Params::of(&limit),
            global: global.filter(|_| limit.global),
            counted: Counters {
                allowed: counter("allowed"),
                limited: counter("limited"),
                fallback: counter("fallback"),
                unavailable: counter("unavailable"),
            },
            limit,
            local,
        }
    }

    /// Counts one request under `key`.
    pub async fn check(&self, key: &str) -> Outcome {
        let decision = match &self.global {
            Some(store) => match store
                .check(self.params, &redis_key(&self.limit.id, key))
                .await
            {
                Ok(d) => d,
                Err(redis::Unavailable) if self.limit.fail_open => {
                    self.counted.fallback.inc();
                    self.local.check(self.params, key)
                }
                Err(redis::Unavailable) => {
                    self.counted.unavailable.inc();
                    return Outcome::Unavailable;
                }
            },
            None => self.local.check(self.params, key),
        };
        if decision.allowed {
            self.counted.allowed.inc();
            Outcome::Allowed(decision)
        } else {
            self.counted.limited.inc();
            Outcome::Limited(decision)
        }
    }
}

/// The value a limit counts a request under.
pub fn key_of(
    limit: &RateLimit,
    identity: &Identity,
    headers: &HeaderMap,
    client: IpAddr,
) -> String {
    match &limit.key {
        LimitKey::Claim(c) => identity.claim(c).unwrap_or_default(),
        LimitKey::Header(h) => headers
            .get(h.as_str())
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default(),
        LimitKey::ClientIp => client.to_string(),
        LimitKey::Route => String::new(),
    }
}

/// `weir:rl:{<limit>|<value>}`: one hash slot per counter; long or odd values are hashed.
fn redis_key(limit: &str, value: &str) -> String {
    let plain = value.len() <= 64 && !value.contains(['{', '}']);
    if plain {
        format!("weir:rl:{{{limit}|{value}}}")
    } else {
        let hex: String = crate::sha256(value.as_bytes())[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("weir:rl:{{{limit}|#{hex}}}")
    }
}
