//! Gateway API → routes: `Gateway`s of class `weir`, the `HTTPRoute`s attached to their
//! listeners, hostnames intersected with the listener's, matches, filters, weighted backends,
//! timeouts, and `ReferenceGrant` for backends in other namespaces.

use std::{collections::BTreeMap, sync::Arc};

use gateway_api::apis::standard::{
    gateways::{
        Gateway, GatewayListeners, GatewayListenersAllowedRoutesNamespacesFrom as From,
        GatewayListenersTlsMode as TlsMode,
    },
    httproutes::{
        HttpRoute, HttpRouteRules, HttpRouteRulesFilters, HttpRouteRulesFiltersCors,
        HttpRouteRulesFiltersRequestRedirectPathType as RedirectPathType,
        HttpRouteRulesFiltersType as FilterType,
        HttpRouteRulesFiltersUrlRewritePathType as RewritePathType, HttpRouteRulesMatches,
        HttpRouteRulesMatchesHeadersType as HeaderType, HttpRouteRulesMatchesPathType as PathType,
        HttpRouteRulesMatchesQueryParamsType as QueryType,
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
        AllowedOrigin, Cors, Filter, Forward, HeaderModifier, HostMatch, Mirror, PathMatch,
        PathRewrite, Protocol, Redirect, Route, RouteAction, RouteMatch, RouteOrder, StringMatch,
        Timeouts, UrlRewrite, ValueMatch, WeightedBackend,
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

pub(super) fn compile_all(cx: &mut Context<'_>) {
    let gateways: Vec<&Gateway> = cx
        .iter()
        .filter_map(|(o, _)| match o {
            Object::Gateway(g) if g.spec.gateway_class_name == GATEWAY_CLASS => Some(g),
            _ => None,
        })
        .collect();
    let routes: Vec<(&HttpRoute, &Location)> = cx
        .iter()
        .filter_map(|(o, l)| match o {
            Object::HttpRoute(r) => Some((r, l)),
            _ => None,
        })
        .collect();
    for (route, location) in routes {
        let key = Object::HttpRoute(route.clone()).key();
        let hosts = attached_hosts(cx, &gateways, route, "HTTPRoute", &key, location);
        if hosts.is_empty() {
            continue;
        }
        compile_route(cx, route, "httproute", &key, location, hosts);
    }
    let grpc: Vec<(Object, Location)> = cx
        .iter()
        .filter(|(o, _)| matches!(o, Object::GrpcRoute(_)))
        .map(|(o, l)| (o.clone(), l.clone()))
        .collect();
    tlsroute::compile_all(cx, &gateways);
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
        let hosts = attached_hosts(cx, &gateways, &route, "GRPCRoute", &key, location);
        if hosts.is_empty() {
            continue;
        }
        let (first, errors) = (cx.routes.len(), cx.errors.len());
        compile_route(cx, &route, "grpcroute", &key, location, hosts);
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

/// The hosts `route` answers on the listeners it attaches to; empty when it attaches nowhere.
fn attached_hosts(
    cx: &mut Context<'_>,
    gateways: &[&Gateway],
    route: &HttpRoute,
    route_kind: &str,
    key: &ObjectKey,
    location: &Location,
) -> Vec<HostMatch> {
    let mut hosts: Vec<HostMatch> = attachments(cx, gateways, route, route_kind, key, location)
        .into_iter()
        .map(|(host, _)| host)
        .collect();
    hosts.dedup();
    hosts
}

/// How a listener takes a route: HTTP (plain or after its TLS), or, for a `TLS` listener, the
/// connection passed through (`Passthrough`) or carried after the gateway's TLS (`Terminate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Taken {
    Http,
    Passthrough,
    Terminate,
}

/// The protocols of the listeners a route of `kind` attaches to.
fn listener_protocols(kind: &str) -> &'static [&'static str] {
    match kind {
        "TLSRoute" => &["TLS"],
        _ => &["HTTP", "HTTPS"],
    }
}

/// The hosts `route` answers on the listeners it attaches to, each with how its listener takes
/// it (sorted, without repeats); empty when it attaches nowhere. The route stands for any kind:
/// only its hostnames and parentRefs are read, and `route_kind` says which listeners take it.
fn attachments(
    cx: &mut Context<'_>,
    gateways: &[&Gateway],
    route: &HttpRoute,
    route_kind: &str,
    key: &ObjectKey,
    location: &Location,
) -> Vec<(HostMatch, Taken)> {
    let mut route_hosts = Vec::new();
    for (i, h) in route.spec.hostnames.iter().flatten().enumerate() {
        match host_match(h) {
            Ok(m) => route_hosts.push(m),
            Err(e) => cx.error(location, key, format!("spec.hostnames[{i}]"), e),
        }
    }
    let mut hosts = Vec::new();
    for (i, parent) in route.spec.parent_refs.iter().flatten().enumerate() {
        let group = parent.group.as_deref().unwrap_or(GATEWAY_GROUP);
        let kind = parent.kind.as_deref().unwrap_or("Gateway");
        if group != GATEWAY_GROUP || kind != "Gateway" {
            continue;
        }
        let namespace = parent.namespace.as_deref().unwrap_or(&key.namespace);
        let Some(gateway) = gateways.iter().find(|g| {
            g.metadata.namespace.as_deref() == Some(namespace)
                && g.metadata.name.as_deref() == Some(&parent.name)
        }) else {
            // Another class's Gateway is another controller's business; one that does not
            // exist is a dangling reference worth a word.
            let exists = cx.iter().any(|(o, _)| {
                matches!(o, Object::Gateway(g) if g.metadata.namespace.as_deref() == Some(namespace)
                    && g.metadata.name.as_deref() == Some(&parent.name))
            });
            if !exists {
                let why = format!(
                    "{NO_MATCHING_PARENT}: Gateway {namespace}/{} not found (or refused: see its status)",
                    parent.name
                );
                cx.warn(key, format!("not attached to spec.parentRefs[{i}] ({why})"));
            }
            continue;
        };
        // How far the best listener got, for the reason a parent takes the route nowhere.
        let (mut matched, mut allowed) = (false, false);
        let before = hosts.len();
        for listener in &gateway.spec.listeners {
            if parent
                .section_name
                .as_deref()
                .is_some_and(|s| s != listener.name)
                || parent.port.is_some_and(|p| p != listener.port)
            {
                continue;
            }
            matched = true;
            if !listener_protocols(route_kind).contains(&listener.protocol.as_str())
                || listener_conflict(listener, &gateway.spec.listeners).is_some()
                || !allows(cx, gateway, listener, route_kind, &key.namespace)
            {
                continue;
            }
            allowed = true;
            let taken = match listener.tls.as_ref().and_then(|t| t.mode.as_ref()) {
                _ if listener.protocol != "TLS" => Taken::Http,
                Some(TlsMode::Passthrough) => Taken::Passthrough,
                _ => Taken::Terminate,
            };
            let listener_host = match listener.hostname.as_deref().map(host_match) {
                None => HostMatch::Any,
                Some(Ok(h)) => h,
                Some(Err(_)) => continue,
            };
            if route_hosts.is_empty() {
                hosts.push((listener_host, taken));
            } else {
                hosts.extend(
                    route_hosts
                        .iter()
                        .filter_map(|h| intersect(&listener_host, h))
                        .map(|h| (h, taken)),
                );
            }
        }
        if hosts.len() == before {
            // The Gateway API's reason first: the controller's status takes it, per parent.
            let why = match (matched, allowed) {
                (false, _) => format!("{NO_MATCHING_PARENT}: no listener of Gateway {namespace}/{} has its sectionName and port", parent.name),
                (true, false) => format!("{NOT_ALLOWED_BY_LISTENERS}: no listener of Gateway {namespace}/{} allows {route_kind}s from namespace {}", parent.name, key.namespace),
                (true, true) => format!("{NO_MATCHING_LISTENER_HOSTNAME}: its hostnames match no listener's of Gateway {namespace}/{}", parent.name),
            };
            cx.warn(key, format!("not attached to spec.parentRefs[{i}] ({why})"));
        }
    }
    hosts.sort();
    hosts.dedup();
    hosts
}

/// How a listener conflicts with another on its port, as the Gateway API's `Conflicted`
/// reasons name it; a conflicted listener takes no routes. HTTPS and TLS listeners share a port
/// when their hostnames differ (the SNI tells them apart); listeners of one protocol share it
/// when their hostnames differ; anything else on one port is a `ProtocolConflict`.
pub fn listener_conflict(
    listener: &GatewayListeners,
    all: &[GatewayListeners],
) -> Option<&'static str> {
    let tls_based = |p: &str| matches!(p, "HTTPS" | "TLS");
    let others = all
        .iter()
        .filter(|o| o.name != listener.name && o.port == listener.port);
    for other in others {
        let same_host = other.hostname == listener.hostname;
        if other.protocol != listener.protocol {
            if !(tls_based(&other.protocol) && tls_based(&listener.protocol)) || same_host {
                return Some("ProtocolConflict");
            }
        } else if same_host {
            return Some("HostnameConflict");
        }
    }
    None
}

/// Whether `listener` of `gateway` accepts routes from `namespace` (`allowedRoutes`).
fn allows(
    cx: &Context<'_>,
    gateway: &Gateway,
    listener: &GatewayListeners,
    kind: &str,
    namespace: &str,
) -> bool {
    let allowed = listener.allowed_routes.as_ref();
    if let Some(kinds) = allowed.and_then(|a| a.kinds.as_ref()) {
        if !kinds
            .iter()
            .any(|k| k.kind == kind && k.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP)
        {
            return false;
        }
    }
    let namespaces = allowed.and_then(|a| a.namespaces.as_ref());
    match namespaces
        .and_then(|n| n.from.as_ref())
        .unwrap_or(&From::Same)
    {
        From::All => true,
        From::Same => gateway.metadata.namespace.as_deref() == Some(namespace),
        From::Selector => {
            let Some(selector) = namespaces.and_then(|n| n.selector.as_ref()) else {
                return false;
            };
            let selector: LabelSelector =
                match serde_json::to_value(selector).and_then(serde_json::from_value) {
                    Ok(s) => s,
                    Err(_) => return false,
                };
            let labels = cx
                .iter()
                .find_map(|(o, _)| match o {
                    Object::Namespace(n) if n.metadata.name.as_deref() == Some(namespace) => {
                        n.metadata.labels.clone()
                    }
                    _ => None,
                })
                .unwrap_or_default();
            selector_matches(&selector, &labels)
        }
    }
}

/// Kubernetes label selector semantics (matchLabels and matchExpressions).
pub(super) fn selector_matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

/// The hostnames a listener and a route have in common (Gateway API hostname intersection).
fn intersect(listener: &HostMatch, route: &HostMatch) -> Option<HostMatch> {
    use HostMatch::*;
    match (listener, route) {
        (Any, r) => Some(r.clone()),
        (l, Any) => Some(l.clone()),
        (Exact(l), Exact(r)) => (l == r).then(|| listener.clone()),
        (Wildcard(suffix), Exact(host)) | (Exact(host), Wildcard(suffix)) => {
            (host.ends_with(suffix.as_str()) && host.len() > suffix.len())
                .then(|| Exact(host.clone()))
        }
        (Wildcard(l), Wildcard(r)) => {
            if r.ends_with(l.as_str()) {
                Some(route.clone())
            } else if l.ends_with(r.as_str()) {
                Some(listener.clone())
            } else {
                None
            }
        }
    }
}

fn compile_route(
    cx: &mut Context<'_>,
    route: &HttpRoute,
    prefix: &str,
    key: &ObjectKey,
    location: &Location,
    hosts: Vec<HostMatch>,
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

mod filters;
mod grpc;
mod rules;
mod tlsroute;

pub(super) use rules::granted;
use rules::rule_action;
