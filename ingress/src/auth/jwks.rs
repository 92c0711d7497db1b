//! An identity provider's public keys: parsed once from a static JWKS, or fetched over HTTPS,
//! cached, and refreshed in the background before they go stale.
//!
//! - Refresh: at 75–90 % of the TTL (`Cache-Control: max-age`, clamped to 30 s–1 h; 5 min
//!   without one), so replicas don't fetch in lockstep.
//! - A token with an unknown `kid` triggers a refetch, at most one per [`MIN_REFETCH`], so key
//!   rotation works without a restart and a flood of made-up `kid`s cannot hammer the IdP.
//! - A failed or empty fetch keeps the cached keys and is retried with backoff (1 s doubling
//!   to 60 s, jittered); it is never cached as "no keys".

use std::{
    sync::{Arc, Weak},
    time::{Duration, Instant},
};

use crate::metrics::GuardMetrics;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use jsonwebtoken::{
    jwk::{AlgorithmParameters, JwkSet, PublicKeyUse},
    Algorithm, DecodingKey,
};

/// HTTPS client for JWKS fetches.
pub type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Fewest seconds between two fetches triggered by unknown `kid`s.
pub const MIN_REFETCH: Duration = Duration::from_secs(5);
/// A fetch taking longer fails (and a request waiting on it gets 401, not a hang).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(3);
const DEFAULT_TTL: Duration = Duration::from_secs(300);
const MIN_TTL: Duration = Duration::from_secs(30);
const MAX_TTL: Duration = Duration::from_secs(3600);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A JWKS larger than this is refused.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// When requests last made the source fetch.
#[derive(Default)]
struct Triggered {
    /// A token with a `kid` not among the keys we have.
    unknown_kid: Option<Instant>,
    /// A token arriving before any key was fetched (the IdP started after the gateway).
    no_keys: Option<Instant>,
}

/// Between two request-triggered fetches while no key has been fetched yet.
const MIN_REFETCH_WITHOUT_KEYS: Duration = Duration::from_secs(1);

/// One usable public key.
pub struct Key {
    /// `kid`, if the JWK has one.
    pub kid: Option<String>,
    /// The JWK's `alg`, if it pins one.
    pub alg: Option<Algorithm>,
    /// The key.
    pub key: DecodingKey,
}

/// The keys of one provider.
pub struct KeySource {
    provider: String,
    uri: Option<String>,
    keys: ArcSwap<Vec<Key>>,
    /// Serialises fetches; holds when the last ones triggered by requests started
    /// (scheduled refreshes don't count against that budget).
    fetching: tokio::sync::Mutex<Triggered>,
    client: Option<HttpsClient>,
    metrics: GuardMetrics,
}

impl KeySource {
    /// Keys from a JWKS document (inline or from a Secret). A bad document gives no keys, so
    /// every token of the provider is refused; the error says why.
    pub fn fixed(
        provider: &str,
        jwks: &[u8],
        metrics: GuardMetrics,
    ) -> (Arc<Self>, Option<String>) {
        let (keys, error) = match parse(jwks) {
            Ok(keys) => (keys, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let source = Arc::new(Self {
            provider: provider.to_string(),
            uri: None,
            keys: ArcSwap::from_pointee(keys),
            fetching: tokio::sync::Mutex::default(),
            client: None,
            metrics,
        });
        (source, error)
    }

    /// Keys fetched from `uri`, refreshed by a background task that ends when the source is
    /// dropped. Starts empty; the first fetch begins at once.
    pub fn remote(
        provider: &str,
        uri: &str,
        client: HttpsClient,
        metrics: GuardMetrics,
    ) -> Arc<Self> {
        let source = Arc::new(Self {
            provider: provider.to_string(),
            uri: Some(uri.to_string()),
            keys: ArcSwap::from_pointee(Vec::new()),
            fetching: tokio::sync::Mutex::default(),
            client: Some(client),
            metrics,
        });
        tokio::spawn(refresh_loop(Arc::downgrade(&source)));
        source
    }

    /// The keys now.
    pub fn keys(&self) -> Arc<Vec<Key>> {
        self.keys.load_full()
    }

    /// Fetches again because a token named a `kid` we don't have, unless a fetch for that
    /// reason started less than [`MIN_REFETCH`] ago (1 s while no key was ever fetched).
    /// Returns the keys.
    pub async fn refetch_for_unknown_kid(&self) -> Arc<Vec<Key>> {
        if self.uri.is_none() {
            return self.keys();
        }
        let seen = self.keys();
        let Ok(mut last) = tokio::time::timeout(FETCH_TIMEOUT, self.fetching.lock()).await else {
            return self.keys();
        };
        // A fetch that finished while we waited (the first one at startup, or another
        // request's) already brought whatever there is.
        if !Arc::ptr_eq(&seen, &self.keys.load()) {
            return self.keys();
        }
        let (when, min) = if seen.is_empty() {
            (&mut last.no_keys, MIN_REFETCH_WITHOUT_KEYS)
        } else {
            (&mut last.unknown_kid, MIN_REFETCH)
        };
        if when.is_some_and(|t| t.elapsed() < min) {
            return self.keys();
        }
        *when = Some(Instant::now());
        let _ = self.fetch().await;
        self.keys()
    }

    /// One fetch: on success the keys are replaced and the TTL returned.
    async fn fetch(&self) -> Result<Duration, String> {
        let (Some(uri), Some(client)) = (&self.uri, &self.client) else {
            return Ok(MAX_TTL);
        };
        let result = tokio::time::timeout(FETCH_TIMEOUT, get(client, uri))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {FETCH_TIMEOUT:?}")))
            .and_then(|(body, ttl)| Ok((parse(&body)?, ttl)));
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.metrics
            .jwks_fetches
            .with_label_values(&[&self.provider, outcome])
            .inc();
        match result {
            Ok((keys, ttl)) => {
                tracing::debug!(provider = %self.provider, keys = keys.len(), "JWKS fetched");
                self.keys.store(Arc::new(keys));
                Ok(ttl)
            }
            Err(e) => {
                tracing::warn!(provider = %self.provider, %uri, error = %e, "JWKS fetch failed; keeping the cached keys");
                Err(e)
            }
        }
    }
}

async fn refresh_loop(source: Weak<KeySource>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let Some(s) = source.upgrade() else { return };
        let wait = {
            let _serialised = s.fetching.lock().await;
            match s.fetch().await {
                Ok(ttl) => {
                    backoff = Duration::from_secs(1);
                    ttl.mul_f64(0.75 + fastrand::f64() * 0.15)
                }
                Err(_) => {
                    let wait = backoff.mul_f64(0.5 + fastrand::f64() * 0.5);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    wait
                }
            }
        };
        drop(s);
        // Wake up now and then to notice the source is gone.
        let until = tokio::time::Instant::now() + wait;
        while tokio::time::Instant::now() < until {
            tokio::time::sleep_until(
                until.min(tokio::time::Instant::now() + Duration::from_secs(5)),
            )
            .await;
            if source.strong_count() == 0 {
                return;
            }
        }
    }
}

async fn get(client: &HttpsClient, uri: &str) -> Result<(Bytes, Duration), String> {
    let uri: http::Uri = uri.parse().map_err(|e| format!("{e}"))?;
    let response = client
        .get(uri)
        .await
        .map_err(|e| format!("{e}: {}", source_chain(&e)))?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    let ttl = response
        .headers()
        .get(http::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .find_map(|d| d.trim().strip_prefix("max-age=")?.parse::<u64>().ok())
        })
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TTL)
        .clamp(MIN_TTL, MAX_TTL);
    let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes();
    Ok((body, ttl))
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut next = e.source();
    while let Some(s) = next {
        out.push(s.to_string());
        next = s.source();
    }
    out.join(": ")
}

/// The usable public keys of a JWKS. Symmetric (`oct`) keys are never used: a token signed
/// with HMAC must not verify against anything published.
pub fn parse(jwks: &[u8]) -> Result<Vec<Key>, String> {
    let set: JwkSet = serde_json::from_slice(jwks).map_err(|e| format!("not a JWKS: {e}"))?;
    let keys: Vec<Key> = set
        .keys
        .iter()
        .filter(|k| !matches!(k.algorithm, AlgorithmParameters::OctetKey(_)))
        .filter(|k| !matches!(k.common.public_key_use, Some(PublicKeyUse::Encryption)))
        .filter_map(|k| {
            let key = DecodingKey::from_jwk(k).ok()?;
            let alg = k
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok());
            Some(Key {
                kid: k.common.key_id.clone(),
                alg,
                key,
            })
        })
        .collect();
    if keys.is_empty() {
        return Err("the JWKS has no usable signing keys".to_string());
    }
    Ok(keys)
}

/// The HTTPS client for JWKS fetches: the system's trust roots (`SSL_CERT_FILE` and
/// `SSL_CERT_DIR` override them), HTTPS only.
pub fn https_client() -> HttpsClient {
    let builder = weir_proxy::tls::system_roots("JWKS fetches will fail");
    let connector = builder.https_only().enable_http1().enable_http2().build();
    Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector)
}
