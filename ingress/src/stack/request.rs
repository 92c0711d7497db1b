//! Reading the client's request: its host, the Host to send on, its size.

use std::borrow::Cow;

use http::{header, request::Parts, HeaderValue};

/// The host the client asked for, as it sent it: the authority of the request target (HTTP/2's
/// `:authority`, or an absolute-form HTTP/1.1 target, which RFC 9112 §3.2.2 puts before `Host`),
/// else its `Host`. What is sent upstream as `Host` (as nginx's `proxy_set_header Host $host`
/// does) and as `X-Forwarded-Host`.
pub(super) fn asked_host(parts: &Parts) -> Option<HeaderValue> {
    match parts.uri.authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        None => parts.headers.get(header::HOST).cloned(),
    }
}

/// The host to route by: the `asked` one, lowercase, without the port or a trailing dot;
/// borrowed when that is how it was sent.
pub(super) fn request_host(asked: Option<&HeaderValue>) -> Cow<'_, str> {
    let raw = asked.and_then(|h| h.to_str().ok()).unwrap_or_default();
    let without_port = match raw.find(']') {
        Some(end) => &raw[..=end], // [v6]:port
        None => match raw.rsplit_once(':') {
            Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => raw,
        },
    };
    let host = without_port.trim_end_matches('.');
    match host.bytes().any(|b| b.is_ascii_uppercase()) {
        true => Cow::Owned(host.to_ascii_lowercase()),
        false => Cow::Borrowed(host),
    }
}

pub(super) fn content_length(parts: &Parts) -> Option<u64> {
    parts
        .headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
