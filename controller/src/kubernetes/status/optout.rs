//! The Warning Event on a STRICT MeshTLSPolicy whose pods opt out of it (`weir.dev/inject:
//! disabled`, no sidecar, `weir.dev/skip-inbound-ports`). The condition says the current state;
//! the Event marks each change of the set, so `kubectl describe` and event pipelines see a
//! newly escaping pod when it appears, not only whoever reads the status.

use kube::{
    runtime::events::{Event, EventType, Recorder},
    Client,
};
use weir_api::{model::StrictCoverage, ObjectKey, Objects};

use super::{reference, reporter, Written, OPTED_OUT};
use crate::nodes::bounded;

impl Written {
    /// Records an Event for every STRICT policy whose set of opted-out pods changed to a
    /// non-empty one. A policy that became covered (or is gone) is forgotten, so the next
    /// escape is reported again.
    pub(super) async fn opted_out(
        &mut self,
        client: &Client,
        identity: &str,
        objects: &Objects,
        strict: &[StrictCoverage],
    ) {
        for coverage in strict.iter().filter(|c| !c.uncovered.is_empty()) {
            let key = ObjectKey {
                kind: "MeshTLSPolicy",
                namespace: coverage.namespace.clone(),
                name: coverage.name.clone(),
            };
            if self.opted_out.get(&key) == Some(&coverage.uncovered) {
                continue;
            }
            let Some((object, _)) = objects.get(&key) else {
                continue;
            };
            let event = Event {
                type_: EventType::Warning,
                reason: OPTED_OUT.into(),
                note: Some(bounded(
                    &format!("STRICT does not cover {}", coverage.summary()),
                    1000,
                )),
                action: "Enforce".into(),
                secondary: None,
            };
            // A Recorder folds every Event of the same object, reason and action into one
            // series that keeps its first note: a new set of pods would be counted under the
            // old names. A fresh Recorder makes each change its own Event with its own note.
            let recorder = Recorder::new(client.clone(), reporter(identity));
            match recorder.publish(&event, &reference(object)).await {
                Ok(()) => {
                    self.opted_out.insert(key, coverage.uncovered.clone());
                }
                Err(error) => tracing::warn!(object = %key, %error, "cannot record the Event"),
            }
        }
        self.opted_out.retain(|key, _| {
            strict.iter().any(|c| {
                c.namespace == key.namespace && c.name == key.name && !c.uncovered.is_empty()
            })
        });
    }
}
