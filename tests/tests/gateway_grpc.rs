//! GRPCRoute, as the upstream conformance tests GRPCExactMethodMatching and
//! GRPCRouteHeaderMatching check it (kubernetes-sigs/gateway-api, conformance/tests): the same
//! routes and calls against the real `weir-ingress`, a gRPC client speaking h2c, each call's
//! backend told by the `grpc-message` trailer the echo backend sends. The backends' Services
//! name no protocol: a GRPCRoute makes them HTTP/2.

use std::time::Duration;

use weir_e2e::{
    eventually, gateway,
    grpc::{call_at, SERVICE},
    service, ConfigDir, Echo, Weir,
};

const ECHO: &str = "Echo";

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
    let called = call_at(weir.addr, &weir.addr.to_string(), method, headers).await;
    (called.status, called.backend)
}

/// A rule for calls to `method` of the echo service, to backend `grpc-vN`.
fn method_rule(method: &str, n: u8) -> String {
    format!("  - matches: [{{method: {{service: {SERVICE}, method: {method}}}}}]\n    backendRefs: [{{name: grpc-v{n}, port: 80}}]\n")
}

/// Asserts that `Echo` is answered by `echo` and `EchoTwo` by `echo_two`.
async fn assert_echoes(weir: &Weir, echo: &str, echo_two: &str) {
    assert_eq!(call(weir, "Echo", &[]).await, ("0".into(), echo.into()));
    assert_eq!(
        call(weir, "EchoTwo", &[]).await,
        ("0".into(), echo_two.into())
    );
}

/// GRPCExactMethodMatching
#[tokio::test]
async fn grpc_exact_method_matching() {
    let rules = method_rule("Echo", 1) + &method_rule("EchoTwo", 2);
    let (_backends, dir) = setup(&rules);
    let weir = Weir::start(&dir);
    assert_echoes(&weir, "grpc-v1", "grpc-v2").await;
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

/// A Gateway `name` in `default` with the `listeners:` body given.
fn gateway_with(name: &str, listeners: &str) -> String {
    format!("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  gatewayClassName: weir\n  listeners:\n{listeners}")
}

/// A GRPCRoute `name` with the `parentRefs:` and `rules:` bodies given.
fn grpc_route_to(name: &str, parents: &str, rules: &str) -> String {
    format!("apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs: {parents}\n  rules:\n{rules}")
}

fn to(n: u8) -> String {
    format!("  - backendRefs: [{{name: grpc-v{n}, port: 80}}]\n")
}

/// GRPCRouteListenerHostnameMatching
#[tokio::test]
async fn grpc_route_listener_hostname_matching() {
    let (_backends, dir) = setup(&to(1));
    let listeners = "  - {name: listener-1, port: 80, protocol: HTTP, hostname: bar.com}\n  - {name: listener-2, port: 80, protocol: HTTP, hostname: foo.bar.com}\n  - {name: listener-3, port: 80, protocol: HTTP, hostname: \"*.bar.com\"}\n  - {name: listener-4, port: 80, protocol: HTTP, hostname: \"*.foo.com\"}\n";
    let dir = dir.with("gw.yaml", &gateway_with("gw", listeners)).with(
        "route.yaml",
        &[
            grpc_route_to(
                "backend-v1",
                "[{name: gw, sectionName: listener-1}]",
                &to(1),
            ),
            grpc_route_to(
                "backend-v2",
                "[{name: gw, sectionName: listener-2}]",
                &to(2),
            ),
            grpc_route_to(
                "backend-v3",
                "[{name: gw, sectionName: listener-3}, {name: gw, sectionName: listener-4}]",
                &to(3),
            ),
        ]
        .join("---\n"),
    );
    let weir = Weir::start(&dir);
    for (authority, backend) in [
        ("bar.com", Some("grpc-v1")),
        ("foo.bar.com", Some("grpc-v2")),
        ("baz.bar.com", Some("grpc-v3")),
        ("boo.bar.com", Some("grpc-v3")),
        ("multiple.prefixes.bar.com", Some("grpc-v3")),
        ("multiple.prefixes.foo.com", Some("grpc-v3")),
        ("foo.com", None),
        ("no.matching.host", None),
    ] {
        let called = call_at(weir.addr, authority, ECHO, &[]).await;
        match backend {
            Some(backend) => assert_eq!(
                (called.status.as_str(), called.backend.as_str()),
                ("0", backend),
                "{authority}"
            ),
            // UNIMPLEMENTED, from the gateway: no route for the name.
            None => assert_eq!(called.status, "12", "{authority}"),
        }
    }
}

/// GRPCRouteAllBackendsWeightZero: a rule with no backend to send to answers UNAVAILABLE.
#[tokio::test]
async fn grpc_route_all_backends_weight_zero() {
    let (_backends, dir) = setup(
        "  - backendRefs: [{name: grpc-v1, port: 80, weight: 0}, {name: grpc-v2, port: 80, weight: 0}]\n",
    );
    let weir = Weir::start(&dir);
    assert_eq!(call(&weir, ECHO, &[]).await.0, "14");
    // The same for a backend that does not resolve.
    let dir = dir.with(
        "route.yaml",
        &grpc_route(
            "grpc",
            "  - backendRefs: [{name: no-such-service, port: 80}]\n",
        ),
    );
    let weir = Weir::start(&dir);
    assert_eq!(call(&weir, ECHO, &[]).await.0, "14");
}

/// GRPCRouteWeight: 70/30/0 across three backends, over 400 calls.
#[tokio::test]
async fn grpc_route_weight() {
    let (_backends, dir) = setup(
        "  - backendRefs: [{name: grpc-v1, port: 80, weight: 70}, {name: grpc-v2, port: 80, weight: 30}, {name: grpc-v3, port: 80, weight: 0}]\n",
    );
    let weir = Weir::start(&dir);
    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    const CALLS: u32 = 400;
    for _ in 0..CALLS {
        let (status, backend) = call(&weir, ECHO, &[]).await;
        assert_eq!(status, "0");
        *seen.entry(backend).or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "exactly the two weighted backends: {seen:?}");
    let share = |b: &str| f64::from(seen.get(b).copied().unwrap_or(0)) / f64::from(CALLS);
    // Five standard deviations of a 70/30 split over 400 calls: fails by chance almost never.
    assert!((share("grpc-v1") - 0.7).abs() < 0.12, "{seen:?}");
    assert!((share("grpc-v2") - 0.3).abs() < 0.12, "{seen:?}");
}

/// GRPCRouteRequestHeaderModifier (its filters, one rule each way): set overwrites, add
/// appends, remove removes, and several of each at once.
#[tokio::test]
async fn grpc_route_request_header_modifier() {
    let rules = format!(
        "  - matches: [{{method: {{service: {SERVICE}, method: Echo}}}}]\n    filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: X-Header-Set, value: set-overwrites-values}}], add: [{{name: X-Header-Add, value: add-appends-values}}], remove: [X-Header-Remove]}}}}]\n    backendRefs: [{{name: grpc-v1, port: 80}}]\n  - matches: [{{method: {{service: {SERVICE}, method: EchoTwo}}}}]\n    filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: X-Header-Set-1, value: header-set-1}}, {{name: X-Header-Set-2, value: header-set-2}}], add: [{{name: X-Header-Add-1, value: header-add-1}}, {{name: X-Header-Add-2, value: header-add-2}}], remove: [X-Header-Remove-1, X-Header-Remove-2]}}}}]\n    backendRefs: [{{name: grpc-v2, port: 80}}]\n"
    );
    let (_backends, dir) = setup(&rules);
    let weir = Weir::start(&dir);
    let authority = weir.addr.to_string();
    let called = call_at(
        weir.addr,
        &authority,
        "Echo",
        &[
            ("some-other-header", "this-header-should-be-set"),
            ("x-header-set", "this-value-should-be-overwritten"),
            ("x-header-add", "this-value-should-be-appended"),
            ("x-header-remove", "this-should-be-removed"),
        ],
    )
    .await;
    assert_eq!(called.backend, "grpc-v1");
    let seen = &called.seen;
    assert_eq!(seen["some-other-header"], "this-header-should-be-set");
    assert_eq!(seen["x-header-set"], "set-overwrites-values");
    assert_eq!(
        seen["x-header-add"],
        "this-value-should-be-appended,add-appends-values"
    );
    assert!(seen.get("x-header-remove").is_none(), "{seen}");

    let called = call_at(
        weir.addr,
        &authority,
        "EchoTwo",
        &[
            ("x-header-set-2", "set-header-2"),
            ("x-header-add-2", "add-header-2"),
            ("x-header-remove-2", "should-be-removed-2"),
            ("some-other-header", "another-header-val"),
        ],
    )
    .await;
    assert_eq!(called.backend, "grpc-v2");
    let seen = &called.seen;
    assert_eq!(seen["x-header-set-1"], "header-set-1");
    assert_eq!(seen["x-header-set-2"], "header-set-2");
    assert_eq!(seen["x-header-add-1"], "header-add-1");
    assert_eq!(seen["x-header-add-2"], "add-header-2,header-add-2");
    assert_eq!(seen["some-other-header"], "another-header-val");
    assert!(seen.get("x-header-remove-2").is_none(), "{seen}");
}

/// GRPCRouteNamedRule: a rule's name changes nothing about what it matches.
#[tokio::test]
async fn grpc_route_named_rule() {
    let rules = method_rule("Echo", 1).replacen("  - ", "  - name: named-rule\n    ", 1)
        + &method_rule("EchoTwo", 2);
    let (_backends, dir) = setup(&rules);
    let weir = Weir::start(&dir);
    assert_echoes(&weir, "grpc-v1", "grpc-v2").await;
}

/// GRPCRouteMultipleGateways: Gateways `same-namespace` and `all-namespaces`, each served by
/// its own gateway process (`--gateway`): the route both share answers on both, each
/// dedicated route on its own Gateway only.
#[tokio::test]
async fn grpc_route_multiple_gateways() {
    let (_backends, dir) = setup(&to(1));
    let dir = dir
        .with(
            "gw.yaml",
            &[
                gateway_with("same-namespace", "  - {name: http, port: 80, protocol: HTTP}\n"),
                gateway_with(
                    "all-namespaces",
                    "  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}\n",
                ),
            ]
            .join("---\n"),
        )
        .with(
            "route.yaml",
            &[
                grpc_route_to(
                    "multiple-gateways-shared-route",
                    "[{name: same-namespace}, {name: all-namespaces}]",
                    &method_rule("Echo", 1),
                ),
                grpc_route_to("same-namespace-dedicated-route", "[{name: same-namespace}]", &method_rule("EchoTwo", 2)),
                grpc_route_to("all-namespaces-dedicated-route", "[{name: all-namespaces}]", &method_rule("EchoTwo", 3)),
            ]
            .join("---\n"),
        );
    let same = Weir::start_with(&dir, &["--gateway", "default/same-namespace"]);
    let all = Weir::start_with(&dir, &["--gateway", "default/all-namespaces"]);
    for (weir, dedicated) in [(&same, "grpc-v2"), (&all, "grpc-v3")] {
        assert_eq!(
            call(weir, "Echo", &[]).await,
            ("0".into(), "grpc-v1".into())
        );
        assert_eq!(
            call(weir, "EchoTwo", &[]).await,
            ("0".into(), dedicated.into())
        );
    }
}
