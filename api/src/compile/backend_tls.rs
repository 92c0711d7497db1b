//! Gateway API `BackendTLSPolicy`: the gateway speaks TLS to a Service's endpoints, sending
//! the policy's `hostname` as SNI and checking the certificate against its CA certificates
//! (ConfigMaps or Secrets, key `ca.crt`, in the policy's namespace) or the system's roots, and
//! against the hostname or the `subjectAltNames` given instead.
//!
//! A policy that asks for TLS never turns into plaintext: one whose CA certificates cannot be
//! had (a missing ConfigMap, another kind, no certificate in it) still applies, trusting
//! nothing, so connections to its Service fail (and a warning says why) rather than go out
//! unchecked. Of two policies for one Service port, the older (then `namespace/name`) applies;
//! one naming the port (`sectionName`) goes before one for the whole Service. A policy only
//! targets Services in its own namespace. The sidecars do not read it: meshed traffic is
//! the mesh's mTLS.

use std::{collections::HashMap, sync::Arc};

use gateway_api::apis::standard::backendtlspolicies::{
    BackendTlsPolicy, BackendTlsPolicyValidationSubjectAltNamesType as SanType,
};

use super::{created, secrets, Context};
use crate::{
    error::Location,
    model::{BackendTls, SubjectAltName},
    objects::{Object, ObjectKey},
};

/// The key of a ConfigMap or Secret that holds the CA certificates (PEM).
pub const CA_KEY: &str = "ca.crt";

/// The policies that apply, by the Service (`namespace`, `name`) they target: each with the
/// port name it names (`None`: every port), the winner first.
pub(super) type Applied = HashMap<(String, String), Vec<(Option<String>, Arc<BackendTls>)>>;

pub(super) fn compile_all(cx: &mut Context<'_>) {
    let mut policies: Vec<(&BackendTlsPolicy, &Location)> = cx
        .iter()
        .filter_map(|(o, l)| match o {
            Object::BackendTlsPolicy(p) => Some((p, l)),
            _ => None,
        })
        .collect();
    // The older policy first (then `namespace/name`): it wins a conflict.
    policies.sort_by_key(|(p, _)| {
        (
            created(&p.metadata),
            p.metadata.namespace.clone(),
            p.metadata.name.clone(),
        )
    });
    let mut applied: Applied = HashMap::new();
    for (policy, location) in policies {
        let key = Object::BackendTlsPolicy(policy.clone()).key();
        let Some(tls) = compile(cx, policy, &key, location) else {
            continue;
        };
        let tls = Arc::new(tls);
        for (i, target) in policy.spec.target_refs.iter().enumerate() {
            if !target.group.is_empty() || target.kind != "Service" {
                cx.error(
                    location,
                    &key,
                    format!("spec.targetRefs[{i}].kind"),
                    format!(
                        "InvalidKind: a BackendTLSPolicy targets Services (group \"\"), not {} {}",
                        if target.group.is_empty() {
                            "core"
                        } else {
                            &target.group
                        },
                        target.kind
                    ),
                );
                continue;
            }
            let section = target.section_name.clone();
            let of = applied
                .entry((key.namespace.clone(), target.name.clone()))
                .or_default();
            if let Some((_, winner)) = of.iter().find(|(s, _)| *s == section) {
                let port = section.as_deref().unwrap_or("every port");
                cx.warn(
                    &key,
                    format!(
                        "Conflicted: BackendTLSPolicy {} already applies to Service {}/{} ({port}); this one does not",
                        winner.policy, key.namespace, target.name
                    ),
                );
                continue;
            }
            of.push((section, tls.clone()));
        }
    }
    cx.backend_tls = applied;
}

/// The policy's TLS settings, or `None` (with an error naming the field) when it is invalid.
fn compile(
    cx: &mut Context<'_>,
    policy: &BackendTlsPolicy,
    key: &ObjectKey,
    location: &Location,
) -> Option<BackendTls> {
    let validation = &policy.spec.validation;
    let hostname = validation.hostname.to_ascii_lowercase();
    if let Err(e) = dns_name(&hostname) {
        cx.error(location, key, "spec.validation.hostname", e);
        return None;
    }
    let refs = validation
        .ca_certificate_refs
        .as_deref()
        .unwrap_or_default();
    let system = match validation.well_known_ca_certificates.as_deref() {
        None => false,
        Some("System") => true,
        Some(other) => {
            cx.error(
                location,
                key,
                "spec.validation.wellKnownCACertificates",
                format!("{other:?} is not a set of CA certificates Weir knows (\"System\" is)"),
            );
            return None;
        }
    };
    if system != refs.is_empty() {
        cx.error(
            location,
            key,
            "spec.validation",
            "name exactly one of caCertificateRefs and wellKnownCACertificates",
        );
        return None;
    }
    let mut sans = Vec::new();
    for (i, san) in validation.subject_alt_names.iter().flatten().enumerate() {
        let field = format!("spec.validation.subjectAltNames[{i}]");
        match (&san.r#type, &san.hostname, &san.uri) {
            (SanType::Hostname, Some(h), _) if dns_name(h.trim_start_matches("*.")).is_ok() => {
                sans.push(SubjectAltName::Hostname(h.to_ascii_lowercase()));
            }
            (SanType::Uri, _, Some(u)) if u.contains(':') => {
                sans.push(SubjectAltName::Uri(u.clone()));
            }
            _ => {
                cx.error(
                    location,
                    key,
                    field,
                    "a Hostname entry needs a DNS name in hostname, a URI entry a URI in uri",
                );
                return None;
            }
        }
    }
    let mut ca_pem = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        let field = format!("spec.validation.caCertificateRefs[{i}]");
        let pem = match (r.group.as_str(), r.kind.as_str()) {
            ("", "ConfigMap") => find_config_map(cx, &key.namespace, &r.name)
                .map(|data| data.get(CA_KEY).cloned().unwrap_or_default()),
            ("", "Secret") => cx
                .find_secret(&key.namespace, &r.name)
                .map(|s| String::from_utf8_lossy(&secrets::value(s, CA_KEY).0).into_owned()),
            (group, kind) => {
                cx.warn(
                    key,
                    format!("InvalidKind: {field} names {group}/{kind}, not a ConfigMap or Secret: connections to its Services fail until it does"),
                );
                continue;
            }
        };
        match pem {
            Some(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => ca_pem.push(pem),
            Some(_) => cx.warn(
                key,
                format!("InvalidCACertificateRef: {field} ({} {}) has no PEM certificate under {CA_KEY}: connections to its Services fail until it does", r.kind, r.name),
            ),
            None => cx.warn(
                key,
                format!("InvalidCACertificateRef: {field} ({} {}/{}) not found: connections to its Services fail until it exists", r.kind, key.namespace, r.name),
            ),
        }
    }
    Some(BackendTls {
        policy: format!("{}/{}", key.namespace, key.name),
        hostname,
        ca_pem,
        system_roots: system,
        subject_alt_names: sans,
    })
}

/// The data of ConfigMap `namespace/name`, if it exists.
fn find_config_map<'a>(
    cx: &Context<'a>,
    namespace: &str,
    name: &str,
) -> Option<&'a std::collections::BTreeMap<String, String>> {
    static EMPTY: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    cx.iter().find_map(|(o, _)| match o {
        Object::ConfigMap(c)
            if c.metadata.namespace.as_deref() == Some(namespace)
                && c.metadata.name.as_deref() == Some(name) =>
        {
            Some(c.data.as_ref().unwrap_or(&EMPTY))
        }
        _ => None,
    })
}

/// Whether `name` is a DNS name a certificate can be checked against (no IP address, no
/// wildcard).
fn dns_name(name: &str) -> Result<(), String> {
    let labels_ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    let ip = name.parse::<std::net::IpAddr>().is_ok();
    if labels_ok && !ip {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a DNS name (no IP address, no wildcard)"
        ))
    }
}

impl Context<'_> {
    /// The TLS to speak to port `port_name` of Service `namespace/name`, if a policy asks.
    pub(super) fn backend_tls(
        &self,
        namespace: &str,
        name: &str,
        port_name: &str,
    ) -> Option<Arc<BackendTls>> {
        let of = self
            .backend_tls
            .get(&(namespace.to_string(), name.to_string()))?;
        of.iter()
            .find(|(s, _)| s.as_deref() == Some(port_name) && !port_name.is_empty())
            .or_else(|| of.iter().find(|(s, _)| s.is_none()))
            .map(|(_, tls)| tls.clone())
    }
}
