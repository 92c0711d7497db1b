//! What status each reported object should have, from the compile's outcome.

use gateway_api::apis::standard::gateways::GatewayListeners;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};
use weir_api::{
    compile::{
        listener_conflict, serves_ingress, FRONTEND_WARNING, GATEWAY_CLASS,
        NOT_ALLOWED_BY_LISTENERS, NO_MATCHING_LISTENER_HOSTNAME, NO_MATCHING_PARENT,
        SUPPORTED_FEATURES,
    },
    model::StrictCoverage,
    Object, ObjectKey, Objects,
};

use super::{messages, GATEWAY_CONTROLLER, OPTED_OUT};
use weir_api::Rejection;

/// The status every reported object should have: `(key, current status, desired status)`.
pub(super) fn desired(
    objects: &Objects,
    rejected: &[Rejection],
    warnings: &[String],
    strict: &[StrictCoverage],
    addresses: &[String],
) -> Vec<(ObjectKey, Value, Value)> {
    let refused = |key: &ObjectKey| {
        let name = key.to_string();
        rejected.iter().find(|r| r.object == name).map(messages)
    };
    let warned = |key: &ObjectKey| {
        let prefix = format!("{key}: ");
        warnings
            .iter()
            .filter_map(move |w| w.strip_prefix(&prefix).map(str::to_string))
            .collect::<Vec<String>>()
    };
    // A reference that did not resolve, with the Gateway API's reason for the first one.
    let unresolved = |key: &ObjectKey| {
        let found: Vec<(&str, String)> = warned(key)
            .into_iter()
            .filter_map(|w| Some((reference_reason(&w)?, w)))
            .collect();
        let reason = found.first()?.0;
        let messages: Vec<String> = found.into_iter().map(|(_, w)| w).collect();
        Some((reason, messages.join("; ")))
    };
    // Why a route is not attached to its parent `i`: the reason opens the compile's warning.
    let detached = |key: &ObjectKey, i: usize| {
        let prefix = format!("not attached to spec.parentRefs[{i}] (");
        warned(key).into_iter().find_map(|w| {
            let why = w.strip_prefix(&prefix)?.trim_end_matches(')');
            let reason = [
                NO_MATCHING_PARENT,
                NOT_ALLOWED_BY_LISTENERS,
                NO_MATCHING_LISTENER_HOSTNAME,
            ]
            .into_iter()
            .find(|r| why.starts_with(r))?;
            Some((reason, why.to_string()))
        })
    };
    let mut out = Vec::new();
    for (object, _) in objects.iter() {
        let key = object.key();
        let generation = object.metadata().generation;
        let accepted = || match refused(&key) {
            None => accepted_ok(generation),
            Some(message) => condition("Accepted", false, "Invalid", &message, generation),
        };
        let resolved = || match unresolved(&key) {
            None => condition(
                "ResolvedRefs",
                true,
                "ResolvedRefs",
                "every reference resolved",
                generation,
            ),
            Some((reason, message)) => {
                condition("ResolvedRefs", false, reason, &message, generation)
            }
        };
        // A route's reasons for its parent `i`: refused for a value Weir does not take (the
        // message names the field), or not attached to that parent (why), else accepted.
        let route_accepted = |i: usize| match (refused(&key), detached(&key, i)) {
            (Some(message), _) => {
                condition("Accepted", false, "UnsupportedValue", &message, generation)
            }
            (None, Some((reason, message))) => {
                condition("Accepted", false, reason, &message, generation)
            }
            (None, None) => accepted_ok(generation),
        };
        let status = match object {
            Object::BackendTlsPolicy(policy) => {
                match super::backend_tls::status(
                    objects,
                    policy,
                    &key,
                    refused(&key),
                    &warned(&key),
                ) {
                    Some(status) => status,
                    None => continue,
                }
            }
            Object::MeshTLSPolicy(_) => {
                let mut conditions = vec![accepted(), resolved()];
                conditions.extend(enforced(strict, &key, generation));
                json!({ "conditions": conditions })
            }
            Object::TrafficPolicy(_)
            | Object::AuthPolicy(_)
            | Object::RateLimitPolicy(_)
            | Object::AccessPolicy(_) => json!({"conditions": [accepted(), resolved()]}),
            // Every route kind alike: an entry per parentRef that is a Weir Gateway.
            Object::HttpRoute(_) | Object::GrpcRoute(_) | Object::TlsRoute(_) => {
                let value = match object {
                    Object::HttpRoute(r) => serde_json::to_value(r),
                    Object::GrpcRoute(r) => serde_json::to_value(r),
                    Object::TlsRoute(r) => serde_json::to_value(r),
                    _ => Ok(Value::Null),
                }
                .unwrap_or_default();
                let parents = value["spec"]["parentRefs"].as_array().cloned();
                let ours: Vec<Value> = parents
                    .into_iter()
                    .flatten()
                    .enumerate()
                    .filter(|(_, p)| {
                        let namespace = p["namespace"].as_str().unwrap_or(&key.namespace);
                        p["kind"].as_str().unwrap_or("Gateway") == "Gateway"
                            && is_weir_gateway(
                                objects,
                                namespace,
                                p["name"].as_str().unwrap_or_default(),
                            )
                    })
                    .map(|(i, p)| {
                        json!({
                            "parentRef": p,
                            "controllerName": GATEWAY_CONTROLLER,
                            "conditions": [route_accepted(i), resolved()],
                        })
                    })
                    .collect();
                if ours.is_empty() {
                    continue;
                }
                // Other controllers' entries stay as they are.
                let others = value["status"]["parents"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["controllerName"] != GATEWAY_CONTROLLER)
                    .cloned();
                json!({"parents": others.chain(ours).collect::<Vec<_>>()})
            }
            Object::Gateway(gateway) if gateway.spec.gateway_class_name == GATEWAY_CLASS => {
                let ok = refused(&key).is_none();
                let all = &gateway.spec.listeners;
                let problems: Vec<Option<ListenerProblem>> = all
                    .iter()
                    .map(|l| listener_problem(&key, l, all, &warned(&key), objects))
                    .collect();
                let listeners: Vec<Value> = all
                    .iter()
                    .zip(&problems)
                    .map(|(l, &problem)| {
                        let conditions = listener_conditions(ok, problem, generation);
                        let kinds = match problem {
                            Some(ListenerProblem::Protocol) => json!([]),
                            _ => json!(supported_kinds(l)
                                .iter()
                                .map(|k| json!({"group": GATEWAY_GROUP, "kind": k}))
                                .collect::<Vec<_>>()),
                        };
                        json!({
                            "name": l.name,
                            "supportedKinds": kinds,
                            "attachedRoutes": attached_routes(objects, rejected, &key, l, &warned),
                            "conditions": conditions,
                        })
                    })
                    .collect();
                // Accepted with the reason ListenersNotValid when some listener is not (False
                // when none is), as the spec words it.
                let invalid = problems.iter().filter(|p| p.is_some()).count();
                let gateway_accepted = match (ok, invalid) {
                    (true, 0) | (false, _) => accepted(),
                    (true, n) if n == problems.len() => condition(
                        "Accepted",
                        false,
                        "ListenersNotValid",
                        "no listener is valid: see each listener's conditions",
                        generation,
                    ),
                    (true, _) => condition(
                        "Accepted",
                        true,
                        "ListenersNotValid",
                        "some listeners are not valid: see their conditions",
                        generation,
                    ),
                };
                let programmed = if ok {
                    condition(
                        "Programmed",
                        true,
                        "Programmed",
                        "served by weir-ingress",
                        generation,
                    )
                } else {
                    condition(
                        "Programmed",
                        false,
                        "Invalid",
                        "not served: see Accepted",
                        generation,
                    )
                };
                let mut conditions = vec![gateway_accepted, programmed];
                // Client certificates asked for but not required somewhere: the spec has the
                // Gateway say so.
                if insecure_frontend(gateway) {
                    conditions.push(condition(
                        "InsecureFrontendValidationMode",
                        true,
                        "ConfigurationChanged",
                        "spec.tls.frontend lets clients in without a valid certificate (AllowInsecureFallback)",
                        generation,
                    ));
                }
                json!({
                    "addresses": addresses.iter().map(|a| json!({
                        "type": if a.parse::<std::net::IpAddr>().is_ok() { "IPAddress" } else { "Hostname" },
                        "value": a,
                    })).collect::<Vec<_>>(),
                    "conditions": conditions,
                    "listeners": listeners,
                })
            }
            // A GatewayClass naming Weir's controller: accepted when it is the class Weir
            // serves, with the features it supports; another one, or one with parameters
            // (Weir takes none), says why not.
            Object::GatewayClass(class) if class.spec.controller_name == GATEWAY_CONTROLLER => {
                let accepted = if key.name != GATEWAY_CLASS {
                    let message =
                        format!("Weir serves the GatewayClass named {GATEWAY_CLASS} alone");
                    condition("Accepted", false, "Unsupported", &message, generation)
                } else if class.spec.parameters_ref.is_some() {
                    let message = "Weir's GatewayClass takes no parametersRef";
                    condition("Accepted", false, "InvalidParameters", message, generation)
                } else {
                    let message = "Gateways of this class are served by weir-ingress";
                    condition("Accepted", true, "Accepted", message, generation)
                };
                let features: Vec<Value> = SUPPORTED_FEATURES
                    .iter()
                    .map(|f| json!({"name": f}))
                    .collect();
                json!({"conditions": [accepted], "supportedFeatures": features})
            }
            Object::Ingress(ingress) if serves_ingress(objects, ingress) => {
                let ingress_addresses: Vec<Value> = addresses
                    .iter()
                    .map(|a| match a.parse::<std::net::IpAddr>() {
                        Ok(_) => json!({"ip": a}),
                        Err(_) => json!({"hostname": a}),
                    })
                    .collect();
                json!({"loadBalancer": {"ingress": ingress_addresses}})
            }
            _ => continue,
        };
        let current = current_status(object);
        out.push((key, current, status));
    }
    out
}

/// `Enforced` on a STRICT MeshTLSPolicy: False (`PodsOptedOut`, naming them) while pods it
/// governs still take plaintext. Policies of other modes promise no refusal, so get none.
fn enforced(strict: &[StrictCoverage], key: &ObjectKey, generation: Option<i64>) -> Option<Value> {
    let coverage = strict
        .iter()
        .find(|c| c.namespace == key.namespace && c.name == key.name)?;
    Some(if coverage.uncovered.is_empty() {
        condition(
            "Enforced",
            true,
            "AllPodsCovered",
            "every pod it governs is meshed with no inbound port skipped",
            generation,
        )
    } else {
        let message = format!("STRICT does not cover {}", coverage.summary());
        condition("Enforced", false, OPTED_OUT, &message, generation)
    })
}

fn current_status(object: &Object) -> Value {
    let value = match object {
        Object::TrafficPolicy(o) => serde_json::to_value(&o.status),
        Object::AuthPolicy(o) => serde_json::to_value(&o.status),
        Object::RateLimitPolicy(o) => serde_json::to_value(&o.status),
        Object::MeshTLSPolicy(o) => serde_json::to_value(&o.status),
        Object::AccessPolicy(o) => serde_json::to_value(&o.status),
        Object::HttpRoute(o) => serde_json::to_value(&o.status),
        Object::GrpcRoute(o) => serde_json::to_value(&o.status),
        Object::TlsRoute(o) => serde_json::to_value(&o.status),
        Object::BackendTlsPolicy(o) => serde_json::to_value(&o.status),
        Object::Gateway(o) => serde_json::to_value(&o.status),
        Object::GatewayClass(o) => serde_json::to_value(&o.status),
        Object::Ingress(o) => serde_json::to_value(&o.status),
        _ => Ok(Value::Null),
    };
    value.unwrap_or_default()
}

pub(super) fn is_weir_gateway(objects: &Objects, namespace: &str, name: &str) -> bool {
    let key = ObjectKey {
        kind: "Gateway",
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    matches!(objects.get(&key), Some((Object::Gateway(g), _)) if g.spec.gateway_class_name == GATEWAY_CLASS)
}

/// Accepted routes (of the kinds the listener takes) attached to this listener of this
/// Gateway.
fn attached_routes(
    objects: &Objects,
    rejected: &[Rejection],
    gateway: &ObjectKey,
    l: &GatewayListeners,
    warned: &dyn Fn(&ObjectKey) -> Vec<String>,
) -> usize {
    let (listener, kinds) = (&l.name, supported_kinds(l));
    objects
        .iter()
        .filter(|(o, _)| kinds.contains(&o.key().kind))
        .filter(|(o, _)| {
            let key = o.key().to_string();
            !rejected.iter().any(|x| x.object == key)
        })
        .filter(|(o, _)| {
            let route = match o {
                Object::HttpRoute(r) => serde_json::to_value(&r.spec),
                Object::GrpcRoute(r) => serde_json::to_value(&r.spec),
                Object::TlsRoute(r) => serde_json::to_value(&r.spec),
                _ => Ok(Value::Null),
            }
            .unwrap_or_default();
            let route_ns = o.metadata().namespace.clone().unwrap_or_default();
            // A parent the compile found no listener of to take the route does not count.
            let detached = warned(&o.key());
            route["parentRefs"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .any(|(i, p)| {
                    let flagged = format!("not attached to spec.parentRefs[{i}] (");
                    p["name"] == gateway.name.as_str()
                        && p["namespace"].as_str().unwrap_or(&route_ns) == gateway.namespace
                        && p["sectionName"]
                            .as_str()
                            .is_none_or(|s| s == listener.as_str())
                        && !detached.iter().any(|w| w.starts_with(&flagged))
                })
        })
        .count()
}

/// `Accepted`: true, compiled and serving.
pub(super) fn accepted_ok(generation: Option<i64>) -> Value {
    condition(
        "Accepted",
        true,
        "Accepted",
        "compiled and serving",
        generation,
    )
}

pub(super) fn condition(
    kind: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Value {
    let mut condition = json!({
        "type": kind,
        "status": if ok { "True" } else { "False" },
        "reason": reason,
        "message": message,
        "lastTransitionTime": now(),
    });
    if let Some(generation) = generation {
        condition["observedGeneration"] = generation.into();
    }
    condition
}

/// A condition whose status did not change keeps the time it last changed, as the API
/// conventions define `lastTransitionTime`.
pub(super) fn keep_transition_times(status: &mut Value, current: &Value) {
    fn walk(value: &mut Value, current: &Value) {
        match value {
            Value::Object(map) => {
                if let (Some(kind), Some(state)) =
                    (map.get("type").cloned(), map.get("status").cloned())
                {
                    if current["type"] == kind && current["status"] == state {
                        if let Some(time) = current.get("lastTransitionTime") {
                            map.insert("lastTransitionTime".into(), time.clone());
                        }
                    }
                }
                for (field, inner) in map.iter_mut() {
                    walk(inner, current.get(field).unwrap_or(&Value::Null));
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    // Conditions pair up by type, list entries by position.
                    let paired = current
                        .as_array()
                        .and_then(|c| {
                            c.iter()
                                .find(|x| {
                                    x.get("type").is_some() && x.get("type") == item.get("type")
                                })
                                .or_else(|| c.get(i))
                        })
                        .unwrap_or(&Value::Null);
                    walk(item, paired);
                }
            }
            _ => {}
        }
    }
    walk(status, current);
}

fn now() -> String {
    Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The Gateway API's `ResolvedRefs` reason for a compile warning about a reference, if it is
/// one: a backend of another kind than Service, one in another namespace without a
/// ReferenceGrant, one (or its port, or a Secret) that does not exist.
fn reference_reason(warning: &str) -> Option<&'static str> {
    if warning.contains("is not a Service") {
        Some("InvalidKind")
    } else if warning.starts_with("no ReferenceGrant") {
        Some("RefNotPermitted")
    } else if warning.contains("not found") || warning.contains("has no port") {
        Some("BackendNotFound")
    } else {
        None
    }
}

/// What keeps a listener from being served as written, in the order the Gateway API's
/// conditions report it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ListenerProblem {
    /// Not HTTP, HTTPS or TLS (`Accepted` False, `UnsupportedProtocol`; no supported kinds).
    Protocol,
    /// Another listener on its port speaks another protocol, or HTTPS beside TLS with its
    /// hostname (`Conflicted`, `ProtocolConflict`; `Accepted` False, `Invalid`).
    ProtocolConflict,
    /// Another listener on its port has its hostname (`Conflicted`, `HostnameConflict`).
    HostnameConflict,
    /// `allowedRoutes.kinds` names a kind Weir does not serve (`ResolvedRefs` False,
    /// `InvalidRouteKinds`; the kinds it does serve are its `supportedKinds`).
    InvalidRouteKinds,
    /// Its certificate's Secret is in another namespace without a ReferenceGrant
    /// (`ResolvedRefs` False, `RefNotPermitted`).
    RefNotPermitted,
    /// A certificateRef is not a core Secret, or its Secret does not exist or holds no
    /// certificate and key (`ResolvedRefs` False, `InvalidCertificateRef`).
    InvalidCertificateRef,
    /// The client CA certificates its port's `spec.tls.frontend` names cannot be had
    /// (`Accepted` False, `NoValidCACertificate`; `ResolvedRefs` False with the reason).
    NoValidCaCertificate(&'static str),
}

fn listener_problem(
    gateway: &ObjectKey,
    l: &GatewayListeners,
    all: &[GatewayListeners],
    gateway_warnings: &[String],
    objects: &Objects,
) -> Option<ListenerProblem> {
    if !matches!(l.protocol.as_str(), "HTTP" | "HTTPS" | "TLS") {
        return Some(ListenerProblem::Protocol);
    }
    match listener_conflict(l, all) {
        Some("ProtocolConflict") => return Some(ListenerProblem::ProtocolConflict),
        Some(_) => return Some(ListenerProblem::HostnameConflict),
        None => {}
    }
    let named = l.allowed_routes.as_ref().and_then(|a| a.kinds.as_ref());
    if named.is_some_and(|kinds| kinds.len() > supported_kinds(l).len()) {
        return Some(ListenerProblem::InvalidRouteKinds);
    }
    // The Gateway's own warnings about this listener (another object's cannot start so).
    let own = format!("listener {}: ", l.name);
    if gateway_warnings
        .iter()
        .any(|w| w.starts_with(&own) && w.contains("no ReferenceGrant"))
    {
        return Some(ListenerProblem::RefNotPermitted);
    }
    // Each certificate: a core Secret that exists and holds a certificate and key.
    let refs = l.tls.as_ref().and_then(|t| t.certificate_refs.as_ref());
    for cert in refs.into_iter().flatten() {
        let core = cert.kind.as_deref().unwrap_or("Secret") == "Secret"
            && cert.group.as_deref().unwrap_or("").is_empty();
        let key = ObjectKey {
            kind: "Secret",
            namespace: cert.namespace.clone().unwrap_or(gateway.namespace.clone()),
            name: cert.name.clone(),
        };
        let usable = match objects.get(&key) {
            Some((Object::Secret(secret), _)) => ["tls.crt", "tls.key"].iter().all(|k| {
                secret.data.as_ref().is_some_and(|d| d.contains_key(*k))
                    || secret
                        .string_data
                        .as_ref()
                        .is_some_and(|d| d.contains_key(*k))
            }),
            _ => false,
        };
        if !core || !usable {
            return Some(ListenerProblem::InvalidCertificateRef);
        }
    }
    // Its port's client CA certificates (the compile's warnings name the port).
    let port = format!("{FRONTEND_WARNING}{}: ", l.port);
    let about_port: Vec<&str> = gateway_warnings
        .iter()
        .filter_map(|w| w.strip_prefix(&port))
        .collect();
    if l.protocol == "HTTPS"
        && about_port
            .iter()
            .any(|w| w.starts_with("NoValidCACertificate"))
    {
        let reason = [
            "RefNotPermitted",
            "InvalidCACertificateKind",
            "InvalidCACertificateRef",
        ]
        .into_iter()
        .find(|r| about_port.iter().any(|w| w.starts_with(r)))
        .unwrap_or("InvalidCACertificateRef");
        return Some(ListenerProblem::NoValidCaCertificate(reason));
    }
    None
}

/// Whether `gateway` lets clients in without a valid certificate somewhere
/// (`AllowInsecureFallback`).
fn insecure_frontend(gateway: &gateway_api::apis::standard::gateways::Gateway) -> bool {
    let Some(frontend) = gateway.spec.tls.as_ref().and_then(|t| t.frontend.as_ref()) else {
        return false;
    };
    let fallback = serde_json::to_value(frontend)
        .unwrap_or_default()
        .to_string();
    fallback.contains("AllowInsecureFallback")
}

fn listener_conditions(
    gateway_ok: bool,
    problem: Option<ListenerProblem>,
    generation: Option<i64>,
) -> Vec<Value> {
    use ListenerProblem as P;
    let accepted = match (gateway_ok, problem) {
        (false, _) => condition(
            "Accepted",
            false,
            "Invalid",
            "the Gateway was refused",
            generation,
        ),
        (true, Some(P::Protocol)) => condition(
            "Accepted",
            false,
            "UnsupportedProtocol",
            "Weir serves HTTP, HTTPS and TLS listeners",
            generation,
        ),
        (true, Some(P::ProtocolConflict)) => condition(
            "Accepted",
            false,
            "Invalid",
            "another listener on its port speaks another protocol: neither takes routes",
            generation,
        ),
        (true, Some(P::NoValidCaCertificate(_))) => condition(
            "Accepted",
            false,
            "NoValidCACertificate",
            "none of the client CA certificates its port's spec.tls.frontend names can be had: no client is let in",
            generation,
        ),
        (true, _) => condition("Accepted", true, "Accepted", "", generation),
    };
    let conflicted = match problem {
        Some(P::ProtocolConflict) => condition(
            "Conflicted",
            true,
            "ProtocolConflict",
            "another listener on its port speaks another protocol (HTTPS and TLS may share a port with different hostnames)",
            generation,
        ),
        Some(P::HostnameConflict) => condition(
            "Conflicted",
            true,
            "HostnameConflict",
            "another listener on its port has its hostname",
            generation,
        ),
        _ => condition("Conflicted", false, "NoConflicts", "", generation),
    };
    let resolved = match problem {
        Some(P::InvalidRouteKinds) => condition(
            "ResolvedRefs",
            false,
            "InvalidRouteKinds",
            "allowedRoutes.kinds names a kind Weir does not serve on this listener's protocol (HTTPRoute and GRPCRoute on HTTP and HTTPS, TLSRoute on TLS)",
            generation,
        ),
        Some(P::RefNotPermitted) => condition(
            "ResolvedRefs",
            false,
            "RefNotPermitted",
            "its certificate's Secret is in another namespace and no ReferenceGrant allows it",
            generation,
        ),
        Some(P::InvalidCertificateRef) => condition(
            "ResolvedRefs",
            false,
            "InvalidCertificateRef",
            "a certificateRef is not a core Secret, or its Secret does not exist or holds no tls.crt and tls.key",
            generation,
        ),
        Some(P::NoValidCaCertificate(reason)) => condition(
            "ResolvedRefs",
            false,
            reason,
            "a client CA certificate reference of its port's spec.tls.frontend does not resolve",
            generation,
        ),
        _ => condition("ResolvedRefs", true, "ResolvedRefs", "", generation),
    };
    let programmed = gateway_ok && problem.is_none();
    let programmed = match programmed {
        true => condition("Programmed", true, "Programmed", "", generation),
        false => condition(
            "Programmed",
            false,
            "Invalid",
            "see the other conditions",
            generation,
        ),
    };
    vec![accepted, conflicted, resolved, programmed]
}

pub(super) const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// The route kinds a listener takes that Weir serves: HTTPRoute and GRPCRoute on HTTP and
/// HTTPS listeners, TLSRoute on TLS listeners; those of them its `allowedRoutes.kinds` names
/// when it names any.
fn supported_kinds(l: &GatewayListeners) -> Vec<&'static str> {
    let named = l.allowed_routes.as_ref().and_then(|a| a.kinds.as_ref());
    let served: &[&'static str] = match l.protocol.as_str() {
        "TLS" => &["TLSRoute"],
        _ => &["HTTPRoute", "GRPCRoute"],
    };
    served
        .iter()
        .copied()
        .filter(|kind| {
            named.is_none_or(|kinds| {
                kinds.iter().any(|k| {
                    k.kind == *kind && k.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP
                })
            })
        })
        .collect()
}
