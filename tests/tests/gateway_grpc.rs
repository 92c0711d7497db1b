//! GRPCRoute, as the upstream conformance tests GRPCExactMethodMatching and
//! GRPCRouteHeaderMatching check it (kubernetes-sigs/gateway-api, conformance/tests): the same
//! routes and calls against the real `weir-ingress`, a gRPC client speaking h2c, each call's
//! backend told by the `grpc-message` trailer the echo backend sends. The backends' Services
//! name no protocol: a GRPCRoute makes them HTTP/2.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use std::time::Duration;

use weir_e2e::{eventually, gateway, service, ConfigDir, Echo, Weir};

const SERVICE: &str = "gateway_api_conformance.grpc_echo.grpcecho.GrpcEcho";

fn grpc_route(name: &str, rules: &str) -> String {
    format!("apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules:\n{rules}")
}

fn setup(rules: &str) -> (Vec<Echo>, ConfigDir) {
    let backends = Echo::group(&["grpc-v1", "grpc-v2", "grpc-v3"]);
    let services: Vec<String> = backends
        .iter()
        .zip(["grpc-v1", "grpc-v2", "grpc-v3"])
        .map(|(b, name)| service(name, &[b]))
        .collect();
    let dir = ConfigDir::new()
        .with("svc.yaml", &services.join("---\n"))
        .with("gw.yaml", &gateway())
        .with("route.yaml", &grpc_route("grpc", rules));
    (backends, dir)
}

/// One unary call: `(grpc-status, the backend that answered)`.
async fn call(weir: &Weir, method: &str, headers: &[(&str, &str)]) -> (String, String) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let mut req = http::Request::post(format!("http://{}/{SERVICE}/{method}", weir.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let res = client.request(req).await.unwrap();
    assert_eq!(
        res.status(),
        200,
        "gRPC answers HTTP 200, its status in grpc-status"
    );
    let head = res.headers().clone();
    let collected = res.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let field = |name: &str| {
        trailers
            .get(name)
            .or_else(|| head.get(name))
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    (field("grpc-status"), field("grpc-message"))
}

/// GRPCExactMethodMatching
#[tokio::test]
async fn grpc_exact_method_matching() {
    let rules = format!(
        "  - matches: [{{method: {{service: {SERVICE}, method: Echo}}}}]\n    backendRefs: [{{name: grpc-v1, port: 80}}]\n  - matches: [{{method: {{service: {SERVICE}, method: EchoTwo}}}}]\n    backendRefs: [{{name: grpc-v2, port: 80}}]\n"
    );
    let (_backends, dir) = setup(&rules);
    let weir = Weir::start(&dir);
    assert_eq!(
        call(&weir, "Echo", &[]).await,
        ("0".into(), "grpc-v1".into())
    );
    assert_eq!(
        call(&weir, "EchoTwo", &[]).await,
        ("0".into(), "grpc-v2".into())
    );
    // No rule: UNIMPLEMENTED, from the gateway.
    assert_eq!(call(&weir, "EchoThree", &[]).await.0, "12");
    // The backends are spoken to over HTTP/2 although their Services do not say so, through
    // clusters of their own: an HTTPRoute to the same Service port still speaks HTTP/1.1.
    let config = weir.admin_get("/config").await.json();
    let clusters = &config["snapshot"]["clusters"];
    for name in ["default/grpc-v1:80+h2c", "default/grpc-v2:80+h2c"] {
        assert_eq!(clusters[name]["protocol"], "h2c", "{name}: {clusters}");
    }
}

/// A GRPCRoute and an HTTPRoute to one Service port: each is spoken to in its own protocol, so
/// a tenant's GRPCRoute cannot turn another's HTTP/1.1 traffic into HTTP/2.
#[tokio::test]
async fn a_grpcroute_leaves_an_httproute_to_the_same_port_on_http1() {
    let rules = format!(
        "  - matches: [{{method: {{service: {SERVICE}}}}}]\n    backendRefs: [{{name: grpc-v1, port: 80}}]\n"
    );
    let (_backends, dir) = setup(&rules);
    let dir = dir.with(
        "http.yaml",
        &weir_e2e::http_route(
            "web",
            &["web.example.com"],
            "  - backendRefs: [{name: grpc-v1, port: 80}]\n",
        ),
    );
    let weir = Weir::start(&dir);
    assert_eq!(
        call(&weir, "Echo", &[]).await,
        ("0".into(), "grpc-v1".into())
    );
    let reply = weir.get("web.example.com", "/").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["version"], "HTTP/1.1", "{}", reply.text());
    let config = weir.admin_get("/config").await.json();
    let clusters = &config["snapshot"]["clusters"];
    assert_eq!(
        clusters["default/grpc-v1:80"]["protocol"], "http1",
        "{clusters}"
    );
    assert_eq!(
        clusters["default/grpc-v1:80+h2c"]["protocol"], "h2c",
        "{clusters}"
    );
}

/// GRPCRouteHeaderMatching
#[tokio::test]
async fn grpc_route_header_matching() {
    let rules = "  - matches: [{headers: [{name: version, value: one}]}]\n    backendRefs: [{name: grpc-v1, port: 80}]\n  - matches: [{headers: [{name: version, value: two}]}]\n    backendRefs: [{name: grpc-v2, port: 80}]\n  - matches: [{headers: [{name: version, value: three}, {name: color, value: blue}]}]\n    backendRefs: [{name: grpc-v3, port: 80}]\n  - matches: [{headers: [{name: version, value: four}]}, {headers: [{name: color, value: green}]}]\n    backendRefs: [{name: grpc-v1, port: 80}]\n  - matches: [{headers: [{name: color, value: red, type: RegularExpression}]}, {headers: [{name: color, value: \"yell.*\", type: RegularExpression}]}]\n    backendRefs: [{name: grpc-v2, port: 80}]\n";
    let (_backends, dir) = setup(rules);
    let weir = Weir::start(&dir);
    for (headers, backend) in [
        (&[("version", "one")][..], "grpc-v1"),
        (&[("version", "two")][..], "grpc-v2"),
        (&[("version", "three"), ("color", "blue")][..], "grpc-v3"),
        (&[("version", "four")][..], "grpc-v1"),
        (&[("color", "green")][..], "grpc-v1"),
        (&[("color", "red")][..], "grpc-v2"),
        (&[("color", "yellow")][..], "grpc-v2"),
    ] {
        assert_eq!(
            call(&weir, "Echo", headers).await,
            ("0".into(), backend.into()),
            "{headers:?}"
        );
    }
    for headers in [
        &[("version", "three")][..],
        &[("color", "purple")][..],
        &[][..],
    ] {
        assert_eq!(call(&weir, "Echo", headers).await.0, "12", "{headers:?}");
    }
}

/// A GRPCRoute's bad method match is refused with its field named; the rest serves.
#[tokio::test]
async fn a_grpcroute_with_a_bad_method_is_refused_by_field_and_the_rest_serves() {
    let rules = format!(
        "  - matches: [{{method: {{service: {SERVICE}, method: Echo}}}}]\n    backendRefs: [{{name: grpc-v1, port: 80}}]\n"
    );
    let (_backends, dir) = setup(&rules);
    let dir = dir
        .with(
            "bad.yaml",
            &grpc_route("bad", "  - matches: [{method: {service: \"a/b\"}}]\n    backendRefs: [{name: grpc-v2, port: 80}]\n"),
        )
        .with(
            "regex.yaml",
            &grpc_route("regex", "  - matches: [{method: {type: RegularExpression, service: \"a\", method: \"(?x)b #\"}}]\n    backendRefs: [{name: grpc-v2, port: 80}]\n"),
        );
    let weir = Weir::start(&dir);
    assert_eq!(
        call(&weir, "Echo", &[]).await,
        ("0".into(), "grpc-v1".into())
    );
    let refused = eventually(Duration::from_secs(5), "both refusals", || async {
        let refused = weir.refusals().await;
        (refused.len() == 2).then_some(refused)
    })
    .await;
    for name in ["bad", "regex"] {
        let error = refused
            .iter()
            .find(|e| e["object"] == format!("GRPCRoute default/{name}"))
            .unwrap_or_else(|| panic!("{name} not refused: {refused:?}"));
        // The field as written: a method match, whatever path it became.
        assert_eq!(error["field"], "spec.rules[0].matches[0].method", "{error}");
    }
}
