//! Which listeners take a route: its parentRefs (sectionName, port), the listener's protocol
//! and `allowedRoutes` (kinds, namespaces), conflicts between listeners, and the hostnames the
//! two have in common; a parent that takes it nowhere says why, in the Gateway API's words.

use super::*;

/// The hosts `route` answers on the listeners it attaches to, grouped: each group's listeners
/// take the route for the same hosts, less the same hosts more specific listeners take
/// (usually there is one group). Empty when it attaches nowhere.
pub(super) fn attached_hosts(
    cx: &mut Context<'_>,
    gateways: &[&Gateway],
    route: &HttpRoute,
    route_kind: &str,
    key: &ObjectKey,
    location: &Location,
) -> Vec<Attached> {
    let attached = attachments(cx, gateways, route, route_kind, key, location);
    by_listener(attached.iter().map(|a| (&a.host, &a.listener, &a.excluded)))
}

/// A group of listeners that take a route alike: `(hosts, excluded hosts, listeners)`.
pub(super) type Attached = (Vec<HostMatch>, Vec<HostMatch>, Vec<ListenerRef>);

/// Groups `(host, listener, excluded)` into listeners that take the same hosts.
pub(super) fn by_listener<'a>(
    pairs: impl Iterator<Item = (&'a HostMatch, &'a ListenerRef, &'a Vec<HostMatch>)>,
) -> Vec<Attached> {
    let mut hosts: BTreeMap<&ListenerRef, (Vec<HostMatch>, &Vec<HostMatch>)> = BTreeMap::new();
    for (host, listener, excluded) in pairs {
        let (of, _) = hosts.entry(listener).or_insert((Vec::new(), excluded));
        if !of.contains(host) {
            of.push(host.clone());
        }
    }
    let mut groups: BTreeMap<(Vec<HostMatch>, Vec<HostMatch>), Vec<ListenerRef>> = BTreeMap::new();
    for (listener, (mut of, excluded)) in hosts {
        of.sort();
        groups
            .entry((of, excluded.clone()))
            .or_default()
            .push(listener.clone());
    }
    groups
        .into_iter()
        .map(|((hosts, excluded), listeners)| (hosts, excluded, listeners))
        .collect()
}

/// One host a route answers on one listener.
pub(super) struct Attachment {
    pub(super) host: HostMatch,
    pub(super) taken: Taken,
    pub(super) listener: ListenerRef,
    /// The hostnames of the Gateway's more specific listeners on the same port.
    pub(super) excluded: Vec<HostMatch>,
}

/// How a listener takes a route: HTTP (plain or after its TLS), for a `TLS` listener the
/// connection passed through (`Passthrough`) or carried after the gateway's TLS (`Terminate`),
/// for a `TCP` listener the connection carried as it comes (`Tcp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Taken {
    Http,
    Passthrough,
    Terminate,
    Tcp,
}

/// The route kinds Weir serves on `listener`, by its protocol: HTTPRoute and GRPCRoute on
/// HTTP and HTTPS, TCPRoute on TCP, TLSRoute on TLS; and TCPRoute on a TLS listener that
/// terminates, has a hostname and names TCPRoute in `allowedRoutes.kinds` (its plaintext
/// carried as TCP). A passthrough listener has no plaintext to carry, and one that does not
/// name the kind keeps to TLSRoutes, as the Gateway API's TLS listeners do by default.
pub fn served_kinds(listener: &GatewayListeners) -> &'static [&'static str] {
    let names_tcp = || {
        let kinds = listener
            .allowed_routes
            .as_ref()
            .and_then(|a| a.kinds.as_ref());
        kinds.into_iter().flatten().any(|k| {
            k.kind == "TCPRoute" && k.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP
        })
    };
    let terminates = !matches!(
        listener.tls.as_ref().and_then(|t| t.mode.as_ref()),
        Some(TlsMode::Passthrough)
    );
    match listener.protocol.as_str() {
        "HTTP" | "HTTPS" => &["HTTPRoute", "GRPCRoute"],
        "TCP" => &["TCPRoute"],
        // Only for its own hostname: a TCPRoute for every name would take each name of the
        // port that no route serves, decrypted with whichever certificate the SNI chose.
        "TLS" if terminates && listener.hostname.is_some() && names_tcp() => {
            &["TLSRoute", "TCPRoute"]
        }
        "TLS" => &["TLSRoute"],
        _ => &[],
    }
}

/// The hosts `route` answers on the listeners it attaches to, each with how its listener takes
/// it and which listener it is (sorted, without repeats); empty when it attaches nowhere. The route stands for any kind:
/// only its hostnames and parentRefs are read, and `route_kind` says which listeners take it.
pub(super) fn attachments(
    cx: &mut Context<'_>,
    gateways: &[&Gateway],
    route: &HttpRoute,
    route_kind: &str,
    key: &ObjectKey,
    location: &Location,
) -> Vec<Attachment> {
    let mut route_hosts = Vec::new();
    for (i, h) in route.spec.hostnames.iter().flatten().enumerate() {
        match host_match(h) {
            Ok(m) => route_hosts.push(m),
            Err(e) => cx.error(location, key, format!("spec.hostnames[{i}]"), e),
        }
    }
    let mut hosts = Vec::new();
    for (i, parent) in route.spec.parent_refs.iter().flatten().enumerate() {
        let group = parent.group.as_deref().unwrap_or(GATEWAY_GROUP);
        let kind = parent.kind.as_deref().unwrap_or("Gateway");
        if group != GATEWAY_GROUP || !matches!(kind, "Gateway" | "ListenerSet") {
            continue;
        }
        let namespace = parent.namespace.as_deref().unwrap_or(&key.namespace);
        let label = format!("{kind} {namespace}/{}", parent.name);
        // The Gateway whose listeners take the route, and which of them: its own, or those of
        // the ListenerSet the parentRef names.
        let (gateway_namespace, gateway_name, set) = if kind == "ListenerSet" {
            let set = cx.objects.iter().find_map(|(o, _)| match o {
                Object::ListenerSet(s)
                    if s.metadata.namespace.as_deref() == Some(namespace)
                        && s.metadata.name.as_deref() == Some(&parent.name) =>
                {
                    Some(s)
                }
                _ => None,
            });
            match set.map(|s| set_parent(cx.objects, s)) {
                Some(SetParent::Taken(g)) => (
                    g.metadata.namespace.clone().unwrap_or_default(),
                    g.metadata.name.clone().unwrap_or_default(),
                    Some(format!("{namespace}/{}", parent.name)),
                ),
                Some(SetParent::NotOurs) => continue,
                Some(SetParent::NotAllowed(_)) | None => {
                    let why = format!("{NO_MATCHING_PARENT}: {label} not found, or its Gateway does not take it (see its status)");
                    cx.warn(key, format!("not attached to spec.parentRefs[{i}] ({why})"));
                    continue;
                }
            }
        } else {
            (namespace.to_string(), parent.name.clone(), None)
        };
        let Some(gateway) = gateways.iter().find(|g| {
            g.metadata.namespace.as_deref() == Some(&gateway_namespace)
                && g.metadata.name.as_deref() == Some(&gateway_name)
        }) else {
            // Another class's Gateway is another controller's business; one that does not
            // exist is a dangling reference worth a word.
            let exists = cx.iter().any(|(o, _)| {
                matches!(o, Object::Gateway(g) if g.metadata.namespace.as_deref() == Some(namespace)
                    && g.metadata.name.as_deref() == Some(&parent.name))
            });
            if !exists {
                let why = format!(
                    "{NO_MATCHING_PARENT}: Gateway {namespace}/{} not found (or refused: see its status)",
                    parent.name
                );
                cx.warn(key, format!("not attached to spec.parentRefs[{i}] ({why})"));
            }
            continue;
        };
        // How far the best listener got, for the reason a parent takes the route nowhere.
        let (mut matched, mut allowed) = (false, false);
        let before = hosts.len();
        for listener in &gateway.spec.listeners {
            let (owner, name) = match set_of(&listener.name) {
                Some((owner, name)) => (Some(owner), name),
                None => (None, listener.name.as_str()),
            };
            if owner != set.as_deref()
                || parent.section_name.as_deref().is_some_and(|s| s != name)
                || parent.port.is_some_and(|p| p != listener.port)
            {
                continue;
            }
            matched = true;
            let home = owner
                .and_then(|o| o.split_once('/'))
                .map_or(gateway_namespace.as_str(), |(ns, _)| ns);
            if !served_kinds(listener).contains(&route_kind)
                || listener_conflict(listener, &gateway.spec.listeners).is_some()
                || !listener_allows(cx.objects, home, listener, route_kind, &key.namespace)
            {
                continue;
            }
            allowed = true;
            let taken = match listener.tls.as_ref().and_then(|t| t.mode.as_ref()) {
                _ if listener.protocol == "TCP" => Taken::Tcp,
                _ if listener.protocol != "TLS" => Taken::Http,
                Some(TlsMode::Passthrough) => Taken::Passthrough,
                _ => Taken::Terminate,
            };
            let listener_host = match listener.hostname.as_deref().map(host_match) {
                None => HostMatch::Any,
                Some(Ok(h)) => h,
                Some(Err(_)) => continue,
            };
            let Ok(port) = u16::try_from(listener.port) else {
                continue;
            };
            let at = ListenerRef {
                gateway: format!("{gateway_namespace}/{gateway_name}"),
                port,
                name: listener.name.clone(),
            };
            let excluded = more_specific(&listener_host, listener, &gateway.spec.listeners);
            let attach = |host| Attachment {
                host,
                taken,
                listener: at.clone(),
                excluded: excluded.clone(),
            };
            if route_hosts.is_empty() {
                hosts.push(attach(listener_host));
            } else {
                hosts.extend(
                    route_hosts
                        .iter()
                        .filter_map(|h| intersect(&listener_host, h))
                        .map(attach),
                );
            }
        }
        if hosts.len() == before {
            // The Gateway API's reason first: the controller's status takes it, per parent.
            let why = match (matched, allowed) {
                (false, _) => format!("{NO_MATCHING_PARENT}: no listener of {label} has its sectionName and port"),
                (true, false) => format!("{NOT_ALLOWED_BY_LISTENERS}: no listener of {label} allows {route_kind}s from namespace {}", key.namespace),
                (true, true) => format!("{NO_MATCHING_LISTENER_HOSTNAME}: its hostnames match no listener's of {label}"),
            };
            cx.warn(key, format!("not attached to spec.parentRefs[{i}] ({why})"));
        }
    }
    hosts.sort_by(|a, b| (&a.host, a.taken, &a.listener).cmp(&(&b.host, b.taken, &b.listener)));
    hosts.dedup_by(|a, b| (&a.host, a.taken, &a.listener) == (&b.host, b.taken, &b.listener));
    hosts
}

/// The hostnames of `listener`'s siblings on its port that are more specific than its own
/// `host` and within it: a request for one of them is theirs (listener isolation).
fn more_specific(
    host: &HostMatch,
    listener: &GatewayListeners,
    all: &[GatewayListeners],
) -> Vec<HostMatch> {
    let mut out: Vec<HostMatch> = all
        .iter()
        .filter(|o| o.name != listener.name && o.port == listener.port)
        .filter(|o| listener_conflict(o, all).is_none())
        .filter_map(|o| host_match(o.hostname.as_deref()?).ok())
        .filter(|other| other != host && intersect(host, other).as_ref() == Some(other))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// How a listener conflicts with another on its port, as the Gateway API's `Conflicted`
/// reasons name it; a conflicted listener takes no routes. HTTPS and TLS listeners share a port
/// when their hostnames differ (the SNI tells them apart); listeners of one protocol share it
/// when their hostnames differ, except TCP and UDP ones, which have no names to tell them
/// apart (`HostnameConflict`); anything else on one port is a `ProtocolConflict`.
///
/// A Gateway's own listeners conflict with each other both ways, and never with a
/// ListenerSet's: those in a compile are the ones that yielded to nothing
/// ([`super::listener_sets::verdicts`]), so they conflict with none.
pub fn listener_conflict(
    listener: &GatewayListeners,
    all: &[GatewayListeners],
) -> Option<&'static str> {
    if set_of(&listener.name).is_some() {
        return None;
    }
    all.iter()
        .filter(|o| set_of(&o.name).is_none() && o.name != listener.name)
        .find_map(|o| clash(listener, o))
}

/// How two listeners clash, if they do (see [`listener_conflict`]).
pub(super) fn clash(listener: &GatewayListeners, other: &GatewayListeners) -> Option<&'static str> {
    let tls_based = |p: &str| matches!(p, "HTTPS" | "TLS");
    if other.port != listener.port {
        return None;
    }
    let host = |l: &GatewayListeners| l.hostname.as_deref().map(normal_host);
    let same_host = host(other) == host(listener);
    if other.protocol != listener.protocol {
        if !(tls_based(&other.protocol) && tls_based(&listener.protocol)) || same_host {
            return Some("ProtocolConflict");
        }
    } else if same_host || matches!(listener.protocol.as_str(), "TCP" | "UDP") {
        return Some("HostnameConflict");
    }
    None
}

/// Whether `listener`, of a Gateway or ListenerSet in namespace `home`, accepts routes from
/// `namespace` (`allowedRoutes`).
pub fn listener_allows(
    objects: &crate::Objects,
    home: &str,
    listener: &GatewayListeners,
    kind: &str,
    namespace: &str,
) -> bool {
    let allowed = listener.allowed_routes.as_ref();
    if let Some(kinds) = allowed.and_then(|a| a.kinds.as_ref()) {
        if !kinds
            .iter()
            .any(|k| k.kind == kind && k.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP)
        {
            return false;
        }
    }
    let namespaces = allowed.and_then(|a| a.namespaces.as_ref());
    match namespaces
        .and_then(|n| n.from.as_ref())
        .unwrap_or(&From::Same)
    {
        From::All => true,
        From::Same => home == namespace,
        From::Selector => namespaces
            .and_then(|n| n.selector.as_ref())
            .is_some_and(|s| selects(objects, s, namespace)),
    }
}

/// Whether namespace `namespace` (its labels among `objects`) matches `selector`, a label
/// selector of any of the Gateway API's types (they all have Kubernetes' fields).
pub(in crate::compile) fn selects(
    objects: &crate::Objects,
    selector: &impl serde::Serialize,
    namespace: &str,
) -> bool {
    let selector: LabelSelector =
        match serde_json::to_value(selector).and_then(serde_json::from_value) {
            Ok(s) => s,
            Err(_) => return false,
        };
    let labels = objects
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

/// Kubernetes label selector semantics (matchLabels and matchExpressions).
fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
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
pub(super) fn intersect(listener: &HostMatch, route: &HostMatch) -> Option<HostMatch> {
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
