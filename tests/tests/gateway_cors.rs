//! The Gateway API's CORS filter, as the upstream conformance test `HTTPRouteCORS`
//! (kubernetes-sigs/gateway-api, conformance/tests/httproute-cors) checks it: the same routes
//! and the same requests and expected answers, against the real `weir-ingress`; then what a
//! hostile page or a careless backend would try.

use http::StatusCode;
use weir_e2e::{
    api_key_policy, gateway, http_route, service, ConfigDir, Echo, Reply, Weir, API_KEYS,
};

const HOST: &str = "cors.example.com";

/// The upstream test's routes (four HTTPRoutes there, five rules here), on one host.
fn routes(app: &Echo) -> ConfigDir {
    let rule = |path: &str, cors: &str| {
        format!(
            "  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n    filters:\n    - type: CORS\n      cors: {cors}\n    backendRefs: [{{name: app, port: 80}}]\n"
        )
    };
    let rules = [
        rule(
            "/cors-1",
            "{allowOrigins: [\"https://www.foo.com\", \"https://*.bar.com\"], allowMethods: [GET, OPTIONS], allowHeaders: [x-header-1, x-header-2], exposeHeaders: [x-header-3, x-header-4], allowCredentials: true, maxAge: 3600}",
        ),
        rule(
            "/cors-2",
            "{allowOrigins: [\"https://www.foo.com\"], allowMethods: [\"*\"]}",
        ),
        rule(
            "/cors-wildcard-origin",
            "{allowOrigins: [\"*\"], allowMethods: [PUT]}",
        ),
        rule(
            "/cors-wildcard-methods-headers-unauth",
            "{allowOrigins: [\"https://*.foo.com\"], allowMethods: [\"*\"], allowHeaders: [\"*\"], allowCredentials: false}",
        ),
        rule(
            "/cors-wildcard-methods-headers",
            "{allowOrigins: [\"https://*.foo.com\"], allowMethods: [\"*\"], allowHeaders: [\"*\"], allowCredentials: true}",
        ),
    ];
    ConfigDir::new()
        .with("svc.yaml", &service("app", &[app]))
        .with("gw.yaml", &gateway())
        .with("route.yaml", &http_route("cors", &[HOST], &rules.concat()))
}

async fn call(weir: &Weir, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    weir.send(method, HOST, path, headers, "").await
}

/// A header's value with the spaces after commas taken out (either spelling is valid).
fn value(reply: &Reply, name: &str) -> Option<String> {
    reply.header(name).map(|v| v.replace(", ", ","))
}

fn preflight<'a>(origin: &'a str, method: &'a str, headers: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut out = vec![
        ("origin", origin),
        ("access-control-request-method", method),
    ];
    if !headers.is_empty() {
        out.push(("access-control-request-headers", headers));
    }
    out
}

/// HTTPRouteCORS
#[tokio::test]
async fn httproute_cors() {
    let app = Echo::start("app");
    let dir = routes(&app);
    let weir = Weir::start(&dir);
    let ok = |r: &Reply| assert!(matches!(r.status.as_u16(), 200 | 204), "{}", r.status);

    // Preflights from an exact origin, a wildcard one, and one with labels left of the `*`:
    // answered by the gateway with the whole policy.
    for origin in [
        "https://www.foo.com",
        "https://www.bar.com",
        "https://xpto.www.bar.com",
    ] {
        let r = call(
            &weir,
            "OPTIONS",
            "/cors-1",
            &preflight(origin, "GET", "x-header-1, x-header-2"),
        )
        .await;
        ok(&r);
        assert_eq!(r.header("access-control-allow-origin"), Some(origin));
        assert_eq!(
            value(&r, "access-control-allow-methods").as_deref(),
            Some("GET,OPTIONS")
        );
        assert_eq!(
            value(&r, "access-control-allow-headers").as_deref(),
            Some("x-header-1,x-header-2")
        );
        assert_eq!(
            value(&r, "access-control-expose-headers").as_deref(),
            Some("x-header-3,x-header-4")
        );
        assert_eq!(r.header("access-control-max-age"), Some("3600"));
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
        assert!(r.body.is_empty(), "the gateway answered, not the backend");
    }
    // A preflight from an origin not listed: no CORS headers.
    let r = call(
        &weir,
        "OPTIONS",
        "/cors-1",
        &preflight("https://foobar.com", "GET", ""),
    )
    .await;
    assert!(matches!(r.status.as_u16(), 200 | 204 | 403), "{}", r.status);
    assert_eq!(r.header("access-control-allow-origin"), None);

    // Simple requests reach the backend and come back with the origin allowed, or not.
    for (origin, allowed) in [
        ("https://www.foo.com", true),
        ("https://www.bar.com", true),
        ("https://foobar.com", false),
    ] {
        let headers = [("origin", origin), ("access-control-request-method", "GET")];
        let r = call(&weir, "GET", "/cors-1", &headers).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.backend(), "app");
        let expected = allowed.then_some(origin);
        assert_eq!(
            r.header("access-control-allow-origin"),
            expected,
            "{origin}"
        );
        let credentials = allowed.then_some("true");
        assert_eq!(
            r.header("access-control-allow-credentials"),
            credentials,
            "{origin}"
        );
    }

    // `allowMethods: ["*"]` without credentials.
    let r = call(
        &weir,
        "OPTIONS",
        "/cors-2",
        &preflight("https://www.foo.com", "POST", ""),
    )
    .await;
    ok(&r);
    let methods = r.header("access-control-allow-methods");
    assert!(matches!(methods, Some("POST" | "*")), "{methods:?}");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://www.foo.com")
    );
    assert_eq!(r.header("access-control-allow-credentials"), None);

    // `allowOrigins: ["*"]`: any origin, a port included; preflight and request.
    for origin in ["https://foobar.com", "https://foobar.com:12345"] {
        let r = call(
            &weir,
            "OPTIONS",
            "/cors-wildcard-origin",
            &preflight(origin, "PUT", ""),
        )
        .await;
        ok(&r);
        let allowed = r.header("access-control-allow-origin");
        assert!(
            allowed == Some(origin) || allowed == Some("*"),
            "{allowed:?}"
        );
        assert_eq!(r.header("access-control-allow-methods"), Some("PUT"));
        assert_eq!(r.header("access-control-allow-credentials"), None);
        let r = call(&weir, "PUT", "/cors-wildcard-origin", &[("origin", origin)]).await;
        assert_eq!(r.status, StatusCode::OK);
        let allowed = r.header("access-control-allow-origin");
        assert!(
            allowed == Some(origin) || allowed == Some("*"),
            "{allowed:?}"
        );
        assert_eq!(r.header("access-control-allow-credentials"), None);
    }

    // Wildcard methods and headers with credentials: what the request asked for, named, and
    // the origin echoed; the same without credentials hides the credentials header.
    let asked = preflight("https://other.foo.com", "PUT", "x-header-1, x-header-2");
    let r = call(&weir, "OPTIONS", "/cors-wildcard-methods-headers", &asked).await;
    ok(&r);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://other.foo.com")
    );
    assert_eq!(r.header("access-control-allow-methods"), Some("PUT"));
    assert_eq!(
        value(&r, "access-control-allow-headers").as_deref(),
        Some("x-header-1,x-header-2")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    let r = call(
        &weir,
        "OPTIONS",
        "/cors-wildcard-methods-headers-unauth",
        &asked,
    )
    .await;
    ok(&r);
    assert!(matches!(
        r.header("access-control-allow-origin"),
        Some("https://other.foo.com" | "*")
    ));
    assert!(matches!(
        r.header("access-control-allow-methods"),
        Some("PUT" | "*")
    ));
    let headers = value(&r, "access-control-allow-headers");
    assert!(
        matches!(headers.as_deref(), Some("x-header-1,x-header-2" | "*")),
        "{headers:?}"
    );
    assert_eq!(r.header("access-control-allow-credentials"), None);

    // Credentialed requests (a cookie) to the same two paths.
    let creds = [("origin", "https://other.foo.com"), ("cookie", "foo=bar")];
    let r = call(&weir, "GET", "/cors-wildcard-methods-headers", &creds).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://other.foo.com")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    let r = call(
        &weir,
        "GET",
        "/cors-wildcard-methods-headers-unauth",
        &creds,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://other.foo.com")
    );
    assert_eq!(r.header("access-control-allow-credentials"), None);
}

/// CORSAllowCredentialsBehavior
#[tokio::test]
async fn cors_allow_credentials_behavior() {
    let app = Echo::start("app");
    let rule = |path: &str, credentials: bool| {
        format!(
            "  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n    filters: [{{type: CORS, cors: {{allowOrigins: [\"https://app.example\"], allowCredentials: {credentials}}}}}]\n    backendRefs: [{{name: app, port: 80}}]\n"
        )
    };
    let rules =
        rule("/cors-behavior-creds-false", false) + &rule("/cors-behavior-creds-true", true);
    let dir = ConfigDir::new()
        .with("svc.yaml", &service("app", &[&app]))
        .with("gw.yaml", &gateway())
        .with(
            "route.yaml",
            &http_route("cors-allow-credentials", &[HOST], &rules),
        );
    let weir = Weir::start(&dir);
    let headers = [
        ("origin", "https://app.example"),
        ("cookie", "sid=abc123"),
        ("authorization", "Bearer test"),
    ];
    let r = call(&weir, "GET", "/cors-behavior-creds-false", &headers).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("access-control-allow-credentials"), None);
    let r = call(&weir, "GET", "/cors-behavior-creds-true", &headers).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
}

/// A browser sends its preflight without credentials: the gateway answers it even on a route
/// that needs an API key, without reaching the backend, and the route's own requests still
/// need the key, their refusals carrying the CORS headers so the page can read them. A rule
/// that matches only PUT answers the preflight asking about PUT.
#[tokio::test]
async fn a_preflight_needs_no_credentials_and_the_routes_requests_still_do() {
    let app = Echo::start("app");
    let rules = "  - matches: [{path: {type: PathPrefix, value: /api}, method: PUT}]\n    filters: [{type: CORS, cors: {allowOrigins: [\"https://app.example\"], allowHeaders: [x-api-key], allowCredentials: true}}]\n    backendRefs: [{name: app, port: 80}]\n";
    let dir = ConfigDir::new()
        .with("svc.yaml", &service("app", &[&app]))
        .with("gw.yaml", &gateway())
        .with("route.yaml", &http_route("shop", &[HOST], rules))
        .with("keys.yaml", API_KEYS)
        .with("auth.yaml", &api_key_policy("x-api-key"));
    let weir = Weir::start(&dir);
    let served = app.served().await;

    let r = call(
        &weir,
        "OPTIONS",
        "/api/orders",
        &preflight("https://app.example", "PUT", "x-api-key"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(r.header("access-control-allow-headers"), Some("x-api-key"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));

    let origin = [("origin", "https://app.example")];
    let r = call(&weir, "PUT", "/api/orders", &origin).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(r.headers.get_all("vary").iter().any(|v| v == "origin"));
    // An OPTIONS that is not a preflight (no Access-Control-Request-Method) is no exception,
    // and neither is a preflight asking about a method no CORS rule takes.
    let r = call(&weir, "OPTIONS", "/api/orders", &origin).await;
    assert_ne!(r.status, StatusCode::OK);
    let r = call(
        &weir,
        "OPTIONS",
        "/api/orders",
        &preflight("https://app.example", "DELETE", ""),
    )
    .await;
    assert_ne!(r.status, StatusCode::OK);
    assert_eq!(app.served().await, served, "nothing reached the backend");

    let keyed = [
        ("origin", "https://app.example"),
        ("x-api-key", "k-mobile-123"),
    ];
    let r = call(&weir, "PUT", "/api/orders", &keyed).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(app.served().await, served + 1);
}

/// What a hostile page tries against a CORS route, and what a careless backend would leak:
/// look-alike origins, the opaque `null` origin, a backend's own permissive headers; and a
/// preflight needs no credentials while the route's own requests still do.
#[tokio::test]
async fn cors_refuses_lookalike_and_null_origins_and_overrides_the_backends_headers() {
    let app = Echo::start("app");
    let dir = routes(&app);
    let weir = Weir::start(&dir);
    for origin in [
        "https://www.bar.com.evil.net",
        "https://evilbar.com",
        "https://bar.com",
        "http://www.foo.com",
        "https://www.foo.com:8443",
        "https://www.foo.com.",
        "https://evil.net/https://www.foo.com",
        "https://www.foo.com@evil.net",
        "https://www.foo.com:0443",
        "https://a..bar.com",
        "null",
    ] {
        let r = call(&weir, "OPTIONS", "/cors-1", &preflight(origin, "GET", "")).await;
        assert_eq!(r.header("access-control-allow-origin"), None, "{origin}");
        assert_eq!(
            r.header("access-control-allow-credentials"),
            None,
            "{origin}"
        );
        let r = call(&weir, "GET", "/cors-1", &[("origin", origin)]).await;
        assert_eq!(r.header("access-control-allow-origin"), None, "{origin}");
    }
    // Even a wildcard policy never answers `null` (a sandboxed frame), nor a request with two
    // Origin fields.
    let r = call(&weir, "GET", "/cors-wildcard-origin", &[("origin", "null")]).await;
    assert_eq!(r.header("access-control-allow-origin"), None);
    let two = [
        ("origin", "https://www.foo.com"),
        ("origin", "https://evil.net"),
    ];
    let r = call(&weir, "GET", "/cors-1", &two).await;
    assert_eq!(r.header("access-control-allow-origin"), None);

    // A backend that answers `Access-Control-Allow-Origin: *` with credentials: the route's
    // policy replaces it (the echo backend adds what `?respond=` asks).
    let path = "/cors-1?respond=access-control-allow-origin:*&respond=access-control-allow-credentials:true";
    let r = call(
        &weir,
        "GET",
        path,
        &[("origin", "https://attacker.example")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("access-control-allow-origin"),
        None,
        "{:?}",
        r.headers
    );
    assert_eq!(r.header("access-control-allow-credentials"), None);
    let vary = r.headers.get_all("vary").iter().any(|v| v == "origin");
    assert!(vary, "Vary: Origin, for caches: {:?}", r.headers);
}
