//! The dashboards of `manifests/observability/` against a real Prometheus scraping live Weir
//! processes: a controller, an ingress (routes with an API key, a rate limit, a failing backend
//! behind a circuit breaker, a TLS certificate) and two sidecars under STRICT mTLS with an
//! AccessPolicy. After traffic of every kind, every query of every panel must return a series
//! with a value: no panel asks for a metric or a label Weir does not export.
//!
//! With `WEIR_OBSERVABILITY_PICTURES=DIR`, traffic runs a while longer and
//! `scripts/observability-pictures.py` renders the dashboards from this Prometheus into DIR
//! (the pictures in docs/observability.md).

use std::{path::PathBuf, process::Command, time::Duration};

use bytes::Bytes;
use http::StatusCode;
use weir_e2e::{
    api_key_policy, eventually, gateway, http_route, ingress_tls,
    mesh::{allow_only, echo_app, frontend_and_backend, plaintext, Ports, Sidecar},
    mesh_tls,
    prometheus::Prometheus,
    request, route_policy, service,
    tls::{KeyType, Pki},
    tls_secret, traffic_policy, ConfigDir, Controller, Echo, Weir, API_KEYS,
};

/// The repository root (this crate is `tests/`).
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Every panel query of every dashboard: (dashboard, panel title, PromQL), with Grafana's
/// variables replaced as Grafana would for "All" over the last few minutes.
fn panel_queries() -> Vec<(String, String, String)> {
    let dir = root().join("manifests/observability/dashboards");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("dashboards directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        3,
        "the gateway, mesh and control-plane dashboards"
    );
    let mut queries = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("dashboard");
        let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
        let name = dashboard["title"].as_str().unwrap_or_default().to_string();
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().expect("a PromQL target");
                let expr = expr
                    .replace("$__rate_interval", "2m")
                    .replace("$route", ".*")
                    .replace("$destination", ".*");
                assert!(!expr.contains('$'), "a variable left in {expr}");
                let title = panel["title"].as_str().unwrap_or_default().to_string();
                queries.push((name.clone(), title, expr));
            }
        }
    }
    queries
}

/// The gateway's own objects (namespace `default`): route `shop` behind an API key and a rate
/// limit, route `broken` to a failing backend with a circuit breaker, and an Ingress with TLS.
fn gateway_objects(app: &Echo, failing: &Echo, pki: &Pki) -> String {
    let cert = pki.issue(&["secure.example.com"], KeyType::Ecdsa);
    let to = |service: &str| format!("  - backendRefs: [{{name: {service}, port: 80}}]\n");
    [
        service("app", &[app]),
        service("failing", &[failing]),
        gateway(),
        http_route("shop", &["shop.example.com"], &to("app")),
        http_route("broken", &["broken.example.com"], &to("failing")),
        API_KEYS.to_string(),
        api_key_policy("x-api-key"),
        route_policy(
            "RateLimitPolicy",
            "per-user",
            "shop",
            "  limits:\n  - {name: per-user, key: {header: X-User}, rate: {requests: 3, per: 1m}}\n",
        ),
        traffic_policy(
            "eject",
            "failing",
            "  circuitBreaker: {consecutiveFailures: 2, baseEjectionTime: 60s, maxEjectionPercent: 100}\n",
        ),
        tls_secret("secure-tls", &cert),
        ingress_tls("secure", "secure.example.com", "app", "secure-tls"),
    ]
    .join("---\n")
}

/// The mesh's routes: an Ingress `shop/web` for the frontend, and for the backend, which only
/// the frontend may call (the ingress is refused).
const MESH_INGRESS: &str = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web, namespace: shop}\nspec:\n  ingressClassName: weir\n  rules:\n  - host: web.example.com\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: frontend, port: {number: 80}}}}]}\n  - host: backend.example.com\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: backend, port: {number: 80}}}}]}\n";

/// One round of traffic of every kind; `round` says how many came before (the rate limit's
/// keys change so that some requests pass and some are limited).
async fn traffic(ingress: &Weir, backend: &Sidecar, round: usize) {
    let key = [("x-api-key", "k-mobile-123")];
    for i in 0..4 {
        let user = format!("user-{}", round / 3 + i);
        let headers = [key[0], ("x-user", user.as_str())];
        let r = request(
            ingress.addr,
            "shop.example.com",
            "/",
            &headers,
            Bytes::new(),
            "GET",
        )
        .await;
        assert!(
            [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS].contains(&r.status),
            "{r:?}"
        );
    }
    let anonymous = ingress.get("shop.example.com", "/").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let broken = ingress.get("broken.example.com", "/").await;
    assert_eq!(broken.status, StatusCode::SERVICE_UNAVAILABLE);
    let through = ingress.get("web.example.com", "/call/hello").await;
    assert_eq!(through.status, StatusCode::OK, "{}", through.text());
    let denied = ingress.get("backend.example.com", "/").await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.text());
    let _ = ingress.get("nowhere.example.com", "/").await;
    if round.is_multiple_of(5) {
        // Plaintext to a STRICT sidecar: refused.
        let _ = plaintext(backend.inbound).await;
    }
}

#[tokio::test]
async fn every_dashboard_query_returns_data_from_live_processes() {
    let queries = panel_queries();
    let (app, failing) = (Echo::start("app"), Echo::start("failing"));
    failing.mode("fail").await;
    let pki = Pki::new();
    let (front, back) = (Ports::free(), Ports::free());
    let dir = ConfigDir::new()
        .with("gateway.yaml", &gateway_objects(&app, &failing, &pki))
        .with(
            "workloads.yaml",
            &frontend_and_backend(front.endpoint(), back.endpoint()),
        )
        .with("mesh-ingress.yaml", MESH_INGRESS)
        .with(
            "access.yaml",
            &(allow_only("backend", &["frontend"])
                + &allow_only("frontend", &["weir-system/weir-ingress"])),
        )
        .with("tls.yaml", &mesh_tls("STRICT"));
    let controller = Controller::start(&dir);
    let backend_app = echo_app("backend", None);
    let frontend_app = echo_app("frontend", Some(("backend.shop", front.outbound())));
    let sidecar = |pod: &str, sa: &str, port: u16, ports: Ports| {
        Sidecar::start(&controller, "shop", pod, sa, port, ports, &[])
    };
    let frontend = sidecar("frontend-0", "frontend", frontend_app.port, front);
    let backend = sidecar("backend-0", "backend", backend_app.port, back);
    let token = controller.token_file("weir-system", "weir-ingress");
    let ingress = Weir::connect(&controller, &token, &[]);
    frontend.wait_ready().await;
    backend.wait_ready().await;
    ingress.wait_ready_config().await;

    let prometheus = Prometheus::scrape(&[
        ("weir-controller", controller.admin),
        ("weir-ingress", ingress.admin),
        ("weir-sidecar", frontend.admin),
        ("weir-sidecar", backend.admin),
    ]);
    prometheus.wait_scraped(2, Duration::from_secs(30)).await;

    // Traffic, and a configuration change (a new route: a push to the ingress) while scraped.
    let pictures = std::env::var_os("WEIR_OBSERVABILITY_PICTURES").map(PathBuf::from);
    traffic(&ingress, &backend, 0).await;
    dir.write(
        "later.yaml",
        &http_route(
            "later",
            &["later.example.com"],
            "  - backendRefs: [{name: app, port: 80}]\n",
        ),
    );
    eventually(Duration::from_secs(10), "the new route served", || async {
        (ingress.get("later.example.com", "/").await.status == StatusCode::OK).then_some(())
    })
    .await;
    // Pictures want a few minutes of history; the check needs a few scrapes.
    let rounds: usize = if pictures.is_some() { 600 } else { 10 };
    for round in 1..rounds {
        if round.is_multiple_of(100) {
            // A change every half minute or so, so that propagation shows in every window.
            let host = format!("later-{round}.example.com");
            let rules = "  - backendRefs: [{name: app, port: 80}]\n";
            dir.write("later.yaml", &http_route("later", &[&host], rules));
        }
        traffic(&ingress, &backend, round).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    prometheus.wait_scraped(8, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut empty = Vec::new();
    for (dashboard, panel, expr) in &queries {
        let samples = prometheus.query(expr).await;
        if !samples.iter().any(|s| s.value.is_finite()) {
            empty.push(format!("{dashboard} / {panel}: {expr} → {samples:?}"));
        }
    }
    assert!(
        empty.is_empty(),
        "{} of {} panel queries returned no value:\n{}",
        empty.len(),
        queries.len(),
        empty.join("\n")
    );

    if let Some(out) = pictures {
        let status = Command::new("python3")
            .arg(root().join("scripts/observability-pictures.py"))
            .args(["--prometheus", &prometheus.url(), "--out"])
            .arg(&out)
            .status()
            .expect("run scripts/observability-pictures.py");
        assert!(status.success(), "the pictures were not rendered");
    }
}
