//! The Kubernetes objects Weir reads, as the maintained Rust types (k8s-openapi, gateway-api),
//! each with the place it came from.

use std::{collections::BTreeMap, fmt};

use gateway_api::apis::experimental::{
    grpcroutes::GrpcRoute, httproutes::HttpRoute, tcproutes::TcpRoute,
};
use gateway_api::apis::standard::{
    backendtlspolicies::BackendTlsPolicy, gatewayclasses::GatewayClass, gateways::Gateway,
    listenersets::ListenerSet, referencegrants::ReferenceGrant, tlsroutes::TlsRoute,
};
use k8s_openapi::{
    api::{
        core::v1::{ConfigMap, Namespace, Pod, Secret, Service},
        discovery::v1::EndpointSlice,
        networking::v1::{Ingress, IngressClass},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde::de::DeserializeOwned;

use crate::{
    crds::{AccessPolicy, AuthPolicy, MeshTLSPolicy, RateLimitPolicy, TrafficPolicy},
    error::{ConfigError, Location},
};

/// `Kind namespace/name`: how errors, metrics and logs name an object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct ObjectKey {
    /// The object's kind, e.g. `HTTPRoute`.
    pub kind: &'static str,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// One object Weir understands.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Object {
    /// `v1 Namespace`: its labels select routes for Gateway listeners.
    Namespace(Namespace),
    /// `v1 Service`: ports and their names and protocols.
    Service(Service),
    /// `discovery.k8s.io/v1 EndpointSlice`: where a Service's endpoints are.
    EndpointSlice(EndpointSlice),
    /// `v1 Pod`: who an endpoint runs as (its ServiceAccount), whether it is meshed, and the
    /// labels mesh policies select it by.
    Pod(Box<Pod>),
    /// `v1 Secret`: TLS certificates, API keys, JWKS. Its data is never shown or logged.
    Secret(Secret),
    /// `v1 ConfigMap`: CA certificates a BackendTLSPolicy trusts.
    ConfigMap(ConfigMap),
    /// `networking.k8s.io/v1 Ingress`.
    Ingress(Ingress),
    /// `networking.k8s.io/v1 IngressClass`: which class is the cluster default.
    IngressClass(IngressClass),
    /// `gateway.networking.k8s.io/v1 GatewayClass`: read for its status (Weir serves the
    /// class named `weir`).
    GatewayClass(GatewayClass),
    /// `gateway.networking.k8s.io/v1 Gateway`.
    Gateway(Gateway),
    /// `gateway.networking.k8s.io/v1 ListenerSet`: listeners added to a Gateway that allows
    /// them (`spec.allowedListeners`), from its namespace or others.
    ListenerSet(ListenerSet),
    /// `gateway.networking.k8s.io/v1 HTTPRoute`.
    HttpRoute(HttpRoute),
    /// `gateway.networking.k8s.io/v1 GRPCRoute`: compiled as the HTTPRoute it amounts to (a
    /// method is a path), its backends spoken to over HTTP/2.
    GrpcRoute(GrpcRoute),
    /// `gateway.networking.k8s.io/v1 TLSRoute`: connections on a `TLS` listener, by SNI,
    /// carried to a Service as bytes (passed through, or after the gateway's TLS ends).
    TlsRoute(TlsRoute),
    /// `gateway.networking.k8s.io/v1 TCPRoute` (or v1alpha2): connections on a `TCP` listener
    /// carried to a Service as bytes (on a `TLS` listener, those for its hostname).
    TcpRoute(TcpRoute),
    /// `gateway.networking.k8s.io/v1 BackendTLSPolicy`: TLS from the gateway to a Service.
    BackendTlsPolicy(BackendTlsPolicy),
    /// `gateway.networking.k8s.io/v1beta1 ReferenceGrant`: allows cross-namespace backends.
    ReferenceGrant(ReferenceGrant),
    /// `weir.dev/v1alpha1 TrafficPolicy`: resilience for Services.
    TrafficPolicy(TrafficPolicy),
    /// `weir.dev/v1alpha1 AuthPolicy`: JWT and API-key authentication for routes.
    AuthPolicy(AuthPolicy),
    /// `weir.dev/v1alpha1 RateLimitPolicy`: local and global rate limits for routes.
    RateLimitPolicy(RateLimitPolicy),
    /// `weir.dev/v1alpha1 MeshTLSPolicy`: the mTLS mode of meshed workloads (sidecars).
    MeshTLSPolicy(MeshTLSPolicy),
    /// `weir.dev/v1alpha1 AccessPolicy`: who may call meshed workloads (sidecars).
    AccessPolicy(AccessPolicy),
}

impl Object {
    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
            Object::BackendTlsPolicy(o) => &o.metadata,
            Object::Ingress(o) => &o.metadata,
            Object::IngressClass(o) => &o.metadata,
            Object::GatewayClass(o) => &o.metadata,
            Object::GrpcRoute(o) => &o.metadata,
            Object::TlsRoute(o) => &o.metadata,
            Object::TcpRoute(o) => &o.metadata,
            Object::Gateway(o) => &o.metadata,
            Object::ListenerSet(o) => &o.metadata,
            Object::HttpRoute(o) => &o.metadata,
            Object::ReferenceGrant(o) => &o.metadata,
            Object::TrafficPolicy(o) => &o.metadata,
            Object::AuthPolicy(o) => &o.metadata,
            Object::RateLimitPolicy(o) => &o.metadata,
            Object::MeshTLSPolicy(o) => &o.metadata,
            Object::AccessPolicy(o) => &o.metadata,
        }
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::Namespace(o) => &mut o.metadata,
            Object::Service(o) => &mut o.metadata,
            Object::EndpointSlice(o) => &mut o.metadata,
            Object::Pod(o) => &mut o.metadata,
            Object::Secret(o) => &mut o.metadata,
            Object::ConfigMap(o) => &mut o.metadata,
            Object::BackendTlsPolicy(o) => &mut o.metadata,
            Object::Ingress(o) => &mut o.metadata,
            Object::IngressClass(o) => &mut o.metadata,
            Object::GatewayClass(o) => &mut o.metadata,
            Object::GrpcRoute(o) => &mut o.metadata,
            Object::TlsRoute(o) => &mut o.metadata,
            Object::TcpRoute(o) => &mut o.metadata,
            Object::Gateway(o) => &mut o.metadata,
            Object::ListenerSet(o) => &mut o.metadata,
            Object::HttpRoute(o) => &mut o.metadata,
            Object::ReferenceGrant(o) => &mut o.metadata,
            Object::TrafficPolicy(o) => &mut o.metadata,
            Object::AuthPolicy(o) => &mut o.metadata,
            Object::RateLimitPolicy(o) => &mut o.metadata,
            Object::MeshTLSPolicy(o) => &mut o.metadata,
            Object::AccessPolicy(o) => &mut o.metadata,
        }
    }

    /// The kind as Kubernetes spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Namespace(_) => "Namespace",
            Object::Service(_) => "Service",
            Object::EndpointSlice(_) => "EndpointSlice",
            Object::Pod(_) => "Pod",
            Object::Secret(_) => "Secret",
            Object::ConfigMap(_) => "ConfigMap",
            Object::BackendTlsPolicy(_) => "BackendTLSPolicy",
            Object::Ingress(_) => "Ingress",
            Object::IngressClass(_) => "IngressClass",
            Object::GatewayClass(_) => "GatewayClass",
            Object::GrpcRoute(_) => "GRPCRoute",
            Object::TlsRoute(_) => "TLSRoute",
            Object::TcpRoute(_) => "TCPRoute",
            Object::Gateway(_) => "Gateway",
            Object::ListenerSet(_) => "ListenerSet",
            Object::HttpRoute(_) => "HTTPRoute",
            Object::ReferenceGrant(_) => "ReferenceGrant",
            Object::TrafficPolicy(_) => "TrafficPolicy",
            Object::AuthPolicy(_) => "AuthPolicy",
            Object::RateLimitPolicy(_) => "RateLimitPolicy",
            Object::MeshTLSPolicy(_) => "MeshTLSPolicy",
            Object::AccessPolicy(_) => "AccessPolicy",
        }
    }

    /// `Kind namespace/name`.
    pub fn key(&self) -> ObjectKey {
        let meta = self.metadata();
        ObjectKey {
            kind: self.kind(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }

    /// Reads one object from its JSON form (as parsed from YAML). Kinds Weir does not use give
    /// `Ok(None)`; a known kind that does not fit its schema gives an error naming the field.
    pub fn from_value(
        value: serde_json::Value,
        location: &Location,
    ) -> Result<Option<Object>, ConfigError> {
        let api_version = value
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let kind = value
            .get("kind")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let name = value
            .pointer("/metadata/name")
            .and_then(|v| v.as_str())
            .unwrap_or("<unnamed>")
            .to_string();
        let namespace = value
            .pointer("/metadata/namespace")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let label = if namespace.is_empty() {
            format!("{kind} {name}")
        } else {
            format!("{kind} {namespace}/{name}")
        };
        if api_version.is_empty() || kind.is_empty() {
            return Err(ConfigError::new(
                location,
                "-",
                "apiVersion/kind",
                "every object needs apiVersion and kind",
            ));
        }
        let object = match (api_version, kind) {
            ("v1", "Namespace") => Object::Namespace(typed(value, location, &label)?),
            ("v1", "Service") => Object::Service(typed(value, location, &label)?),
            ("v1", "Secret") => Object::Secret(typed(value, location, &label)?),
            ("v1", "ConfigMap") => Object::ConfigMap(typed(value, location, &label)?),
            (
                "gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1alpha3",
                "BackendTLSPolicy",
            ) => Object::BackendTlsPolicy(typed(value, location, &label)?),
            ("v1", "Pod") => Object::Pod(Box::new(typed(value, location, &label)?)),
            ("discovery.k8s.io/v1", "EndpointSlice") => {
                Object::EndpointSlice(typed(value, location, &label)?)
            }
            ("networking.k8s.io/v1", "Ingress") => Object::Ingress(typed(value, location, &label)?),
            ("networking.k8s.io/v1", "IngressClass") => {
                Object::IngressClass(typed(value, location, &label)?)
            }
            (
                "gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1beta1",
                "GatewayClass",
            ) => Object::GatewayClass(typed(value, location, &label)?),
            ("gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1beta1", "Gateway") => {
                Object::Gateway(typed(value, location, &label)?)
            }
            ("gateway.networking.k8s.io/v1", "ListenerSet") => {
                Object::ListenerSet(typed(value, location, &label)?)
            }
            ("gateway.networking.k8s.io/v1", "GRPCRoute") => {
                Object::GrpcRoute(typed(value, location, &label)?)
            }
            // v1alpha2 and v1alpha3 objects have the same fields (v1 requires hostnames).
            (
                "gateway.networking.k8s.io/v1"
                | "gateway.networking.k8s.io/v1alpha3"
                | "gateway.networking.k8s.io/v1alpha2",
                "TLSRoute",
            ) => Object::TlsRoute(typed(value, location, &label)?),
            // v1 allows one rule, v1alpha2 up to sixteen (their backends are pooled alike).
            ("gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1alpha2", "TCPRoute") => {
                Object::TcpRoute(typed(value, location, &label)?)
            }
            ("gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1beta1", "HTTPRoute") => {
                Object::HttpRoute(typed(value, location, &label)?)
            }
            (
                "gateway.networking.k8s.io/v1beta1" | "gateway.networking.k8s.io/v1",
                "ReferenceGrant",
            ) => Object::ReferenceGrant(typed(value, location, &label)?),
            ("weir.dev/v1alpha1", "TrafficPolicy") => {
                Object::TrafficPolicy(typed(value, location, &label)?)
            }
            ("weir.dev/v1alpha1", "AuthPolicy") => {
                Object::AuthPolicy(typed(value, location, &label)?)
            }
            ("weir.dev/v1alpha1", "MeshTLSPolicy") => {
                Object::MeshTLSPolicy(typed(value, location, &label)?)
            }
            ("weir.dev/v1alpha1", "AccessPolicy") => {
                Object::AccessPolicy(typed(value, location, &label)?)
            }
            ("weir.dev/v1alpha1", "RateLimitPolicy") => {
                Object::RateLimitPolicy(typed(value, location, &label)?)
            }
            _ => return Ok(None),
        };
        if object
            .metadata()
            .name
            .as_deref()
            .unwrap_or_default()
            .is_empty()
        {
            return Err(ConfigError::new(
                location,
                label,
                "metadata.name",
                "is required",
            ));
        }
        Ok(Some(object))
    }
}

fn typed<T: DeserializeOwned>(
    value: serde_json::Value,
    location: &Location,
    label: &str,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        ConfigError::new(location, label, field, e.into_inner().to_string())
    })
}

/// A set of objects, keyed by kind/namespace/name, each with where it came from. Namespaced
/// objects without a namespace are put in `default`, as `kubectl apply` would.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    objects: BTreeMap<ObjectKey, (Object, Location)>,
}

impl Objects {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces an object. A second object with the same kind/namespace/name is an
    /// error naming both places, because which one wins would be a guess.
    pub fn insert(&mut self, mut object: Object, location: Location) -> Result<(), ConfigError> {
        let cluster_scoped = matches!(
            object,
            Object::Namespace(_) | Object::IngressClass(_) | Object::GatewayClass(_)
        );
        if !cluster_scoped {
            let meta = object.metadata_mut();
            if meta.namespace.as_deref().unwrap_or_default().is_empty() {
                meta.namespace = Some("default".to_string());
            }
        }
        let key = object.key();
        if let Some((_, previous)) = self.objects.get(&key) {
            if previous.file.is_some() && *previous != location {
                return Err(ConfigError::new(
                    &location,
                    &key,
                    "metadata.name",
                    format!("the same object is also defined in {previous}"),
                ));
            }
        }
        self.objects.insert(key, (object, location));
        Ok(())
    }

    /// Removes an object (the Kubernetes source calls this on delete events).
    pub fn remove(&mut self, key: &ObjectKey) -> Option<Object> {
        self.objects.remove(key).map(|(o, _)| o)
    }

    /// The object with this key, and where it came from.
    pub fn get(&self, key: &ObjectKey) -> Option<(&Object, &Location)> {
        self.objects.get(key).map(|(o, l)| (o, l))
    }

    /// Every object with its location, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Object, &Location)> {
        self.objects.values().map(|(o, l)| (o, l))
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

mod refs;

#[cfg(test)]
mod tests;
