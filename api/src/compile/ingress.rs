//! `networking.k8s.io/v1 Ingress` → routes. Hosts, `Exact`/`Prefix` paths (with
//! `ImplementationSpecific` treated as `Prefix`), Service backends by port number or name, and
//! `defaultBackend`.

use std::sync::Arc;

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

use super::{backends::PortRef, created, max_body, normalise_prefix, upgrades, Context};
use crate::{
    error::Location,
    model::{
        Forward, HostMatch, PathMatch, Route, RouteAction, RouteMatch, RouteOrder, WeightedBackend,
    },
    objects::{Object, ObjectKey},
};

/// The `ingressClassName` Weir serves.
pub const INGRESS_CLASS: &str = "weir";
/// Ingress/HTTPRoute annotation: the largest request body accepted (`10Mi`); over it, 413.
pub const MAX_BODY_ANNOTATION: &str = "weir.dev/max-request-body";
/// Ingress/HTTPRoute annotation: the protocols a client may switch to (`websocket,my-proto`);
/// without it, WebSocket alone.
pub const UPGRADES_ANNOTATION: &str = "weir.dev/upgrades";
const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

pub(super) fn compile_all(cx: &mut Context<'_>) {
    let ingresses: Vec<_> = cx
        .iter()
        .filter_map(|(o, l)| match o {
            Object::Ingress(i) if is_ours(cx.objects, i) => Some((i, l)),
            _ => None,
        })
        .collect();
    for (ingress, location) in ingresses {
        compile_one(cx, ingress, location);
    }
}

/// Whether Weir serves `ingress`: its class is `weir`, or it names none and `weir` is the
/// cluster's default IngressClass.
pub fn is_ours(objects: &crate::Objects, ingress: &Ingress) -> bool {
    let class = ingress
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref())
        .or_else(|| {
            ingress
                .metadata
                .annotations
                .as_ref()?
                .get(LEGACY_CLASS_ANNOTATION)
                .map(String::as_str)
        });
    match class {
        Some(class) => class == INGRESS_CLASS,
        None => objects.iter().any(|(o, _)| match o {
            Object::IngressClass(c) => {
                c.metadata.name.as_deref() == Some(INGRESS_CLASS)
                    && c.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                        .map(String::as_str)
                        == Some("true")
            }
            _ => false,
        }),
    }
}

fn compile_one(cx: &mut Context<'_>, ingress: &Ingress, location: &Location) {
    let key = Object::Ingress(ingress.clone()).key();
    let namespace = key.namespace.clone();
    let max_request_body = max_body(cx, &ingress.metadata, &key, location);
    let upgrades = upgrades(cx, &ingress.metadata, &key, location);
    let order = |rule: usize, matcher: usize| RouteOrder {
        created: created(&ingress.metadata),
        object: format!("{}/{}", key.namespace, key.name),
        rule,
        matcher,
    };
    let Some(spec) = &ingress.spec else { return };
    if let Some(backend) = &spec.default_backend {
        if let Some(cluster) = backend_cluster(
            cx,
            &key,
            location,
            &namespace,
            backend,
            "spec.defaultBackend",
        ) {
            cx.default_routes.push(Arc::new(Route {
                name: format!("ingress:{}/{}:default", key.namespace, key.name).into(),
                hosts: vec![HostMatch::Any],
                listeners: Vec::new(),
                excluded_hosts: Vec::new(),
                matcher: RouteMatch::default(),
                order: order(usize::MAX, 0),
                action: forward(cluster),
                max_request_body,
                upgrades: upgrades.clone(),
                auth: None,
                limits: Vec::new(),
            }));
        }
    }
    for (r, rule) in spec.rules.iter().flatten().enumerate() {
        let host = match rule.host.as_deref() {
            None | Some("") => HostMatch::Any,
            Some(h) => match host_match(h) {
                Ok(m) => m,
                Err(e) => {
                    cx.error(location, &key, format!("spec.rules[{r}].host"), e);
                    continue;
                }
            },
        };
        let Some(http) = &rule.http else { continue };
        for (p, path) in http.paths.iter().enumerate() {
            let field = format!("spec.rules[{r}].http.paths[{p}]");
            let value = path.path.as_deref().unwrap_or("/");
            if !value.starts_with('/') {
                cx.error(
                    location,
                    &key,
                    format!("{field}.path"),
                    format!("{value:?} must start with /"),
                );
                continue;
            }
            let path_match = match path.path_type.as_str() {
                "Exact" => PathMatch::Exact(value.to_string()),
                "Prefix" | "ImplementationSpecific" => PathMatch::Prefix(normalise_prefix(value)),
                other => {
                    cx.error(
                        location,
                        &key,
                        format!("{field}.pathType"),
                        format!("unknown pathType {other:?}: use Exact or Prefix"),
                    );
                    continue;
                }
            };
            let Some(cluster) = backend_cluster(
                cx,
                &key,
                location,
                &namespace,
                &path.backend,
                &format!("{field}.backend"),
            ) else {
                continue;
            };
            cx.routes.push(Arc::new(Route {
                name: format!("ingress:{}/{}:{r}", key.namespace, key.name).into(),
                hosts: vec![host.clone()],
                listeners: Vec::new(),
                excluded_hosts: Vec::new(),
                matcher: RouteMatch {
                    path: path_match,
                    ..RouteMatch::default()
                },
                order: order(r, p),
                action: forward(cluster),
                max_request_body,
                upgrades: upgrades.clone(),
                auth: None,
                limits: Vec::new(),
            }));
        }
    }
}

fn forward(cluster: String) -> RouteAction {
    RouteAction::Forward(Forward {
        backends: vec![WeightedBackend {
            cluster,
            weight: 1,
            filters: Vec::new(),
        }],
        ..Forward::default()
    })
}

fn backend_cluster(
    cx: &mut Context<'_>,
    key: &ObjectKey,
    location: &Location,
    namespace: &str,
    backend: &IngressBackend,
    field: &str,
) -> Option<String> {
    let Some(service) = &backend.service else {
        cx.error(
            location,
            key,
            format!("{field}.resource"),
            "only Service backends are supported",
        );
        return None;
    };
    let port = match service.port.as_ref().map(|p| (p.number, p.name.as_deref())) {
        Some((Some(n), _)) => PortRef::Number(n),
        Some((None, Some(name))) => PortRef::Name(name),
        _ => {
            cx.error(
                location,
                key,
                format!("{field}.service.port"),
                "a port number or name is required",
            );
            return None;
        }
    };
    Some(cx.cluster(key, namespace, &service.name, port))
}

/// Parses a host (`shop.example.com` or `*.example.com`) into a lowercase match.
pub(super) fn host_match(host: &str) -> Result<HostMatch, String> {
    let host = host.to_ascii_lowercase();
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host.as_str()),
    };
    let valid = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !valid {
        return Err(format!("{host:?} is not a DNS name or a *. wildcard"));
    }
    Ok(if wildcard {
        HostMatch::Wildcard(format!(".{name}"))
    } else {
        HostMatch::Exact(name.to_string())
    })
}
