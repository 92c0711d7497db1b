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

/// The nat rules of a namespace, without iptables-save's comments and counters.
fn nat_rules(netns: &Netns) -> String {
    let out = netns.run("iptables-save", &["-t", "nat"]);
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
    let dir = ConfigDir::new()
        .with(
            "workloads.yaml",
            &frontend_and_backend(endpoint(&client), endpoint(&server)),
        )
        .with("tls.yaml", &mesh_tls("STRICT"));
    let controller = Controller::start_at(&dir, lan.gateway.into(), &[]);

    let _app = echo_app_in(&server, "backend", APP_PORT);

    // The init container's job, in each pod; a second run changes nothing.
    let sidecar = binary("weir-sidecar");
    for netns in [&client, &server] {
        netns.run(&sidecar, &["init"]);
    }
    let rules = nat_rules(&server);
    assert!(rules.contains("WEIR_INBOUND"), "{rules}");
    server.run(&sidecar, &["init"]);
    assert_eq!(nat_rules(&server), rules, "init is idempotent");

    let client_sidecar = Sidecar::start_in(&client, &controller, &pod("frontend-0", "frontend"));
    let server_sidecar = Sidecar::start_in(&server, &controller, &pod("backend-0", "backend"));
    client_sidecar.wait_ready().await;
    server_sidecar.wait_ready().await;

    // curl, as an ordinary user, to the Service's cluster IP: nothing in it knows of the mesh.
    let out = tokio::task::spawn_blocking(move || {
        client
            .command("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .args([
                "curl",
                "-sS",
                "--max-time",
                "10",
                "http://10.96.0.20/orders",
            ])
            .output()
            .expect("run curl")
    })
    .await
    .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl failed: {}\nclient sidecar:\n{}\nserver sidecar:\n{}",
        String::from_utf8_lossy(&out.stderr),
        client_sidecar.logs(),
        server_sidecar.logs()
    );
    let reply: serde_json::Value = serde_json::from_str(&body).expect("echo's JSON");
    assert_eq!(reply["backend"], "backend");
    assert_eq!(reply["path"], "/orders");
    assert_eq!(
        reply["headers"]["x-weir-peer-identity"], FRONTEND,
        "the call arrived over mTLS from the client pod's identity"
    );
    let handshakes = r#"weir_mesh_tls_handshakes_total{direction="outbound",result="ok"}"#;
    assert!(client_sidecar.metric(handshakes).await >= 1.0);
    let outbound = format!(
        r#"weir_mesh_requests_total{{destination="shop/backend",direction="outbound",peer="{BACKEND}",status="2xx"}}"#
    );
    assert_eq!(client_sidecar.metric(&outbound).await, 1.0);

    // Inbound interception: plaintext straight to the pod's app port meets the sidecar, and
    // STRICT refuses it (the app itself listens on every address and would have answered).
    assert_eq!(plaintext(endpoint(&server)).await, "");
    let refused = r#"weir_mesh_refused_connections_total{reason="plaintext"}"#;
    assert_eq!(server_sidecar.metric(refused).await, 1.0);
}
