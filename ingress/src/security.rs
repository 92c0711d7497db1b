//! The ingress's per-snapshot state for AuthPolicies and RateLimitPolicies: built once per
//! accepted configuration (the store's role hook), looked up by route per request.
//!
//! What must outlive a reload does: a JWT provider's fetched keys (by provider and source) and
//! a limit's local buckets (by limit and rate) carry over to the next snapshot, so a reload
//! neither refetches every JWKS nor resets every count.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use weir_api::{
    model::{Jwks, JwtProvider, RateLimit},
    Snapshot,
};
use weir_proxy::lock;

use crate::metrics::GuardMetrics;

use crate::{
    auth::{
        jwks::{HttpsClient, KeySource},
        Authenticator,
    },
    ratelimit::{batch::Batched, local::Local, redis::GlobalStore, LimitSettings, Limiter, Rule},
};

/// What a route enforces before its request is forwarded.
pub struct RouteGuard {
    /// Authentication, if an AuthPolicy applies.
    pub auth: Option<Arc<Authenticator>>,
    /// Rate limits; all must pass.
    pub limits: Vec<Limiter>,
}

/// Route guards for one snapshot, by route name.
#[derive(Default)]
pub struct Guards {
    routes: HashMap<Arc<str>, Arc<RouteGuard>>,
    /// Every header an AuthPolicy of the snapshot vouches for (its claim headers and
    /// `x-weir-client`), lowercase: their lookalikes are dropped on every route.
    vouched: HashSet<String>,
}

impl Guards {
    /// The guard of a route, if it has one.
    pub fn get(&self, route: &str) -> Option<&Arc<RouteGuard>> {
        self.routes.get(route)
    }

    /// Whether an AuthPolicy of this snapshot sets `name` (lowercase) on the requests it
    /// lets through.
    pub fn vouches(&self, name: &str) -> bool {
        self.vouched.contains(name)
    }
}

/// Long-lived state shared by every snapshot's guards.
pub struct Registry {
    metrics: GuardMetrics,
    client: HttpsClient,
    global: Option<Arc<GlobalStore>>,
    sources: Mutex<HashMap<String, Arc<KeySource>>>,
    buckets: Mutex<HashMap<String, Arc<dyn Local>>>,
    batches: Mutex<HashMap<String, Arc<Batched>>>,
    limits: LimitSettings,
}

impl Registry {
    /// A registry fetching JWKS with `client` and counting global limits in `global`.
    pub fn new(
        metrics: GuardMetrics,
        client: HttpsClient,
        global: Option<Arc<GlobalStore>>,
    ) -> Self {
        Self {
            metrics,
            client,
            global,
            sources: Mutex::default(),
            buckets: Mutex::default(),
            batches: Mutex::default(),
            limits: LimitSettings::default(),
        }
    }

    /// Counts local limits with `limits` instead of the defaults.
    pub fn with_limits(self, limits: LimitSettings) -> Self {
        Self { limits, ..self }
    }

    /// Builds the guards for `snapshot`, reusing key sources and buckets that still apply.
    pub fn prepare(&self, snapshot: &Snapshot) -> Guards {
        let mut old_sources = std::mem::take(&mut *lock(&self.sources));
        let mut old_buckets = std::mem::take(&mut *lock(&self.buckets));
        let mut sources: HashMap<String, Arc<KeySource>> = HashMap::new();
        let mut buckets: HashMap<String, Arc<dyn Local>> = HashMap::new();
        let mut old_batches = std::mem::take(&mut *lock(&self.batches));
        let mut batches: HashMap<String, Arc<Batched>> = HashMap::new();
        let mut authenticators: HashMap<String, Arc<Authenticator>> = HashMap::new();
        let mut guards = Guards::default();
        let mut warned_global = false;
        let routes = snapshot.routes.iter().chain(snapshot.default_route.iter());
        for route in routes {
            if route.auth.is_none() && route.limits.is_empty() {
                continue;
            }
            if let Some(auth) = &route.auth {
                let names = auth.strip_headers.iter().map(|h| h.to_ascii_lowercase());
                guards.vouched.extend(names);
            }
            let auth = route.auth.as_ref().map(|auth| {
                authenticators
                    .entry(auth.policy.clone())
                    .or_insert_with(|| {
                        let keys = auth
                            .jwt
                            .iter()
                            .map(|p| self.source(p, &mut old_sources, &mut sources))
                            .collect();
                        Arc::new(Authenticator::new(auth.clone(), keys))
                    })
                    .clone()
            });
            let limits = route
                .limits
                .iter()
                .map(|limit| {
                    if limit.global && self.global.is_none() && !warned_global {
                        warned_global = true;
                        tracing::warn!(limit = %limit.id, "a global rate limit is configured but weir-ingress has no --redis: counting in this process only");
                    }
                    let rule = Rule::of(limit);
                    let id = format!("{} {rule:?}", limit.id);
                    let local = buckets
                        .entry(id.clone())
                        .or_insert_with(|| {
                            old_buckets.remove(&id).unwrap_or_else(|| {
                                rule.local(self.limits.local_keys)
                            })
                        })
                        .clone();
                    let batch = self.batch(limit, rule, &mut old_batches, &mut batches);
                    Limiter::new(limit.clone(), local, self.global.clone(), &self.metrics)
                        .with_ipv6_prefix(self.limits.ipv6_prefix)
                        .with_batch(batch)
                })
                .collect();
            guards
                .routes
                .insert(route.name.clone(), Arc::new(RouteGuard { auth, limits }));
        }
        *lock(&self.sources) = sources;
        *lock(&self.buckets) = buckets;
        *lock(&self.batches) = batches;
        guards
    }

    /// The shares of a global limit with `syncInterval`, kept across snapshots while the limit
    /// and its parameters stay the same.
    fn batch(
        &self,
        limit: &RateLimit,
        rule: Rule,
        old: &mut HashMap<String, Arc<Batched>>,
        new: &mut HashMap<String, Arc<Batched>>,
    ) -> Option<Arc<Batched>> {
        let (Some(store), Some(interval), Rule::Window(p)) =
            (&self.global, limit.sync_interval, rule)
        else {
            return None;
        };
        let id = format!("{} {rule:?} {interval:?}", limit.id);
        let batch = new.entry(id.clone()).or_insert_with(|| {
            old.remove(&id).unwrap_or_else(|| {
                Batched::start(p, interval, store.clone(), self.limits.local_keys)
            })
        });
        Some(batch.clone())
    }

    fn source(
        &self,
        provider: &JwtProvider,
        old: &mut HashMap<String, Arc<KeySource>>,
        new: &mut HashMap<String, Arc<KeySource>>,
    ) -> Arc<KeySource> {
        let id = match &provider.jwks {
            Jwks::Uri(_) => provider.id.clone(),
            Jwks::Static(bytes) => {
                format!("{} {:?}", provider.id, &crate::sha256(&bytes.0)[..8])
            }
        };
        if let Some(s) = new.get(&id) {
            return s.clone();
        }
        let source = old.remove(&id).unwrap_or_else(|| match &provider.jwks {
            Jwks::Uri(uri) => {
                KeySource::remote(&provider.name, uri, self.client.clone(), self.metrics.clone())
            }
            Jwks::Static(bytes) => {
                let (source, error) =
                    KeySource::fixed(&provider.name, &bytes.0, self.metrics.clone());
                if let Some(e) = error {
                    tracing::error!(provider = %provider.id, error = %e, "JWKS refused: this provider's tokens are refused");
                }
                source
            }
        });
        new.insert(id, source.clone());
        source
    }
}
