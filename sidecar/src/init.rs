//! `weir-sidecar init`: the iptables rules of transparent mode, in the pod's network
//! namespace. Inbound TCP goes to the inbound port, outbound TCP to the outbound port, except
//! the proxy's own traffic (its user id), loopback, and excluded ports. Running it twice leaves
//! the same rules: Weir's chains are created if missing and refilled, and the jumps into them
//! are added only when absent.

use std::process::Command;

/// What to intercept.
#[derive(Clone, Debug)]
pub struct Interception {
    /// Where inbound connections are redirected.
    pub inbound_port: u16,
    /// Where outbound connections are redirected.
    pub outbound_port: u16,
    /// The sidecar's user id: its own connections are never redirected.
    pub proxy_uid: u32,
    /// Inbound ports left alone (the sidecar's own ports always are: admin, so probes reach
    /// it, and inbound and outbound, so no caller is carried to them).
    pub exclude_inbound: Vec<u16>,
    /// Outbound destination ports left alone.
    pub exclude_outbound: Vec<u16>,
}

/// Weir's chain for inbound connections.
pub const INBOUND_CHAIN: &str = "WEIR_INBOUND";
/// Weir's chain for outbound connections.
pub const OUTBOUND_CHAIN: &str = "WEIR_OUTPUT";

/// One iptables invocation (arguments after `iptables`), and whether it may fail harmlessly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Must succeed.
    Run(Vec<String>),
    /// Creates a chain; "already exists" is fine.
    CreateChain(Vec<String>),
    /// Appends a rule unless `-C` finds it already there.
    AppendOnce(Vec<String>),
}

/// An append's arguments as the check for that rule (`-A` becomes `-C`).
fn check(append: &[String]) -> Vec<String> {
    append
        .iter()
        .map(|x| if x == "-A" { "-C".into() } else { x.clone() })
        .collect()
}

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

impl Interception {
    /// The steps, in order.
    pub fn steps(&self) -> Vec<Step> {
        let mut steps = Vec::new();
        for chain in [INBOUND_CHAIN, OUTBOUND_CHAIN] {
            steps.push(Step::CreateChain(args(&format!("-t nat -N {chain}"))));
            steps.push(Step::Run(args(&format!("-t nat -F {chain}"))));
        }
        steps.push(Step::AppendOnce(args(&format!(
            "-t nat -A PREROUTING -p tcp -j {INBOUND_CHAIN}"
        ))));
        steps.push(Step::AppendOnce(args(&format!(
            "-t nat -A OUTPUT -p tcp -j {OUTBOUND_CHAIN}"
        ))));
        let rule =
            |chain: &str, rest: String| Step::Run(args(&format!("-t nat -A {chain} {rest}")));
        for port in &self.exclude_inbound {
            steps.push(rule(
                INBOUND_CHAIN,
                format!("-p tcp --dport {port} -j RETURN"),
            ));
        }
        steps.push(rule(
            INBOUND_CHAIN,
            format!("-p tcp -j REDIRECT --to-ports {}", self.inbound_port),
        ));
        steps.push(rule(
            OUTBOUND_CHAIN,
            format!("-m owner --uid-owner {} -j RETURN", self.proxy_uid),
        ));
        steps.push(rule(OUTBOUND_CHAIN, "-o lo -j RETURN".into()));
        for port in &self.exclude_outbound {
            steps.push(rule(
                OUTBOUND_CHAIN,
                format!("-p tcp --dport {port} -j RETURN"),
            ));
        }
        steps.push(rule(
            OUTBOUND_CHAIN,
            format!("-p tcp -j REDIRECT --to-ports {}", self.outbound_port),
        ));
        steps
    }
}

impl Step {
    /// As a shell line, for `--dry-run`.
    pub fn describe(&self, iptables: &str) -> String {
        match self {
            Step::Run(a) => format!("{iptables} {}", a.join(" ")),
            Step::CreateChain(a) => format!("{iptables} {} 2>/dev/null || true", a.join(" ")),
            Step::AppendOnce(a) => format!(
                "{iptables} {} 2>/dev/null || {iptables} {}",
                check(a).join(" "),
                a.join(" ")
            ),
        }
    }

    /// Runs it.
    pub fn apply(&self, iptables: &str) -> Result<(), String> {
        let run = |a: &[String]| {
            Command::new(iptables)
                .args(a)
                .output()
                .map_err(|e| format!("cannot run {iptables}: {e}"))
        };
        match self {
            Step::Run(a) => {
                let out = run(a)?;
                if !out.status.success() {
                    return Err(format!(
                        "{iptables} {} failed: {}",
                        a.join(" "),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
            Step::CreateChain(a) => {
                let out = run(a)?;
                let stderr = String::from_utf8_lossy(&out.stderr);
                if !out.status.success() && !stderr.contains("exists") {
                    return Err(format!(
                        "{iptables} {} failed: {}",
                        a.join(" "),
                        stderr.trim()
                    ));
                }
            }
            Step::AppendOnce(a) => {
                if !run(&check(a))?.status.success() {
                    Step::Run(a.clone()).apply(iptables)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_redirect_both_ways_except_the_proxy_loopback_and_excluded_ports() {
        let steps = Interception {
            inbound_port: 15006,
            outbound_port: 15001,
            proxy_uid: 1337,
            exclude_inbound: vec![15020, 22],
            exclude_outbound: vec![5432],
        }
        .steps();
        let lines: Vec<String> = steps.iter().map(|s| s.describe("iptables")).collect();
        let text = lines.join("\n");
        for expected in [
            "iptables -t nat -N WEIR_INBOUND 2>/dev/null || true",
            "iptables -t nat -F WEIR_OUTPUT",
            "iptables -t nat -C PREROUTING -p tcp -j WEIR_INBOUND 2>/dev/null || iptables -t nat -A PREROUTING -p tcp -j WEIR_INBOUND",
            "iptables -t nat -A WEIR_INBOUND -p tcp --dport 15020 -j RETURN",
            "iptables -t nat -A WEIR_INBOUND -p tcp -j REDIRECT --to-ports 15006",
            "iptables -t nat -A WEIR_OUTPUT -m owner --uid-owner 1337 -j RETURN",
            "iptables -t nat -A WEIR_OUTPUT -o lo -j RETURN",
            "iptables -t nat -A WEIR_OUTPUT -p tcp --dport 5432 -j RETURN",
            "iptables -t nat -A WEIR_OUTPUT -p tcp -j REDIRECT --to-ports 15001",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        // Exclusions come before the catch-all redirect of their chain.
        let at = |s: &str| lines.iter().position(|l| l.contains(s)).unwrap();
        assert!(at("--dport 22 -j RETURN") < at("--to-ports 15006"));
        assert!(at("--uid-owner 1337") < at("--to-ports 15001"));
    }
}
