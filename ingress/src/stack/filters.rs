//! The HTTPRoute filters that act at request time: RequestMirror, RequestRedirect and the
//! path half of URLRewrite.

use http::{header, request::Parts, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use weir_api::model::{Forward, PathMatch, PathRewrite, Redirect, Route};
use weir_proxy::{
    body::{self, Body},
    config::Active,
    resilience::retry::Replay,
};

use super::Gateway;

/// Sends copies of the request to the route's mirrors, fire and forget. A streamed body is
/// not copied: mirrors then get the request without it.
pub(super) fn mirror(
    gw: &Gateway,
    active: &Active,
    f: &Forward,
    parts: &Parts,
    path_and_query: &str,
    body: &Replay,
) {
    let bytes = match body {
        Replay::Bytes(b) => Some(b),
        Replay::Once(_) => None,
    };
    for m in &f.mirrors {
        if fastrand::u32(..1_000_000) >= m.per_million {
            continue;
        }
        let Some(pool) = active.pools.get(&m.cluster) else {
            continue;
        };
        let Ok(endpoint) = pool.pick(&[], None) else {
            continue;
        };
        let Ok(uri) = Uri::builder()
            .scheme("http")
            .authority(endpoint.authority.clone())
            .path_and_query(path_and_query)
            .build()
        else {
            continue;
        };
        let mut copy = Request::from_parts(
            clone_parts(parts),
            body::full(bytes.cloned().unwrap_or_default()),
        );
        *copy.uri_mut() = uri;
        if let Some(expected) = gw.upstream.expected(&pool.cluster.name, endpoint.addr) {
            copy.extensions_mut().insert(expected);
        }
        if bytes.is_none() {
            copy.headers_mut().remove(header::CONTENT_LENGTH);
        }
        let (upstream, protocol) = (gw.upstream.clone(), pool.cluster.protocol);
        tokio::spawn(async move {
            let sent = tokio::time::timeout(std::time::Duration::from_secs(30), async {
                if let Ok(response) = upstream.send(protocol, copy).await {
                    let _ = response.into_body().collect().await;
                }
            });
            let _ = sent.await;
        });
    }
}

pub(super) fn clone_parts(parts: &Parts) -> Parts {
    let (mut copy, ()) = Request::new(()).into_parts();
    copy.method = parts.method.clone();
    copy.uri = parts.uri.clone();
    copy.version = parts.version;
    copy.headers = parts.headers.clone();
    copy
}

/// Builds a `RequestRedirect` response.
pub(super) fn redirect(
    r: &Redirect,
    route: &Route,
    host: &str,
    path: &str,
    parts: &Parts,
) -> Response<Body> {
    let request_port = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.rsplit_once(':'))
        .and_then(|(_, p)| p.parse::<u16>().ok());
    let scheme = r.scheme.as_deref().unwrap_or("http");
    // A scheme change without a port goes to the scheme's well-known port.
    let port = r.port.or(if r.scheme.is_some() {
        None
    } else {
        request_port
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

/// Applies a path rewrite: the whole path, or the part the route's prefix matched.
pub(super) fn rewrite_path(rewrite: &PathRewrite, route: &Route, path: &str) -> String {
    match rewrite {
        PathRewrite::Full(p) => p.clone(),
        PathRewrite::Prefix(replacement) => {
            let prefix = match &route.matcher.path {
                PathMatch::Prefix(p) if p != "/" => p.as_str(),
                _ => "",
            };
            let rest = path.get(prefix.len()..).unwrap_or_default();
            let joined = match (replacement.ends_with('/'), rest.starts_with('/')) {
                (true, true) => format!("{}{rest}", replacement.trim_end_matches('/')),
                (false, false) if !rest.is_empty() => format!("{replacement}/{rest}"),
                _ => format!("{replacement}{rest}"),
            };
            if joined.is_empty() {
                "/".to_string()
            } else {
                joined
            }
        }
    }
}
