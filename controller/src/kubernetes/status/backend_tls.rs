//! A BackendTLSPolicy's status, as the Gateway API words it: an entry per ancestor (each Weir
//! Gateway with a route to a Service the policy targets), with `Accepted` (False: `Invalid`
//! for a field Weir cannot take, named (the policy then trusts nothing); `Conflicted` for one an older policy overrides;
//! `NoValidCACertificate` for one none of whose CA references gives a certificate)
//! and `ResolvedRefs` (False: `InvalidCACertificateRef` or `InvalidKind` for CA certificates
//! that cannot be had, in which case connections to its Services fail).

use gateway_api::apis::standard::backendtlspolicies::BackendTlsPolicy;
use serde_json::{json, Value};
use weir_api::{Object, ObjectKey, Objects};

use super::{
    desired::{accepted_ok, condition, is_weir_gateway},
    listeners::GATEWAY_GROUP,
    GATEWAY_CONTROLLER,
};

/// The status of `policy`, given why it was refused (if it was) and its warnings; `None` when
/// no Weir Gateway routes to what it targets (there is no ancestor to report for).
pub(super) fn status(
    objects: &Objects,
    policy: &BackendTlsPolicy,
    key: &ObjectKey,
    refused: Option<String>,
    warnings: &[String],
) -> Option<Value> {
    let generation = policy.metadata.generation;
    let ancestors = ancestors(objects, policy, key);
    if ancestors.is_empty() {
        return None;
    }
    let found = |reason: &str| warnings.iter().find(|w| w.starts_with(reason)).cloned();
    let not_accepted = ["Conflicted", "Invalid:", "NoValidCACertificate"]
        .into_iter()
        .find_map(|reason| Some((reason.trim_end_matches(':'), found(reason)?)));
    let accepted = match (refused, not_accepted) {
        (Some(message), _) => condition("Accepted", false, "Invalid", &message, generation),
        (None, Some((reason, message))) => {
            condition("Accepted", false, reason, &message, generation)
        }
        (None, None) => accepted_ok(generation),
    };
    let resolved = ["InvalidKind", "InvalidCACertificateRef"]
        .into_iter()
        .find_map(|reason| Some((reason, found(reason)?)))
        .map_or_else(
            || {
                condition(
                    "ResolvedRefs",
                    true,
                    "ResolvedRefs",
                    "every reference resolved",
                    generation,
                )
            },
            |(reason, message)| condition("ResolvedRefs", false, reason, &message, generation),
        );
    let ours = ancestors.into_iter().map(|ancestor| {
        json!({
            "ancestorRef": ancestor,
            "controllerName": GATEWAY_CONTROLLER,
            "conditions": [accepted.clone(), resolved.clone()],
        })
    });
    // Other controllers' entries stay as they are.
    let others = policy
        .status
        .iter()
        .flat_map(|s| s.ancestors.iter())
        .filter(|a| a.controller_name != GATEWAY_CONTROLLER)
        .filter_map(|a| serde_json::to_value(a).ok());
    Some(json!({"ancestors": others.chain(ours).collect::<Vec<_>>()}))
}

/// The Weir Gateways that routes to the policy's target Services are attached to.
fn ancestors(objects: &Objects, policy: &BackendTlsPolicy, key: &ObjectKey) -> Vec<Value> {
    let targets: Vec<&str> = policy
        .spec
        .target_refs
        .iter()
        .filter(|t| t.group.is_empty() && t.kind == "Service")
        .map(|t| t.name.as_str())
        .collect();
    let mut gateways: Vec<(String, String)> = Vec::new();
    for (object, _) in objects.iter() {
        let route = match object {
            Object::HttpRoute(r) => serde_json::to_value(r),
            Object::GrpcRoute(r) => serde_json::to_value(r),
            _ => continue,
        }
        .unwrap_or_default();
        let namespace = route["metadata"]["namespace"].as_str().unwrap_or_default();
        let uses = route["spec"]["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|r| r["backendRefs"].as_array().into_iter().flatten())
            .any(|b| {
                b["group"].as_str().unwrap_or("").is_empty()
                    && b["kind"].as_str().unwrap_or("Service") == "Service"
                    && b["namespace"].as_str().unwrap_or(namespace) == key.namespace
                    && targets.contains(&b["name"].as_str().unwrap_or_default())
            });
        if !uses {
            continue;
        }
        for parent in route["spec"]["parentRefs"].as_array().into_iter().flatten() {
            let ns = parent["namespace"]
                .as_str()
                .unwrap_or(namespace)
                .to_string();
            let name = parent["name"].as_str().unwrap_or_default().to_string();
            let gateway = parent["kind"].as_str().unwrap_or("Gateway") == "Gateway";
            if gateway
                && is_weir_gateway(objects, &ns, &name)
                && !gateways.contains(&(ns.clone(), name.clone()))
            {
                gateways.push((ns, name));
            }
        }
    }
    gateways.sort();
    gateways
        .into_iter()
        .map(|(namespace, name)| {
            json!({"group": GATEWAY_GROUP, "kind": "Gateway", "namespace": namespace, "name": name})
        })
        .collect()
}
