//! Config reload without restart: changes are live within a second, bad changes are refused
//! with the file, object and field named, and no request or connection is lost meanwhile.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_e2e::{gateway, http_route, service, ConfigDir, Echo, Weir};

fn tagged_route(tag: usize) -> String {
    http_route(
        "live",
        &["live.example.com"],
        &format!(
            "  - filters:\n    - type: ResponseHeaderModifier\n      responseHeaderModifier: {{set: [{{name: x-config, value: \"{tag}\"}}]}}\n    backendRefs: [{{name: app, port: 80}}]\n"
        ),
    )
}

#[tokio::test]
async fn a_valid_change_is_live_within_a_second_and_a_bad_one_is_refused() {
    let (app, other) = (Echo::start("app"), Echo::start("other"));
    let dir = ConfigDir::new()
        .with(
            "svc.yaml",
            &[service("app", &[&app]), service("other", &[&other])].join("---\n"),
        )
        .with("gw.yaml", &gateway())
        .with("route.yaml", &tagged_route(0));
    let weir = Weir::start(&dir);
    assert_eq!(
        weir.get("live.example.com", "/").await.header("x-config"),
        Some("0")
    );

    let v = weir.version().await;
    dir.write("route.yaml", &tagged_route(1));
    let took = weir.wait_version(v + 1, Duration::from_secs(1)).await;
    assert!(took <= Duration::from_secs(1));
    assert_eq!(
        weir.get("live.example.com", "/").await.header("x-config"),
        Some("1")
    );

    // A bad edit: an invalid regex. The route is refused, naming file, object and field, and
    // its last good version keeps serving.
    dir.write(
        "route.yaml",
        &http_route("live", &["live.example.com"], "  - matches: [{path: {type: RegularExpression, value: \"(\"}}]\n    backendRefs: [{name: other, port: 80}]\n"),
    );
    let errors = weir.refusals().await;
    let error = &errors[0];
    assert!(
        error["location"]["file"]
            .as_str()
            .unwrap()
            .ends_with("route.yaml"),
        "{error}"
    );
    assert_eq!(error["object"], "HTTPRoute default/live");
    assert_eq!(error["field"], "spec.rules[0].matches[0].path.value");
    let still = weir.get("live.example.com", "/").await;
    assert_eq!(
        (still.status.as_u16(), still.header("x-config")),
        (200, Some("1"))
    );
    let log = weir.stderr().join("\n");
    assert!(
        log.contains("object refused") && log.contains("route.yaml"),
        "{log}"
    );
    let metrics = String::from_utf8_lossy(&weir.admin_get("/metrics").await.body).into_owned();
    assert!(
        metrics.contains("weir_config_refused_objects 1"),
        "{metrics}"
    );

    // Fixing it is picked up again, and nothing is refused any more.
    let v = weir.version().await;
    dir.write("route.yaml", &tagged_route(2));
    weir.wait_version(v + 1, Duration::from_secs(2)).await;
    assert_eq!(
        weir.get("live.example.com", "/").await.header("x-config"),
        Some("2")
    );
    let config = weir.admin_get("/config").await.json();
    assert_eq!(
        config["reload"]["refused"],
        serde_json::json!([]),
        "{config}"
    );
}

#[tokio::test]
async fn fifty_changes_under_load_fail_no_request_and_drop_no_connection() {
    let app = Echo::start("app");
    let dir = ConfigDir::new()
        .with("svc.yaml", &service("app", &[&app]))
        .with("gw.yaml", &gateway())
        .with("route.yaml", &tagged_route(0));
    let weir = Weir::start(&dir);

    // An open WebSocket-style upgraded connection that must survive every reload.
    let mut ws = tokio::net::TcpStream::connect(weir.addr).await.unwrap();
    ws.write_all(b"GET /ws HTTP/1.1\r\nHost: live.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").await.unwrap();
    let mut head = vec![0u8; 1024];
    let n = ws.read(&mut head).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 101"));

    // Load: keep-alive requests back to back on pooled connections.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let addr = weir.addr;
    let load = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            let (mut ok, mut failed) = (0u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let req = http::Request::get(format!("http://{addr}/"))
                    .header("host", "live.example.com")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                match client.request(req).await {
                    Ok(res) if res.status() == 200 => {
                        let _ = res.into_body().collect().await;
                        ok += 1;
                    }
                    Ok(res) => failed.push(res.status().to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        })
    };

    let first = weir.version().await;
    for i in 1..=50 {
        dir.write("route.yaml", &tagged_route(i));
        weir.wait_version(first + i as u64, Duration::from_secs(2))
            .await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} requests failed during reloads: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 50, "only {ok} requests were made");
    assert_eq!(
        weir.get("live.example.com", "/").await.header("x-config"),
        Some("50")
    );

    ws.write_all(b"still here").await.unwrap();
    let mut echoed = [0u8; 10];
    tokio::time::timeout(Duration::from_secs(5), ws.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"still here");

    // The load client reused its keep-alive connection(s): reloads closed none of them.
    let metrics = String::from_utf8_lossy(&weir.admin_get("/metrics").await.body).into_owned();
    let accepted: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("weir_downstream_connections_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(
        accepted <= 5,
        "{accepted} connections for one client: reloads dropped connections"
    );
}

/// The directory itself going away (deleted, a volume unmounted) is a change refused whole:
/// the last good configuration keeps serving, and `/config` says why.
#[tokio::test]
async fn a_deleted_config_directory_keeps_the_last_configuration_serving() {
    let backend = Echo::start("backend");
    let dir = ConfigDir::new()
        .with("svc.yaml", &service("backend", &[&backend]))
        .with("gw.yaml", &gateway())
        .with(
            "route.yaml",
            &http_route(
                "web",
                &["example.com"],
                "  - backendRefs: [{name: backend, port: 80}]\n",
            ),
        );
    let weir = Weir::start(&dir);
    assert_eq!(weir.get("example.com", "/").await.status, 200);
    std::fs::remove_dir_all(&dir.path).unwrap();
    let errors = weir_e2e::eventually(Duration::from_secs(5), "the change refused", || async {
        let config = weir.admin_get("/config").await.json();
        let errors = config["reload"]["errors"].as_array()?.clone();
        (!errors.is_empty()).then_some(errors)
    })
    .await;
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("cannot read directory"),
        "{errors:?}"
    );
    assert_eq!(weir.get("example.com", "/").await.status, 200);
    assert_eq!(weir.version().await, 1);
}
