//! Session persistence (a route's `sessionPersistence`): the answer names the endpoint that
//! gave it in a cookie (or a header the client sends back), and a later request carrying that
//! ticket goes to the same endpoint while it is usable and the session has not timed out.
//!
//! A ticket is `ENDPOINT.BEGAN.SEEN`: a digest of the endpoint's address, and the Unix seconds
//! the session began and was last used, in hexadecimal. It is not signed: a client can only
//! name endpoints the route already sends to (any other is picked anew), as it could with
//! consistent hashing by a header it sends, and can only stretch its own session.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{header, HeaderMap, HeaderValue};
use weir_api::model::Session;

/// How far ahead another replica's clock may be.
const CLOCK_SKEW: u64 = 60;

/// A client's session, as its ticket says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// The endpoint it names ([`endpoint_id`]).
    pub endpoint: u64,
    /// When it began (Unix seconds).
    pub began: u64,
    /// When it was last used.
    pub seen: u64,
}

/// An endpoint's name in tickets: the first 8 bytes of SHA-256 over its address. The same in
/// every gateway replica, so a session survives the client reaching another one.
pub fn endpoint_id(addr: std::net::SocketAddr) -> u64 {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("weir-session {addr}").as_bytes(),
    );
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(id)
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// The session the request carries, if it has a ticket still within the session's timeouts.
pub fn asked(session: &Session, headers: &HeaderMap, now: u64) -> Option<Ticket> {
    let value = if session.header {
        headers.get(session.name.as_str())?.to_str().ok()?.trim()
    } else {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (name, value) = pair.trim().split_once('=')?;
                (name == session.name).then_some(value)
            })?
    };
    let mut parts = value.split('.');
    let mut field = || u64::from_str_radix(parts.next()?, 16).ok();
    let ticket = Ticket {
        endpoint: field()?,
        began: field()?,
        seen: field()?,
    };
    let within = |since: u64, limit: Option<Duration>| {
        limit.is_none_or(|l| now.saturating_sub(since) < l.as_secs().max(1))
    };
    // A ticket from a replica whose clock runs a little ahead still holds.
    let ahead = now + CLOCK_SKEW;
    (ticket.began <= ahead
        && ticket.seen <= ahead
        && within(ticket.began, session.absolute)
        && within(ticket.seen, session.idle))
    .then_some(ticket)
}

/// Gives the client its ticket for `endpoint` on the response, unless the one it sent still
/// says so (with an idle timeout, the last use is renewed each time). `tls`: the cookie is
/// `Secure`. A header session replaces any field of its name the backend set.
pub fn stamp(
    session: &Session,
    asked: Option<Ticket>,
    endpoint: u64,
    tls: bool,
    now: u64,
    headers: &mut HeaderMap,
) {
    let kept = asked.filter(|t| t.endpoint == endpoint);
    if kept.is_some() && session.idle.is_none() {
        return;
    }
    let began = kept.map_or(now, |t| t.began);
    let ticket = format!("{endpoint:016x}.{began:x}.{now:x}");
    let (name, value) = if session.header {
        (session.name.as_str(), ticket)
    } else {
        let mut cookie = format!("{}={ticket}; Path=/; HttpOnly; SameSite=Lax", session.name);
        if let Some(max_age) = session.max_age {
            // What is left of the session's absolute lifetime.
            let left = max_age.as_secs().saturating_sub(now.saturating_sub(began));
            cookie.push_str(&format!("; Max-Age={left}"));
        }
        if tls {
            cookie.push_str("; Secure");
        }
        ("set-cookie", cookie)
    };
    if let (Ok(name), Ok(value)) = (
        http::HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(&value),
    ) {
        match session.header {
            true => headers.insert(name, value),
            false => {
                headers.append(name, value);
                None
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(header: bool) -> Session {
        Session {
            name: "s".into(),
            header,
            max_age: None,
            absolute: Some(Duration::from_secs(60)),
            idle: None,
        }
    }

    fn cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn a_ticket_is_read_back_from_the_cookie_it_was_given_in() {
        let mut response = HeaderMap::new();
        stamp(&session(false), None, 42, true, 1000, &mut response);
        let set = response[header::SET_COOKIE].to_str().unwrap();
        assert!(
            set.ends_with("; Path=/; HttpOnly; SameSite=Lax; Secure"),
            "{set}"
        );
        let pair = set.split(';').next().unwrap();
        let asked = asked(&session(false), &cookie(&format!("a=b; {pair}")), 1010);
        let expected = Ticket {
            endpoint: 42,
            began: 1000,
            seen: 1000,
        };
        assert_eq!(asked, Some(expected));
    }

    #[test]
    fn a_session_past_its_timeouts_or_from_the_future_is_not_kept() {
        let s = session(false);
        assert_eq!(
            asked(&s, &cookie("s=2a.3e8.3e8"), 1000 + 59).map(|t| t.endpoint),
            Some(42)
        );
        assert_eq!(asked(&s, &cookie("s=2a.3e8.3e8"), 1000 + 60), None);
        assert_eq!(
            asked(&s, &cookie("s=2a.3e8.3e8"), 1000 - CLOCK_SKEW - 1),
            None
        );
        assert_eq!(asked(&s, &cookie("s=zz.3e8.3e8"), 1000), None);
        assert_eq!(asked(&s, &cookie("other=2a.3e8.3e8"), 1000), None);
    }

    #[test]
    fn a_kept_session_is_not_stamped_again_unless_it_idles() {
        let mut s = session(true);
        let ticket = Ticket {
            endpoint: 42,
            began: 1000,
            seen: 1000,
        };
        let mut response = HeaderMap::new();
        stamp(&s, Some(ticket), 42, false, 1005, &mut response);
        assert!(response.is_empty());
        s.idle = Some(Duration::from_secs(30));
        stamp(&s, Some(ticket), 42, false, 1005, &mut response);
        assert_eq!(response["s"], "000000000000002a.3e8.3ed");
    }
}
