//! Header work on the way through: hop-by-hop removal, the names that look like trusted ones
//! ([`drop_lookalikes`]), the fields the gateway stamps on a request (request id, W3C trace
//! context, `X-Forwarded-*`: [`stamp`]), and the Gateway API header modifiers.

use http::{header, request, HeaderMap, HeaderName, HeaderValue};
use weir_api::model::HeaderModifier;

mod policy;
mod stamp;
mod trusted;

pub(crate) use policy::{choose, named};
pub use policy::{FieldPolicy, ForwardedMode, RequestIdMode, TraceContext};
pub use stamp::{set_forwarded, stamp, trace_id, Stamps, REQUEST_ID, TRACEPARENT};
pub use trusted::{drop_lookalikes, UnderscoreHeaders, STAMPED};

/// `Keep-Alive`, from HTTP/1.0's persistent connections; `http` has no constant for it.
pub(crate) const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// `HTTP2-Settings`, which only an `h2c` upgrade carries (RFC 7540 §3.2.1: connection-specific).
const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    KEEP_ALIVE,
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    HTTP2_SETTINGS,
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
            | "transfer-encoding"
            | "http2-settings" => others = true,
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
        h.insert(
            "http2-settings",
            HeaderValue::from_static("AAMAAABkAAQAAP__"),
        );
        strip_hop_by_hop(&mut h, false);
        assert!(
            h.get("http2-settings").is_none(),
            "only an h2c upgrade carries it"
        );
        assert!(
            h.get("x-secret-hop").is_none()
                && h.get("keep-alive").is_none()
                && h.get("connection").is_none()
        );
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
        assert_eq!(h.get("x-keep").unwrap(), "1");
    }
}
