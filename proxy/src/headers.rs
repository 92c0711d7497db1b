//! Header work on the way through: hop-by-hop removal, `X-Forwarded-*`, request ids, W3C
//! trace context, and the Gateway API header modifiers.

use std::net::IpAddr;

use bytes::Bytes;
use http::{
    header::{self, Entry},
    request, HeaderMap, HeaderName, HeaderValue,
};
use weir_api::model::HeaderModifier;

/// The request id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The W3C trace context header.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
// Names as constants: inserting by `&str` copies a custom name into a new allocation each time.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `Keep-Alive`, from HTTP/1.0's persistent connections; `http` has no constant for it.
pub(crate) const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    KEEP_ALIVE,
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
    // By name, as text: cheaper than comparing each with every name in HOP_BY_HOP.
    for name in headers.keys() {
        match name.as_str() {
            "connection" => connection = true,
            "te" => te = true,
            "upgrade" => upgrade_header = true,
            "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "trailer"
            | "transfer-encoding" => others = true,
            _ => {}
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

/// What the gateway stamps on a request as it comes in: its id (the client's when usable, a
/// new one otherwise), and the client's address for `X-Forwarded-For`. The values it makes,
/// and the `traceparent` it sets, share one allocation.
pub struct Stamps {
    /// The request id, also returned to the client and logged.
    pub request_id: HeaderValue,
    /// The client's address as text.
    pub client: HeaderValue,
}

/// Lengths in the shared buffer: a request id, a `traceparent`, an address (IPv6 at most).
const ID_LEN: usize = 32;
const TRACEPARENT_LEN: usize = 55;
const ADDRESS_LEN: usize = 39;

/// Sets the request's `x-request-id` (keeping the client's when usable) and `traceparent`
/// (continuing the client's trace with a new span, or starting one; see [`trace_id`]), and
/// returns the id with the client's address.
pub fn stamp(headers: &mut HeaderMap, client: IpAddr) -> Stamps {
    let mut buf = [0u8; ID_LEN + TRACEPARENT_LEN + ADDRESS_LEN];
    let (id, rest) = buf.split_at_mut(ID_LEN);
    let (trace, address) = rest.split_at_mut(TRACEPARENT_LEN);
    let given_id = headers
        .get(REQUEST_ID)
        .filter(|id| !id.is_empty() && id.len() <= 128 && id.to_str().is_ok())
        .cloned();
    if given_id.is_none() {
        hex(id, fastrand::u128(..));
    }
    let address_len = ip_text(client, address.try_into().expect("sized")).len();
    // The caller's traceparent is read and replaced through one entry: one hash of the name.
    let entry = headers.entry(TRACEPARENT);
    let incoming = match &entry {
        Entry::Occupied(given) => Some(given.get()),
        Entry::Vacant(_) => None,
    };
    write_traceparent(trace, incoming);
    let shared = Bytes::from_owner(buf);
    let value = |from: usize, len: usize| {
        HeaderValue::from_maybe_shared(shared.slice(from..from + len))
            .unwrap_or(HeaderValue::from_static("invalid"))
    };
    let traceparent = value(ID_LEN, TRACEPARENT_LEN);
    match entry {
        Entry::Occupied(mut given) => {
            given.insert(traceparent);
        }
        Entry::Vacant(absent) => {
            absent.insert(traceparent);
        }
    }
    let request_id = given_id.unwrap_or_else(|| {
        let id = value(0, ID_LEN);
        headers.insert(REQUEST_ID, id.clone());
        id
    });
    Stamps {
        request_id,
        client: value(ID_LEN + TRACEPARENT_LEN, address_len),
    }
}

/// Writes the `traceparent` to send on: the caller's trace id and flags with a new span id,
/// or a new trace.
fn write_traceparent(out: &mut [u8], incoming: Option<&HeaderValue>) {
    // 00-<trace id: 32>-<span id: 16>-<flags: 2>
    out.copy_from_slice(b"00-00000000000000000000000000000000-0000000000000000-01");
    match incoming
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent)
    {
        Some((trace, flags)) => {
            out[3..35].copy_from_slice(trace.as_bytes());
            out[53..55].copy_from_slice(flags.as_bytes());
        }
        // Not zero, which W3C reserves (over the full range: a bounded one costs a division).
        None => hex(&mut out[3..35], fastrand::u128(..).max(1)),
    }
    hex(&mut out[36..52], u128::from(fastrand::u64(..).max(1)));
}

/// Sets `X-Forwarded-For` (appending `client`, the address from [`Stamps`]), `-Proto`, and
/// `-Host`: the `Host` the client asked for, as it sent it.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client: HeaderValue,
    proto: &'static str,
    host: Option<HeaderValue>,
) {
    match headers.entry(X_FORWARDED_FOR) {
        Entry::Occupied(mut given) if !given.get().is_empty() => {
            let appended = [given.get().as_bytes(), b", ", client.as_bytes()].concat();
            if let Ok(v) = HeaderValue::from_bytes(&appended) {
                given.insert(v);
            }
        }
        Entry::Occupied(mut given) => {
            given.insert(client);
        }
        Entry::Vacant(absent) => {
            absent.insert(client);
        }
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST, host);
    }
}

/// An address as text in `buf`, without the formatting machinery for the common IPv4 case.
fn ip_text(ip: IpAddr, buf: &mut [u8; ADDRESS_LEN]) -> &[u8] {
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

/// `value`'s low `out.len()` nibbles as lower-case hex into `out` (of even length), a byte
/// at a time.
fn hex(out: &mut [u8], value: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let bytes = value.to_be_bytes();
    let bytes = &bytes[bytes.len() - out.len() / 2..];
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

/// The trace id in a `traceparent` made by [`stamp`].
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

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn trace_context_is_continued_or_started() {
        let mut h = HeaderMap::new();
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        h.insert(TRACEPARENT, HeaderValue::from_static(parent));
        stamp(&mut h, CLIENT);
        let sent = h.get(TRACEPARENT).unwrap();
        assert_eq!(trace_id(sent), "4bf92f3577b34da6a3ce929d0e0e4736");
        let next = sent.to_str().unwrap();
        assert!(next.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && next.ends_with("-01"));
        assert_ne!(next, parent);
        assert!(next[36..52].bytes().all(|b| b.is_ascii_hexdigit()));

        let mut bad = HeaderMap::new();
        bad.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        );
        stamp(&mut bad, CLIENT);
        let started = bad.get(TRACEPARENT).unwrap();
        let trace = trace_id(started);
        assert_eq!(trace.len(), 32);
        assert!(trace.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(trace, "0".repeat(32));
        assert!(started.to_str().unwrap().ends_with("-01"));
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        let client = stamp(&mut h, CLIENT).client;
        let host = HeaderValue::from_static("shop.example.com:8080");
        set_forwarded(&mut h, client, "http", Some(host));
        assert_eq!(h.get("x-forwarded-for").unwrap(), "203.0.113.9, 127.0.0.1");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "shop.example.com:8080");
        for ip in [
            "0.0.0.0",
            "10.20.3.255",
            "192.168.100.9",
            "::1",
            "2001:db8::7",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let mut h = HeaderMap::new();
            let client = stamp(&mut h, ip.parse().unwrap()).client;
            set_forwarded(&mut h, client, "https", None);
            assert_eq!(h.get("x-forwarded-for").unwrap(), ip);
            assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
            assert!(h.get("x-forwarded-host").is_none());
        }
    }

    #[test]
    fn hex_is_the_low_nibbles_in_order() {
        let mut long = [0u8; 32];
        let mut short = [0u8; 16];
        for v in [
            0,
            1,
            0xdead_beef,
            u128::MAX,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
        ] {
            hex(&mut long, v);
            assert_eq!(std::str::from_utf8(&long).unwrap(), format!("{v:032x}"));
            hex(&mut short, v);
            assert_eq!(
                std::str::from_utf8(&short).unwrap(),
                format!("{:016x}", v as u64)
            );
        }
    }

    #[test]
    fn request_ids_are_kept_or_made() {
        let mut h = HeaderMap::new();
        let made = stamp(&mut h, CLIENT).request_id;
        assert_eq!(h.get(REQUEST_ID), Some(&made));
        assert_eq!(made.len(), 32);
        assert!(made.as_bytes().iter().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(stamp(&mut HeaderMap::new(), CLIENT).request_id, made);
        assert_eq!(
            stamp(&mut h, CLIENT).request_id,
            made,
            "an id the client sent is kept"
        );
        let mut unusable = HeaderMap::new();
        unusable.insert(REQUEST_ID, HeaderValue::from_static(""));
        let replaced = stamp(&mut unusable, CLIENT).request_id;
        assert_eq!(replaced.len(), 32);
        assert_eq!(unusable.get(REQUEST_ID), Some(&replaced));
    }
}
