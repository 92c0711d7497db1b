//! Certificates for the TLS listener: `Ingress.spec.tls`, Gateway `HTTPS` listeners and `TLS`
//! listeners that terminate (for TLSRoutes) name `kubernetes.io/tls` Secrets; each Secret becomes one [`TlsCertificate`] with every SNI name
//! it was asked to serve.
//!
//! A Secret that does not exist yet is a warning (the listener has no certificate for those
//! names until it appears). The certificate itself is parsed and checked by the proxy, which
//! keeps serving the previous one when a new one is bad.

use std::collections::{BTreeMap, HashMap};

use gateway_api::apis::standard::gateways::{
    Gateway, GatewayListeners, GatewayListenersTlsMode as TlsMode,
};

use super::{
    gateway::granted,
    ingress::host_match,
    listener_sets::{merged, merged_name, set_listeners, set_parent, SetParent},
    secrets, Context, GATEWAY_CLASS,
};
use crate::{
    error::Location,
    model::{HostMatch, ListenerRef, TlsCertificate},
    objects::{Object, ObjectKey},
};

pub use crate::model::{TLS_CERT_KEY, TLS_KEY_KEY};

#[derive(Default)]
struct Wanted {
    hosts: Vec<HostMatch>,
    used_by: Vec<String>,
    listeners: Vec<ListenerRef>,
    ingress: bool,
}

pub(super) fn compile_all(cx: &mut Context<'_>) {
    // Secret `namespace/name` → who wants it for which names, in object order.
    let mut wanted: BTreeMap<(String, String), Wanted> = BTreeMap::new();
    let objects: Vec<_> = cx.iter().collect();
    // Each Gateway with the ListenerSets' listeners it serves, worked out once.
    let mut merged_of: HashMap<String, Gateway> = HashMap::new();
    for (object, location) in objects {
        match object {
            Object::Ingress(ingress) if super::ingress::is_ours(cx.objects, ingress) => {
                let key = object.key();
                for (i, tls) in ingress
                    .spec
                    .iter()
                    .flat_map(|s| s.tls.iter().flatten())
                    .enumerate()
                {
                    let Some(secret) = tls.secret_name.as_deref().filter(|s| !s.is_empty()) else {
                        continue;
                    };
                    let hosts = hosts(cx, tls.hosts.iter().flatten(), &key, location, |h| {
                        format!("spec.tls[{i}].hosts[{h}]")
                    });
                    let w = wanted
                        .entry((key.namespace.clone(), secret.to_string()))
                        .or_default();
                    w.hosts.extend(hosts);
                    w.used_by.push(key.to_string());
                    w.ingress = true;
                }
            }
            Object::Gateway(gateway) if gateway.spec.gateway_class_name == GATEWAY_CLASS => {
                let on = Owner {
                    key: object.key(),
                    location,
                    gateway: format!("{}/{}", object.key().namespace, object.key().name),
                    kind: "Gateway",
                };
                let listeners: Vec<_> =
                    gateway.spec.listeners.iter().cloned().enumerate().collect();
                listener_certificates(cx, &mut wanted, &on, &listeners);
            }
            // A ListenerSet's listeners, once its Gateway takes them: its certificates are its
            // own (a Secret in another namespace needs a ReferenceGrant from ListenerSets).
            Object::ListenerSet(set) => {
                let SetParent::Taken(parent) = set_parent(cx.objects, set) else {
                    continue;
                };
                let on = Owner {
                    key: object.key(),
                    location,
                    gateway: format!(
                        "{}/{}",
                        parent.metadata.namespace.as_deref().unwrap_or_default(),
                        parent.metadata.name.as_deref().unwrap_or_default()
                    ),
                    kind: "ListenerSet",
                };
                // A listener that yields to another (its Gateway's, or an older set's) gets
                // no certificate: its name stays the other's.
                let merged = merged_of
                    .entry(on.gateway.clone())
                    .or_insert_with(|| merged(cx.objects, parent));
                let served: Vec<(usize, GatewayListeners)> = set_listeners(set)
                    .into_iter()
                    .enumerate()
                    .filter(|(_, l)| {
                        let name = merged_name(set, &l.name);
                        merged.spec.listeners.iter().any(|m| m.name == name)
                    })
                    .collect();
                listener_certificates(cx, &mut wanted, &on, &served);
            }
            _ => {}
        }
    }
    for ((namespace, name), mut w) in wanted {
        let Some(secret) = cx.find_secret(&namespace, &name) else {
            let users = w.used_by.join(", ");
            cx.warnings.push(format!(
                "Secret {namespace}/{name} not found: {users} has no certificate for it yet"
            ));
            continue;
        };
        w.hosts.sort();
        w.hosts.dedup();
        w.listeners.sort();
        w.listeners.dedup();
        cx.tls.push(TlsCertificate {
            secret: format!("{namespace}/{name}"),
            hosts: w.hosts,
            used_by: w.used_by,
            listeners: w.listeners,
            ingress: w.ingress,
            chain: secrets::value(secret, TLS_CERT_KEY),
            key: secrets::value(secret, TLS_KEY_KEY),
        });
    }
}

/// Who asks for listener certificates: a Gateway, or a ListenerSet its Gateway takes.
struct Owner<'o> {
    key: ObjectKey,
    location: &'o Location,
    /// The Gateway (`namespace/name`) whose ports the listeners are on.
    gateway: String,
    /// `Gateway` or `ListenerSet`: what a ReferenceGrant for a Secret elsewhere names.
    kind: &'static str,
}

/// The certificates `listeners` of `on` ask for, added to `wanted`.
fn listener_certificates(
    cx: &mut Context<'_>,
    wanted: &mut BTreeMap<(String, String), Wanted>,
    on: &Owner<'_>,
    listeners: &[(usize, GatewayListeners)],
) {
    let (key, location) = (&on.key, on.location);
    for (l, listener) in listeners {
        let protocol = listener.protocol.as_str();
        if protocol != "HTTPS" && protocol != "TLS" {
            continue;
        }
        let field = format!("spec.listeners[{l}].tls");
        let Some(tls) = &listener.tls else {
            cx.error(
                location,
                key,
                field,
                format!("a listener of protocol {protocol} needs tls (certificateRefs, or mode Passthrough)"),
            );
            continue;
        };
        let passthrough = matches!(tls.mode, Some(TlsMode::Passthrough));
        if passthrough && protocol == "TLS" {
            // The backend holds the certificate.
            continue;
        }
        if passthrough {
            cx.warn(
                key,
                format!(
                    "listener {}: an HTTPS listener terminates TLS (tls.mode Passthrough is for TLS listeners); skipped",
                    listener.name
                ),
            );
            continue;
        }
        let hosts = hosts(cx, listener.hostname.iter(), key, location, |_| {
            format!("spec.listeners[{l}].hostname")
        });
        for (r, cert) in tls.certificate_refs.iter().flatten().enumerate() {
            let kind_ok = cert.kind.as_deref().unwrap_or("Secret") == "Secret"
                && cert.group.as_deref().unwrap_or("").is_empty();
            if !kind_ok {
                // That listener has no certificate (its status says why); the rest
                // of the Gateway serves.
                cx.warn(
                    key,
                    format!(
                        "listener {}: {field}.certificateRefs[{r}] is not a core Secret; only those are supported",
                        listener.name
                    ),
                );
                continue;
            }
            let namespace = cert.namespace.clone().unwrap_or(key.namespace.clone());
            if namespace != key.namespace
                && !granted(
                    cx,
                    (on.kind, &key.namespace),
                    ("Secret", &namespace, &cert.name),
                )
            {
                cx.warn(
                    key,
                    format!(
                        "listener {}: Secret {namespace}/{} is in another namespace and no ReferenceGrant allows it",
                        listener.name, cert.name
                    ),
                );
                continue;
            }
            let w = wanted.entry((namespace, cert.name.clone())).or_default();
            w.hosts.extend(hosts.iter().cloned());
            w.used_by.push(format!("{key} listener {}", listener.name));
            if let Ok(port) = u16::try_from(listener.port) {
                w.listeners.push(ListenerRef {
                    gateway: on.gateway.clone(),
                    port,
                    name: String::new(),
                });
            }
        }
    }
}

/// SNI names; none named means any (`[Any]`).
fn hosts<'h>(
    cx: &mut Context<'_>,
    names: impl Iterator<Item = &'h String>,
    key: &ObjectKey,
    location: &Location,
    field: impl Fn(usize) -> String,
) -> Vec<HostMatch> {
    let mut out = Vec::new();
    for (i, name) in names.enumerate() {
        match host_match(name) {
            Ok(h) => out.push(h),
            Err(e) => cx.error(location, key, field(i), e),
        }
    }
    if out.is_empty() {
        out.push(HostMatch::Any);
    }
    out
}
