//! The mesh end to end with the real binaries: client → weir-ingress → sidecar → frontend →
//! sidecar → sidecar → backend, mTLS on both mesh hops (seen in metrics and the peer identity
//! headers), the mTLS modes, AccessPolicy, certificate rotation and a controller outage.

use std::{net::SocketAddr, time::Duration};

use http::StatusCode;
use weir_e2e::{
    eventually,
    mesh::{
        allow_only, echo_app, frontend_and_backend, plaintext, web_route, workload, App, Ports,
        Sidecar, Workload,
    },
    mesh_tls,
    tls::{https_app, KeyType, Pki},
    websocket::{assert_frames_echo, open_websocket},
    ConfigDir, Controller, Weir,
};

const INGRESS: &str = "spiffe://cluster.local/ns/weir-system/sa/weir-ingress";
const FRONTEND: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
const INTRUDER: &str = "spiffe://cluster.local/ns/shop/sa/intruder";

/// The local mesh: frontend calling backend, both behind sidecars, the ingress in front.
struct Mesh {
    dir: ConfigDir,
    controller: Controller,
    ingress: Weir,
    frontend: Sidecar,
    backend: Sidecar,
    ports: (Ports, Ports),
    _apps: Vec<App>,
}

fn objects(front: &Ports, back: &Ports) -> String {
    frontend_and_backend(front.endpoint(), back.endpoint())
        + &web_route("web.example.com", "frontend")
}

fn policies() -> String {
    allow_only("backend", &["frontend"]) + &allow_only("frontend", &["weir-system/weir-ingress"])
}

/// A frontend and a backend sidecar under STRICT, from `workloads`, both in front of one
/// backend app (the tests that use it only call out of the frontend).
struct Pair {
    frontend: Sidecar,
    backend: Sidecar,
    _app: App,
    _controller: Controller,
    _dir: ConfigDir,
}

impl Pair {
    async fn strict(workloads: &str, front: Ports, back: Ports) -> Self {
        let dir = ConfigDir::new()
            .with("workloads.yaml", workloads)
            .with("tls.yaml", &mesh_tls("STRICT"));
        let controller = Controller::start(&dir);
        let app = echo_app("backend", None);
        let sidecar = |pod: &str, sa: &str, ports: Ports| {
            Sidecar::start(&controller, "shop", pod, sa, app.port, ports, &[])
        };
        let frontend = sidecar("frontend-0", "frontend", front);
        let backend = sidecar("backend-0", "backend", back);
        frontend.wait_ready().await;
        backend.wait_ready().await;
        Self {
            frontend,
            backend,
            _app: app,
            _controller: controller,
            _dir: dir,
        }
    }
}

impl Mesh {
    async fn start(mode: &str, controller_flags: &[&str]) -> Self {
        let (front, back) = (Ports::free(), Ports::free());
        let dir = ConfigDir::new()
            .with("workloads.yaml", &objects(&front, &back))
            .with("access.yaml", &policies())
            .with("tls.yaml", &mesh_tls(mode));
        let controller = Controller::start_with(&dir, controller_flags);
        let backend_app = echo_app("backend", None);
        let frontend_app = echo_app("frontend", Some(("backend.shop", front.outbound())));
        let sidecar = |pod: &str, sa: &str, app: &App, ports: Ports| {
            Sidecar::start(&controller, "shop", pod, sa, app.port, ports, &[])
        };
        let frontend = sidecar("frontend-0", "frontend", &frontend_app, front);
        let backend = sidecar("backend-0", "backend", &backend_app, back);
        let token = controller.token_file("weir-system", "weir-ingress");
        let ingress = Weir::connect(&controller, &token, &[]);
        frontend.wait_ready().await;
        backend.wait_ready().await;
        ingress.wait_ready_config().await;
        Self {
            dir,
            controller,
            ingress,
            frontend,
            backend,
            ports: (front, back),
            _apps: vec![backend_app, frontend_app],
        }
    }

    /// client → ingress → frontend (its sidecar) → backend (through both sidecars).
    async fn through(&self) -> weir_e2e::Reply {
        self.ingress.get("web.example.com", "/call/hello").await
    }
}

#[tokio::test]
async fn a_request_crosses_the_mesh_with_mtls_on_both_hops_and_strict_refuses_plaintext() {
    let mesh = Mesh::start("STRICT", &[]).await;
    let reply = mesh.through().await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["backend"], "frontend");
    assert_eq!(
        body["peer"], INGRESS,
        "the frontend was called over mTLS by the ingress"
    );
    let called = &body["called"];
    assert_eq!(called["status"], 200, "{called}");
    assert_eq!(called["body"]["backend"], "backend");
    assert_eq!(
        called["body"]["headers"]["x-weir-peer-identity"], FRONTEND,
        "the backend was called over mTLS by the frontend"
    );

    // The metrics say the same: handshakes on each side of each hop, requests by identity.
    let ingress_out = mesh
        .ingress
        .metric(r#"weir_mesh_tls_handshakes_total{direction="outbound",result="ok"}"#)
        .await;
    assert!(ingress_out.unwrap_or(0.0) >= 1.0);
    let inbound = |peer: &str, to: &str| {
        format!(
            r#"weir_mesh_requests_total{{destination="{to}",direction="inbound",peer="{peer}",status="2xx"}}"#
        )
    };
    assert_eq!(
        mesh.frontend
            .metric(&inbound(INGRESS, "shop/frontend"))
            .await,
        1.0
    );
    assert_eq!(
        mesh.backend
            .metric(&inbound(FRONTEND, "shop/backend"))
            .await,
        1.0
    );
    let outbound = r#"weir_mesh_requests_total{destination="shop/backend",direction="outbound",peer="spiffe://cluster.local/ns/shop/sa/backend",status="2xx"}"#;
    assert_eq!(mesh.frontend.metric(outbound).await, 1.0);
    for sidecar in [&mesh.frontend, &mesh.backend] {
        let expiry = sidecar
            .metric("weir_workload_certificate_expiry_timestamp_seconds")
            .await;
        assert!(
            expiry > weir_proxy::unix_now() as f64,
            "a certificate is held"
        );
    }

    // STRICT: a plaintext client gets nothing from the backend's sidecar.
    let answer = plaintext(mesh.ports.1.endpoint()).await;
    assert_eq!(answer, "", "plaintext must be refused under STRICT");
    let refused = mesh
        .backend
        .metric(r#"weir_mesh_refused_connections_total{reason="plaintext"}"#)
        .await;
    assert_eq!(refused, 1.0);
}

#[tokio::test]
async fn permissive_accepts_plaintext_and_mtls_and_access_policy_denies_the_wrong_identity() {
    let mesh = Mesh::start("PERMISSIVE", &[]).await;

    // An intruder: meshed, with a valid identity of its own, calling the backend.
    let ports = Ports::free();
    let intruder_yaml = workload(&Workload {
        name: "intruder",
        cluster_ip: "10.96.0.30",
        endpoint: ports.endpoint(),
        meshed: true,
    });
    mesh.dir.write("intruder.yaml", &intruder_yaml);
    let app = echo_app("intruder", None);
    let intruder = Sidecar::start(
        &mesh.controller,
        "shop",
        "intruder-0",
        "intruder",
        app.port,
        ports,
        &[],
    );
    intruder.wait_ready().await;
    let denied = intruder.call("backend.shop", "/secrets").await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.text());
    assert_eq!(denied.header("x-weir-error"), Some("access-denied"));
    let series = format!(
        r#"weir_mesh_access_denied_total{{peer="{INTRUDER}",policy="AccessPolicy shop/backend"}}"#
    );
    assert_eq!(mesh.backend.metric(&series).await, 1.0);
    // The denial is counted before it is logged, and its line is read from stderr by a thread
    // of the test's own: wait for it rather than race it.
    eventually(Duration::from_secs(5), "the denial logged", || async {
        mesh.backend.logs().contains("access denied").then_some(())
    })
    .await;
    // The right identity is allowed.
    let allowed = mesh.frontend.call("backend", "/ok").await;
    assert_eq!(allowed.status, StatusCode::OK, "{}", allowed.text());
    assert_eq!(allowed.json()["headers"]["x-weir-peer-identity"], FRONTEND);

    // PERMISSIVE: plaintext is accepted (the policy then sees no identity: denied)…
    let answer = plaintext(mesh.ports.1.endpoint()).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    // …and without the policy, the app answers, and a forged identity header is dropped.
    mesh.dir.write(
        "access.yaml",
        &allow_only("frontend", &["weir-system/weir-ingress"]),
    );
    let answer = eventually(Duration::from_secs(10), "policy removed", || async {
        let answer = plaintext(mesh.ports.1.endpoint()).await;
        answer.starts_with("HTTP/1.1 200").then_some(answer)
    })
    .await;
    assert!(!answer.contains("spiffe://forged"), "{answer}");
    let reply = mesh.through().await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "mTLS still works: {}",
        reply.text()
    );
    assert_eq!(
        reply.json()["called"]["body"]["headers"]["x-weir-peer-identity"],
        FRONTEND
    );
}

/// A WebSocket from the frontend's app to the backend crosses both sidecars (the hop between
/// them mTLS) and carries frames both ways.
#[tokio::test]
async fn a_websocket_crosses_the_mesh() {
    let mesh = Mesh::start("STRICT", &[]).await;
    let (mut ws, head) = open_websocket(mesh.frontend.outbound, "backend.shop").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert_frames_echo(&mut ws).await;
    let inbound = format!(
        r#"weir_mesh_requests_total{{destination="shop/backend",direction="inbound",peer="{FRONTEND}",status="1xx"}}"#
    );
    assert_eq!(mesh.backend.metric(&inbound).await, 1.0);
}

/// Active health checks reach meshed endpoints the way requests do, over mTLS: under STRICT
/// they pass, and the endpoint stays in.
#[tokio::test]
async fn health_checks_of_a_meshed_backend_pass_under_strict() {
    let mesh = Mesh::start("STRICT", &[]).await;
    mesh.dir.write(
        "policy.yaml",
        "apiVersion: weir.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: backend, namespace: shop}\nspec:\n  targetRefs: [{group: \"\", kind: Service, name: backend}]\n  healthCheck: {path: /healthz, interval: 100ms, timeout: 500ms, unhealthyThreshold: 2, healthyThreshold: 1}\n",
    );
    let series = |result: &str| {
        format!(r#"weir_health_checks_total{{cluster="shop/backend:80",result="{result}"}}"#)
    };
    let passed = series("pass");
    eventually(Duration::from_secs(10), "health checks passing", || async {
        (mesh.frontend.metric(&passed).await >= 5.0).then_some(())
    })
    .await;
    assert_eq!(mesh.frontend.metric(&series("fail")).await, 0.0);
    let reply = mesh.frontend.call("backend.shop", "/after-checks").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let checks = format!(
        r#"weir_mesh_requests_total{{destination="shop/backend",direction="inbound",peer="{FRONTEND}",status="2xx"}}"#
    );
    assert!(
        mesh.backend.metric(&checks).await >= 6.0,
        "checks arrived over mTLS"
    );
}

/// The kubelet's probes, rewritten by the injector to the sidecar's admin port, reach the
/// app's own HTTP and HTTPS probes (the app's certificate unchecked, as the kubelet does) and
/// bring back the app's verdict, while STRICT refuses the kubelet's plaintext on the inbound.
#[tokio::test]
async fn app_probes_reach_http_and_https_probes_under_strict() {
    let pki = Pki::new();
    let https = https_app(&pki.issue(&["app.internal"], KeyType::Ecdsa)).await;
    let app = echo_app("backend", None);
    let probes = serde_json::json!({
        "/app-health/app/livez": {"port": app.port, "path": "/healthz"},
        "/app-health/app/readyz": {"port": https.port(), "path": "/healthz", "scheme": "HTTPS"},
        "/app-health/app/startupz": {"port": https.port(), "path": "/warming-up", "scheme": "HTTPS"},
        "/app-health/web/readyz": {"port": app.port, "path": "/status/503",
            "httpHeaders": [{"name": "X-Probe", "value": "kubelet"}]},
    })
    .to_string();
    let back = Ports::free();
    let dir = ConfigDir::new()
        .with(
            "workloads.yaml",
            &workload(&Workload {
                name: "backend",
                cluster_ip: "10.96.0.20",
                endpoint: back.endpoint(),
                meshed: true,
            }),
        )
        .with("tls.yaml", &mesh_tls("STRICT"));
    let controller = Controller::start(&dir);
    let sidecar = Sidecar::start(
        &controller,
        "shop",
        "backend-0",
        "backend",
        app.port,
        back,
        &["--app-probes", &probes],
    );
    sidecar.wait_ready().await;
    for (probe, status) in [
        ("/app-health/app/livez", StatusCode::OK),
        ("/app-health/app/readyz", StatusCode::OK),
        ("/app-health/app/startupz", StatusCode::SERVICE_UNAVAILABLE),
        ("/app-health/web/readyz", StatusCode::SERVICE_UNAVAILABLE),
        ("/app-health/nope/livez", StatusCode::NOT_FOUND),
    ] {
        let reply = sidecar.admin_get(probe).await;
        assert_eq!(reply.status, status, "{probe}: {}", reply.text());
    }
    assert_eq!(plaintext(back.endpoint()).await, "");
}

/// gRPC between meshed services: h2c from the app, HTTP/2 inside mTLS between the sidecars
/// (the Service port says `kubernetes.io/h2c`), h2c to the backend app; the trailers arrive.
#[tokio::test]
async fn grpc_crosses_the_mesh_over_http2_with_trailers() {
    use http_body_util::{BodyExt, Full};
    let (front, back) = (Ports::free(), Ports::free());
    let yaml = frontend_and_backend(front.endpoint(), back.endpoint()).replace(
        "ports: [{name: http, port: 80}]",
        "ports: [{name: http, port: 80, appProtocol: kubernetes.io/h2c}]",
    );
    let pair = Pair::strict(&yaml, front, back).await;
    let (frontend, backend) = (&pair.frontend, &pair.backend);

    // The app's gRPC client: h2c prior knowledge to its sidecar, :authority the Service.
    let tcp = tokio::net::TcpStream::connect(frontend.outbound)
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = http::Request::post("http://backend.shop/grpc.Echo/Say")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(bytes::Bytes::from_static(b"\0\0\0\0\x05hello")))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("gRPC trailers");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    assert_eq!(trailers.get("grpc-message").unwrap(), "backend");
    assert_eq!(&collected.to_bytes()[..], b"\0\0\0\0\x05hello");
    let inbound = format!(
        r#"weir_mesh_requests_total{{destination="shop/backend",direction="inbound",peer="{FRONTEND}",status="2xx"}}"#
    );
    assert_eq!(backend.metric(&inbound).await, 1.0);
}

#[tokio::test]
async fn the_mesh_keeps_serving_while_the_controller_is_down() {
    let mut mesh = Mesh::start("STRICT", &[]).await;
    assert_eq!(mesh.through().await.status, StatusCode::OK);
    mesh.controller.kill();
    let mut failures = 0;
    for _ in 0..50 {
        if mesh.through().await.status != StatusCode::OK {
            failures += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(failures, 0, "requests failed with the controller down");
    assert!(mesh.frontend.running() && mesh.backend.running());
}

/// 30 s certificates under continuous traffic for two minutes: each sidecar renews several
/// times (at half life) and no request fails.
#[tokio::test]
async fn certificates_rotate_under_traffic_without_a_failed_request() {
    let mesh = Mesh::start("STRICT", &["--cert-lifetime", "30s"]).await;
    let expiry = "weir_workload_certificate_expiry_timestamp_seconds";
    let first = mesh.backend.metric(expiry).await;
    let (mut ok, mut failed) = (0u32, Vec::new());
    let mut seen = std::collections::BTreeSet::new();
    let until = std::time::Instant::now() + Duration::from_secs(120);
    while std::time::Instant::now() < until {
        let reply = mesh.through().await;
        if reply.status == StatusCode::OK {
            ok += 1;
        } else {
            failed.push(format!("{} {}", reply.status, reply.text()));
        }
        seen.insert(mesh.backend.metric(expiry).await as u64);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 100, "only {ok} requests in two minutes");
    assert!(
        seen.len() >= 5,
        "the backend's certificate should have been renewed every ~15 s: expiries seen {seen:?} (first {first})"
    );
}

/// A TCP relay to `target` that holds each connection's first bytes back for `delay`: a slow
/// network or a busy caller.
async fn slow_relay(target: SocketAddr, delay: Duration) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut caller, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut server = tokio::net::TcpStream::connect(target).await?;
                tokio::time::sleep(delay).await;
                tokio::io::copy_bidirectional(&mut caller, &mut server).await
            });
        }
    });
    addr
}

/// Under STRICT the inbound waits for a ClientHello as long as a handshake may take: a caller
/// whose first bytes arrive well after the 100 ms protocol detection timeout is served.
#[tokio::test]
async fn strict_waits_for_a_client_hello_that_arrives_late() {
    let (front, back) = (Ports::free(), Ports::free());
    let relay = slow_relay(back.endpoint(), Duration::from_millis(400)).await;
    let workloads = frontend_and_backend(front.endpoint(), relay);
    let pair = Pair::strict(&workloads, front, back).await;
    let (frontend, backend) = (&pair.frontend, &pair.backend);

    let reply = frontend.call("backend.shop", "/late").await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}\n{}",
        reply.text(),
        backend.logs()
    );
    assert_eq!(reply.json()["headers"]["x-weir-peer-identity"], FRONTEND);
}
