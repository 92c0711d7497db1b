//! Attacks on the mesh from its neighbours, with the real binaries: another pod using a
//! sidecar's inbound to reach the pod's loopback-only sockets (the sidecar's own outbound
//! listener, an app's debug server), another namespace claiming an endpoint's address, and
//! other pods reading a sidecar's admin pages. The network-namespace tests need root, as CI has.

use std::{net::SocketAddr, process::Stdio, time::Duration};

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_e2e::{
    binary,
    mesh::{
        allow_only, echo_app, echo_app_in, frontend_and_backend, strict_shop, Pod, Ports, Sidecar,
    },
    mesh_tls,
    netns::{Lan, Netns},
    request, ConfigDir, Controller,
};

const APP_PORT: u16 = 8080;

fn pod<'a>(name: &'a str, service_account: &'a str) -> Pod<'a> {
    Pod {
        namespace: "shop",
        name,
        service_account,
        app_port: APP_PORT,
    }
}

/// Sends `head` (a whole request) to `addr` and returns what came back: `None` when the
/// connection was refused, else the bytes (empty when closed without an answer).
async fn raw(addr: SocketAddr, head: &str) -> Option<String> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    tcp.write_all(head.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    Some(String::from_utf8_lossy(&answer).into_owned())
}

fn get(host: &str) -> String {
    format!("GET /stolen HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

/// A victim pod (`frontend`, PERMISSIVE: plaintext callers are let in) and a STRICT backend
/// that only the frontend's identity may call, both intercepted by `weir-sidecar init`. The
/// victim's app serves on every address; a debug server of its own listens on loopback only.
#[tokio::test]
async fn another_pod_reaches_the_apps_port_but_not_the_sidecars_own_ports_or_loopback_sockets() {
    let mut lan = Lan::new();
    let (victim, server) = (lan.pod(), lan.pod());
    let endpoint = |netns: &Netns| SocketAddr::from((netns.ip, APP_PORT));
    let strict_backend = "apiVersion: weir.dev/v1alpha1\nkind: MeshTLSPolicy\nmetadata: {name: backend, namespace: shop}\nspec: {selector: {matchLabels: {app: backend}}, mode: STRICT}\n";
    let dir = ConfigDir::new()
        .with(
            "workloads.yaml",
            &frontend_and_backend(endpoint(&victim), endpoint(&server)),
        )
        .with("access.yaml", &allow_only("backend", &["frontend"]))
        .with("tls.yaml", strict_backend);
    let controller = Controller::start_at(&dir, lan.gateway.into(), &[]);
    let _backend_app = echo_app_in(&server, "backend", APP_PORT);
    let _victim_app = echo_app_in(&victim, "frontend", APP_PORT);
    let mut debug = victim
        .command(binary("weir-echo"))
        .args(["--listen", "127.0.0.1:6060", "--name", "debug"])
        .stdout(Stdio::null())
        .spawn()
        .expect("start the debug server");

    let sidecar = binary("weir-sidecar");
    for netns in [&victim, &server] {
        netns.run(&sidecar, &["init"]);
    }
    let victim_sidecar = Sidecar::start_in(&victim, &controller, &pod("frontend-0", "frontend"));
    let server_sidecar = Sidecar::start_in(&server, &controller, &pod("backend-0", "backend"));
    victim_sidecar.wait_ready().await;
    server_sidecar.wait_ready().await;
    let at = |port: u16| SocketAddr::from((victim.ip, port));

    // The app's real port: reached, through the sidecar.
    let reply = raw(at(APP_PORT), &get("frontend.shop"))
        .await
        .unwrap_or_default();
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.contains("\"backend\":\"frontend\""),
        "the app's port is reachable: {reply}\n{}",
        victim_sidecar.logs()
    );

    // The sidecar's outbound port, asking for the STRICT backend under the victim's identity.
    let stolen = raw(at(15001), &get("backend.shop")).await;
    assert!(
        stolen
            .as_deref()
            .is_none_or(|r| !r.contains("\"backend\":\"backend\"")),
        "another pod rode the victim's outbound listener to the backend: {stolen:?}"
    );
    // The sidecar's inbound port itself carries nobody anywhere.
    let inbound = raw(at(15006), &get("backend.shop")).await;
    assert!(
        inbound
            .as_deref()
            .is_none_or(|r| !r.contains("\"backend\":\"backend\"")),
        "{inbound:?}"
    );

    // A socket the app bound to loopback only stays out of reach, as it is without a mesh.
    let reply = raw(at(6060), &get("debug")).await;
    assert!(
        reply
            .as_deref()
            .is_none_or(|r| !r.contains("\"backend\":\"debug\"")),
        "another pod reached a loopback-only debug server: {reply:?}"
    );
    assert!(
        reply
            .as_deref()
            .is_none_or(|r| r.starts_with("HTTP/1.1 502")),
        "{reply:?}"
    );

    // Defence in depth: with rules that do redirect the outbound port (an older init, a CNI's
    // own rules), the sidecar itself refuses to carry a caller to its own listener.
    victim.run(
        "iptables",
        &[
            "-t",
            "nat",
            "-I",
            "WEIR_INBOUND",
            "1",
            "-p",
            "tcp",
            "--dport",
            "15001",
            "-j",
            "REDIRECT",
            "--to-ports",
            "15006",
        ],
    );
    let stolen = raw(at(15001), &get("backend.shop")).await;
    assert!(
        stolen
            .as_deref()
            .is_some_and(|r| !r.contains("\"backend\":\"backend\"")),
        "redirected to the inbound and refused there: {stolen:?}"
    );
    let refused = r#"weir_mesh_refused_connections_total{reason="own-port"}"#;
    assert_eq!(victim_sidecar.metric(refused).await, 1.0);
    let _ = debug.kill();
    let _ = debug.wait();
}

/// Sidecar admin pages: what the kubelet and Prometheus need is served on the pod's address;
/// `/config` (every service, endpoint and expected identity, the pod's policy) only on
/// loopback, inside the pod.
#[tokio::test]
async fn other_pods_get_health_and_metrics_from_the_admin_port_but_not_the_config() {
    let mut lan = Lan::new();
    let server = lan.pod();
    let endpoint = SocketAddr::from((server.ip, APP_PORT));
    let dir = ConfigDir::new()
        .with("workloads.yaml", &frontend_and_backend(endpoint, endpoint))
        .with("tls.yaml", &mesh_tls("STRICT"));
    let controller = Controller::start_at(&dir, lan.gateway.into(), &[]);
    let _app = echo_app_in(&server, "backend", APP_PORT);
    server.run(binary("weir-sidecar"), &["init"]);
    let sidecar = Sidecar::start_in(&server, &controller, &pod("backend-0", "backend"));
    sidecar.wait_ready().await;

    for page in ["/healthz", "/readyz", "/metrics"] {
        let reply = request(sidecar.admin, "admin", page, &[], Default::default(), "GET").await;
        assert_eq!(reply.status, StatusCode::OK, "{page}: {}", reply.text());
    }
    let config = request(
        sidecar.admin,
        "admin",
        "/config",
        &[],
        Default::default(),
        "GET",
    )
    .await;
    assert_eq!(config.status, StatusCode::FORBIDDEN, "{}", config.text());
    assert!(!config.text().contains("backend"), "{}", config.text());

    // Inside the pod, on loopback, the page is there.
    let inside = server.run(
        "curl",
        &["-sS", "--max-time", "5", "http://127.0.0.1:15020/config"],
    );
    let text = String::from_utf8_lossy(&inside.stdout);
    assert!(text.contains("shop/backend"), "{text}");

    // The controller's /status names refused objects: loopback only as well.
    let status = request(
        controller.admin,
        "admin",
        "/status",
        &[],
        Default::default(),
        "GET",
    )
    .await;
    assert_eq!(status.status, StatusCode::FORBIDDEN, "{}", status.text());
    let metrics = request(
        controller.admin,
        "admin",
        "/metrics",
        &[],
        Default::default(),
        "GET",
    )
    .await;
    assert_eq!(metrics.status, StatusCode::OK);
}

/// `zzz`'s EndpointSlice claims the address of `shop/backend`'s endpoint for `zzz`'s own
/// injected pod. `shop/frontend → backend.shop` must still verify `shop/backend` there.
#[tokio::test]
async fn another_namespaces_slice_cannot_change_the_identity_expected_for_an_endpoint() {
    let (front, back) = (Ports::free(), Ports::free());
    let thief = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: backend, namespace: zzz}}\nspec: {{clusterIP: 10.96.0.99, ports: [{{name: http, port: 80}}]}}\n---\n\
apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: backend-1, namespace: zzz, labels: {{kubernetes.io/service-name: backend}}}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints:\n- addresses: [\"{ip}\"]\n  targetRef: {{kind: Pod, name: thief-0, namespace: zzz}}\n---\n\
apiVersion: v1\nkind: Pod\nmetadata: {{name: thief-0, namespace: zzz, annotations: {{weir.dev/injected: 0.1.0}}}}\nspec: {{serviceAccountName: thief, containers: [{{name: app}}]}}\n---\n\
apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: borrowed, namespace: zzz, labels: {{kubernetes.io/service-name: backend}}}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints:\n- addresses: [\"127.0.0.9\"]\n  targetRef: {{kind: Pod, name: backend-0, namespace: shop}}\n",
        port = back.endpoint().port(),
        ip = back.endpoint().ip(),
    );
    let dir = ConfigDir::new()
        .with(
            "workloads.yaml",
            &frontend_and_backend(front.endpoint(), back.endpoint()),
        )
        .with("zzz.yaml", &thief)
        .with("tls.yaml", &mesh_tls("STRICT"));
    let controller = Controller::start(&dir);
    let app = echo_app("backend", None);
    let frontend = Sidecar::shop(&controller, "frontend", app.port, front, &[]);
    let backend = Sidecar::shop(&controller, "backend", app.port, back, &[]);
    frontend.wait_ready().await;
    backend.wait_ready().await;

    for _ in 0..3 {
        let reply = frontend.call("backend.shop", "/orders").await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{}\n{}",
            reply.text(),
            frontend.logs()
        );
        assert_eq!(
            reply.json()["headers"]["x-weir-peer-identity"],
            "spiffe://cluster.local/ns/shop/sa/frontend"
        );
    }
    // zzz's own Service expects zzz's identity at that address, which the backend cannot
    // prove: zzz's callers are refused rather than served by shop's backend.
    let reply = frontend.call("backend.zzz", "/orders").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());

    // The slice naming another namespace's pod is refused, by name and field.
    let status = controller.status().await;
    let text = status.to_string();
    assert!(
        text.contains("EndpointSlice zzz/borrowed")
            && text.contains("endpoints[0].targetRef.namespace"),
        "{text}"
    );
}

/// The injected native sidecar's startupProbe is `/readyz`: it must fail while the sidecar
/// has no certificate or configuration (so the kubelet holds the app back) and pass once both
/// have arrived.
#[tokio::test]
async fn readyz_holds_the_app_back_until_the_sidecar_has_a_certificate_and_its_view() {
    let (front, back) = (Ports::free(), Ports::free());
    let dir = strict_shop(&front, &back);
    let mut controller = Controller::start(&dir);
    controller.kill();
    let app = echo_app("frontend", None);
    let sidecar = Sidecar::shop(&controller, "frontend", app.port, front, &[]);
    for _ in 0..5 {
        let ready = request(
            sidecar.admin,
            "admin",
            "/readyz",
            &[],
            Default::default(),
            "GET",
        )
        .await;
        assert_eq!(
            ready.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "ready with no controller: {}",
            ready.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    controller.restart();
    sidecar.wait_ready().await;
    let reply = sidecar.call("frontend.shop", "/").await;
    assert_ne!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
}
