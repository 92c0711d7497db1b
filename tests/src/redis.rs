//! A real `redis-server` on loopback for the tests, killed when dropped.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::free_port;

/// A running redis-server.
pub struct Redis {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl Redis {
    /// Starts one on a free port (no persistence).
    pub fn start() -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut redis = Self { addr, child: None };
        redis.restart();
        redis
    }

    /// `redis://addr`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// How many times each command ran (`INFO commandstats`, lowercase names).
    pub fn commands(&self) -> std::collections::BTreeMap<String, u64> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.addr.port().to_string(), "info", "commandstats"])
            .output()
            .expect("redis-cli must be installed beside redis-server");
        parse_commandstats(&String::from_utf8_lossy(&out.stdout))
    }

    /// Kills it (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.addr.port().to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(self.addr).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Calls per command in `INFO commandstats` output (lowercase names).
pub fn parse_commandstats(stats: &str) -> std::collections::BTreeMap<String, u64> {
    stats
        .lines()
        .filter_map(|l| {
            let (name, stats) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.strip_prefix("calls=")?.split(',').next()?;
            Some((name.to_string(), calls.parse().ok()?))
        })
        .collect()
}
