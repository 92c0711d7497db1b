//! Helpers for Weir's end-to-end tests: start the real binaries on loopback and talk to them.
//!
//! ```ignore
//! let echo = Echo::start("v1");
//! let dir = ConfigDir::new().with("app.yaml", &service("shop", &[&echo]));
//! let weir = Weir::start(&dir);
//! let res = weir.get("shop.example.com", "/").await;
//! ```

use std::{
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

pub mod apiserver;
mod controller;
pub mod idp;
pub mod mesh;
pub mod netns;
pub mod redis;
pub mod tls;
pub mod websocket;
mod yaml;

pub use controller::{certify_request, csr_for, next_sidecar_view, Controller};
pub use yaml::{
    api_key_policy, gateway, http_route, ingress_tls, mesh_tls, route_policy, routed, service,
    service_with, tls_secret, traffic_policy, ConfigDir, API_KEYS, MESH,
};

/// Path of a binary built from this workspace (next to the test executable's `deps/`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// A loopback port that was free a moment ago. Picked below the kernel's ephemeral range
/// (32768 and up), so the outgoing connections of tests running in parallel cannot take it
/// between now and the moment a server binds it, as they could a port from `bind(0)`.
pub fn free_port() -> u16 {
    loop {
        let port = fastrand::u16(20_000..32_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Waits until `addr` accepts TCP connections.
pub fn wait_for_port(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        assert!(Instant::now() < deadline, "nothing listening on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `weir-echo` backend; killed on drop.
pub struct Echo {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
}

impl Echo {
    /// Starts a backend that reports `name`.
    pub fn start(name: &str) -> Self {
        Self::start_at(name, SocketAddr::from(([127, 0, 0, 1], free_port())))
    }

    /// Starts backends on 127.0.0.1, 127.0.0.2, ... sharing one port, so they can be the
    /// endpoints of one Service.
    pub fn group(names: &[&str]) -> Vec<Self> {
        let port = free_port();
        names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                Self::start_at(name, SocketAddr::from(([127, 0, 0, i as u8 + 1], port)))
            })
            .collect()
    }

    /// Starts a backend that reports `name` on `addr`.
    pub fn start_at(name: &str, addr: SocketAddr) -> Self {
        let child = Command::new(binary("weir-echo"))
            .args(["--listen", &addr.to_string(), "--name", name])
            .stdout(Stdio::null())
            .spawn()
            .expect("start weir-echo");
        wait_for_port(addr);
        Self { addr, child }
    }

    /// Switches how it answers: `ok`, `fail` (503), `reset`, `hang` or `unhealthy`.
    pub async fn mode(&self, mode: &str) {
        let path = format!("/__mode/{mode}");
        let res = request(self.addr, "echo", &path, &[], Bytes::new(), "PUT").await;
        assert_eq!(res.status, StatusCode::OK, "mode {mode}");
    }

    /// How many requests it has served.
    pub async fn served(&self) -> u64 {
        let res = request(self.addr, "echo", "/__requests", &[], Bytes::new(), "GET").await;
        String::from_utf8_lossy(&res.body)
            .trim()
            .parse()
            .unwrap_or(0)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 20 ms until it returns `Some`, at most `within`; panics with `what`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running `weir-ingress`; killed on drop (if still running).
pub struct Weir {
    /// Traffic address.
    pub addr: SocketAddr,
    /// HTTPS traffic address.
    pub tls: SocketAddr,
    /// Admin address.
    pub admin: SocketAddr,
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Weir {
    /// Starts `weir-ingress --config-dir dir` and waits until it is ready.
    pub fn start(dir: &ConfigDir) -> Self {
        Self::start_with(dir, &[])
    }

    /// Same, with extra flags.
    pub fn start_with(dir: &ConfigDir, extra: &[&str]) -> Self {
        let mut weir = Self::spawn(dir, extra);
        weir.wait_ready();
        weir
    }

    /// Same, with extra flags and environment variables.
    pub fn start_with_env(dir: &ConfigDir, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut weir = Self::spawn_with_env(dir, extra, env);
        weir.wait_ready();
        weir
    }

    /// Starts without waiting (for tests of startup failures).
    pub fn spawn(dir: &ConfigDir, extra: &[&str]) -> Self {
        Self::spawn_with_env(dir, extra, &[])
    }

    fn spawn_with_env(dir: &ConfigDir, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let source = ["--config-dir".into(), dir.path.display().to_string()];
        Self::spawn_from(&source, extra, env)
    }

    /// Starts `weir-ingress --controller …` connected to `controller` with `token_file`, and
    /// waits until it listens (not until it has a configuration: see [`Weir::wait_ready`]).
    pub fn connect(controller: &Controller, token_file: &Path, extra: &[&str]) -> Self {
        Self::connect_trusting(controller, &controller.bundle(), token_file, extra, &[])
    }

    /// Like [`Weir::connect`], checking the controller against `ca` (`--controller-ca`),
    /// with environment variables (e.g. `SSL_CERT_FILE`, the system roots).
    pub fn connect_trusting(
        controller: &Controller,
        ca: &Path,
        token_file: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let source = [
            "--controller".to_string(),
            format!("https://{}", controller.grpc),
            "--controller-ca".to_string(),
            ca.display().to_string(),
            "--identity-token-file".to_string(),
            token_file.display().to_string(),
            "--pod-name".to_string(),
            "ingress-0".to_string(),
        ];
        let mut weir = Self::spawn_from(&source, extra, env);
        weir.wait_listening();
        weir
    }

    /// Like [`Weir::start_with`], serving client traffic (`--listen`) on `ip` instead of
    /// 127.0.0.1 (e.g. an IPv6 address, to see clients by their IPv6 source).
    pub fn start_listening_on(dir: &ConfigDir, ip: std::net::IpAddr, extra: &[&str]) -> Self {
        let source = ["--config-dir".into(), dir.path.display().to_string()];
        let mut weir = Self::spawn_at(&source, ip, extra, &[]);
        weir.wait_ready();
        weir
    }

    fn spawn_from(source: &[String], extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_at(source, [127, 0, 0, 1].into(), extra, env)
    }

    fn spawn_at(
        source: &[String],
        ip: std::net::IpAddr,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let addr = SocketAddr::new(ip, free_port());
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let tls = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut child = Command::new(binary("weir-ingress"))
            .args(source)
            .args([
                "--listen",
                &addr.to_string(),
                "--admin",
                &admin.to_string(),
                "--listen-tls",
                &tls.to_string(),
                "--workers",
                "2",
            ])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start weir-ingress");
        let stdout = collect_lines(child.stdout.take().expect("stdout"));
        let stderr = collect_lines(child.stderr.take().expect("stderr"));
        Self {
            addr,
            tls,
            admin,
            child,
            stdout,
            stderr,
        }
    }

    /// Waits (at most 10 s) until `/readyz` says ready: it has a configuration.
    pub async fn wait_ready_config(&self) {
        eventually(Duration::from_secs(10), "weir-ingress ready", || async {
            (self.admin_get("/readyz").await.status == StatusCode::OK).then_some(())
        })
        .await;
    }

    fn wait_ready(&mut self) {
        self.wait_listening();
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "weir-ingress exited with {status}:\n{}",
                    self.stderr().join("\n")
                );
            }
            if std::net::TcpStream::connect(self.admin).is_ok()
                && std::net::TcpStream::connect(self.addr).is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "weir-ingress not ready:\n{}",
                self.stderr().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Access-log lines so far, parsed.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Raw stdout lines so far.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Log lines (stderr) so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// GET `path` with `Host: host`.
    pub async fn get(&self, host: &str, path: &str) -> Reply {
        request(self.addr, host, path, &[], Bytes::new(), "GET").await
    }

    /// A GET that runs in the background, for requests that must be in flight while the test
    /// does something else.
    pub fn get_in_background(&self, host: &str, path: &str) -> tokio::task::JoinHandle<Reply> {
        let (addr, host, path) = (self.addr, host.to_string(), path.to_string());
        tokio::spawn(async move { request(addr, &host, &path, &[], Bytes::new(), "GET").await })
    }

    /// A request with headers and a body.
    pub async fn send(
        &self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        request(self.addr, host, path, headers, body.into(), method).await
    }

    /// GET an admin page.
    pub async fn admin_get(&self, path: &str) -> Reply {
        request(self.admin, "admin", path, &[], Bytes::new(), "GET").await
    }

    /// The value of one series from `/metrics`, e.g. `weir_retries_total{cluster="default/a:80"}`.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        metric(self.admin, series).await
    }

    /// The errors of the last rejected reload, once there are some (at most 5 s).
    pub async fn reload_errors(&self) -> Vec<serde_json::Value> {
        eventually(Duration::from_secs(5), "a rejected reload", || async {
            let config = self.admin_get("/config").await.json();
            config["reload"]["errors"]
                .as_array()
                .filter(|e| !e.is_empty())
                .cloned()
        })
        .await
    }

    /// The active config version (from `/config`).
    pub async fn version(&self) -> u64 {
        self.admin_get("/config").await.json()["version"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Waits (at most `within`) until the config version is at least `version`.
    pub async fn wait_version(&self, version: u64, within: Duration) -> Duration {
        let start = Instant::now();
        eventually(within, &format!("config version {version}"), || async {
            (self.version().await >= version).then_some(())
        })
        .await;
        start.elapsed()
    }

    /// Sends a signal (`TERM`, `INT`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal} failed");
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "weir-ingress did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Weir {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of one series from the `/metrics` page of the admin listener at `admin`.
pub async fn metric(admin: SocketAddr, series: &str) -> Option<f64> {
    let text = request(admin, "admin", "/metrics", &[], Bytes::new(), "GET")
        .await
        .body;
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Reads `stream` line by line on a thread into a shared list (a child's stdout or stderr).
pub fn collect_lines(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Reply {
    /// Reads a whole response (a body that fails midway reads as what arrived: nothing).
    pub async fn read(response: http::Response<hyper::body::Incoming>) -> Self {
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics with the body text if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Which weir-echo backend answered.
    pub fn backend(&self) -> String {
        self.json()["backend"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// One HTTP/1.1 request on a fresh connection.
pub async fn request(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    method: &str,
) -> Reply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body)).expect("request");
    let res = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    Reply::read(res).await
}
