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
pub mod cluster;
mod controller;
pub mod grpc;
pub mod idp;
pub mod image;
pub mod limits;
pub mod mesh;
pub mod netns;
pub mod otlp;
pub mod prometheus;
pub mod redis;
pub mod redis_cluster;
pub mod shots;
pub mod stub;
pub mod tls;
pub mod websocket;
mod weir;
mod yaml;

pub use controller::{certify_request, csr_for, next_sidecar_view, Controller};
pub use weir::Weir;
pub use yaml::{
    api_key_policy, ca_config_map, gateway, http_route, ingress_tls, mesh_tls, route_policy,
    routed, service, service_at, service_with, tls_secret, traffic_policy, ConfigDir, API_KEYS,
    MESH,
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
/// between now and the moment a server binds it, as they could a port from `bind(0)`. A port
/// is handed out once per test process: a test's own listener port and the ports picked for
/// the proxy it starts never coincide.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = fastrand::u16(20_000..32_000);
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
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

    /// Starts a backend that reports `name` over TLS (HTTP/2 or HTTP/1.1 by ALPN) with
    /// `issued` as its certificate, on a free loopback port.
    pub fn start_tls(name: &str, issued: &tls::Issued) -> Self {
        let dir = std::env::temp_dir().join(format!("weir-echo-tls-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).expect("a directory for the certificate");
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&cert, &issued.chain).expect("write the certificate");
        std::fs::write(&key, &issued.key).expect("write the key");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new(binary("weir-echo"))
            .args(["--listen", &addr.to_string(), "--name", name])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
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
