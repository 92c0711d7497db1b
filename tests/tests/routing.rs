//! Routing as a client sees it: hosts, Gateway API precedence, Ingress paths, weights,
//! filters, and path normalisation.

use weir_e2e::{eventually, gateway, http_route, service, ConfigDir, Echo, Weir};

#[tokio::test]
async fn gateway_api_precedence_picks_the_most_specific_match() {
    let (a, b, c, d, e) = (
        Echo::start("a"),
        Echo::start("b"),
        Echo::start("c"),
        Echo::start("d"),
        Echo::start("e"),
    );
    let rules = "  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: a, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: b, port: 80}]
  - matches: [{path: {type: Exact, value: /api/health}}]
    backendRefs: [{name: c, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /api}, method: POST}]
    backendRefs: [{name: d, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: X-Tenant, value: beta}], queryParams: [{name: v, value: \"2\"}]}]
    backendRefs: [{name: e, port: 80}]
";
    let dir = ConfigDir::new()
        .with(
            "svc.yaml",
            &[
                service("a", &[&a]),
                service("b", &[&b]),
                service("c", &[&c]),
                service("d", &[&d]),
                service("e", &[&e]),
            ]
            .join("---\n"),
        )
        .with("gw.yaml", &gateway())
        .with(
            "route.yaml",
            &http_route("shop", &["shop.example.com"], rules),
        );
    let weir = Weir::start(&dir);
    let host = "shop.example.com";
    assert_eq!(weir.get(host, "/").await.backend(), "a");
    assert_eq!(
        weir.get(host, "/apix").await.backend(),
        "a",
        "a prefix matches whole segments only"
    );
    assert_eq!(weir.get(host, "/api").await.backend(), "b");
    assert_eq!(weir.get(host, "/api/").await.backend(), "b");
    assert_eq!(weir.get(host, "/api/orders").await.backend(), "b");
    assert_eq!(
        weir.get(host, "/api/health").await.backend(),
        "c",
        "Exact beats any prefix"
    );
    assert_eq!(
        weir.send("POST", host, "/api/orders", &[], "x")
            .await
            .backend(),
        "d",
        "a method match beats none"
    );
    let tenant = [("x-tenant", "beta")];
    assert_eq!(
        weir.send("GET", host, "/api/orders?v=2", &tenant, "")
            .await
            .backend(),
        "e"
    );
    assert_eq!(
        weir.send("GET", host, "/api/orders?v=3", &tenant, "")
            .await
            .backend(),
        "b",
        "query must match too"
    );
    assert_eq!(
        weir.get("other.example.com", "/").await.status,
        404,
        "routes only answer their hostnames"
    );
}

#[tokio::test]
async fn hostnames_exact_beats_wildcard_and_ports_are_ignored() {
    let (exact, wild) = (Echo::start("exact"), Echo::start("wild"));
    let one = "  - backendRefs: [{name: exact, port: 80}]\n";
    let two = "  - backendRefs: [{name: wild, port: 80}]\n";
    let dir = ConfigDir::new()
        .with(
            "svc.yaml",
            &[service("exact", &[&exact]), service("wild", &[&wild])].join("---\n"),
        )
        .with("gw.yaml", &gateway())
        .with("r1.yaml", &http_route("exact", &["api.example.com"], one))
        .with("r2.yaml", &http_route("wild", &["*.example.com"], two));
    let weir = Weir::start(&dir);
    assert_eq!(weir.get("api.example.com", "/").await.backend(), "exact");
    assert_eq!(
        weir.get("API.Example.com:8080", "/").await.backend(),
        "exact"
    );
    assert_eq!(weir.get("shop.example.com", "/").await.backend(), "wild");
    assert_eq!(weir.get("a.b.example.com", "/").await.backend(), "wild");
    assert_eq!(
        weir.get("example.com", "/").await.status,
        404,
        "*.example.com does not match example.com"
    );
}

#[tokio::test]
async fn ingress_paths_ports_by_name_and_default_backend() {
    let (api, web, fallback) = (
        Echo::start("api"),
        Echo::start("web"),
        Echo::start("fallback"),
    );
    let ingress = "\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: site, namespace: default}
spec:
  ingressClassName: weir
  defaultBackend: {service: {name: fallback, port: {number: 80}}}
  rules:
  - host: site.example.com
    http:
      paths:
      - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {name: http}}}}
      - {path: /login, pathType: Exact, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: someone-else, namespace: default}
spec:
  ingressClassName: nginx
  rules:
  - host: other.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
";
    let dir = ConfigDir::new()
        .with(
            "svc.yaml",
            &[
                service("api", &[&api]),
                service("web", &[&web]),
                service("fallback", &[&fallback]),
            ]
            .join("---\n"),
        )
        .with("ingress.yaml", ingress);
    let weir = Weir::start(&dir);
    assert_eq!(
        weir.get("site.example.com", "/api/v1/orders")
            .await
            .backend(),
        "api"
    );
    assert_eq!(
        weir.get("site.example.com", "/login").await.backend(),
        "web"
    );
    assert_eq!(
        weir.get("site.example.com", "/login/extra").await.backend(),
        "fallback",
        "Exact is exact"
    );
    assert_eq!(
        weir.get("other.example.com", "/").await.backend(),
        "fallback",
        "class nginx is not ours"
    );
}

#[tokio::test]
async fn weights_split_traffic_and_unready_endpoints_get_none() {
    let (stable, canary, unready) = (
        Echo::start("stable"),
        Echo::start("canary"),
        Echo::start("unready"),
    );
    let stable_svc = weir_e2e::service_with("stable", &[(stable.addr, true)], "");
    // Same port trick is not possible with two processes, so the unready endpoint gets its own
    // Service with one ready and one unready address at the canary's port.
    let canary_svc = weir_e2e::service_with(
        "canary",
        &[
            (canary.addr, true),
            (
                std::net::SocketAddr::from(([127, 0, 0, 2], canary.addr.port())),
                false,
            ),
        ],
        "",
    );
    let rules = "  - backendRefs: [{name: stable, port: 80, weight: 80}, {name: canary, port: 80, weight: 20}]\n";
    let dir = ConfigDir::new()
        .with("svc.yaml", &[stable_svc, canary_svc].join("---\n"))
        .with("gw.yaml", &gateway())
        .with(
            "route.yaml",
            &http_route("split", &["split.example.com"], rules),
        );
    let weir = Weir::start(&dir);
    let mut canary_hits = 0;
    for _ in 0..400 {
        let reply = weir.get("split.example.com", "/").await;
        assert_eq!(reply.status, 200);
        if reply.backend() == "canary" {
            canary_hits += 1;
        }
    }
    // 20% of 400 = 80; binomial sd = 8: allow 5 sd.
    assert!(
        (40..=120).contains(&canary_hits),
        "canary got {canary_hits} of 400"
    );
    drop(unready);
    let config = weir.admin_get("/config").await.json();
    let endpoints = &config["snapshot"]["clusters"]["default/canary:80"]["endpoints"];
    assert_eq!(
        endpoints.as_array().unwrap().len(),
        1,
        "the unready endpoint is not a target: {endpoints}"
    );
}

#[tokio::test]
async fn filters_modify_rewrite_redirect_and_mirror() {
    let (app, shadow) = (Echo::start("app"), Echo::start("shadow"));
    let rules = "  - matches: [{path: {type: PathPrefix, value: /v1}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-env, value: prod}], add: [{name: x-added, value: \"yes\"}], remove: [x-drop-me]}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {set: [{name: x-served-by, value: weir}], remove: [x-backend]}
    - type: URLRewrite
      urlRewrite: {hostname: internal.svc, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
    - type: RequestMirror
      requestMirror: {backendRef: {name: shadow, port: 80}}
    backendRefs: [{name: app, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, hostname: new.example.com, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}, statusCode: 301}
";
    let dir = ConfigDir::new()
        .with(
            "svc.yaml",
            &[service("app", &[&app]), service("shadow", &[&shadow])].join("---\n"),
        )
        .with("gw.yaml", &gateway())
        .with(
            "route.yaml",
            &http_route("filters", &["f.example.com"], rules),
        );
    let weir = Weir::start(&dir);

    let reply = weir
        .send(
            "GET",
            "f.example.com",
            "/v1/items/7?q=1",
            &[("x-drop-me", "1")],
            "",
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-served-by"), Some("weir"));
    assert_eq!(reply.header("x-backend"), None);
    let echo = reply.json();
    assert_eq!(echo["path"], "/v2/items/7");
    assert_eq!(echo["query"], "q=1");
    assert_eq!(echo["headers"]["host"], "internal.svc");
    assert_eq!(echo["headers"]["x-env"], "prod");
    assert_eq!(echo["headers"]["x-added"], "yes");
    assert!(echo["headers"].get("x-drop-me").is_none());

    let redirect = weir.get("f.example.com", "/old/page?x=1").await;
    assert_eq!(redirect.status, 301);
    assert_eq!(
        redirect.header("location"),
        Some("https://new.example.com/new/page?x=1")
    );

    // The mirror gets its copy shortly after (fire and forget).
    eventually(
        std::time::Duration::from_secs(5),
        "the mirror received the copy",
        || async { (shadow.served().await >= 1).then_some(()) },
    )
    .await;
    assert_eq!(app.served().await, 1);
}

#[tokio::test]
async fn normalised_paths_cannot_escape_a_route() {
    let public = Echo::start("public");
    let rules = "  - matches: [{path: {type: PathPrefix, value: /public}}]\n    backendRefs: [{name: public, port: 80}]\n";
    let dir = ConfigDir::new()
        .with("svc.yaml", &service("public", &[&public]))
        .with("gw.yaml", &gateway())
        .with("route.yaml", &http_route("p", &["p.example.com"], rules));
    let weir = Weir::start(&dir);
    for sneaky in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "//admin",
        "/public/./../admin",
    ] {
        assert_eq!(
            weir.get("p.example.com", sneaky).await.status,
            404,
            "{sneaky} must not reach /public"
        );
    }
    let ok = weir.get("p.example.com", "/public//a/./b/../c").await;
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.json()["path"],
        "/public/a/c",
        "the backend sees the normalised path"
    );
    let bad = weir.get("p.example.com", "/public/%zz").await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.header("x-weir-error"), Some("bad-request"));
}

/// HTTPRouteBackendRequestHeaderModifier: each backendRef's own header modifiers apply to the
/// requests (and responses) of that backend alone, after the rule's; a filter Weir cannot run
/// per backend refuses that route, naming the field, and the rest serves.
#[tokio::test]
async fn http_route_backend_request_header_modifier() {
    let (one, two) = (Echo::start("one"), Echo::start("two"));
    let rules = "  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-rule, value: rule}, {name: x-over, value: rule}]}
    backendRefs:
    - name: one
      port: 80
      weight: 1
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: x-over, value: one}], add: [{name: x-backend-one, value: \"1\"}], remove: [x-drop]}
      - type: ResponseHeaderModifier
        responseHeaderModifier: {set: [{name: x-answered-by, value: one}]}
    - name: two
      port: 80
      weight: 1
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {add: [{name: x-backend-two, value: \"2\"}]}
";
    let refused = "  - backendRefs:\n    - name: one\n      port: 80\n      filters:\n      - type: URLRewrite\n        urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /x}}\n";
    let dir = ConfigDir::new()
        .with(
            "svc.yaml",
            &[service("one", &[&one]), service("two", &[&two])].join("---\n"),
        )
        .with("gw.yaml", &gateway())
        .with(
            "route.yaml",
            &http_route("request-header-modifier", &["b.example.com"], rules),
        )
        .with(
            "refused.yaml",
            &http_route("refused", &["r.example.com"], refused),
        );
    let weir = Weir::start(&dir);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..40 {
        let reply = weir
            .send("GET", "b.example.com", "/", &[("x-drop", "1")], "")
            .await;
        assert_eq!(reply.status, 200);
        let echo = reply.json();
        let headers = &echo["headers"];
        assert_eq!(headers["x-rule"], "rule");
        match reply.backend().as_str() {
            "one" => {
                assert_eq!(
                    headers["x-over"], "one",
                    "the backend's filter runs after the rule's"
                );
                assert_eq!(headers["x-backend-one"], "1");
                assert!(headers.get("x-backend-two").is_none());
                assert!(headers.get("x-drop").is_none());
                assert_eq!(reply.header("x-answered-by"), Some("one"));
            }
            "two" => {
                assert_eq!(headers["x-over"], "rule");
                assert_eq!(headers["x-backend-two"], "2");
                assert!(headers.get("x-backend-one").is_none());
                assert_eq!(headers["x-drop"], "1", "only backend one removes it");
                assert_eq!(reply.header("x-answered-by"), None);
            }
            other => panic!("answered by {other}"),
        }
        seen.insert(reply.backend());
    }
    assert_eq!(seen.len(), 2, "both backends got requests");
    assert_eq!(weir.get("r.example.com", "/").await.status, 404);
    let refusals = weir.refusals().await;
    let text = serde_json::to_string(&refusals).unwrap();
    assert!(
        text.contains("spec.rules[0].backendRefs[0].filters[0].type"),
        "{text}"
    );
}
