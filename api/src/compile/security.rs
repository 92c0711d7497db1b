//! AuthPolicy and RateLimitPolicy: validated into [`Auth`] and [`RateLimit`] and attached to
//! the routes compiled from the HTTPRoutes and Ingresses their `targetRefs` name. Runs after
//! the route passes.
//!
//! One AuthPolicy applies to a route (the oldest, with a warning naming the others); every
//! RateLimitPolicy on a route applies, and a request must pass all of their limits (the
//! fields that choose how a limit counts are checked in `rate_limit.rs`).

use std::{collections::HashMap, sync::Arc, time::Duration};

use super::{created, rate_limit, secrets, Context};
use crate::{
    crds::{
        AuthPolicy, JwtProvider as JwtProviderSpec, LimitKey as LimitKeySpec, RateLimitPolicy,
        RouteTargetRef,
    },
    duration::parse_duration,
    error::Location,
    model::{ApiKeys, Auth, Jwks, JwtProvider, LimitKey, RateLimit},
    objects::{Object, ObjectKey},
};

/// The Secret entry a JWKS `secretRef` reads.
pub const JWKS_SECRET_KEY: &str = "jwks.json";
/// The header an authenticated API-key client's name is forwarded in.
pub const CLIENT_HEADER: &str = "x-weir-client";
const DEFAULT_API_KEY_HEADER: &str = "x-api-key";
const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(30);

pub(super) fn compile_all(cx: &mut Context<'_>) {
    // (creation time, `AuthPolicy ns/name`), the policy, its route-name prefixes
    // (`httproute:ns/name:`); sorted oldest first below.
    type Attached = ((String, String), Arc<Auth>, Vec<String>);
    let mut auth: Vec<Attached> = Vec::new();
    let mut limits: Vec<(Arc<RateLimit>, Vec<String>)> = Vec::new();
    let objects: Vec<_> = cx.iter().collect();
    for (object, location) in objects {
        let key = object.key();
        match object {
            Object::AuthPolicy(p) => {
                let prefixes = targets(cx, &p.spec.target_refs, &key, location);
                if let Some(a) = auth_policy(cx, p, &key, location) {
                    auth.push((
                        (created(&p.metadata), key.to_string()),
                        Arc::new(a),
                        prefixes,
                    ));
                }
            }
            Object::RateLimitPolicy(p) => {
                let prefixes = targets(cx, &p.spec.target_refs, &key, location);
                for limit in rate_limits(cx, p, &key, location) {
                    limits.push((Arc::new(limit), prefixes.clone()));
                }
            }
            _ => {}
        }
    }
    auth.sort_by(|a, b| a.0.cmp(&b.0));
    let mut ignored: Vec<String> = Vec::new();
    let routes = cx.routes.iter_mut().chain(cx.default_routes.iter_mut());
    for route in routes {
        // Not shared yet: the compile holds the only reference.
        let route = Arc::make_mut(route);
        for ((_, policy), a, prefixes) in &auth {
            if !prefixes.iter().any(|p| route.name.starts_with(p.as_str())) {
                continue;
            }
            match &route.auth {
                None => route.auth = Some(a.clone()),
                Some(winner) if winner.policy != a.policy => ignored.push(format!(
                    "{policy}: ignored for route {}: AuthPolicy {} is older and applies",
                    route.name, winner.policy
                )),
                Some(_) => {}
            }
        }
        for (limit, prefixes) in &limits {
            if prefixes.iter().any(|p| route.name.starts_with(p.as_str())) {
                route.limits.push(limit.clone());
            }
        }
    }
    ignored.dedup();
    cx.warnings.extend(ignored);
}

/// The route-name prefixes of a policy's targets; unknown kinds are errors, missing targets
/// warnings.
fn targets(
    cx: &mut Context<'_>,
    refs: &[RouteTargetRef],
    key: &ObjectKey,
    location: &Location,
) -> Vec<String> {
    let mut prefixes = Vec::new();
    if refs.is_empty() {
        cx.error(
            location,
            key,
            "spec.targetRefs",
            "at least one target is required",
        );
    }
    for (i, t) in refs.iter().enumerate() {
        let kind = match (t.group.as_str(), t.kind.as_str()) {
            ("gateway.networking.k8s.io", "HTTPRoute") => "httproute",
            ("networking.k8s.io", "Ingress") => "ingress",
            (group, kind) => {
                cx.error(
                    location,
                    key,
                    format!("spec.targetRefs[{i}]"),
                    format!("targets HTTPRoutes (gateway.networking.k8s.io) or Ingresses (networking.k8s.io), not {group:?}/{kind:?}"),
                );
                continue;
            }
        };
        let exists = cx.iter().any(|(o, _)| {
            let k = o.key();
            k.kind == t.kind && k.namespace == key.namespace && k.name == t.name
        });
        if !exists {
            cx.warn(
                key,
                format!(
                    "target {} {}/{} not found; the policy applies once it exists",
                    t.kind, key.namespace, t.name
                ),
            );
        }
        prefixes.push(format!("{kind}:{}/{}:", key.namespace, t.name));
    }
    prefixes
}

fn auth_policy(
    cx: &mut Context<'_>,
    policy: &AuthPolicy,
    key: &ObjectKey,
    location: &Location,
) -> Option<Auth> {
    let errors = cx.errors.len();
    let spec = &policy.spec;
    let name = format!("{}/{}", key.namespace, key.name);
    if spec.jwt.is_none() && spec.api_keys.is_none() {
        cx.error(location, key, "spec", "needs jwt, apiKeys or both");
    }
    let mut strip = vec![CLIENT_HEADER.to_string()];
    let mut providers = Vec::new();
    let mut issuers: HashMap<&str, usize> = HashMap::new();
    for (i, p) in spec.jwt.iter().flat_map(|j| j.providers.iter()).enumerate() {
        let field = format!("spec.jwt.providers[{i}]");
        if let Some(first) = issuers.insert(&p.issuer, i) {
            cx.error(
                location,
                key,
                format!("{field}.issuer"),
                format!("{:?} is also the issuer of providers[{first}]", p.issuer),
            );
        }
        if let Some(provider) = jwt_provider(cx, p, key, location, &field, &name) {
            strip.extend(provider.forward_claims.iter().map(|(_, h)| h.clone()));
            providers.push(Arc::new(provider));
        }
    }
    let api_keys = spec.api_keys.as_ref().and_then(|a| {
        let header = header_name(
            cx,
            a.header.as_deref().unwrap_or(DEFAULT_API_KEY_HEADER),
            key,
            location,
            "spec.apiKeys.header",
        )?;
        let keys = match cx.find_secret(&key.namespace, &a.secret_ref.name) {
            Some(secret) => secrets::entries(secret)
                .into_iter()
                .filter(|(_, v)| !v.0.is_empty())
                .collect(),
            None => {
                cx.warn(
                    key,
                    format!(
                        "API-key Secret {}/{} not found: every API key is refused until it exists",
                        key.namespace, a.secret_ref.name
                    ),
                );
                Vec::new()
            }
        };
        Some(ApiKeys { header, keys })
    });
    strip.sort();
    strip.dedup();
    (cx.errors.len() == errors).then(|| Auth {
        policy: name,
        jwt: providers,
        api_keys,
        required: spec.required.unwrap_or(true),
        strip_headers: strip,
    })
}

fn jwt_provider(
    cx: &mut Context<'_>,
    p: &JwtProviderSpec,
    key: &ObjectKey,
    location: &Location,
    field: &str,
    policy: &str,
) -> Option<JwtProvider> {
    let sources = [
        p.jwks.uri.is_some(),
        p.jwks.inline.is_some(),
        p.jwks.secret_ref.is_some(),
    ];
    let jwks = match (&p.jwks.uri, &p.jwks.inline, &p.jwks.secret_ref) {
        _ if sources.iter().filter(|s| **s).count() != 1 => {
            cx.error(
                location,
                key,
                format!("{field}.jwks"),
                "exactly one of uri, inline or secretRef is required",
            );
            return None;
        }
        (Some(uri), _, _) => {
            let valid = uri
                .parse::<http::Uri>()
                .ok()
                .is_some_and(|u| u.scheme_str() == Some("https") && u.host().is_some());
            if !valid {
                cx.error(
                    location,
                    key,
                    format!("{field}.jwks.uri"),
                    format!("{uri:?} is not an https:// URL"),
                );
                return None;
            }
            Jwks::Uri(uri.clone())
        }
        (_, Some(inline), _) => {
            Jwks::Static(crate::model::SecretBytes(Arc::from(inline.as_bytes())))
        }
        (None, None, None) => return None,
        (_, _, Some(secret)) => match cx.find_secret(&key.namespace, &secret.name) {
            Some(s) => Jwks::Static(secrets::value(s, JWKS_SECRET_KEY)),
            None => {
                cx.warn(key, format!("JWKS Secret {}/{} not found: tokens of provider {} are refused until it exists", key.namespace, secret.name, p.name));
                Jwks::Static(Default::default())
            }
        },
    };
    let mut forward_claims = Vec::new();
    for (claim, header) in &p.forward_claims {
        let header = header_name(
            cx,
            header,
            key,
            location,
            &format!("{field}.forwardClaims.{claim}"),
        )?;
        forward_claims.push((claim.clone(), header));
    }
    let clock_skew = match &p.clock_skew {
        Some(s) => match parse_duration(s) {
            Ok(d) => d,
            Err(e) => {
                cx.error(location, key, format!("{field}.clockSkew"), e);
                return None;
            }
        },
        None => DEFAULT_CLOCK_SKEW,
    };
    let source = match &jwks {
        Jwks::Uri(u) => u.clone(),
        Jwks::Static(_) => "static".to_string(),
    };
    Some(JwtProvider {
        id: format!("{policy}/{} {source}", p.name),
        name: p.name.clone(),
        issuer: p.issuer.clone(),
        audiences: p.audiences.clone(),
        jwks,
        forward_claims,
        required_scopes: p.required_scopes.clone(),
        clock_skew,
    })
}

fn header_name(
    cx: &mut Context<'_>,
    name: &str,
    key: &ObjectKey,
    location: &Location,
    field: &str,
) -> Option<String> {
    match http::HeaderName::try_from(name) {
        Ok(h) => Some(h.as_str().to_string()),
        Err(_) => {
            cx.error(
                location,
                key,
                field,
                format!("{name:?} is not a valid header name"),
            );
            None
        }
    }
}

fn rate_limits(
    cx: &mut Context<'_>,
    policy: &RateLimitPolicy,
    key: &ObjectKey,
    location: &Location,
) -> Vec<RateLimit> {
    let spec = &policy.spec;
    let fail_open = match spec.failure_mode.as_deref() {
        None | Some("open") => true,
        Some("closed") => false,
        Some(other) => {
            cx.error(
                location,
                key,
                "spec.failureMode",
                format!("{other:?}: use open or closed"),
            );
            true
        }
    };
    if spec.limits.is_empty() {
        cx.error(
            location,
            key,
            "spec.limits",
            "at least one limit is required",
        );
    }
    let mut out = Vec::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, l) in spec.limits.iter().enumerate() {
        let field = format!("spec.limits[{i}]");
        if let Some(first) = names.insert(&l.name, i) {
            cx.error(
                location,
                key,
                format!("{field}.name"),
                format!("{:?} is also the name of limits[{first}]", l.name),
            );
            continue;
        }
        let Some(limit_key) = limit_key(cx, &l.key, key, location, &field) else {
            continue;
        };
        let per = match parse_duration(&l.rate.per) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                cx.error(
                    location,
                    key,
                    format!("{field}.rate.per"),
                    "must be longer than 0",
                );
                continue;
            }
            Err(e) => {
                cx.error(location, key, format!("{field}.rate.per"), e);
                continue;
            }
        };
        if l.rate.requests == 0 {
            cx.error(
                location,
                key,
                format!("{field}.rate.requests"),
                "must be at least 1",
            );
            continue;
        }
        let global = match l.scope.as_deref() {
            None | Some("local") => false,
            Some("global") => true,
            Some(other) => {
                cx.error(
                    location,
                    key,
                    format!("{field}.scope"),
                    format!("{other:?}: use local or global"),
                );
                continue;
            }
        };
        let checked = rate_limit::algorithm(l)
            .and_then(|a| Ok((a, rate_limit::sync_interval(l, per, global, a)?)));
        let (algorithm, sync_interval) = match checked {
            Ok(both) => both,
            Err((at, message)) => {
                cx.error(location, key, format!("{field}.{at}"), message);
                continue;
            }
        };
        out.push(RateLimit {
            id: format!("{}/{}/{}", key.namespace, key.name, l.name),
            name: l.name.clone(),
            key: limit_key,
            requests: l.rate.requests,
            per,
            algorithm,
            global,
            fail_open,
            sync_interval,
        });
    }
    out
}

fn limit_key(
    cx: &mut Context<'_>,
    k: &LimitKeySpec,
    key: &ObjectKey,
    location: &Location,
    field: &str,
) -> Option<LimitKey> {
    let chosen = [
        k.claim.is_some(),
        k.header.is_some(),
        k.client_ip.is_some(),
        k.route.is_some(),
    ];
    if chosen.iter().filter(|c| **c).count() != 1 {
        cx.error(
            location,
            key,
            format!("{field}.key"),
            "exactly one of claim, header, clientIP or route is required",
        );
        return None;
    }
    Some(match (&k.claim, &k.header, &k.client_ip) {
        (Some(c), _, _) => LimitKey::Claim(c.clone()),
        (_, Some(h), _) => LimitKey::Header(header_name(
            cx,
            h,
            key,
            location,
            &format!("{field}.key.header"),
        )?),
        (_, _, Some(_)) => LimitKey::ClientIp,
        _ => LimitKey::Route,
    })
}
