//! Network namespaces for the transparent-mode tests: a bridge in the test's own namespace and
//! one namespace per pod attached to it by a veth pair, with an address on the bridge's /24
//! and a default route through it (so a Service cluster IP is routable, as in a cluster), in
//! IPv4 and IPv6.
//! Everything is removed on drop. Needs root (CAP_NET_ADMIN), as CI has.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    process::{Command, Output},
};

/// A bridge with pods on it; the test's own namespace is its gateway (`.1`).
pub struct Lan {
    /// The bridge's address, reachable from every pod.
    pub gateway: Ipv4Addr,
    /// Its IPv6 address (`None` on a machine with IPv6 off).
    pub gateway6: Option<Ipv6Addr>,
    bridge: String,
    prefix: String,
    pods: Vec<String>,
}

/// One pod's network namespace.
#[derive(Clone, Debug)]
pub struct Netns {
    /// The namespace's name (`ip netns`).
    pub name: String,
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// Its IPv6 address (`None` on a machine with IPv6 off).
    pub ip6: Option<Ipv6Addr>,
}

impl Lan {
    /// A new bridge on a /24 of 10.241.0.0/16 picked from the process id and a count of the
    /// process's LANs, so concurrent test processes, and the tests of one process, do not
    /// collide. Panics, naming the command, when not root.
    pub fn new() -> Self {
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let made = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 10;
        let id = std::process::id() % 1_000 * 10 + made;
        let subnet = (id % 250) as u8 + 1;
        let lan = Self {
            gateway: Ipv4Addr::new(10, 241, subnet, 1),
            gateway6: ipv6_enabled()
                .then(|| Ipv6Addr::new(0xfd77, 0, 0, subnet.into(), 0, 0, 0, 1)),
            bridge: format!("wbr{id}"),
            prefix: format!("w{id}"),
            pods: Vec::new(),
        };
        let _ = Command::new("ip")
            .args(["link", "del", &lan.bridge])
            .output();
        ip(&["link", "add", &lan.bridge, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("{}/24", lan.gateway),
            "dev",
            &lan.bridge,
        ]);
        // nodad: usable at once, without duplicate address detection's wait.
        if let Some(gateway6) = lan.gateway6 {
            let gateway6 = format!("{gateway6}/64");
            ip(&["-6", "addr", "add", &gateway6, "dev", &lan.bridge, "nodad"]);
        }
        ip(&["link", "set", &lan.bridge, "up"]);
        lan
    }

    /// A new namespace on the bridge with the next address.
    pub fn pod(&mut self) -> Netns {
        let k = self.pods.len() + 2;
        let octets = self.gateway.octets();
        let netns = Netns {
            name: format!("{}p{k}", self.prefix),
            ip: Ipv4Addr::new(octets[0], octets[1], octets[2], k as u8),
            ip6: self.gateway6.map(|gateway| {
                let mut segments = gateway.segments();
                segments[7] = k as u16;
                segments.into()
            }),
        };
        let (host_end, pod_end) = (
            format!("{}v{k}", self.prefix),
            format!("{}e{k}", self.prefix),
        );
        let _ = Command::new("ip")
            .args(["netns", "del", &netns.name])
            .output();
        ip(&["netns", "add", &netns.name]);
        self.pods.push(netns.name.clone());
        ip(&[
            "link", "add", &host_end, "type", "veth", "peer", "name", &pod_end,
        ]);
        ip(&["link", "set", &pod_end, "netns", &netns.name]);
        ip(&["link", "set", &host_end, "master", &self.bridge]);
        ip(&["link", "set", &host_end, "up"]);
        netns.ip(&["link", "set", "lo", "up"]);
        netns.ip(&["link", "set", &pod_end, "name", "eth0"]);
        netns.ip(&["addr", "add", &format!("{}/24", netns.ip), "dev", "eth0"]);
        if let Some(ip6) = netns.ip6 {
            netns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{ip6}/64"),
                "dev",
                "eth0",
                "nodad",
            ]);
        }
        netns.ip(&["link", "set", "eth0", "up"]);
        netns.ip(&["route", "add", "default", "via", &self.gateway.to_string()]);
        if let Some(gateway6) = self.gateway6 {
            netns.ip(&[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &gateway6.to_string(),
            ]);
        }
        netns
    }
}

impl Default for Lan {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth end, and with it the bridge's.
        for name in &self.pods {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

impl Netns {
    /// `program` run inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Runs `program args` inside the namespace to completion; panics with its output when
    /// it fails.
    pub fn run(&self, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Output {
        let out = self
            .command(program)
            .args(args)
            .output()
            .expect("run ip netns exec");
        assert!(
            out.status.success(),
            "{args:?} in {} failed: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn ip(&self, args: &[&str]) {
        self.run("ip", args);
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "`ip {}` failed (the transparent-mode tests need root): {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether this machine has IPv6 on.
pub fn ipv6_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6")
        .is_ok_and(|v| v.trim() == "0")
}
