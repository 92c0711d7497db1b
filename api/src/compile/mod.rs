//! Objects → [`Snapshot`]: the one pure function every Weir process uses to turn Kubernetes
//! objects into what the data plane serves.
//!
//! Every problem is collected (not just the first), each naming the file, object and field.
//! Any error rejects the whole compile: the caller keeps serving its last good snapshot.
//! References to things that may appear later (a Service not created yet) are warnings, not
//! errors, and requests to them get the status the specs ask for.

mod backend_tls;
mod backends;
mod coverage;
mod frontend;
mod gateway;
pub use gateway::listener_sets;
pub use gateway::{
    gateway_listeners, hostnames_overlap, listener_allows, listener_conflict, served_kinds,
    ADDRESSES_FIELD, NOT_ALLOWED_BY_LISTENERS, NO_MATCHING_LISTENER_HOSTNAME, NO_MATCHING_PARENT,
    PARAMETERS_REF_FIELD,
};
mod ingress;
mod mesh;
mod policy;
mod rate_limit;
mod secrets;
mod security;
mod tls;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use crate::{
    error::{ConfigError, ConfigErrors, Location},
    model::{Route, Snapshot},
    objects::{Object, ObjectKey, Objects},
};

pub use backends::{LOAD_BALANCER_ANNOTATION, SERVICE_NAME_LABEL};
pub use coverage::{annotation_ports, INJECT_ANNOTATION, SKIP_INBOUND_ANNOTATION};
pub use frontend::FRONTEND_WARNING;
pub use ingress::{
    is_ours as serves_ingress, INGRESS_CLASS, MAX_BODY_ANNOTATION, UPGRADES_ANNOTATION,
};
pub use mesh::INJECTED_ANNOTATION;
pub use security::{CLIENT_HEADER, JWKS_SECRET_KEY};
pub use tls::{TLS_CERT_KEY, TLS_KEY_KEY};

/// The GatewayClass name Weir serves.
pub const GATEWAY_CLASS: &str = "weir";

/// The Gateway API features Weir's GatewayClass claims in `status.supportedFeatures` (sorted,
/// as the spec asks): those whose upstream conformance tests have tests of Weir's named after
/// them (docs/conformance.md). A feature joins the list with its tests.
pub const SUPPORTED_FEATURES: &[&str] = &[
    "BackendTLSPolicy",
    "GRPCRoute",
    "GRPCRouteNamedRouteRule",
    "Gateway",
    "GatewayFrontendClientCertificateValidation",
    "GatewayFrontendClientCertificateValidationInsecureFallback",
    "GatewayHTTPListenerIsolation",
    "GatewayPort8080",
    "HTTPRoute",
    "HTTPRouteBackendProtocolH2C",
    "HTTPRouteBackendProtocolWebSocket",
    "HTTPRouteBackendRequestHeaderModification",
    "HTTPRouteBackendTimeout",
    "HTTPRouteCORS",
    "HTTPRouteHostRewrite",
    "HTTPRouteMethodMatching",
    "HTTPRouteNamedRouteRule",
    "HTTPRouteParentRefPort",
    "HTTPRoutePathRedirect",
    "HTTPRoutePathRewrite",
    "HTTPRoutePortRedirect",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteRequestMirror",
    "HTTPRouteRequestMultipleMirrors",
    "HTTPRouteRequestTimeout",
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteRetry",
    "HTTPRouteRetryBackendTimeout",
    "HTTPRouteRetryConnectionError",
    "HTTPRouteSchemeRedirect",
    "ListenerSet",
    "TCPRoute",
    "TLSRoute",
    "TLSRouteModeMixed",
    "TLSRouteModeTerminate",
];

/// Compiles `objects` into a snapshot, or every reason it could not.
pub fn compile(objects: &Objects) -> Result<Snapshot, ConfigErrors> {
    let mut cx = Context::new(objects);
    policy::compile_all(&mut cx);
    backend_tls::compile_all(&mut cx);
    ingress::compile_all(&mut cx);
    gateway::compile_all(&mut cx);
    frontend::compile_all(&mut cx);
    security::compile_all(&mut cx);
    tls::compile_all(&mut cx);
    gateway::own_names_only(&mut cx);
    mesh::compile_all(&mut cx);
    coverage::compile_all(&mut cx);
    cx.finish()
}

/// State shared by the compile passes: the objects, and what has been built so far.
struct Context<'a> {
    objects: &'a Objects,
    routes: Vec<Arc<Route>>,
    streams: Vec<Arc<crate::model::StreamRoute>>,
    listeners: Vec<crate::model::GatewayListener>,
    frontend: Vec<crate::model::FrontendValidation>,
    /// BackendTLSPolicies, by the Service they apply to.
    backend_tls: backend_tls::Applied,
    default_routes: Vec<Arc<Route>>,
    clusters: BTreeMap<String, crate::model::Cluster>,
    tls: Vec<crate::model::TlsCertificate>,
    /// TrafficPolicies by the `(namespace, service)` they apply to.
    traffic: HashMap<(String, String), policy::Attached>,
    errors: Vec<ConfigError>,
    warnings: Vec<String>,
    /// EndpointSlices by (namespace, `kubernetes.io/service-name`).
    slices: HashMap<(&'a str, &'a str), Vec<&'a k8s_openapi::api::discovery::v1::EndpointSlice>>,
    mesh: crate::model::Mesh,
}

impl<'a> Context<'a> {
    fn new(objects: &'a Objects) -> Self {
        let mut slices: HashMap<_, Vec<_>> = HashMap::new();
        let mut errors = Vec::new();
        for (object, location) in objects.iter() {
            let Object::EndpointSlice(slice) = object else {
                continue;
            };
            // An endpoint's identity is its Pod's, looked up in the slice's own namespace: a
            // targetRef into another namespace would let one namespace claim another's pod.
            if let Some(error) = foreign_target(slice) {
                errors.push(ConfigError::new(location, object.key(), error.0, error.1));
                continue;
            }
            let service = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL));
            if let (Some(namespace), Some(service)) = (&slice.metadata.namespace, service) {
                slices
                    .entry((namespace.as_str(), service.as_str()))
                    .or_default()
                    .push(slice);
            }
        }
        Self {
            slices,
            mesh: Default::default(),
            objects,
            routes: Vec::new(),
            streams: Vec::new(),
            listeners: Vec::new(),
            frontend: Vec::new(),
            backend_tls: Default::default(),
            default_routes: Vec::new(),
            clusters: BTreeMap::new(),
            tls: Vec::new(),
            traffic: HashMap::new(),
            errors,
            warnings: Vec::new(),
        }
    }

    fn error(
        &mut self,
        location: &Location,
        object: &ObjectKey,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.errors
            .push(ConfigError::new(location, object, field, message));
    }

    fn warn(&mut self, object: &ObjectKey, message: impl std::fmt::Display) {
        self.warnings.push(format!("{object}: {message}"));
    }

    fn iter(&self) -> impl Iterator<Item = (&'a Object, &'a Location)> + 'a {
        self.objects.iter()
    }

    fn finish(mut self) -> Result<Snapshot, ConfigErrors> {
        if !self.errors.is_empty() {
            return Err(ConfigErrors(self.errors));
        }
        self.default_routes.sort_by(|a, b| a.order.cmp(&b.order));
        let mut defaults = self.default_routes.into_iter();
        let default_route = defaults.next();
        for ignored in defaults {
            self.warnings.push(format!(
                "{}: defaultBackend ignored: an older Ingress already sets one ({})",
                ignored.order.object,
                default_route
                    .as_ref()
                    .map(|r| r.order.object.as_str())
                    .unwrap_or_default()
            ));
        }
        Ok(Snapshot {
            routes: self.routes,
            clusters: self.clusters,
            default_route,
            tls: self.tls,
            streams: self.streams,
            listeners: self.listeners,
            frontend: self.frontend,
            warnings: self.warnings,
            mesh: Arc::new(self.mesh),
        })
    }
}

/// Normalises a path prefix to whole segments without a trailing slash (`/` stays `/`).
fn normalise_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    }
}

/// `metadata.creationTimestamp` as sortable text (objects from files have none: sort first).
fn created(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.creation_timestamp
        .as_ref()
        .and_then(|t| serde_json::to_value(t).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The field and message of an endpoint whose `targetRef` names a Pod in another namespace.
fn foreign_target(
    slice: &k8s_openapi::api::discovery::v1::EndpointSlice,
) -> Option<(String, String)> {
    let own = slice.metadata.namespace.as_deref().unwrap_or_default();
    slice.endpoints.iter().enumerate().find_map(|(i, e)| {
        let target = e.target_ref.as_ref()?;
        let namespace = target.namespace.as_deref().filter(|ns| *ns != own)?;
        Some((
            format!("endpoints[{i}].targetRef.namespace"),
            format!(
                "{namespace:?} is not the EndpointSlice's namespace {own:?}: an endpoint may only name a Pod of its own namespace"
            ),
        ))
    })
}

/// Annotations shared by Ingress and HTTPRoute.
fn max_body(
    cx: &mut Context<'_>,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &ObjectKey,
    location: &Location,
) -> Option<u64> {
    let value = meta.annotations.as_ref()?.get(MAX_BODY_ANNOTATION)?;
    match crate::duration::parse_bytes(value) {
        Ok(n) => Some(n),
        Err(e) => {
            cx.error(
                location,
                key,
                format!("metadata.annotations[{MAX_BODY_ANNOTATION}]"),
                e,
            );
            None
        }
    }
}

/// The `weir.dev/upgrades` annotation: protocol names (HTTP tokens, lowercased), comma
/// separated; empty allows none. `h2c` is refused: its requests would follow in HTTP/2 on a
/// spliced connection, past routing, auth, limits and AccessPolicy.
fn upgrades(
    cx: &mut Context<'_>,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &ObjectKey,
    location: &Location,
) -> Vec<String> {
    let Some(value) = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(UPGRADES_ANNOTATION))
    else {
        return crate::model::websocket_only();
    };
    let mut names: Vec<String> = Vec::new();
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let token = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        let problem = if !token {
            Some(format!("{name:?} is not a protocol name (an HTTP token)"))
        } else if name.eq_ignore_ascii_case("h2c") {
            Some(
                "h2c is never forwarded: its requests would skip routing, auth and limits"
                    .to_string(),
            )
        } else {
            None
        };
        if let Some(problem) = problem {
            let field = format!("metadata.annotations[{UPGRADES_ANNOTATION}]");
            cx.error(location, key, field, problem);
            return crate::model::websocket_only();
        }
        let name = name.to_ascii_lowercase();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}
