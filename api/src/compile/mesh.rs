//! MeshTLSPolicy and AccessPolicy: validated here with the same rules their CRD schemas give
//! the API server, so a directory of objects is held to what `kubectl apply` would refuse.
//! Sidecars enforce them; the ingress snapshot carries nothing from them.

use std::sync::LazyLock;

use regex::Regex;

use super::Context;
use crate::{
    crds::{
        AccessPolicy, AccessSource, NAMESPACE_PATTERN, SERVICE_ACCOUNT_PATTERN, SPIFFE_ID_PATTERN,
    },
    error::Location,
    objects::{Object, ObjectKey},
};

static SPIFFE_ID: LazyLock<Regex> = LazyLock::new(|| pattern(SPIFFE_ID_PATTERN));
static NAMESPACE: LazyLock<Regex> = LazyLock::new(|| pattern(NAMESPACE_PATTERN));
static SERVICE_ACCOUNT: LazyLock<Regex> = LazyLock::new(|| pattern(SERVICE_ACCOUNT_PATTERN));

fn pattern(text: &str) -> Regex {
    Regex::new(text).expect("the CRD's patterns are valid regular expressions")
}

/// Checks every AccessPolicy (a MeshTLSPolicy's fields are fully checked by its types).
pub(super) fn compile_all(cx: &mut Context<'_>) {
    let policies: Vec<_> = cx
        .iter()
        .filter_map(|(o, l)| match o {
            Object::AccessPolicy(p) => Some((o.key(), p, l)),
            _ => None,
        })
        .collect();
    for (key, policy, location) in policies {
        check_access(cx, &key, policy, location);
    }
}

fn check_access(cx: &mut Context<'_>, key: &ObjectKey, policy: &AccessPolicy, location: &Location) {
    for (r, rule) in policy.spec.rules.iter().enumerate() {
        if rule.from.is_empty() {
            cx.error(
                location,
                key,
                format!("spec.rules[{r}].from"),
                "name at least one caller",
            );
        }
        for (f, from) in rule.from.iter().enumerate() {
            let field = format!("spec.rules[{r}].from[{f}]");
            if let Err(message) = check_source(from) {
                cx.error(location, key, field, message);
            }
        }
        for (t, to) in rule.to.iter().enumerate() {
            let field = format!("spec.rules[{r}].to[{t}]");
            for (i, method) in to.methods.iter().enumerate() {
                if method.0.is_empty() || !method.0.bytes().all(|b| b.is_ascii_uppercase()) {
                    cx.error(
                        location,
                        key,
                        format!("{field}.methods[{i}]"),
                        format!("{:?} is not an HTTP method in uppercase", method.0),
                    );
                }
            }
            for (i, path) in to.paths.iter().enumerate() {
                let p = &path.0;
                let star = p.find('*');
                if !p.starts_with('/') || star.is_some_and(|s| s != p.len() - 1) {
                    cx.error(
                        location,
                        key,
                        format!("{field}.paths[{i}]"),
                        format!("{p:?} must start with / and may only end with *"),
                    );
                }
            }
            for (i, port) in to.ports.iter().enumerate() {
                if !(1..=65535).contains(&port.0) {
                    cx.error(
                        location,
                        key,
                        format!("{field}.ports[{i}]"),
                        format!("{} is not a port (1-65535)", port.0),
                    );
                }
            }
        }
    }
}

fn check_source(from: &AccessSource) -> Result<(), String> {
    let given = [&from.identity, &from.namespace, &from.service_account]
        .iter()
        .filter(|f| f.is_some())
        .count();
    if given != 1 {
        return Err("set exactly one of identity, namespace or serviceAccount".into());
    }
    let checks: [(&Option<String>, &Regex, &str); 3] = [
        (
            &from.identity,
            &SPIFFE_ID,
            "a SPIFFE ID like spiffe://cluster.local/ns/NAMESPACE/sa/NAME",
        ),
        (&from.namespace, &NAMESPACE, "a namespace name"),
        (
            &from.service_account,
            &SERVICE_ACCOUNT,
            "NAME or NAMESPACE/NAME of a ServiceAccount",
        ),
    ];
    for (value, pattern, what) in checks {
        if let Some(value) = value {
            if !pattern.is_match(value) {
                return Err(format!("{value:?} is not {what}"));
            }
        }
    }
    Ok(())
}
