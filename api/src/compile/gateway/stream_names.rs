//! A terminated stream route (a Terminate TLSRoute, a TCPRoute on a TLS listener) carries what
//! is inside the gateway's TLS, decrypted with whichever certificate the SNI chose on its port.
//! Gateways may share a TLS port, so a name another Gateway's certificate answers there is not
//! this route's to carry: it would get that Gateway's clients' traffic, decrypted with that
//! Gateway's key. Such names are taken out of the route (with a warning naming the Gateway);
//! a route left with none carries nothing.

use std::collections::BTreeSet;

use super::attach::intersect;
use crate::{
    compile::Context,
    model::{HostMatch, StreamRoute},
    objects::ObjectKey,
};

pub(in crate::compile) fn own_names_only(cx: &mut Context<'_>) {
    let mut kept = Vec::new();
    let mut warnings = Vec::new();
    for route in &cx.streams {
        if !route.terminate {
            kept.push(route.clone());
            continue;
        }
        let (hosts, taken) = own_hosts(route, cx);
        for (host, gateway, port) in taken {
            warnings.push((
                key_of(route),
                format!("{host} on port {port} is answered by a certificate of Gateway {gateway}: not carried by this route"),
            ));
        }
        if hosts.len() == route.hosts.len() {
            kept.push(route.clone());
        } else if !hosts.is_empty() {
            let mut narrowed = (**route).clone();
            narrowed.hosts = hosts;
            kept.push(std::sync::Arc::new(narrowed));
        }
    }
    cx.streams = kept;
    for (key, message) in warnings {
        cx.warn(&key, message);
    }
}

/// The route's hosts that no other Gateway's certificate answers on its ports, and the ones
/// taken out: `(host, that Gateway, port)`.
fn own_hosts(
    route: &StreamRoute,
    cx: &Context<'_>,
) -> (Vec<HostMatch>, Vec<(String, String, u16)>) {
    let own: BTreeSet<&str> = route.listeners.iter().map(|l| l.gateway.as_str()).collect();
    let ports: BTreeSet<u16> = route.listeners.iter().map(|l| l.port).collect();
    let mut hosts = Vec::new();
    let mut taken = Vec::new();
    for host in &route.hosts {
        let other = cx.tls.iter().find_map(|cert| {
            let on_port = |l: &&crate::model::ListenerRef| ports.contains(&l.port);
            let foreign = cert
                .listeners
                .iter()
                .filter(on_port)
                .find(|l| !own.contains(l.gateway.as_str()))?;
            let ours = cert
                .listeners
                .iter()
                .filter(on_port)
                .any(|l| own.contains(l.gateway.as_str()));
            let answers = cert.hosts.iter().any(|h| intersect(h, host).is_some());
            (answers && !ours).then(|| (foreign.gateway.clone(), foreign.port))
        });
        match other {
            Some((gateway, port)) => taken.push((shown(host), gateway, port)),
            None => hosts.push(host.clone()),
        }
    }
    (hosts, taken)
}

/// A host as a route would write it.
fn shown(host: &HostMatch) -> String {
    match host {
        HostMatch::Exact(h) => h.clone(),
        HostMatch::Wildcard(suffix) => format!("*{suffix}"),
        HostMatch::Any => "*".to_string(),
    }
}

/// The route object a stream route came from (`tlsroute:ns/name`, `tcproute:ns/name`).
fn key_of(route: &StreamRoute) -> ObjectKey {
    let kind = match route.name.starts_with("tcproute:") {
        true => "TCPRoute",
        false => "TLSRoute",
    };
    let (namespace, name) = route.order.object.split_once('/').unwrap_or(("", ""));
    ObjectKey {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}
