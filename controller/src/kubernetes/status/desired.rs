//! What status each reported object should have, from the compile's outcome.

use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};
use weir_api::{
    compile::{
        serves_ingress, ADDRESSES_FIELD, GATEWAY_CLASS, NOT_ALLOWED_BY_LISTENERS,
        NO_MATCHING_LISTENER_HOSTNAME, NO_MATCHING_PARENT, PARAMETERS_REF_FIELD,
    },
    model::StrictCoverage,
    Object, ObjectKey, Objects,
};

use super::{
    listener_sets::{self, attached_sets, is_weir_set},
    listeners::{
        attached_routes, by_listeners, insecure_frontend, listener_conditions, listener_problem,
        overlapping_tls, programmed_ok, supported_kinds, unserved_listeners, ListenerProblem,
        Written, GATEWAY_GROUP,
    },
    messages, GATEWAY_CONTROLLER, OPTED_OUT,
};
use weir_api::Rejection;

use super::class::class_status;
use crate::kubernetes::provision::Infra;

/// What status says that the objects do not.
pub(super) struct Around<'a> {
    /// What provisioning did for each Gateway.
    pub infra: &'a Infra,
    /// `--status-address`.
    pub addresses: &'a [String],
    /// The installed Gateway API CRDs' bundle version, when known.
    pub gateway_api: Option<&'a str>,
}

/// The status every reported object should have: `(key, current status, desired status)`.
pub(super) fn desired(
    objects: &Objects,
    rejected: &[Rejection],
    warnings: &[String],
    strict: &[StrictCoverage],
    around: &Around<'_>,
) -> Vec<(ObjectKey, Value, Value)> {
    let (infra, addresses) = (around.infra, around.addresses);
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
    let unserved = unserved_listeners(objects, infra.provisioned());
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
            Object::ListenerSet(set) => {
                match listener_sets::status(objects, rejected, set, &warned, &unserved) {
                    Some((_, status)) => status,
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
            Object::HttpRoute(_)
            | Object::GrpcRoute(_)
            | Object::TlsRoute(_)
            | Object::TcpRoute(_) => {
                let value = match object {
                    Object::HttpRoute(r) => serde_json::to_value(r),
                    Object::GrpcRoute(r) => serde_json::to_value(r),
                    Object::TlsRoute(r) => serde_json::to_value(r),
                    Object::TcpRoute(r) => serde_json::to_value(r),
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
                        let name = p["name"].as_str().unwrap_or_default();
                        match p["kind"].as_str().unwrap_or("Gateway") {
                            "Gateway" => is_weir_gateway(objects, namespace, name),
                            "ListenerSet" => is_weir_set(objects, namespace, name),
                            _ => false,
                        }
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
                let warnings = warned(&key);
                let problems: Vec<Option<ListenerProblem>> = all
                    .iter()
                    .map(|l| {
                        let written = Written {
                            namespace: &key.namespace,
                            name: &l.name,
                            warnings: &warnings,
                            gateway_warnings: &warnings,
                        };
                        listener_problem(&key, l, all, &written, objects, &unserved)
                    })
                    .collect();
                let listeners: Vec<Value> = all
                    .iter()
                    .zip(&problems)
                    .map(|(l, &problem)| {
                        let mut conditions = listener_conditions(ok, problem, generation);
                        if overlapping_tls(l, all) {
                            conditions.push(condition(
                                "OverlappingTLSConfig",
                                true,
                                "OverlappingHostnames",
                                "another HTTPS listener on its port has a hostname in common with this one's: an HTTP/2 client may reuse a connection to one for the other",
                                generation,
                            ));
                        }
                        let current = listener_status(&gateway.status, &l.name);
                        let conditions = with_foreign(conditions, &current["conditions"]);
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
                let unsupported = refused(&key).and_then(|m| match m {
                    m if m.contains(PARAMETERS_REF_FIELD) => Some(("InvalidParameters", m)),
                    m if m.contains(ADDRESSES_FIELD) => Some(("UnsupportedAddress", m)),
                    _ => None,
                });
                let gateway_accepted = match (ok, unsupported) {
                    (false, Some((reason, message))) => {
                        condition("Accepted", false, reason, &message, generation)
                    }
                    (false, None) => accepted(),
                    (true, _) => {
                        let valid = problems.len() - invalid;
                        by_listeners(valid, problems.len(), "compiled and serving", generation)
                    }
                };
                let programmed = match (ok, infra.not_programmed(objects, &key)) {
                    (true, None) => programmed_ok(generation),
                    (true, Some((reason, why))) => {
                        condition("Programmed", false, reason, &why, generation)
                    }
                    (false, _) => condition(
                        "Programmed",
                        false,
                        "Invalid",
                        "not served: see Accepted",
                        generation,
                    ),
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
                let current = serde_json::to_value(&gateway.status).unwrap_or_default();
                let conditions = with_foreign(conditions, &current["conditions"]);
                let sets = attached_sets(objects, rejected, &key, &warned, &unserved);
                json!({
                    "attachedListenerSets": sets,
                    "addresses": infra.addresses(objects, &key, addresses).iter().map(|a| json!({
                        "type": if a.parse::<std::net::IpAddr>().is_ok() { "IPAddress" } else { "Hostname" },
                        "value": a,
                    })).collect::<Vec<_>>(),
                    "conditions": conditions,
                    "listeners": listeners,
                })
            }
            Object::GatewayClass(class) if class.spec.controller_name == GATEWAY_CONTROLLER => {
                class_status(&key.name, class, around.gateway_api, generation)
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

/// `ours` and, after them, the conditions among `current` of types Weir does not write there:
/// another controller's, kept as they are.
fn with_foreign(mut ours: Vec<Value>, current: &Value) -> Vec<Value> {
    let written: Vec<Value> = ours.iter().map(|c| c["type"].clone()).collect();
    let foreign = current.as_array().into_iter().flatten().filter(|c| {
        !written.contains(&c["type"])
            && !WEIR_CONDITIONS.contains(&c["type"].as_str().unwrap_or(""))
    });
    ours.extend(foreign.cloned());
    ours
}

/// Condition types Weir writes on a Gateway or a listener, when they apply: absent from a new
/// status, they are gone, not another controller's.
const WEIR_CONDITIONS: &[&str] = &[
    "Accepted",
    "Programmed",
    "Conflicted",
    "ResolvedRefs",
    "InsecureFrontendValidationMode",
    "OverlappingTLSConfig",
];

/// The current status of listener `name` (null when it has none).
fn listener_status(
    status: &Option<gateway_api::apis::standard::gateways::GatewayStatus>,
    name: &str,
) -> Value {
    let status = serde_json::to_value(status).unwrap_or_default();
    let listeners = status["listeners"].as_array().cloned().unwrap_or_default();
    listeners
        .into_iter()
        .find(|l| l["name"] == name)
        .unwrap_or_default()
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
        Object::TcpRoute(o) => serde_json::to_value(&o.status),
        Object::BackendTlsPolicy(o) => serde_json::to_value(&o.status),
        Object::Gateway(o) => serde_json::to_value(&o.status),
        Object::ListenerSet(o) => serde_json::to_value(&o.status),
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
