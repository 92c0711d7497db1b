//! The local mesh for the end-to-end tests: `weir-sidecar` processes next to demo apps, and
//! the objects that describe them as a cluster would (Pods, EndpointSlices with `targetRef`,
//! every pod at 127.0.0.1 with its sidecar's inbound port as the endpoint port).

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::StatusCode;

use crate::{
    binary, collect_lines, eventually, free_port, request, wait_for_port, Controller, Reply,
};

/// A sidecar's inbound and outbound ports, chosen before it starts (the objects name the
/// inbound one, the app is told the outbound one).
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    /// The pod's endpoint port.
    pub inbound: u16,
    /// Where the app sends its calls.
    pub outbound: u16,
}

impl Ports {
    /// Two free ports.
    pub fn free() -> Self {
        Self {
            inbound: free_port(),
            outbound: free_port(),
        }
    }

    /// The inbound port as an endpoint address.
    pub fn endpoint(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.inbound))
    }

    /// The outbound port as an address.
    pub fn outbound(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.outbound))
    }
}

/// A running `weir-sidecar`; killed on drop.
pub struct Sidecar {
    /// Its inbound port (the pod's endpoint).
    pub inbound: SocketAddr,
    /// Its outbound port (the app's calls).
    pub outbound: SocketAddr,
    /// Its admin port.
    pub admin: SocketAddr,
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Sidecar {
    /// Starts the sidecar of pod `namespace/pod`, running as `service_account`, in front of
    /// the app on `app_port`, and waits until it listens (not until ready: see
    /// [`Sidecar::wait_ready`]).
    pub fn start(
        controller: &Controller,
        namespace: &str,
        pod: &str,
        service_account: &str,
        app_port: u16,
        ports: Ports,
        extra: &[&str],
    ) -> Self {
        let token = controller.token_file(namespace, service_account);
        let inbound = SocketAddr::from(([127, 0, 0, 1], ports.inbound));
        let outbound = SocketAddr::from(([127, 0, 0, 1], ports.outbound));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut child = Command::new(binary("weir-sidecar"))
            .arg("run")
            .args(["--controller", &format!("https://{}", controller.grpc)])
            .arg("--controller-ca")
            .arg(controller.bundle())
            .arg("--identity-token-file")
            .arg(&token)
            .args(["--app-port", &app_port.to_string()])
            .args(["--inbound", &inbound.to_string()])
            .args(["--outbound", &outbound.to_string()])
            .args(["--admin", &admin.to_string()])
            .args(["--namespace", namespace, "--pod", pod])
            .args(["--service-account", service_account])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start weir-sidecar");
        let stderr = collect_lines(child.stderr.take().expect("stderr"));
        wait_for_port(admin);
        Self {
            inbound,
            outbound,
            admin,
            child,
            stderr,
        }
    }

    /// Waits (at most 15 s) until `/readyz` says ready: a view and a certificate.
    pub async fn wait_ready(&self) {
        eventually(Duration::from_secs(15), "weir-sidecar ready", || async {
            let ready = request(self.admin, "admin", "/readyz", &[], Bytes::new(), "GET").await;
            (ready.status == StatusCode::OK).then_some(())
        })
        .await;
    }

    /// GET through the outbound port, as the app would, with `Host: host`.
    pub async fn call(&self, host: &str, path: &str) -> Reply {
        request(self.outbound, host, path, &[], Bytes::new(), "GET").await
    }

    /// The value of one series from `/metrics` (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        crate::metric(self.admin, series).await.unwrap_or(0.0)
    }

    /// An admin page.
    pub async fn admin_get(&self, path: &str) -> Reply {
        request(self.admin, "admin", path, &[], Bytes::new(), "GET").await
    }

    /// Its log so far.
    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One meshed workload of the local mesh: a Service with one pod.
pub struct Workload<'a> {
    /// Service, pod label `app` and ServiceAccount.
    pub name: &'a str,
    /// Its cluster IP (transparent mode maps it back to the Service).
    pub cluster_ip: &'a str,
    /// Its endpoint: the sidecar's inbound port (or the app's own port when not meshed).
    pub endpoint: SocketAddr,
    /// Whether its pod runs a sidecar (annotated `weir.dev/injected`).
    pub meshed: bool,
}

/// The objects of one workload in namespace `shop`: Service (port 80), EndpointSlice with a
/// `targetRef`, and the Pod.
pub fn workload(w: &Workload<'_>) -> String {
    let Workload {
        name,
        cluster_ip,
        endpoint,
        meshed,
    } = w;
    let annotations = if *meshed {
        "annotations: {weir.dev/injected: 0.1.0}"
    } else {
        "annotations: {}"
    };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{clusterIP: {cluster_ip}, ports: [{{name: http, port: 80}}]}}\n---\n\
apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: shop, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints:\n- addresses: [\"{ip}\"]\n  targetRef: {{kind: Pod, name: {name}-0, namespace: shop}}\n---\n\
apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}-0, namespace: shop, labels: {{app: {name}}}, {annotations}}}\nspec: {{serviceAccountName: {name}, containers: [{{name: app}}]}}\n---\n",
        port = endpoint.port(),
        ip = endpoint.ip(),
    )
}

/// An AccessPolicy `shop/NAME` on the pods labelled `app: NAME`: only `from` may call them.
pub fn allow_only(name: &str, from: &[&str]) -> String {
    let from: Vec<String> = from
        .iter()
        .map(|f| format!("{{serviceAccount: \"{f}\"}}"))
        .collect();
    format!(
        "apiVersion: weir.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  selector: {{matchLabels: {{app: {name}}}}}\n  rules: [{{from: [{}]}}]\n---\n",
        from.join(", ")
    )
}

/// A Gateway `shop/web` and an HTTPRoute sending `host` to `service`.
pub fn web_route(host: &str, service: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: web, namespace: shop}}\nspec:\n  gatewayClassName: weir\n  listeners: [{{name: http, protocol: HTTP, port: 80}}]\n---\n\
apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: web, namespace: shop}}\nspec:\n  parentRefs: [{{name: web}}]\n  hostnames: [\"{host}\"]\n  rules: [{{backendRefs: [{{name: {service}, port: 80}}]}}]\n---\n"
    )
}

/// A demo app (`weir-echo`); killed on drop.
pub struct App {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Child,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `weir-echo` named `name` on a free port; its `/call/...` goes to `call` (a `Host`)
/// through `via` (its sidecar's outbound port) if given.
pub fn echo_app(name: &str, call: Option<(&str, SocketAddr)>) -> App {
    let port = free_port();
    let mut command = Command::new(binary("weir-echo"));
    command
        .args(["--listen", &format!("127.0.0.1:{port}"), "--name", name])
        .stdout(Stdio::null());
    if let Some((host, via)) = call {
        command.args(["--call", host, "--via", &via.to_string()]);
    }
    let child = command.spawn().expect("start weir-echo");
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)));
    App { port, child }
}
