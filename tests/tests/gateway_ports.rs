//! Gateway listeners on ports of their own: a route attached to a listener is served on that
//! listener's port only, a listener on a port other than the gateway's own two gets a socket
//! of its own (bound as the listener appears, closed as it goes), redirects keep the
//! listener's port, and `--gateway` keeps Gateways apart. The upstream conformance tests
//! HTTPRouteListenerPortMatching and HTTPRouteRedirectPortAndScheme
//! (kubernetes-sigs/gateway-api, conformance/tests) are mirrored with the same listeners,
//! routes and requests; their ports 8080 and 8090 are free ports here, since tests share the
//! machine (the gateway's home ports, 80 and 443, are `--listen` and `--listen-tls`).

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use tokio::net::TcpStream;
use weir_e2e::{
    eventually, free_port, request, service,
    tls::{https_get, KeyType, Pki},
    tls_secret, ConfigDir, Echo, Reply, Weir,
};

const NAMES: [&str; 3] = ["infra-backend-v1", "infra-backend-v2", "infra-backend-v3"];

/// The three infra backends and their Services.
fn infra() -> (Vec<Echo>, ConfigDir) {
    let backends: Vec<Echo> = NAMES.iter().map(|n| Echo::start(n)).collect();
    let services: Vec<String> = backends
        .iter()
        .zip(NAMES)
        .map(|(b, n)| service(n, &[b]))
        .collect();
    (
        backends,
        ConfigDir::new().with("svc.yaml", &services.join("---\n")),
    )
}

/// A Gateway of class `weir` in `default` with the `listeners:` body given.
fn gateway(name: &str, listeners: &str) -> String {
    format!("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  gatewayClassName: weir\n  listeners:\n{listeners}")
}

/// An HTTPRoute in `default` with the `parentRefs:` and `rules:` bodies given.
fn route(name: &str, parents: &str, rules: &str) -> String {
    format!("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs: {parents}\n  rules:\n{rules}")
}

fn to(n: u8) -> String {
    format!("  - backendRefs: [{{name: infra-backend-v{n}, port: 80}}]\n")
}

/// `GET path` with `Host: host` to `addr`, once `addr` accepts connections (a socket of its
/// own is bound just after the version that asks for it is served).
async fn get_at(addr: SocketAddr, host: &str, path: &str) -> Reply {
    eventually(
        Duration::from_secs(5),
        "the listener's port open",
        || async { TcpStream::connect(addr).await.ok().map(|_| ()) },
    )
    .await;
    request(addr, host, path, &[], Bytes::new(), "GET").await
}

fn at(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// HTTPRouteListenerPortMatching
#[tokio::test]
async fn http_route_listener_port_matching() {
    let (p8080, p8090) = (free_port(), free_port());
    let listeners = format!(
        "  - {{name: listener-1, port: 80, protocol: HTTP, hostname: foo.com}}\n  - {{name: listener-2, port: {p8080}, protocol: HTTP, hostname: foo.com}}\n  - {{name: listener-3, port: {p8080}, protocol: HTTP, hostname: bar.com}}\n  - {{name: listener-4, port: {p8090}, protocol: HTTP, hostname: foo.com}}\n  - {{name: listener-5, port: {p8090}, protocol: HTTP, hostname: bar.com}}\n"
    );
    let (_backends, dir) = infra();
    let dir = dir
        .with("gw.yaml", &gateway("gw", &listeners))
        .with(
            "v1.yaml",
            &route("backend-v1", "[{name: gw, port: 80}]", &to(1)),
        )
        .with(
            "v2.yaml",
            &route(
                "backend-v2",
                &format!("[{{name: gw, port: {p8080}}}]"),
                &to(2),
            ),
        )
        .with(
            "v3.yaml",
            &route(
                "backend-v3",
                &format!("[{{name: gw, port: {p8090}, sectionName: listener-4}}]"),
                &to(3),
            ),
        );
    let weir = Weir::start(&dir);
    let cases: [(SocketAddr, String, Option<u8>); 7] = [
        (weir.addr, "foo.com".into(), Some(1)),
        (at(p8080), format!("foo.com:{p8080}"), Some(2)),
        (at(p8080), format!("bar.com:{p8080}"), Some(2)),
        (at(p8090), format!("foo.com:{p8090}"), Some(3)),
        (at(p8090), format!("bar.com:{p8090}"), None),
        // A route is its listeners' alone: not on the home port, nor on another listener's.
        (weir.addr, "bar.com".into(), None),
        (at(p8090), format!("foo.com:{p8090}"), Some(3)),
    ];
    for (addr, host, backend) in cases {
        let reply = get_at(addr, &host, "/").await;
        match backend {
            Some(n) => {
                assert_eq!(reply.status, 200, "{host} at {addr}: {}", reply.text());
                assert_eq!(reply.backend(), NAMES[n as usize - 1], "{host} at {addr}");
            }
            None => assert_eq!(reply.status, 404, "{host} at {addr}: {}", reply.text()),
        }
    }
}

/// HTTPRouteRedirectPortAndScheme: with no port given, a redirect keeps the port of the
/// listener the request came to (as clients reach it, 80 for `--listen`), unless it changes
/// the scheme (then the scheme's own port); a scheme's well-known port is left out.
#[tokio::test]
async fn http_route_redirect_port_and_scheme() {
    let p8080 = free_port();
    let pki = Pki::new();
    let cert = pki.issue(&["example.org"], KeyType::Ecdsa);
    let redirect = |path: &str, extra: &str| {
        format!("  - matches: [{{path: {{type: PathPrefix, value: /{path}}}}}]\n    filters: [{{type: RequestRedirect, requestRedirect: {{hostname: example.org{extra}}}}}]\n")
    };
    let for_80: String = [
        ("scheme-nil-and-port-nil", ""),
        ("scheme-nil-and-port-80", ", port: 80"),
        ("scheme-nil-and-port-8080", ", port: 8080"),
        ("scheme-https-and-port-nil", ", scheme: https"),
        ("scheme-https-and-port-443", ", scheme: https, port: 443"),
        ("scheme-https-and-port-8443", ", scheme: https, port: 8443"),
    ]
    .iter()
    .map(|(p, e)| redirect(p, e))
    .collect();
    let for_8080: String = [
        ("scheme-nil-and-port-nil", ""),
        ("scheme-nil-and-port-80", ", port: 80"),
        ("scheme-https-and-port-nil", ", scheme: https"),
    ]
    .iter()
    .map(|(p, e)| redirect(p, e))
    .collect();
    let for_443: String = [
        ("scheme-nil-and-port-nil", ""),
        ("scheme-nil-and-port-443", ", port: 443"),
        ("scheme-nil-and-port-8443", ", port: 8443"),
        ("scheme-http-and-port-nil", ", scheme: http"),
        ("scheme-http-and-port-80", ", scheme: http, port: 80"),
        ("scheme-http-and-port-8080", ", scheme: http, port: 8080"),
    ]
    .iter()
    .map(|(p, e)| redirect(p, e))
    .collect();
    let (_backends, dir) = infra();
    let dir = dir
        .with(
            "gw.yaml",
            &[
                gateway("same-namespace", "  - {name: http, port: 80, protocol: HTTP}\n"),
                gateway(
                    "same-namespace-with-http-listener-on-8080",
                    &format!("  - {{name: http, port: {p8080}, protocol: HTTP}}\n"),
                ),
                gateway(
                    "same-namespace-with-https-listener",
                    "  - {name: https, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: tls-validity-checks-certificate}]}}\n",
                ),
            ]
            .join("---\n"),
        )
        .with(
            "cert.yaml",
            &tls_secret("tls-validity-checks-certificate", &cert),
        )
        .with(
            "routes.yaml",
            &[
                route(
                    "http-route-for-listener-on-port-80",
                    "[{name: same-namespace}]",
                    &for_80,
                ),
                route(
                    "http-route-for-listener-on-port-8080",
                    "[{name: same-namespace-with-http-listener-on-8080}]",
                    &for_8080,
                ),
                route(
                    "http-route-for-listener-on-port-443",
                    "[{name: same-namespace-with-https-listener}]",
                    &for_443,
                ),
            ]
            .join("---\n"),
        );
    let weir = Weir::start(&dir);
    let location = |reply: &Reply, path: &str| {
        assert_eq!(reply.status, 302, "{path}: {}", reply.text());
        reply.header("location").unwrap_or_default().to_string()
    };
    for (path, expected) in [
        ("scheme-nil-and-port-nil", "http://example.org"),
        ("scheme-nil-and-port-80", "http://example.org"),
        ("scheme-nil-and-port-8080", "http://example.org:8080"),
        ("scheme-https-and-port-nil", "https://example.org"),
        ("scheme-https-and-port-443", "https://example.org"),
        ("scheme-https-and-port-8443", "https://example.org:8443"),
    ] {
        let reply = get_at(weir.addr, "example.com", &format!("/{path}")).await;
        assert_eq!(location(&reply, path), format!("{expected}/{path}"));
    }
    for (path, expected) in [
        (
            "scheme-nil-and-port-nil",
            format!("http://example.org:{p8080}"),
        ),
        ("scheme-nil-and-port-80", "http://example.org".into()),
        ("scheme-https-and-port-nil", "https://example.org".into()),
    ] {
        let host = format!("example.com:{p8080}");
        let reply = get_at(at(p8080), &host, &format!("/{path}")).await;
        assert_eq!(location(&reply, path), format!("{expected}/{path}"));
    }
    let client = pki.client(&["http/1.1"], false);
    for (path, expected) in [
        ("scheme-nil-and-port-nil", "https://example.org"),
        ("scheme-nil-and-port-443", "https://example.org"),
        ("scheme-nil-and-port-8443", "https://example.org:8443"),
        ("scheme-http-and-port-nil", "http://example.org"),
        ("scheme-http-and-port-80", "http://example.org"),
        ("scheme-http-and-port-8080", "http://example.org:8080"),
    ] {
        let reply = https_get(
            weir.tls,
            "example.org",
            client.clone(),
            &format!("/{path}"),
            &[],
        )
        .await
        .unwrap();
        assert_eq!(location(&reply.reply, path), format!("{expected}/{path}"));
    }
    // The HTTP listeners' routes are not the HTTPS listener's, and the other way round.
    let reply = https_get(
        weir.tls,
        "example.org",
        client,
        "/scheme-https-and-port-8443",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(reply.reply.status, 404);
    let reply = get_at(weir.addr, "example.com", "/scheme-http-and-port-8080").await;
    assert_eq!(reply.status, 404);
}

/// A listener added to a running gateway gets its port, serving its routes; removed, its
/// port closes; the home port serves throughout.
#[tokio::test]
async fn listener_ports_open_and_close_with_their_listeners() {
    let port = free_port();
    let (_backends, dir) = infra();
    let home = "  - {name: http, port: 80, protocol: HTTP}\n";
    let dir = dir
        .with("gw.yaml", &gateway("gw", home))
        .with(
            "v1.yaml",
            &route("home", "[{name: gw, sectionName: http}]", &to(1)),
        )
        .with(
            "v2.yaml",
            &route("extra", "[{name: gw, sectionName: extra}]", &to(2)),
        );
    let weir = Weir::start(&dir);
    assert!(TcpStream::connect(at(port)).await.is_err());

    let extra = format!("{home}  - {{name: extra, port: {port}, protocol: HTTP}}\n");
    dir.write("gw.yaml", &gateway("gw", &extra));
    let reply = get_at(at(port), "example.com", "/").await;
    assert_eq!(reply.backend(), "infra-backend-v2");
    assert_eq!(
        weir.get("example.com", "/").await.backend(),
        "infra-backend-v1"
    );

    dir.write("gw.yaml", &gateway("gw", home));
    eventually(Duration::from_secs(5), "the port closed", || async {
        TcpStream::connect(at(port)).await.is_err().then_some(())
    })
    .await;
    assert_eq!(
        weir.get("example.com", "/").await.backend(),
        "infra-backend-v1"
    );
}

/// A Gateway listener cannot take a port something else holds (another process, the
/// gateway's own admin port): it is not served, the failure is logged and counted, and the
/// rest of the configuration serves; what held the port keeps it.
#[tokio::test]
async fn a_listener_on_a_port_in_use_is_not_served_and_the_rest_serves() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held_port = held.local_addr().unwrap().port();
    let (_backends, dir) = infra();
    let dir = dir
        .with(
            "v1.yaml",
            &route("home", "[{name: gw, sectionName: http}]", &to(1)),
        )
        .with(
            "v2.yaml",
            &route("taken", "[{name: gw, sectionName: taken}]", &to(2)),
        );
    let weir = Weir::start(&dir);
    let admin_port = weir.admin.port();
    let listeners = format!("  - {{name: http, port: 80, protocol: HTTP}}\n  - {{name: taken, port: {held_port}, protocol: HTTP}}\n  - {{name: admin, port: {admin_port}, protocol: HTTP}}\n");
    dir.write("gw.yaml", &gateway("gw", &listeners));
    let failures = eventually(Duration::from_secs(5), "bind failures counted", || async {
        weir.metric("weir_listener_bind_failures_total")
            .await
            .filter(|n| *n >= 2.0)
    })
    .await;
    assert!(failures >= 2.0);
    assert_eq!(
        weir.get("example.com", "/").await.backend(),
        "infra-backend-v1"
    );
    // The admin port is still the admin's, and the held port still its holder's.
    assert_eq!(weir.admin_get("/readyz").await.status, 200);
    let _client = TcpStream::connect(at(held_port)).await.unwrap();
    held.set_nonblocking(false).unwrap();
    let (accepted, _) = held.accept().unwrap();
    drop(accepted);
    assert!(
        weir.stderr()
            .iter()
            .any(|l| l.contains("cannot serve a Gateway listener port")),
        "{:?}",
        weir.stderr()
    );
}

/// `--gateway` keeps Gateways apart: two Gateways on the same port, each served by its own
/// gateway process, a route shared by both served by both, each dedicated route by its own.
#[tokio::test]
async fn each_gateway_process_serves_the_gateways_it_is_given() {
    let (_backends, dir) = infra();
    let listener =
        "  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}\n";
    let dir = dir
        .with(
            "gw.yaml",
            &[gateway("a", listener), gateway("b", listener)].join("---\n"),
        )
        .with(
            "shared.yaml",
            &route("shared", "[{name: a}, {name: b}]", &to(1)),
        )
        .with(
            "dedicated.yaml",
            &[
                route(
                    "a-only",
                    "[{name: a}]",
                    "  - matches: [{path: {type: PathPrefix, value: /two}}]\n    backendRefs: [{name: infra-backend-v2, port: 80}]\n",
                ),
                route(
                    "b-only",
                    "[{name: b}]",
                    "  - matches: [{path: {type: PathPrefix, value: /two}}]\n    backendRefs: [{name: infra-backend-v3, port: 80}]\n",
                ),
            ]
            .join("---\n"),
        );
    let a = Weir::start_with(&dir, &["--gateway", "default/a"]);
    let b = Weir::start_with(&dir, &["--gateway", "default/b"]);
    assert_eq!(
        a.get("example.com", "/").await.backend(),
        "infra-backend-v1"
    );
    assert_eq!(
        b.get("example.com", "/").await.backend(),
        "infra-backend-v1"
    );
    assert_eq!(
        a.get("example.com", "/two").await.backend(),
        "infra-backend-v2"
    );
    assert_eq!(
        b.get("example.com", "/two").await.backend(),
        "infra-backend-v3"
    );
    // Without --gateway, both Gateways' routes share the port: the older of two equal
    // matches serves (here both were read at once: `namespace/name` decides).
    let both = Weir::start(&dir);
    assert_eq!(
        both.get("example.com", "/two").await.backend(),
        "infra-backend-v2"
    );
}

/// An HTTPS listener (with its certificate) on `port` for `hostname`, named `name`.
fn https_listener(name: &str, port: u16, hostname: &str, secret: &str) -> String {
    format!("  - {{name: {name}, port: {port}, protocol: HTTPS, hostname: {hostname}, tls: {{certificateRefs: [{{name: {secret}}}]}}}}\n")
}

/// A port is served as one kind of connection, and a Gateway cannot take another's over: of
/// an HTTPS listener of one Gateway and a younger Gateway's HTTP listener on the same port, the
/// older keeps the port (never downgraded, never closed by the younger); an HTTPS listener on
/// the plaintext home port is not served in plaintext; a listener naming another's hostname on
/// a port of its own is not offered that other Gateway's certificate.
#[tokio::test]
async fn a_gateway_cannot_downgrade_or_borrow_another_gateways_port_or_certificate() {
    let (shared, own) = (free_port(), free_port());
    let pki = Pki::new();
    let cert = pki.issue(&["a.example", "secure.example"], KeyType::Ecdsa);
    let (_backends, dir) = infra();
    let dir = dir
        .with("cert.yaml", &tls_secret("victim-cert", &cert))
        .with(
            "gw.yaml",
            &[
                gateway(
                    "a-plain",
                    &format!("  - {{name: http, port: {shared}, protocol: HTTP}}\n"),
                )
                .replace("namespace: default}", "namespace: default, creationTimestamp: \"2026-02-01T00:00:00Z\"}"),
                gateway(
                    "b-secure",
                    &format!(
                        "{}{}",
                        https_listener("https", shared, "secure.example", "victim-cert"),
                        https_listener("home", 443, "a.example", "victim-cert")
                    ),
                ),
                gateway(
                    "c-attacker",
                    &format!(
                        "{}  - {{name: https80, port: 80, protocol: HTTPS, hostname: a.example, tls: {{certificateRefs: [{{name: victim-cert}}]}}}}\n",
                        https_listener("https", own, "a.example", "nonexistent")
                    ),
                ),
            ]
            .join("---\n"),
        )
        .with(
            "routes.yaml",
            &[
                route("plain", "[{name: a-plain}]", &to(1)),
                route("secure", "[{name: b-secure}]", &to(2)),
                route("attacker", "[{name: c-attacker}]", &to(3)),
            ]
            .join("---\n"),
        );
    let weir = Weir::start(&dir);
    let client = pki.client(&["http/1.1"], false);
    // The victim's own listener serves, with its certificate.
    let reply = https_get(weir.tls, "a.example", client.clone(), "/", &[])
        .await
        .unwrap();
    assert_eq!(reply.reply.backend(), "infra-backend-v2");
    // The attacker's port of its own comes up (its HTTP routes have no certificate there):
    // the victim's certificate is not offered on it.
    eventually(
        Duration::from_secs(5),
        "the attacker's port open",
        || async { TcpStream::connect(at(own)).await.ok().map(|_| ()) },
    )
    .await;
    let stolen = https_get(at(own), "a.example", client.clone(), "/", &[]).await;
    assert!(stolen.is_err(), "{:?}", stolen.map(|r| r.reply.status));
    // The shared port stays the older Gateway's HTTPS port; the younger's HTTP is not served.
    let kept = eventually(Duration::from_secs(5), "the shared port", || async {
        https_get(at(shared), "secure.example", client.clone(), "/", &[])
            .await
            .ok()
    })
    .await;
    assert_eq!(kept.reply.backend(), "infra-backend-v2");
    let plain = TcpStream::connect(at(shared)).await.unwrap();
    drop(plain);
    assert!(
        weir.stderr().iter().any(|l| l.contains(&format!(
            "listener http of Gateway default/a-plain wants port {shared} of Gateway default/b-secure"
        ))),
        "{:?}",
        weir.stderr()
    );
    // The HTTPS listener on the plaintext home port is not served in plaintext.
    let reply = weir.get("a.example", "/").await;
    assert_eq!(reply.status, 404, "{}", reply.text());
}

/// A listener changed from HTTP to HTTPS on the same port is served again, now with TLS (its
/// old socket may still be closing: the bind is retried).
#[tokio::test]
async fn a_listener_changed_from_http_to_https_keeps_its_port() {
    let port = free_port();
    let pki = Pki::new();
    let cert = pki.issue(&["a.example"], KeyType::Ecdsa);
    let (_backends, dir) = infra();
    let dir = dir
        .with("cert.yaml", &tls_secret("cert", &cert))
        .with(
            "gw.yaml",
            &gateway(
                "gw",
                &format!("  - {{name: web, port: {port}, protocol: HTTP}}\n"),
            ),
        )
        .with("route.yaml", &route("web", "[{name: gw}]", &to(1)));
    let _weir = Weir::start(&dir);
    let reply = get_at(at(port), "a.example", "/").await;
    assert_eq!(reply.backend(), "infra-backend-v1");

    dir.write(
        "gw.yaml",
        &gateway("gw", &https_listener("web", port, "a.example", "cert")),
    );
    let client = pki.client(&["http/1.1"], false);
    let reply = eventually(Duration::from_secs(10), "HTTPS on the port", || async {
        https_get(at(port), "a.example", client.clone(), "/", &[])
            .await
            .ok()
    })
    .await;
    assert_eq!(reply.reply.backend(), "infra-backend-v1");
}

/// `--gateway` keeps certificates apart too: a gateway process does not offer (nor load) the
/// certificates of Gateways it does not serve.
#[tokio::test]
async fn a_gateway_process_offers_only_its_gateways_certificates() {
    let pki = Pki::new();
    let (_backends, dir) = infra();
    let dir = dir
        .with(
            "cert.yaml",
            &[
                tls_secret("a-cert", &pki.issue(&["a.example"], KeyType::Ecdsa)),
                tls_secret("b-cert", &pki.issue(&["b.example"], KeyType::Ecdsa)),
            ]
            .join("---\n"),
        )
        .with(
            "gw.yaml",
            &[
                gateway("a", &https_listener("https", 443, "a.example", "a-cert")),
                gateway("b", &https_listener("https", 443, "b.example", "b-cert")),
            ]
            .join("---\n"),
        )
        .with(
            "routes.yaml",
            &[
                route("a", "[{name: a}]", &to(1)),
                route("b", "[{name: b}]", &to(2)),
            ]
            .join("---\n"),
        );
    let weir = Weir::start_with(&dir, &["--gateway", "default/a"]);
    let client = pki.client(&["http/1.1"], false);
    let reply = https_get(weir.tls, "a.example", client.clone(), "/", &[])
        .await
        .unwrap();
    assert_eq!(reply.reply.backend(), "infra-backend-v1");
    let other = https_get(weir.tls, "b.example", client, "/", &[]).await;
    // The handshake gets a's certificate (the port's default), which b.example's client
    // refuses: b's certificate is not there to give.
    assert!(other.is_err(), "{:?}", other.map(|r| r.reply.status));
    let config = weir.admin_get("/config").await.json();
    let certificates = config["reload"]["certificates"].to_string();
    assert!(!certificates.contains("default/b-cert"), "{certificates}");
}

/// GatewayHTTPListenerIsolation: four HTTP listeners on one port (no hostname,
/// `*.example.com`, `*.foo.example.com`, `abc.foo.example.com`), a route attached to each by
/// sectionName with its own path: a request is served by the routes of the most specific
/// listener that takes its host alone, whatever hostnames the routes name (the second Gateway's
/// routes name them all). Each Gateway is served by a process of its own, as upstream's have
/// addresses of their own.
#[tokio::test]
async fn gateway_http_listener_isolation() {
    let listeners = "  - {name: empty-hostname, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}\n  - {name: wildcard-example-com, port: 80, protocol: HTTP, hostname: \"*.example.com\", allowedRoutes: {namespaces: {from: All}}}\n  - {name: wildcard-foo-example-com, port: 80, protocol: HTTP, hostname: \"*.foo.example.com\", allowedRoutes: {namespaces: {from: All}}}\n  - {name: abc-foo-example-com, port: 80, protocol: HTTP, hostname: abc.foo.example.com, allowedRoutes: {namespaces: {from: All}}}\n";
    let names = [
        "empty-hostname",
        "wildcard-example-com",
        "wildcard-foo-example-com",
        "abc-foo-example-com",
    ];
    let (_backends, dir) = infra();
    let mut routes = Vec::new();
    for (gateway, hostnames) in [
        ("http-listener-isolation", ""),
        (
            "http-listener-isolation-with-hostname-intersection",
            "  hostnames: [bar.com, \"*.example.com\", \"*.foo.example.com\", abc.foo.example.com]\n",
        ),
    ] {
        for name in names {
            let route = route(
                &format!("{gateway}-attaches-to-{name}"),
                &format!("[{{name: {gateway}, sectionName: {name}}}]\n{hostnames}"),
                &format!("  - matches: [{{path: {{type: PathPrefix, value: /{name}}}}}]\n    backendRefs: [{{name: infra-backend-v1, port: 80}}]\n"),
            );
            routes.push(route);
        }
    }
    let dir = dir
        .with(
            "gw.yaml",
            &[
                gateway("http-listener-isolation", listeners),
                gateway(
                    "http-listener-isolation-with-hostname-intersection",
                    listeners,
                ),
            ]
            .join("---\n"),
        )
        .with("routes.yaml", &routes.join("---\n"));
    for gateway in [
        "default/http-listener-isolation",
        "default/http-listener-isolation-with-hostname-intersection",
    ] {
        let weir = Weir::start_with(&dir, &["--gateway", gateway]);
        for (host, own) in [
            ("bar.com", "empty-hostname"),
            ("bar.example.com", "wildcard-example-com"),
            ("bar.foo.example.com", "wildcard-foo-example-com"),
            ("abc.foo.example.com", "abc-foo-example-com"),
        ] {
            for path in names {
                let reply = weir.get(host, &format!("/{path}")).await;
                let expected = if path == own { 200 } else { 404 };
                assert_eq!(reply.status, expected, "{gateway}: {host}/{path}");
            }
        }
    }
}
