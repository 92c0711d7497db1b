//! The mesh: what sidecars are sent. One [`Mesh`] is compiled for the whole cluster; each
//! sidecar's [`SidecarView`] is its own inbound policy (picked by its pod's labels) plus the
//! services it may call, which every sidecar shares.
//!
//! The inbound policy is closed on the wire (`deny_unknown_fields`): everything in it restricts
//! what a sidecar lets in, so a field a node does not know is an error there, not a field to
//! skip. The rest of the view stays open, so a field that only informs can be added without
//! every node refusing it; see [`super::features`] for how a view names what it needs.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use serde::{Deserialize, Serialize};

use super::Cluster;

/// The compiled mesh: every Service with its endpoints and their identities, and the
/// security team's policies with the pods they may select.
#[derive(Clone, Debug, Default)]
pub struct Mesh {
    /// Every Service, by namespace then name.
    pub services: Vec<MeshService>,
    /// One cluster per Service port (`namespace/service:port`), with endpoint identities.
    pub clusters: BTreeMap<String, Cluster>,
    /// MeshTLSPolicies, most specific first (a selector beats none, then the oldest).
    pub tls: Vec<TlsPolicy>,
    /// AccessPolicies.
    pub access: Vec<AccessPolicy>,
    /// Meshed pods by `namespace/name`.
    pub pods: BTreeMap<String, MeshPod>,
    /// Every STRICT MeshTLSPolicy with the pods it governs that escape it (for the
    /// controller's reports; sent to no node).
    pub strict: Vec<super::StrictCoverage>,
}

/// A meshed pod: who it runs as and the labels policies select it by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeshPod {
    /// `spec.serviceAccountName` (`default` when unset).
    pub service_account: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
}

/// A compiled MeshTLSPolicy.
#[derive(Clone, Debug)]
pub struct TlsPolicy {
    /// `MeshTLSPolicy namespace/name`.
    pub policy: String,
    /// The namespace whose pods it may select.
    pub namespace: String,
    /// Its own name.
    pub name: String,
    /// Which of them.
    pub selector: Selector,
    /// Their mode.
    pub mode: TlsMode,
}

/// A compiled AccessPolicy.
#[derive(Clone, Debug)]
pub struct AccessPolicy {
    /// The namespace whose pods it may select.
    pub namespace: String,
    /// Which of them.
    pub selector: Selector,
    /// What a selected pod enforces.
    pub rules: AccessRules,
}

/// A label selector (`matchLabels` and `matchExpressions`); empty selects every pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    /// Every expression must hold.
    pub requirements: Vec<Requirement>,
}

/// One requirement on a label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// The label is one of these values (`matchLabels` is `In` with one value).
    In(String, Vec<String>),
    /// The label is absent or none of these values.
    NotIn(String, Vec<String>),
    /// The label is present.
    Exists(String),
    /// The label is absent.
    DoesNotExist(String),
}

impl Selector {
    /// Whether a pod with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(key, values) => !labels.get(key).is_some_and(|v| values.contains(v)),
            Requirement::Exists(key) => labels.contains_key(key),
            Requirement::DoesNotExist(key) => !labels.contains_key(key),
        })
    }

    /// True when it selects every pod of the namespace.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// How a sidecar treats inbound connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "UPPERCASE")]
pub enum TlsMode {
    /// mTLS only.
    Strict,
    /// mTLS or plaintext (detected from the first bytes). Meshed pods without a policy.
    #[default]
    Permissive,
    /// Plaintext only.
    Disabled,
}

/// One AccessPolicy as a sidecar enforces it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessRules {
    /// `AccessPolicy namespace/name`, for logs and metrics.
    pub policy: String,
    /// `spec.default: deny` (the default).
    pub deny_by_default: bool,
    /// A request one rule allows is allowed.
    pub rules: Vec<AccessRule>,
}

/// One allow rule: a caller named by `from` doing something `to` allows (or anything, when
/// `to` is empty).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessRule {
    /// Who.
    pub from: Vec<Caller>,
    /// What; empty allows everything.
    pub to: Vec<Operation>,
}

/// A caller, by the identity in its mTLS certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Caller {
    /// Exactly this SPIFFE ID.
    Identity(String),
    /// Any workload of this namespace, in the trust domain given or else the mesh's own.
    Namespace {
        /// The namespace.
        namespace: String,
        /// The caller's trust domain; `None`: the mesh's own.
        #[serde(
            default,
            rename = "trustDomain",
            skip_serializing_if = "Option::is_none"
        )]
        trust_domain: Option<String>,
    },
    /// This ServiceAccount (`namespace`, `name`), in the trust domain given or else the mesh's
    /// own.
    ServiceAccount {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The caller's trust domain; `None`: the mesh's own.
        #[serde(
            default,
            rename = "trustDomain",
            skip_serializing_if = "Option::is_none"
        )]
        trust_domain: Option<String>,
    },
}

/// Requests a rule allows: every non-empty list must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    /// Uppercase methods.
    pub methods: Vec<String>,
    /// Exact paths, or prefixes written with a trailing `*`.
    pub paths: Vec<String>,
    /// The workload's ports.
    pub ports: Vec<u16>,
}

/// A Service the mesh can call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshService {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `spec.clusterIPs` (transparent mode maps an original destination back to the Service).
    pub cluster_ips: Vec<IpAddr>,
    /// Its ports, each with the cluster serving it.
    pub ports: Vec<MeshPort>,
}

/// One port of a [`MeshService`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshPort {
    /// The Service port.
    pub port: u16,
    /// Its name (may be empty).
    pub name: String,
    /// The key of its cluster in [`SidecarView::clusters`].
    pub cluster: String,
}

/// The inbound half of a sidecar's view: what its pod enforces.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inbound {
    /// The mTLS mode.
    pub mode: TlsMode,
    /// The MeshTLSPolicy that set it, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode_from: Option<String>,
    /// Every AccessPolicy selecting the pod. A request is allowed when a rule of any of them
    /// allows it; otherwise it is denied when any of them denies by default. None: all allowed.
    pub access: Vec<AccessRules>,
}

/// What one sidecar is sent.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SidecarView {
    /// The restricting features ([`super::features`]) the view uses: a node that does not
    /// implement one of them refuses the view. Absent from a controller that predates the list.
    #[serde(default)]
    pub requires: Vec<String>,
    /// Its own pod's policy.
    pub inbound: Inbound,
    /// Services it may call.
    pub services: Vec<MeshService>,
    /// Their clusters: endpoints, their identities (`Cluster::identities`), and TrafficPolicy.
    pub clusters: BTreeMap<String, Cluster>,
}

/// [`SidecarView`] by reference, so the shared parts are encoded without a copy. Only
/// [`Mesh::view`] makes one, so every encoded view carries the requirements of its own
/// inbound policy.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SidecarViewRef<'a> {
    requires: BTreeSet<&'static str>,
    inbound: &'a Inbound,
    services: &'a [MeshService],
    clusters: &'a BTreeMap<String, Cluster>,
}

impl Mesh {
    /// The inbound policy of pod `namespace/pod`. A pod the mesh does not know (not yet
    /// listed) gets what applies to the whole namespace.
    pub fn inbound(&self, namespace: &str, pod: &str) -> Inbound {
        let none = BTreeMap::new();
        let labels = self
            .pods
            .get(&format!("{namespace}/{pod}"))
            .map(|p| &p.labels)
            .unwrap_or(&none);
        let tls = self
            .tls
            .iter()
            .find(|p| p.namespace == namespace && p.selector.matches(labels));
        Inbound {
            mode: tls.map(|p| p.mode).unwrap_or_default(),
            mode_from: tls.map(|p| p.policy.clone()),
            access: self
                .access
                .iter()
                .filter(|p| p.namespace == namespace && p.selector.matches(labels))
                .map(|p| p.rules.clone())
                .collect(),
        }
    }

    /// The pod's ServiceAccount, when the mesh knows the pod.
    pub fn pod(&self, namespace: &str, pod: &str) -> Option<&MeshPod> {
        self.pods.get(&format!("{namespace}/{pod}"))
    }

    /// A sidecar's view, by reference, stating the restricting features its policy uses.
    pub fn view<'a>(&'a self, inbound: &'a Inbound) -> SidecarViewRef<'a> {
        SidecarViewRef {
            requires: inbound.requires(),
            inbound,
            services: &self.services,
            clusters: &self.clusters,
        }
    }
}

/// Meshed endpoints of a cluster and who serves them: address to `namespace/serviceaccount`.
pub type Identities = BTreeMap<SocketAddr, String>;
