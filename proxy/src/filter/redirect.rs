//! `RequestRedirect`: the route answers with a redirect instead of forwarding.

use http::{header, request::Parts, HeaderValue, Response, StatusCode};
use weir_api::model::{Redirect, Route};

use super::rewrite::rewrite_path;
use weir_http::body::{self, Body};

/// The redirect for a request to `host` and the (normalised) `path`, that came over TLS or
/// not (`tls`) to the Gateway listener port `listener` (`None`: not through a Gateway
/// listener, as for an Ingress).
pub fn redirect(
    r: &Redirect,
    route: &Route,
    host: &str,
    path: &str,
    parts: &Parts,
    tls: bool,
    listener: Option<u16>,
) -> Response<Body> {
    let scheme = r
        .scheme
        .as_deref()
        .unwrap_or(if tls { "https" } else { "http" });
    // No port given: a scheme change goes to the scheme's well-known port; otherwise the
    // request's own port, the listener's (as clients reach it) or else the one it named.
    let port = r.port.or_else(|| match r.scheme {
        Some(_) => None,
        None => listener.or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.rsplit_once(':'))
                .and_then(|(_, p)| p.parse::<u16>().ok())
        }),
    });
    let port = match (scheme, port) {
        ("http", Some(80)) | ("https", Some(443)) | (_, None) => String::new(),
        (_, Some(p)) => format!(":{p}"),
    };
    let target_path = match &r.path {
        Some(p) => rewrite_path(p, route, path),
        None => path.to_string(),
    };
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let location = format!(
        "{scheme}://{}{port}{target_path}{query}",
        r.hostname.as_deref().unwrap_or(host)
    );
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::FOUND);
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}
