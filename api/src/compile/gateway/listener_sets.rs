//! ListenerSets: listeners a Gateway takes from objects of their own, when its
//! `spec.allowedListeners` lets their namespace in (none by default). The Gateway is compiled
//! with its own listeners first, then those of the ListenerSets it takes, oldest first (then
//! by namespace and name), each renamed `NAMESPACE/SET/LISTENER`: a name no Gateway listener
//! can have (listener names are DNS labels). Where a set's listener conflicts with one before
//! it, it yields (`Conflicted`) and is left out of the compile ([`verdicts`], worked out once
//! per Gateway). Routes reach a ListenerSet's listeners by a parentRef of
//! kind `ListenerSet` only; a parentRef to the Gateway takes its own listeners alone.

use gateway_api::apis::standard::{
    gateways::{Gateway, GatewayAllowedListenersNamespacesFrom as ListenersFrom, GatewayListeners},
    listenersets::ListenerSet,
};

use std::collections::HashMap;

use super::{
    attach::{clash, intersect},
    host_match, listener_conflict, selects, GATEWAY_CLASS, GATEWAY_GROUP,
};
use crate::{
    model::HostMatch,
    objects::{Object, Objects},
};

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

/// The most listeners a Gateway takes from ListenerSets; those after them (in precedence
/// order) are `TooManyListeners`. Bounds what one tenant's objects cost every compile.
pub const MAX_SET_LISTENERS: usize = 256;

/// Each listener of the ListenerSets `gateway` takes, renamed ([`merged_name`]), in
/// precedence order, with why it is not served (`HostnameConflict`, `ProtocolConflict`,
/// `TooManyListeners`) or `None`. A set's listener yields to every listener before it that is
/// served (its Gateway's own that do not conflict among themselves, an older set's, one before
/// it in its set). And it may not share a name with a hostname another listener holds: any of
/// its Gateway's own listeners' hostnames, on any port, or another Gateway's listener's on its
/// port; sharing means equal, under a wildcard, covering by a wildcard, or no hostname at all
/// (a listener without one holds no name: it is the port's default). Names stay with the
/// listeners the Gateway owners wrote, on every port: their plaintext port too, where an ACME
/// HTTP-01 challenge for them is answered.
pub fn verdicts(
    objects: &Objects,
    gateway: &Gateway,
) -> Vec<(GatewayListeners, Option<&'static str>)> {
    let own = &gateway.spec.listeners;
    let names = |listeners: &[GatewayListeners]| -> Vec<(i32, HostMatch)> {
        listeners
            .iter()
            .filter_map(|l| Some((l.port, host_match(l.hostname.as_deref()?).ok()?)))
            .collect()
    };
    let own_names = names(own);
    // Other `weir` Gateways' own listeners' names, by port.
    let others: Vec<(i32, HostMatch)> = objects
        .iter()
        .filter_map(|(o, _)| match o {
            Object::Gateway(g)
                if g.spec.gateway_class_name == GATEWAY_CLASS && !same_object(g, gateway) =>
            {
                Some(names(&g.spec.listeners))
            }
            _ => None,
        })
        .flatten()
        .collect();
    let holds = |l: &GatewayListeners| {
        let held = own_names
            .iter()
            .map(|(_, n)| n)
            .chain(others.iter().filter(|(p, _)| *p == l.port).map(|(_, n)| n));
        match l.hostname.as_deref().map(host_match) {
            None => held.count() > 0,
            Some(Ok(name)) => held.into_iter().any(|n| intersect(n, &name).is_some()),
            Some(Err(_)) => true,
        }
    };
    // The served listeners by port: the Gateway's own first.
    let mut served: HashMap<i32, Vec<GatewayListeners>> = HashMap::new();
    for l in own.iter().filter(|l| listener_conflict(l, own).is_none()) {
        served.entry(l.port).or_default().push(l.clone());
    }
    let mut out = Vec::new();
    let mut taken = 0;
    for set in taken_sets(objects, gateway) {
        for mut l in set_listeners(set) {
            l.name = merged_name(set, &l.name);
            let on_port = served.entry(l.port).or_default();
            let verdict = if taken >= MAX_SET_LISTENERS {
                Some("TooManyListeners")
            } else if let Some(clash) = on_port.iter().find_map(|s| clash(&l, s)) {
                Some(clash)
            } else if holds(&l) {
                Some("HostnameConflict")
            } else {
                None
            };
            if verdict.is_none() {
                taken += 1;
                on_port.push(l.clone());
            }
            out.push((l, verdict));
        }
    }
    out
}

/// A hostname as listeners are compared by: lowercase, without a trailing dot.
pub fn normal_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// `gateway` with the listeners of the ListenerSets it takes after its own: those it serves
/// ([`verdicts`]); the others are in no compile, only in the ListenerSets' status.
pub fn merged(objects: &Objects, gateway: &Gateway) -> Gateway {
    let mut merged = gateway.clone();
    merged.spec.listeners.extend(
        verdicts(objects, gateway)
            .into_iter()
            .filter(|(_, verdict)| verdict.is_none())
            .map(|(l, _)| l),
    );
    merged
}
