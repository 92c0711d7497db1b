//! Resolving a backend reference (Service + port) into a cluster of ready endpoints, through
//! the Service's ports and its EndpointSlices.

use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};

use super::Context;
use crate::{
    error::Location,
    model::{Balancer, Cluster, Protocol},
    objects::{Object, ObjectKey},
};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Service annotation choosing the load-balancing algorithm: `ewma` or `round-robin`.
pub const LOAD_BALANCER_ANNOTATION: &str = "weir.dev/load-balancer";

/// A Service port as a route names it.
pub(super) enum PortRef<'p> {
    Number(i32),
    Name(&'p str),
}

impl<'a> Context<'a> {
    /// Returns the cluster name for `namespace/service` at `port`, building the cluster the
    /// first time. A missing Service or port is a warning and an unresolved cluster (500s).
    pub(super) fn cluster(
        &mut self,
        referrer: &ObjectKey,
        namespace: &str,
        service: &str,
        port: PortRef<'_>,
    ) -> String {
        let port_label = match port {
            PortRef::Number(n) => n.to_string(),
            PortRef::Name(p) => p.to_string(),
        };
        let unresolved = format!("{namespace}/{service}:{port_label}");
        let Some((svc, location)) = self.find_service(namespace, service) else {
            let name = unresolved;
            self.warn(
                referrer,
                format!("backend Service {namespace}/{service} not found; requests to it get 500"),
            );
            self.clusters
                .entry(name.clone())
                .or_insert_with(|| Cluster {
                    name: name.clone(),
                    ..Cluster::default()
                });
            return name;
        };
        let ports = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .cloned()
            .unwrap_or_default();
        let found = ports.iter().find(|p| match port {
            PortRef::Number(n) => p.port == n,
            PortRef::Name(name) => p.name.as_deref() == Some(name),
        });
        let Some(svc_port) = found else {
            let name = unresolved;
            self.warn(referrer, format!("Service {namespace}/{service} has no port {port_label}; requests to it get 500"));
            self.clusters
                .entry(name.clone())
                .or_insert_with(|| Cluster {
                    name: name.clone(),
                    ..Cluster::default()
                });
            return name;
        };
        let name = format!("{namespace}/{service}:{}", svc_port.port);
        if self.clusters.contains_key(&name) {
            return name;
        }
        let key = ObjectKey {
            kind: "Service",
            namespace: namespace.to_string(),
            name: service.to_string(),
        };
        let policy = self
            .traffic
            .get(&(namespace.to_string(), service.to_string()))
            .cloned();
        let annotated = self.balancer(svc, &key, location);
        let (balancer, resilience) = match policy {
            Some(p) => (p.balancer.unwrap_or(annotated), p.resilience),
            None => (annotated, Default::default()),
        };
        let protocol = match svc_port.app_protocol.as_deref() {
            Some("kubernetes.io/h2c" | "h2c" | "grpc") => Protocol::H2c,
            _ => Protocol::Http1,
        };
        let port_name = svc_port.name.clone().unwrap_or_default();
        let ready: Vec<(SocketAddr, Option<&str>)> = self
            .slices(namespace, service)
            .flat_map(|slice| ready_endpoints(slice, &port_name))
            .collect();
        let identities = ready
            .iter()
            .filter_map(|(addr, pod)| Some((*addr, self.pod_identity(namespace, (*pod)?)?)))
            .collect();
        let mut endpoints: Vec<SocketAddr> = ready.into_iter().map(|(a, _)| a).collect();
        endpoints.sort();
        endpoints.dedup();
        self.clusters.insert(
            name.clone(),
            Cluster {
                name: name.clone(),
                protocol,
                balancer,
                resolved: true,
                endpoints,
                identities,
                resilience,
                tls: self.backend_tls(namespace, service, &port_name),
            },
        );
        name
    }

    pub(super) fn find_service(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<(&'a Service, &'a Location)> {
        let key = ObjectKey {
            kind: "Service",
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        match self.objects.get(&key)? {
            (Object::Service(s), location) => Some((s, location)),
            _ => None,
        }
    }

    fn slices(
        &self,
        namespace: &str,
        service: &str,
    ) -> impl Iterator<Item = &'a EndpointSlice> + 'a {
        self.slices
            .get(&(namespace, service))
            .cloned()
            .unwrap_or_default()
            .into_iter()
    }

    fn balancer(&mut self, svc: &Service, key: &ObjectKey, location: &Location) -> Balancer {
        match svc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(LOAD_BALANCER_ANNOTATION))
            .map(String::as_str)
        {
            None | Some("ewma") => Balancer::PeakEwma,
            Some("round-robin") => Balancer::RoundRobin,
            Some(other) => {
                self.error(
                    location,
                    key,
                    format!("metadata.annotations[{LOAD_BALANCER_ANNOTATION}]"),
                    format!("unknown load balancer {other:?}: use ewma or round-robin"),
                );
                Balancer::PeakEwma
            }
        }
    }
}

/// Addresses of the endpoints in `slice` that may take traffic, on the slice port named like
/// the Service port, each with the Pod its `targetRef` names. `conditions.ready` unset means
/// ready, as the EndpointSlice API says.
fn ready_endpoints<'s>(
    slice: &'s EndpointSlice,
    port_name: &str,
) -> impl Iterator<Item = (SocketAddr, Option<&'s str>)> + 's {
    let port = slice
        .ports
        .as_ref()
        .and_then(|ports| {
            ports
                .iter()
                .find(|p| p.name.as_deref().unwrap_or_default() == port_name)
        })
        .and_then(|p| p.port)
        .and_then(|p| u16::try_from(p).ok());
    let ip_family = matches!(slice.address_type.as_str(), "IPv4" | "IPv6");
    slice
        .endpoints
        .iter()
        .filter(move |_| ip_family && port.is_some())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .flat_map(|e| {
            let pod = e
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| r.name.as_deref());
            e.addresses.iter().map(move |a| (a, pod))
        })
        .filter_map(move |(a, pod)| Some((SocketAddr::new(a.parse::<IpAddr>().ok()?, port?), pod)))
}
