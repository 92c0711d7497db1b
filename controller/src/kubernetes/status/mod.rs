//! What the controller tells the cluster: status conditions on the objects it read, Gateway
//! API status, `Ingress.status.loadBalancer`, a Warning Event for each refused object, and one
//! for each STRICT MeshTLSPolicy whose pods opt out of it (see [`optout`]).
//!
//! Every replica compiles and serves, but only the holder of a `coordination.k8s.io` Lease
//! writes, so replicas never fight over an object's status. A replica that gains the Lease
//! writes everything once; after that only what changed is written.

use std::{collections::HashMap, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    api::{DynamicObject, Patch, PatchParams},
    runtime::events::{Event, EventType, Recorder, Reporter},
    Api, Client,
};
use serde_json::{json, Value};
use tokio::sync::watch;
use weir_api::{Object, ObjectKey, Objects};

use crate::nodes::bounded;

mod backend_tls;
mod class;
mod desired;
mod lease;
mod listener_sets;
mod listeners;
mod optout;

use desired::{desired, keep_transition_times, Around};
use lease::LeaseHolder;

use super::{
    provision::{self, Infra},
    Kind, WATCHED,
};
use weir_api::Rejection;

use crate::Controller;

/// `status.parents[].controllerName` and `GatewayClass.spec.controllerName` for Weir.
pub const GATEWAY_CONTROLLER: &str = "weir.dev/gateway-controller";

/// The reason of a STRICT MeshTLSPolicy's `Enforced=False` condition and of its Warning Event
/// while pods it governs still take plaintext.
pub const OPTED_OUT: &str = "PodsOptedOut";

/// Where the status writer keeps its Lease, and what it reports.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Who this replica is (its pod name): the Lease's holder identity.
    pub identity: String,
    /// The Lease's namespace.
    pub lease_namespace: String,
    /// The Lease's name.
    pub lease_name: String,
    /// How long a Lease lasts without renewal.
    pub lease_duration: Duration,
    /// Addresses the ingress is reached at (IPs or hostnames), for `Ingress.status` and
    /// `Gateway.status.addresses`.
    pub addresses: Vec<String>,
    /// The trust bundle and injector certificate to publish.
    pub publish: super::publish::Settings,
    /// Where Gateways' own deployments are made; `None`: the install's gateway serves them.
    pub provision: Option<provision::Settings>,
}

/// Hands each compiled set of objects to the status task.
#[derive(Clone)]
pub struct Writer {
    latest: watch::Sender<Option<Arc<Objects>>>,
}

impl Writer {
    /// Starts the Lease and status task.
    pub fn start(client: Client, controller: Arc<Controller>, settings: Settings) -> Self {
        let latest = watch::Sender::new(None);
        let recorder = Recorder::new(client.clone(), reporter(&settings.identity));
        tokio::spawn(record_refusals(
            client.clone(),
            recorder,
            controller.node_refusals.subscribe(),
        ));
        tokio::spawn(run(client, controller, settings, latest.subscribe()));
        Self { latest }
    }

    /// The objects of the compile that just finished.
    pub fn report(&self, objects: Objects) {
        self.latest.send_replace(Some(Arc::new(objects)));
    }
}

async fn run(
    client: Client,
    controller: Arc<Controller>,
    settings: Settings,
    mut latest: watch::Receiver<Option<Arc<Objects>>>,
) {
    let lease = LeaseHolder {
        api: Api::namespaced(client.clone(), &settings.lease_namespace),
        settings: settings.clone(),
    };
    let recorder = Recorder::new(client.clone(), reporter(&settings.identity));
    let mut state = Written::default();
    let mut published = super::publish::Published::default();
    let mut leading = false;
    let mut dirty = false;
    let mut infra = Infra::default();
    let mut gateway_api: Option<String> = None;
    let mut recheck = false;
    let mut renew = tokio::time::interval(settings.lease_duration / 3);
    loop {
        tokio::select! {
            _ = renew.tick() => {
                let now_leading = lease.acquire_or_renew().await;
                if now_leading && !leading {
                    tracing::info!(lease = %settings.lease_name, "holding the status Lease: this replica writes status");
                    state = Written::default();
                    published = Default::default();
                    dirty = true;
                } else if leading && !now_leading {
                    tracing::warn!(lease = %settings.lease_name, "lost the status Lease");
                }
                leading = now_leading;
                recheck = leading;
            }
            changed = latest.changed() => {
                if changed.is_err() {
                    return;
                }
                dirty = true;
            }
        }
        if !leading {
            continue;
        }
        // A compile that landed since the select is this round's too.
        dirty |= latest.has_changed().unwrap_or(false);
        let Some(objects) = latest.borrow_and_update().clone() else {
            continue;
        };
        // Deployments and CRDs are not watched: they are checked on every renewal (and the
        // Gateways' deployments at every change), and the status written again only if that
        // changed what it says.
        let renewed = std::mem::take(&mut recheck);
        if renewed {
            let now = class::installed_version(&client).await;
            dirty |= now != gateway_api;
            gateway_api = now;
        }
        if let Some(provision) = settings.provision.as_ref().filter(|_| dirty || renewed) {
            let present = refused_gateways(&controller);
            if let Some(now) = provision::sync(&client, provision, &objects, &present).await {
                dirty |= now != infra;
                infra = now;
            }
        }
        if !std::mem::take(&mut dirty) {
            continue;
        }
        let compiled = controller.status();
        let (rejected, warnings) = (compiled.rejected, compiled.warnings);
        let strict = compiled.strict_coverage;
        let around = Around {
            infra: &infra,
            addresses: &settings.addresses,
            gateway_api: gateway_api.as_deref(),
        };
        let desired = desired(&objects, &rejected, &warnings, &strict, &around);
        state
            .write(&client, &recorder, &objects, desired, &rejected)
            .await;
        state
            .opted_out(&client, &settings.identity, &objects, &strict)
            .await;
        let problems = published
            .update(&client, &controller.authority, &objects, &settings.publish)
            .await;
        for problem in problems {
            tracing::warn!(%problem, "cannot publish; will try again on the next change");
        }
    }
}

/// The Gateways the last compile refused: they still exist.
fn refused_gateways(controller: &Controller) -> std::collections::BTreeSet<ObjectKey> {
    let rejected = controller.status().rejected;
    provision::refused_gateways(rejected.iter().map(|r| r.object.as_str()))
}

/// What was last written, so unchanged status is not written again.
#[derive(Default)]
struct Written {
    status: HashMap<ObjectKey, Value>,
    events: HashMap<ObjectKey, String>,
    /// The opted-out pods last reported by an Event, per STRICT MeshTLSPolicy.
    opted_out: HashMap<ObjectKey, Vec<weir_api::model::Uncovered>>,
}

impl Written {
    async fn write(
        &mut self,
        client: &Client,
        recorder: &Recorder,
        objects: &Objects,
        desired: Vec<(ObjectKey, Value, Value)>,
        rejected: &[Rejection],
    ) {
        for (key, current, mut status) in desired {
            keep_transition_times(&mut status, &current);
            if self.status.get(&key) == Some(&status) || status == current {
                self.status.insert(key, status);
                continue;
            }
            let Some(kind) = WATCHED.iter().find(|k| k.kind == key.kind) else {
                continue;
            };
            let api = api(client, kind, &key.namespace);
            let patch = Patch::Merge(json!({"status": status}));
            match api
                .patch_status(&key.name, &PatchParams::default(), &patch)
                .await
            {
                Ok(_) => {
                    self.status.insert(key, status);
                }
                // Deleted meanwhile: nothing to report on.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(error) => {
                    tracing::warn!(object = %key, %error, "cannot write status; will try again on the next change")
                }
            }
        }
        for rejection in rejected {
            let Some(key) = objects
                .iter()
                .map(|(o, _)| o.key())
                .find(|k| k.to_string() == rejection.object)
            else {
                continue;
            };
            let message = messages(rejection);
            if self.events.get(&key) == Some(&message) {
                continue;
            }
            let Some((object, _)) = objects.get(&key) else {
                continue;
            };
            let event = Event {
                type_: EventType::Warning,
                reason: "Invalid".into(),
                note: Some(bounded(&message, 1000)),
                action: "Compile".into(),
                secondary: None,
            };
            match recorder.publish(&event, &reference(object)).await {
                Ok(()) => {
                    self.events.insert(key, message);
                }
                Err(error) => tracing::warn!(object = %key, %error, "cannot record the Event"),
            }
        }
        self.events
            .retain(|key, _| rejected.iter().any(|r| r.object == key.to_string()));
    }
}

/// Records each refusal (NACK) of a node connected to this replica as a Warning Event on the
/// node's Pod (`ConfigRefused`), where `kubectl describe pod` and `kubectl get events` show
/// it: the node serves an older configuration than the cluster asks for.
async fn record_refusals(
    client: Client,
    recorder: Recorder,
    mut refusals: tokio::sync::broadcast::Receiver<crate::nodes::NodeRefusal>,
) {
    // Each (pod, version) once in ten minutes: a node reconnecting in a loop, refusing the
    // same version each time, adds no Event after the first.
    let mut recorded: HashMap<(String, String, u64), std::time::Instant> = HashMap::new();
    loop {
        let refusal = match refusals.recv().await {
            Ok(refusal) => refusal,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "refusals came faster than their Events could be recorded"
                );
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let key = (
            refusal.namespace.clone(),
            refusal.pod.clone(),
            refusal.version,
        );
        recorded.retain(|_, at| at.elapsed() < Duration::from_secs(600));
        if recorded.insert(key, std::time::Instant::now()).is_some() {
            continue;
        }
        let note = format!(
            "the {} refused version {} of its configuration and keeps serving its previous one: {}",
            refusal.role, refusal.version, refusal.error
        );
        let event = Event {
            type_: EventType::Warning,
            reason: "ConfigRefused".into(),
            note: Some(bounded(&note, 1000)),
            // The version in the action: Events that differ only in their note are counted
            // as one (the first note kept), and each version's refusal is news.
            action: format!("ApplyVersion{}", refusal.version),
            secondary: None,
        };
        // With the Pod's uid, so `kubectl describe pod` shows it (and a new Pod of the same
        // name does not).
        let pods: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(client.clone(), &refusal.namespace);
        let uid = match pods.get_opt(&refusal.pod).await {
            Ok(Some(pod)) => pod.metadata.uid,
            _ => None,
        };
        let pod = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(refusal.namespace.clone()),
            name: Some(refusal.pod.clone()),
            uid,
            ..Default::default()
        };
        if let Err(error) = recorder.publish(&event, &pod).await {
            let pod = format!("{}/{}", refusal.namespace, refusal.pod);
            tracing::warn!(%pod, %error, "cannot record the Event");
        }
    }
}

/// Who records the Events: this replica of weir-controller.
fn reporter(identity: &str) -> Reporter {
    Reporter {
        controller: "weir-controller".into(),
        instance: Some(identity.to_string()),
    }
}

fn api(client: &Client, kind: &Kind, namespace: &str) -> Api<DynamicObject> {
    if namespace.is_empty() {
        Api::all_with(client.clone(), &kind.api_resource())
    } else {
        Api::namespaced_with(client.clone(), namespace, &kind.api_resource())
    }
}

pub(super) fn messages(rejection: &Rejection) -> String {
    rejection
        .errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

fn reference(object: &Object) -> ObjectReference {
    let key = object.key();
    let kind = WATCHED.iter().find(|k| k.kind == key.kind);
    ObjectReference {
        api_version: kind.map(|k| k.api_resource().api_version),
        kind: Some(key.kind.to_string()),
        namespace: Some(key.namespace).filter(|n| !n.is_empty()),
        name: Some(key.name),
        uid: object.metadata().uid.clone(),
        ..Default::default()
    }
}
