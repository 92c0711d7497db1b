//! Every node connected to the controller, for `weirctl status` and `weirctl config`: its role,
//! pod and software version, the version of its view it applied last, the one it refused (with
//! why), when it was last heard from, and when its workload certificate expires. A node is
//! **behind** while it has not applied its latest view; `weir_controller_nodes_behind` counts
//! those behind for longer than [`BEHIND_AFTER`] (a node applying a view is behind for a moment).
//!
//! A node **refusing** (NACKing) its view serves an older version than the controller means it
//! to, usually because it predates a restricting feature the view requires (see
//! `weir_api::model::features`). It stays listed on `/status` and counted in
//! `weir_controller_refusing_nodes` until it applies that version (or a newer one) or
//! disconnects, so a rollout that left nodes behind is visible, not only a counter that went up
//! once.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;
use tokio::sync::watch;

use crate::{lock, views::View};

/// How long a node may take to apply its latest view before it counts as behind.
pub const BEHIND_AFTER: Duration = Duration::from_secs(30);

/// One node as `/nodes` lists it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// `ingress` or `sidecar`.
    pub role: String,
    /// Its pod's namespace and name, from its Hello.
    pub namespace: String,
    pub pod: String,
    /// The ServiceAccount its token proved.
    pub account: String,
    /// Its software version.
    pub node_version: String,
    /// The version of its view it applied last (ACK), if any.
    pub applied: Option<u64>,
    /// Its latest view's version.
    pub latest: Option<u64>,
    /// It has not applied its latest view.
    pub behind: bool,
    /// Seconds since its latest view was published, while it is behind.
    pub behind_seconds: Option<u64>,
    /// The version it refused last (NACK) and why, until it applies one.
    pub refused: Option<Refused>,
    /// When its stream opened and when it last sent anything (Unix seconds).
    pub connected_at: u64,
    pub last_seen: u64,
    /// When the certificate the controller last issued to its ServiceAccount expires (Unix
    /// seconds); none when none was issued by this replica.
    pub certificate_expiry: Option<u64>,
}

/// A node refused a version of its view: what the Kubernetes mode records as a Warning Event
/// on the node's Pod.
#[derive(Clone, Debug)]
pub struct NodeRefusal {
    /// `ingress` or `sidecar`.
    pub role: String,
    pub namespace: String,
    pub pod: String,
    pub version: u64,
    pub error: String,
}

/// A node refusing its view, as the controller's `/status` lists it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Refusal {
    /// `namespace/pod (role)`.
    pub node: String,
    /// Its software version, from its Hello.
    pub node_version: String,
    /// The version it refused.
    pub version: u64,
    /// Why, in its words.
    pub error: String,
}

/// A refused version.
#[derive(Clone, Debug, Serialize)]
pub struct Refused {
    pub version: u64,
    pub error: String,
}

struct Node {
    status: NodeStatus,
    views: watch::Receiver<Option<Arc<View>>>,
    /// When its stream opened: a view published before could not reach it earlier.
    since: Instant,
}

impl Node {
    /// Seconds it has been behind its latest view, if it is.
    fn behind(&self) -> Option<u64> {
        let latest = self.views.borrow();
        let latest = latest.as_ref()?;
        let since = latest.published.max(self.since);
        (self.status.applied != Some(latest.version)).then(|| since.elapsed().as_secs())
    }
}

/// What a node says about itself is kept at most this long (bytes): a NACK's error may be
/// megabytes, and every listing copies it.
const MAX_NODE_TEXT: usize = 1024;

/// `text` cut to at most `max` bytes (on a character boundary), `…` marking the cut.
pub(crate) fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The connected nodes, by stream.
#[derive(Default)]
pub struct Nodes {
    open: Mutex<BTreeMap<u64, Node>>,
    next: AtomicU64,
    /// The expiry of the last certificate issued to each ServiceAccount.
    certificates: Mutex<HashMap<String, u64>>,
}

/// One stream's entry in [`Nodes`], removed when it is dropped.
pub struct NodeSlot<'a> {
    nodes: &'a Nodes,
    id: u64,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Nodes {
    /// Lists a node whose stream just opened; `views` is what it watches.
    pub fn connect(
        &self,
        (role, namespace, pod): (&str, &str, &str),
        account: &str,
        node_version: &str,
        views: watch::Receiver<Option<Arc<View>>>,
    ) -> NodeSlot<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let status = NodeStatus {
            role: role.to_string(),
            namespace: namespace.to_string(),
            pod: pod.to_string(),
            account: account.to_string(),
            node_version: bounded(node_version, 64),
            applied: None,
            latest: None,
            behind: false,
            behind_seconds: None,
            refused: None,
            connected_at: now(),
            last_seen: now(),
            certificate_expiry: None,
        };
        let since = Instant::now();
        let node = Node {
            status,
            views,
            since,
        };
        lock(&self.open).insert(id, node);
        NodeSlot { nodes: self, id }
    }

    /// A certificate was issued to `account`, valid until `not_after` (Unix seconds).
    pub fn certified(&self, account: &str, not_after: u64) {
        lock(&self.certificates).insert(account.to_string(), not_after);
    }

    /// Every connected node now, in the order their streams opened.
    pub fn list(&self) -> Vec<NodeStatus> {
        let certificates = lock(&self.certificates).clone();
        lock(&self.open)
            .values()
            .map(|node| {
                let mut status = node.status.clone();
                status.latest = node.views.borrow().as_ref().map(|v| v.version);
                status.behind_seconds = node.behind();
                status.behind = status.behind_seconds.is_some();
                status.certificate_expiry = certificates.get(&status.account).copied();
                status
            })
            .collect()
    }

    /// The role and latest view of the node `namespace/pod` (of `role`, when given).
    pub fn view_of(
        &self,
        namespace: &str,
        pod: &str,
        role: Option<&str>,
    ) -> Option<(String, Arc<View>)> {
        // The newest stream of that pod: an older one is a connection on its way out.
        lock(&self.open).values().rev().find_map(|node| {
            let s = &node.status;
            (s.namespace == namespace && s.pod == pod && role.is_none_or(|r| r == s.role))
                .then(|| Some((s.role.clone(), node.views.borrow().clone()?)))
                .flatten()
        })
    }

    /// Every node refusing its view now, in the order their streams opened.
    pub fn refusing(&self) -> Vec<Refusal> {
        lock(&self.open)
            .values()
            .filter_map(|node| {
                let s = &node.status;
                let refused = s.refused.as_ref()?;
                Some(Refusal {
                    node: format!("{}/{} ({})", s.namespace, s.pod, s.role),
                    node_version: s.node_version.clone(),
                    version: refused.version,
                    error: refused.error.clone(),
                })
            })
            .collect()
    }

    /// Per role, how many nodes have been behind for longer than [`BEHIND_AFTER`], and how
    /// many refuse their view.
    pub fn by_role(&self) -> BTreeMap<String, (i64, i64)> {
        let mut counts: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for node in lock(&self.open).values() {
            let late = node.behind().is_some_and(|s| s >= BEHIND_AFTER.as_secs());
            let (behind, refusing) = counts.entry(node.status.role.clone()).or_default();
            *behind += i64::from(late);
            *refusing += i64::from(node.status.refused.is_some());
        }
        counts
    }
}

impl NodeSlot<'_> {
    fn update(&self, change: impl FnOnce(&mut NodeStatus)) {
        if let Some(node) = lock(&self.nodes.open).get_mut(&self.id) {
            node.status.last_seen = now();
            change(&mut node.status);
        }
    }

    /// The node applied `version`: a refusal of that version or an older one is over.
    pub fn applied(&self, version: u64) {
        self.update(|s| {
            s.applied = Some(version);
            s.refused = s.refused.take().filter(|r| r.version > version);
        });
    }

    /// The node refused `version`, for `error` (kept to its first kilobyte).
    pub fn refused(&self, version: u64, error: &str) {
        let error = bounded(error, MAX_NODE_TEXT);
        self.update(|s| s.refused = Some(Refused { version, error }));
    }
}

impl Drop for NodeSlot<'_> {
    fn drop(&mut self) {
        lock(&self.nodes.open).remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn view(version: u64, published: Instant) -> Option<Arc<View>> {
        Some(Arc::new(View {
            version,
            encoding: "json",
            payload: Bytes::new(),
            published,
        }))
    }

    #[test]
    fn a_node_is_listed_while_connected_and_behind_until_it_applies_its_latest_view() {
        let nodes = Nodes::default();
        let (tx, rx) = watch::channel(view(3, Instant::now()));
        let slot = nodes.connect(
            ("ingress", "weir-system", "ingress-0"),
            "weir-system/weir-ingress",
            "0.1.0",
            rx,
        );
        let listed = &nodes.list()[0];
        assert_eq!(
            (listed.applied, listed.latest, listed.behind),
            (None, Some(3), true)
        );
        slot.applied(3);
        assert!(!nodes.list()[0].behind);
        slot.refused(4, "cannot enforce access.headers");
        tx.send_replace(view(4, Instant::now() - Duration::from_secs(60)));
        let listed = &nodes.list()[0];
        assert!(listed.behind && listed.refused.is_some(), "{listed:?}");
        // Published a minute ago, but the node connected just now: not late yet.
        assert_eq!(nodes.by_role()["ingress"], (0, 1));
        // A late ACK of an older version leaves the refusal of the newer one.
        slot.applied(3);
        assert!(nodes.list()[0].refused.is_some());
        slot.refused(4, &"x".repeat(10_000));
        let error = nodes.list()[0].refused.clone().unwrap().error;
        assert!(error.len() < 1100, "{}", error.len());
        nodes.certified("weir-system/weir-ingress", 1_900_000_000);
        assert_eq!(nodes.list()[0].certificate_expiry, Some(1_900_000_000));
        drop(slot);
        assert!(nodes.list().is_empty());
    }

    #[test]
    fn a_refusal_lasts_until_the_node_applies_a_version_or_leaves() {
        let nodes = Nodes::default();
        let connect = |pod| {
            let (_, rx) = watch::channel(view(3, Instant::now()));
            nodes.connect(("sidecar", "shop", pod), "shop/backend", "0.1.0", rx)
        };
        let (first, second) = (connect("backend-0"), connect("backend-1"));
        let error = "this sidecar cannot enforce access.headers";
        first.refused(2, error);
        first.refused(3, error);
        second.refused(3, error);
        assert_eq!(nodes.by_role()["sidecar"].1, 2);
        let refusing = nodes.refusing();
        assert_eq!(refusing[0].node, "shop/backend-0 (sidecar)");
        assert_eq!(refusing[0].version, 3, "the latest refusal");
        first.applied(3);
        assert_eq!(nodes.refusing().len(), 1);
        drop(second);
        assert!(nodes.refusing().is_empty());
        assert_eq!(nodes.by_role()["sidecar"].1, 0);
    }
}
