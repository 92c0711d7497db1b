//! HTTPRoute rules: their backends (Services, ReferenceGrants) and filters, as a route action.

use super::*;
use filters::apply_filter;
use gateway_api::apis::experimental::httproutes::HttpRouteRulesBackendRefs;
use retry::route_retry;
use session::route_session;

pub(super) fn rule_action(
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
    if let Some(cors) = forward.cors() {
        if cors.origins.is_empty() && !cors.any_origin {
            cx.warn(
                key,
                format!("{field}: the CORS filter names no allowOrigins, so it allows no origin"),
            );
        }
        if cors.credentials && (cors.any_origin || cors.origins.iter().any(|o| o.host == "*")) {
            cx.warn(key, format!("{field}: the CORS filter allows credentials from any origin: every website may read this route's answers with its users' cookies"));
        }
        let owned = |name: &String| name.starts_with("access-control-");
        let touches = forward.filters.iter().any(|f| match f {
            Filter::ResponseHeaderModifier(m) => {
                m.set.iter().chain(&m.add).any(|(n, _)| owned(n)) || m.remove.iter().any(owned)
            }
            _ => false,
        });
        if touches {
            cx.warn(key, format!("{field}: the CORS filter decides the Access-Control-* headers; the ResponseHeaderModifier's changes to them are replaced"));
        }
    }
    if redirect.is_some() && forward.cors().is_some() {
        cx.error(
            location,
            key,
            format!("{field}.filters"),
            "CORS with RequestRedirect is not supported by Weir: put CORS on the rule the redirect leads to",
        );
        ok = false;
    }
    if redirect.is_some() && forward.rewrite().is_some() {
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
    if let Some(retry) = &rule.retry {
        match route_retry(retry) {
            Ok(policy) => forward.retry = Some(policy),
            Err((sub, message)) => {
                cx.error(location, key, format!("{field}.retry{sub}"), message);
                ok = false;
            }
        }
    }
    if let Some(session) = &rule.session_persistence {
        match route_session(session, &format!("{key}/{field}")) {
            Ok(session) => forward.session = Some(session),
            Err((sub, message)) => {
                cx.error(
                    location,
                    key,
                    format!("{field}.sessionPersistence{sub}"),
                    message,
                );
                ok = false;
            }
        }
    }
    for (i, backend) in rule.backend_refs.iter().flatten().enumerate() {
        let field = format!("{field}.backendRefs[{i}]");
        let Some(filters) = backend_filters(cx, backend, key, location, &field) else {
            ok = false;
            continue;
        };
        match weighted_service(cx, key, location, &field, target_of!(backend)) {
            Some(backend) => forward
                .backends
                .push(WeightedBackend { filters, ..backend }),
            None => ok = false,
        }
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

/// A backendRef's own filters (header modifiers: what Weir can do per backend); `None`, with
/// the errors, when one is of another type or invalid.
fn backend_filters(
    cx: &mut Context<'_>,
    backend: &HttpRouteRulesBackendRefs,
    key: &ObjectKey,
    location: &Location,
    field: &str,
) -> Option<Vec<Filter>> {
    let mut filters = Forward::default();
    let mut ok = true;
    for (j, filter) in backend.filters.iter().flatten().enumerate() {
        let field = format!("{field}.filters[{j}]");
        // The same filter as a rule's, in a type of its own.
        let filter: Option<HttpRouteRulesFilters> = serde_json::to_value(filter)
            .and_then(serde_json::from_value)
            .ok();
        let Some(filter) = filter.filter(|f| {
            matches!(
                f.r#type,
                FilterType::RequestHeaderModifier | FilterType::ResponseHeaderModifier
            )
        }) else {
            let message = "a backendRef takes RequestHeaderModifier and ResponseHeaderModifier filters; put the others on the rule";
            cx.error(location, key, format!("{field}.type"), message);
            ok = false;
            continue;
        };
        let mut redirect = None;
        if let Err((sub, message)) = apply_filter(cx, &filter, key, &mut filters, &mut redirect) {
            cx.error(location, key, format!("{field}{sub}"), message);
            ok = false;
        }
    }
    ok.then_some(filters.filters)
}

/// A backendRef as every route kind writes it.
/// The [`BackendTarget`] of a backendRef of any route kind (their types have these fields).
macro_rules! target_of {
    ($backend:expr) => {
        $crate::compile::gateway::rules::BackendTarget {
            group: $backend.group.as_deref(),
            kind: $backend.kind.as_deref(),
            namespace: $backend.namespace.as_deref(),
            name: &$backend.name,
            port: $backend.port,
            weight: $backend.weight,
        }
    };
}
pub(super) use target_of;

pub(super) struct BackendTarget<'a> {
    pub group: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    pub port: Option<i32>,
    pub weight: Option<i32>,
}

/// A backendRef (at `field`) as a weighted cluster; `None` (with the error) when its weight or
/// port cannot be.
pub(super) fn weighted_service(
    cx: &mut Context<'_>,
    key: &ObjectKey,
    location: &Location,
    field: &str,
    target: BackendTarget<'_>,
) -> Option<WeightedBackend> {
    let Ok(weight) = u32::try_from(target.weight.unwrap_or(1)) else {
        let message = "must be between 0 and 1000000";
        cx.error(location, key, format!("{field}.weight"), message);
        return None;
    };
    let Some(port) = target.port else {
        let message = "a port is required for a Service backend";
        cx.error(location, key, format!("{field}.port"), message);
        return None;
    };
    let cluster = service_ref(
        cx,
        key,
        target.group,
        target.kind,
        target.namespace,
        target.name,
        port,
    );
    Some(WeightedBackend {
        cluster,
        weight,
        filters: Vec::new(),
    })
}

/// A Service reference from an HTTPRoute: other kinds, and other namespaces without a
/// `ReferenceGrant`, resolve to nothing (500s), as the Gateway API asks.
pub(super) fn service_ref(
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
    if namespace != key.namespace
        && !granted(
            cx,
            (key.kind, &key.namespace),
            ("Service", &namespace, name),
        )
    {
        cx.warn(key, format!("no ReferenceGrant in {namespace} allows {}s from {} to use Service {name}; requests to it get 500", key.kind, key.namespace));
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

/// Whether a ReferenceGrant in `to.1` lets objects of kind `from.0` in namespace `from.1`
/// refer to the core object `to.0` named `to.2`.
pub(in crate::compile) fn granted(
    cx: &Context<'_>,
    from: (&str, &str),
    to: (&str, &str, &str),
) -> bool {
    let ((from_kind, from_namespace), (to_kind, to_namespace, to_name)) = (from, to);
    cx.iter().any(|(o, _)| match o {
        Object::ReferenceGrant(g) if g.metadata.namespace.as_deref() == Some(to_namespace) => {
            g.spec.from.iter().any(|f| {
                f.group == GATEWAY_GROUP && f.kind == from_kind && f.namespace == from_namespace
            }) && g.spec.to.iter().any(|t| {
                t.group.is_empty()
                    && t.kind == to_kind
                    && t.name.as_deref().is_none_or(|n| n == to_name)
            })
        }
        _ => false,
    })
}
