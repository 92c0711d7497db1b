//! A real Redis Cluster on loopback for the tests: six `redis-server` processes in cluster
//! mode (three primaries, three replicas), each in its own directory of one temporary
//! directory, on free ports (client and bus), built with `redis-cli --cluster create` and
//! killed, with the directory removed, when dropped.
//!
//! ```ignore
//! let mut cluster = RedisCluster::start();
//! let primary = cluster.primary_of("weir:sw:{default/limit/all|alice}");
//! cluster.kill(primary);
//! let promoted = cluster.promoted(primary, slot);
//! ```

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{free_port, redis::parse_commandstats};

/// How long a node may be unreachable before it counts as failed and its replica takes
/// over (`cluster-node-timeout`): short, so a failover takes a few seconds.
pub const NODE_TIMEOUT: Duration = Duration::from_millis(1000);

/// One node of the cluster.
struct Node {
    port: u16,
    child: Option<Child>,
}

/// A running six-node Redis Cluster.
pub struct RedisCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
}

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug)]
pub struct NodeView {
    /// Client port.
    pub port: u16,
    /// Whether it is a primary (`master`) now.
    pub primary: bool,
    /// Whether the cluster counts it as failed.
    pub failed: bool,
    /// Slot ranges it serves (inclusive).
    pub slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Starts six nodes and joins them into a cluster of three primaries with a replica each;
    /// returns once every node sees every slot served and every replica is in sync.
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("weir-redis-cluster-{}", fastrand::u64(..)));
        let mut cluster = Self {
            dir,
            nodes: Vec::new(),
        };
        for _ in 0..6 {
            let (port, bus) = (free_port(), free_port());
            let home = cluster.dir.join(port.to_string());
            std::fs::create_dir_all(&home).expect("temp dir");
            let child = Command::new("redis-server")
                .current_dir(&home)
                .args([
                    "--port",
                    &port.to_string(),
                    "--cluster-port",
                    &bus.to_string(),
                ])
                .args(["--bind", "127.0.0.1", "--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf"])
                .args([
                    "--cluster-node-timeout",
                    &NODE_TIMEOUT.as_millis().to_string(),
                ])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (scripts/test.sh installs it)");
            cluster.nodes.push(Node {
                port,
                child: Some(child),
            });
        }
        for node in &cluster.nodes {
            crate::wait_for_port(([127, 0, 0, 1], node.port).into());
        }
        let addrs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed beside redis-server");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        cluster.wait_healthy(Duration::from_secs(30));
        cluster
    }

    /// The seed nodes as weir-ingress takes them: `redis://127.0.0.1:PORT,…`.
    pub fn seeds(&self) -> String {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect();
        urls.join(",")
    }

    /// Runs `redis-cli -p port args…` and returns its output (empty if the node is down).
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli must be installed beside redis-server");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The ports of the nodes still running.
    pub fn alive(&self) -> Vec<u16> {
        let running = self.nodes.iter().filter(|n| n.child.is_some());
        running.map(|n| n.port).collect()
    }

    /// The hash slot of `key`.
    pub fn slot(&self, key: &str) -> u16 {
        let port = self.alive()[0];
        let out = self.cli(port, &["cluster", "keyslot", key]);
        out.trim()
            .parse()
            .expect("CLUSTER KEYSLOT answers a number")
    }

    /// The cluster as `port` sees it.
    pub fn view(&self, port: u16) -> Vec<NodeView> {
        self.cli(port, &["cluster", "nodes"])
            .lines()
            .filter_map(parse_node)
            .collect()
    }

    /// The primary serving `slot`, as the first running node sees it.
    pub fn primary_of_slot(&self, slot: u16) -> Option<u16> {
        let port = *self.alive().first()?;
        serving(&self.view(port), slot)
    }

    /// The primary serving `key`.
    pub fn primary_of(&self, key: &str) -> u16 {
        let slot = self.slot(key);
        self.primary_of_slot(slot).expect("every slot is served")
    }

    /// The ports of the three primaries.
    pub fn primaries(&self) -> Vec<u16> {
        let view = self.view(self.alive()[0]);
        view.iter()
            .filter(|n| n.primary && !n.slots.is_empty())
            .map(|n| n.port)
            .collect()
    }

    /// Kills the node on `port` with SIGKILL, as a crash would.
    pub fn kill(&mut self, port: u16) {
        let node = self.nodes.iter_mut().find(|n| n.port == port);
        if let Some(mut child) = node.and_then(|n| n.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until every running node agrees that `slot` is served by a running primary other
    /// than `old`, and the cluster is healthy again; returns that primary.
    pub fn promoted(&self, old: u16, slot: u16, within: Duration) -> u16 {
        let deadline = Instant::now() + within;
        loop {
            let owners: Vec<Option<u16>> = self
                .alive()
                .into_iter()
                .map(|p| serving(&self.view(p), slot))
                .collect();
            let ok = self.alive().into_iter().all(|p| {
                self.cli(p, &["cluster", "info"])
                    .contains("cluster_state:ok")
            });
            if let Some(Some(new)) = owners.first() {
                if *new != old && ok && owners.iter().all(|o| *o == Some(*new)) {
                    return *new;
                }
            }
            assert!(
                Instant::now() < deadline,
                "slot {slot} not taken over from {old}: {owners:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Scripts run (`EVAL` and `EVALSHA`) on `port`.
    pub fn scripts_run(&self, port: u16) -> u64 {
        let stats = parse_commandstats(&self.cli(port, &["info", "commandstats"]));
        ["eval", "evalsha"]
            .iter()
            .map(|c| stats.get(*c).copied().unwrap_or(0))
            .sum()
    }

    fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let healthy = self.alive().into_iter().all(|p| {
                let view = self.view(p);
                let served: u32 = view
                    .iter()
                    .flat_map(|n| &n.slots)
                    .map(|(a, b)| u32::from(b - a) + 1)
                    .sum();
                let replicas_in_sync = view.iter().filter(|n| !n.primary).all(|n| {
                    self.cli(n.port, &["info", "replication"])
                        .contains("master_link_status:up")
                });
                self.cli(p, &["cluster", "info"])
                    .contains("cluster_state:ok")
                    && view.len() == 6
                    && view.iter().filter(|n| !n.primary).count() == 3
                    && served == 16384
                    && replicas_in_sync
            });
            if healthy {
                return;
            }
            assert!(Instant::now() < deadline, "the Redis Cluster did not form");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The running primary serving `slot` in `view`.
fn serving(view: &[NodeView], slot: u16) -> Option<u16> {
    view.iter()
        .find(|n| n.primary && !n.failed && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
        .map(|n| n.port)
}

/// `<id> <ip:port@bus> <flags> <primary> <ping> <pong> <epoch> <link> <slot>…`.
fn parse_node(line: &str) -> Option<NodeView> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let port = fields.get(1)?.split('@').next()?.rsplit(':').next()?;
    let flags = fields.get(2)?;
    let slots = fields
        .iter()
        .skip(8)
        .filter(|s| !s.starts_with('['))
        .filter_map(|s| match s.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => s.parse().ok().map(|a| (a, a)),
        })
        .collect();
    Some(NodeView {
        port: port.parse().ok()?,
        primary: flags.contains("master"),
        failed: flags.contains("fail") && !flags.contains("pfail"),
        slots,
    })
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::parse_node;

    #[test]
    fn cluster_nodes_lines_parse() {
        let line =
            "07c3 127.0.0.1:30004@31004 myself,master - 0 0 7 connected 0-5460 9000 [93->-e1]";
        let n = parse_node(line).unwrap();
        assert_eq!(n.port, 30004);
        assert!(n.primary && !n.failed);
        assert_eq!(n.slots, [(0, 5460), (9000, 9000)]);
        let failed = parse_node("a 127.0.0.1:1@2 master,fail - 0 0 1 disconnected").unwrap();
        assert!(failed.failed && failed.slots.is_empty());
        let suspect = parse_node("a 127.0.0.1:1@2 slave,pfail b 0 0 1 connected").unwrap();
        assert!(!suspect.failed && !suspect.primary);
    }
}
