//! Authentication (stage 5a of the stack): JWTs verified against identity providers' keys,
//! API keys compared in constant time, and the verified identity forwarded as headers.
//!
//! Security rules that hold whatever the policy says:
//! - `alg: none` and HMAC algorithms are refused before any key is looked at (a public key
//!   can never be used as an HMAC secret), and a key's algorithm family must match the token.
//! - `exp` is required; `exp`, `nbf`, `iss` and `aud` are checked with the provider's skew
//!   (`nbf` is off by default in jsonwebtoken, so it is switched on here).
//! - A token whose header has `crit` is refused: Weir implements no JWS extension, and RFC 7515
//!   §4.1.11 says a recipient that does not understand a critical one must reject the token.
//! - Client-supplied copies of the forwarded-claim headers and `x-weir-client` are removed
//!   from every request, authenticated or not.
//! - A verified token is cached by its SHA-256 until its `exp`, so a repeated token costs a
//!   hash and a lookup, not a signature check.

pub mod jwks;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use http::{header, HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::{AlgorithmFamily, Validation};
use serde_json::Value;
use subtle::ConstantTimeEq;
use weir_api::model::{Auth, JwtProvider};
use weir_proxy::lock;

use crate::sha256;

use jwks::KeySource;

/// Verified tokens kept per policy (per cache shard: [`SHARDS`] of them).
const CACHE_PER_SHARD: usize = 4096;
const SHARDS: usize = 16;

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No credentials and the policy requires them (401).
    Missing,
    /// Credentials present but not valid (401), with the reason.
    Invalid(String),
    /// Valid, but a required scope is missing (403).
    Forbidden(String),
}

impl Denied {
    /// The `WWW-Authenticate` challenge (RFC 6750).
    pub fn challenge(&self) -> HeaderValue {
        let text = match self {
            Denied::Missing => "Bearer realm=\"weir\"".to_string(),
            Denied::Invalid(why) => format!(
                "Bearer realm=\"weir\", error=\"invalid_token\", error_description=\"{}\"",
                why.replace(['"', '\\'], "'")
            ),
            Denied::Forbidden(scope) => {
                format!("Bearer realm=\"weir\", error=\"insufficient_scope\", scope=\"{scope}\"")
            }
        };
        HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("Bearer realm=\"weir\""))
    }

    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Denied::Missing => "missing",
            Denied::Invalid(_) => "invalid",
            Denied::Forbidden(_) => "forbidden",
        }
    }
}

/// Who a request is, once authenticated.
#[derive(Debug, Clone, Default)]
pub enum Identity {
    /// No credentials, and the policy lets such requests through.
    #[default]
    Anonymous,
    /// A verified JWT's claims.
    Token(Arc<Value>),
    /// An API key's client name.
    Client(String),
}

impl Identity {
    /// Who this is, for the log: a JWT's `sub`, an API key's client name.
    pub fn user(&self) -> Option<&str> {
        match self {
            Identity::Anonymous => None,
            Identity::Token(claims) => claims.get("sub")?.as_str(),
            Identity::Client(name) => Some(name),
        }
    }

    /// A claim as text (strings as they are, numbers and booleans printed).
    pub fn claim(&self, name: &str) -> Option<String> {
        match self {
            Identity::Token(claims) => claim_text(claims.get(name)?),
            _ => None,
        }
    }
}

/// A cached verification.
struct Verified {
    claims: Arc<Value>,
    /// The provider's `forwardClaims` as headers, built once per token.
    forward: Vec<(HeaderName, HeaderValue)>,
    /// `exp`, Unix seconds.
    exp: u64,
    provider: usize,
}

/// One AuthPolicy, ready to check requests.
pub struct Authenticator {
    auth: Arc<Auth>,
    providers: Vec<(Arc<JwtProvider>, Arc<KeySource>)>,
    strip: Vec<HeaderName>,
    api_key_header: Option<HeaderName>,
    /// SHA-256 of each API key, with its client name (and that as a header value).
    api_keys: Vec<([u8; 32], String, Option<HeaderValue>)>,
    cache: Vec<Mutex<HashMap<[u8; 32], Arc<Verified>>>>,
}

impl Authenticator {
    /// Builds the checker for `auth` with each provider's key source (same order).
    pub fn new(auth: Arc<Auth>, sources: Vec<Arc<KeySource>>) -> Self {
        let providers = auth.jwt.iter().cloned().zip(sources).collect();
        let strip = auth
            .strip_headers
            .iter()
            .filter_map(|h| HeaderName::try_from(h.as_str()).ok())
            .collect();
        let api_key_header = auth
            .api_keys
            .as_ref()
            .and_then(|a| HeaderName::try_from(a.header.as_str()).ok());
        let api_keys = auth
            .api_keys
            .iter()
            .flat_map(|a| a.keys.iter())
            .map(|(client, key)| {
                let header = HeaderValue::from_str(client).ok();
                (sha256(&key.0), client.clone(), header)
            })
            .collect();
        Self {
            auth,
            providers,
            strip,
            api_key_header,
            api_keys,
            cache: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// Checks a request's credentials, strips spoofable headers, and adds the forwarded ones.
    pub async fn check(&self, headers: &mut HeaderMap) -> Result<Identity, Denied> {
        for h in &self.strip {
            headers.remove(h);
        }
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        if let Some(token) = bearer.filter(|_| !self.providers.is_empty()) {
            let verified = self.verify(&token).await?;
            for (name, value) in &verified.forward {
                headers.insert(name.clone(), value.clone());
            }
            return Ok(Identity::Token(verified.claims.clone()));
        }
        if let Some(name) = &self.api_key_header {
            if let Some(key) = headers.get(name) {
                let (client, header) = self
                    .api_key_client(key.as_bytes())
                    .ok_or_else(|| Denied::Invalid("unknown API key".to_string()))?;
                if let Some(v) = header {
                    headers.insert(weir_api::compile::CLIENT_HEADER, v.clone());
                }
                return Ok(Identity::Client(client.to_string()));
            }
        }
        if self.auth.required {
            Err(Denied::Missing)
        } else {
            Ok(Identity::Anonymous)
        }
    }

    /// Compares against every key without stopping early, in constant time per key.
    fn api_key_client(&self, presented: &[u8]) -> Option<(&str, &Option<HeaderValue>)> {
        let digest = sha256(presented);
        let mut found = None;
        for (key, client, header) in &self.api_keys {
            if bool::from(key.ct_eq(&digest)) {
                found = Some((client.as_str(), header));
            }
        }
        found
    }

    async fn verify(&self, token: &str) -> Result<Arc<Verified>, Denied> {
        let digest = sha256(token.as_bytes());
        let now = weir_proxy::unix_now();
        let shard = &self.cache[usize::from(digest[0]) % SHARDS];
        if let Some(hit) = lock(shard).get(&digest).cloned() {
            let provider = &self.providers[hit.provider].0;
            if hit.exp + provider.clock_skew.as_secs() >= now {
                return Ok(hit);
            }
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| Denied::Invalid(format!("malformed token: {e}")))?;
        if let Some(crit) = &header.crit {
            return Err(Denied::Invalid(critical_refused(crit)));
        }
        if matches!(header.alg.family(), AlgorithmFamily::Hmac) {
            return Err(Denied::Invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let issuer = jsonwebtoken::dangerous::insecure_decode_claims::<Value>(token)
            .ok()
            .and_then(|c| c.get("iss").and_then(Value::as_str).map(str::to_string))
            .ok_or_else(|| Denied::Invalid("the token has no iss".to_string()))?;
        let (index, (provider, source)) = self
            .providers
            .iter()
            .enumerate()
            .find(|(_, (p, _))| p.issuer == issuer)
            .ok_or_else(|| Denied::Invalid(format!("unknown issuer {issuer:?}")))?;
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = provider.clock_skew.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss"]);
        validation.set_issuer(&[&provider.issuer]);
        if provider.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&provider.audiences);
        }
        let kid = header.kid.as_deref();
        let mut keys = source.keys();
        if !keys
            .iter()
            .any(|k| kid.is_none() || k.kid.as_deref() == kid)
        {
            keys = source.refetch_for_unknown_kid().await;
        }
        let candidates: Vec<_> = keys
            .iter()
            .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
            .filter(|k| k.alg.is_none_or(|a| a == header.alg))
            .filter(|k| k.key.family() == header.alg.family())
            .collect();
        if candidates.is_empty() {
            return Err(Denied::Invalid(match kid {
                Some(kid) => format!("no {:?} key with kid {kid:?}", header.alg),
                None => format!("no {:?} key", header.alg),
            }));
        }
        let mut last = None;
        for key in candidates {
            match jsonwebtoken::decode::<Value>(token, &key.key, &validation) {
                Ok(data) => {
                    let exp = data.claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
                    if let Err(missing) = scopes_ok(&data.claims, &provider.required_scopes) {
                        return Err(Denied::Forbidden(missing));
                    }
                    let forward = provider
                        .forward_claims
                        .iter()
                        .filter_map(|(claim, header)| {
                            let value = claim_text(data.claims.get(claim)?)?;
                            Some((
                                HeaderName::try_from(header.as_str()).ok()?,
                                HeaderValue::from_str(&value).ok()?,
                            ))
                        })
                        .collect();
                    let verified = Arc::new(Verified {
                        forward,
                        claims: Arc::new(data.claims),
                        exp,
                        provider: index,
                    });
                    let mut cache = lock(shard);
                    if cache.len() >= CACHE_PER_SHARD {
                        cache.retain(|_, v| v.exp >= now);
                        if cache.len() >= CACHE_PER_SHARD {
                            cache.clear();
                        }
                    }
                    cache.insert(digest, verified.clone());
                    return Ok(verified);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(Denied::Invalid(
            last.map(|e| describe(&e))
                .unwrap_or_else(|| "invalid token".to_string()),
        ))
    }
}

/// Why a token with `crit` is refused. Weir understands no extension, so every name is one it
/// must not ignore; an empty list is itself forbidden (RFC 7515 §4.1.11).
fn critical_refused(crit: &[String]) -> String {
    if crit.is_empty() {
        "the token's crit header is empty".to_string()
    } else {
        format!(
            "critical header extension(s) not understood: {}",
            crit.join(", ")
        )
    }
}

fn describe(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => "the token has expired".to_string(),
        K::ImmatureSignature => "the token is not valid yet (nbf)".to_string(),
        K::InvalidAudience => "wrong audience".to_string(),
        K::InvalidIssuer => "wrong issuer".to_string(),
        K::InvalidSignature => "bad signature".to_string(),
        K::InvalidAlgorithm => "algorithm does not match the key".to_string(),
        K::MissingRequiredClaim(c) => format!("the token has no {c}"),
        _ => format!("invalid token: {e}"),
    }
}

/// `Ok` when every required scope is in `scope` (space-separated) or `scp` (list or string);
/// else the first one missing.
fn scopes_ok(claims: &Value, required: &[String]) -> Result<(), String> {
    if required.is_empty() {
        return Ok(());
    }
    let mut have: Vec<&str> = Vec::new();
    for name in ["scope", "scp"] {
        match claims.get(name) {
            Some(Value::String(s)) => have.extend(s.split_whitespace()),
            Some(Value::Array(a)) => have.extend(a.iter().filter_map(Value::as_str)),
            _ => {}
        }
    }
    match required.iter().find(|r| !have.contains(&r.as_str())) {
        Some(missing) => Err(missing.clone()),
        None => Ok(()),
    }
}

fn claim_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
