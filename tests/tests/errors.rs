//! What a client gets when things go wrong: a status, a short body, and `x-weir-error`.

use std::{net::SocketAddr, time::Duration};

use weir_e2e::{free_port, gateway, http_route, service, service_with, ConfigDir, Echo, Weir};

fn route(name: &str, backend: &str, extra: &str) -> String {
    http_route(
        name,
        &[&format!("{name}.example.com")],
        &format!("  - backendRefs: [{{name: {backend}, port: 80}}]\n{extra}"),
    )
}

#[tokio::test]
async fn each_failure_has_its_status_and_reason() {
    let app = Echo::start("app");
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let dir = ConfigDir::new()
        .with(
            "svc.yaml",
            &[
                service("app", &[&app]),
                service_with("dead", &[(dead, true)], ""),
                service_with("unready", &[(app.addr, false)], ""),
            ]
            .join("---\n"),
        )
        .with("gw.yaml", &gateway())
        .with(
            "routes.yaml",
            &[
                route("refused", "dead", ""),
                route("unready", "unready", ""),
                route("missing", "no-such-service", ""),
                route("slow", "app", "    timeouts: {request: 300ms}\n"),
                route("small", "app", "").replace("name: small, namespace: default}", "name: small, namespace: default, annotations: {weir.dev/max-request-body: 1Ki}}"),
            ]
            .join("---\n"),
        );
    let weir = Weir::start(&dir);
    let cases = [
        ("nothing.example.com", "/", 404, "no-route"),
        ("refused.example.com", "/", 502, "connect-failed"),
        ("unready.example.com", "/", 503, "no-healthy-endpoint"),
        ("missing.example.com", "/", 500, "backend-not-found"),
        ("slow.example.com", "/sleep/3000", 504, "timeout"),
    ];
    for (host, path, status, reason) in cases {
        let reply = weir.get(host, path).await;
        assert_eq!(reply.status, status, "{host}{path}: {:?}", reply.body);
        assert_eq!(reply.header("x-weir-error"), Some(reason), "{host}{path}");
        assert!(
            !reply.body.is_empty() && reply.body.len() < 100,
            "a short body"
        );
    }
    assert_eq!(weir.get("slow.example.com", "/sleep/10").await.status, 200);

    let big = weir
        .send("POST", "small.example.com", "/", &[], vec![b'x'; 4096])
        .await;
    assert_eq!(big.status, 413);
    assert_eq!(big.header("x-weir-error"), Some("body-too-large"));
    let fits = weir
        .send("POST", "small.example.com", "/", &[], vec![b'x'; 512])
        .await;
    assert_eq!(fits.status, 200);
    assert_eq!(fits.json()["body_bytes"], 512);

    let huge = "h".repeat(70 * 1024);
    let too_big = weir
        .send("GET", "small.example.com", "/", &[("x-huge", &huge)], "")
        .await;
    assert_eq!(too_big.status, 431);
    assert_eq!(too_big.header("x-weir-error"), Some("headers-too-large"));

    let metrics = String::from_utf8_lossy(&weir.admin_get("/metrics").await.body).into_owned();
    assert!(
        metrics.contains("weir_proxy_errors_total{reason=\"connect-failed\",side=\"upstream\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("weir_proxy_errors_total{reason=\"timeout\",side=\"upstream\"} 1"));
}

#[tokio::test]
async fn a_slow_client_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = Echo::start("app");
    let dir = ConfigDir::new()
        .with("svc.yaml", &service("app", &[&app]))
        .with("gw.yaml", &gateway())
        .with("r.yaml", &route("a", "app", ""));
    let weir = Weir::start_with(&dir, &["--header-read-timeout", "500ms"]);
    let mut conn = tokio::net::TcpStream::connect(weir.addr).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: a.example.com\r\n")
        .await
        .unwrap(); // never finishes
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was still open after 5s");
}

/// `--config-dir`: an invalid object at startup is refused, named with its file, object and
/// field, and the rest of the directory serves.
#[tokio::test]
async fn an_invalid_object_at_startup_is_refused_with_the_field_named_and_the_rest_serves() {
    let app = Echo::start("app");
    let dir = ConfigDir::new()
        .with("gw.yaml", &gateway())
        .with("svc.yaml", &service("app", &[&app]))
        .with(
            "good.yaml",
            &http_route("good", &["a.example.com"], "  - backendRefs: [{name: app, port: 80}]\n"),
        )
        .with(
            "bad.yaml",
            &http_route("broken", &["b.example.com"], "  - matches: [{path: {type: RegularExpression, value: \"/(unclosed\"}}]\n    backendRefs: [{name: app, port: 80}]\n"),
        );
    let weir = Weir::start(&dir);
    assert_eq!(weir.get("a.example.com", "/").await.status, 200);
    let refused = weir.get("b.example.com", "/").await;
    assert_eq!(refused.status, 404);
    assert_eq!(refused.header("x-weir-error"), Some("no-route"));
    let stderr = weir.stderr().join("\n");
    let line = stderr
        .lines()
        .find(|l| l.contains("object refused"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{stderr}"));
    for part in [
        "WARN",
        "bad.yaml",
        "HTTPRoute default/broken",
        "spec.rules[0].matches[0].path.value",
    ] {
        assert!(line.contains(part), "{part} not in {line}");
    }
    let refusals = weir.refusals().await;
    assert_eq!(refusals[0]["object"], "HTTPRoute default/broken");
}

/// The cause of a backend failure reaches the debug log with the endpoint, at most once a
/// second however often it happens; the client still sees only its kind.
#[tokio::test]
async fn a_backend_failure_is_logged_with_its_cause_and_endpoint_rate_limited() {
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let dir = ConfigDir::new()
        .with("svc.yaml", &service_with("dead", &[(dead, true)], ""))
        .with("gw.yaml", &gateway())
        .with("routes.yaml", &route("refused", "dead", ""));
    let debug = [("WEIR_LOG", "info,weir_http::upstream=debug")];
    let weir = Weir::start_with_env(&dir, &[], &debug);
    let started = std::time::Instant::now();
    for _ in 0..20 {
        let reply = weir.get("refused.example.com", "/").await;
        assert_eq!(reply.status, 502);
        assert!(!reply.text().contains("refused"), "{}", reply.text());
    }
    let failures = || {
        let lines = weir.stderr().into_iter();
        lines
            .filter(|l| l.contains("backend exchange failed"))
            .collect::<Vec<_>>()
    };
    let first = weir_e2e::eventually(Duration::from_secs(5), "a failure logged", || async {
        failures().into_iter().next()
    })
    .await;
    // (The log is colored even into a pipe, so the field's name and value are matched apart.)
    assert!(
        first.contains("endpoint") && first.contains(&dead.to_string()),
        "{first}"
    );
    assert!(first.contains("Connection refused"), "{first}");
    let lines = failures().len() as u64;
    assert!(
        lines <= started.elapsed().as_secs() + 1,
        "{lines} lines for 20 failures"
    );
}
