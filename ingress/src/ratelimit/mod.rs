//! Rate limiting (stage 4b of the stack): every limit on the route must pass. `local` limits
//! count in this process; `global` ones in Redis, falling back per the policy's `failureMode`
//! when Redis cannot answer in time: `open` counts on a local bucket instead, `closed`
//! answers 503.

pub mod gcra;
pub mod redis;

use std::{net::IpAddr, sync::Arc};

use http::HeaderMap;
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
    ) -> Self {
        Self {
            params: Params::of(&limit),
            global: global.filter(|_| limit.global),
            limit,
            local,
        }
    }

    /// Counts one request under `key`.
    pub async fn check(&self, key: &str, metrics: &Metrics) -> Outcome {
        let decision = match &self.global {
            Some(store) => match store
                .check(self.params, &redis_key(&self.limit.id, key))
                .await
            {
                Ok(d) => d,
                Err(redis::Unavailable) if self.limit.fail_open => {
                    self.count(metrics, "fallback");
                    self.local.check(self.params, key)
                }
                Err(redis::Unavailable) => {
                    self.count(metrics, "unavailable");
                    return Outcome::Unavailable;
                }
            },
            None => self.local.check(self.params, key),
        };
        if decision.allowed {
            self.count(metrics, "allowed");
            Outcome::Allowed(decision)
        } else {
            self.count(metrics, "limited");
            Outcome::Limited(decision)
        }
    }

    fn count(&self, metrics: &Metrics, result: &str) {
        metrics
            .rate_limit_decisions
            .with_label_values(&[&self.limit.id, result])
            .inc();
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
