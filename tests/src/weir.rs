//! A running `weir-ingress` for the tests: started from a configuration directory or joined to
//! a controller, with its listeners, admin pages, access log and signals at hand.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::StatusCode;

use crate::{
    binary, collect_lines, eventually, free_port, metric, request, ConfigDir, Controller, Reply,
};

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
        Self::start_with_env(dir, extra, &[])
    }

    /// Same, with extra flags and environment variables. A port picked for it that another
    /// process took in the meantime (tests share the machine) is picked again.
    pub fn start_with_env(dir: &ConfigDir, extra: &[&str], env: &[(&str, &str)]) -> Self {
        for _ in 0..3 {
            let mut weir = Self::spawn_with_env(dir, extra, env);
            match weir.try_wait_listening() {
                Ok(()) => return weir,
                Err(stderr) if stderr.contains("Address already in use") => continue,
                Err(stderr) => panic!("weir-ingress exited:\n{stderr}"),
            }
        }
        panic!("weir-ingress found its ports taken three times");
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
        if let Err(stderr) = self.try_wait_listening() {
            panic!("weir-ingress exited:\n{stderr}");
        }
    }

    /// Waits until it listens; its stderr if it exited first.
    fn try_wait_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Its last lines may still be on their way.
                std::thread::sleep(Duration::from_millis(50));
                return Err(format!("{status}\n{}", self.stderr().join("\n")));
            }
            if std::net::TcpStream::connect(self.admin).is_ok()
                && std::net::TcpStream::connect(self.addr).is_ok()
            {
                return Ok(());
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

    /// Why objects are refused (each with file, object and field: the rest of the directory
    /// serves), once some are (at most 5 s).
    pub async fn refusals(&self) -> Vec<serde_json::Value> {
        eventually(Duration::from_secs(5), "a refused object", || async {
            let config = self.admin_get("/config").await.json();
            config["reload"]["refused"]
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
