//! Which pods each STRICT MeshTLSPolicy does not reach. The injector's opt-outs keep working
//! as they always did; this pass only makes them visible: every STRICT policy gets the list of
//! pods it governs that still take plaintext (not meshed, or meshed with inbound ports that
//! bypass the sidecar) and, when that list is not empty, a compile warning naming them.
//!
//! A pod is governed by the most specific policy that selects it (the order of
//! [`Mesh::tls`](crate::model::Mesh::tls), as [`Mesh::inbound`](crate::model::Mesh::inbound)
//! picks it): a pod a narrower PERMISSIVE policy selects does not escape the namespace's
//! STRICT one, it follows the policy written for it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use super::{mesh::meshed, Context};
use crate::{
    model::{OptOut, StrictCoverage, TlsMode, Uncovered},
    objects::Object,
};

/// Pod annotation: `enabled` or `disabled` overrides the namespace's injection default.
pub const INJECT_ANNOTATION: &str = "weir.dev/inject";
/// Pod annotation: inbound ports not redirected to the sidecar (comma-separated).
pub const SKIP_INBOUND_ANNOTATION: &str = "weir.dev/skip-inbound-ports";

/// The ports of a `weir.dev/skip-*-ports` annotation (`key`, for the error): comma-separated,
/// blanks ignored. The injector reads the annotation with it too, so what is reported is
/// exactly what was left out of the redirect.
pub fn annotation_ports(key: &str, text: &str) -> Result<Vec<u16>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("annotation {key}: {p:?} is not a port (1-65535)"))
        })
        .collect()
}

/// Fills [`Mesh::strict`](crate::model::Mesh::strict) and warns about each STRICT policy
/// that does not cover every pod it governs. Runs after the policies and pods are compiled.
pub(super) fn compile_all(cx: &mut Context<'_>) {
    let mut strict: BTreeMap<(String, String), Vec<Uncovered>> = cx
        .mesh
        .tls
        .iter()
        .filter(|p| p.mode == TlsMode::Strict)
        .map(|p| ((p.namespace.clone(), p.name.clone()), Vec::new()))
        .collect();
    if strict.is_empty() {
        return;
    }
    let none = BTreeMap::new();
    for (object, _) in cx.iter() {
        let Object::Pod(pod) = object else {
            continue;
        };
        if finished(pod) {
            continue;
        }
        let key = object.key();
        let labels = pod.metadata.labels.as_ref().unwrap_or(&none);
        let Some(governing) = cx
            .mesh
            .tls
            .iter()
            .find(|p| p.namespace == key.namespace && p.selector.matches(labels))
        else {
            continue;
        };
        let policy = (governing.namespace.clone(), governing.name.clone());
        let (Some(uncovered), Some(reason)) = (strict.get_mut(&policy), opt_out(pod)) else {
            continue;
        };
        uncovered.push(Uncovered {
            pod: format!("{}/{}", key.namespace, key.name),
            reason,
        });
    }
    for ((namespace, name), uncovered) in strict {
        let coverage = StrictCoverage {
            namespace,
            name,
            uncovered,
        };
        if !coverage.uncovered.is_empty() {
            cx.warnings.push(format!(
                "MeshTLSPolicy {} (STRICT) does not cover {}",
                coverage.policy(),
                coverage.summary()
            ));
        }
        cx.mesh.strict.push(coverage);
    }
}

/// Why `pod` still takes plaintext, if it does.
fn opt_out(pod: &Pod) -> Option<OptOut> {
    let annotations = pod.metadata.annotations.as_ref();
    let annotation = |key: &str| annotations.and_then(|a| a.get(key)).map(String::as_str);
    if meshed(pod) {
        // A value the injector would have refused cannot be what its init container applied
        // (it refuses the pod instead), so only a readable list is reported.
        let ports = annotation(SKIP_INBOUND_ANNOTATION)
            .and_then(|text| annotation_ports(SKIP_INBOUND_ANNOTATION, text).ok())
            .filter(|ports| !ports.is_empty())?;
        return Some(OptOut::SkipInboundPorts(ports));
    }
    if annotation(INJECT_ANNOTATION) == Some("disabled") {
        return Some(OptOut::InjectDisabled);
    }
    let host_network = pod.spec.as_ref().and_then(|s| s.host_network);
    Some(if host_network == Some(true) {
        OptOut::HostNetwork
    } else {
        OptOut::NoSidecar
    })
}

/// A pod that ran to completion serves nothing, so it escapes nothing.
fn finished(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}
