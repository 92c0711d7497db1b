//! Nodes refusing their current view: a NACK is a node serving an older version than the
//! controller means it to, usually because it predates a restricting feature the view requires
//! (see `weir_api::model::features`). Each stays listed on `/status` and counted in
//! `weir_controller_refusing_nodes` until it applies a version or disconnects, so a rollout
//! that left nodes behind is visible, not only a counter that went up once.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
};

use prometheus::IntGaugeVec;
use serde::Serialize;

use crate::lock;

/// A node that refused its latest view.
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

/// Every node refusing its view, by stream.
#[derive(Default)]
pub struct Refusals {
    open: Mutex<BTreeMap<u64, Refusal>>,
    next: AtomicU64,
}

/// One stream's place in [`Refusals`]; its refusal is forgotten when it is dropped.
pub struct RefusalSlot<'a> {
    refusals: &'a Refusals,
    gauge: prometheus::IntGauge,
    id: u64,
}

impl Refusals {
    /// A place for one stream's refusals, counted in `gauge` under `role`.
    pub fn slot<'a>(&'a self, gauge: &IntGaugeVec, role: &str) -> RefusalSlot<'a> {
        RefusalSlot {
            refusals: self,
            gauge: gauge.with_label_values(&[role]),
            id: self.next.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Every node refusing its view now, in the order their streams opened.
    pub fn list(&self) -> Vec<Refusal> {
        lock(&self.open).values().cloned().collect()
    }
}

impl RefusalSlot<'_> {
    /// The node refused a version.
    pub fn refused(&self, refusal: Refusal) {
        if lock(&self.refusals.open).insert(self.id, refusal).is_none() {
            self.gauge.inc();
        }
    }

    /// The node applied a version: it refuses nothing any more.
    pub fn applied(&self) {
        if lock(&self.refusals.open).remove(&self.id).is_some() {
            self.gauge.dec();
        }
    }
}

impl Drop for RefusalSlot<'_> {
    fn drop(&mut self) {
        self.applied();
    }
}

#[cfg(test)]
mod tests {
    use prometheus::Opts;

    use super::*;

    #[test]
    fn a_refusal_lasts_until_the_node_applies_a_version_or_leaves() {
        let gauge = IntGaugeVec::new(Opts::new("refusing", "test"), &["role"]).unwrap();
        let refusals = Refusals::default();
        let refusal = |version| Refusal {
            node: "shop/backend-0 (sidecar)".into(),
            node_version: "0.1.0".into(),
            version,
            error: "this sidecar cannot enforce access.headers".into(),
        };
        let (first, second) = (
            refusals.slot(&gauge, "sidecar"),
            refusals.slot(&gauge, "sidecar"),
        );
        first.refused(refusal(2));
        first.refused(refusal(3));
        second.refused(refusal(3));
        assert_eq!(gauge.with_label_values(&["sidecar"]).get(), 2);
        assert_eq!(refusals.list()[0].version, 3, "the latest refusal");
        first.applied();
        assert_eq!(refusals.list().len(), 1);
        drop(second);
        assert!(refusals.list().is_empty());
        assert_eq!(gauge.with_label_values(&["sidecar"]).get(), 0);
    }
}
