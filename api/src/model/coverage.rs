//! Who a STRICT MeshTLSPolicy does not reach. A pod the injector left alone (`weir.dev/inject:
//! disabled`, `hostNetwork`, or simply not injected) has no sidecar to refuse plaintext, and a
//! meshed pod's `weir.dev/skip-inbound-ports` are never redirected to its sidecar: both still
//! take plaintext while the policy reads STRICT. These annotations keep working; this is how
//! the controller reports them (compile warning, status condition, Event, metric). Not part of
//! any node's view.

use std::fmt;

use serde::{Serialize, Serializer};

/// At most this many pods are named in one message; the rest are counted.
const NAMED: usize = 10;

/// A STRICT MeshTLSPolicy and the pods it governs that still take plaintext.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StrictCoverage {
    /// The policy's namespace.
    pub namespace: String,
    /// The policy's name.
    pub name: String,
    /// Pods it governs (it is the most specific policy selecting them) that escape it, in
    /// `namespace/name` order. Empty: every pod it governs is covered.
    pub uncovered: Vec<Uncovered>,
}

/// One pod a STRICT policy does not cover, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Uncovered {
    /// `namespace/name`.
    pub pod: String,
    /// Why it escapes.
    pub reason: OptOut,
}

/// Why a pod escapes a STRICT policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OptOut {
    /// Not meshed: annotated `weir.dev/inject: disabled`.
    InjectDisabled,
    /// Not meshed: `spec.hostNetwork` pods are never injected.
    HostNetwork,
    /// Not meshed: no `weir.dev/injected` annotation (injection not requested, or the
    /// injector did not see the pod).
    NoSidecar,
    /// Meshed, but these inbound ports bypass the sidecar (`weir.dev/skip-inbound-ports`).
    SkipInboundPorts(Vec<u16>),
}

impl fmt::Display for OptOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InjectDisabled => f.write_str("weir.dev/inject: disabled"),
            Self::HostNetwork => f.write_str("hostNetwork: no sidecar"),
            Self::NoSidecar => f.write_str("no sidecar"),
            Self::SkipInboundPorts(ports) => {
                let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
                write!(f, "weir.dev/skip-inbound-ports: {}", ports.join(","))
            }
        }
    }
}

/// Written as its message, so `/status` reads like the warning.
impl Serialize for OptOut {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl StrictCoverage {
    /// `namespace/name`, as the metric labels it.
    pub fn policy(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// `2 pods: shop/legacy-0 (weir.dev/inject: disabled), shop/db-0
    /// (weir.dev/skip-inbound-ports: 5432)`; past ten pods the rest are counted, so a message
    /// stays short whatever the namespace's size.
    pub fn summary(&self) -> String {
        let count = self.uncovered.len();
        let named: Vec<String> = self
            .uncovered
            .iter()
            .take(NAMED)
            .map(|u| format!("{} ({})", u.pod, u.reason))
            .collect();
        let mut text = format!(
            "{count} pod{}: {}",
            if count == 1 { "" } else { "s" },
            named.join(", ")
        );
        if count > NAMED {
            text.push_str(&format!(" and {} more", count - NAMED));
        }
        text
    }
}
