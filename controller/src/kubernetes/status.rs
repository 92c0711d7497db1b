//! What the controller tells the cluster: status conditions on the objects it read, Gateway
//! API status, `Ingress.status.loadBalancer`, and a Warning Event for each refused object.
//!
//! Every replica compiles and serves, but only the holder of a `coordination.k8s.io` Lease
//! writes, so replicas never fight over an object's status. A replica that gains the Lease
//! writes everything once; after that only what changed is written.

use std::{collections::HashMap, sync::Arc, time::Duration};

use k8s_openapi::{
    api::{coordination::v1::Lease, core::v1::ObjectReference},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    api::{DynamicObject, ObjectMeta, Patch, PatchParams, PostParams},
    runtime::events::{Event, EventType, Recorder, Reporter},
    Api, Client,
};
use serde_json::{json, Value};
use tokio::sync::watch;
use weir_api::{compile::serves_ingress, compile::GATEWAY_CLASS, Object, ObjectKey, Objects};

use super::{Kind, WATCHED};
use crate::{compiler::Rejection, Controller};

/// `status.parents[].controllerName` and `GatewayClass.spec.controllerName` for Weir.
pub const GATEWAY_CONTROLLER: &str = "weir.dev/gateway-controller";

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
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "weir-controller".into(),
            instance: Some(settings.identity.clone()),
        },
    );
    let mut state = Written::default();
    let mut published = super::publish::Published::default();
    let mut leading = false;
    let mut dirty = false;
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
            }
            changed = latest.changed() => {
                if changed.is_err() {
                    return;
                }
                dirty = true;
            }
        }
        if !(leading && dirty) {
            continue;
        }
        dirty = false;
        let Some(objects) = latest.borrow_and_update().clone() else {
            continue;
        };
        let compiled = controller.status();
        let (rejected, warnings) = (compiled.rejected, compiled.warnings);
        let desired = desired(&objects, &rejected, &warnings, &settings.addresses);
        state
            .write(&client, &recorder, &objects, desired, &rejected)
            .await;
        let problems = published
            .update(&client, &controller.authority, &objects, &settings.publish)
            .await;
        for problem in problems {
            tracing::warn!(%problem, "cannot publish; will try again on the next change");
        }
    }
}

/// What was last written, so unchanged status is not written again.
#[derive(Default)]
struct Written {
    status: HashMap<ObjectKey, Value>,
    events: HashMap<ObjectKey, String>,
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
                note: Some(truncate(&message, 1000)),
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

fn api(client: &Client, kind: &Kind, namespace: &str) -> Api<DynamicObject> {
    if namespace.is_empty() {
        Api::all_with(client.clone(), &kind.api_resource())
    } else {
        Api::namespaced_with(client.clone(), namespace, &kind.api_resource())
    }
}

fn messages(rejection: &Rejection) -> String {
    rejection
        .errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
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

/// The status every reported object should have: `(key, current status, desired status)`.
fn desired(
    objects: &Objects,
    rejected: &[Rejection],
    warnings: &[String],
    addresses: &[String],
) -> Vec<(ObjectKey, Value, Value)> {
    let refused = |key: &ObjectKey| {
        let name = key.to_string();
        rejected.iter().find(|r| r.object == name).map(messages)
    };
    let unresolved = |key: &ObjectKey| {
        let prefix = format!("{key}: ");
        let found: Vec<&str> = warnings
            .iter()
            .filter_map(|w| w.strip_prefix(&prefix))
            .filter(|w| w.contains("not found") || w.contains("no ReferenceGrant"))
            .collect();
        (!found.is_empty()).then(|| found.join("; "))
    };
    let mut out = Vec::new();
    for (object, _) in objects.iter() {
        let key = object.key();
        let generation = object.metadata().generation;
        let accepted = || match refused(&key) {
            None => condition(
                "Accepted",
                true,
                "Accepted",
                "compiled and serving",
                generation,
            ),
            Some(message) => condition("Accepted", false, "Invalid", &message, generation),
        };
        let resolved = || match unresolved(&key) {
            None => condition(
                "ResolvedRefs",
                true,
                "ResolvedRefs",
                "every reference resolved",
                generation,
            ),
            Some(message) => condition(
                "ResolvedRefs",
                false,
                "BackendNotFound",
                &message,
                generation,
            ),
        };
        let status = match object {
            Object::TrafficPolicy(_)
            | Object::AuthPolicy(_)
            | Object::RateLimitPolicy(_)
            | Object::MeshTLSPolicy(_)
            | Object::AccessPolicy(_) => json!({"conditions": [accepted(), resolved()]}),
            Object::HttpRoute(route) => {
                let ours: Vec<Value> = route
                    .spec
                    .parent_refs
                    .iter()
                    .flatten()
                    .filter(|p| {
                        let namespace = p.namespace.clone().unwrap_or(key.namespace.clone());
                        p.kind.as_deref().unwrap_or("Gateway") == "Gateway"
                            && is_weir_gateway(objects, &namespace, &p.name)
                    })
                    .map(|p| {
                        json!({
                            "parentRef": serde_json::to_value(p).unwrap_or_default(),
                            "controllerName": GATEWAY_CONTROLLER,
                            "conditions": [accepted(), resolved()],
                        })
                    })
                    .collect();
                if ours.is_empty() {
                    continue;
                }
                // Other controllers' entries stay as they are.
                let current = serde_json::to_value(&route.status).unwrap_or_default();
                let others = current["parents"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["controllerName"] != GATEWAY_CONTROLLER)
                    .cloned();
                json!({"parents": others.chain(ours).collect::<Vec<_>>()})
            }
            Object::Gateway(gateway) if gateway.spec.gateway_class_name == GATEWAY_CLASS => {
                let ok = refused(&key).is_none();
                let listeners: Vec<Value> = gateway
                    .spec
                    .listeners
                    .iter()
                    .map(|l| {
                        json!({
                            "name": l.name,
                            "supportedKinds": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}],
                            "attachedRoutes": attached_routes(objects, rejected, &key, &l.name),
                            "conditions": [
                                condition("Accepted", ok, if ok { "Accepted" } else { "Invalid" }, "", generation),
                                condition("Programmed", ok, if ok { "Programmed" } else { "Invalid" }, "", generation),
                                resolved(),
                            ],
                        })
                    })
                    .collect();
                let programmed = if ok {
                    condition(
                        "Programmed",
                        true,
                        "Programmed",
                        "served by weir-ingress",
                        generation,
                    )
                } else {
                    condition(
                        "Programmed",
                        false,
                        "Invalid",
                        "not served: see Accepted",
                        generation,
                    )
                };
                json!({
                    "addresses": addresses.iter().map(|a| json!({
                        "type": if a.parse::<std::net::IpAddr>().is_ok() { "IPAddress" } else { "Hostname" },
                        "value": a,
                    })).collect::<Vec<_>>(),
                    "conditions": [accepted(), programmed],
                    "listeners": listeners,
                })
            }
            Object::Ingress(ingress) if serves_ingress(objects, ingress) => {
                let ingress_addresses: Vec<Value> = addresses
                    .iter()
                    .map(|a| match a.parse::<std::net::IpAddr>() {
                        Ok(_) => json!({"ip": a}),
                        Err(_) => json!({"hostname": a}),
                    })
                    .collect();
                json!({"loadBalancer": {"ingress": ingress_addresses}})
            }
            _ => continue,
        };
        let current = current_status(object);
        out.push((key, current, status));
    }
    out
}

fn current_status(object: &Object) -> Value {
    let value = match object {
        Object::TrafficPolicy(o) => serde_json::to_value(&o.status),
        Object::AuthPolicy(o) => serde_json::to_value(&o.status),
        Object::RateLimitPolicy(o) => serde_json::to_value(&o.status),
        Object::MeshTLSPolicy(o) => serde_json::to_value(&o.status),
        Object::AccessPolicy(o) => serde_json::to_value(&o.status),
        Object::HttpRoute(o) => serde_json::to_value(&o.status),
        Object::Gateway(o) => serde_json::to_value(&o.status),
        Object::Ingress(o) => serde_json::to_value(&o.status),
        _ => Ok(Value::Null),
    };
    value.unwrap_or_default()
}

fn is_weir_gateway(objects: &Objects, namespace: &str, name: &str) -> bool {
    let key = ObjectKey {
        kind: "Gateway",
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    matches!(objects.get(&key), Some((Object::Gateway(g), _)) if g.spec.gateway_class_name == GATEWAY_CLASS)
}

/// Accepted HTTPRoutes attached to this listener of this Gateway.
fn attached_routes(
    objects: &Objects,
    rejected: &[Rejection],
    gateway: &ObjectKey,
    listener: &str,
) -> usize {
    objects
        .iter()
        .filter_map(|(o, _)| match o {
            Object::HttpRoute(r) => Some(r),
            _ => None,
        })
        .filter(|r| {
            let key = format!(
                "HTTPRoute {}/{}",
                r.metadata.namespace.as_deref().unwrap_or_default(),
                r.metadata.name.as_deref().unwrap_or_default()
            );
            !rejected.iter().any(|x| x.object == key)
        })
        .filter(|r| {
            let route_ns = r.metadata.namespace.clone().unwrap_or_default();
            r.spec.parent_refs.iter().flatten().any(|p| {
                p.name == gateway.name
                    && p.namespace.as_ref().unwrap_or(&route_ns) == &gateway.namespace
                    && p.section_name.as_deref().is_none_or(|s| s == listener)
            })
        })
        .count()
}

fn condition(kind: &str, ok: bool, reason: &str, message: &str, generation: Option<i64>) -> Value {
    let mut condition = json!({
        "type": kind,
        "status": if ok { "True" } else { "False" },
        "reason": reason,
        "message": message,
        "lastTransitionTime": now(),
    });
    if let Some(generation) = generation {
        condition["observedGeneration"] = generation.into();
    }
    condition
}

/// A condition whose status did not change keeps the time it last changed, as the API
/// conventions define `lastTransitionTime`.
fn keep_transition_times(status: &mut Value, current: &Value) {
    fn walk(value: &mut Value, current: &Value) {
        match value {
            Value::Object(map) => {
                if let (Some(kind), Some(state)) =
                    (map.get("type").cloned(), map.get("status").cloned())
                {
                    if current["type"] == kind && current["status"] == state {
                        if let Some(time) = current.get("lastTransitionTime") {
                            map.insert("lastTransitionTime".into(), time.clone());
                        }
                    }
                }
                for (field, inner) in map.iter_mut() {
                    walk(inner, current.get(field).unwrap_or(&Value::Null));
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    // Conditions pair up by type, list entries by position.
                    let paired = current
                        .as_array()
                        .and_then(|c| {
                            c.iter()
                                .find(|x| {
                                    x.get("type").is_some() && x.get("type") == item.get("type")
                                })
                                .or_else(|| c.get(i))
                        })
                        .unwrap_or(&Value::Null);
                    walk(item, paired);
                }
            }
            _ => {}
        }
    }
    walk(status, current);
}

fn now() -> String {
    Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The Lease that says which replica writes status.
struct LeaseHolder {
    api: Api<Lease>,
    settings: Settings,
}

impl LeaseHolder {
    /// Takes the Lease if it is free or expired, renews it if held: true while this replica
    /// holds it. Every write is conditional on the version read, so two replicas racing for
    /// an expired Lease cannot both win.
    async fn acquire_or_renew(&self) -> bool {
        match self.try_acquire_or_renew().await {
            Ok(held) => held,
            Err(error) => {
                tracing::warn!(%error, "cannot read or write the status Lease");
                false
            }
        }
    }

    async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let me = &self.settings.identity;
        let now = MicroTime(Timestamp::now());
        let seconds = self.settings.lease_duration.as_secs().max(1) as i32;
        let Some(mut lease) = self.api.get_opt(&self.settings.lease_name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.lease_name.clone()),
                    ..Default::default()
                },
                spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
                    holder_identity: Some(me.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder != *me {
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(seconds));
            let expired = spec.renew_time.as_ref().is_none_or(|renewed| {
                renewed.0.as_second() + duration < Timestamp::now().as_second()
            });
            if !holder.is_empty() && !expired {
                return Ok(false);
            }
            spec.holder_identity = Some(me.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(seconds);
        match self
            .api
            .replace(&self.settings.lease_name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}
