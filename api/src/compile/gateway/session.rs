//! HTTPRoute `sessionPersistence` (GEP-1619) as the rule's [`Session`]:
//!
//! | `sessionPersistence`            | Weir                                                 |
//! |---------------------------------|------------------------------------------------------|
//! | `type: Cookie` (default)        | `Set-Cookie: NAME=TOKEN; Path=/; HttpOnly` (`Secure` over TLS) |
//! | `type: Header`                  | the response header `NAME: TOKEN`, sent back by the client |
//! | `sessionName`                   | NAME (default `weir-session-` and 8 hex digits of the route and rule, so two rules' sessions never share a cookie) |
//! | `cookieConfig.lifetimeType: Permanent` | `Max-Age` of `absoluteTimeout` (which it needs) |
//! | `absoluteTimeout`, `idleTimeout` | past them the gateway picks anew (and says so)      |
//!
//! TOKEN names the endpoint by a digest of its address and says when the session began and
//! was last used. A token naming an endpoint that is gone or unusable, or a session timed out,
//! is picked anew as if there were none: a client can only choose among the route's usable
//! endpoints (as it can with consistent hashing by a header it sends), never another.

use gateway_api::apis::experimental::httproutes::{
    HttpRouteRulesSessionPersistence,
    HttpRouteRulesSessionPersistenceCookieConfigLifetimeType as Lifetime,
    HttpRouteRulesSessionPersistenceType as Kind,
};

use crate::{duration::parse_duration, model::Session};

/// Header names a `type: Header` session may not take: the message's framing, hop-by-hop
/// fields, cookies, and the gateway's own.
const RESERVED: &[&str] = &[
    "connection",
    "content-length",
    "content-type",
    "cookie",
    "date",
    "host",
    "keep-alive",
    "location",
    "proxy-authenticate",
    "proxy-authorization",
    "server",
    "set-cookie",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "vary",
];

/// The rule's session (`rule` names the route and rule, for the default name), or the field
/// under `sessionPersistence` that is wrong and why.
pub(super) fn route_session(
    session: &HttpRouteRulesSessionPersistence,
    rule: &str,
) -> Result<Session, (String, String)> {
    // FNV-1a: the same in every replica and version.
    let digest = rule.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let default = format!("weir-session-{digest:08x}");
    let name = session.session_name.as_deref().unwrap_or(&default);
    // A token (RFC 9110): what a cookie name and a header name both may be.
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || name.len() > 128 || !name.chars().all(token) {
        let why = format!("{name:?} is not a cookie or header name (letters, digits and !#$%&'*+-.^_`|~, at most 128)");
        return Err((".sessionName".into(), why));
    }
    let duration = |value: &Option<String>, field: &str| match value.as_deref() {
        None => Ok(None),
        Some(v) => match parse_duration(v) {
            Ok(d) if !d.is_zero() => Ok(Some(d)),
            Ok(_) => Err((format!(".{field}"), "must be longer than 0s".to_string())),
            Err(e) => Err((format!(".{field}"), e)),
        },
    };
    let absolute = duration(&session.absolute_timeout, "absoluteTimeout")?;
    let idle = duration(&session.idle_timeout, "idleTimeout")?;
    let header = matches!(session.r#type, Some(Kind::Header));
    let lower = name.to_ascii_lowercase();
    if header && (RESERVED.contains(&lower.as_str()) || lower.starts_with("x-weir-")) {
        let why = format!("{name:?} is a header the gateway or HTTP itself sets");
        return Err((".sessionName".into(), why));
    }
    let lifetime = session
        .cookie_config
        .as_ref()
        .and_then(|c| c.lifetime_type.as_ref());
    if header && lifetime.is_some() {
        let why = "cookieConfig is for type Cookie".to_string();
        return Err((".cookieConfig".into(), why));
    }
    let max_age = match lifetime {
        Some(Lifetime::Permanent) => match absolute {
            Some(d) => Some(d),
            None => {
                let why = "a Permanent cookie needs absoluteTimeout (its Max-Age)".to_string();
                return Err((".absoluteTimeout".into(), why));
            }
        },
        _ => None,
    };
    Ok(Session {
        name: name.to_string(),
        header,
        max_age,
        absolute,
        idle,
    })
}
