//! Core HTTPRoute matching, as the upstream conformance tests HTTPExactPathMatching,
//! HTTPRouteMethodMatching and HTTPRouteQueryParamMatching check it (kubernetes-sigs/gateway-api,
//! conformance/tests): one route per test with the rules those tests apply, and every request
//! they send with the backend (or 404) they expect, against the real `weir-ingress`.

use weir_e2e::{gateway, http_route, service, ConfigDir, Echo, Weir};

/// The three infra backends upstream's tests route to, and a Weir serving `rules` for any host.
fn setup(name: &str, rules: &str) -> (Vec<Echo>, Weir) {
    let names = ["infra-backend-v1", "infra-backend-v2", "infra-backend-v3"];
    let backends: Vec<Echo> = names.iter().map(|n| Echo::start(n)).collect();
    let services: Vec<String> = backends
        .iter()
        .zip(names)
        .map(|(b, n)| service(n, &[b]))
        .collect();
    let dir = ConfigDir::new()
        .with("svc.yaml", &services.join("---\n"))
        .with("gw.yaml", &gateway())
        .with("route.yaml", &http_route(name, &[], rules));
    (backends, Weir::start(&dir))
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
    let v =
        |n: u8| Some(["infra-backend-v1", "infra-backend-v2", "infra-backend-v3"][n as usize - 1]);
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
    let v =
        |n: u8| Some(["infra-backend-v1", "infra-backend-v2", "infra-backend-v3"][n as usize - 1]);
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
