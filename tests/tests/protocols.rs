//! HTTP/2 (h2c), gRPC trailers, WebSocket upgrades, forwarded headers and tracing headers.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use weir_e2e::{
    gateway, http_route, service, service_with,
    websocket::{assert_frames_echo, open_websocket},
    ConfigDir, Echo, Weir,
};

fn setup(app: &Echo, grpc: &Echo) -> ConfigDir {
    let rules = "  - matches: [{path: {type: PathPrefix, value: /grpc.Echo}}]
    backendRefs: [{name: grpc, port: 80}]
  - backendRefs: [{name: app, port: 80}]
";
    ConfigDir::new()
        .with(
            "svc.yaml",
            &[
                service("app", &[app]),
                service_with(
                    "grpc",
                    &[(grpc.addr, true)],
                    "appProtocol: kubernetes.io/h2c",
                ),
            ]
            .join("---\n"),
        )
        .with("gw.yaml", &gateway())
        .with("route.yaml", &http_route("p", &[], rules)) // any host: h2 clients send :authority 127.0.0.1
}

#[tokio::test]
async fn h2c_clients_and_grpc_with_trailers() {
    let (app, grpc) = (Echo::start("app"), Echo::start("grpc"));
    let dir = setup(&app, &grpc);
    let weir = Weir::start(&dir);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();

    // HTTP/2 from the client, HTTP/1.1 to a plain backend.
    let req = http::Request::get(format!("http://{}/h2", weir.addr))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = client.request(req).await.unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (echo["backend"].as_str(), echo["version"].as_str()),
        (Some("app"), Some("HTTP/1.1"))
    );

    // gRPC over h2c end to end, trailers included.
    let req = http::Request::post(format!("http://{}/grpc.Echo/Say", weir.addr))
        .header("host", "p.example.com")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x05hello")))
        .unwrap();
    let res = client.request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let collected = res.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("gRPC trailers must pass through");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    assert_eq!(
        trailers.get("grpc-message").unwrap(),
        "grpc",
        "the h2c backend answered"
    );
    assert_eq!(&collected.to_bytes()[..], b"\0\0\0\0\x05hello");
}

#[tokio::test]
async fn websocket_upgrade_is_proxied_both_ways() {
    let (app, grpc) = (Echo::start("app"), Echo::start("grpc"));
    let dir = setup(&app, &grpc);
    let weir = Weir::start(&dir);
    let (mut ws, head) = open_websocket(weir.addr, "p.example.com").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert_frames_echo(&mut ws).await;
}

#[tokio::test]
async fn backend_response_fields_reach_the_client_less_hop_by_hop() {
    let (app, grpc) = (Echo::start("app"), Echo::start("grpc"));
    let dir = setup(&app, &grpc);
    let weir = Weir::start(&dir);
    // The backend's fields pass: repeated ones in order; its own request id gives way to the
    // request's, its framing to the gateway's own.
    let reply = weir
        .send(
            "GET",
            "p.example.com",
            "/x?respond=set-cookie:a=1&respond=set-cookie:b=2&respond=x-request-id:backend\
             &respond=cache-control:no-store",
            &[("x-request-id", "from-client")],
            "",
        )
        .await;
    assert_eq!(reply.status, 200);
    let all = |name| -> Vec<&str> {
        let values = reply.headers.get_all(name).iter();
        values.map(|v| v.to_str().unwrap()).collect()
    };
    assert_eq!(all("set-cookie"), ["a=1", "b=2"]);
    assert_eq!(all("x-request-id"), ["from-client"]);
    assert_eq!(all("cache-control"), ["no-store"]);
    assert_eq!(all("x-backend"), ["app"]);
    assert_eq!(all("content-length").len(), 1);
    assert_eq!(all("date").len(), 1);
    assert_eq!(reply.json()["backend"], "app");
    // A field the backend's Connection names, and Keep-Alive, stop at the gateway.
    let reply = weir
        .send(
            "GET",
            "p.example.com",
            "/x?respond=connection:x-hop&respond=x-hop:secret&respond=keep-alive:timeout=5\
             &respond=x-kept:yes",
            &[],
            "",
        )
        .await;
    assert_eq!(reply.status, 200);
    for name in ["x-hop", "keep-alive", "connection"] {
        assert!(reply.header(name).is_none(), "{name}: {:?}", reply.headers);
    }
    assert_eq!(reply.header("x-kept"), Some("yes"));
}

#[tokio::test]
async fn forwarded_ids_and_trace_context() {
    let (app, grpc) = (Echo::start("app"), Echo::start("grpc"));
    let dir = setup(&app, &grpc);
    let weir = Weir::start(&dir);
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let reply = weir
        .send(
            "GET",
            "p.example.com",
            "/x",
            &[
                ("x-forwarded-for", "203.0.113.7"),
                ("traceparent", parent),
                ("connection", "x-hop"),
                ("x-hop", "secret"),
                ("keep-alive", "timeout=5"),
            ],
            "",
        )
        .await;
    let echo = reply.json();
    let h = &echo["headers"];
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "p.example.com");
    assert!(
        h.get("x-hop").is_none() && h.get("keep-alive").is_none(),
        "hop-by-hop headers must not pass: {h}"
    );
    let sent = h["traceparent"].as_str().unwrap();
    assert!(
        sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && sent != parent,
        "{sent}"
    );
    let id = h["x-request-id"].as_str().unwrap();
    assert_eq!(id.len(), 32);
    assert_eq!(
        reply.header("x-request-id"),
        Some(id),
        "the client sees the same request id"
    );

    let kept = weir
        .send(
            "GET",
            "p.example.com",
            "/x",
            &[("x-request-id", "abc-123")],
            "",
        )
        .await;
    assert_eq!(kept.json()["headers"]["x-request-id"], "abc-123");
}

#[tokio::test]
async fn request_fields_follow_the_operators_flags() {
    let (app, grpc) = (Echo::start("app"), Echo::start("grpc"));
    let dir = setup(&app, &grpc);
    let claims = [
        ("x-request-id", "chosen-by-client"),
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-host", "evil.example"),
        ("forwarded", "for=203.0.113.7"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ];

    let start = |request_id, forwarded, trace_context| {
        let flags = ["--request-id", request_id, "--forwarded", forwarded];
        Weir::start_with(
            &dir,
            &[&flags[..], &["--trace-context", trace_context]].concat(),
        )
    };

    // At the edge: a new id whatever the client says, its address claims dropped, no tracing.
    let edge = start("generate", "replace", "off");
    let reply = edge.send("GET", "p.example.com", "/x", &claims, "").await;
    let echo = reply.json();
    let h = &echo["headers"];
    let id = h["x-request-id"].as_str().unwrap();
    assert!(id.len() == 32 && id != "chosen-by-client", "{id}");
    assert_eq!(reply.header("x-request-id"), Some(id));
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-host"], "p.example.com");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert!(h.get("forwarded").is_none(), "{h}");
    assert_eq!(h["traceparent"], claims[4].1, "passed on as sent");
    drop(edge);

    // Adding nothing: what the client sent passes on, and no id is made for a request without.
    let bare = start("preserve", "off", "off");
    let reply = bare.send("GET", "p.example.com", "/x", &claims, "").await;
    let echo = reply.json();
    let h = &echo["headers"];
    assert_eq!(h["x-request-id"], "chosen-by-client");
    assert_eq!(reply.header("x-request-id"), Some("chosen-by-client"));
    assert_eq!(h["x-forwarded-for"], "203.0.113.7");
    assert_eq!(h["x-forwarded-host"], "evil.example");
    assert_eq!(h["forwarded"], "for=203.0.113.7");
    let reply = bare.send("GET", "p.example.com", "/x", &[], "").await;
    let echo = reply.json();
    let h = &echo["headers"];
    for name in [
        "x-request-id",
        "traceparent",
        "x-forwarded-for",
        "x-forwarded-proto",
    ] {
        assert!(h.get(name).is_none(), "{name} added: {h}");
    }
    assert!(reply.header("x-request-id").is_none());
}

#[test]
fn an_unknown_field_mode_is_refused_at_start_with_the_choices() {
    let out = std::process::Command::new(weir_e2e::binary("weir-ingress"))
        .args(["--config-dir", ".", "--forwarded", "strip"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--forwarded")
            && stderr.contains("\"strip\" is not one of: append, replace, off"),
        "{stderr}"
    );
}
