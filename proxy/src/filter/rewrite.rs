//! `URLRewrite`: the `Host` and the path the backend is asked for.

use http::{header, request::Parts, HeaderValue, Uri};
use weir_api::model::{PathMatch, PathRewrite, Route, UrlRewrite};

use weir_http::error::ProxyError;

/// Rewrites the request's `Host` and path (the path as matched: normalised, and as the filters
/// before this one left it). The query stays.
pub fn apply(r: &UrlRewrite, route: &Route, parts: &mut Parts) -> Result<(), ProxyError> {
    if let Some(host) = r.hostname.as_deref() {
        let host = HeaderValue::from_str(host).map_err(|_| ProxyError::BadRequest)?;
        parts.headers.insert(header::HOST, host);
    }
    if let Some(p) = &r.path {
        let path = rewrite_path(p, route, parts.uri.path());
        let path_and_query = match parts.uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        parts.uri = Uri::try_from(path_and_query).map_err(|_| ProxyError::BadRequest)?;
    }
    Ok(())
}

/// Applies a path rewrite: the whole path, or the part the route's prefix matched.
pub fn rewrite_path(rewrite: &PathRewrite, route: &Route, path: &str) -> String {
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
