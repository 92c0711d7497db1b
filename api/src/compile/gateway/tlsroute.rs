//! TLSRoute: connections on a Gateway's `TLS` listeners, chosen by the SNI name of their
//! ClientHello, carried to a Service byte for byte. On a `Passthrough` listener the client's
//! TLS goes through unopened (the backend holds the certificate); on a `Terminate` listener
//! the gateway ends it with the listener's certificate and carries what is inside.
//!
//! Each route becomes a [`StreamRoute`] per way its listeners take it (`tlsroute:ns/name`).
//! Two routes that claim the same name are both kept; the proxy serves the older one (then
//! `namespace/name`), as the Gateway API orders conflicting routes, so a newer route in another
//! namespace cannot take a name from the one that had it.

use gateway_api::apis::standard::tlsroutes::TlsRoute;

/// TLSRoutes take their names on any TLS listener that names them (no listener isolation).
static NONE: Vec<crate::model::HostMatch> = Vec::new();

use super::{
    attachments, by_listener,
    rules::{weighted_service, BackendTarget},
    Gateway, HttpRoute, Taken,
};
use crate::{
    compile::{created, Context},
    error::Location,
    model::{RouteOrder, StreamRoute},
    objects::Object,
};

pub(super) fn compile_all(cx: &mut Context<'_>, gateways: &[&Gateway]) {
    let routes: Vec<(&TlsRoute, &Location)> = cx
        .iter()
        .filter_map(|(o, l)| match o {
            Object::TlsRoute(r) => Some((r, l)),
            _ => None,
        })
        .collect();
    for (route, location) in routes {
        let key = Object::TlsRoute(route.clone()).key();
        // An SNI name is a DNS name (RFC 6066 allows no address), and a TLSRoute names its
        // own (v1 requires one): a route for every name would take the whole TLS port.
        let mut ok = true;
        if route.spec.hostnames.is_empty() {
            let message = "a TLSRoute needs at least one hostname (the SNI names it takes)";
            cx.error(location, &key, "spec.hostnames", message);
            continue;
        }
        for (i, host) in route.spec.hostnames.iter().enumerate() {
            if host.parse::<std::net::IpAddr>().is_ok() {
                let field = format!("spec.hostnames[{i}]");
                cx.error(
                    location,
                    &key,
                    field,
                    format!("{host:?} is an IP address; an SNI name is a DNS name"),
                );
                ok = false;
            }
        }
        if !ok {
            continue;
        }
        let Some(parents) = as_http_route(route) else {
            cx.error(
                location,
                &key,
                "spec.parentRefs",
                "not a list of parent references",
            );
            continue;
        };
        let attached = attachments(cx, gateways, &parents, "TLSRoute", &key, location);
        if attached.is_empty() {
            continue;
        }
        let mut backends = Vec::new();
        for (r, rule) in route.spec.rules.iter().enumerate() {
            for (i, backend) in rule.backend_refs.iter().enumerate() {
                let field = format!("spec.rules[{r}].backendRefs[{i}]");
                let target = BackendTarget {
                    group: backend.group.as_deref(),
                    kind: backend.kind.as_deref(),
                    namespace: backend.namespace.as_deref(),
                    name: &backend.name,
                    port: backend.port,
                    weight: backend.weight,
                };
                match weighted_service(cx, &key, location, &field, target) {
                    Some(backend) => backends.push(backend),
                    None => ok = false,
                }
            }
        }
        if !ok {
            continue;
        }
        for terminate in [false, true] {
            let taken = if terminate {
                Taken::Terminate
            } else {
                Taken::Passthrough
            };
            let of_mode = attached
                .iter()
                .filter(|a| a.taken == taken)
                .map(|a| (&a.host, &a.listener, &NONE));
            for (hosts, _, listeners) in by_listener(of_mode) {
                cx.streams.push(std::sync::Arc::new(StreamRoute {
                    name: format!("tlsroute:{}/{}", key.namespace, key.name).into(),
                    hosts,
                    listeners,
                    terminate,
                    order: RouteOrder {
                        created: created(&route.metadata),
                        object: format!("{}/{}", key.namespace, key.name),
                        rule: 0,
                        matcher: 0,
                    },
                    backends: backends.clone(),
                }));
            }
        }
    }
}

/// The route's hostnames and parents in an HTTPRoute, which the attachment code reads.
fn as_http_route(route: &TlsRoute) -> Option<HttpRoute> {
    let spec = serde_json::json!({
        "hostnames": route.spec.hostnames,
        "parentRefs": route.spec.parent_refs,
    });
    let http = serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": route.metadata,
        "spec": spec,
    });
    serde_json::from_value(http).ok()
}
