//! Gateway API → routes: `Gateway`s of class `weir`, the `HTTPRoute`s attached to their
//! listeners, hostnames intersected with the listener's, matches, filters, weighted backends,
//! timeouts, and `ReferenceGrant` for backends in other namespaces.

use std::{collections::BTreeMap, sync::Arc};

use gateway_api::apis::{
    // HTTPRoute as the experimental channel has it: `retry` is read (GEP-1731), and fields
    // Weir does not serve (`sessionPersistence`, the ExternalAuth filter) are refused by name
    // rather than dropped unseen.
    experimental::httproutes::{
        HttpRoute, HttpRouteRules, HttpRouteRulesFilters, HttpRouteRulesFiltersCors,
        HttpRouteRulesFiltersRequestRedirectPathType as RedirectPathType,
        HttpRouteRulesFiltersType as FilterType,
        HttpRouteRulesFiltersUrlRewritePathType as RewritePathType, HttpRouteRulesMatches,
        HttpRouteRulesMatchesHeadersType as HeaderType, HttpRouteRulesMatchesPathType as PathType,
        HttpRouteRulesMatchesQueryParamsType as QueryType,
    },
    standard::gateways::{
        Gateway, GatewayListeners, GatewayListenersAllowedRoutesNamespacesFrom as From,
        GatewayListenersTlsMode as TlsMode,
    },
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::{
    backends::PortRef, created, ingress::host_match, max_body, normalise_prefix, upgrades, Context,
    GATEWAY_CLASS,
};
use crate::{
    duration::parse_duration,
    error::Location,
    model::{
        AllowedOrigin, Cors, Filter, Forward, GatewayListener, HeaderModifier, HostMatch,
        ListenerRef, Mirror, PathMatch, PathRewrite, Protocol, Redirect, Route, RouteAction,
        RouteMatch, RouteOrder, StringMatch, Timeouts, UrlRewrite, ValueMatch, WeightedBackend,
    },
    objects::{Object, ObjectKey},
};

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// Why a route attached to none of its parents, as the Gateway API's `Accepted` reasons name
/// it (they open the compile's warning, for the controller's status).
pub const NO_MATCHING_PARENT: &str = "NoMatchingParent";
/// See [`NO_MATCHING_PARENT`].
pub const NOT_ALLOWED_BY_LISTENERS: &str = "NotAllowedByListeners";
/// See [`NO_MATCHING_PARENT`].
pub const NO_MATCHING_LISTENER_HOSTNAME: &str = "NoMatchingListenerHostname";

/// The field a Gateway is refused for when it names parameters (`InvalidParameters`).
pub const PARAMETERS_REF_FIELD: &str = "spec.infrastructure.parametersRef";
/// The field of a Gateway asking for addresses, which Weir does not take.
pub const ADDRESSES_FIELD: &str = "spec.addresses";

/// Whether two listener hostnames (`foo.example.com`, `*.example.com`) have a name in common:
/// their TLS configurations then overlap (`OverlappingTLSConfig`). Unparsable ones do not.
pub fn hostnames_overlap(a: &str, b: &str) -> bool {
    match (host_match(a), host_match(b)) {
        (Ok(a), Ok(b)) => intersect(&a, &b).is_some(),
        _ => false,
    }
}

/// The Gateways of class `weir` among `objects`, each with the listeners of the ListenerSets
/// it takes after its own ([`listener_sets::merged`]).
pub(in crate::compile) fn weir_gateways(objects: &crate::Objects) -> Vec<Gateway> {
    objects
        .iter()
        .filter_map(|(o, _)| match o {
            Object::Gateway(g) if g.spec.gateway_class_name == GATEWAY_CLASS => {
                Some(listener_sets::merged(objects, g))
            }
            _ => None,
        })
        .collect()
}

pub(super) fn compile_all(cx: &mut Context<'_>) {
    let merged = weir_gateways(cx.objects);
    let gateways: Vec<&Gateway> = merged.iter().collect();
    // Weir's Gateways take no parameters: one that names some is refused (its status says
    // `InvalidParameters`), not served as if they were not there.
    // Nor addresses: a Gateway's address is its own Service's (or the install's), and one
    // asking for another is refused (`UnsupportedAddress`), not served somewhere else.
    let unsupported: Vec<(ObjectKey, Location, &str, &str)> = cx
        .iter()
        .filter_map(|(o, l)| match o {
            Object::Gateway(g) if g.spec.gateway_class_name == GATEWAY_CLASS => {
                let parameters = g
                    .spec
                    .infrastructure
                    .as_ref()
                    .is_some_and(|i| i.parameters_ref.is_some());
                let addresses = g.spec.addresses.as_ref().is_some_and(|a| !a.is_empty());
                match (parameters, addresses) {
                    (true, _) => Some((
                        o.key(),
                        l.clone(),
                        PARAMETERS_REF_FIELD,
                        "Weir's Gateways take no parameters",
                    )),
                    (false, true) => Some((
                        o.key(),
                        l.clone(),
                        ADDRESSES_FIELD,
                        "Weir gives each Gateway its address (its Service's): addresses cannot be asked for",
                    )),
                    (false, false) => None,
                }
            }
            _ => None,
        })
        .collect();
    for (key, location, field, why) in unsupported {
        cx.error(&location, &key, field, why);
    }
    check_listener_names(cx);
    cx.listeners = served_listeners(cx.objects, &gateways);
    let routes: Vec<(&HttpRoute, &Location)> = cx
        .iter()
        .filter_map(|(o, l)| match o {
            Object::HttpRoute(r) => Some((r, l)),
            _ => None,
        })
        .collect();
    for (route, location) in routes {
        let key = Object::HttpRoute(route.clone()).key();
        for attached in attached_hosts(cx, &gateways, route, "HTTPRoute", &key, location) {
            compile_route(cx, route, "httproute", &key, location, attached);
        }
    }
    let grpc: Vec<(Object, Location)> = cx
        .iter()
        .filter(|(o, _)| matches!(o, Object::GrpcRoute(_)))
        .map(|(o, l)| (o.clone(), l.clone()))
        .collect();
    tlsroute::compile_all(cx, &gateways);
    tcproute::compile_all(cx, &gateways);
    for (object, location) in &grpc {
        let Object::GrpcRoute(route) = object else {
            continue;
        };
        let key = object.key();
        let route = match grpc::as_http_route(route) {
            Ok(route) => route,
            Err((field, message)) => {
                cx.error(location, &key, field, message);
                continue;
            }
        };
        let (first, errors) = (cx.routes.len(), cx.errors.len());
        for attached in attached_hosts(cx, &gateways, &route, "GRPCRoute", &key, location) {
            compile_route(cx, &route, "grpcroute", &key, location, attached);
        }
        // A method match was written as `method`, not as the path it became.
        for error in &mut cx.errors[errors..] {
            if error.field.contains("].path") {
                error.field = error
                    .field
                    .replace("].path.value", "].method")
                    .replace("].path", "].method");
            }
        }
        // gRPC is HTTP/2: its backends (and mirrors) are spoken to so, through clusters of
        // their own when their Service port speaks HTTP/1.1 to the HTTPRoutes and Ingresses
        // that use it too (`ns/svc:port+h2c`), which keep theirs as they are.
        for i in first..cx.routes.len() {
            let mut route = (*cx.routes[i]).clone();
            if let RouteAction::Forward(f) = &mut route.action {
                let names = f.backends.iter_mut().map(|b| &mut b.cluster).chain(
                    f.filters.iter_mut().filter_map(|filter| match filter {
                        Filter::RequestMirror(m) => Some(&mut m.cluster),
                        _ => None,
                    }),
                );
                for name in names {
                    *name = h2c_cluster(cx, name);
                }
            }
            cx.routes[i] = Arc::new(route);
        }
    }
}

/// Refuses a Gateway or ListenerSet (of a `weir` Gateway) whose listeners' names are not
/// section names or not unique in it: routes, status and conflicts tell listeners apart by
/// name (the API server's schema refuses both; a directory has no schema).
fn check_listener_names(cx: &mut Context<'_>) {
    let valid = |name: &str| {
        !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    };
    let mut found = Vec::new();
    for (object, location) in cx.iter() {
        let names: Vec<String> = match object {
            Object::Gateway(g) if g.spec.gateway_class_name == GATEWAY_CLASS => {
                g.spec.listeners.iter().map(|l| l.name.clone()).collect()
            }
            Object::ListenerSet(set)
                if !matches!(set_parent(cx.objects, set), SetParent::NotOurs) =>
            {
                set.spec.listeners.iter().map(|l| l.name.clone()).collect()
            }
            _ => continue,
        };
        for (i, name) in names.iter().enumerate() {
            let message = if !valid(name) {
                format!("{name:?} is not a section name (lowercase letters, digits, '-' and '.')")
            } else if names[..i].contains(name) {
                format!("{name:?} names another listener of this object too")
            } else {
                continue;
            };
            found.push((location.clone(), object.key(), i, message));
        }
    }
    for (location, key, i, message) in found {
        cx.error(
            &location,
            &key,
            format!("spec.listeners[{i}].name"),
            message,
        );
    }
}

/// The listeners of `objects`' `weir` Gateways that take routes, as a compile of them lists
/// them in its snapshot (for the controller, which plans ports as the gateway does).
pub fn gateway_listeners(objects: &crate::Objects) -> Vec<GatewayListener> {
    let merged = weir_gateways(objects);
    served_listeners(objects, &merged.iter().collect::<Vec<_>>())
}

/// The listeners of `gateways` that take routes: HTTP, HTTPS, TLS and TCP, not conflicted.
fn served_listeners(objects: &crate::Objects, gateways: &[&Gateway]) -> Vec<GatewayListener> {
    let mut served = Vec::new();
    for gateway in gateways {
        let name = format!(
            "{}/{}",
            gateway.metadata.namespace.as_deref().unwrap_or_default(),
            gateway.metadata.name.as_deref().unwrap_or_default()
        );
        for listener in &gateway.spec.listeners {
            let (tls, tcp) = match listener.protocol.as_str() {
                "HTTP" => (false, false),
                "HTTPS" | "TLS" => (true, false),
                "TCP" => (false, true),
                _ => continue,
            };
            let Ok(port) = u16::try_from(listener.port) else {
                continue;
            };
            if port == 0 || listener_conflict(listener, &gateway.spec.listeners).is_some() {
                continue;
            }
            // A ListenerSet's listener is as old as its set: of two sets wanting one new
            // port, the older set has it, whichever Gateway is older.
            let set = set_of(&listener.name).and_then(|(set, _)| {
                let (namespace, name) = set.split_once('/')?;
                let key = ObjectKey {
                    kind: "ListenerSet",
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                };
                match objects.get(&key) {
                    Some((Object::ListenerSet(set), _)) => Some(created(&set.metadata)),
                    _ => None,
                }
            });
            served.push(GatewayListener {
                created: set.unwrap_or_else(|| created(&gateway.metadata)),
                gateway: name.clone(),
                name: listener.name.clone(),
                port,
                tls,
                tcp,
                from_set: set_of(&listener.name).is_some(),
            });
        }
    }
    served.sort();
    served
}

/// The HTTP/2 twin of cluster `name` (itself when it speaks HTTP/2 already).
fn h2c_cluster(cx: &mut Context<'_>, name: &str) -> String {
    let Some(cluster) = cx.clusters.get(name) else {
        return name.to_string();
    };
    if cluster.protocol == Protocol::H2c {
        return name.to_string();
    }
    let twin = format!("{name}+h2c");
    if !cx.clusters.contains_key(&twin) {
        let mut h2c = cluster.clone();
        h2c.name = twin.clone();
        h2c.protocol = Protocol::H2c;
        cx.clusters.insert(twin.clone(), h2c);
    }
    twin
}

fn compile_route(
    cx: &mut Context<'_>,
    route: &HttpRoute,
    prefix: &str,
    key: &ObjectKey,
    location: &Location,
    (hosts, excluded_hosts, listeners): attach::Attached,
) {
    let max_request_body = max_body(cx, &route.metadata, key, location);
    let upgrades = upgrades(cx, &route.metadata, key, location);
    for (r, rule) in route.spec.rules.iter().flatten().enumerate() {
        let field = format!("spec.rules[{r}]");
        let Some(action) = rule_action(cx, rule, key, location, &field) else {
            continue;
        };
        let default_match = [HttpRouteRulesMatches::default()];
        let matches = match rule.matches.as_deref() {
            Some([]) | None => &default_match[..],
            Some(m) => m,
        };
        for (m, matcher) in matches.iter().enumerate() {
            let Some(matcher) =
                route_match(cx, matcher, key, location, &format!("{field}.matches[{m}]"))
            else {
                continue;
            };
            if uses_prefix_rewrite(&action) && !matches!(matcher.path, PathMatch::Prefix(_)) {
                cx.error(
                    location,
                    key,
                    format!("{field}.matches[{m}].path.type"),
                    "ReplacePrefixMatch needs a PathPrefix match",
                );
                continue;
            }
            cx.routes.push(Arc::new(Route {
                name: format!("{prefix}:{}/{}:{r}", key.namespace, key.name).into(),
                hosts: hosts.clone(),
                listeners: listeners.clone(),
                excluded_hosts: excluded_hosts.clone(),
                matcher,
                order: RouteOrder {
                    created: created(&route.metadata),
                    object: format!("{}/{}", key.namespace, key.name),
                    rule: r,
                    matcher: m,
                },
                action: action.clone(),
                max_request_body,
                upgrades: upgrades.clone(),
                auth: None,
                limits: Vec::new(),
            }));
        }
    }
}

fn uses_prefix_rewrite(action: &RouteAction) -> bool {
    match action {
        RouteAction::Redirect(r) => matches!(r.path, Some(PathRewrite::Prefix(_))),
        RouteAction::Forward(f) => matches!(
            f.rewrite().and_then(|r| r.path.as_ref()),
            Some(PathRewrite::Prefix(_))
        ),
    }
}

fn route_match(
    cx: &mut Context<'_>,
    m: &HttpRouteRulesMatches,
    key: &ObjectKey,
    location: &Location,
    field: &str,
) -> Option<RouteMatch> {
    let mut ok = true;
    let path_type = m
        .path
        .as_ref()
        .and_then(|p| p.r#type.clone())
        .unwrap_or(PathType::PathPrefix);
    let value = m
        .path
        .as_ref()
        .and_then(|p| p.value.clone())
        .unwrap_or_else(|| "/".to_string());
    let path = match path_type {
        PathType::RegularExpression => match regex(&value) {
            Ok(r) => PathMatch::Regex(r),
            Err(e) => {
                cx.error(location, key, format!("{field}.path.value"), e);
                return None;
            }
        },
        _ if !value.starts_with('/') => {
            cx.error(
                location,
                key,
                format!("{field}.path.value"),
                format!("{value:?} must start with /"),
            );
            return None;
        }
        PathType::Exact => PathMatch::Exact(value),
        PathType::PathPrefix => PathMatch::Prefix(normalise_prefix(&value)),
    };
    let mut headers = Vec::new();
    for (i, h) in m.headers.iter().flatten().enumerate() {
        if http::HeaderName::from_bytes(h.name.as_bytes()).is_err() {
            cx.error(
                location,
                key,
                format!("{field}.headers[{i}].name"),
                format!("{:?} is not a header name", h.name),
            );
            ok = false;
            continue;
        }
        let regex_type = matches!(h.r#type, Some(HeaderType::RegularExpression));
        match string_match(&h.value, regex_type) {
            Ok(value) => headers.push(ValueMatch {
                name: h.name.to_ascii_lowercase(),
                value,
            }),
            Err(e) => {
                cx.error(location, key, format!("{field}.headers[{i}].value"), e);
                ok = false;
            }
        }
    }
    let mut query = Vec::new();
    for (i, q) in m.query_params.iter().flatten().enumerate() {
        let regex_type = matches!(q.r#type, Some(QueryType::RegularExpression));
        match string_match(&q.value, regex_type) {
            Ok(value) => query.push(ValueMatch {
                name: q.name.clone(),
                value,
            }),
            Err(e) => {
                cx.error(location, key, format!("{field}.queryParams[{i}].value"), e);
                ok = false;
            }
        }
    }
    let method = m
        .method
        .as_ref()
        .and_then(|m| serde_json::to_value(m).ok())
        .and_then(|v| v.as_str().map(str::to_string));
    ok.then_some(RouteMatch {
        path,
        method,
        headers,
        query,
    })
}

fn regex(pattern: &str) -> Result<crate::model::Regex, String> {
    regex::Regex::new(&format!("^(?:{pattern})$"))
        .map(Arc::new)
        .map_err(|e| format!("invalid regular expression {pattern:?}: {e}"))
}

fn string_match(value: &str, is_regex: bool) -> Result<StringMatch, String> {
    if is_regex {
        regex(value).map(StringMatch::Regex)
    } else {
        Ok(StringMatch::Exact(value.to_string()))
    }
}

mod attach;
mod filters;
mod grpc;
mod retry;
mod rules;
mod session;
mod stream_names;
pub(super) use stream_names::own_names_only;
mod tcproute;
mod tlsroute;

use attach::{attached_hosts, attachments, by_listener, intersect, selects, Taken};
pub mod listener_sets;
pub use attach::{listener_allows, listener_conflict, served_kinds};
use listener_sets::{normal_host, set_of, set_parent, SetParent};
pub(super) use rules::granted;
use rules::rule_action;
