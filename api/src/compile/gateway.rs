//! Gateway API → routes: `Gateway`s of class `weir`, the `HTTPRoute`s attached to their
//! listeners, hostnames intersected with the listener's, matches, filters, weighted backends,
//! timeouts, and `ReferenceGrant` for backends in other namespaces.

use std::collections::BTreeMap;

use gateway_api::apis::standard::{
    gateways::{Gateway, GatewayListeners, GatewayListenersAllowedRoutesNamespacesFrom as From},
    httproutes::{
        HttpRoute, HttpRouteRules, HttpRouteRulesFilters,
        HttpRouteRulesFiltersRequestRedirectPathType as RedirectPathType,
        HttpRouteRulesFiltersType as FilterType,
        HttpRouteRulesFiltersUrlRewritePathType as RewritePathType, HttpRouteRulesMatches,
        HttpRouteRulesMatchesHeadersType as HeaderType, HttpRouteRulesMatchesPathType as PathType,
        HttpRouteRulesMatchesQueryParamsType as QueryType,
    },
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::{
    backends::PortRef, created, ingress::host_match, max_body, normalise_prefix, Context,
    GATEWAY_CLASS,
};
use crate::{
    duration::parse_duration,
    error::Location,
    model::{
        Forward, HostMatch, Mirror, PathMatch, PathRewrite, Redirect, Route, RouteAction,
        RouteMatch, RouteOrder, StringMatch, Timeouts, UrlRewrite, ValueMatch, WeightedBackend,
    },
    objects::{Object, ObjectKey},
};

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

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
        let hosts = attached_hosts(cx, &gateways, route, &key, location);
        if hosts.is_empty() {
            continue;
        }
        compile_route(cx, route, &key, location, hosts);
    }
}

/// The hosts `route` answers on the listeners it attaches to; empty when it attaches nowhere.
fn attached_hosts(
    cx: &mut Context<'_>,
    gateways: &[&Gateway],
    route: &HttpRoute,
    key: &ObjectKey,
    location: &Location,
) -> Vec<HostMatch> {
    let mut route_hosts = Vec::new();
    for (i, h) in route.spec.hostnames.iter().flatten().enumerate() {
        match host_match(h) {
            Ok(m) => route_hosts.push(m),
            Err(e) => cx.error(location, key, format!("spec.hostnames[{i}]"), e),
        }
    }
    let mut hosts = Vec::new();
    let mut ours = false;
    for parent in route.spec.parent_refs.iter().flatten() {
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
            continue;
        };
        ours = true;
        for listener in &gateway.spec.listeners {
            if parent
                .section_name
                .as_deref()
                .is_some_and(|s| s != listener.name)
                || parent.port.is_some_and(|p| p != listener.port)
                || !matches!(listener.protocol.as_str(), "HTTP" | "HTTPS")
                || !allows(cx, gateway, listener, &key.namespace)
            {
                continue;
            }
            let listener_host = match listener.hostname.as_deref().map(host_match) {
                None => HostMatch::Any,
                Some(Ok(h)) => h,
                Some(Err(_)) => continue,
            };
            if route_hosts.is_empty() {
                hosts.push(listener_host);
            } else {
                hosts.extend(
                    route_hosts
                        .iter()
                        .filter_map(|h| intersect(&listener_host, h)),
                );
            }
        }
    }
    if ours && hosts.is_empty() {
        cx.warn(key, "not attached: no listener of its parent Gateways accepts it (sectionName, port, hostnames or allowedRoutes)");
    }
    hosts.sort();
    hosts.dedup();
    hosts
}

/// Whether `listener` of `gateway` accepts routes from `namespace` (`allowedRoutes`).
fn allows(
    cx: &Context<'_>,
    gateway: &Gateway,
    listener: &GatewayListeners,
    namespace: &str,
) -> bool {
    let allowed = listener.allowed_routes.as_ref();
    if let Some(kinds) = allowed.and_then(|a| a.kinds.as_ref()) {
        if !kinds.iter().any(|k| {
            k.kind == "HTTPRoute" && k.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP
        }) {
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
    key: &ObjectKey,
    location: &Location,
    hosts: Vec<HostMatch>,
) {
    let max_request_body = max_body(cx, &route.metadata, key, location);
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
            cx.routes.push(Route {
                name: format!("httproute:{}/{}:{r}", key.namespace, key.name).into(),
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
            });
        }
    }
}

fn uses_prefix_rewrite(action: &RouteAction) -> bool {
    match action {
        RouteAction::Redirect(r) => matches!(r.path, Some(PathRewrite::Prefix(_))),
        RouteAction::Forward(f) => matches!(
            f.rewrite.as_ref().and_then(|r| r.path.as_ref()),
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
        .map(std::sync::Arc::new)
        .map_err(|e| format!("invalid regular expression {pattern:?}: {e}"))
}

fn string_match(value: &str, is_regex: bool) -> Result<StringMatch, String> {
    if is_regex {
        regex(value).map(StringMatch::Regex)
    } else {
        Ok(StringMatch::Exact(value.to_string()))
    }
}

fn rule_action(
    cx: &mut Context<'_>,
    rule: &HttpRouteRules,
    key: &ObjectKey,
    location: &Location,
    field: &str,
) -> Option<RouteAction> {
    let mut forward = Forward::default();
    let mut redirect = None;
    let mut ok = true;
    for (i, filter) in rule.filters.iter().flatten().enumerate() {
        let field = format!("{field}.filters[{i}]");
        match apply_filter(cx, filter, key, &mut forward, &mut redirect) {
            Ok(()) => {}
            Err((sub, message)) => {
                cx.error(location, key, format!("{field}{sub}"), message);
                ok = false;
            }
        }
    }
    if redirect.is_some() && forward.rewrite.is_some() {
        cx.error(
            location,
            key,
            format!("{field}.filters"),
            "RequestRedirect and URLRewrite cannot be used together",
        );
        ok = false;
    }
    if let Some(timeouts) = &rule.timeouts {
        let mut parse =
            |value: &Option<String>, name: &str| match value.as_deref().map(parse_duration) {
                None => None,
                Some(Ok(d)) if d.is_zero() => None, // 0s disables the timeout, as the spec says
                Some(Ok(d)) => Some(d),
                Some(Err(e)) => {
                    cx.error(location, key, format!("{field}.timeouts.{name}"), e);
                    ok = false;
                    None
                }
            };
        forward.timeouts = Timeouts {
            request: parse(&timeouts.request, "request"),
            backend_request: parse(&timeouts.backend_request, "backendRequest"),
        };
        if let (Some(req), Some(backend)) =
            (forward.timeouts.request, forward.timeouts.backend_request)
        {
            if backend > req {
                cx.error(
                    location,
                    key,
                    format!("{field}.timeouts.backendRequest"),
                    "must not be longer than timeouts.request",
                );
                ok = false;
            }
        }
    }
    for (i, backend) in rule.backend_refs.iter().flatten().enumerate() {
        let field = format!("{field}.backendRefs[{i}]");
        if backend.filters.as_ref().is_some_and(|f| !f.is_empty()) {
            cx.error(
                location,
                key,
                format!("{field}.filters"),
                "per-backend filters are not supported; put filters on the rule",
            );
            ok = false;
            continue;
        }
        let weight = backend.weight.unwrap_or(1);
        let Ok(weight) = u32::try_from(weight) else {
            cx.error(
                location,
                key,
                format!("{field}.weight"),
                "must be between 0 and 1000000",
            );
            ok = false;
            continue;
        };
        let Some(port) = backend.port else {
            cx.error(
                location,
                key,
                format!("{field}.port"),
                "a port is required for a Service backend",
            );
            ok = false;
            continue;
        };
        let cluster = service_ref(
            cx,
            key,
            backend.group.as_deref(),
            backend.kind.as_deref(),
            backend.namespace.as_deref(),
            &backend.name,
            port,
        );
        forward.backends.push(WeightedBackend { cluster, weight });
    }
    if !ok {
        return None;
    }
    match redirect {
        Some(redirect) => {
            if !forward.backends.is_empty() {
                cx.warn(
                    key,
                    format!("{field}: backendRefs are ignored on a rule with RequestRedirect"),
                );
            }
            Some(RouteAction::Redirect(redirect))
        }
        None => Some(RouteAction::Forward(forward)),
    }
}

/// A Service reference from an HTTPRoute: other kinds, and other namespaces without a
/// `ReferenceGrant`, resolve to nothing (500s), as the Gateway API asks.
fn service_ref(
    cx: &mut Context<'_>,
    key: &ObjectKey,
    group: Option<&str>,
    kind: Option<&str>,
    namespace: Option<&str>,
    name: &str,
    port: i32,
) -> String {
    let namespace = namespace.unwrap_or(&key.namespace).to_string();
    let group = group.unwrap_or("");
    let kind = kind.unwrap_or("Service");
    if !group.is_empty() || kind != "Service" {
        cx.warn(
            key,
            format!("backend {group}/{kind} {name} is not a Service; requests to it get 500"),
        );
        return unresolved(cx, format!("{namespace}/{kind}/{name}:{port}"));
    }
    if namespace != key.namespace && !granted(cx, &key.namespace, &namespace, name) {
        cx.warn(key, format!("no ReferenceGrant in {namespace} allows HTTPRoutes from {} to use Service {name}; requests to it get 500", key.namespace));
        return unresolved(
            cx,
            format!(
                "{namespace}/{name}:{port} (not granted to {})",
                key.namespace
            ),
        );
    }
    cx.cluster(key, &namespace, name, PortRef::Number(port))
}

fn unresolved(cx: &mut Context<'_>, name: String) -> String {
    cx.clusters
        .entry(name.clone())
        .or_insert_with(|| crate::model::Cluster {
            name: name.clone(),
            ..Default::default()
        });
    name
}

fn granted(cx: &Context<'_>, from_namespace: &str, to_namespace: &str, service: &str) -> bool {
    cx.iter().any(|(o, _)| match o {
        Object::ReferenceGrant(g) if g.metadata.namespace.as_deref() == Some(to_namespace) => {
            g.spec.from.iter().any(|f| {
                f.group == GATEWAY_GROUP && f.kind == "HTTPRoute" && f.namespace == from_namespace
            }) && g.spec.to.iter().any(|t| {
                t.group.is_empty()
                    && t.kind == "Service"
                    && t.name.as_deref().is_none_or(|n| n == service)
            })
        }
        _ => false,
    })
}

type FilterError = (String, String);

fn apply_filter(
    cx: &mut Context<'_>,
    filter: &HttpRouteRulesFilters,
    key: &ObjectKey,
    forward: &mut Forward,
    redirect: &mut Option<Redirect>,
) -> Result<(), FilterError> {
    let missing = |name: &str| {
        (
            format!(".{name}"),
            format!("type is {name} but the {name} field is missing"),
        )
    };
    let lower = |s: &str| s.to_ascii_lowercase();
    match filter.r#type {
        FilterType::RequestHeaderModifier | FilterType::ResponseHeaderModifier => {
            let (target, value) = if filter.r#type == FilterType::RequestHeaderModifier {
                let m = filter
                    .request_header_modifier
                    .as_ref()
                    .ok_or_else(|| missing("requestHeaderModifier"))?;
                (&mut forward.request_headers, serde_json::to_value(m))
            } else {
                let m = filter
                    .response_header_modifier
                    .as_ref()
                    .ok_or_else(|| missing("responseHeaderModifier"))?;
                (&mut forward.response_headers, serde_json::to_value(m))
            };
            // Both modifier types have the same shape; read them through one form.
            let m: HeaderModifierSpec = value
                .ok()
                .and_then(|v| serde_json::from_value(v).ok())
                .ok_or_else(|| (String::new(), "unreadable header modifier".to_string()))?;
            for (list, out) in [(&m.set, &mut target.set), (&m.add, &mut target.add)] {
                for h in list {
                    check_header(&h.name, &h.value)?;
                    out.push((lower(&h.name), h.value.clone()));
                }
            }
            for name in &m.remove {
                check_header(name, "")?;
                target.remove.push(lower(name));
            }
        }
        FilterType::RequestRedirect => {
            let r = filter
                .request_redirect
                .as_ref()
                .ok_or_else(|| missing("requestRedirect"))?;
            let path = r.path.as_ref().map(|p| match p.r#type {
                RedirectPathType::ReplaceFullPath => {
                    PathRewrite::Full(p.replace_full_path.clone().unwrap_or_default())
                }
                RedirectPathType::ReplacePrefixMatch => {
                    PathRewrite::Prefix(p.replace_prefix_match.clone().unwrap_or_default())
                }
            });
            let port = match r.port {
                None => None,
                Some(p) => Some(u16::try_from(p).map_err(|_| {
                    (
                        ".requestRedirect.port".to_string(),
                        format!("{p} is not a port"),
                    )
                })?),
            };
            let status = u16::try_from(r.status_code.unwrap_or(302)).unwrap_or(0);
            if !matches!(status, 301 | 302 | 303 | 307 | 308) {
                return Err((
                    ".requestRedirect.statusCode".into(),
                    "use 301, 302, 303, 307 or 308".into(),
                ));
            }
            let scheme = r
                .scheme
                .as_ref()
                .and_then(|s| serde_json::to_value(s).ok())
                .and_then(|v| v.as_str().map(str::to_string));
            *redirect = Some(Redirect {
                scheme,
                hostname: r.hostname.as_deref().map(lower),
                port,
                path,
                status,
            });
        }
        FilterType::UrlRewrite => {
            let r = filter
                .url_rewrite
                .as_ref()
                .ok_or_else(|| missing("urlRewrite"))?;
            let path = r.path.as_ref().map(|p| match p.r#type {
                RewritePathType::ReplaceFullPath => {
                    PathRewrite::Full(p.replace_full_path.clone().unwrap_or_default())
                }
                RewritePathType::ReplacePrefixMatch => {
                    PathRewrite::Prefix(p.replace_prefix_match.clone().unwrap_or_default())
                }
            });
            forward.rewrite = Some(UrlRewrite {
                hostname: r.hostname.as_deref().map(lower),
                path,
            });
        }
        FilterType::RequestMirror => {
            let m = filter
                .request_mirror
                .as_ref()
                .ok_or_else(|| missing("requestMirror"))?;
            let b = &m.backend_ref;
            let port = b.port.ok_or_else(|| {
                (
                    ".requestMirror.backendRef.port".into(),
                    "a port is required".into(),
                )
            })?;
            let per_million = match (&m.percent, &m.fraction) {
                (Some(p), _) if (0..=100).contains(p) => (*p as u32) * 10_000,
                (Some(_), _) => {
                    return Err((
                        ".requestMirror.percent".into(),
                        "must be between 0 and 100".into(),
                    ))
                }
                (None, Some(f)) => {
                    let denominator = f.denominator.unwrap_or(100);
                    if denominator <= 0 || f.numerator < 0 || f.numerator > denominator {
                        return Err((
                            ".requestMirror.fraction".into(),
                            "numerator must be between 0 and a positive denominator".into(),
                        ));
                    }
                    ((f.numerator as u64 * 1_000_000) / denominator as u64) as u32
                }
                (None, None) => 1_000_000,
            };
            let cluster = service_ref(
                cx,
                key,
                b.group.as_deref(),
                b.kind.as_deref(),
                b.namespace.as_deref(),
                &b.name,
                port,
            );
            forward.mirrors.push(Mirror {
                cluster,
                per_million,
            });
        }
        FilterType::ExtensionRef | FilterType::Cors => {
            let name = if filter.r#type == FilterType::Cors {
                "CORS"
            } else {
                "ExtensionRef"
            };
            return Err((
                ".type".into(),
                format!("filter type {name} is not supported by Weir"),
            ));
        }
    }
    Ok(())
}

fn check_header(name: &str, value: &str) -> Result<(), FilterError> {
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err((String::new(), format!("{name:?} is not a header name")));
    }
    if http::HeaderValue::from_str(value).is_err() {
        return Err((
            String::new(),
            format!("the value for {name} is not a valid header value"),
        ));
    }
    Ok(())
}

#[derive(serde::Deserialize)]
struct HeaderModifierSpec {
    #[serde(default)]
    set: Vec<NameValue>,
    #[serde(default)]
    add: Vec<NameValue>,
    #[serde(default)]
    remove: Vec<String>,
}

#[derive(serde::Deserialize)]
struct NameValue {
    name: String,
    value: String,
}
