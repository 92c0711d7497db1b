//! The mesh: every Service with its endpoints' identities, and MeshTLSPolicy and
//! AccessPolicy compiled into what sidecars enforce. Policies are checked here with the same
//! rules their CRD schemas give the API server, so a directory of objects is held to what
//! `kubectl apply` would refuse. The ingress view carries none of this except the endpoint
//! identities in its clusters.

use std::{net::IpAddr, sync::LazyLock};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use regex::Regex;

use super::{backends::PortRef, created, Context};
use crate::{
    crds::{
        AccessDefault, AccessPolicy, AccessSource, MeshTLSMode, NAMESPACE_PATTERN,
        SERVICE_ACCOUNT_PATTERN, SPIFFE_ID_PATTERN, TRUST_DOMAIN_PATTERN,
    },
    error::Location,
    model::{self, Caller, MeshPod, MeshPort, MeshService, Requirement, Selector, TlsMode},
    objects::{Object, ObjectKey},
};

/// The annotation the injector puts on a pod it added the sidecar to (value: its version). A
/// pod with it is meshed: its endpoints are reached with mTLS and must prove its identity.
pub const INJECTED_ANNOTATION: &str = "weir.dev/injected";

static SPIFFE_ID: LazyLock<Regex> = LazyLock::new(|| pattern(SPIFFE_ID_PATTERN));
static NAMESPACE: LazyLock<Regex> = LazyLock::new(|| pattern(NAMESPACE_PATTERN));
static SERVICE_ACCOUNT: LazyLock<Regex> = LazyLock::new(|| pattern(SERVICE_ACCOUNT_PATTERN));
static TRUST_DOMAIN: LazyLock<Regex> = LazyLock::new(|| pattern(TRUST_DOMAIN_PATTERN));

fn pattern(text: &str) -> Regex {
    Regex::new(text).expect("the CRD's patterns are valid regular expressions")
}

impl<'a> Context<'a> {
    /// `namespace/serviceaccount` of pod `namespace/pod`, when it is meshed.
    pub(super) fn pod_identity(&self, namespace: &str, pod: &str) -> Option<String> {
        let key = ObjectKey {
            kind: "Pod",
            namespace: namespace.to_string(),
            name: pod.to_string(),
        };
        match self.objects.get(&key)? {
            (Object::Pod(pod), _) if meshed(pod) => {
                Some(format!("{namespace}/{}", service_account(pod)))
            }
            _ => None,
        }
    }
}

/// Whether the injector added the sidecar to `pod`.
pub(super) fn meshed(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(INJECTED_ANNOTATION))
}

fn service_account(pod: &k8s_openapi::api::core::v1::Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
}

/// Checks the mesh policies and compiles the mesh.
pub(super) fn compile_all(cx: &mut Context<'_>) {
    let mut tls = Vec::new();
    let mut access = Vec::new();
    let objects: Vec<_> = cx.iter().collect();
    for (object, location) in objects {
        let key = object.key();
        match object {
            Object::MeshTLSPolicy(p) => {
                let Some(selector) = selector(cx, &key, location, p.spec.selector.as_ref()) else {
                    continue;
                };
                let mode = match p.spec.mode {
                    MeshTLSMode::Strict => TlsMode::Strict,
                    MeshTLSMode::Permissive => TlsMode::Permissive,
                    MeshTLSMode::Disabled => TlsMode::Disabled,
                };
                let order = (selector.is_empty(), created(&p.metadata), key.name.clone());
                let policy = model::TlsPolicy {
                    policy: key.to_string(),
                    namespace: key.namespace.clone(),
                    name: key.name.clone(),
                    selector,
                    mode,
                };
                tls.push((order, policy));
            }
            Object::AccessPolicy(p) => {
                let errors = cx.errors.len();
                check_access(cx, &key, p, location);
                let selector = selector(cx, &key, location, p.spec.selector.as_ref());
                if let (Some(selector), true) = (selector, cx.errors.len() == errors) {
                    access.push(model::AccessPolicy {
                        namespace: key.namespace.clone(),
                        selector,
                        rules: access_rules(&key, p),
                    });
                }
            }
            _ => {}
        }
    }
    // Most specific first: a selector beats none, then the oldest, then by name.
    tls.sort_by(|a, b| a.0.cmp(&b.0));
    cx.mesh.tls = tls.into_iter().map(|(_, p)| p).collect();
    cx.mesh.access = access;
    cx.mesh.pods = cx
        .iter()
        .filter_map(|(o, _)| match o {
            Object::Pod(pod) if meshed(pod) => {
                let key = o.key();
                let pod = MeshPod {
                    service_account: service_account(pod).to_string(),
                    labels: pod.metadata.labels.clone().unwrap_or_default(),
                };
                Some((format!("{}/{}", key.namespace, key.name), pod))
            }
            _ => None,
        })
        .collect();
    services(cx);
}

/// Every Service, each port with its cluster. The clusters are built like the ingress's (the
/// same endpoints, identities and TrafficPolicy) but kept apart from them.
fn services(cx: &mut Context<'_>) {
    let ingress_clusters = std::mem::take(&mut cx.clusters);
    let services: Vec<_> = cx
        .iter()
        .filter_map(|(o, _)| match o {
            Object::Service(s) => Some((o.key(), s)),
            _ => None,
        })
        .collect();
    let mut mesh_services = Vec::with_capacity(services.len());
    for (key, service) in services {
        let spec = service.spec.as_ref();
        let ips = spec
            .and_then(|s| s.cluster_ips.clone())
            .or_else(|| spec.and_then(|s| s.cluster_ip.clone()).map(|ip| vec![ip]))
            .unwrap_or_default();
        let ports = spec
            .and_then(|s| s.ports.as_ref())
            .into_iter()
            .flatten()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .filter_map(|p| {
                let port = u16::try_from(p.port).ok()?;
                let cluster = cx.cluster(&key, &key.namespace, &key.name, PortRef::Number(p.port));
                Some(MeshPort {
                    port,
                    name: p.name.clone().unwrap_or_default(),
                    cluster,
                })
            })
            .collect();
        mesh_services.push(MeshService {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            cluster_ips: ips
                .iter()
                .filter_map(|ip| ip.parse::<IpAddr>().ok())
                .collect(),
            ports,
        });
    }
    cx.mesh.services = mesh_services;
    cx.mesh.clusters = std::mem::replace(&mut cx.clusters, ingress_clusters);
}

fn selector(
    cx: &mut Context<'_>,
    key: &ObjectKey,
    location: &Location,
    selector: Option<&LabelSelector>,
) -> Option<Selector> {
    let Some(selector) = selector else {
        return Some(Selector::default());
    };
    let mut requirements: Vec<Requirement> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| Requirement::In(k.clone(), vec![v.clone()]))
        .collect();
    for (i, e) in selector.match_expressions.iter().flatten().enumerate() {
        let values = e.values.clone().unwrap_or_default();
        let requirement = match e.operator.as_str() {
            "In" if !values.is_empty() => Requirement::In(e.key.clone(), values),
            "NotIn" if !values.is_empty() => Requirement::NotIn(e.key.clone(), values),
            "Exists" if values.is_empty() => Requirement::Exists(e.key.clone()),
            "DoesNotExist" if values.is_empty() => Requirement::DoesNotExist(e.key.clone()),
            op => {
                cx.error(
                    location,
                    key,
                    format!("spec.selector.matchExpressions[{i}]"),
                    format!("operator {op:?} with {} values: use In or NotIn with values, Exists or DoesNotExist without", values.len()),
                );
                return None;
            }
        };
        requirements.push(requirement);
    }
    Some(Selector { requirements })
}

fn access_rules(key: &ObjectKey, policy: &AccessPolicy) -> model::AccessRules {
    let caller =
        |from: &AccessSource| match (&from.identity, &from.namespace, &from.service_account) {
            (Some(id), _, _) => Caller::Identity(id.clone()),
            (_, Some(ns), _) => Caller::Namespace {
                namespace: ns.clone(),
                trust_domain: from.trust_domain.clone(),
            },
            (_, _, Some(sa)) => {
                let (namespace, name) = sa.split_once('/').unwrap_or((&key.namespace, sa));
                Caller::ServiceAccount {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                    trust_domain: from.trust_domain.clone(),
                }
            }
            _ => unreachable!("check_source allows exactly one"),
        };
    model::AccessRules {
        policy: key.to_string(),
        deny_by_default: policy.spec.default != Some(AccessDefault::Allow),
        rules: policy
            .spec
            .rules
            .iter()
            .map(|rule| model::AccessRule {
                from: rule.from.iter().map(caller).collect(),
                to: rule
                    .to
                    .iter()
                    .map(|to| model::Operation {
                        methods: to.methods.iter().map(|m| m.0.clone()).collect(),
                        paths: to.paths.iter().map(|p| p.0.clone()).collect(),
                        ports: to
                            .ports
                            .iter()
                            .filter_map(|p| u16::try_from(p.0).ok())
                            .collect(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn check_access(cx: &mut Context<'_>, key: &ObjectKey, policy: &AccessPolicy, location: &Location) {
    for (r, rule) in policy.spec.rules.iter().enumerate() {
        if rule.from.is_empty() {
            cx.error(
                location,
                key,
                format!("spec.rules[{r}].from"),
                "name at least one caller",
            );
        }
        for (f, from) in rule.from.iter().enumerate() {
            let field = format!("spec.rules[{r}].from[{f}]");
            if let Err(message) = check_source(from) {
                cx.error(location, key, field, message);
            }
        }
        for (t, to) in rule.to.iter().enumerate() {
            let field = format!("spec.rules[{r}].to[{t}]");
            for (i, method) in to.methods.iter().enumerate() {
                if method.0.is_empty() || !method.0.bytes().all(|b| b.is_ascii_uppercase()) {
                    cx.error(
                        location,
                        key,
                        format!("{field}.methods[{i}]"),
                        format!("{:?} is not an HTTP method in uppercase", method.0),
                    );
                }
            }
            for (i, path) in to.paths.iter().enumerate() {
                let p = &path.0;
                let star = p.find('*');
                if !p.starts_with('/') || star.is_some_and(|s| s != p.len() - 1) {
                    cx.error(
                        location,
                        key,
                        format!("{field}.paths[{i}]"),
                        format!("{p:?} must start with / and may only end with *"),
                    );
                }
            }
            for (i, port) in to.ports.iter().enumerate() {
                if !(1..=65535).contains(&port.0) {
                    cx.error(
                        location,
                        key,
                        format!("{field}.ports[{i}]"),
                        format!("{} is not a port (1-65535)", port.0),
                    );
                }
            }
        }
    }
}

fn check_source(from: &AccessSource) -> Result<(), String> {
    let given = [&from.identity, &from.namespace, &from.service_account]
        .iter()
        .filter(|f| f.is_some())
        .count();
    if given != 1 {
        return Err("set exactly one of identity, namespace or serviceAccount".into());
    }
    if let (Some(_), Some(_)) = (&from.identity, &from.trust_domain) {
        return Err("trustDomain goes with namespace or serviceAccount: an identity names its own trust domain".into());
    }
    if let Some(domain) = &from.trust_domain {
        if !TRUST_DOMAIN.is_match(domain) {
            return Err(format!(
                "{domain:?} is not a trust domain (lowercase letters, digits, '.', '-' and '_')"
            ));
        }
    }
    let checks: [(&Option<String>, &Regex, &str); 3] = [
        (
            &from.identity,
            &SPIFFE_ID,
            "a SPIFFE ID like spiffe://cluster.local/ns/NAMESPACE/sa/NAME",
        ),
        (&from.namespace, &NAMESPACE, "a namespace name"),
        (
            &from.service_account,
            &SERVICE_ACCOUNT,
            "NAME or NAMESPACE/NAME of a ServiceAccount",
        ),
    ];
    for (value, pattern, what) in checks {
        if let Some(value) = value {
            if !pattern.is_match(value) {
                return Err(format!("{value:?} is not {what}"));
            }
        }
    }
    Ok(())
}
