//! The local mesh for the end-to-end tests: `weir-sidecar` processes next to demo apps, and
//! the objects that describe them as a cluster would (Pods, EndpointSlices with `targetRef`,
//! every pod at 127.0.0.1 with its sidecar's inbound port as the endpoint port).

use std::{
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    binary, collect_lines, free_port, mesh_tls, netns::Netns, request, wait_for_port, ConfigDir,
    Controller, Reply,
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

/// The pod a sidecar runs in.
pub struct Pod<'a> {
    /// Its namespace.
    pub namespace: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Its ServiceAccount: its identity.
    pub service_account: &'a str,
    /// The app's port.
    pub app_port: u16,
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
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Files mounted for it, removed on drop.
    volume: Option<PathBuf>,
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
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut command = Command::new(binary("weir-sidecar"));
        command
            .arg("run")
            .arg("--identity-token-file")
            .arg(controller.token_file(namespace, service_account))
            .arg("--controller-ca")
            .arg(controller.bundle())
            .args(["--inbound", &ports.endpoint().to_string()])
            .args(["--outbound", &ports.outbound().to_string()])
            .args(["--admin", &admin.to_string()])
            .args(extra);
        let pod = Pod {
            namespace,
            name: pod,
            service_account,
            app_port,
        };
        Self::spawn(
            command,
            controller,
            &pod,
            ports.endpoint(),
            ports.outbound(),
            admin,
        )
    }

    /// Starts the sidecar of pod `NAME-0` in namespace `shop`, running as ServiceAccount
    /// `NAME` (the workloads of [`frontend_and_backend`]), in front of the app on `app_port`.
    pub fn shop(
        controller: &Controller,
        name: &str,
        app_port: u16,
        ports: Ports,
        extra: &[&str],
    ) -> Self {
        let pod = format!("{name}-0");
        Self::start(controller, "shop", &pod, name, app_port, ports, extra)
    }

    /// Starts the sidecar of `pod` inside network namespace `netns` on its default ports, as
    /// uid 1337 (the proxy user `weir-sidecar init` exempts from interception), and waits
    /// until its admin port (15020 on the namespace's address) listens.
    pub fn start_in(netns: &Netns, controller: &Controller, pod: &Pod<'_>) -> Self {
        // The token and the bundle as a cluster mounts them: readable by the proxy user.
        // Named per sidecar, not per pod: two tests of one process may run the same pod.
        static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let volume = std::env::temp_dir().join(format!(
            "weir-pod-{}-{}-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            pod.namespace,
            pod.name
        ));
        std::fs::create_dir_all(&volume).expect("create the pod's volume");
        let token = volume.join("token");
        let bundle = volume.join("trust-bundle.pem");
        let readable = |from: &std::path::Path, to: &std::path::Path| {
            std::fs::copy(from, to).expect("copy into the pod's volume");
            std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        };
        readable(
            &controller.token_file(pod.namespace, pod.service_account),
            &token,
        );
        readable(&controller.bundle(), &bundle);
        std::fs::set_permissions(&volume, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut command = netns.command("setpriv");
        command
            .args(["--reuid", "1337", "--regid", "1337", "--clear-groups"])
            .arg(binary("weir-sidecar"))
            .arg("run")
            .arg("--identity-token-file")
            .arg(&token)
            .arg("--controller-ca")
            .arg(&bundle);
        let at = |port| SocketAddr::from((netns.ip, port));
        let mut sidecar = Self::spawn(command, controller, pod, at(15006), at(15001), at(15020));
        sidecar.volume = Some(volume);
        sidecar
    }

    fn spawn(
        mut command: Command,
        controller: &Controller,
        pod: &Pod<'_>,
        inbound: SocketAddr,
        outbound: SocketAddr,
        admin: SocketAddr,
    ) -> Self {
        let mut child = command
            .args(["--controller", &format!("https://{}", controller.grpc)])
            .args(["--app-port", &pod.app_port.to_string()])
            .args(["--namespace", pod.namespace, "--pod", pod.name])
            .args(["--service-account", pod.service_account])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start weir-sidecar");
        let stdout = collect_lines(child.stdout.take().expect("stdout"));
        let stderr = collect_lines(child.stderr.take().expect("stderr"));
        let mut sidecar = Self {
            inbound,
            outbound,
            admin,
            child,
            stdout,
            stderr,
            volume: None,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect_timeout(&admin, Duration::from_millis(100)).is_err() {
            assert!(
                sidecar.running() && Instant::now() < deadline,
                "weir-sidecar not listening on {admin}:\n{}",
                sidecar.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        sidecar
    }

    /// Waits (at most 15 s) until `/readyz` says ready: a view and a certificate.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ready = request(self.admin, "admin", "/readyz", &[], Bytes::new(), "GET").await;
            if ready.status == StatusCode::OK {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "weir-sidecar not ready within 15s ({}: {}):\n{}",
                ready.status,
                ready.text(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// GET through the outbound port, as the app would, with `Host: host`.
    pub async fn call(&self, host: &str, path: &str) -> Reply {
        request(self.outbound, host, path, &[], Bytes::new(), "GET").await
    }

    /// The access-log lines written so far (stdout lines that are JSON objects).
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        let lines = self.stdout.lock().unwrap();
        lines
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
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
        if let Some(volume) = &self.volume {
            let _ = std::fs::remove_dir_all(volume);
        }
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

/// A directory holding [`frontend_and_backend`] at `front` and `back` under STRICT.
pub fn strict_shop(front: &Ports, back: &Ports) -> ConfigDir {
    ConfigDir::new()
        .with(
            "workloads.yaml",
            &frontend_and_backend(front.endpoint(), back.endpoint()),
        )
        .with("tls.yaml", &mesh_tls("STRICT"))
}

/// The two meshed workloads of the tests: `frontend` (cluster IP 10.96.0.10) at `front` and
/// `backend` (10.96.0.20) at `back`.
pub fn frontend_and_backend(front: SocketAddr, back: SocketAddr) -> String {
    let frontend = workload(&Workload {
        name: "frontend",
        cluster_ip: "10.96.0.10",
        endpoint: front,
        meshed: true,
    });
    frontend
        + &workload(&Workload {
            name: "backend",
            cluster_ip: "10.96.0.20",
            endpoint: back,
            meshed: true,
        })
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

/// The quickstart's first requests (`examples/quickstart`), through the ingress at `ingress`:
/// with the demo IdP's `token`, `web.example.com/call/hello` reaches the frontend, which calls
/// the backend, each over mTLS (the identity each app saw is in the answer); without a token,
/// 401. `logs` says what the processes printed, for a failure.
pub async fn quickstart_calls(ingress: SocketAddr, token: &str, logs: impl Fn() -> String) {
    let bearer = format!("Bearer {token}");
    let auth = [("authorization", bearer.as_str())];
    let reply = request(
        ingress,
        "web.example.com",
        "/call/hello",
        &auth,
        Bytes::new(),
        "GET",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}\n{}", reply.text(), logs());
    let body = reply.json();
    assert_eq!(body["backend"], "frontend");
    assert_eq!(
        body["peer"],
        "spiffe://cluster.local/ns/weir-system/sa/weir-ingress"
    );
    assert_eq!(body["called"]["body"]["backend"], "backend", "{body}");
    assert_eq!(
        body["called"]["body"]["headers"]["x-weir-peer-identity"],
        "spiffe://cluster.local/ns/demo/sa/frontend",
        "the backend was called over mTLS from the frontend's identity"
    );
    let anonymous = request(ingress, "web.example.com", "/", &[], Bytes::new(), "GET").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

/// Sends a plaintext HTTP request straight to `addr` and returns what came back (empty when
/// the connection was closed without an answer).
pub async fn plaintext(addr: SocketAddr) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /direct HTTP/1.1\r\nHost: backend\r\nx-weir-peer-identity: spiffe://forged\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// A demo app (`weir-echo`); killed on drop.
pub struct App {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Child,
}

impl App {
    /// An app already started as `child`, listening on `port`.
    pub fn from_child(port: u16, child: Child) -> Self {
        Self { port, child }
    }
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

/// Starts `weir-echo` named `name` on `[::]:port` (IPv6 and IPv4) inside network namespace
/// `netns`.
pub fn echo_app_in(netns: &Netns, name: &str, port: u16) -> App {
    let child = netns
        .command(binary("weir-echo"))
        .args(["--listen", &format!("[::]:{port}"), "--name", name])
        .stdout(Stdio::null())
        .spawn()
        .expect("start weir-echo");
    let app = App { port, child };
    wait_for_port(SocketAddr::from((netns.ip, port)));
    app
}
