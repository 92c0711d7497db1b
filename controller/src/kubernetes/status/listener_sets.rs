//! A ListenerSet's status: whether its Gateway takes it (`NotAllowed`, `ParentNotAccepted`),
//! and each of its listeners as a Gateway's listener is reported, except that a listener that
//! yields to an earlier one (its Gateway's, or an older ListenerSet's) says so in `Accepted` and
//! `Programmed` too, as the Gateway API's ListenerSet tests expect.

use gateway_api::apis::standard::listenersets::ListenerSet;
use serde_json::{json, Value};
use weir_api::{
    compile::listener_sets::{merged_name, set_listeners, set_parent, verdicts, SetParent},
    model::Unserved,
    Object, ObjectKey, Objects, Rejection,
};

use super::{
    desired::condition,
    listeners::{
        attached_routes, by_listeners, listener_conditions, listener_problem, programmed_ok,
        supported_kinds, ListenerProblem, Written, GATEWAY_GROUP,
    },
    messages,
};

/// The status of `set` and whether it is accepted (its Gateway counts it among
/// `attachedListenerSets`); `None` when it names no Gateway of Weir's.
pub(super) fn status(
    objects: &Objects,
    rejected: &[Rejection],
    set: &ListenerSet,
    warned: &dyn Fn(&ObjectKey) -> Vec<String>,
    unserved: &[Unserved],
) -> Option<(bool, Value)> {
    let key = Object::ListenerSet(set.clone()).key();
    let generation = set.metadata.generation;
    let refusal = |k: &ObjectKey| {
        let name = k.to_string();
        rejected.iter().find(|r| r.object == name).map(messages)
    };
    let (gateway, taken) = match set_parent(objects, set) {
        SetParent::NotOurs => return None,
        SetParent::NotAllowed(g) => (g, false),
        SetParent::Taken(g) => (g, true),
    };
    let gateway_key = Object::Gateway(gateway.clone()).key();
    let neither = |reason: &str, message: &str| {
        let conditions = ["Accepted", "Programmed"]
            .map(|kind| condition(kind, false, reason, message, generation));
        Some((false, json!({ "conditions": conditions })))
    };
    if refusal(&gateway_key).is_some() {
        let message = format!("its parent {gateway_key} is not accepted: see its status");
        return neither("ParentNotAccepted", &message);
    }
    if !taken {
        let message = format!(
            "{gateway_key} does not take ListenerSets from namespace {} (spec.allowedListeners)",
            key.namespace
        );
        return neither("NotAllowed", &message);
    }
    if let Some(message) = refusal(&key) {
        return neither("Invalid", &message);
    }
    // Each set listener's verdict: whether it yields to another, and by which conflict.
    let verdicts = verdicts(objects, gateway);
    let all = &gateway.spec.listeners;
    let (set_warnings, gateway_warnings) = (warned(&key), warned(&gateway_key));
    let mut valid = 0;
    let listeners: Vec<Value> = set_listeners(set)
        .iter()
        .filter_map(|l| {
            let name = merged_name(set, &l.name);
            let (as_merged, verdict) = verdicts.iter().find(|(m, _)| m.name == name)?;
            let written = Written {
                namespace: &key.namespace,
                name: &l.name,
                warnings: &set_warnings,
                gateway_warnings: &gateway_warnings,
            };
            let problem = match *verdict {
                Some("HostnameConflict") => Some(ListenerProblem::HostnameConflict),
                Some("ProtocolConflict") => Some(ListenerProblem::ProtocolConflict),
                Some(_) => Some(ListenerProblem::TooManyListeners),
                None => listener_problem(&gateway_key, as_merged, all, &written, objects, unserved),
            };
            valid += usize::from(problem.is_none());
            let mut conditions = listener_conditions(true, problem, generation);
            let conflict = match problem {
                Some(ListenerProblem::HostnameConflict) => Some("HostnameConflict"),
                Some(ListenerProblem::ProtocolConflict) => Some("ProtocolConflict"),
                _ => None,
            };
            if let Some(reason) = conflict {
                let message = "another listener on its port (its Gateway's, or an older ListenerSet's) comes first";
                for c in conditions.iter_mut() {
                    if c["type"] == "Accepted" || c["type"] == "Programmed" {
                        *c = condition(c["type"].as_str()?, false, reason, message, generation);
                    }
                }
            }
            let kinds: Vec<Value> = match problem {
                Some(ListenerProblem::Protocol) => Vec::new(),
                _ => supported_kinds(l)
                    .iter()
                    .map(|k| json!({"group": GATEWAY_GROUP, "kind": k}))
                    .collect(),
            };
            Some(json!({
                "name": l.name,
                "supportedKinds": kinds,
                "attachedRoutes": attached_routes(objects, rejected, &key, l, warned),
                "conditions": conditions,
            }))
        })
        .collect();
    let accepted = by_listeners(
        valid,
        listeners.len(),
        "its Gateway takes its listeners",
        generation,
    );
    let programmed = match valid {
        0 => condition(
            "Programmed",
            false,
            "ListenersNotValid",
            "no listener is valid: see each listener's conditions",
            generation,
        ),
        _ => programmed_ok(generation),
    };
    let conditions = [accepted, programmed];
    Some((
        valid > 0,
        json!({"conditions": conditions, "listeners": listeners}),
    ))
}

/// How many ListenerSets `gateway` takes and accepts (`status.attachedListenerSets`).
pub(super) fn attached_sets(
    objects: &Objects,
    rejected: &[Rejection],
    gateway: &ObjectKey,
    warned: &dyn Fn(&ObjectKey) -> Vec<String>,
    unserved: &[Unserved],
) -> usize {
    objects
        .iter()
        .filter_map(|(o, _)| match o {
            Object::ListenerSet(set) => Some(set),
            _ => None,
        })
        .filter(|set| matches!(set_parent(objects, set), SetParent::Taken(g) if Object::Gateway(g.clone()).key() == *gateway))
        .filter_map(|set| status(objects, rejected, set, warned, unserved))
        .filter(|(accepted, _)| *accepted)
        .count()
}

/// Whether a route's parentRef of kind ListenerSet (`namespace/name`) names one whose Gateway
/// is Weir's: its status entry is Weir's to write.
pub(super) fn is_weir_set(objects: &Objects, namespace: &str, name: &str) -> bool {
    let key = ObjectKey {
        kind: "ListenerSet",
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    matches!(objects.get(&key), Some((Object::ListenerSet(set), _))
        if !matches!(set_parent(objects, set), SetParent::NotOurs))
}
