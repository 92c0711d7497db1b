//! Hop-by-hop fields (RFC 9110 §7.6.1): what describes one connection and is never forwarded,
//! including every field `Connection` names.

use http::{header, HeaderMap, HeaderName, HeaderValue};

/// `Keep-Alive`, from HTTP/1.0's persistent connections; `http` has no constant for it.
pub const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

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
