//! HTTPRoute filters as one ordered chain: [`request`] runs a rule's filters in the order the
//! route lists them, each on the request as the ones before it left it; [`response`] runs the
//! response halves in the same order. This is the one extension point: a new filter (external
//! auth, a cache) is a [`Filter`] variant in the model, a module here, and one arm in
//! each of the two matches below.
//!
//! | filter                   | module              | request                 | response |
//! |--------------------------|---------------------|-------------------------|----------|
//! | `RequestHeaderModifier`  | `crate::headers`    | set, add, remove        |          |
//! | `URLRewrite`             | [`rewrite`]         | `Host` and path         |          |
//! | `RequestMirror`          | [`mirror`]          | a copy, sent with the body once it is known | |
//! | `ResponseHeaderModifier` | `crate::headers`    |                         | set, add, remove |
//! | `CORS`                   | [`cors`]            | before authentication: a preflight answered | every response, refusals too |
//!
//! A `RequestRedirect` answers instead of forwarding: it is the route's action, made by
//! [`redirect`]. `CORS` is in the chain for its place in the rule, but acts outside it (see
//! [`cors`]): the role calls it right after routing and on its final response.

pub mod cors;
pub mod mirror;
pub mod redirect;
pub mod rewrite;

use std::{collections::HashMap, sync::Arc};

use http::{request, response};
use weir_api::model::{Filter, Route};

use crate::{balance::Pool, headers};
use weir_http::error::ProxyError;

pub use mirror::Mirrored;
pub use redirect::redirect;

/// What the filters of one request read, and what they leave for the forward path.
pub struct Context<'a> {
    /// The route that matched.
    pub route: &'a Route,
    /// The running clusters (mirrors send to theirs).
    pub pools: &'a HashMap<String, Arc<Pool>>,
    /// Copies of the request to send once its body is known.
    pub mirrors: Vec<Mirrored>,
}

/// Runs the request half of `filters`, in order.
pub fn request(
    filters: &[Filter],
    cx: &mut Context<'_>,
    parts: &mut request::Parts,
) -> Result<(), ProxyError> {
    for filter in filters {
        match filter {
            Filter::RequestHeaderModifier(m) => headers::modify(&mut parts.headers, m),
            Filter::UrlRewrite(r) => rewrite::apply(r, cx.route, parts)?,
            Filter::RequestMirror(m) => mirror::copy(m, cx, parts),
            Filter::ResponseHeaderModifier(_) | Filter::Cors(_) => {}
        }
    }
    Ok(())
}

/// Runs the response half of `filters`, in order.
pub fn response(filters: &[Filter], parts: &mut response::Parts) {
    for filter in filters {
        match filter {
            Filter::ResponseHeaderModifier(m) => headers::modify(&mut parts.headers, m),
            Filter::RequestHeaderModifier(_)
            | Filter::UrlRewrite(_)
            | Filter::RequestMirror(_)
            | Filter::Cors(_) => {}
        }
    }
}
