//! Reading the client's request: its host, the Host to send on, sizes and version names.

use http::{header, request::Parts, HeaderValue, Request, Uri, Version};

/// Moves method, version and headers out of `parts` (which are not used again).
pub(super) fn take_parts(parts: &mut Parts) -> Parts {
    let (mut taken, ()) = Request::new(()).into_parts();
    taken.method = parts.method.clone();
    taken.version = parts.version;
    taken.headers = std::mem::take(&mut parts.headers);
    taken
}

/// The request's host: `:authority` (HTTP/2) or `Host` (`sent`), lowercase, without the port.
pub(super) fn request_host(uri: &Uri, sent: Option<&HeaderValue>) -> String {
    let raw = uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| sent.and_then(|h| h.to_str().ok()))
        .unwrap_or_default();
    let without_port = match raw.find(']') {
        Some(end) => &raw[..=end], // [v6]:port
        None => match raw.rsplit_once(':') {
            Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => raw,
        },
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

/// The host the client asked for as it sent it: its `Host` (`sent`), or the authority of an
/// HTTP/2 request; the normalised `host` when neither is usable. The `Host` sent upstream
/// (as nginx's `proxy_set_header Host $host` does) and `X-Forwarded-Host`.
pub(super) fn asked_host(sent: Option<&HeaderValue>, uri: &Uri, host: &str) -> Option<HeaderValue> {
    sent.cloned()
        .or_else(|| HeaderValue::from_str(uri.authority()?.as_str()).ok())
        .or_else(|| HeaderValue::from_str(host).ok())
}

/// `HTTP/1.1`, `HTTP/2`, ... for the access log.
pub(super) fn version_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP",
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
