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

/// Stream routes take their names on any listener that names them (no listener isolation).
static NONE: Vec<HostMatch> = Vec::new();

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{
    attach::Attachment,
    attachments, by_listener,
    rules::{target_of, weighted_service, BackendTarget},
    Gateway, HttpRoute, Taken,
};
use crate::{
    compile::{created, Context},
    error::Location,
    model::{HostMatch, RouteOrder, StreamRoute, WeightedBackend},
    objects::{Object, ObjectKey},
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
        let refs = route.spec.rules.iter().enumerate().flat_map(|(r, rule)| {
            let refs = rule.backend_refs.iter().enumerate();
            refs.map(move |(i, b)| (r, i, target_of!(b)))
        });
        let parents = (&parents, &route.metadata);
        compile_stream(cx, gateways, "TLSRoute", (&key, location), parents, refs);
    }
}

/// A route of `kind` carried as bytes (TLSRoute, TCPRoute), given its parents (as an
/// HTTPRoute's), its metadata and its `spec.rules[r].backendRefs[i]`: attached to the
/// listeners that take it, its backends resolved (none when one cannot be had), a
/// [`StreamRoute`] per way its listeners take it.
pub(super) fn compile_stream<'b>(
    cx: &mut Context<'_>,
    gateways: &[&Gateway],
    kind: &str,
    (key, location): (&ObjectKey, &Location),
    (parents, metadata): (&HttpRoute, &ObjectMeta),
    refs: impl Iterator<Item = (usize, usize, BackendTarget<'b>)>,
) {
    let attached = attachments(cx, gateways, parents, kind, key, location);
    if attached.is_empty() {
        return;
    }
    let Some(backends) = stream_backends(cx, key, location, refs) else {
        return;
    };
    push_streams(
        cx,
        &kind.to_lowercase(),
        key,
        metadata,
        &attached,
        &backends,
    );
}

/// The weighted backends of a stream route's `spec.rules[r].backendRefs[i]`, or `None` when
/// one cannot be had (its error said).
fn stream_backends<'b>(
    cx: &mut Context<'_>,
    key: &ObjectKey,
    location: &Location,
    refs: impl Iterator<Item = (usize, usize, BackendTarget<'b>)>,
) -> Option<Vec<WeightedBackend>> {
    let (mut backends, mut ok) = (Vec::new(), true);
    for (r, i, target) in refs {
        let field = format!("spec.rules[{r}].backendRefs[{i}]");
        match weighted_service(cx, key, location, &field, target) {
            Some(backend) => backends.push(backend),
            None => ok = false,
        }
    }
    ok.then_some(backends)
}

/// A [`StreamRoute`] (`{kind}:ns/name`) per way the listeners in `attached` take the route:
/// passed through, after the gateway's TLS, or as a TCP listener's (every connection).
fn push_streams(
    cx: &mut Context<'_>,
    kind: &str,
    key: &ObjectKey,
    metadata: &ObjectMeta,
    attached: &[Attachment],
    backends: &[WeightedBackend],
) {
    for taken in [Taken::Passthrough, Taken::Terminate, Taken::Tcp] {
        let of_kind = attached
            .iter()
            .filter(|a| a.taken == taken)
            .map(|a| (&a.host, &a.listener, &NONE));
        for (hosts, _, listeners) in by_listener(of_kind) {
            // A TCP listener has no names: its route takes every connection.
            let hosts = match taken {
                Taken::Tcp => vec![HostMatch::Any],
                _ => hosts,
            };
            cx.streams.push(std::sync::Arc::new(StreamRoute {
                name: format!("{kind}:{}/{}", key.namespace, key.name).into(),
                hosts,
                listeners,
                terminate: taken == Taken::Terminate,
                order: RouteOrder {
                    created: created(metadata),
                    object: format!("{}/{}", key.namespace, key.name),
                    rule: 0,
                    matcher: 0,
                },
                backends: backends.to_vec(),
            }));
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
