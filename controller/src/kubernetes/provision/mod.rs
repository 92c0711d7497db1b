//! One gateway deployment per Gateway (`--provision-gateways`), as the Gateway API expects of
//! an implementation: two Gateways never share a process, a port or an address, so a route
//! attached to one is never answered at the other, and each listener port is on its Service.
//!
//! For every Gateway of class `weir`, the Lease holder keeps a Deployment and a Service in
//! the controller's namespace, made from the install's `weir-ingress` Deployment and Service
//! (see [`template`]), and deletes the ones whose Gateway is gone. The pods run as the
//! template's ServiceAccount, so they are trusted as the shared gateway is; a tenant who may
//! create Gateways chooses none of their image, flags or account. The Gateway's
//! `status.addresses` are its Service's load-balancer addresses (its cluster IP until it has
//! one); a Gateway that cannot be given a deployment is `Programmed: False` saying why.
//!
//! An object of the same name the controller did not make is never replaced, and at most
//! `--max-provisioned-gateways` Gateways get a deployment (the oldest first): a tenant
//! creating Gateways cannot take over a workload or fill the cluster with gateways.

use std::collections::{BTreeMap, BTreeSet};

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

pub mod template;

use template::{digest_of, instance_name, is_managed, CONTROLLER, MANAGED_BY};

/// Where and from what Gateways' deployments are made.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The namespace they are made in (the controller's).
    pub namespace: String,
    /// The Deployment (and Service, if there is one) of that name is the template.
    pub template: String,
    /// At most this many Gateways get a deployment.
    pub max: usize,
}

/// What provisioning did for each Gateway, for its status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Infra {
    /// Gateways not given a deployment: `Programmed` reason and message.
    pub refused: BTreeMap<ObjectKey, (&'static str, String)>,
    /// The namespace the Services are in; `None` when Gateways are not provisioned.
    pub namespace: Option<String>,
}

impl Infra {
    /// Why Gateway `key` has no deployment, if it has none.
    pub fn refused(&self, key: &ObjectKey) -> Option<&(&'static str, String)> {
        self.refused.get(key)
    }

    /// The addresses of Gateway `key`: its Service's load-balancer addresses, else its cluster
    /// IPs; `fixed` (`--status-address`) when Gateways are not provisioned.
    pub fn addresses(&self, objects: &Objects, key: &ObjectKey, fixed: &[String]) -> Vec<String> {
        let Some(namespace) = &self.namespace else {
            return fixed.to_vec();
        };
        let name = instance_name(&key.namespace, &key.name);
        let service = objects.iter().find_map(|(o, _)| match o {
            Object::Service(s)
                if s.metadata.namespace.as_deref() == Some(namespace)
                    && s.metadata.name.as_deref() == Some(&name) =>
            {
                Some(s)
            }
            _ => None,
        });
        let Some(service) = service else {
            return Vec::new();
        };
        let balanced: Vec<String> = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
            .collect();
        if !balanced.is_empty() {
            return balanced;
        }
        let spec = service.spec.as_ref();
        spec.and_then(|s| s.cluster_ips.clone())
            .or_else(|| spec.and_then(|s| s.cluster_ip.clone()).map(|ip| vec![ip]))
            .unwrap_or_default()
            .into_iter()
            .filter(|ip| ip != "None" && !ip.is_empty())
            .collect()
    }
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
/// that are gone. API errors are logged and retried at the next call.
pub async fn sync(client: &Client, settings: &Settings, objects: &Objects) -> Infra {
    // Deployments are large values: the future lives on the heap.
    Box::pin(sync_all(client, settings, objects)).await
}

async fn sync_all(client: &Client, settings: &Settings, objects: &Objects) -> Infra {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &settings.namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), &settings.namespace);
    let mut infra = Infra {
        namespace: Some(settings.namespace.clone()),
        ..Infra::default()
    };
    let wanted = gateways(objects);
    let template = match deployments.get_opt(&settings.template).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            let why = format!(
                "the template Deployment {}/{} does not exist: no gateway deployment can be made",
                settings.namespace, settings.template
            );
            for (key, _) in wanted {
                infra.refused.insert(key, ("Pending", why.clone()));
            }
            return infra;
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read the gateway template; will try again");
            return infra;
        }
    };
    let template_service = services.get_opt(&settings.template).await.ok().flatten();
    let mut keep = BTreeSet::new();
    for (i, (key, ports)) in wanted.into_iter().enumerate() {
        if i >= settings.max {
            let why = format!(
                "more Gateways than --max-provisioned-gateways ({}): the oldest have deployments",
                settings.max
            );
            infra.refused.insert(key, ("NoResources", why));
            continue;
        }
        let gateway = format!("{}/{}", key.namespace, key.name);
        let made = (
            template::deployment(&template, &settings.namespace, &gateway, &ports),
            template::service(
                template_service.as_ref(),
                &settings.namespace,
                &gateway,
                &ports,
            ),
        );
        let (Some(deployment), Some(service)) = made else {
            let why = format!(
                "the template Deployment {}/{} has no weir-ingress container",
                settings.namespace, settings.template
            );
            infra.refused.insert(key, ("Invalid", why));
            continue;
        };
        let name = instance_name(&key.namespace, &key.name);
        keep.insert(name.clone());
        let written = match ensure(&deployments, deployment).await {
            Ok(()) if ports.is_empty() => Ok(()),
            Ok(()) => ensure(&services, service).await,
            Err(e) => Err(e),
        };
        match written {
            Ok(()) => {}
            Err(Problem::Taken(what)) => {
                let why = format!("{what} {}/{name} exists and was not made by Weir: it is not replaced; delete it or rename the Gateway", settings.namespace);
                infra.refused.insert(key, ("Invalid", why));
            }
            Err(Problem::Api(error)) => {
                tracing::warn!(gateway = %key, %error, "cannot write the Gateway's deployment; will try again")
            }
        }
    }
    remove_others(&deployments, &keep).await;
    remove_others(&services, &keep).await;
    infra
}

enum Problem {
    /// An object of that name exists that the controller did not make.
    Taken(String),
    Api(kube::Error),
}

/// Creates `object`, or replaces the one of its name the controller made when it differs.
async fn ensure<K>(api: &Api<K>, mut object: K) -> Result<(), Problem>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug + Keep,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let current = api.get_opt(&name).await.map_err(Problem::Api)?;
    match current {
        None => {
            api.create(&PostParams::default(), &object)
                .await
                .map_err(Problem::Api)?;
        }
        Some(current) if !is_managed(current.meta()) => {
            return Err(Problem::Taken(K::kind(&()).to_string()))
        }
        Some(current) if digest_of(current.meta()) == digest_of(object.meta()) => {}
        Some(current) => {
            object.meta_mut().resource_version = current.meta().resource_version.clone();
            object.keep_allocated(&current);
            api.replace(&name, &PostParams::default(), &object)
                .await
                .map_err(Problem::Api)?;
        }
    }
    Ok(())
}

/// What a replacement keeps of the object it replaces: what the API server allocated.
trait Keep {
    fn keep_allocated(&mut self, _current: &Self) {}
}

impl Keep for Deployment {}

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

/// Deletes the objects the controller made whose Gateway is no longer provisioned.
async fn remove_others<K>(api: &Api<K>, keep: &BTreeSet<String>)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let selector = format!("{MANAGED_BY}={CONTROLLER},{}", template::INSTANCE_LABEL);
    let list = match api.list(&ListParams::default().labels(&selector)).await {
        Ok(list) => list,
        Err(error) => {
            tracing::warn!(%error, "cannot list gateway deployments; will try again");
            return;
        }
    };
    for object in list {
        let name = object.meta().name.clone().unwrap_or_default();
        if keep.contains(&name) {
            continue;
        }
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => tracing::info!(%name, "deleted the deployment of a Gateway that is gone"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(error) => tracing::warn!(%name, %error, "cannot delete; will try again"),
        }
    }
}
