//! Core HTTPRoute matching and filters, as the upstream conformance tests named on each test
//! here check them (kubernetes-sigs/gateway-api, conformance/tests): one route per test with
//! the rules those tests apply, and every request they send with what they expect back (the
//! backend, a 404, the fields the backend sees, a redirect's Location), against the real
//! `weir-ingress`. Where upstream's manifest for a newer version of a test was not at hand,
//! the rules are rebuilt from its requests.

use weir_e2e::{gateway, http_route, service, ConfigDir, Echo, Weir};

/// The three infra backends upstream's tests route to, and a Weir serving `rules` for any host.
fn setup(name: &str, rules: &str) -> (Vec<Echo>, Weir) {
    setup_for(name, &[], rules)
}

/// [`setup`], the route for `hosts`.
fn setup_for(name: &str, hosts: &[&str], rules: &str) -> (Vec<Echo>, Weir) {
    let (backends, dir) = infra();
    let dir = dir.with("route.yaml", &http_route(name, hosts, rules));
    (backends, Weir::start(&dir))
}

/// The three infra backends and their Services, and the Gateway; add the routes.
fn infra() -> (Vec<Echo>, ConfigDir) {
    let names = ["infra-backend-v1", "infra-backend-v2", "infra-backend-v3"];
    let backends: Vec<Echo> = names.iter().map(|n| Echo::start(n)).collect();
    let services: Vec<String> = backends
        .iter()
        .zip(names)
        .map(|(b, n)| service(n, &[b]))
        .collect();
    let dir = ConfigDir::new()
        .with("svc.yaml", &services.join("---\n"))
        .with("gw.yaml", &gateway());
    (backends, dir)
}

/// One expected exchange: method, path (with query), headers, and the backend that answers
/// (`None`: 404).
type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], Option<&'a str>);

async fn check(weir: &Weir, cases: &[Case<'_>]) {
    for (method, path, headers, backend) in cases {
        let reply = weir.send(method, "example.com", path, headers, "").await;
        match backend {
            Some(backend) => {
                assert_eq!(
                    reply.status,
                    200,
                    "{method} {path} {headers:?}: {}",
                    reply.text()
                );
                assert_eq!(reply.backend(), *backend, "{method} {path} {headers:?}");
            }
            None => assert_eq!(
                reply.status,
                404,
                "{method} {path} {headers:?}: {}",
                reply.text()
            ),
        }
    }
}

/// Infra backend `n`, as a case expects it to answer.
fn v(n: u8) -> Option<&'static str> {
    Some(["infra-backend-v1", "infra-backend-v2", "infra-backend-v3"][n as usize - 1])
}

fn backend_ref(n: u8) -> String {
    format!("    backendRefs: [{{name: infra-backend-v{n}, port: 80}}]\n")
}

/// HTTPExactPathMatching
#[tokio::test]
async fn http_exact_path_matching() {
    let rules = format!(
        "  - matches: [{{path: {{type: Exact, value: /one}}}}]\n{}  - matches: [{{path: {{type: Exact, value: /two}}}}]\n{}",
        backend_ref(1),
        backend_ref(2)
    );
    let (_backends, weir) = setup("exact-matching", &rules);
    check(
        &weir,
        &[
            ("GET", "/one", &[], Some("infra-backend-v1")),
            ("GET", "/two", &[], Some("infra-backend-v2")),
            ("GET", "/", &[], None),
            ("GET", "/one/example", &[], None),
            ("GET", "/two/", &[], None),
            ("GET", "/Two", &[], None),
        ],
    )
    .await;
}

/// HTTPRouteMethodMatching
#[tokio::test]
async fn http_route_method_matching() {
    let rules = [
        ("[{method: POST}]", 1),
        ("[{method: GET}]", 2),
        ("[{path: {type: PathPrefix, value: /path1}, method: GET}]", 1),
        ("[{headers: [{name: version, value: one}], method: PUT}]", 2),
        ("[{path: {type: PathPrefix, value: /path2}, headers: [{name: version, value: two}], method: POST}]", 3),
        ("[{path: {type: PathPrefix, value: /path3}, method: PATCH}, {path: {type: PathPrefix, value: /path4}, headers: [{name: version, value: three}], method: DELETE}]", 1),
        ("[{path: {type: PathPrefix, value: /path5}, method: PATCH}]", 1),
        ("[{headers: [{name: version, value: four}], method: PATCH}]", 2),
    ]
    .iter()
    .map(|(matches, n)| format!("  - matches: {matches}\n{}", backend_ref(*n)))
    .collect::<String>();
    let (_backends, weir) = setup("method-matching", &rules);
    check(
        &weir,
        &[
            ("POST", "/", &[], v(1)),
            ("GET", "/", &[], v(2)),
            ("HEAD", "/", &[], None),
            // With other core matches.
            ("GET", "/path1", &[], v(1)),
            ("PUT", "/", &[("version", "one")], v(2)),
            ("POST", "/path2", &[("version", "two")], v(3)),
            // Matches are OR'd: either one is enough.
            ("PATCH", "/path3", &[], v(1)),
            ("DELETE", "/path4", &[("version", "three")], v(1)),
            // The parts of one match are AND'd: a subset is not enough.
            ("PUT", "/", &[], None),
            ("DELETE", "/path4", &[], None),
            // Precedence: the longer path first, then more header matches.
            ("PATCH", "/path5", &[], v(1)),
            ("PATCH", "/", &[("version", "four")], v(2)),
        ],
    )
    .await;
}

/// HTTPRouteQueryParamMatching
#[tokio::test]
async fn http_route_query_param_matching() {
    let q = |pairs: &[(&str, &str)]| {
        let params: Vec<String> = pairs
            .iter()
            .map(|(n, v)| format!("{{name: {n}, value: {v}}}"))
            .collect();
        format!("queryParams: [{}]", params.join(", "))
    };
    let rules = [
        (format!("[{{{}}}]", q(&[("animal", "whale")])), 1),
        (format!("[{{{}}}]", q(&[("animal", "dolphin")])), 2),
        (format!("[{{{}}}]", q(&[("animal", "dolphin"), ("color", "blue")])), 3),
        (format!("[{{{}}}]", q(&[("ANIMAL", "Whale")])), 3),
        (format!("[{{path: {{type: PathPrefix, value: /path1}}, {}}}]", q(&[("animal", "whale")])), 1),
        (format!("[{{headers: [{{name: version, value: one}}], {}}}]", q(&[("animal", "whale")])), 2),
        (format!("[{{path: {{type: PathPrefix, value: /path2}}, headers: [{{name: version, value: two}}], {}}}]", q(&[("animal", "whale")])), 3),
        (format!("[{{path: {{type: PathPrefix, value: /path3}}, {}}}, {{path: {{type: PathPrefix, value: /path4}}, headers: [{{name: version, value: three}}], {}}}]", q(&[("animal", "shark")]), q(&[("animal", "kraken")])), 1),
        (format!("[{{path: {{type: PathPrefix, value: /path5}}, {}}}]", q(&[("animal", "hydra")])), 1),
        (format!("[{{headers: [{{name: version, value: four}}], {}}}]", q(&[("animal", "hydra")])), 3),
    ]
    .iter()
    .map(|(matches, n)| format!("  - matches: {matches}\n{}", backend_ref(*n)))
    .collect::<String>();
    let (_backends, weir) = setup("query-param-matching", &rules);
    check(
        &weir,
        &[
            ("GET", "/?animal=whale", &[], v(1)),
            ("GET", "/?animal=dolphin", &[], v(2)),
            ("GET", "/?animal=dolphin&color=blue", &[], v(3)),
            ("GET", "/?ANIMAL=Whale", &[], v(3)),
            ("GET", "/?animal=whale&otherparam=irrelevant", &[], v(1)),
            ("GET", "/?animal=dolphin&color=yellow", &[], v(2)),
            ("GET", "/?color=blue", &[], None),
            ("GET", "/?animal=dog", &[], None),
            ("GET", "/?animal=whaledolphin", &[], None),
            ("GET", "/", &[], None),
            // With other core matches.
            ("GET", "/path1?animal=whale", &[], v(1)),
            ("GET", "/?animal=whale", &[("version", "one")], v(2)),
            ("GET", "/path2?animal=whale", &[("version", "two")], v(3)),
            // OR'd matches.
            ("GET", "/path3?animal=shark", &[], v(1)),
            ("GET", "/path4?animal=kraken", &[("version", "three")], v(1)),
            // AND'd parts.
            ("GET", "/?animal=shark", &[], None),
            ("GET", "/path4?animal=kraken", &[], None),
            // Precedence.
            ("GET", "/path5?animal=hydra", &[], v(1)),
            ("GET", "/?animal=hydra", &[("version", "four")], v(3)),
        ],
    )
    .await;
}

/// HTTPRouteHeaderMatching
#[tokio::test]
async fn http_route_header_matching() {
    let h = |pairs: &[(&str, &str)]| {
        let headers: Vec<String> = pairs
            .iter()
            .map(|(n, v)| format!("{{name: {n}, value: {v}}}"))
            .collect();
        format!("{{headers: [{}]}}", headers.join(", "))
    };
    let rules = [
        (format!("[{}]", h(&[("version", "one")])), 1),
        (format!("[{}]", h(&[("version", "two")])), 2),
        (
            format!("[{}]", h(&[("version", "two"), ("color", "orange")])),
            1,
        ),
        (
            format!(
                "[{}, {}]",
                h(&[("color", "blue")]),
                h(&[("color", "green")])
            ),
            1,
        ),
        (
            format!(
                "[{}, {}]",
                h(&[("color", "red")]),
                h(&[("color", "yellow")])
            ),
            2,
        ),
    ]
    .iter()
    .map(|(matches, n)| format!("  - matches: {matches}\n{}", backend_ref(*n)))
    .collect::<String>();
    let (_backends, weir) = setup("matching", &rules);
    check(
        &weir,
        &[
            ("GET", "/", &[("Version", "one")], v(1)),
            ("GET", "/", &[("Version", "two")], v(2)),
            ("GET", "/", &[("Version", "two"), ("Color", "orange")], v(1)),
            ("GET", "/", &[("Version", "two"), ("Color", "blue")], v(2)),
            ("GET", "/", &[("Color", "orange")], None),
            ("GET", "/", &[("Some-Other-Header", "one")], None),
            ("GET", "/", &[("Color", "blue")], v(1)),
            ("GET", "/", &[("Color", "green")], v(1)),
            ("GET", "/", &[("Color", "red")], v(2)),
            ("GET", "/", &[("Color", "yellow")], v(2)),
            ("GET", "/", &[("Color", "purple")], None),
        ],
    )
    .await;
}

/// A request's path and the fields it is sent with, and what must be seen of them: fields
/// present (lowercase name, value) and fields absent.
type Modified<'a> = (&'a str, Fields<'a>, (Fields<'a>, &'a [&'a str]));
type Fields<'a> = &'a [(&'a str, &'a str)];

/// The rules upstream's two header-modifier tests apply, with filter `kind`
/// (`RequestHeaderModifier` or `ResponseHeaderModifier`).
fn header_modifier_rules(kind: &str) -> String {
    let field = format!("{}{}", kind[..1].to_ascii_lowercase(), &kind[1..]);
    let rule = |path: &str, modifier: &str| {
        format!("  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n    filters:\n    - type: {kind}\n      {field}: {modifier}\n{}", backend_ref(1))
    };
    [
        rule("/set", "{set: [{name: X-Header-Set, value: set-overwrites-values}]}"),
        rule("/add", "{add: [{name: X-Header-Add, value: add-appends-values}]}"),
        rule("/remove", "{remove: [X-Header-Remove]}"),
        rule("/multiple", "{set: [{name: X-Header-Set-1, value: header-set-1}, {name: X-Header-Set-2, value: header-set-2}], add: [{name: X-Header-Add-1, value: header-add-1}, {name: X-Header-Add-2, value: header-add-2}, {name: X-Header-Add-3, value: header-add-3}], remove: [X-Header-Remove-1, X-Header-Remove-2]}"),
        rule("/case-insensitivity", "{set: [{name: X-Header-Set, value: header-set}], add: [{name: X-Header-Add, value: header-add}], remove: [X-Header-Remove]}"),
    ]
    .concat()
}

/// What upstream's two header-modifier tests send (as the request's fields, or as the fields
/// the backend answers with) and expect to see after the filter.
const HEADER_MODIFIER_CASES: &[Modified<'static>] = &[
    (
        "/set",
        &[("Some-Other-Header", "val")],
        (
            &[
                ("some-other-header", "val"),
                ("x-header-set", "set-overwrites-values"),
            ],
            &[],
        ),
    ),
    (
        "/set",
        &[
            ("Some-Other-Header", "val"),
            ("X-Header-Set", "some-other-value"),
        ],
        (
            &[
                ("some-other-header", "val"),
                ("x-header-set", "set-overwrites-values"),
            ],
            &[],
        ),
    ),
    (
        "/add",
        &[("Some-Other-Header", "val")],
        (
            &[
                ("some-other-header", "val"),
                ("x-header-add", "add-appends-values"),
            ],
            &[],
        ),
    ),
    (
        "/add",
        &[
            ("Some-Other-Header", "val"),
            ("X-Header-Add", "some-other-value"),
        ],
        (
            &[("x-header-add", "some-other-value,add-appends-values")],
            &[],
        ),
    ),
    (
        "/remove",
        &[("X-Header-Remove", "val")],
        (&[], &["x-header-remove"]),
    ),
    (
        "/multiple",
        &[
            ("X-Header-Set-2", "set-val-2"),
            ("X-Header-Add-2", "add-val-2"),
            ("X-Header-Remove-2", "remove-val-2"),
            ("Another-Header", "another-header-val"),
        ],
        (
            &[
                ("x-header-set-1", "header-set-1"),
                ("x-header-set-2", "header-set-2"),
                ("x-header-add-1", "header-add-1"),
                ("x-header-add-2", "add-val-2,header-add-2"),
                ("x-header-add-3", "header-add-3"),
                ("another-header", "another-header-val"),
            ],
            &["x-header-remove-1", "x-header-remove-2"],
        ),
    ),
    (
        "/case-insensitivity",
        &[
            ("x-header-set", "original-val-set"),
            ("x-header-add", "original-val-add"),
            ("x-header-remove", "original-val-remove"),
            ("Another-Header", "another-header-val"),
        ],
        (
            &[
                ("x-header-set", "header-set"),
                ("x-header-add", "original-val-add,header-add"),
                ("another-header", "another-header-val"),
            ],
            &["x-header-remove"],
        ),
    ),
];

/// HTTPRouteRequestHeaderModifier: set overwrites, add appends (the backend sees both values),
/// remove removes, several at once, and names match whatever their case.
#[tokio::test]
async fn http_route_request_header_modifier() {
    let rules = header_modifier_rules("RequestHeaderModifier");
    let (_backends, weir) = setup("request-header-modifier", &rules);
    for (path, sent, (present, absent)) in HEADER_MODIFIER_CASES {
        let reply = weir.send("GET", "example.com", path, sent, "").await;
        assert_eq!(reply.status, 200, "{path}");
        let echo = reply.json();
        for (name, value) in *present {
            assert_eq!(
                echo["headers"][name], *value,
                "{path} {name}: {}",
                echo["headers"]
            );
        }
        for name in *absent {
            assert!(
                echo["headers"].get(name).is_none(),
                "{path} {name}: {}",
                echo["headers"]
            );
        }
    }
}

/// HTTPRouteResponseHeaderModifier: upstream's echo server answers with the request's fields;
/// weir-echo's `?respond=NAME:VALUE` makes it answer with the same ones, and the route's filter
/// acts on them on the way back.
#[tokio::test]
async fn http_route_response_header_modifier() {
    let rules = header_modifier_rules("ResponseHeaderModifier");
    let (_backends, weir) = setup("response-header-modifier", &rules);
    for (path, answered, (present, absent)) in HEADER_MODIFIER_CASES {
        let query: Vec<String> = answered
            .iter()
            .map(|(n, v)| format!("respond={n}:{v}"))
            .collect();
        let reply = weir
            .get("example.com", &format!("{path}?{}", query.join("&")))
            .await;
        assert_eq!(reply.status, 200, "{path}");
        let field = |name: &str| {
            let values: Vec<&str> = reply
                .headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            values.join(",")
        };
        for (name, value) in *present {
            assert_eq!(field(name), *value, "{path} {name}: {:?}", reply.headers);
        }
        for name in *absent {
            assert!(
                reply.headers.get(*name).is_none(),
                "{path} {name}: {:?}",
                reply.headers
            );
        }
    }
}

/// A rule for a path prefix whose answer is a redirect.
fn redirect_rule(prefix: &str, redirect: &str) -> String {
    format!("  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]\n    filters:\n    - type: RequestRedirect\n      requestRedirect: {redirect}\n")
}

/// HTTPRouteRedirectPath: prefix and full-path redirects, alone and with a host or a status;
/// each answer's Location checked for its host and path, as upstream checks it.
#[tokio::test]
async fn http_route_redirect_path() {
    let rule = redirect_rule;
    let prefix = "path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}";
    let full = "path: {type: ReplaceFullPath, replaceFullPath: /replacement-full}";
    let rules = [
        rule("/original-prefix", &format!("{{{prefix}}}")),
        rule(
            "/full",
            "{path: {type: ReplaceFullPath, replaceFullPath: /full-path-replacement}}",
        ),
        rule(
            "/path-and-host",
            &format!("{{hostname: example.org, {prefix}}}"),
        ),
        rule(
            "/path-and-status",
            &format!("{{{prefix}, statusCode: 301}}"),
        ),
        rule(
            "/full-path-and-host",
            &format!("{{hostname: example.org, {full}}}"),
        ),
        rule(
            "/full-path-and-status",
            &format!("{{{full}, statusCode: 301}}"),
        ),
    ]
    .concat();
    let (_backends, weir) = setup("redirect-path", &rules);
    for (path, status, host, to) in [
        (
            "/original-prefix/lemon",
            302,
            "example.com",
            "/replacement-prefix/lemon",
        ),
        (
            "/full/path/original",
            302,
            "example.com",
            "/full-path-replacement",
        ),
        ("/path-and-host", 302, "example.org", "/replacement-prefix"),
        (
            "/path-and-status",
            301,
            "example.com",
            "/replacement-prefix",
        ),
        (
            "/full-path-and-host",
            302,
            "example.org",
            "/replacement-full",
        ),
        (
            "/full-path-and-status",
            301,
            "example.com",
            "/replacement-full",
        ),
    ] {
        let reply = weir.get("example.com", path).await;
        assert_eq!(reply.status, status, "{path}");
        let location: http::Uri = reply
            .header("location")
            .unwrap_or_default()
            .parse()
            .unwrap();
        assert_eq!(location.host(), Some(host), "{path}: {location}");
        assert_eq!(location.path(), to, "{path}: {location}");
    }
}

/// HTTPRouteRewritePath: prefix and full-path rewrites, a prefix stripped to `/`, and rewrites
/// beside header modifiers in one rule.
#[tokio::test]
async fn http_route_rewrite_path() {
    let modifier = "    - type: RequestHeaderModifier\n      requestHeaderModifier: {set: [{name: X-Header-Set, value: set-overwrites-values}], add: [{name: X-Header-Add, value: header-val-1}, {name: X-Header-Add-Append, value: header-val-2}], remove: [X-Header-Remove]}\n";
    let rule = |prefix: &str, rewrite: &str, extra: &str| {
        format!("  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]\n    filters:\n    - type: URLRewrite\n      urlRewrite: {{path: {rewrite}}}\n{extra}{}", backend_ref(1))
    };
    let rules = [
        rule(
            "/prefix/one",
            "{type: ReplacePrefixMatch, replacePrefixMatch: /one}",
            "",
        ),
        rule(
            "/strip-prefix",
            "{type: ReplacePrefixMatch, replacePrefixMatch: /}",
            "",
        ),
        rule(
            "/full/one",
            "{type: ReplaceFullPath, replaceFullPath: /one}",
            "",
        ),
        rule(
            "/full/rewrite-path-and-modify-headers",
            "{type: ReplaceFullPath, replaceFullPath: /test}",
            modifier,
        ),
        rule(
            "/prefix/rewrite-path-and-modify-headers",
            "{type: ReplacePrefixMatch, replacePrefixMatch: /prefix}",
            modifier,
        ),
    ]
    .concat();
    let (_backends, weir) = setup("rewrite-path", &rules);
    for (path, to) in [
        ("/prefix/one/two", "/one/two"),
        ("/full/one/two", "/one"),
        ("/strip-prefix/three", "/three"),
        ("/strip-prefix", "/"),
    ] {
        let reply = weir.get("example.com", path).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.json()["path"], to, "{path}");
    }
    let sent = [
        ("X-Header-Remove", "remove-val"),
        ("X-Header-Add-Append", "append-val-1"),
        ("X-Header-Set", "set-val"),
    ];
    for (path, to) in [
        ("/full/rewrite-path-and-modify-headers/test", "/test"),
        ("/prefix/rewrite-path-and-modify-headers/one", "/prefix/one"),
    ] {
        let reply = weir.send("GET", "example.com", path, &sent, "").await;
        assert_eq!(reply.status, 200, "{path}");
        let echo = reply.json();
        assert_eq!(echo["path"], to, "{path}");
        let headers = &echo["headers"];
        assert_eq!(headers["x-header-add"], "header-val-1");
        assert_eq!(headers["x-header-add-append"], "append-val-1,header-val-2");
        assert_eq!(headers["x-header-set"], "set-overwrites-values");
        assert!(headers.get("x-header-remove").is_none(), "{headers}");
    }
}

/// A redirect's answer: status, and the Location's host and port (`None`: the scheme's own).
async fn redirected(weir: &Weir, path: &str) -> (u16, String, Option<u16>) {
    let reply = weir.get("example.com", path).await;
    let location: http::Uri = reply
        .header("location")
        .unwrap_or_default()
        .parse()
        .unwrap();
    let host = location.host().unwrap_or_default().to_string();
    (reply.status.as_u16(), host, location.port_u16())
}

/// HTTPRouteRedirectHostAndStatus
#[tokio::test]
async fn http_route_redirect_host_and_status() {
    let rule = redirect_rule;
    let rules = [
        rule("/hostname-redirect", "{hostname: example.org}"),
        rule("/status-code-301", "{statusCode: 301}"),
        rule(
            "/host-and-status",
            "{statusCode: 301, hostname: example.org}",
        ),
    ]
    .concat();
    let (_backends, weir) = setup("redirect", &rules);
    assert_eq!(
        redirected(&weir, "/hostname-redirect").await,
        (302, "example.org".into(), None)
    );
    assert_eq!(
        redirected(&weir, "/status-code-301").await,
        (301, "example.com".into(), None)
    );
    assert_eq!(
        redirected(&weir, "/host-and-status").await,
        (301, "example.org".into(), None)
    );
}

/// HTTPRouteRedirectPort
#[tokio::test]
async fn http_route_redirect_port() {
    let rule = redirect_rule;
    let rules = [
        rule(
            "/port-and-host-and-status",
            "{port: 8083, hostname: example.org, statusCode: 302}",
        ),
        rule("/port-and-host", "{port: 8083, hostname: example.org}"),
        rule("/port-and-status", "{port: 8083, statusCode: 301}"),
        rule("/port", "{port: 8083}"),
    ]
    .concat();
    let (_backends, weir) = setup("redirect-port", &rules);
    for (path, expected) in [
        ("/port", (302, "example.com", Some(8083))),
        ("/port-and-host", (302, "example.org", Some(8083))),
        ("/port-and-status", (301, "example.com", Some(8083))),
        (
            "/port-and-host-and-status",
            (302, "example.org", Some(8083)),
        ),
    ] {
        let (status, host, port) = redirected(&weir, path).await;
        assert_eq!((status, host.as_str(), port), expected, "{path}");
    }
}

/// HTTPRouteRedirectScheme: to https, alone and with a host or a status; the port becomes
/// https's own (none in the Location), not the listener's 80.
#[tokio::test]
async fn http_route_redirect_scheme() {
    let rule = redirect_rule;
    let rules = [
        rule(
            "/scheme-and-host-and-status",
            "{scheme: https, hostname: example.org, statusCode: 302}",
        ),
        rule("/scheme-and-host", "{scheme: https, hostname: example.org}"),
        rule("/scheme-and-status", "{scheme: https, statusCode: 301}"),
        rule("/scheme", "{scheme: https}"),
    ]
    .concat();
    let (_backends, weir) = setup("redirect-scheme", &rules);
    for (path, status, host) in [
        ("/scheme", 302, "example.com"),
        ("/scheme-and-host", 302, "example.org"),
        ("/scheme-and-status", 301, "example.com"),
        ("/scheme-and-host-and-status", 302, "example.org"),
    ] {
        let reply = weir.get("example.com", path).await;
        assert_eq!(reply.status, status, "{path}");
        let location: http::Uri = reply
            .header("location")
            .unwrap_or_default()
            .parse()
            .unwrap();
        assert_eq!(location.scheme_str(), Some("https"), "{path}: {location}");
        assert_eq!(location.host(), Some(host), "{path}: {location}");
        assert_eq!(location.port_u16(), None, "{path}: {location}");
    }
}

/// HTTPRouteRewriteHost: the Host the backend sees, alone and beside header modifiers.
#[tokio::test]
async fn http_route_rewrite_host() {
    let modifier = "    - type: RequestHeaderModifier\n      requestHeaderModifier: {set: [{name: X-Header-Set, value: set-overwrites-values}], add: [{name: X-Header-Add, value: header-val-1}, {name: X-Header-Add-Append, value: header-val-2}], remove: [X-Header-Remove]}\n";
    let rule = |prefix: &str, host: &str, extra: &str, backend: u8| {
        format!("  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]\n    filters:\n    - type: URLRewrite\n      urlRewrite: {{hostname: {host}}}\n{extra}{}", backend_ref(backend))
    };
    let rules = [
        rule("/one", "one.example.org", "", 1),
        rule("/two", "example.org", "", 2),
        rule(
            "/rewrite-host-and-modify-headers",
            "test.example.org",
            modifier,
            2,
        ),
    ]
    .concat();
    let (_backends, weir) = setup_for("rewrite-host", &["rewrite.example"], &rules);
    for (path, host, backend) in [
        ("/one", "one.example.org", "infra-backend-v1"),
        ("/two", "example.org", "infra-backend-v2"),
    ] {
        let reply = weir.get("rewrite.example", path).await;
        assert_eq!(reply.backend(), backend, "{path}");
        assert_eq!(reply.json()["headers"]["host"], host, "{path}");
    }
    let sent = [
        ("X-Header-Remove", "remove-val"),
        ("X-Header-Add-Append", "append-val-1"),
    ];
    let reply = weir
        .send(
            "GET",
            "rewrite.example",
            "/rewrite-host-and-modify-headers",
            &sent,
            "",
        )
        .await;
    assert_eq!(reply.backend(), "infra-backend-v2");
    let headers = &reply.json()["headers"];
    assert_eq!(headers["host"], "test.example.org");
    assert_eq!(headers["x-header-add"], "header-val-1");
    assert_eq!(headers["x-header-add-append"], "append-val-1,header-val-2");
    assert_eq!(headers["x-header-set"], "set-overwrites-values");
    assert!(headers.get("x-header-remove").is_none(), "{headers}");
}

/// HTTPRouteMatchingAcrossRoutes: two routes whose hostnames overlap (`example.com` and
/// `*.com`): a request both may take goes to the rule with the more specific match (a longer
/// path, a header match), whichever route's hostname is the more specific; hostnames only decide
/// which routes may take it (`/v2` on example.net is not `*.com`'s).
#[tokio::test]
async fn http_route_matching_across_routes() {
    let (_backends, dir) = infra();
    let part1 = http_route(
        "matching-part1",
        &["example.com", "example.net"],
        &format!(
            "  - matches: [{{path: {{type: PathPrefix, value: /}}}}, {{headers: [{{name: version, value: one}}]}}]\n{}",
            backend_ref(1)
        ),
    );
    let part2 = http_route(
        "matching-part2",
        &["*.com"],
        &format!(
            "  - matches: [{{path: {{type: PathPrefix, value: /v2}}}}, {{headers: [{{name: version, value: two}}]}}]\n{}",
            backend_ref(2)
        ),
    );
    let dir = dir.with("part1.yaml", &part1).with("part2.yaml", &part2);
    let weir = Weir::start(&dir);
    let (v1, v2) = (Some("infra-backend-v1"), Some("infra-backend-v2"));
    for (host, path, headers, expected) in [
        ("example.com", "/", &[][..], v1),
        ("example.com", "/example", &[], v1),
        ("example.net", "/example", &[], v1),
        ("example.com", "/example", &[("Version", "one")], v1),
        ("example.com", "/v2", &[], v2),
        ("example.net", "/v2", &[], v1),
        ("example.com", "/v2/example", &[], v2),
        ("example.com", "/", &[("Version", "two")], v2),
    ] {
        let reply = weir.send("GET", host, path, headers, "").await;
        assert_eq!(
            Some(reply.backend().as_str()),
            expected,
            "{host}{path} {headers:?}"
        );
    }
}

/// HTTPRoutePathMatchOrder: several matches per backend, each request taken by the most
/// specific one (an Exact path over any prefix, then the longest prefix), whichever rule or
/// order it is written in.
#[tokio::test]
async fn http_route_path_match_order() {
    let matches = |exact: &str, prefix: &str| {
        format!("[{{path: {{type: Exact, value: {exact}}}}}, {{path: {{type: PathPrefix, value: {prefix}}}}}]")
    };
    let rules = [
        (matches("/match", "/match/prefix"), 1),
        (matches("/match/exact", "/match/prefix/one"), 2),
        (matches("/match/exact/one", "/match"), 3),
    ]
    .iter()
    .map(|(m, n)| format!("  - matches: {m}\n{}", backend_ref(*n)))
    .collect::<String>();
    let (_backends, weir) = setup("path-matching-order", &rules);
    check(
        &weir,
        &[
            ("GET", "/match/exact/one", &[], v(3)),
            ("GET", "/match/exact", &[], v(2)),
            ("GET", "/match", &[], v(1)),
            ("GET", "/match/prefix/one/any", &[], v(2)),
            ("GET", "/match/prefix/any", &[], v(1)),
            ("GET", "/match/any", &[], v(3)),
        ],
    )
    .await;
}

/// HTTPRouteSimpleSameNamespace
#[tokio::test]
async fn http_route_simple_same_namespace() {
    let (_backends, weir) = setup(
        "gateway-conformance-infra-test",
        &backend_ref(1).replacen("   ", "  -", 1),
    );
    check(&weir, &[("GET", "/", &[], Some("infra-backend-v1"))]).await;
}

/// HTTPRouteHostnameIntersection: listeners with an exact and two wildcard hostnames, routes
/// whose hostnames intersect them in every way (exact in exact, exact in wildcard, wildcard
/// over exact, wildcard in wildcard) and one that intersects none; each route serves exactly
/// the intersection.
#[tokio::test]
async fn http_route_hostname_intersection() {
    let (_backends, dir) = infra();
    let gateway = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\nspec:\n  gatewayClassName: weir\n  listeners:\n  - {name: listener-1, port: 80, protocol: HTTP, hostname: very.specific.com}\n  - {name: listener-2, port: 80, protocol: HTTP, hostname: \"*.wildcard.io\"}\n  - {name: listener-3, port: 80, protocol: HTTP, hostname: \"*.anotherwildcard.io\"}\n";
    let route = |name: &str, hosts: &[&str], prefix: &str, n: u8| {
        let rule = format!(
            "  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]\n{}",
            backend_ref(n)
        );
        http_route(name, hosts, &rule)
    };
    let dir = dir
        .with("gw.yaml", gateway)
        .with(
            "r1.yaml",
            &route(
                "specific-host-matches-listener-specific-host",
                &[
                    "non.matching.com",
                    "*.nonmatchingwildcard.io",
                    "very.specific.com",
                ],
                "/s1",
                1,
            ),
        )
        .with(
            "r2.yaml",
            &route(
                "specific-host-matches-listener-wildcard-host",
                &[
                    "non.matching.com",
                    "wildcard.io",
                    "foo.wildcard.io",
                    "bar.wildcard.io",
                    "foo.bar.wildcard.io",
                ],
                "/s2",
                2,
            ),
        )
        .with(
            "r3.yaml",
            &route(
                "wildcard-host-matches-listener-specific-host",
                &["non.matching.com", "*.specific.com"],
                "/s3",
                3,
            ),
        )
        .with(
            "r4.yaml",
            &route(
                "wildcard-host-matches-listener-wildcard-host",
                &["*.anotherwildcard.io"],
                "/s4",
                1,
            ),
        )
        .with(
            "r5.yaml",
            &route(
                "no-intersecting-hosts",
                &["specific.but.wrong.com", "wildcard.io"],
                "/s5",
                2,
            ),
        );
    let weir = Weir::start(&dir);
    let (v1, v2, v3) = (
        Some("infra-backend-v1"),
        Some("infra-backend-v2"),
        Some("infra-backend-v3"),
    );
    for (host, path, expected) in [
        ("very.specific.com", "/s1", v1),
        ("non.matching.com", "/s1", None),
        ("foo.nonmatchingwildcard.io", "/s1", None),
        ("foo.wildcard.io", "/s1", None),
        ("foo.wildcard.io", "/s2", v2),
        ("bar.wildcard.io", "/s2", v2),
        ("foo.bar.wildcard.io", "/s2", v2),
        ("wildcard.io", "/s2", None),
        ("non.matching.com", "/s2", None),
        ("very.specific.com", "/s3", v3),
        ("non.matching.com", "/s3", None),
        ("foo.specific.com", "/s3", None),
        ("foo.anotherwildcard.io", "/s4", v1),
        ("bar.anotherwildcard.io", "/s4", v1),
        ("foo.bar.anotherwildcard.io", "/s4", v1),
        ("anotherwildcard.io", "/s4", None),
        ("foo.wildcard.io", "/s4", None),
        ("specific.but.wrong.com", "/s5", None),
        ("wildcard.io", "/s5", None),
    ] {
        let reply = weir.get(host, path).await;
        match expected {
            Some(backend) => assert_eq!(reply.backend(), backend, "{host}{path}"),
            None => assert_eq!(reply.status, 404, "{host}{path}"),
        }
    }
}

/// HTTPRouteListenerHostnameMatching: one route per listener (by sectionName), the listeners
/// naming `bar.com`, `foo.bar.com` and `*.bar.com`; each host reaches the most specific
/// listener's route.
#[tokio::test]
async fn http_route_listener_hostname_matching() {
    let (_backends, dir) = infra();
    let gateway = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\nspec:\n  gatewayClassName: weir\n  listeners:\n  - {name: listener-1, port: 80, protocol: HTTP, hostname: bar.com}\n  - {name: listener-2, port: 80, protocol: HTTP, hostname: foo.bar.com}\n  - {name: listener-3, port: 80, protocol: HTTP, hostname: \"*.bar.com\"}\n";
    let route = |n: u8| {
        http_route(
            &format!("backend-v{n}"),
            &[],
            &backend_ref(n).replacen("   ", "  -", 1),
        )
        .replace(
            "parentRefs: [{name: gw}]",
            &format!("parentRefs: [{{name: gw, sectionName: listener-{n}}}]"),
        )
    };
    let dir = dir
        .with("gw.yaml", gateway)
        .with("r1.yaml", &route(1))
        .with("r2.yaml", &route(2))
        .with("r3.yaml", &route(3));
    let weir = Weir::start(&dir);
    for (host, expected) in [
        ("bar.com", Some("infra-backend-v1")),
        ("foo.bar.com", Some("infra-backend-v2")),
        ("baz.bar.com", Some("infra-backend-v3")),
        ("boo.bar.com", Some("infra-backend-v3")),
        ("multiple.prefixes.bar.com", Some("infra-backend-v3")),
        ("multiple.prefixes.foo.bar.com", Some("infra-backend-v3")),
        ("foo.com", None),
        ("no.matching.host", None),
    ] {
        let reply = weir.get(host, "/").await;
        match expected {
            Some(backend) => assert_eq!(reply.backend(), backend, "{host}"),
            None => assert_eq!(reply.status, 404, "{host}"),
        }
    }
}

/// HTTPRouteWeight: backends weighted 70, 30 and 0 share the requests in about those
/// proportions (500 requests: each share within 15 points), the zero-weight one gets none.
#[tokio::test]
async fn http_route_weight() {
    let rules = "  - backendRefs:\n    - {name: infra-backend-v1, port: 80, weight: 70}\n    - {name: infra-backend-v2, port: 80, weight: 30}\n    - {name: infra-backend-v3, port: 80, weight: 0}\n";
    let (_backends, weir) = setup("weighted-backends", rules);
    let mut counts = std::collections::HashMap::new();
    for _ in 0..500 {
        *counts
            .entry(weir.get("example.com", "/").await.backend())
            .or_insert(0u32) += 1;
    }
    let share = |name: &str| f64::from(counts.get(name).copied().unwrap_or(0)) / 500.0;
    assert!((share("infra-backend-v1") - 0.7).abs() < 0.15, "{counts:?}");
    assert!((share("infra-backend-v2") - 0.3).abs() < 0.15, "{counts:?}");
    assert_eq!(share("infra-backend-v3"), 0.0, "{counts:?}");
}

/// HTTPRouteMatching: path prefixes by whole segments and header matches in one route.
#[tokio::test]
async fn http_route_matching() {
    let rules = format!(
        "  - matches: [{{path: {{type: PathPrefix, value: /}}}}, {{headers: [{{name: version, value: one}}]}}]\n{}  - matches: [{{path: {{type: PathPrefix, value: /v2}}}}, {{headers: [{{name: version, value: two}}]}}]\n{}",
        backend_ref(1),
        backend_ref(2)
    );
    let (_backends, weir) = setup("matching", &rules);
    let (v1, v2) = (Some("infra-backend-v1"), Some("infra-backend-v2"));
    check(
        &weir,
        &[
            ("GET", "/", &[], v1),
            ("GET", "/example", &[], v1),
            ("GET", "/", &[("Version", "one")], v1),
            ("GET", "/v2", &[], v2),
            ("GET", "/v2/example", &[], v2),
            ("GET", "/v2/", &[], v2),
            ("GET", "/v2example", &[], v1),
            ("GET", "/foo/v2/example", &[], v1),
            ("GET", "/", &[("Version", "two")], v2),
        ],
    )
    .await;
}

/// A Service `name` in `namespace` for `echo`.
fn service_in(namespace: &str, name: &str, echo: &Echo) -> String {
    service(name, &[echo]).replace("namespace: default", &format!("namespace: {namespace}"))
}

/// HTTPRouteCrossNamespace, HTTPRouteReferenceGrant and
/// HTTPRoutePartiallyInvalidViaInvalidReferenceGrant: a route in another namespace that the
/// listener's selector admits reaches its own namespace's backend; a route's backend in another
/// namespace is reached only with a ReferenceGrant for it there (HTTP 500 otherwise, the rest of
/// the route serving).
#[tokio::test]
async fn http_route_cross_namespace_and_reference_grants() {
    let (web, app) = (Echo::start("web-backend"), Echo::start("app-backend-v1"));
    let other = Echo::start("app-backend-v2");
    let namespaces = "apiVersion: v1\nkind: Namespace\nmetadata: {name: web-backend, labels: {gateway-conformance: backend}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: app-backend}\n";
    let gateway = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\nspec:\n  gatewayClassName: weir\n  listeners:\n  - name: http\n    port: 80\n    protocol: HTTP\n    allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {gateway-conformance: backend}}}}\n  - {name: same, port: 80, protocol: HTTP, hostname: grants.example.com}\n";
    let cross = http_route(
        "cross-namespace",
        &["cross.example.com"],
        "  - backendRefs: [{name: web-backend, port: 80}]\n",
    )
    .replace("namespace: default}", "namespace: web-backend}")
    .replace(
        "parentRefs: [{name: gw}]",
        "parentRefs: [{name: gw, namespace: default}]",
    );
    let grants = http_route(
        "reference-grant",
        &["grants.example.com"],
        "  - matches: [{path: {type: PathPrefix, value: /v1}}]\n    backendRefs: [{name: app-backend-v1, namespace: app-backend, port: 80}]\n  - matches: [{path: {type: PathPrefix, value: /v2}}]\n    backendRefs: [{name: app-backend-v2, namespace: app-backend, port: 80}]\n",
    )
    .replace("parentRefs: [{name: gw}]", "parentRefs: [{name: gw, sectionName: same}]");
    // Granted for app-backend-v1 alone.
    let grant = "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: reference-grant, namespace: app-backend}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}]\n  to: [{group: \"\", kind: Service, name: app-backend-v1}]\n";
    let dir = ConfigDir::new()
        .with("ns.yaml", namespaces)
        .with(
            "svc.yaml",
            &[
                service_in("web-backend", "web-backend", &web),
                service_in("app-backend", "app-backend-v1", &app),
                service_in("app-backend", "app-backend-v2", &other),
            ]
            .join("---\n"),
        )
        .with("gw.yaml", gateway)
        .with("cross.yaml", &cross)
        .with("grants.yaml", &grants)
        .with("grant.yaml", grant);
    let weir = Weir::start(&dir);
    assert_eq!(
        weir.get("cross.example.com", "/").await.backend(),
        "web-backend"
    );
    assert_eq!(
        weir.get("grants.example.com", "/v1").await.backend(),
        "app-backend-v1"
    );
    let refused = weir.get("grants.example.com", "/v2").await;
    assert_eq!(refused.status, 500, "not granted: {}", refused.text());
    assert_eq!(refused.header("x-weir-error"), Some("backend-not-found"));
    // HTTPRouteInvalidReferenceGrant: a grant that names another kind grants nothing.
    dir.write(
        "grant.yaml",
        &grant.replace("kind: HTTPRoute", "kind: GRPCRoute"),
    );
    weir_e2e::eventually(
        std::time::Duration::from_secs(10),
        "the grant withdrawn",
        || async { (weir.get("grants.example.com", "/v1").await.status == 500).then_some(()) },
    )
    .await;
}

/// HTTPRouteTimeoutRequest and HTTPRouteTimeoutBackendRequest: a request whose backend takes
/// longer than the rule's `timeouts.request` (or `backendRequest`) gets 504; a quicker one
/// passes; `0s` turns the timeout off.
#[tokio::test]
async fn http_route_timeouts() {
    let rules = format!(
        "  - matches: [{{path: {{type: PathPrefix, value: /request}}}}]\n    timeouts: {{request: 500ms}}\n    filters: [{{type: URLRewrite, urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /sleep}}}}}}]\n{}  - matches: [{{path: {{type: PathPrefix, value: /backend}}}}]\n    timeouts: {{backendRequest: 500ms}}\n    filters: [{{type: URLRewrite, urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /sleep}}}}}}]\n{}  - matches: [{{path: {{type: PathPrefix, value: /disabled}}}}]\n    timeouts: {{request: 0s}}\n    filters: [{{type: URLRewrite, urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /sleep}}}}}}]\n{}",
        backend_ref(1),
        backend_ref(1),
        backend_ref(1)
    );
    let (_backends, weir) = setup("timeouts", &rules);
    for (path, status) in [
        ("/request/1000", 504),
        ("/request/10", 200),
        ("/backend/1000", 504),
        ("/backend/10", 200),
        ("/disabled/1000", 200),
    ] {
        let reply = weir.get("example.com", path).await;
        assert_eq!(reply.status, status, "{path}: {}", reply.text());
    }
}

/// HTTPRouteRequestMirror, HTTPRouteRequestMultipleMirrors and
/// HTTPRouteRequestPercentageMirror: the answer comes from the route's backend; a copy goes to
/// each mirror, to every one of several, and to about the share a `percent` or `fraction` asks.
#[tokio::test]
async fn http_route_request_mirrors() {
    let mirror = |n: u8, share: &str| {
        format!("    - type: RequestMirror\n      requestMirror: {{backendRef: {{name: infra-backend-v{n}, port: 80}}{share}}}\n")
    };
    let rule = |prefix: &str, mirrors: &str| {
        format!("  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]\n    filters:\n{mirrors}{}", backend_ref(1))
    };
    let rules = [
        rule("/mirror", &mirror(2, "")),
        rule("/multi-mirror", &[mirror(2, ""), mirror(3, "")].concat()),
        rule("/percent-mirror", &mirror(2, ", percent: 20")),
        rule(
            "/fraction-mirror",
            &mirror(3, ", fraction: {numerator: 1, denominator: 2}"),
        ),
    ]
    .concat();
    let (backends, weir) = setup("request-mirror", &rules);
    let served = || async {
        let mut counts = Vec::new();
        for b in &backends {
            counts.push(b.served().await);
        }
        counts
    };
    let settle = |expected: Vec<u64>| {
        let served = &served;
        async move {
            weir_e2e::eventually(
                std::time::Duration::from_secs(5),
                "the mirrors' copies",
                || async {
                    let now = served().await;
                    (now == expected).then_some(())
                },
            )
            .await
        }
    };
    assert_eq!(
        weir.get("example.com", "/mirror").await.backend(),
        "infra-backend-v1"
    );
    settle(vec![1, 1, 0]).await;
    assert_eq!(
        weir.get("example.com", "/multi-mirror").await.backend(),
        "infra-backend-v1"
    );
    settle(vec![2, 2, 1]).await;
    for _ in 0..200 {
        assert_eq!(weir.get("example.com", "/percent-mirror").await.status, 200);
        assert_eq!(
            weir.get("example.com", "/fraction-mirror").await.status,
            200
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let counts = served().await;
    assert_eq!(
        counts[0], 402,
        "every request answered by the route's backend"
    );
    let (percent, fraction) = (counts[1] - 2, counts[2] - 1);
    assert!(
        (20..=70).contains(&percent),
        "20 % of 200 mirrored: {percent}"
    );
    assert!(
        (70..=130).contains(&fraction),
        "1/2 of 200 mirrored: {fraction}"
    );
}

/// HTTPRouteBackendProtocolH2C and HTTPRouteBackendProtocolWebSocket: a Service port with
/// `appProtocol: kubernetes.io/h2c` is spoken to over HTTP/2 with prior knowledge, whatever
/// the client spoke; one with `kubernetes.io/ws` carries a WebSocket.
#[tokio::test]
async fn http_route_backend_protocols() {
    let (h2c, ws) = (
        Echo::start("infra-backend-v1"),
        Echo::start("infra-backend-v2"),
    );
    let services = [
        weir_e2e::service_with("h2c", &[(h2c.addr, true)], "appProtocol: kubernetes.io/h2c"),
        weir_e2e::service_with("ws", &[(ws.addr, true)], "appProtocol: kubernetes.io/ws"),
    ];
    let dir = ConfigDir::new()
        .with("svc.yaml", &services.join("---\n"))
        .with("gw.yaml", &gateway())
        .with(
            "h2c.yaml",
            &http_route(
                "backend-protocol-h2c",
                &["h2c.example.com"],
                "  - backendRefs: [{name: h2c, port: 80}]\n",
            ),
        )
        .with(
            "ws.yaml",
            &http_route(
                "backend-protocol-ws",
                &["ws.example.com"],
                "  - backendRefs: [{name: ws, port: 80}]\n",
            ),
        );
    let weir = Weir::start(&dir);
    let reply = weir.get("h2c.example.com", "/").await;
    assert_eq!(reply.backend(), "infra-backend-v1");
    assert_eq!(reply.json()["version"], "HTTP/2.0", "{}", reply.text());
    let (mut socket, head) = weir_e2e::websocket::open_websocket(weir.addr, "ws.example.com").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    weir_e2e::websocket::assert_frames_echo(&mut socket).await;
}

/// HTTPRouteNamedRule: a rule's name changes nothing about what it matches.
#[tokio::test]
async fn http_route_named_rule() {
    let rules = format!(
        "  - name: named-rule\n    matches: [{{path: {{type: PathPrefix, value: /named}}}}]\n{}  - matches: [{{path: {{type: PathPrefix, value: /unnamed}}}}]\n{}",
        backend_ref(1),
        backend_ref(2)
    );
    let (_backends, weir) = setup("http-named-rules", &rules);
    check(
        &weir,
        &[("GET", "/named", &[], v(1)), ("GET", "/unnamed", &[], v(2))],
    )
    .await;
}

/// HTTPRouteRequestHeaderModifierBackendWeights: two weighted backends, each with a filter of
/// its own: every request carries exactly the header of the backend it reached.
#[tokio::test]
async fn http_route_request_header_modifier_backend_weights() {
    let filter = |n: u8| {
        format!("{{name: infra-backend-v{n}, port: 80, weight: 10, filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: Backend, value: infra-backend-v{n}}}]}}}}]}}")
    };
    let rules = format!("  - backendRefs: [{}, {}]\n", filter(1), filter(2));
    let (_backends, weir) = setup("request-header-modifier-backend-weights", &rules);
    let mut reached = std::collections::BTreeSet::new();
    for _ in 0..100 {
        let reply = weir.get("example.com", "/").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let backend = reply.backend();
        assert_eq!(
            reply.json()["headers"]["backend"],
            backend.as_str(),
            "{}",
            reply.text()
        );
        reached.insert(backend);
    }
    assert_eq!(reached.len(), 2, "{reached:?}");
}

/// HTTPRouteAllBackendsWeightZero: a rule whose every backend weighs 0 answers 500.
#[tokio::test]
async fn http_route_all_backends_weight_zero() {
    let rules = "  - backendRefs:\n    - {name: infra-backend-v1, port: 80, weight: 0}\n    - {name: infra-backend-v2, port: 80, weight: 0}\n";
    let (_backends, weir) = setup("all-backends-weight-zero", rules);
    for _ in 0..5 {
        assert_eq!(weir.get("example.com", "/").await.status, 500);
    }
}

/// A Gateway `name` of class weir in `default` with `listeners` (YAML list items).
fn gateway_named(name: &str, listeners: &str) -> String {
    format!("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  gatewayClassName: weir\n  listeners:\n{listeners}")
}

/// An HTTPRoute `name` in `default` with `spec` (indented by 2).
fn route_named(name: &str, spec: &str) -> String {
    format!("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n{spec}")
}

/// HTTPRouteMultipleGateways: a route attached to two Gateways serves on both, beside each
/// Gateway's own route for `/` (each Gateway served by its own gateway process, as the
/// manifests' one deployment per Gateway would).
#[tokio::test]
async fn http_route_multiple_gateways() {
    let (_backends, dir) = infra();
    let http = |from: &str| {
        format!("  - {{name: http, port: 80, protocol: HTTP, allowedRoutes: {{namespaces: {{from: {from}}}}}}}\n")
    };
    let gateways = [
        gateway_named("same-namespace", &http("Same")),
        gateway_named("all-namespaces", &http("All")),
    ];
    let route = |name: &str, parents: &str, path: &str, n: u8| {
        route_named(name, &format!("  parentRefs: {parents}\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n{}", backend_ref(n)))
    };
    let routes = [
        route(
            "multiple-gateways-shared-route",
            "[{name: same-namespace}, {name: all-namespaces}]",
            "/shared",
            1,
        ),
        route(
            "same-namespace-dedicated-route",
            "[{name: same-namespace}]",
            "/",
            2,
        ),
        route(
            "all-namespaces-dedicated-route",
            "[{name: all-namespaces}]",
            "/",
            3,
        ),
    ];
    let dir = dir
        .with("gw.yaml", &gateways.join("---\n"))
        .with("route.yaml", &routes.join("---\n"));
    let same = Weir::start_with(&dir, &["--gateway", "default/same-namespace"]);
    let all = Weir::start_with(&dir, &["--gateway", "default/all-namespaces"]);
    for (weir, dedicated) in [(&same, "infra-backend-v2"), (&all, "infra-backend-v3")] {
        assert_eq!(
            weir.get("example.com", "/shared").await.backend(),
            "infra-backend-v1"
        );
        assert_eq!(weir.get("example.com", "/").await.backend(), dedicated);
    }
}

/// HTTPRouteServiceTypes: backends behind a Service without a selector (EndpointSlices made
/// by hand, one per address family), a headless Service, and a headless one without a
/// selector are all reached.
#[tokio::test]
async fn http_route_service_types() {
    let app = Echo::start("infra-backend-v1");
    let (ip, port) = (app.addr.ip(), app.addr.port());
    let service = |name: &str, spec: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n{spec}  ports: [{{name: first-port, protocol: TCP, port: 8080, targetPort: 3000}}]\n")
    };
    let slice = |name: &str, family: &str, endpoints: &str| {
        format!("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-{}\n  namespace: default\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: {family}\nports: [{{name: first-port, protocol: TCP, port: {port}}}]\nendpoints: {endpoints}\n", family.to_lowercase())
    };
    let ready = format!("[{{addresses: [\"{ip}\"], conditions: {{ready: true, serving: true, terminating: false}}}}]");
    let mut objects = Vec::new();
    for (name, spec) in [
        ("manual-endpointslices", ""),
        (
            "headless",
            "  clusterIP: None\n  selector: {app: infra-backend-v1}\n",
        ),
        ("headless-manual-endpointslices", "  clusterIP: None\n"),
    ] {
        objects.push(service(name, spec));
        objects.push(slice(name, "IPv4", &ready));
        // The IPv6 slice has no endpoints: no IPv6 address here, as upstream's patch skips.
        objects.push(slice(name, "IPv6", "[]"));
    }
    let rules: String = ["manual-endpointslices", "headless", "headless-manual-endpointslices"]
        .iter()
        .map(|name| format!("  - matches: [{{path: {{type: Exact, value: /{name}}}}}]\n    backendRefs: [{{name: {name}, port: 8080}}]\n"))
        .collect();
    let dir = ConfigDir::new()
        .with("svc.yaml", &objects.join("---\n"))
        .with("gw.yaml", &gateway())
        .with("route.yaml", &http_route("service-types", &[], &rules));
    let weir = Weir::start(&dir);
    for path in [
        "/manual-endpointslices",
        "/headless",
        "/headless-manual-endpointslices",
    ] {
        let reply = weir.get("example.com", path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        assert_eq!(reply.backend(), "infra-backend-v1", "{path}");
    }
}

/// HTTPRouteHTTPSListener: two HTTPS listeners on one port, one for any name and one for
/// `second-example.org`; a route for `example.org` on the first and a route without hostnames
/// on the second by its sectionName. Each name reaches its route; a name no route takes, 404.
#[tokio::test]
async fn http_route_https_listener() {
    use weir_e2e::{
        tls::{https_get, KeyType, Pki},
        tls_secret,
    };
    let (_backends, dir) = infra();
    let pki = Pki::new();
    let names = ["example.org", "unknown-example.org", "second-example.org"];
    let cert = pki.issue(&names, KeyType::Ecdsa);
    let tls = "tls: {certificateRefs: [{name: tls-validity-checks-certificate}]}";
    let listeners = format!("  - {{name: https, port: 443, protocol: HTTPS, allowedRoutes: {{namespaces: {{from: Same}}}}, {tls}}}\n  - {{name: https-with-hostname, port: 443, protocol: HTTPS, hostname: second-example.org, allowedRoutes: {{namespaces: {{from: Same}}}}, {tls}}}\n");
    let gateway = "same-namespace-with-https-listener";
    let routes = [
        route_named("httproute-https-test", &format!("  parentRefs: [{{name: {gateway}}}]\n  hostnames: [example.org]\n  rules:\n  -{}", &backend_ref(1)[3..])),
        route_named("httproute-https-test-no-hostname", &format!("  parentRefs: [{{name: {gateway}, sectionName: https-with-hostname}}]\n  rules:\n  -{}", &backend_ref(2)[3..])),
    ];
    let dir = dir
        .with("gw.yaml", &gateway_named(gateway, &listeners))
        .with(
            "cert.yaml",
            &tls_secret("tls-validity-checks-certificate", &cert),
        )
        .with("route.yaml", &routes.join("---\n"));
    let weir = Weir::start(&dir);
    for (host, expected) in [
        ("example.org", Some("infra-backend-v1")),
        ("unknown-example.org", None),
        ("second-example.org", Some("infra-backend-v2")),
    ] {
        let client = pki.client(&["http/1.1"], false);
        let reply = https_get(weir.tls, host, client, "/", &[])
            .await
            .unwrap()
            .reply;
        match expected {
            Some(backend) => {
                assert_eq!(reply.status, 200, "{host}");
                assert_eq!(reply.backend(), backend, "{host}");
            }
            None => assert_eq!(reply.status, 404, "{host}"),
        }
    }
}
