//! Graceful shutdown, the admin pages and the access log.

use std::time::Duration;

use weir_e2e::{eventually, gateway, http_route, service, ConfigDir, Echo, Weir};

fn setup(app: &Echo) -> ConfigDir {
    ConfigDir::new()
        .with("svc.yaml", &service("app", &[app]))
        .with("gw.yaml", &gateway())
        .with(
            "route.yaml",
            &http_route(
                "r",
                &["r.example.com"],
                "  - backendRefs: [{name: app, port: 80}]\n",
            ),
        )
}

#[tokio::test]
async fn sigterm_fails_readiness_finishes_in_flight_requests_and_exits_zero() {
    let app = Echo::start("app");
    let dir = setup(&app);
    let mut weir = Weir::start_with(&dir, &["--shutdown-delay", "1s", "--drain-timeout", "10s"]);
    assert_eq!(weir.admin_get("/readyz").await.status, 200);

    let addr = weir.addr;
    let slow = weir.get_in_background("r.example.com", "/sleep/2000");
    tokio::time::sleep(Duration::from_millis(300)).await;
    weir.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        weir.admin_get("/readyz").await.status,
        503,
        "not ready once shutdown begins"
    );
    // Still accepting during the shutdown delay, so nothing is refused while load balancers catch up.
    assert_eq!(weir.get("r.example.com", "/").await.status, 200);

    let reply = slow.await.unwrap();
    assert_eq!(reply.status, 200, "the in-flight request completed");
    assert_eq!(weir.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn drain_is_bounded() {
    let app = Echo::start("app");
    let dir = setup(&app);
    let mut weir = Weir::start_with(&dir, &["--drain-timeout", "500ms"]);
    let _stuck = weir.get_in_background("r.example.com", "/sleep/30000");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = std::time::Instant::now();
    weir.signal("TERM");
    assert_eq!(weir.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "drain took {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn admin_pages_and_access_log() {
    let app = Echo::start("app");
    let dir = setup(&app);
    let weir = Weir::start(&dir);
    let reply = weir
        .send(
            "GET",
            "r.example.com",
            "/orders?token=hunter2",
            &[
                ("authorization", "Bearer sekrit-token"),
                ("cookie", "session=sekrit-cookie"),
                ("x-api-key", "sekrit-key"),
            ],
            "",
        )
        .await;
    assert_eq!(reply.status, 200);
    let id = reply.header("x-request-id").unwrap().to_string();
    assert_eq!(weir.get("r.example.com", "/nope").await.status, 200);
    assert_eq!(weir.get("zzz.example.com", "/").await.status, 404);

    assert_eq!(weir.admin_get("/healthz").await.status, 200);
    assert_eq!(weir.admin_get("/readyz").await.status, 200);
    let config = weir.admin_get("/config").await.json();
    assert!(config["version"].as_u64().unwrap() >= 1);
    assert_eq!(
        config["snapshot"]["routes"][0]["name"],
        "httproute:default/r:0"
    );

    let metrics = String::from_utf8_lossy(&weir.admin_get("/metrics").await.body).into_owned();
    for needle in [
        "weir_requests_total{route=\"httproute:default/r:0\",status=\"2xx\"} 2",
        "weir_requests_total{route=\"none\",status=\"4xx\"} 1",
        "weir_request_duration_seconds_bucket{route=\"httproute:default/r:0\",status=\"2xx\"",
        "weir_overhead_seconds_count{route=\"httproute:default/r:0\"} 2",
        "weir_overhead_seconds_count{route=\"none\"} 1",
        "weir_upstream_connections",
        "weir_config_version 1",
        "weir_config_reloads_total{result=\"ok\"} 1",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }

    // Access log lines arrive shortly after the responses.
    let lines = eventually(Duration::from_secs(5), "three access log lines", || async {
        Some(weir.access_log()).filter(|lines| lines.len() >= 3)
    })
    .await;
    let first = lines
        .iter()
        .find(|l| l["request_id"] == id.as_str())
        .expect("a line for the request");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["host"], "r.example.com");
    assert_eq!(first["path"], "/orders");
    assert_eq!(first["status"], 200);
    assert_eq!(first["route"], "httproute:default/r:0");
    assert_eq!(first["backend"], "default/app:80");
    assert!(first["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(first["bytes_out"].as_u64().unwrap() > 0);
    let everything = weir.stdout().join("\n");
    for secret in ["sekrit-token", "sekrit-cookie", "sekrit-key", "hunter2"] {
        assert!(
            !everything.contains(secret),
            "{secret} leaked into the access log"
        );
    }
    let miss = lines.iter().find(|l| l["status"] == 404).unwrap();
    assert_eq!(miss["error"], "no-route");
}
