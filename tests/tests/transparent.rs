//! Transparent interception for real: two pods as network namespaces on a bridge, `weir-sidecar
//! init` installing the iptables rules inside each, sidecars running as the proxy user, and an
//! unmodified client calling a Service's cluster IP with plain HTTP. Needs root, as CI has.

use std::net::SocketAddr;

use weir_e2e::{
    binary,
    mesh::{echo_app_in, frontend_and_backend, plaintext, Pod, Sidecar},
    mesh_tls,
    netns::{Lan, Netns},
    ConfigDir, Controller,
};

const FRONTEND: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
const BACKEND: &str = "spiffe://cluster.local/ns/shop/sa/backend";
const APP_PORT: u16 = 8080;

/// The nat rules of a namespace, IPv4 and IPv6, without the comments and counters.
fn nat_rules(netns: &Netns) -> String {
    let mut out = netns.run("iptables-save", &["-t", "nat"]);
    out.stdout
        .extend(netns.run("ip6tables-save", &["-t", "nat"]).stdout);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with(':'))
        .collect::<Vec<_>>()
        .join("\n")
}

fn pod<'a>(name: &'a str, service_account: &'a str) -> Pod<'a> {
    Pod {
        namespace: "shop",
        name,
        service_account,
        app_port: APP_PORT,
    }
}

#[tokio::test]
async fn an_unmodified_clients_plain_call_to_a_cluster_ip_is_intercepted_and_arrives_over_mtls() {
    let mut lan = Lan::new();
    let (client, server) = (lan.pod(), lan.pod());
    let endpoint = |netns: &Netns| SocketAddr::from((netns.ip, APP_PORT));
    // The backend Service is dual-stack; its pod's endpoint is IPv4.
    let objects = frontend_and_backend(endpoint(&client), endpoint(&server)).replace(
        "clusterIP: 10.96.0.20,",
        "clusterIP: 10.96.0.20, clusterIPs: [10.96.0.20, \"fd96::20\"],",
    );
    assert!(objects.contains("fd96::20"));
    let dir = ConfigDir::new()
        .with("workloads.yaml", &objects)
        .with("tls.yaml", &mesh_tls("STRICT"));
    let controller = Controller::start_at(&dir, lan.gateway.into(), &[]);

    let _app = echo_app_in(&server, "backend", APP_PORT);

    // The init container's job, in each pod; a second run changes nothing.
    let sidecar = binary("weir-sidecar");
    for netns in [&client, &server] {
        netns.run(&sidecar, &["init"]);
    }
    let rules = nat_rules(&server);
    let families = if server.ip6.is_some() { 2 } else { 1 };
    assert_eq!(
        rules.matches("-j REDIRECT --to-ports 15006").count(),
        families,
        "{rules}"
    );
    server.run(&sidecar, &["init"]);
    assert_eq!(nat_rules(&server), rules, "init is idempotent");

    let client_sidecar = Sidecar::start_in(&client, &controller, &pod("frontend-0", "frontend"));
    let server_sidecar = Sidecar::start_in(&server, &controller, &pod("backend-0", "backend"));
    client_sidecar.wait_ready().await;
    server_sidecar.wait_ready().await;

    // curl, as an ordinary user, to the Service's cluster IPs (IPv4 and IPv6): nothing in it
    // knows of the mesh.
    let mut calls = vec![("http://10.96.0.20/orders", "/orders")];
    if server.ip6.is_some() {
        calls.push(("http://[fd96::20]/orders-over-ipv6", "/orders-over-ipv6"));
    } else {
        eprintln!("IPv6 is off on this machine: IPv4 only");
    }
    for &(url, path) in &calls {
        let out = curl_as_nobody(&client, url).await;
        assert!(
            out.status.success(),
            "curl {url} failed: {}\nclient sidecar:\n{}\nserver sidecar:\n{}",
            String::from_utf8_lossy(&out.stderr),
            client_sidecar.logs(),
            server_sidecar.logs()
        );
        let reply: serde_json::Value = serde_json::from_slice(&out.stdout).expect("echo's JSON");
        assert_eq!(reply["backend"], "backend");
        assert_eq!(reply["path"], path);
        assert_eq!(
            reply["headers"]["x-weir-peer-identity"], FRONTEND,
            "{url} arrived over mTLS from the client pod's identity"
        );
    }
    let handshakes = r#"weir_mesh_tls_handshakes_total{direction="outbound",result="ok"}"#;
    assert!(client_sidecar.metric(handshakes).await >= 1.0);
    let outbound = format!(
        r#"weir_mesh_requests_total{{destination="shop/backend",direction="outbound",peer="{BACKEND}",status="2xx"}}"#
    );
    assert_eq!(client_sidecar.metric(&outbound).await, calls.len() as f64);

    // Inbound interception, IPv4 and IPv6: plaintext straight to the pod's app port meets the
    // sidecar, and STRICT refuses it (the app itself listens on every address and would have
    // answered).
    let mut pod_addrs = vec![endpoint(&server)];
    pod_addrs.extend(server.ip6.map(|ip6| SocketAddr::from((ip6, APP_PORT))));
    for addr in &pod_addrs {
        assert_eq!(plaintext(*addr).await, "", "{addr}");
    }
    let refused = r#"weir_mesh_refused_connections_total{reason="plaintext"}"#;
    assert_eq!(server_sidecar.metric(refused).await, pod_addrs.len() as f64);
}

/// `curl -sS URL` inside `netns` as `nobody`.
async fn curl_as_nobody(netns: &Netns, url: &str) -> std::process::Output {
    let (netns, url) = (netns.clone(), url.to_string());
    tokio::task::spawn_blocking(move || {
        netns
            .command("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .args(["curl", "-sS", "-g", "--max-time", "10", &url])
            .output()
            .expect("run curl")
    })
    .await
    .unwrap()
}
