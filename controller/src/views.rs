//! Each kind of node's view of the compiled snapshot, encoded once and shared by every stream
//! that serves it. A view is only republished when its bytes change, so a change that leaves
//! a node's view as it was doesn't wake that node.

use std::{sync::Arc, time::Instant};

use tokio::sync::watch;
use weir_api::{wire, Snapshot};

/// One encoded version of a view.
pub struct View {
    /// Increases with every change of this view.
    pub version: u64,
    /// `ConfigUpdate.encoding`.
    pub encoding: &'static str,
    /// `ConfigUpdate.payload`, shared by every stream.
    pub payload: bytes::Bytes,
    /// When it was published, for the push-latency metric.
    pub published: Instant,
}

/// The latest views, watched by the streams.
pub struct Views {
    ingress: watch::Sender<Option<Arc<View>>>,
}

impl Default for Views {
    fn default() -> Self {
        Self {
            ingress: watch::Sender::new(None),
        }
    }
}

impl Views {
    /// Cuts and encodes the views of `snapshot`; returns whether the ingress view changed.
    pub fn publish(&self, snapshot: &Snapshot) -> bool {
        // The ingress serves the whole north-south configuration.
        let payload = wire::encode(snapshot);
        self.ingress.send_if_modified(|current| {
            let version = match current {
                Some(view) if *view.payload == *payload => return false,
                Some(view) => view.version + 1,
                None => 1,
            };
            *current = Some(Arc::new(View {
                version,
                encoding: wire::SNAPSHOT_ENCODING,
                payload: payload.into(),
                published: Instant::now(),
            }));
            true
        })
    }

    /// Follows the ingress view.
    pub fn ingress(&self) -> watch::Receiver<Option<Arc<View>>> {
        self.ingress.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_view_is_not_republished() {
        let views = Views::default();
        let mut rx = views.ingress();
        let snapshot = Snapshot::default();
        assert!(views.publish(&snapshot));
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().as_ref().unwrap().version, 1);
        assert!(!views.publish(&Snapshot::default()), "same bytes: no wake");
        assert!(!rx.has_changed().unwrap());
        let changed = Snapshot {
            warnings: vec!["x".into()],
            ..Snapshot::default()
        };
        assert!(views.publish(&changed));
        assert_eq!(rx.borrow_and_update().as_ref().unwrap().version, 2);
    }
}
