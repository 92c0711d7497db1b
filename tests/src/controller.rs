//! A running `weir-controller run` on loopback (`--config-dir`, or `--kubernetes` against the
//! test API server), with its own state directory.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use tokio::sync::mpsc;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use weir_api::proto::{
    config_discovery_client::ConfigDiscoveryClient, identity_client::IdentityClient, watch_request,
    CertifyRequest, ConfigUpdate, Hello, Role, WatchRequest,
};

use crate::{apiserver::ApiServer, binary, collect_lines, free_port, request, ConfigDir};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A running controller; killed on drop. Its state directory is removed on drop.
pub struct Controller {
    /// The gRPC (TLS) address.
    pub grpc: SocketAddr,
    /// The admin address.
    pub admin: SocketAddr,
    state: PathBuf,
    /// The source flags and any extra flags.
    args: Vec<String>,
    child: Option<Child>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Controller {
    /// Starts a controller on `dir` with a fresh state directory and waits until it is ready.
    pub fn start(dir: &ConfigDir) -> Self {
        Self::start_with(dir, &[])
    }

    /// Like [`Controller::start`], with extra flags.
    pub fn start_with(dir: &ConfigDir, extra: &[&str]) -> Self {
        Self::start_with_host(dir, LOCALHOST, extra)
    }

    /// Like [`Controller::start_with`], listening on `host` (for nodes in other network
    /// namespaces), which its serving certificate names.
    pub fn start_at(dir: &ConfigDir, host: IpAddr, extra: &[&str]) -> Self {
        let names = format!("localhost,127.0.0.1,{host}");
        let mut args = vec!["--grpc-name", &names];
        args.extend(extra);
        Self::start_with_host(dir, host, &args)
    }

    fn start_with_host(dir: &ConfigDir, host: IpAddr, extra: &[&str]) -> Self {
        let mut args = vec!["--config-dir".to_string(), dir.path.display().to_string()];
        args.extend(extra.iter().map(|a| a.to_string()));
        Self::launch(dir.path.with_extension("state"), args, host)
    }

    /// Starts a controller in Kubernetes mode against `api` (through a kubeconfig), with
    /// `extra` flags, and waits until it listens. `dir` holds its kubeconfig and state.
    pub fn start_kubernetes(api: &ApiServer, dir: &Path, extra: &[&str]) -> Self {
        let kubeconfig = api.kubeconfig(dir);
        let mut args = vec![
            "--kubernetes".to_string(),
            "--kubeconfig".to_string(),
            kubeconfig.display().to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        Self::launch(dir.join("state"), args, LOCALHOST)
    }

    fn launch(state: PathBuf, args: Vec<String>, host: IpAddr) -> Self {
        let mut controller = Self {
            grpc: SocketAddr::new(host, free_port()),
            admin: SocketAddr::new(host, free_port()),
            state,
            args,
            child: None,
            stderr: Arc::default(),
        };
        controller.restart();
        controller
    }

    /// Kills the process (as a crash would: no clean shutdown).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits (at most `within`) for the exit code.
    pub fn terminate(&mut self, within: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "weir-controller did not exit within {within:?} of SIGTERM:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts it again on the same addresses, config and state (same CA, same token key).
    pub fn restart(&mut self) {
        self.kill();
        let mut child = Command::new(binary("weir-controller"))
            .arg("run")
            .args(&self.args)
            .arg("--state-dir")
            .arg(&self.state)
            .args(["--grpc", &self.grpc.to_string()])
            .args(["--admin", &self.admin.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start weir-controller");
        self.stderr = collect_lines(child.stderr.take().expect("stderr"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(self.grpc).is_err()
            || std::net::TcpStream::connect(self.admin).is_err()
        {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("weir-controller exited with {status}:\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "weir-controller not listening:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A gRPC channel to it, trusting its bundle.
    pub async fn channel(&self) -> Channel {
        let ca = std::fs::read(self.bundle()).expect("trust bundle");
        Endpoint::from_shared(format!("https://{}", self.grpc))
            .expect("endpoint")
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
            .expect("tls")
            .connect()
            .await
            .expect("connect to the controller")
    }

    /// A client of its `Identity` service.
    pub async fn identity_client(&self) -> IdentityClient<Channel> {
        IdentityClient::new(self.channel().await)
    }

    /// Opens a config stream as the sidecar of pod `namespace/pod`, proving itself with
    /// `token`: the stream of updates, and the sender for ACKs.
    pub async fn sidecar_stream(
        &self,
        token: &str,
        namespace: &str,
        service_account: &str,
        pod: &str,
    ) -> Result<(tonic::Streaming<ConfigUpdate>, mpsc::Sender<WatchRequest>), tonic::Status> {
        let (tx, rx) = mpsc::channel(4);
        let hello = Hello {
            role: Role::Sidecar as i32,
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
            pod: pod.to_string(),
            node_version: "test".to_string(),
        };
        tx.send(WatchRequest {
            kind: Some(watch_request::Kind::Hello(hello)),
        })
        .await
        .expect("queue the Hello");
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header value"),
        );
        let mut client = ConfigDiscoveryClient::new(self.channel().await);
        let updates = client.watch(request).await?.into_inner();
        Ok((updates, tx))
    }

    /// Its trust bundle (the CA root), for `--controller-ca`.
    pub fn bundle(&self) -> PathBuf {
        self.state.join("trust-bundle.pem")
    }

    /// Writes a token proving `namespace/service_account` to a file and returns its path.
    pub fn token_file(&self, namespace: &str, service_account: &str) -> PathBuf {
        let token = self.token(namespace, service_account);
        let path = self
            .state
            .join(format!("{namespace}.{service_account}.token"));
        std::fs::write(&path, token).expect("write token");
        path
    }

    /// A token proving `namespace/service_account`, from `weir-controller token`.
    pub fn token(&self, namespace: &str, service_account: &str) -> String {
        let out = Command::new(binary("weir-controller"))
            .args(["token", "--state-dir"])
            .arg(&self.state)
            .args([
                "--namespace",
                namespace,
                "--service-account",
                service_account,
            ])
            .output()
            .expect("run weir-controller token");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_string()
    }

    /// GET an admin page.
    pub async fn admin_get(&self, path: &str) -> crate::Reply {
        request(self.admin, "admin", path, &[], Bytes::new(), "GET").await
    }

    /// `/status`, parsed.
    pub async fn status(&self) -> serde_json::Value {
        self.admin_get("/status").await.json()
    }

    /// The value of one series from `/metrics`.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        crate::metric(self.admin, series).await
    }

    /// Its log so far.
    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Where its files live (for tests that read the CA).
    pub fn state_dir(&self) -> &Path {
        &self.state
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// A CSR (fresh P-256 key) asking for `spiffe_id` as its only URI SAN.
pub fn csr_for(spiffe_id: &str) -> String {
    weir_mesh::identity::csr(spiffe_id).expect("CSR").1
}

/// A `Certify` call with `token` as its bearer token.
pub fn certify_request(csr: String, token: &str) -> tonic::Request<CertifyRequest> {
    let mut request = tonic::Request::new(CertifyRequest { csr_pem: csr });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header value"),
    );
    request
}

/// The next sidecar view on a stream (within 5 s), with its version.
pub async fn next_sidecar_view(
    updates: &mut tonic::Streaming<ConfigUpdate>,
) -> (u64, weir_api::model::SidecarView) {
    let update = tokio::time::timeout(Duration::from_secs(5), updates.message())
        .await
        .expect("a view within 5 s")
        .expect("the stream stays up")
        .expect("an update");
    let view = weir_api::wire::decode_view(
        weir_api::wire::SIDECAR_ENCODING,
        &update.encoding,
        &update.payload,
    )
    .expect("a sidecar view");
    (update.version, view)
}
