//! Header work on the way through: the names that look like trusted ones
//! ([`drop_lookalikes`]), the fields the gateway stamps on a request (request id, W3C trace
//! context, `X-Forwarded-*`: [`stamp`]), and the Gateway API header modifiers. (Hop-by-hop
//! removal is the protocol's: `weir_http::hop`.)

use http::{header, request, HeaderMap, HeaderName, HeaderValue};
use weir_api::model::HeaderModifier;
pub use weir_http::hop::strip_hop_by_hop;

mod policy;
mod stamp;
mod trusted;

pub(crate) use policy::{choose, named};
pub use policy::{FieldPolicy, ForwardedMode, RequestIdMode, Sampling, TraceContext};
pub use stamp::{set_forwarded, stamp, trace_id, Stamps, TraceIds, REQUEST_ID, TRACEPARENT};
pub use trusted::{drop_lookalikes, UnderscoreHeaders, STAMPED};

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
