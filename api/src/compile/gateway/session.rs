//! HTTPRoute `sessionPersistence` (GEP-1619) as the rule's [`Session`]:
//!
//! | `sessionPersistence`            | Weir                                                 |
//! |---------------------------------|------------------------------------------------------|
//! | `type: Cookie` (default)        | `Set-Cookie: NAME=TOKEN; Path=/; HttpOnly` (`Secure` over TLS) |
//! | `type: Header`                  | the response header `NAME: TOKEN`, sent back by the client |
//! | `sessionName`                   | NAME (default `weir-session`)                        |
//! | `cookieConfig.lifetimeType: Permanent` | `Max-Age` of `absoluteTimeout` (which it needs) |
//! | `absoluteTimeout`, `idleTimeout` | past them the gateway picks anew (and says so)      |
//!
//! TOKEN names the endpoint without its address (a digest of it) and when the session began
//! and was last used. A token naming an endpoint that is gone or unusable, or a session
//! timed out, is picked anew as if there were none: a client cannot choose an endpoint
//! outside the route's backends, nor keep one that fails.

use gateway_api::apis::experimental::httproutes::{
    HttpRouteRulesSessionPersistence,
    HttpRouteRulesSessionPersistenceCookieConfigLifetimeType as Lifetime,
    HttpRouteRulesSessionPersistenceType as Kind,
};

use crate::{duration::parse_duration, model::Session};

/// The name when the route gives none.
pub const DEFAULT_SESSION_NAME: &str = "weir-session";

/// The rule's session, or the field under `sessionPersistence` that is wrong and why.
pub(super) fn route_session(
    session: &HttpRouteRulesSessionPersistence,
) -> Result<Session, (String, String)> {
    let name = session
        .session_name
        .as_deref()
        .unwrap_or(DEFAULT_SESSION_NAME);
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
