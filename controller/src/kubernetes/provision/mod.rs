//! One gateway deployment per Gateway (`--provision-gateways`), as the Gateway API expects of
//! an implementation: two Gateways never share a process, a port or an address, so a route
//! attached to one is never answered at the other, and each listener port is on its Service.
//!
//! For every Gateway of class `weir`, the Lease holder keeps a Deployment and a Service in
//! the controller's namespace, made from the install's `weir-ingress` Deployment and Service
//! (see [`template`]), and deletes the ones whose Gateway is gone. The pods run as the
//! template's ServiceAccount, so they are trusted as the shared gateway is; a tenant who may
//! create Gateways chooses none of their image, flags or account. The Gateway's
//! `status.addresses` are its Service's load-balancer addresses (its cluster IP for a Service
//! that is not a load balancer); it is `Programmed` once a pod is ready and it has an address,
//! and otherwise says why not.
//!
//! What provisioning never does: replace an object it did not make, or one made for another
//! Gateway; make more than `--max-provisioned-gateways` deployments (oldest Gateways first),
//! or more than `--max-provisioned-gateways-per-namespace` for one namespace's Gateways; delete
//! anything when it could not read the template or the objects it made (an API error, a
//! template without `weir-ingress`), or a Gateway's deployment while the Gateway still exists
//! and is only refused (a bad edit keeps its last good version serving).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Service};
use kube::{
    api::{DeleteParams, ListParams, PostParams},
    Api, Client, Resource,
};
use serde::{de::DeserializeOwned, Serialize};
use weir_api::{
    compile::{listener_sets::merged, GATEWAY_CLASS},
    Object, ObjectKey, Objects,
};

mod infra;
pub mod template;

pub use infra::Infra;

/// The Gateways among refused objects (`Gateway namespace/name`): they exist, and keep their
/// deployments while their last good version serves.
pub fn refused_gateways<'a>(refused: impl Iterator<Item = &'a str>) -> BTreeSet<ObjectKey> {
    refused
        .filter_map(|object| {
            let (namespace, name) = object.strip_prefix("Gateway ")?.split_once('/')?;
            Some(ObjectKey {
                kind: "Gateway",
                namespace: namespace.to_string(),
                name: name.to_string(),
            })
        })
        .collect()
}
use template::{digest_of, gateway_of, instance_name, is_managed, CONTROLLER, MANAGED_BY};

/// Where and from what Gateways' deployments are made.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The namespace they are made in (the controller's).
    pub namespace: String,
    /// The Deployment (and Service, if there is one) of that name is the template.
    pub template: String,
    /// At most this many Gateways get a deployment.
    pub max: usize,
    /// At most this many Gateways of one namespace get a deployment.
    pub max_per_namespace: usize,
}

/// The Gateways of class `weir`, oldest first, each with the ports it listens on (its own
/// listeners' and those it takes from ListenerSets).
fn gateways(objects: &Objects) -> Vec<(ObjectKey, Vec<u16>)> {
    let mut found: Vec<(String, ObjectKey, Vec<u16>)> = objects
        .iter()
        .filter_map(|(o, _)| match o {
            Object::Gateway(g) if g.spec.gateway_class_name == GATEWAY_CLASS => {
                let ports: BTreeSet<u16> = merged(objects, g)
                    .spec
                    .listeners
                    .iter()
                    .filter_map(|l| u16::try_from(l.port).ok())
                    .collect();
                let created = g
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .and_then(|t| serde_json::to_value(t).ok())
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                Some((created, o.key(), ports.into_iter().collect()))
            }
            _ => None,
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, k, p)| (k, p)).collect()
}

/// Brings every Gateway's Deployment and Service up to date, and deletes those of Gateways
/// that are gone; `present` are Gateways that exist but were refused (their deployments stay).
/// `None` when the API could not be read: nothing was changed, and the caller keeps what it
/// knew.
pub async fn sync(
    client: &Client,
    settings: &Settings,
    objects: &Objects,
    present: &BTreeSet<ObjectKey>,
) -> Option<Infra> {
    // Deployments are large values: the future lives on the heap.
    Box::pin(sync_all(client, settings, objects, present)).await
}

async fn sync_all(
    client: &Client,
    settings: &Settings,
    objects: &Objects,
    present: &BTreeSet<ObjectKey>,
) -> Option<Infra> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &settings.namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), &settings.namespace);
    let wanted = gateways(objects);
    let mut infra = Infra::provisioned_in(&settings.namespace);
    let unread = |what: &str, error: kube::Error| {
        tracing::warn!(%error, "cannot read {what}; Gateways' deployments left as they are, will try again");
        None
    };
    let template = match deployments.get_opt(&settings.template).await {
        Ok(t) => t,
        Err(e) => return unread("the gateway template", e),
    };
    let template_service = match services.get_opt(&settings.template).await {
        Ok(s) => s,
        Err(e) => return unread("the gateway template's Service", e),
    };
    // Without a usable template nothing is made, and nothing deleted.
    let unusable = match &template {
        None => Some("does not exist"),
        Some(t) if template::deployment(t, "x", "x/x").is_none() => {
            Some("has no weir-ingress container")
        }
        Some(_) => None,
    };
    let (Some(template), None) = (template, unusable) else {
        let why = format!(
            "the template Deployment {}/{} {}: no gateway deployment can be made",
            settings.namespace,
            settings.template,
            unusable.unwrap_or_default()
        );
        for (key, _) in wanted {
            infra.refuse(key, "Pending", why.clone());
        }
        return Some(infra);
    };
    let selector = format!("{MANAGED_BY}={CONTROLLER},{}", template::INSTANCE_LABEL);
    let listed = ListParams::default().labels(&selector);
    let made_deployments = match deployments.list(&listed).await {
        Ok(list) => by_name(list.items),
        Err(e) => return unread("the gateway Deployments", e),
    };
    let made_services = match services.list(&listed).await {
        Ok(list) => by_name(list.items),
        Err(e) => return unread("the gateway Services", e),
    };
    let reserved = template::reserved_ports(&template);
    let mut keep: BTreeSet<String> = BTreeSet::new();
    let mut per_namespace: HashMap<String, usize> = HashMap::new();
    for (key, ports) in wanted {
        let gateway = format!("{}/{}", key.namespace, key.name);
        let name = instance_name(&key.namespace, &key.name);
        let in_namespace = per_namespace.entry(key.namespace.clone()).or_default();
        if keep.len() >= settings.max || *in_namespace >= settings.max_per_namespace {
            let why = format!(
                "more Gateways than --max-provisioned-gateways ({}) or, in namespace {}, than --max-provisioned-gateways-per-namespace ({}): the oldest have deployments",
                settings.max, key.namespace, settings.max_per_namespace
            );
            infra.refuse(key, "NoResources", why);
            continue;
        }
        if !keep.insert(name.clone()) {
            let why = format!("another Gateway's deployment is named {name}: rename this one");
            infra.refuse(key, "NoResources", why);
            continue;
        }
        *in_namespace += 1;
        let ports = template::service_ports(&ports, &reserved);
        let deployment = template::deployment(&template, &settings.namespace, &gateway);
        let service = template::service(
            template_service.as_ref(),
            &settings.namespace,
            &gateway,
            &ports,
        );
        let (Some(deployment), Some(service)) = (deployment, service) else {
            continue;
        };
        let outcome = match ensure(
            &deployments,
            deployment,
            made_deployments.get(&name),
            &gateway,
        )
        .await
        {
            Ok(()) if ports.is_empty() => Ok(()),
            Ok(()) => ensure(&services, service, made_services.get(&name), &gateway).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                let ready = made_deployments
                    .get(&name)
                    .and_then(|d| d.status.as_ref())
                    .and_then(|s| s.available_replicas)
                    .is_some_and(|n| n > 0);
                if !ready {
                    let why = "no pod of the Gateway's deployment is ready yet".to_string();
                    infra.refuse(key, "Pending", why);
                }
            }
            Err(Problem::Taken(what)) => {
                let why = format!("{what} {}/{name} exists and was not made by Weir for this Gateway: it is not replaced; delete it or rename the Gateway", settings.namespace);
                infra.refuse(key, "NoResources", why);
            }
            Err(Problem::Api(error)) => {
                tracing::warn!(gateway = %key, %error, "cannot write the Gateway's deployment; will try again");
                infra.refuse(
                    key,
                    "Pending",
                    format!("the Gateway's deployment cannot be written yet: {error}"),
                );
            }
        }
    }
    // A refused Gateway that still exists keeps its deployment (its last good version serves).
    for key in present {
        keep.insert(instance_name(&key.namespace, &key.name));
    }
    remove_others(&deployments, made_deployments, &keep).await;
    remove_others(&services, made_services, &keep).await;
    Some(infra)
}

fn by_name<K: Resource>(items: Vec<K>) -> BTreeMap<String, K> {
    items
        .into_iter()
        .filter_map(|o| Some((o.meta().name.clone()?, o)))
        .collect()
}

enum Problem {
    /// An object of that name exists that the controller did not make for this Gateway.
    Taken(String),
    Api(kube::Error),
}

/// Creates `object`, or replaces `current` (the one the controller made of that name) when it
/// differs.
async fn ensure<K>(
    api: &Api<K>,
    mut object: K,
    current: Option<&K>,
    gateway: &str,
) -> Result<(), Problem>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug + Keep,
{
    let kind = || K::kind(&()).to_string();
    let name = object.meta().name.clone().unwrap_or_default();
    match current {
        None => match api.create(&PostParams::default(), &object).await {
            Ok(_) => Ok(()),
            // There, but not among the objects the controller made.
            Err(kube::Error::Api(e)) if e.code == 409 => Err(Problem::Taken(kind())),
            Err(e) => Err(Problem::Api(e)),
        },
        Some(current) if !is_managed(current.meta()) => Err(Problem::Taken(kind())),
        Some(current) if gateway_of(current.meta()) != Some(gateway) => Err(Problem::Taken(kind())),
        Some(current) if digest_of(current.meta()) == digest_of(object.meta()) => Ok(()),
        Some(current) => {
            object.meta_mut().resource_version = current.meta().resource_version.clone();
            object.keep_allocated(current);
            api.replace(&name, &PostParams::default(), &object)
                .await
                .map(|_| ())
                .map_err(Problem::Api)
        }
    }
}

/// What a replacement keeps of the object it replaces: what the API server allocated, and
/// what others scale.
trait Keep {
    fn keep_allocated(&mut self, _current: &Self) {}
}

impl Keep for Deployment {
    /// The replica count is not the template's to set once the deployment exists: an
    /// autoscaler of this Gateway's (or an operator) may have changed it.
    fn keep_allocated(&mut self, current: &Self) {
        if let (Some(spec), Some(was)) = (self.spec.as_mut(), current.spec.as_ref()) {
            spec.replicas = was.replicas;
        }
    }
}

impl Keep for Service {
    fn keep_allocated(&mut self, current: &Self) {
        let (Some(spec), Some(was)) = (self.spec.as_mut(), current.spec.as_ref()) else {
            return;
        };
        spec.cluster_ip = was.cluster_ip.clone();
        spec.cluster_ips = was.cluster_ips.clone();
        spec.health_check_node_port = was.health_check_node_port;
        for port in spec.ports.iter_mut().flatten() {
            let before = was.ports.iter().flatten().find(|p| p.port == port.port);
            port.node_port = before.and_then(|p| p.node_port);
        }
    }
}

/// Deletes the objects the controller made that are not to be kept.
async fn remove_others<K>(api: &Api<K>, made: BTreeMap<String, K>, keep: &BTreeSet<String>)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    for name in made.into_keys().filter(|n| !keep.contains(n)) {
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => tracing::info!(%name, "deleted the deployment of a Gateway that is gone"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(error) => tracing::warn!(%name, %error, "cannot delete; will try again"),
        }
    }
}
