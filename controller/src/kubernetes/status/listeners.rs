//! A Gateway listener's status: what keeps it from being served as written (protocol,
//! conflicts, route kinds, certificates, client CA certificates), the conditions that say so
//! in the Gateway API's words, its supported kinds and the routes attached to it.

use gateway_api::apis::standard::gateways::GatewayListeners;
use serde_json::Value;
use weir_api::{
    compile::{
        gateway_listeners, hostnames_overlap, listener_allows, listener_conflict, served_kinds,
        FRONTEND_WARNING,
    },
    model::{plan_ports, Unserved},
    Object, ObjectKey, Objects, Rejection,
};

use super::desired::condition;

/// What keeps a listener from being served as written, in the order the Gateway API's
/// conditions report it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum ListenerProblem {
    /// Not HTTP, HTTPS, TLS or TCP (`Accepted` False, `UnsupportedProtocol`; no supported kinds).
    Protocol,
    /// Another listener on its port speaks another protocol, or HTTPS beside TLS with its
    /// hostname (`Conflicted`, `ProtocolConflict`; `Accepted` False, `Invalid`).
    ProtocolConflict,
    /// Another listener on its port has its hostname (`Conflicted`, `HostnameConflict`).
    HostnameConflict,
    /// Its port is an older Gateway's for another protocol (or a TCP port, which one Gateway
    /// has alone), or the gateway's own HTTP (80) or HTTPS (443) port while it speaks another
    /// (`Accepted` False, `PortUnavailable`): the gateway does not serve it.
    PortUnavailable,
    /// `allowedRoutes.kinds` names a kind Weir does not serve (`ResolvedRefs` False,
    /// `InvalidRouteKinds`; the kinds it does serve are its `supportedKinds`).
    InvalidRouteKinds,
    /// Its certificate's Secret is in another namespace without a ReferenceGrant
    /// (`ResolvedRefs` False, `RefNotPermitted`).
    RefNotPermitted,
    /// A certificateRef is not a core Secret, or its Secret does not exist or holds no
    /// certificate and key (`ResolvedRefs` False, `InvalidCertificateRef`).
    InvalidCertificateRef,
    /// A ListenerSet's listener beyond the most a Gateway takes from ListenerSets
    /// (`Accepted` False, `TooManyListeners`).
    TooManyListeners,
    /// The client CA certificates its port's `spec.tls.frontend` names cannot be had
    /// (`Accepted` False, `NoValidCACertificate`; `ResolvedRefs` False with the reason).
    NoValidCaCertificate(&'static str),
}

/// Where a listener was written: a Gateway, or a ListenerSet its Gateway takes.
pub(super) struct Written<'a> {
    /// The namespace of the object it is in (its certificates' default).
    pub namespace: &'a str,
    /// Its name in that object (the compile's warnings about it name it so).
    pub name: &'a str,
    /// The compile's warnings about that object.
    pub warnings: &'a [String],
    /// The compile's warnings about its Gateway (its ports' client certificates).
    pub gateway_warnings: &'a [String],
}

/// What keeps listener `l` of `gateway` from being served; `all` are the Gateway's own
/// listeners (a ListenerSet's listener that conflicts is told by its verdict, not here).
pub(super) fn listener_problem(
    gateway: &ObjectKey,
    l: &GatewayListeners,
    all: &[GatewayListeners],
    written: &Written<'_>,
    objects: &Objects,
    unserved: &[Unserved],
) -> Option<ListenerProblem> {
    let gateway_warnings = written.gateway_warnings;
    if !matches!(l.protocol.as_str(), "HTTP" | "HTTPS" | "TLS" | "TCP") {
        return Some(ListenerProblem::Protocol);
    }
    match listener_conflict(l, all) {
        Some("ProtocolConflict") => return Some(ListenerProblem::ProtocolConflict),
        Some(_) => return Some(ListenerProblem::HostnameConflict),
        None => {}
    }
    let name = format!("{}/{}", gateway.namespace, gateway.name);
    if unserved
        .iter()
        .any(|u| u.gateway == name && u.listener == l.name)
    {
        return Some(ListenerProblem::PortUnavailable);
    }
    let named = l.allowed_routes.as_ref().and_then(|a| a.kinds.as_ref());
    if named.is_some_and(|kinds| kinds.len() > supported_kinds(l).len()) {
        return Some(ListenerProblem::InvalidRouteKinds);
    }
    // The warnings of its object about this listener (another object's cannot start so).
    let own = format!("listener {}: ", written.name);
    if written
        .warnings
        .iter()
        .any(|w| w.starts_with(&own) && w.contains("no ReferenceGrant"))
    {
        return Some(ListenerProblem::RefNotPermitted);
    }
    // Each certificate: a core Secret that exists and holds a certificate and key. A
    // passthrough listener has none to use (the backend holds it): its references are not
    // looked up, so they cannot tell whether another namespace's Secret exists.
    let passthrough = l
        .tls
        .as_ref()
        .and_then(|t| t.mode.as_ref())
        .is_some_and(|m| {
            matches!(
                m,
                gateway_api::apis::standard::gateways::GatewayListenersTlsMode::Passthrough
            )
        });
    let refs = l
        .tls
        .as_ref()
        .filter(|_| !passthrough)
        .and_then(|t| t.certificate_refs.as_ref());
    for cert in refs.into_iter().flatten() {
        let core = cert.kind.as_deref().unwrap_or("Secret") == "Secret"
            && cert.group.as_deref().unwrap_or("").is_empty();
        let key = ObjectKey {
            kind: "Secret",
            namespace: cert
                .namespace
                .clone()
                .unwrap_or(written.namespace.to_string()),
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

/// The listeners the gateway leaves unserved for their ports, planned as it plans them
/// ([`plan_ports`]) with the manifests' home ports (80 and 443): one deployment serving every
/// Gateway of the class, or (`own_deployments`) each Gateway its own, where other Gateways'
/// listeners take none of its ports.
pub(super) fn unserved_listeners(objects: &Objects, own_deployments: bool) -> Vec<Unserved> {
    let listeners = gateway_listeners(objects);
    if !own_deployments {
        return plan_ports(&listeners, (80, 443), |_| true).1;
    }
    let gateways: std::collections::BTreeSet<&str> =
        listeners.iter().map(|l| l.gateway.as_str()).collect();
    gateways
        .into_iter()
        .flat_map(|gateway| plan_ports(&listeners, (80, 443), |g| g == gateway).1)
        .collect()
}

/// Whether an HTTPS listener shares a hostname with another HTTPS listener on its port
/// (`foo.example.com` and `*.example.com`): both then carry `OverlappingTLSConfig`. Listeners
/// without a hostname are the port's default and overlap nothing.
pub(super) fn overlapping_tls(l: &GatewayListeners, all: &[GatewayListeners]) -> bool {
    let Some(host) = l.hostname.as_deref().filter(|_| l.protocol == "HTTPS") else {
        return false;
    };
    all.iter()
        .filter(|o| o.name != l.name && o.port == l.port && o.protocol == "HTTPS")
        .filter_map(|o| o.hostname.as_deref())
        .any(|other| hostnames_overlap(host, other))
}

/// Whether `gateway` lets clients in without a valid certificate somewhere
/// (`AllowInsecureFallback`).
pub(super) fn insecure_frontend(gateway: &gateway_api::apis::standard::gateways::Gateway) -> bool {
    use gateway_api::apis::standard::gateways::{
        GatewayTlsFrontendDefaultValidationMode as DefaultMode,
        GatewayTlsFrontendPerPortTlsValidationMode as PerPort,
    };
    let Some(frontend) = gateway.spec.tls.as_ref().and_then(|t| t.frontend.as_ref()) else {
        return false;
    };
    let default = frontend
        .default
        .validation
        .as_ref()
        .and_then(|v| v.mode.as_ref());
    let per_port = frontend.per_port.iter().flatten();
    matches!(default, Some(DefaultMode::AllowInsecureFallback))
        || per_port
            .filter_map(|p| p.tls.validation.as_ref()?.mode.as_ref())
            .any(|m| matches!(m, PerPort::AllowInsecureFallback))
}

pub(super) fn listener_conditions(
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
            "Weir serves HTTP, HTTPS, TLS and TCP listeners",
            generation,
        ),
        (true, Some(P::ProtocolConflict)) => condition(
            "Accepted",
            false,
            "Invalid",
            "another listener on its port speaks another protocol: neither takes routes",
            generation,
        ),
        (true, Some(P::TooManyListeners)) => condition(
            "Accepted",
            false,
            "TooManyListeners",
            "its Gateway takes at most 256 listeners from ListenerSets, and older ones come first",
            generation,
        ),
        (true, Some(P::PortUnavailable)) => condition(
            "Accepted",
            false,
            "PortUnavailable",
            "its port is an older Gateway's for another protocol (or a TCP port, which one Gateway has alone), or the gateway's HTTP port 80 or HTTPS port 443 while this listener speaks another protocol: not served",
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
            "allowedRoutes.kinds names a kind Weir does not serve on this listener's protocol (HTTPRoute and GRPCRoute on HTTP and HTTPS, TLSRoute on TLS, TCPRoute on TCP and on TLS listeners that terminate and name it)",
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

/// `Accepted` of a Gateway or ListenerSet by how many of its `total` listeners are `valid`:
/// False with `ListenersNotValid` when none is, True with it when some are not, as the spec
/// words it.
pub(super) fn by_listeners(
    valid: usize,
    total: usize,
    accepted: &str,
    generation: Option<i64>,
) -> Value {
    match valid {
        0 if total > 0 => condition(
            "Accepted",
            false,
            "ListenersNotValid",
            "no listener is valid: see each listener's conditions",
            generation,
        ),
        v if v < total => condition(
            "Accepted",
            true,
            "ListenersNotValid",
            "some listeners are not valid: see their conditions",
            generation,
        ),
        _ => condition("Accepted", true, "Accepted", accepted, generation),
    }
}

/// `Programmed`: served.
pub(super) fn programmed_ok(generation: Option<i64>) -> Value {
    condition(
        "Programmed",
        true,
        "Programmed",
        "served by weir-ingress",
        generation,
    )
}

pub(super) const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// The route kinds a listener takes that Weir serves ([`served_kinds`]); those of them its
/// `allowedRoutes.kinds` names when it names any.
pub(super) fn supported_kinds(l: &GatewayListeners) -> Vec<&'static str> {
    let named = l.allowed_routes.as_ref().and_then(|a| a.kinds.as_ref());
    served_kinds(l)
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

/// Accepted routes (of the kinds the listener takes) attached to this listener (by its name
/// in `parent`) of `parent`, a Gateway or a ListenerSet.
pub(super) fn attached_routes(
    objects: &Objects,
    rejected: &[Rejection],
    parent: &ObjectKey,
    l: &GatewayListeners,
    warned: &dyn Fn(&ObjectKey) -> Vec<String>,
) -> usize {
    let (listener, kinds) = (&l.name, supported_kinds(l));
    let gateway = parent;
    // The listener takes the route: from its namespace, for a hostname of its own.
    let takes = |kind: &str, namespace: &str, route: &Value| {
        let hostnames = route["hostnames"].as_array().cloned().unwrap_or_default();
        let host_ok = match l.hostname.as_deref() {
            None => true,
            Some(own) => {
                hostnames.is_empty()
                    || hostnames
                        .iter()
                        .any(|h| hostnames_overlap(own, h.as_str().unwrap_or_default()))
            }
        };
        host_ok && listener_allows(objects, &parent.namespace, l, kind, namespace)
    };
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
                Object::TcpRoute(r) => serde_json::to_value(&r.spec),
                _ => Ok(Value::Null),
            }
            .unwrap_or_default();
            let route_ns = o.metadata().namespace.clone().unwrap_or_default();
            if !takes(o.key().kind, &route_ns, &route) {
                return false;
            }
            // A parent the compile found no listener of to take the route does not count.
            let detached = warned(&o.key());
            route["parentRefs"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .any(|(i, p)| {
                    let flagged = format!("not attached to spec.parentRefs[{i}] (");
                    p["kind"].as_str().unwrap_or("Gateway") == gateway.kind
                        && p["name"] == gateway.name.as_str()
                        && p["namespace"].as_str().unwrap_or(&route_ns) == gateway.namespace
                        && p["sectionName"]
                            .as_str()
                            .is_none_or(|s| s == listener.as_str())
                        && !detached.iter().any(|w| w.starts_with(&flagged))
                })
        })
        .count()
}
