//! ListenerSets: listeners a Gateway takes from objects of their own, when its
//! `spec.allowedListeners` lets their namespace in (none by default). The Gateway is compiled
//! with its own listeners first, then those of the ListenerSets it takes, oldest first (then
//! by namespace and name), each renamed `NAMESPACE/SET/LISTENER`: a name no Gateway listener
//! can have (listener names are DNS labels). Where two listeners conflict, the one earlier in
//! that order keeps its port and the later one is `Conflicted` (within one Gateway or one
//! ListenerSet both are, as before). Routes reach a ListenerSet's listeners by a parentRef of
//! kind `ListenerSet` only; a parentRef to the Gateway takes its own listeners alone.

use gateway_api::apis::standard::{
    gateways::{Gateway, GatewayAllowedListenersNamespacesFrom as ListenersFrom, GatewayListeners},
    listenersets::ListenerSet,
};

use super::{selects, GATEWAY_CLASS, GATEWAY_GROUP};
use crate::objects::{Object, Objects};

/// How a ListenerSet stands with the Gateway it names.
pub enum SetParent<'a> {
    /// Its Gateway (of class `weir`) takes its listeners.
    Taken(&'a Gateway),
    /// Its Gateway does not let its namespace in (`spec.allowedListeners`).
    NotAllowed(&'a Gateway),
    /// It names no Gateway of class `weir`: another controller's business.
    NotOurs,
}

/// The Gateway `set` names, and whether it takes the set's listeners.
pub fn set_parent<'a>(objects: &'a Objects, set: &ListenerSet) -> SetParent<'a> {
    let parent = &set.spec.parent_ref;
    let namespace = set.metadata.namespace.as_deref().unwrap_or("default");
    if parent.group.as_deref().unwrap_or(GATEWAY_GROUP) != GATEWAY_GROUP
        || parent.kind.as_deref().unwrap_or("Gateway") != "Gateway"
    {
        return SetParent::NotOurs;
    }
    let parent_namespace = parent.namespace.as_deref().unwrap_or(namespace);
    let gateway = objects.iter().find_map(|(o, _)| match o {
        Object::Gateway(g)
            if g.spec.gateway_class_name == GATEWAY_CLASS
                && g.metadata.namespace.as_deref() == Some(parent_namespace)
                && g.metadata.name.as_deref() == Some(&parent.name) =>
        {
            Some(g)
        }
        _ => None,
    });
    match gateway {
        None => SetParent::NotOurs,
        Some(g) if allows_sets_from(objects, g, namespace) => SetParent::Taken(g),
        Some(g) => SetParent::NotAllowed(g),
    }
}

/// Whether `gateway` takes ListenerSets from `namespace` (`spec.allowedListeners`).
fn allows_sets_from(objects: &Objects, gateway: &Gateway, namespace: &str) -> bool {
    let Some(namespaces) = gateway
        .spec
        .allowed_listeners
        .as_ref()
        .and_then(|a| a.namespaces.as_ref())
    else {
        return false;
    };
    match namespaces.from.as_ref() {
        Some(ListenersFrom::All) => true,
        Some(ListenersFrom::Same) => gateway.metadata.namespace.as_deref() == Some(namespace),
        Some(ListenersFrom::Selector) => namespaces
            .selector
            .as_ref()
            .is_some_and(|s| selects(objects, s, namespace)),
        Some(ListenersFrom::None) | None => false,
    }
}

/// The ListenerSets `gateway` takes, in the order their listeners follow its own.
pub fn taken_sets<'a>(objects: &'a Objects, gateway: &Gateway) -> Vec<&'a ListenerSet> {
    let mut sets: Vec<&ListenerSet> = objects
        .iter()
        .filter_map(|(o, _)| match o {
            Object::ListenerSet(set) => Some(set),
            _ => None,
        })
        .filter(|set| matches!(set_parent(objects, set), SetParent::Taken(g) if same_object(g, gateway)))
        .collect();
    sets.sort_by_key(|s| {
        (
            super::created(&s.metadata),
            s.metadata.namespace.clone(),
            s.metadata.name.clone(),
        )
    });
    sets
}

fn same_object(a: &Gateway, b: &Gateway) -> bool {
    a.metadata.namespace == b.metadata.namespace && a.metadata.name == b.metadata.name
}

/// A ListenerSet's listeners as a Gateway's (the two types have the same fields), with the
/// names they have in the set.
pub fn set_listeners(set: &ListenerSet) -> Vec<GatewayListeners> {
    set.spec
        .listeners
        .iter()
        .filter_map(|l| {
            serde_json::to_value(l)
                .and_then(serde_json::from_value)
                .ok()
        })
        .collect()
}

/// The name a ListenerSet's listener has among its Gateway's: `NAMESPACE/SET/LISTENER`.
pub fn merged_name(set: &ListenerSet, listener: &str) -> String {
    format!(
        "{}/{}/{listener}",
        set.metadata.namespace.as_deref().unwrap_or("default"),
        set.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The ListenerSet (`namespace/name`) a merged listener name comes from, and the listener's
/// name there; `None` for the Gateway's own listeners.
pub fn set_of(listener: &str) -> Option<(&str, &str)> {
    let (set, name) = listener.rsplit_once('/')?;
    Some((set, name))
}

/// `gateway` with the listeners of the ListenerSets it takes after its own.
pub fn merged(objects: &Objects, gateway: &Gateway) -> Gateway {
    let mut merged = gateway.clone();
    for set in taken_sets(objects, gateway) {
        merged
            .spec
            .listeners
            .extend(set_listeners(set).into_iter().map(|mut l| {
                l.name = merged_name(set, &l.name);
                l
            }));
    }
    merged
}
