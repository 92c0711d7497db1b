//! Client certificates on a Gateway's TLS ports (`spec.tls.frontend`, GEP-91): each port of
//! its HTTPS listeners asks clients for a certificate chaining to the CA certificates its
//! `perPort` entry (or else its `default`) names (ConfigMaps or Secrets, key `ca.crt`; in
//! another namespace with a ReferenceGrant). `AllowValidOnly` (the default) lets only clients
//! with such a certificate in; `AllowInsecureFallback` asks, and lets the others in too.
//!
//! A port whose CA certificates cannot be had lets no client in (rather than any): its
//! listeners' status says why (`NoValidCACertificate`), as a warning naming the port opens
//! with: `frontend validation for port N: REASON: …`.

use gateway_api::apis::standard::gateways::{
    GatewayTlsFrontendDefaultValidationMode as DefaultMode,
    GatewayTlsFrontendPerPortTlsValidationMode as PortMode,
};

use super::{
    backend_tls::{read_ca, CaRef},
    gateway::{granted, weir_gateways},
    Context,
};
use crate::{
    model::FrontendValidation,
    objects::{Object, ObjectKey},
};

/// How a warning about a port's frontend validation opens, for the listeners' status.
pub const FRONTEND_WARNING: &str = "frontend validation for port ";

/// One port's validation as written: its CA references and whether it falls back.
struct Asked<'g> {
    refs: Vec<(&'g str, &'g str, Option<&'g str>, &'g str)>,
    insecure: bool,
}

pub(super) fn compile_all(cx: &mut Context<'_>) {
    for gateway in weir_gateways(cx.objects) {
        let Some(frontend) = gateway.spec.tls.as_ref().and_then(|t| t.frontend.as_ref()) else {
            continue;
        };
        let key = Object::Gateway(gateway.clone()).key();
        let mut ports: Vec<u16> = gateway
            .spec
            .listeners
            .iter()
            .filter(|l| l.protocol == "HTTPS")
            .filter_map(|l| u16::try_from(l.port).ok())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        for port in ports {
            let per_port = frontend
                .per_port
                .iter()
                .flatten()
                .find(|p| p.port == i32::from(port));
            // The per-port and default validations are two types of the same shape.
            macro_rules! asked {
                ($v:expr, $fallback:pat) => {
                    Asked {
                        refs: $v
                            .ca_certificate_refs
                            .iter()
                            .map(|r| {
                                let ns = r.namespace.as_deref();
                                (r.group.as_str(), r.kind.as_str(), ns, r.name.as_str())
                            })
                            .collect(),
                        insecure: matches!($v.mode, Some($fallback)),
                    }
                };
            }
            let asked = match per_port {
                Some(p) => p
                    .tls
                    .validation
                    .as_ref()
                    .map(|v| asked!(v, PortMode::AllowInsecureFallback)),
                None => frontend
                    .default
                    .validation
                    .as_ref()
                    .map(|v| asked!(v, DefaultMode::AllowInsecureFallback)),
            };
            let Some(asked) = asked else { continue };
            let ca_pem = certificates(cx, &key, port, &asked);
            if ca_pem.is_empty() {
                cx.warn(
                    &key,
                    format!("{FRONTEND_WARNING}{port}: NoValidCACertificate: none of its caCertificateRefs gives a CA certificate: {}", if asked.insecure { "clients are let in without a checked certificate" } else { "no client is let in" }),
                );
            }
            cx.frontend.push(FrontendValidation {
                gateway: format!("{}/{}", key.namespace, key.name),
                port,
                ca_pem,
                insecure_fallback: asked.insecure,
            });
        }
    }
    cx.frontend.sort();
}

/// The CA certificates `asked` names that can be had (each one that cannot is warned about,
/// with the Gateway API's reason).
fn certificates(
    cx: &mut Context<'_>,
    key: &ObjectKey,
    port: u16,
    asked: &Asked<'_>,
) -> Vec<String> {
    let mut pems = Vec::new();
    for (i, &(group, kind, namespace, name)) in asked.refs.iter().enumerate() {
        let namespace = namespace.unwrap_or(&key.namespace);
        let warn = |cx: &mut Context<'_>, reason: &str, why: String| {
            cx.warn(
                key,
                format!("{FRONTEND_WARNING}{port}: {reason}: caCertificateRefs[{i}] {why}"),
            );
        };
        if namespace != key.namespace
            && !granted(cx, ("Gateway", &key.namespace), (kind, namespace, name))
        {
            let why = format!("({kind} {namespace}/{name}) is in another namespace and no ReferenceGrant allows it");
            warn(cx, "RefNotPermitted", why);
            continue;
        }
        let at = CaRef {
            group,
            kind,
            namespace,
            name,
        };
        match read_ca(cx, &at) {
            Ok(pem) => pems.push(pem),
            // The Gateway API names a kind it cannot read differently for listeners.
            Err(("InvalidKind", why)) => warn(cx, "InvalidCACertificateKind", why),
            Err((reason, why)) => warn(cx, reason, why),
        }
    }
    pems
}
