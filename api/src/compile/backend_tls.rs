//! Gateway API `BackendTLSPolicy`: the gateway speaks TLS to a Service's endpoints, sending
//! the policy's `hostname` as SNI and checking the certificate against its CA certificates
//! (ConfigMaps or Secrets, key `ca.crt`, in the policy's namespace) or the system's roots, and
//! against the hostname or the `subjectAltNames` given instead.
//!
//! A policy that asks for TLS never turns into plaintext: one whose CA certificates cannot be
//! had (a missing ConfigMap, another kind, no certificate in it), or with a field Weir cannot
//! take (`Invalid`, the field named), still applies, trusting nothing, so connections to its
//! Service fail (and a warning says why) rather than go out unchecked. A policy is never
//! refused: a refused object is compiled without, which here would mean plaintext. Of two policies for one Service port, the older (then `namespace/name`) applies;
//! one naming the port (`sectionName`) goes before one for the whole Service. A policy only
//! targets Services in its own namespace. The sidecars do not read it: meshed traffic is
//! the mesh's mTLS.

use std::{collections::HashMap, sync::Arc};

use gateway_api::apis::standard::backendtlspolicies::{
    BackendTlsPolicy, BackendTlsPolicyValidationSubjectAltNamesType as SanType,
};

use super::{created, secrets, Context};
use crate::{
    model::{BackendTls, SubjectAltName},
    objects::{Object, ObjectKey},
};

/// The key of a ConfigMap or Secret that holds the CA certificates (PEM).
pub const CA_KEY: &str = "ca.crt";

/// The policies that apply, by the Service (`namespace`, `name`) they target: each with the
/// port name it names (`None`: every port), the winner first.
pub(super) type Applied = HashMap<(String, String), Vec<(Option<String>, Arc<BackendTls>)>>;

pub(super) fn compile_all(cx: &mut Context<'_>) {
    let mut policies: Vec<&BackendTlsPolicy> = cx
        .iter()
        .filter_map(|(o, _)| match o {
            Object::BackendTlsPolicy(p) => Some(p),
            _ => None,
        })
        .collect();
    // The older policy first (then `namespace/name`): it wins a conflict.
    policies.sort_by_key(|p| {
        (
            created(&p.metadata),
            p.metadata.namespace.clone(),
            p.metadata.name.clone(),
        )
    });
    let mut applied: Applied = HashMap::new();
    for policy in policies {
        let key = Object::BackendTlsPolicy(policy.clone()).key();
        let tls = Arc::new(compile(cx, policy, &key));
        for (i, target) in policy.spec.target_refs.iter().enumerate() {
            if !target.group.is_empty() || target.kind != "Service" {
                let group = if target.group.is_empty() {
                    "core"
                } else {
                    &target.group
                };
                cx.warn(
                    &key,
                    format!(
                        "Invalid: spec.targetRefs[{i}]: a BackendTLSPolicy targets Services, not {group} {}; that target is skipped",
                        target.kind
                    ),
                );
                continue;
            }
            if cx.find_service(&key.namespace, &target.name).is_none() {
                cx.warn(
                    &key,
                    format!(
                        "spec.targetRefs[{i}]: Service {}/{} not found (a policy reaches Services in its own namespace only)",
                        key.namespace, target.name
                    ),
                );
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

/// The policy's TLS settings; one with a field Weir cannot take trusts nothing (a warning
/// names the field).
fn compile(cx: &mut Context<'_>, policy: &BackendTlsPolicy, key: &ObjectKey) -> BackendTls {
    let validation = &policy.spec.validation;
    let hostname = validation.hostname.to_ascii_lowercase();
    let invalid = |cx: &mut Context<'_>, field: &str, why: &str| {
        cx.warn(
            key,
            format!("Invalid: {field}: {why}; connections to its Services fail until it is fixed"),
        );
    };
    let mut valid = true;
    if let Err(e) = server_name(&hostname) {
        invalid(cx, "spec.validation.hostname", &e);
        valid = false;
    }
    let refs = validation
        .ca_certificate_refs
        .as_deref()
        .unwrap_or_default();
    let system = match validation.well_known_ca_certificates.as_deref() {
        None => false,
        Some("System") => true,
        Some(other) => {
            let why =
                format!("{other:?} is not a set of CA certificates Weir knows (\"System\" is)");
            invalid(cx, "spec.validation.wellKnownCACertificates", &why);
            valid = false;
            false
        }
    };
    if system != refs.is_empty() {
        let why = "name exactly one of caCertificateRefs and wellKnownCACertificates";
        invalid(cx, "spec.validation", why);
        valid = false;
    }
    let mut sans = Vec::new();
    for (i, san) in validation.subject_alt_names.iter().flatten().enumerate() {
        let field = format!("spec.validation.subjectAltNames[{i}]");
        match (&san.r#type, &san.hostname, &san.uri) {
            (SanType::Hostname, Some(h), _) if san_name(h) => {
                sans.push(SubjectAltName::Hostname(h.to_ascii_lowercase()));
            }
            (SanType::Uri, _, Some(u)) if u.contains(':') => {
                sans.push(SubjectAltName::Uri(u.clone()));
            }
            _ => {
                let why = "a Hostname entry needs a DNS name in hostname (its first label may be *), a URI entry a URI in uri";
                invalid(cx, &field, why);
                valid = false;
            }
        }
    }
    let mut ca_pem = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        let field = format!("spec.validation.caCertificateRefs[{i}]");
        let at = CaRef {
            group: &r.group,
            kind: &r.kind,
            namespace: &key.namespace,
            name: &r.name,
        };
        match read_ca(cx, &at) {
            Ok(pem) => ca_pem.push(pem),
            Err((reason, why)) => cx.warn(
                key,
                format!("{reason}: {field} {why}: connections to its Services fail until it does"),
            ),
        }
    }
    if !valid {
        // Trusting nothing: every handshake fails.
        ca_pem.clear();
    }
    let system = system && valid;
    if ca_pem.is_empty() && !system {
        cx.warn(
            key,
            "NoValidCACertificate: none of its caCertificateRefs gives a CA certificate: connections to its Services fail",
        );
    }
    BackendTls {
        policy: format!("{}/{}", key.namespace, key.name),
        hostname,
        ca_pem,
        system_roots: system,
        subject_alt_names: sans,
    }
}

/// A reference to CA certificates: a ConfigMap or Secret (key `ca.crt`).
pub(super) struct CaRef<'r> {
    pub(super) group: &'r str,
    pub(super) kind: &'r str,
    pub(super) namespace: &'r str,
    pub(super) name: &'r str,
}

/// The PEM CA certificates `at` names, or the Gateway API's reason and why not
/// (`InvalidKind`, `InvalidCACertificateRef`).
pub(super) fn read_ca(cx: &Context<'_>, at: &CaRef<'_>) -> Result<String, (&'static str, String)> {
    let (namespace, name) = (at.namespace, at.name);
    let pem = match (at.group, at.kind) {
        ("", "ConfigMap") => find_config_map(cx, namespace, name)
            .map(|data| data.get(CA_KEY).cloned().unwrap_or_default()),
        ("", "Secret") => cx
            .find_secret(namespace, name)
            .map(|s| String::from_utf8_lossy(&secrets::value(s, CA_KEY).0).into_owned()),
        (group, kind) => {
            let group = if group.is_empty() { "core" } else { group };
            return Err((
                "InvalidKind",
                format!("names {group}/{kind}, not a ConfigMap or Secret"),
            ));
        }
    };
    match pem {
        Some(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => Ok(pem),
        Some(_) => Err((
            "InvalidCACertificateRef",
            format!(
                "({} {namespace}/{name}) has no PEM certificate under {CA_KEY}",
                at.kind
            ),
        )),
        None => Err((
            "InvalidCACertificateRef",
            format!("({} {namespace}/{name}) not found", at.kind),
        )),
    }
}

/// The data of ConfigMap `namespace/name`, if it exists.
fn find_config_map<'a>(
    cx: &Context<'a>,
    namespace: &str,
    name: &str,
) -> Option<&'a std::collections::BTreeMap<String, String>> {
    static EMPTY: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    let key = ObjectKey {
        kind: "ConfigMap",
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    match cx.objects.get(&key)? {
        (Object::ConfigMap(c), _) => Some(c.data.as_ref().unwrap_or(&EMPTY)),
        _ => None,
    }
}

/// Whether `name` can be checked against a certificate and sent as SNI: a DNS name (no
/// wildcard) or an IP address.
fn server_name(name: &str) -> Result<(), String> {
    if name.parse::<std::net::IpAddr>().is_ok() || dns_name(name) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a DNS name (without wildcard) or an IP address"
        ))
    }
}

/// A subject alternative name to look for: a DNS name whose first label may be `*`.
fn san_name(name: &str) -> bool {
    dns_name(name.strip_prefix("*.").unwrap_or(name))
}

fn dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
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
