//! Traces: the real gateway and sidecars export a span for each sampled request to an
//! OTLP/HTTP collector on loopback (decoded with OpenTelemetry's own types), parent-based:
//! a caller's sampled flag is followed either way, new traces are sampled as
//! `--trace-sampling` says, and each hop's span is the parent of the next one. A collector
//! that never answers holds no request up.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use weir_e2e::{
    eventually,
    mesh::{echo_app, frontend_and_backend, Ports, Sidecar},
    otlp::Collector,
    request, routed, service_with, ConfigDir, Controller, Echo, Weir,
};

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn shop(app: &Echo) -> ConfigDir {
    routed(app, "shop", "shop.example.com")
}

/// A gateway for `app` exporting to `collector`, sampling new traces at `sampling`.
fn traced(app: &Echo, collector: &Collector, sampling: &str) -> (ConfigDir, Weir) {
    let dir = shop(app);
    let endpoint = collector.endpoint();
    let args = ["--otlp-endpoint", &endpoint, "--trace-sampling", sampling];
    let weir = Weir::start_with(&dir, &args);
    (dir, weir)
}

/// GET `path` of shop.example.com in the caller's sampled trace.
async fn sampled_get(weir: &Weir, path: &str) -> weir_e2e::Reply {
    let headers = [("traceparent", PARENT)];
    weir.send("GET", "shop.example.com", path, &headers, "")
        .await
}

/// The `traceparent` the backend received, from `weir-echo`'s reply.
fn sent_on(reply: &weir_e2e::Reply) -> String {
    reply.json()["headers"]["traceparent"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn a_sampled_request_is_one_server_span_and_the_backend_its_child() {
    let collector = Collector::start().await;
    let app = Echo::start("app");
    let endpoint = collector.endpoint();
    let weir = Weir::start_with(&shop(&app), &["--otlp-endpoint", &endpoint]);
    let reply = sampled_get(&weir, "/orders/7").await;
    assert_eq!(reply.status, StatusCode::OK);
    let spans = collector.wait_spans(1).await;
    assert_eq!(spans.len(), 1, "{spans:?}");
    let span = &spans[0];
    assert_eq!(span.service, "weir-ingress");
    assert_eq!(span.trace_id(), TRACE);
    assert_eq!(
        span.parent_id(),
        "00f067aa0ba902b7",
        "the caller's span is its parent"
    );
    // What the backend got names this span as its parent, sampled.
    assert_eq!(sent_on(&reply), format!("00-{TRACE}-{}-01", span.span_id()));
    assert_eq!(span.span.kind, 2, "SERVER");
    assert_eq!(
        span.attribute("http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(span.attribute("url.path").as_deref(), Some("/orders/7"));
    assert_eq!(
        span.attribute("server.address").as_deref(),
        Some("shop.example.com")
    );
    assert_eq!(
        span.attribute("http.response.status_code").as_deref(),
        Some("200")
    );
    assert!(span.attribute("weir.route").is_some());
    assert!(span.span.end_time_unix_nano >= span.span.start_time_unix_nano);
}

#[tokio::test]
async fn a_failing_backend_makes_an_error_span() {
    let collector = Collector::start().await;
    let app = Echo::start("app");
    // The Service's one endpoint is a port nothing listens on.
    let nowhere = [("127.0.0.1:1".parse().unwrap(), true)];
    let dir = shop(&app).with("svc.yaml", &service_with("app", &nowhere, ""));
    let weir = Weir::start_with(&dir, &["--otlp-endpoint", &collector.endpoint()]);
    let reply = sampled_get(&weir, "/").await;
    assert!(reply.status.is_server_error());
    let span = collector.wait_spans(1).await.remove(0);
    assert_eq!(
        span.span.status.as_ref().map(|s| s.code),
        Some(2),
        "STATUS_CODE_ERROR"
    );
    assert_eq!(
        span.attribute("error.type"),
        Some(reply.status.as_u16().to_string())
    );
}

/// Parent-based sampling: unsampled callers export nothing and are sent on unsampled; new
/// traces follow `--trace-sampling` (0: none, 1: all, each a root span).
#[tokio::test]
async fn sampling_follows_the_caller_or_the_ratio() {
    let collector = Collector::start().await;
    let app = Echo::start("app");
    let (_none_dir, none) = traced(&app, &collector, "0");
    let (_all_dir, all) = traced(&app, &collector, "1");
    let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    for weir in [&none, &all] {
        let reply = weir
            .send(
                "GET",
                "shop.example.com",
                "/",
                &[("traceparent", unsampled)],
                "",
            )
            .await;
        assert!(sent_on(&reply).ends_with("-00"), "{}", sent_on(&reply));
    }
    for _ in 0..5 {
        let reply = none.get("shop.example.com", "/").await;
        assert!(sent_on(&reply).ends_with("-00"));
    }
    // A sampled caller is exported even at 0.
    sampled_get(&none, "/").await;
    let mut sent = Vec::new();
    for _ in 0..5 {
        let reply = all.get("shop.example.com", "/").await;
        assert!(sent_on(&reply).ends_with("-01"));
        sent.push(sent_on(&reply));
    }
    let spans = collector.wait_spans(6).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let spans_later = collector.spans();
    assert_eq!(
        spans_later.len(),
        6,
        "nothing unsampled exported: {spans:?}"
    );
    let roots: Vec<_> = spans_later
        .iter()
        .filter(|s| s.parent_id().is_empty())
        .collect();
    assert_eq!(roots.len(), 5);
    for traceparent in sent {
        assert!(roots
            .iter()
            .any(|s| traceparent == format!("00-{}-{}-01", s.trace_id(), s.span_id())));
    }
    assert!(spans_later.iter().any(|s| s.trace_id() == TRACE));
}

/// Abuse and failure: a collector that takes connections and never answers. Requests are not
/// held up (each is answered as if there were no collector), and the gateway keeps exporting
/// (bounded: spans past its queue are dropped, never buffered without end).
#[tokio::test]
async fn a_collector_that_never_answers_holds_no_request_up() {
    let collector = Collector::stalled().await;
    let app = Echo::start("app");
    let (_dir, weir) = traced(&app, &collector, "1");
    let mut handles = Vec::new();
    for _ in 0..200 {
        handles.push(weir.get_in_background("shop.example.com", "/"));
    }
    for handle in handles {
        let reply = tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .expect("a request waited on the collector")
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK);
    }
    eventually(Duration::from_secs(10), "an export attempted", || async {
        (collector.requests() > 0).then_some(())
    })
    .await;
    // And the gateway stops within its drain, the stalled export abandoned.
    let mut weir = weir;
    weir.signal("TERM");
    assert!(weir.wait_exit(Duration::from_secs(20)).is_some(), "stopped");
}

#[tokio::test]
async fn a_bad_otlp_endpoint_is_refused_at_start() {
    let app = Echo::start("app");
    let dir = shop(&app);
    let mut weir = Weir::spawn(&dir, &["--otlp-endpoint", "collector:4318"]);
    let code = weir.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(1));
    let stderr = weir.stderr().join("\n");
    assert!(
        stderr.contains("--otlp-endpoint") && stderr.contains("http://"),
        "{stderr}"
    );
    let mut weir = Weir::spawn(&dir, &["--trace-sampling", "2"]);
    assert_eq!(weir.wait_exit(Duration::from_secs(10)), Some(2));
    assert!(weir.stderr().join("\n").contains("not a ratio from 0 to 1"));
}

/// The mesh: an app's call through its sidecar's outbound side and the callee's sidecar's
/// inbound side is two spans, CLIENT then SERVER, each the parent of the next hop, in the
/// caller's trace.
#[tokio::test]
async fn each_sidecar_hop_is_a_span_of_the_callers_trace() {
    let collector = Collector::start().await;
    let (front, back) = (Ports::free(), Ports::free());
    let dir = ConfigDir::new().with(
        "workloads.yaml",
        &frontend_and_backend(front.endpoint(), back.endpoint()),
    );
    let controller = Controller::start(&dir);
    let app = echo_app("backend", None);
    let endpoint = collector.endpoint();
    let traced = ["--otlp-endpoint", endpoint.as_str()];
    let frontend = Sidecar::shop(&controller, "frontend", app.port, front, &traced);
    let backend = Sidecar::shop(&controller, "backend", app.port, back, &traced);
    frontend.wait_ready().await;
    backend.wait_ready().await;
    let headers = [("traceparent", PARENT)];
    let reply = request(
        frontend.outbound,
        "backend.shop",
        "/orders",
        &headers,
        Bytes::new(),
        "GET",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let spans = collector.wait_spans(2).await;
    let client = spans
        .iter()
        .find(|s| s.span.kind == 3)
        .expect("a CLIENT span");
    let server = spans
        .iter()
        .find(|s| s.span.kind == 2)
        .expect("a SERVER span");
    for span in [client, server] {
        assert_eq!(span.service, "weir-sidecar");
        assert_eq!(span.trace_id(), TRACE);
    }
    assert_eq!(client.parent_id(), "00f067aa0ba902b7");
    assert_eq!(
        server.parent_id(),
        client.span_id(),
        "the inbound hop is the outbound's child"
    );
    assert_eq!(
        sent_on(&reply),
        format!("00-{TRACE}-{}-01", server.span_id())
    );
    assert_eq!(
        client.attribute("weir.route").as_deref(),
        Some("shop/backend")
    );
    // Unsampled calls pass through both sidecars unsampled and export nothing.
    let unsampled = [(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
    )];
    let reply = request(
        frontend.outbound,
        "backend.shop",
        "/",
        &unsampled,
        Bytes::new(),
        "GET",
    )
    .await;
    assert!(sent_on(&reply).ends_with("-00"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(collector.spans().len(), 2);
}
