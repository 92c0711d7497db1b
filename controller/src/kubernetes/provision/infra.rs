//! What provisioning tells a Gateway's status: its addresses, and why it is not `Programmed`
//! when it is not.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use weir_api::{Object, ObjectKey, Objects};

use super::template::instance_name;

/// What provisioning did for each Gateway, for its status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Infra {
    /// Gateways not (yet) served by a deployment: the `Programmed` reason and message.
    refused: BTreeMap<ObjectKey, (&'static str, String)>,
    /// The namespace the Services are in; `None` when Gateways are not provisioned.
    namespace: Option<String>,
}

impl Infra {
    /// Gateways are provisioned in `namespace`.
    pub fn provisioned_in(namespace: &str) -> Self {
        Self {
            refused: BTreeMap::new(),
            namespace: Some(namespace.to_string()),
        }
    }

    /// Whether every Gateway has a deployment of its own.
    pub fn provisioned(&self) -> bool {
        self.namespace.is_some()
    }

    /// Gateway `key` is not served, for `why` (the first reason given stands).
    pub fn refuse(&mut self, key: ObjectKey, reason: &'static str, why: String) {
        self.refused.entry(key).or_insert((reason, why));
    }

    /// Why Gateway `key` is not `Programmed`, when provisioning is why.
    pub fn not_programmed(
        &self,
        objects: &Objects,
        key: &ObjectKey,
    ) -> Option<(&'static str, String)> {
        if let Some((reason, why)) = self.refused.get(key) {
            return Some((reason, why.clone()));
        }
        let namespace = self.namespace.as_ref()?;
        if self.addresses(objects, key, &[]).is_empty() {
            let name = instance_name(&key.namespace, &key.name);
            let why = format!("the Service {namespace}/{name} has no address yet");
            return Some(("AddressNotAssigned", why));
        }
        None
    }

    /// The addresses of Gateway `key`: its Service's load-balancer addresses (its cluster IPs
    /// when it is not a load balancer); `fixed` (`--status-address`) when Gateways are not
    /// provisioned.
    pub fn addresses(&self, objects: &Objects, key: &ObjectKey, fixed: &[String]) -> Vec<String> {
        let Some(namespace) = &self.namespace else {
            return fixed.to_vec();
        };
        if self.refused.contains_key(key) {
            return Vec::new();
        }
        let name = instance_name(&key.namespace, &key.name);
        let service = objects.iter().find_map(|(o, _)| match o {
            Object::Service(s)
                if s.metadata.namespace.as_deref() == Some(namespace)
                    && s.metadata.name.as_deref() == Some(&name)
                    && super::template::is_managed(&s.metadata) =>
            {
                Some(s)
            }
            _ => None,
        });
        service.map(service_addresses).unwrap_or_default()
    }
}

/// A load balancer's addresses, as it reports them; a Service of another type is reached at
/// its cluster IPs. A load balancer not yet given an address has none: its cluster IP is not
/// where the Gateway's clients can reach it.
fn service_addresses(service: &Service) -> Vec<String> {
    let spec = service.spec.as_ref();
    if spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer") {
        return service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
            .collect();
    }
    spec.and_then(|s| s.cluster_ips.clone())
        .or_else(|| spec.and_then(|s| s.cluster_ip.clone()).map(|ip| vec![ip]))
        .unwrap_or_default()
        .into_iter()
        .filter(|ip| ip != "None" && !ip.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(json: serde_json::Value) -> Service {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_load_balancer_is_reached_at_its_addresses_another_service_at_its_cluster_ips() {
        let pending = service(serde_json::json!({
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.9", "clusterIPs": ["10.96.0.9"]}
        }));
        assert!(service_addresses(&pending).is_empty());
        let balanced = service(serde_json::json!({
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.9"},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}, {"hostname": "lb.example.com"}]}}
        }));
        assert_eq!(
            service_addresses(&balanced),
            ["198.51.100.1", "lb.example.com"]
        );
        let internal = service(serde_json::json!({
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.9", "clusterIPs": ["10.96.0.9", "fd00::9"]}
        }));
        assert_eq!(service_addresses(&internal), ["10.96.0.9", "fd00::9"]);
        let headless = service(serde_json::json!({"spec": {"clusterIP": "None"}}));
        assert!(service_addresses(&headless).is_empty());
    }
}
