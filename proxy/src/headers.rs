//! Header work on the way through: hop-by-hop removal, `X-Forwarded-*`, request ids, W3C
//! trace context, and the Gateway API header modifiers.

use std::net::{IpAddr, SocketAddr};

use http::{header, request, HeaderMap, HeaderName, HeaderValue};
use weir_api::model::HeaderModifier;

/// The request id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The W3C trace context header.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
// Names as constants: inserting by `&str` copies a custom name into a new allocation each time.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including those `Connection` names. `upgrade` keeps
/// `Connection: upgrade` and `Upgrade` for a protocol switch; `TE: trailers` is kept (gRPC).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // One pass over the names tells which of these headers are there at all: most messages
    // carry none or one, and every lookup or removal by name costs a hash.
    let (mut connection, mut te, mut upgrade_header, mut others) = (false, false, false, false);
    for name in headers.keys() {
        if name == header::CONNECTION {
            connection = true;
        } else if name == header::TE {
            te = true;
        } else if name == header::UPGRADE {
            upgrade_header = true;
        } else if HOP_BY_HOP.contains(name) {
            others = true;
        }
    }
    if connection {
        // `close`, `keep-alive` and `upgrade` name nothing beyond what goes anyway (a
        // `Keep-Alive` or `Upgrade` header was seen above): only other tokens are collected,
        // which is rare, so this usually allocates nothing.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| {
                !["close", "keep-alive", "upgrade"]
                    .iter()
                    .any(|s| t.eq_ignore_ascii_case(s))
            })
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
    }
    if others {
        for name in &HOP_BY_HOP {
            headers.remove(name);
        }
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if upgrade_header {
        headers.remove(header::UPGRADE);
    }
    if te {
        let te_trailers = headers
            .get(header::TE)
            .is_some_and(|v| v.to_str().is_ok_and(|v| v.contains("trailers")));
        headers.remove(header::TE);
        if te_trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }
}

/// Gives a request without `Host` (HTTP/2 carries it as `:authority`) one from its URI, for
/// an HTTP/1.1 hop.
pub fn host_from_authority(parts: &mut request::Parts) {
    if parts.headers.contains_key(header::HOST) {
        return;
    }
    let authority = parts.uri.authority().map(|a| a.as_str());
    if let Some(v) = authority.and_then(|a| HeaderValue::from_str(a).ok()) {
        parts.headers.insert(header::HOST, v);
    }
}

/// Sets `X-Forwarded-For` (appending the client), `-Proto` and `-Host`.
pub fn set_forwarded(headers: &mut HeaderMap, client: SocketAddr, proto: &'static str, host: &str) {
    let mut ip = [0u8; 39];
    let ip = ip_text(client.ip(), &mut ip);
    let xff = match headers.get(X_FORWARDED_FOR) {
        Some(existing) if !existing.is_empty() => {
            HeaderValue::from_bytes(&[existing.as_bytes(), b", ", ip].concat())
        }
        _ => HeaderValue::from_bytes(ip),
    };
    if let Ok(v) = xff {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Ok(v) = HeaderValue::from_str(host) {
        headers.insert(X_FORWARDED_HOST, v);
    }
}

/// An address as text in `buf`, without the formatting machinery for the common IPv4 case.
fn ip_text(ip: IpAddr, buf: &mut [u8; 39]) -> &[u8] {
    let IpAddr::V4(v4) = ip else {
        let text = ip.to_string();
        let n = text.len().min(buf.len());
        buf[..n].copy_from_slice(&text.as_bytes()[..n]);
        return &buf[..n];
    };
    let mut n = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            buf[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            buf[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + octet % 10;
        n += 1;
    }
    &buf[..n]
}

/// `value`'s low `out.len()` nibbles as lower-case hex into `out`.
fn hex(out: &mut [u8], mut value: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in out.iter_mut().rev() {
        *b = DIGITS[(value & 0xf) as usize];
        value >>= 4;
    }
}

/// Returns the request's `x-request-id`, generating and setting one when absent or unusable.
pub fn request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(REQUEST_ID) {
        if !id.is_empty() && id.len() <= 128 && id.to_str().is_ok() {
            return id.clone();
        }
    }
    let mut id = [0u8; 32];
    hex(&mut id, fastrand::u128(..));
    let id = HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("invalid"));
    headers.insert(REQUEST_ID, id.clone());
    id
}

/// Continues the caller's W3C trace (a new span id, same trace id and flags) or starts one.
/// The `traceparent` sent on is left in `headers` (see [`trace_id`]).
pub fn traceparent(headers: &mut HeaderMap) {
    // 00-<trace id: 32>-<span id: 16>-<flags: 2>
    let mut value = *b"00-00000000000000000000000000000000-0000000000000000-01";
    let incoming = headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent);
    match incoming {
        Some((trace, flags)) => {
            value[3..35].copy_from_slice(trace.as_bytes());
            value[53..55].copy_from_slice(flags.as_bytes());
        }
        None => hex(&mut value[3..35], fastrand::u128(1..)),
    }
    hex(&mut value[36..52], u128::from(fastrand::u64(1..)));
    let value = HeaderValue::from_bytes(&value).unwrap_or(HeaderValue::from_static(""));
    headers.insert(TRACEPARENT, value);
}

/// The trace id in a `traceparent` made by [`traceparent`].
pub fn trace_id(traceparent: &HeaderValue) -> &str {
    traceparent
        .to_str()
        .ok()
        .and_then(|v| v.get(3..35))
        .unwrap_or("")
}

/// `(trace-id, flags)` of a valid version-00 `traceparent`.
fn parse_traceparent(value: &str) -> Option<(&str, &str)> {
    let mut parts = value.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let valid = version == "00"
        && parts.next().is_none()
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace != "0".repeat(32)
        && parent != "0".repeat(16);
    valid.then_some((trace, flags))
}

/// Applies a Gateway API header modifier: set, then add, then remove.
pub fn modify(headers: &mut HeaderMap, m: &HeaderModifier) {
    for (name, value) in &m.set {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(n, v);
        }
    }
    for (name, value) in &m.add {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
        }
    }
    for name in &m.remove {
        headers.remove(name.as_str());
    }
}

/// Total size of the header block as it would appear on the wire (names, values, `: `, CRLF).
pub fn size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers, deflate"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert!(
            h.get("x-secret-hop").is_none()
                && h.get("keep-alive").is_none()
                && h.get("connection").is_none()
        );
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
        assert_eq!(h.get("x-keep").unwrap(), "1");
    }

    #[test]
    fn trace_context_is_continued_or_started() {
        let mut h = HeaderMap::new();
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        h.insert(TRACEPARENT, HeaderValue::from_static(parent));
        traceparent(&mut h);
        assert_eq!(
            trace_id(h.get(TRACEPARENT).unwrap()),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let next = h.get(TRACEPARENT).unwrap().to_str().unwrap();
        assert!(next.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && next.ends_with("-01"));
        assert_ne!(next, parent);

        let mut bad = HeaderMap::new();
        bad.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        );
        traceparent(&mut bad);
        let started = trace_id(bad.get(TRACEPARENT).unwrap());
        assert_eq!(started.len(), 32);
        assert!(started.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(started, "0".repeat(32));
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        set_forwarded(
            &mut h,
            "127.0.0.1:5000".parse().unwrap(),
            "http",
            "shop.example.com",
        );
        assert_eq!(h.get("x-forwarded-for").unwrap(), "203.0.113.9, 127.0.0.1");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "shop.example.com");
        for ip in [
            "0.0.0.0",
            "10.20.3.255",
            "192.168.100.9",
            "::1",
            "2001:db8::7",
        ] {
            let mut h = HeaderMap::new();
            set_forwarded(&mut h, SocketAddr::new(ip.parse().unwrap(), 1), "http", "x");
            assert_eq!(h.get("x-forwarded-for").unwrap(), ip);
        }
    }

    #[test]
    fn request_ids_are_kept_or_made() {
        let mut h = HeaderMap::new();
        let made = request_id(&mut h);
        assert_eq!(h.get(REQUEST_ID), Some(&made));
        assert_eq!(made.len(), 32);
        assert!(made.as_bytes().iter().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(request_id(&mut HeaderMap::new()), made);
        assert_eq!(request_id(&mut h), made, "an id the client sent is kept");
    }
}
