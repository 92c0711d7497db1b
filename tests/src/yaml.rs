//! Configuration for the tests: a temporary config directory written atomically, and YAML
//! for the objects the tests use.

use std::{net::SocketAddr, path::PathBuf, time::Instant};

use crate::Echo;

/// A temporary directory of YAML objects.
pub struct ConfigDir {
    /// The directory.
    pub path: PathBuf,
}

impl ConfigDir {
    /// A new empty directory under the system temp dir.
    pub fn new() -> Self {
        let path =
            std::env::temp_dir().join(format!("weir-test-{}-{:x}", std::process::id(), rand_u64()));
        std::fs::create_dir_all(&path).expect("create config dir");
        Self { path }
    }

    /// Writes (or replaces) a file, atomically (write then rename), as `kubectl cp` or a
    /// ConfigMap update would.
    pub fn write(&self, name: &str, yaml: &str) {
        let tmp = self.path.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, yaml).expect("write config");
        std::fs::rename(&tmp, self.path.join(name)).expect("rename config");
    }

    /// Builder form of [`ConfigDir::write`].
    pub fn with(self, name: &str, yaml: &str) -> Self {
        self.write(name, yaml);
        self
    }
}

impl Default for ConfigDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ConfigDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

/// YAML for a Service `name` in namespace `default` (port 80, named `http`) and an
/// EndpointSlice with the given backends as ready endpoints.
pub fn service(name: &str, backends: &[&Echo]) -> String {
    service_with(
        name,
        &backends.iter().map(|b| (b.addr, true)).collect::<Vec<_>>(),
        "",
    )
}

/// Like [`service`], with explicit endpoints (address, ready) and extra Service port YAML
/// (e.g. `appProtocol: kubernetes.io/h2c`). All endpoints must share one port.
pub fn service_with(name: &str, endpoints: &[(SocketAddr, bool)], port_extra: &str) -> String {
    let port = endpoints.first().map(|(a, _)| a.port()).unwrap_or(1);
    let eps: String = endpoints
        .iter()
        .map(|(a, ready)| {
            format!(
                "- addresses: [\"{}\"]\n  conditions: {{ready: {ready}}}\n",
                a.ip()
            )
        })
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  ports:\n  - name: http\n    port: 80\n    targetPort: {port}\n    {port_extra}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints:\n{eps}"
    )
}

/// A ConfigMap `name` in `default` holding the CA certificates `pem` under `ca.crt`.
pub fn ca_config_map(name: &str, pem: &str) -> String {
    let indented = pem.trim_end().replace('\n', "\n    ");
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: default}}\ndata:\n  ca.crt: |\n    {indented}\n")
}

/// A Service `name` in `namespace` whose one endpoint is `addr` (Service port 80).
pub fn service_at(name: &str, namespace: &str, addr: SocketAddr) -> String {
    service_with(name, &[(addr, true)], "")
        .replace("namespace: default", &format!("namespace: {namespace}"))
}

/// YAML for a TrafficPolicy `name` in `default` targeting Service `service`, with `spec`
/// lines (indented by 2) after the targetRefs.
pub fn traffic_policy(name: &str, service: &str, spec: &str) -> String {
    format!(
        "apiVersion: weir.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  targetRefs: [{{group: \"\", kind: Service, name: {service}}}]\n{spec}"
    )
}

/// YAML for a Gateway `gw` of class weir in `default`, listening for HTTP on port 80.
pub fn gateway() -> String {
    "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\nspec:\n  gatewayClassName: weir\n  listeners: [{name: http, protocol: HTTP, port: 80}]\n".to_string()
}

/// YAML for an HTTPRoute `name` attached to `gw`, with the given `rules:` body (indented by 2).
pub fn http_route(name: &str, hostnames: &[&str], rules: &str) -> String {
    let hosts = hostnames
        .iter()
        .map(|h| format!("\"{h}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [{hosts}]\n  rules:\n{rules}"
    )
}

/// A directory with Service `app` for `app`, the Gateway, and HTTPRoute `route` sending `host`
/// to it: the one-backend gateway most tests start from.
pub fn routed(app: &Echo, route: &str, host: &str) -> ConfigDir {
    ConfigDir::new()
        .with("svc.yaml", &service("app", &[app]))
        .with("gw.yaml", &gateway())
        .with(
            "route.yaml",
            &http_route(route, &[host], "  - backendRefs: [{name: app, port: 80}]\n"),
        )
}

/// YAML for a `kubernetes.io/tls` Secret `name` in `default` holding `cert`.
pub fn tls_secret(name: &str, cert: &crate::tls::Issued) -> String {
    let indent = |pem: &str| pem.trim_end().replace('\n', "\n    ");
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n    {}\n  tls.key: |\n    {}\n",
        indent(&cert.chain),
        indent(&cert.key)
    )
}

/// YAML for an Ingress `name` of class weir in `default`: `host` → Service `service` port 80,
/// with TLS from Secret `secret` for `host`.
pub fn ingress_tls(name: &str, host: &str, service: &str, secret: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  ingressClassName: weir\n  tls: [{{hosts: [\"{host}\"], secretName: {secret}}}]\n  rules:\n  - host: \"{host}\"\n    http:\n      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}]\n"
    )
}

/// YAML for a weir.dev policy of `kind` named `name` in `default`, targeting HTTPRoute
/// `route`, with `spec` lines (indented by 2) after the targetRefs.
pub fn route_policy(kind: &str, name: &str, route: &str, spec: &str) -> String {
    format!(
        "apiVersion: weir.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: {route}}}]\n{spec}"
    )
}

/// A Secret `default/keys` with one API key: client `mobile`, key `k-mobile-123`.
pub const API_KEYS: &str = "apiVersion: v1\nkind: Secret\nmetadata: {name: keys, namespace: default}\nstringData: {mobile: k-mobile-123}\n";

/// An AuthPolicy `default/shop` on the route `shop`: API keys from [`API_KEYS`] in `header`.
pub fn api_key_policy(header: &str) -> String {
    route_policy(
        "AuthPolicy",
        "shop",
        "shop",
        &format!("  apiKeys: {{secretRef: {{name: keys}}, header: '{header}'}}\n"),
    )
}

/// A meshed Service `shop/backend`: its EndpointSlice names the injected Pod `backend-a`
/// (ServiceAccount `backend`, label `app: backend`), and an AccessPolicy lets `shop/frontend`
/// call it.
pub const MESH: &str = include_str!("../fixtures/mesh.yaml");

/// A namespace-wide MeshTLSPolicy `shop/default` with this mode.
pub fn mesh_tls(mode: &str) -> String {
    format!("apiVersion: weir.dev/v1alpha1\nkind: MeshTLSPolicy\nmetadata: {{name: default, namespace: shop}}\nspec: {{mode: {mode}}}\n")
}
