//! TCPRoute: connections on a Gateway's `TCP` listeners carried to a Service byte for byte, as
//! they come (no TLS, no HTTP, no name to choose by); on a `TLS` listener, the connections for
//! the listener's hostname, passed through or carried after the gateway's TLS as its mode says.
//!
//! Each route becomes a `StreamRoute` per way its listeners take it (`tcproute:ns/name`): on a
//! TCP listener it takes every connection (any name), on a TLS one the listener's hostname.
//! Two routes on one listener are both attached; the older one (then `namespace/name`) carries
//! the connections, as the Gateway API orders conflicting routes, so a newer route cannot take
//! a port from the route that had it.

use gateway_api::apis::experimental::tcproutes::TcpRoute;

use super::{rules::target_of, tlsroute::compile_stream, Gateway, HttpRoute};
use crate::{compile::Context, error::Location, objects::Object};

pub(super) fn compile_all(cx: &mut Context<'_>, gateways: &[&Gateway]) {
    let routes: Vec<(&TcpRoute, &Location)> = cx
        .iter()
        .filter_map(|(o, l)| match o {
            Object::TcpRoute(r) => Some((r, l)),
            _ => None,
        })
        .collect();
    for (route, location) in routes {
        let key = Object::TcpRoute(route.clone()).key();
        let Some(parents) = as_http_route(route) else {
            let message = "not a list of parent references";
            cx.error(location, &key, "spec.parentRefs", message);
            continue;
        };
        let refs = route.spec.rules.iter().enumerate().flat_map(|(r, rule)| {
            let refs = rule.backend_refs.iter().enumerate();
            refs.map(move |(i, b)| (r, i, target_of!(b)))
        });
        let parents = (&parents, &route.metadata);
        compile_stream(cx, gateways, "TCPRoute", (&key, location), parents, refs);
    }
}

/// The route's parents in an HTTPRoute without hostnames, which the attachment code reads.
fn as_http_route(route: &TcpRoute) -> Option<HttpRoute> {
    let http = serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": route.metadata,
        "spec": {"parentRefs": route.spec.parent_refs},
    });
    serde_json::from_value(http).ok()
}
