//! Rate limiting (stage 4b of the stack): every limit on the route must pass. `local` limits
//! count in this process; `global` ones in Redis, falling back per the policy's `failureMode`
//! when Redis cannot answer in time: `open` counts locally instead, `closed` answers 503.
//! Each limit counts by its algorithm: a sliding-window counter (`window`, the default) or
//! GCRA (`gcra`), the same arithmetic in process (`local`) and in Redis (`redis`). A global
//! limit with `syncInterval` admits from a share leased from Redis (`batch`).
//!
//! A `clientIP` key is the connection's address, IPv6 addresses grouped by their prefix
//! (`--ratelimit-ipv6-prefix`, /64 by default): one host usually holds a whole /64, so
//! counting single IPv6 addresses would let it rotate through its own prefix. IPv4 addresses
//! (IPv4-mapped IPv6 ones included) count alone.

pub mod batch;
pub mod gcra;
pub mod local;
pub mod redis;
pub mod window;

use std::{
    net::{IpAddr, Ipv6Addr},
    sync::Arc,
    time::Duration,
};

use crate::metrics::GuardMetrics;
use http::HeaderMap;
use prometheus::IntCounter;
use weir_api::model::{Algorithm, LimitKey, RateLimit};

use crate::auth::Identity;
use batch::Batched;
use local::{Local, LocalBuckets};
use redis::GlobalStore;

/// The outcome for one request under one limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether it may pass.
    pub allowed: bool,
    /// `RateLimit-Limit`.
    pub limit: u64,
    /// `RateLimit-Remaining`: requests that could pass right now.
    pub remaining: u64,
    /// `RateLimit-Reset`: until the limit is fully available again.
    pub reset: Duration,
    /// `Retry-After` when refused: until one more request would pass.
    pub retry_after: Duration,
}

/// A limit's algorithm with its parameters in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// The sliding-window counter.
    Window(window::Params),
    /// GCRA.
    Gcra(gcra::Params),
}

impl Rule {
    /// From a compiled limit.
    pub fn of(limit: &RateLimit) -> Self {
        match limit.algorithm {
            Algorithm::SlidingWindow => {
                Self::Window(window::Params::new(limit.requests, limit.per))
            }
            Algorithm::Gcra { burst } => {
                Self::Gcra(gcra::Params::new(limit.requests, limit.per, burst))
            }
        }
    }

    /// Empty local counts by this rule holding at most about `keys` keys.
    pub fn local(self, keys: usize) -> Arc<dyn Local> {
        match self {
            Self::Window(p) => Arc::new(LocalBuckets::new(p, keys)),
            Self::Gcra(p) => Arc::new(LocalBuckets::new(p, keys)),
        }
    }
}

/// Default length of the prefix IPv6 clients are grouped by.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// How local limits count, set by weir-ingress flags.
#[derive(Clone, Copy, Debug)]
pub struct LimitSettings {
    /// Keys one local limit holds at most (`--ratelimit-local-keys`).
    pub local_keys: usize,
    /// IPv6 clients count per prefix of this length (`--ratelimit-ipv6-prefix`).
    pub ipv6_prefix: u8,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            local_keys: local::DEFAULT_KEYS,
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
        }
    }
}

/// One limit of one route, ready to count.
pub struct Limiter {
    /// The compiled limit.
    pub limit: Arc<RateLimit>,
    /// `clientIP` keys of IPv6 clients are their address's prefix of this length.
    pub ipv6_prefix: u8,
    rule: Rule,
    local: Arc<dyn Local>,
    global: Option<Arc<GlobalStore>>,
    batch: Option<Arc<Batched>>,
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
        local: Arc<dyn Local>,
        global: Option<Arc<GlobalStore>>,
        metrics: &GuardMetrics,
    ) -> Self {
        let counter = |result: &str| {
            metrics
                .rate_limit_decisions
                .with_label_values(&[&limit.id, result])
        };
        Self {
            rule: Rule::of(&limit),
            global: global.filter(|_| limit.global),
            counted: Counters {
                allowed: counter("allowed"),
                limited: counter("limited"),
                fallback: counter("fallback"),
                unavailable: counter("unavailable"),
            },
            limit,
            local,
            batch: None,
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
        }
    }

    /// Groups IPv6 clients by a prefix of `len` bits instead of [`DEFAULT_IPV6_PREFIX`].
    pub fn with_ipv6_prefix(self, len: u8) -> Self {
        Self {
            ipv6_prefix: len,
            ..self
        }
    }

    /// Decides in Redis: from the batched share if the limit has one (and room for the key),
    /// else per request.
    async fn global_check(
        &self,
        store: &GlobalStore,
        key: &str,
    ) -> Result<Decision, redis::Unavailable> {
        let redis_key = redis_key(self.rule, &self.limit.id, key);
        if let Some(batch) = &self.batch {
            if let Some(decided) = batch.check(&redis_key).await {
                return decided;
            }
        }
        store.check(self.rule, &redis_key).await
    }

    /// The value this limit counts a request under.
    pub fn key(&self, identity: &Identity, headers: &HeaderMap, client: IpAddr) -> String {
        key_of(&self.limit, identity, headers, client, self.ipv6_prefix)
    }

    /// Counts `global` limits with a share leased from Redis, reconciled by `batch`.
    pub fn with_batch(self, batch: Option<Arc<Batched>>) -> Self {
        Self { batch, ..self }
    }

    /// Counts one request under `key`.
    pub async fn check(&self, key: &str) -> Outcome {
        let decision = match &self.global {
            Some(store) => match self.global_check(store, key).await {
                Ok(d) => d,
                Err(redis::Unavailable) if self.limit.fail_open => {
                    self.counted.fallback.inc();
                    self.local.check(key)
                }
                Err(redis::Unavailable) => {
                    self.counted.unavailable.inc();
                    return Outcome::Unavailable;
                }
            },
            None => self.local.check(key),
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

/// The value a limit counts a request under; IPv6 clients by their `ipv6_prefix`.
pub fn key_of(
    limit: &RateLimit,
    identity: &Identity,
    headers: &HeaderMap,
    client: IpAddr,
    ipv6_prefix: u8,
) -> String {
    match &limit.key {
        LimitKey::Claim(c) => identity.claim(c).unwrap_or_default(),
        LimitKey::Header(h) => headers
            .get(h.as_str())
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default(),
        LimitKey::ClientIp => client_key(client, ipv6_prefix),
        LimitKey::Route => String::new(),
    }
}

/// An IPv4 address as it is; an IPv6 one as `PREFIX/LEN` (the address when `len` is 128).
/// An IPv4-mapped IPv6 address (a dual-stack listener's IPv4 client) is its IPv4 address, or
/// every IPv4 client would share one key.
pub fn client_key(client: IpAddr, len: u8) -> String {
    match client.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) if len >= 128 => v6.to_string(),
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            format!("{}/{len}", Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

/// `weir:rl:{<limit>|<value>}` (GCRA) or `weir:sw:{…}` (sliding window, a hash): one hash
/// slot per counter; long or odd values are hashed.
pub fn redis_key(rule: Rule, limit: &str, value: &str) -> String {
    let prefix = match rule {
        Rule::Window(_) => "weir:sw",
        Rule::Gcra(_) => "weir:rl",
    };
    let plain = value.len() <= 64 && !value.contains(['{', '}']);
    if plain {
        format!("{prefix}:{{{limit}|{value}}}")
    } else {
        let hex: String = crate::sha256(value.as_bytes())[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{prefix}:{{{limit}|#{hex}}}")
    }
}

#[cfg(test)]
mod tests {
    use super::client_key;

    #[test]
    fn ipv6_clients_count_by_prefix_and_ipv4_ones_alone() {
        let key = |ip: &str, len| client_key(ip.parse().unwrap(), len);
        assert_eq!(key("2001:db8:1:2::1", 64), "2001:db8:1:2::/64");
        assert_eq!(
            key("2001:db8:1:2:ffff:ffff:ffff:ffff", 64),
            key("2001:db8:1:2::1", 64),
            "one /64, one key"
        );
        assert_ne!(key("2001:db8:1:3::1", 64), key("2001:db8:1:2::1", 64));
        assert_eq!(key("2001:db8:1:2::1", 48), "2001:db8:1::/48");
        assert_eq!(key("2001:db8:1:2::1", 128), "2001:db8:1:2::1");
        assert_eq!(key("2001:db8::1", 0), "::/0");
        assert_eq!(key("192.0.2.7", 64), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7", 64), "192.0.2.7", "IPv4-mapped");
        assert_ne!(key("::ffff:192.0.2.7", 64), key("::ffff:192.0.2.8", 64));
    }
}
