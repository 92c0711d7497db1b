//! Each kind of node's view of the compiled snapshot, encoded once and shared by every stream
//! that serves it. A view is only republished when its bytes change, so a change that leaves
//! a node's view as it was doesn't wake that node.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use bytes::Bytes;
use tokio::sync::watch;
use weir_api::{
    model::{Inbound, Mesh},
    wire, Snapshot,
};

use crate::lock;

/// One encoded version of a view.
pub struct View {
    /// Increases with every change of this view.
    pub version: u64,
    /// `ConfigUpdate.encoding`.
    pub encoding: &'static str,
    /// `ConfigUpdate.payload`, shared by every stream.
    pub payload: Bytes,
    /// When it was published, for the push-latency metric.
    pub published: Instant,
}

type Channel = watch::Sender<Option<Arc<View>>>;

/// The latest views, watched by the streams.
pub struct Views {
    ingress: Channel,
    sidecars: Mutex<Sidecars>,
}

/// Sidecar views: one channel per pod, and each distinct view encoded once. Pods whose inbound
/// policy is the same (most of them) share one payload.
#[derive(Default)]
struct Sidecars {
    mesh: Option<Arc<Mesh>>,
    pods: HashMap<(String, String), Channel>,
    /// Encoded views of the current mesh, by the inbound policy they carry.
    encoded: HashMap<Inbound, Bytes>,
    /// When `pods` grows to this many, channels nobody watches any more are dropped then and
    /// there (not only at the next publish), so streams that come and go with made-up pod
    /// names cannot pile channels up between two compiles.
    prune_at: usize,
}

impl Sidecars {
    /// Brings one pod's channel up to date with the current mesh.
    fn update(&mut self, namespace: &str, pod: &str) {
        let Some(mesh) = self.mesh.clone() else {
            return;
        };
        let inbound = mesh.inbound(namespace, pod);
        let payload = match self.encoded.get(&inbound) {
            Some(payload) => payload.clone(),
            None => {
                let payload = Bytes::from(wire::encode_view(&mesh.view(&inbound)));
                self.encoded.insert(inbound, payload.clone());
                payload
            }
        };
        if let Some(channel) = self.pods.get(&(namespace.to_string(), pod.to_string())) {
            publish(channel, payload, wire::SIDECAR_ENCODING);
        }
    }
}

/// Sends `payload` as the next version, unless it is what the channel already holds.
fn publish(channel: &Channel, payload: Bytes, encoding: &'static str) -> bool {
    channel.send_if_modified(|current| {
        let version = match current {
            Some(view) if view.payload == payload => return false,
            Some(view) => view.version + 1,
            None => 1,
        };
        *current = Some(Arc::new(View {
            version,
            encoding,
            payload,
            published: Instant::now(),
        }));
        true
    })
}

impl Default for Views {
    fn default() -> Self {
        Self {
            ingress: watch::Sender::new(None),
            sidecars: Mutex::default(),
        }
    }
}

impl Views {
    /// Cuts and encodes the views of `snapshot`; returns whether the ingress view changed.
    pub fn publish(&self, snapshot: &Snapshot) -> bool {
        // The ingress serves the whole north-south configuration.
        let changed = publish(
            &self.ingress,
            wire::encode(snapshot).into(),
            wire::SNAPSHOT_ENCODING,
        );
        let mut sidecars = lock(&self.sidecars);
        sidecars.mesh = Some(snapshot.mesh.clone());
        sidecars.encoded.clear();
        // Streams that ended leave channels nobody watches.
        sidecars
            .pods
            .retain(|_, channel| channel.receiver_count() > 0);
        let pods: Vec<(String, String)> = sidecars.pods.keys().cloned().collect();
        for (namespace, pod) in pods {
            sidecars.update(&namespace, &pod);
        }
        changed
    }

    /// Follows the view of the sidecar of pod `namespace/pod`.
    pub fn sidecar(&self, namespace: &str, pod: &str) -> watch::Receiver<Option<Arc<View>>> {
        let mut sidecars = lock(&self.sidecars);
        let key = (namespace.to_string(), pod.to_string());
        if let Some(channel) = sidecars.pods.get(&key) {
            return channel.subscribe();
        }
        if sidecars.pods.len() >= sidecars.prune_at {
            sidecars
                .pods
                .retain(|_, channel| channel.receiver_count() > 0);
            sidecars.prune_at = (sidecars.pods.len() * 2).max(1024);
        }
        let channel = watch::Sender::new(None);
        let receiver = channel.subscribe();
        sidecars.pods.insert(key, channel);
        sidecars.update(namespace, pod);
        receiver
    }

    /// The ServiceAccount pod `namespace/pod` runs as, when the mesh knows the pod.
    pub fn pod_account(&self, namespace: &str, pod: &str) -> Option<String> {
        let sidecars = lock(&self.sidecars);
        let mesh = sidecars.mesh.as_ref()?;
        mesh.pod(namespace, pod).map(|p| p.service_account.clone())
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

    #[test]
    fn pods_with_the_same_policy_share_one_encoded_view() {
        let yaml = "
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: shop, labels: {app: web}, annotations: {weir.dev/injected: x}}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: shop, labels: {app: web}, annotations: {weir.dev/injected: x}}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: shop, labels: {app: db}, annotations: {weir.dev/injected: x}}
---
apiVersion: weir.dev/v1alpha1
kind: MeshTLSPolicy
metadata: {name: db, namespace: shop}
spec: {selector: {matchLabels: {app: db}}, mode: STRICT}
";
        let (mut objects, mut errors) = (weir_api::Objects::new(), Vec::new());
        weir_api::load::load_str(yaml, "t.yaml", &mut objects, &mut errors);
        let snapshot = weir_api::compile(&objects).unwrap();
        let views = Views::default();
        let (a, b, c) = (
            views.sidecar("shop", "a"),
            views.sidecar("shop", "b"),
            views.sidecar("shop", "c"),
        );
        assert!(a.borrow().is_none(), "nothing before the first compile");
        views.publish(&snapshot);
        let payload =
            |rx: &watch::Receiver<Option<Arc<View>>>| rx.borrow().as_ref().unwrap().payload.clone();
        assert_eq!(
            payload(&a).as_ptr(),
            payload(&b).as_ptr(),
            "one encoding, shared"
        );
        assert_ne!(payload(&a), payload(&c));
        let view: weir_api::model::SidecarView =
            wire::decode_view(wire::SIDECAR_ENCODING, wire::SIDECAR_ENCODING, &payload(&c))
                .unwrap();
        assert_eq!(view.inbound.mode, weir_api::model::TlsMode::Strict);

        // A compile that leaves the views as they were wakes no sidecar.
        let mut a = a;
        a.mark_unchanged();
        views.publish(&snapshot);
        assert!(!a.has_changed().unwrap());
    }
}
