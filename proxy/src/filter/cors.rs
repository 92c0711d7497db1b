//! The `CORS` filter (the Gateway API's `HTTPCORSFilter`). Unlike the other filters it acts
//! before the route's authentication, not at the forward step: a browser sends its preflight
//! (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) without credentials, so the
//! gateway answers it itself ([`preflight`]); and every other response of the route, the
//! gateway's own refusals included, gets the headers the policy grants the request's origin
//! ([`reply`]), so a script can read a 401 or a 429 too.
//!
//! The route's policy is the only one: `Access-Control-*` headers a backend sets on a route
//! with this filter are removed. An allowed origin is echoed, never answered with `*`, so the
//! answer is right whether or not the request carries credentials; `Vary: Origin` says so to
//! caches. A policy's `*` for methods or headers is answered with what the preflight asked
//! for: a browser never takes `*` to cover `Authorization`, nor any `*` with credentials.
//! Only an origin as a browser writes it is allowed (`scheme://host[:port]`, one `Origin`
//! field); the opaque origin `null` (sandboxed frames, local files) never is: a wildcard
//! policy with credentials would otherwise hand any sandboxed page a user's session.

use std::net::Ipv6Addr;

use bytes::Bytes;
use http::{
    header::{self, HeaderMap, HeaderName, HeaderValue},
    Method, Response, StatusCode,
};
use weir_api::model::{AllowedOrigin, Cors};
use weir_http::body::{full, Body};

const REQUEST_METHOD: HeaderName = header::ACCESS_CONTROL_REQUEST_METHOD;
const REQUEST_HEADERS: HeaderName = header::ACCESS_CONTROL_REQUEST_HEADERS;

/// The response headers this filter owns.
const OWNED: [HeaderName; 6] = [
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::ACCESS_CONTROL_MAX_AGE,
];

/// When the request is a preflight (`OPTIONS` with `Origin` and a valid
/// `Access-Control-Request-Method`), the method it asks about.
pub fn asked_method(method: &Method, headers: &HeaderMap) -> Option<Method> {
    if method != Method::OPTIONS || !headers.contains_key(header::ORIGIN) {
        return None;
    }
    Method::from_bytes(headers.get(REQUEST_METHOD)?.as_bytes()).ok()
}

/// The answer to a preflight request (see [`asked_method`]): 200 with the policy's headers
/// for an allowed origin, 200 without them for another (the browser then refuses the
/// request).
pub fn preflight(c: &Cors, headers: &HeaderMap) -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::OK;
    let out = response.headers_mut();
    out.insert(
        header::VARY,
        HeaderValue::from_static(
            "origin, access-control-request-method, access-control-request-headers",
        ),
    );
    let Some(origin) = origin(c, headers) else {
        return response;
    };
    grant(c, origin, out);
    // `*` answered with what was asked for (see the module's notes).
    let asked = |name: &HeaderName| headers.get(name).filter(|v| !v.is_empty()).cloned();
    let methods = match c.any_method {
        true => asked(&REQUEST_METHOD),
        false => list(&c.methods),
    };
    let allowed_headers = match c.any_header {
        true => asked(&REQUEST_HEADERS),
        false => list(&c.headers),
    };
    if let Some(v) = methods {
        out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
    }
    if let Some(v) = allowed_headers {
        out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    out.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(c.max_age));
    response
}

/// What the response to a request that is not a preflight gets: the policy's headers when its
/// origin is allowed, and in any case none of the backend's.
#[derive(Debug)]
pub struct Reply {
    origin: Option<HeaderValue>,
}

/// The [`Reply`] for a request with these headers.
pub fn reply(c: &Cors, headers: &HeaderMap) -> Reply {
    Reply {
        origin: origin(c, headers).cloned(),
    }
}

/// The request's origin, when it sent exactly one and the policy allows it.
fn origin<'h>(c: &Cors, headers: &'h HeaderMap) -> Option<&'h HeaderValue> {
    let mut all = headers.get_all(header::ORIGIN).iter();
    let (Some(origin), None) = (all.next(), all.next()) else {
        return None;
    };
    allowed(c, origin).then_some(origin)
}

impl Reply {
    /// Sets the response's `Access-Control-*` headers as the policy `c` says.
    pub fn apply(&self, c: &Cors, out: &mut HeaderMap) {
        for name in OWNED {
            out.remove(name);
        }
        out.append(header::VARY, HeaderValue::from_static("origin"));
        if let Some(origin) = &self.origin {
            grant(c, origin, out);
        }
    }
}

/// The headers every answer to an allowed origin carries.
fn grant(c: &Cors, origin: &HeaderValue, out: &mut HeaderMap) {
    out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    if c.credentials {
        out.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    // `*` exposes every header only to a request without credentials.
    let expose = match (c.expose_any, c.credentials) {
        (true, false) => Some(HeaderValue::from_static("*")),
        _ => list(&c.expose),
    };
    if let Some(v) = expose {
        out.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
    }
}

fn list(items: &[String]) -> Option<HeaderValue> {
    if items.is_empty() {
        return None;
    }
    HeaderValue::from_str(&items.join(", ")).ok()
}

/// Whether the policy allows `origin` (`scheme://host[:port]`, as a browser sends it).
pub fn allowed(c: &Cors, origin: &HeaderValue) -> bool {
    let Some((scheme, host, port)) = origin.to_str().ok().and_then(parse) else {
        return false;
    };
    c.any_origin
        || c.origins
            .iter()
            .any(|o| o.scheme == scheme && o.port == port && host_matches(o, &host))
}

fn host_matches(o: &AllowedOrigin, host: &str) -> bool {
    match o.host.strip_prefix('*') {
        // `*` alone: any host.
        Some("") => true,
        // `*.example.com`: one label or more before `.example.com`.
        Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        None => o.host == host,
    }
}

/// `scheme://host[:port]` → (scheme, host, port) as a browser serialises an origin: the host
/// a name (letters, digits, `-`, dot-separated labels) or a bracketed IPv6 address (made
/// canonical), the port digits without a leading zero; lowercase, the default port made
/// explicit. `None` for anything else (`null`, a path, another scheme, a trailing dot).
fn parse(origin: &str) -> Option<(String, String, u16)> {
    let (scheme, rest) = origin.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (rest, None),
    };
    let port = match port {
        None => default,
        Some(p)
            if !p.is_empty() && !p.starts_with('0') && p.bytes().all(|b| b.is_ascii_digit()) =>
        {
            p.parse().ok()?
        }
        Some(_) => return None,
    };
    Some((scheme, canonical_host(host)?, port))
}

/// A host as origins are compared: a lowercase name, or a bracketed IPv6 address in its
/// canonical form. (Also the form a policy's origins are kept in.)
pub fn canonical_host(host: &str) -> Option<String> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().ok().map(|a| format!("[{a}]"));
    }
    let label =
        |l: &str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    host.split('.')
        .all(label)
        .then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    fn policy(origins: &[(&str, &str, u16)]) -> Cors {
        Cors {
            origins: origins
                .iter()
                .map(|&(scheme, host, port)| AllowedOrigin {
                    scheme: scheme.into(),
                    host: host.into(),
                    port,
                })
                .collect(),
            max_age: 5,
            ..Cors::default()
        }
    }

    #[test]
    fn a_wildcard_host_matches_labels_to_its_left_and_nothing_else() {
        let c = policy(&[("https", "*.bar.com", 443), ("https", "www.foo.com", 443)]);
        for ok in [
            "https://www.bar.com",
            "https://xpto.www.bar.com",
            "HTTPS://WWW.BAR.COM",
            "https://www.bar.com:443",
            "https://www.foo.com",
        ] {
            assert!(allowed(&c, &origin(ok)), "{ok}");
        }
        for refused in [
            "https://bar.com",
            "https://evilbar.com",
            "https://www.bar.com.evil.net",
            "https://www.bar.com:8443",
            "http://www.bar.com",
            "https://www.foo.com.evil.net",
            "https://evil.net/https://www.foo.com",
            "https://user@www.foo.com",
            "https://www.foo.com.",
            "https://a..bar.com",
            "https://a,b.bar.com",
            "https://www.foo.com:0443",
            "https://www.foo.com:+443",
            "https://www.foo.com:",
            "null",
            "",
            "www.foo.com",
            "https://",
        ] {
            assert!(!allowed(&c, &origin(refused)), "{refused}");
        }
    }

    #[test]
    fn ipv6_origins_compare_in_canonical_form_and_two_origins_are_none() {
        let c = policy(&[("http", "[::1]", 8080)]);
        assert!(allowed(&c, &origin("http://[0:0::1]:8080")));
        assert!(!allowed(&c, &origin("http://[::2]:8080")));
        let mut headers = HeaderMap::new();
        headers.append(header::ORIGIN, origin("http://[::1]:8080"));
        assert!(reply(&c, &headers).origin.is_some());
        headers.append(header::ORIGIN, origin("http://[::1]:8080"));
        assert!(reply(&c, &headers).origin.is_none(), "two Origin fields");
    }

    #[test]
    fn any_origin_is_still_a_real_origin_and_never_null() {
        let c = Cors {
            any_origin: true,
            credentials: true,
            ..policy(&[])
        };
        assert!(allowed(&c, &origin("https://foobar.com:12345")));
        assert!(!allowed(&c, &origin("null")));
        assert!(!allowed(&c, &origin("file://")));
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, origin("https://foobar.com"));
        let mut out = HeaderMap::new();
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin("*"));
        reply(&c, &headers).apply(&c, &mut out);
        assert_eq!(
            out[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://foobar.com"
        );
        assert_eq!(out[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    }

    #[test]
    fn with_credentials_wildcards_become_what_the_request_asked_for() {
        let c = Cors {
            any_origin: true,
            any_method: true,
            any_header: true,
            credentials: true,
            ..policy(&[])
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, origin("https://other.foo.com"));
        headers.insert(REQUEST_METHOD, origin("PUT"));
        headers.insert(REQUEST_HEADERS, origin("x-header-1, x-header-2"));
        assert_eq!(asked_method(&Method::OPTIONS, &headers), Some(Method::PUT));
        assert_eq!(asked_method(&Method::GET, &headers), None);
        let answer = preflight(&c, &headers);
        let h = answer.headers();
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_METHODS], "PUT");
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "x-header-1, x-header-2"
        );
        // Without credentials too: a browser never takes `*` to cover `Authorization`.
        let c = Cors {
            credentials: false,
            ..c
        };
        headers.insert(REQUEST_HEADERS, origin("authorization"));
        let answer = preflight(&c, &headers);
        let h = answer.headers();
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_METHODS], "PUT");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_HEADERS], "authorization");
        assert!(h.get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
    }
}
