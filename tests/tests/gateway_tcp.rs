//! TCPRoute, as the upstream conformance tests check it (kubernetes-sigs/gateway-api,
//! conformance/tests, tcproute-*): a `TCP` listener gets a socket of its own and carries every
//! connection to its route's backends byte for byte, never read as HTTP; on a `TLS` listener
//! that terminates, the bytes inside the gateway's TLS. Upstream's backends are its
//! server-first TCP echo; here a line echo that greets with `hello NAME` plays it. Upstream's
//! listener ports (9300 and up) are free ports here, since tests share the machine. Then the
//! abuse: a TCP listener on the gateway's HTTP port, a TCP and an HTTP listener of two Gateways
//! on one port, a newer route taking a port, a route from a namespace the listener does not
//! allow, a backend that is down.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use bytes::Bytes;
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader},
    net::TcpStream,
};
use weir_e2e::{
    eventually, free_port, request, service, service_at,
    tls::{tcp_backend, KeyType, Pki},
    tls_secret, ConfigDir, Echo, Weir,
};

/// A Gateway `name` of class `weir` in `default` with these listeners (YAML list items).
fn gateway(name: &str, listeners: &str) -> String {
    format!("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  gatewayClassName: weir\n  listeners:\n{listeners}")
}

/// A TCP listener item.
fn tcp_listener(name: &str, port: u16) -> String {
    format!("  - {{name: {name}, protocol: TCP, port: {port}}}\n")
}

/// A TCPRoute `name` in `namespace` (created at `created`, RFC 3339, or unset) with this
/// parentRef body and these backendRefs (YAML flow items).
fn tcp_route(name: &str, namespace: &str, parent: &str, backends: &str) -> String {
    format!("apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  parentRefs: [{{{parent}}}]\n  rules:\n  - backendRefs: [{backends}]\n")
}

fn at(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The greeting of the backend a new connection to `addr` reaches, after checking that a
/// line comes back as sent (the bytes are carried, not read); `Err` when the connection is
/// refused or closed without one.
async fn greeting(addr: SocketAddr) -> Result<String, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    talk(stream).await
}

async fn talk<S: AsyncRead + AsyncWrite>(stream: S) -> Result<String, String> {
    let (read, mut write) = tokio::io::split(stream);
    let mut lines = BufReader::new(read).lines();
    let line = |l: Result<Option<String>, std::io::Error>| match l {
        Ok(Some(line)) => Ok(line),
        Ok(None) => Err("closed".to_string()),
        Err(e) => Err(e.to_string()),
    };
    let wait = Duration::from_secs(5);
    let hello = tokio::time::timeout(wait, lines.next_line())
        .await
        .map_err(|_| "no greeting within 5s".to_string())?;
    let hello = line(hello)?;
    write
        .write_all(b"PING\n")
        .await
        .map_err(|e| e.to_string())?;
    let pong = tokio::time::timeout(wait, lines.next_line())
        .await
        .map_err(|_| "no echo within 5s".to_string())?;
    assert_eq!(line(pong)?, "PING", "the line came back as sent");
    Ok(hello.trim_start_matches("hello ").to_string())
}

/// Once `port`'s socket is bound, a connection to it is closed or reset without a greeting,
/// within the 5 seconds [`greeting`] waits (nothing hangs).
async fn closes_at_once(port: u16) {
    let ended = eventually(Duration::from_secs(10), "the port bound", || async {
        match greeting(at(port)).await {
            Err(e) if !e.contains("refused") => Some(e),
            _ => None,
        }
    })
    .await;
    assert!(
        ended == "closed" || ended.contains("reset"),
        "port {port}: {ended}"
    );
}

/// The backend a connection to `port` reaches, once the port's socket is bound.
async fn backend_at(port: u16) -> String {
    eventually(
        Duration::from_secs(10),
        &format!("port {port} carried"),
        || async { greeting(at(port)).await.ok() },
    )
    .await
}

/// Four TCP listeners, `one` to `four`, on free ports (upstream's 9300 to 9303).
fn four_tcp_listeners() -> (Vec<u16>, String) {
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let listeners = ["one", "two", "three", "four"]
        .iter()
        .zip(&ports)
        .map(|(name, port)| tcp_listener(name, *port))
        .collect();
    (ports, listeners)
}

/// TCP backends by name, with a Service (port 80) each.
async fn backends(names: &[&str]) -> ConfigDir {
    let mut services = Vec::new();
    for name in names {
        services.push(service_at(name, "default", tcp_backend(name).await));
    }
    ConfigDir::new().with("svc.yaml", &services.join("---\n"))
}

/// TCPRouteParentRefPortAndSectionName: routes attached by port, by sectionName, and by both
/// each carry their listener's port to their backend; a listener no route names carries
/// nothing.
#[tokio::test]
async fn tcp_route_parent_ref_port_and_section_name() {
    let (ports, listeners) = four_tcp_listeners();
    let dir = backends(&["tcp-echo-one", "tcp-echo-two", "tcp-echo-three"])
        .await
        .with(
            "gw.yaml",
            &gateway("tcp-multi-listener-gateway", &listeners),
        )
        .with(
            "routes.yaml",
            &[
                tcp_route(
                    "tcp-route-by-port",
                    "default",
                    &format!("name: tcp-multi-listener-gateway, port: {}", ports[0]),
                    "{name: tcp-echo-one, port: 80}",
                ),
                tcp_route(
                    "tcp-route-by-section",
                    "default",
                    "name: tcp-multi-listener-gateway, sectionName: two",
                    "{name: tcp-echo-two, port: 80}",
                ),
                tcp_route(
                    "tcp-route-by-section-and-port",
                    "default",
                    &format!(
                        "name: tcp-multi-listener-gateway, sectionName: three, port: {}",
                        ports[2]
                    ),
                    "{name: tcp-echo-three, port: 80}",
                ),
            ]
            .join("---\n"),
        );
    let _weir = Weir::start(&dir);
    assert_eq!(backend_at(ports[0]).await, "tcp-echo-one");
    assert_eq!(backend_at(ports[1]).await, "tcp-echo-two");
    assert_eq!(backend_at(ports[2]).await, "tcp-echo-three");
    // The fourth listener's socket is bound, and a connection to it reaches no backend.
    closes_at_once(ports[3]).await;
}

/// TCPRouteParentRefAttachAll: a parentRef with neither sectionName nor port attaches to every
/// listener of the Gateway.
#[tokio::test]
async fn tcp_route_parent_ref_attach_all() {
    let (ports, listeners) = four_tcp_listeners();
    let dir = backends(&["tcp-echo-attach-all"])
        .await
        .with("gw.yaml", &gateway("tcp-attach-all-gateway", &listeners))
        .with(
            "route.yaml",
            &tcp_route(
                "tcp-route-attach-all",
                "default",
                "name: tcp-attach-all-gateway",
                "{name: tcp-echo-attach-all, port: 80}",
            ),
        );
    let _weir = Weir::start(&dir);
    for port in ports {
        assert_eq!(backend_at(port).await, "tcp-echo-attach-all");
    }
}

/// TCPRouteWeightedRouting: connections split 70/30 (within 0.06 over 500, as upstream
/// checks within 0.05 and retries), a backend of weight 0 gets none.
#[tokio::test]
async fn tcp_route_weighted_routing() {
    let port = free_port();
    let dir = backends(&["tcp-backend-v1", "tcp-backend-v2", "tcp-backend-v3"])
        .await
        .with("gw.yaml", &gateway("tcp-weighted-gateway", &tcp_listener("tcp", port)))
        .with(
            "route.yaml",
            &tcp_route(
                "tcp-weighted-route",
                "default",
                "name: tcp-weighted-gateway, sectionName: tcp",
                "{name: tcp-backend-v1, port: 80, weight: 70}, {name: tcp-backend-v2, port: 80, weight: 30}, {name: tcp-backend-v3, port: 80, weight: 0}",
            ),
        );
    let _weir = Weir::start(&dir);
    backend_at(port).await;
    let mut last = BTreeMap::new();
    for _ in 0..3 {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..500 {
            *seen.entry(greeting(at(port)).await.unwrap()).or_default() += 1;
        }
        let share = |name: &str| seen.get(name).copied().unwrap_or(0) as f64 / 500.0;
        assert!(!seen.contains_key("tcp-backend-v3"), "{seen:?}");
        assert_eq!(seen.len(), 2, "{seen:?}");
        if (share("tcp-backend-v1") - 0.7).abs() <= 0.06 {
            return;
        }
        last = seen;
    }
    panic!("not 70/30 in three rounds of 500: {last:?}");
}

/// TCPRouteMultipleRoutesAttachment: two routes on one TCP listener are both attached; the
/// older one carries every connection, so a newer route (here from another namespace the
/// listener allows) cannot take the port.
#[tokio::test]
async fn tcp_route_multiple_routes_attachment() {
    let port = free_port();
    let listener = format!("  - name: tcp\n    protocol: TCP\n    port: {port}\n    allowedRoutes: {{namespaces: {{from: All}}, kinds: [{{kind: TCPRoute}}]}}\n");
    let older = tcp_route(
        "tcproute-attach-older",
        "default",
        "name: tcp-multi-route-attach-gateway, namespace: default",
        "{name: tcp-attach-backend-1, port: 80}",
    )
    .replace(
        "namespace: default}",
        "namespace: default, creationTimestamp: \"2026-01-01T00:00:00Z\"}",
    );
    let newer = tcp_route(
        "a-newer-route",
        "tenant",
        "name: tcp-multi-route-attach-gateway, namespace: default, sectionName: tcp",
        "{name: tcp-attach-backend-2, port: 80}",
    )
    .replace(
        "namespace: tenant}",
        "namespace: tenant, creationTimestamp: \"2026-02-01T00:00:00Z\"}",
    );
    let tenant_backend = tcp_backend("tcp-attach-backend-2").await;
    let dir = backends(&["tcp-attach-backend-1"])
        .await
        .with(
            "ns.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: tenant}\n",
        )
        .with(
            "tenant-svc.yaml",
            &service_at("tcp-attach-backend-2", "tenant", tenant_backend),
        )
        .with(
            "gw.yaml",
            &gateway("tcp-multi-route-attach-gateway", &listener),
        )
        .with("older.yaml", &older)
        .with("newer.yaml", &newer);
    let weir = Weir::start(&dir);
    assert_eq!(backend_at(port).await, "tcp-attach-backend-1");
    for _ in 0..100 {
        assert_eq!(greeting(at(port)).await.unwrap(), "tcp-attach-backend-1");
    }
    // Both are attached (the listener's attachedRoutes counts two): neither was refused.
    let config = weir.admin_get("/config").await.json();
    let streams = config["snapshot"]["streams"].to_string();
    assert!(
        streams.contains("tcproute:tenant/a-newer-route"),
        "{streams}"
    );
    assert!(
        streams.contains("tcproute:default/tcproute-attach-older"),
        "{streams}"
    );
}

/// TCPRouteOnTLSTerminate: a TCPRoute on a TLS listener that terminates carries what is inside
/// the gateway's TLS (the backend speaks plaintext and greets first).
#[tokio::test]
async fn tcp_route_on_tls_terminate() {
    let pki = Pki::new();
    let cert = pki.issue(&["tls.example.com"], KeyType::Ecdsa);
    let listener = "  - name: tls-terminate\n    protocol: TLS\n    port: 443\n    hostname: tls.example.com\n    tls: {mode: Terminate, certificateRefs: [{name: tls-terminate-checks-certificate}]}\n    allowedRoutes: {namespaces: {from: Same}, kinds: [{kind: TCPRoute}]}\n";
    let dir = backends(&["tcp-backend"])
        .await
        .with(
            "cert.yaml",
            &tls_secret("tls-terminate-checks-certificate", &cert),
        )
        .with(
            "gw.yaml",
            &gateway("gateway-tcproute-tls-terminate", listener),
        )
        .with(
            "route.yaml",
            &tcp_route(
                "tcproute-tls-terminate",
                "default",
                "name: gateway-tcproute-tls-terminate, sectionName: tls-terminate",
                "{name: tcp-backend, port: 80}",
            ),
        );
    let weir = Weir::start(&dir);
    let connect = |sni: &'static str| {
        let pki = pki.client(&[], false);
        async move {
            let tcp = TcpStream::connect(weir.tls)
                .await
                .map_err(|e| e.to_string())?;
            let name = rustls::pki_types::ServerName::try_from(sni).unwrap();
            let tls = tokio_rustls::TlsConnector::from(pki)
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            talk(tls).await
        }
    };
    assert_eq!(connect("tls.example.com").await.unwrap(), "tcp-backend");
    // Another name is not the listener's: no certificate for it, nothing carried.
    assert!(connect("other.example.com").await.is_err());
}

/// TCPRouteInvalidBackendRefNonexistent and TCPRouteInvalidCrossNamespaceBackendRef: a route
/// whose backend does not exist, or is in another namespace without a ReferenceGrant, carries
/// nothing (the connection closes at once, never another backend); with the grant
/// (TCPRouteReferenceGrant), the same route carries its connections, until the grant goes.
#[tokio::test]
async fn tcp_route_backends_it_cannot_have_carry_nothing() {
    let (missing, foreign) = (free_port(), free_port());
    let listeners = format!(
        "{}{}",
        tcp_listener("missing", missing),
        tcp_listener("foreign", foreign)
    );
    let web = tcp_backend("tcp-reference-grant-backend").await;
    let dir = ConfigDir::new()
        .with(
            "ns.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: web-backend}\n",
        )
        .with(
            "svc.yaml",
            &service_at("tcp-reference-grant-backend", "web-backend", web),
        )
        .with("gw.yaml", &gateway("gw", &listeners))
        .with(
            "missing.yaml",
            &tcp_route(
                "tcp-route-invalid-backend-ref-nonexistent",
                "default",
                "name: gw, sectionName: missing",
                "{name: nonexistent-service, port: 8080}",
            ),
        )
        .with(
            "foreign.yaml",
            &tcp_route(
                "tcp-reference-grant",
                "default",
                "name: gw, sectionName: foreign",
                "{name: tcp-reference-grant-backend, namespace: web-backend, port: 80}",
            ),
        );
    let weir = Weir::start(&dir);
    for port in [missing, foreign] {
        closes_at_once(port).await;
    }
    let warnings = weir.admin_get("/config").await.json()["snapshot"]["warnings"].to_string();
    assert!(
        warnings.contains("no ReferenceGrant in web-backend allows TCPRoutes from default"),
        "{warnings}"
    );

    dir.write(
        "grant.yaml",
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: tcp-reference-grant, namespace: web-backend}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: TCPRoute, namespace: default}]\n  to: [{group: \"\", kind: Service, name: tcp-reference-grant-backend}]\n",
    );
    assert_eq!(backend_at(foreign).await, "tcp-reference-grant-backend");

    // A connection carried under the grant lives through changes that keep it (another
    // object), and ends when the grant goes: it would not be carried if it came now.
    let stream = TcpStream::connect(at(foreign)).await.unwrap();
    let (read, mut write) = tokio::io::split(stream);
    let mut lines = BufReader::new(read).lines();
    let hello = lines.next_line().await.unwrap();
    assert_eq!(hello.as_deref(), Some("hello tcp-reference-grant-backend"));
    let version = weir.version().await;
    dir.write(
        "other.yaml",
        &service_at("other", "default", at(free_port())),
    );
    weir.wait_version(version + 1, Duration::from_secs(10))
        .await;
    write.write_all(b"still\n").await.unwrap();
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("still"));
    std::fs::remove_file(dir.path.join("grant.yaml")).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = lines.next_line().await {}
    });
    assert!(ended.await.is_ok(), "the connection outlived its grant");
    let no_backend = weir
        .metric("weir_stream_connections_total{result=\"no_backend\",route=\"tcproute:default/tcp-route-invalid-backend-ref-nonexistent\"}")
        .await;
    assert!(no_backend >= Some(1.0), "{no_backend:?}");
}

/// A TCP listener carries bytes, not HTTP: an HTTP request arrives as sent (nothing added, no
/// header read), and a backend that is down closes the client's connection at once rather
/// than leaving it hanging.
#[tokio::test]
async fn a_tcp_listener_carries_bytes_and_closes_when_its_backend_is_down() {
    let (port, down) = (free_port(), free_port());
    let listeners = format!(
        "{}{}",
        tcp_listener("tcp", port),
        tcp_listener("down", down)
    );
    let dir = backends(&["tcp-backend"])
        .await
        .with("down.yaml", &service_at("down", "default", at(free_port())))
        .with("gw.yaml", &gateway("gw", &listeners))
        .with(
            "route.yaml",
            &[
                tcp_route(
                    "r",
                    "default",
                    "name: gw, sectionName: tcp",
                    "{name: tcp-backend, port: 80}",
                ),
                tcp_route(
                    "d",
                    "default",
                    "name: gw, sectionName: down",
                    "{name: down, port: 80}",
                ),
            ]
            .join("---\n"),
        );
    let weir = Weir::start(&dir);
    backend_at(port).await;
    let stream = TcpStream::connect(at(port)).await.unwrap();
    let (read, mut write) = tokio::io::split(stream);
    let mut lines = BufReader::new(read).lines();
    assert_eq!(
        lines.next_line().await.unwrap().as_deref(),
        Some("hello tcp-backend")
    );
    write
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    // (The echo answers line by line, without the line ends.)
    for expected in [
        "GET / HTTP/1.1",
        "Host: x",
        "Transfer-Encoding: chunked",
        "",
    ] {
        assert_eq!(lines.next_line().await.unwrap().as_deref(), Some(expected));
    }

    closes_at_once(down).await;
    // Each connection is logged when it ends, as TCP, with its route and outcome.
    let lines = eventually(Duration::from_secs(5), "the access log", || async {
        let log = weir.access_log();
        let of = |route: &str| {
            log.iter()
                .find(|l| l["route"] == route && l["protocol"] == "tcp")
                .cloned()
        };
        Some((of("tcproute:default/r")?, of("tcproute:default/d")?))
    })
    .await;
    assert_eq!(lines.0["backend"], "default/tcp-backend:80", "{}", lines.0);
    assert_eq!(lines.1["error"], "connect_error", "{}", lines.1);
}

/// A TCP listener cannot turn the gateway's HTTP port into a tunnel, nor another Gateway's
/// port: on the home port it is not served (HTTP routes keep working); a port an older
/// Gateway has for HTTP stays HTTP, and a TCP port an older Gateway has stays its own (a
/// younger Gateway's TCP listener and its older route do not take it). Two TCP listeners of
/// one Gateway on one port conflict. A TCPRoute from a namespace the listener does not allow is
/// not attached.
#[tokio::test]
async fn a_tcp_listener_cannot_take_an_http_port_nor_routes_it_does_not_allow() {
    let web = Echo::start("web");
    let (shared, own, twice) = (free_port(), free_port(), free_port());
    let http_gateway = gateway(
        "http",
        &format!("  - {{name: http, protocol: HTTP, port: 80}}\n  - {{name: shared, protocol: HTTP, port: {shared}}}\n"),
    );
    let tcp_gateway = gateway(
        "tcp",
        &format!(
            "{}{}{}{}{}",
            tcp_listener("home", 80),
            tcp_listener("shared", shared),
            tcp_listener("own", own),
            tcp_listener("once", twice),
            tcp_listener("twice", twice),
        ),
    );
    // A younger Gateway on the same TCP port, with a route older than the one there.
    let intruder = gateway("intruder", &tcp_listener("taken", own)).replace(
        "namespace: default}",
        "namespace: default, creationTimestamp: \"2026-02-01T00:00:00Z\"}",
    );
    let intruding = tcp_route(
        "intruding",
        "default",
        "name: intruder",
        "{name: intruder-backend, port: 80}",
    )
    .replace(
        "namespace: default}",
        "namespace: default, creationTimestamp: \"2025-01-01T00:00:00Z\"}",
    );
    let tenant_backend = tcp_backend("tenant-backend").await;
    let dir = backends(&["tcp-backend", "intruder-backend"])
        .await
        .with("web.yaml", &service("web", &[&web]))
        .with(
            "ns.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: tenant}\n",
        )
        .with("tenant-svc.yaml", &service_at("tenant-backend", "tenant", tenant_backend))
        .with("gw.yaml", &[http_gateway, tcp_gateway, intruder].join("---\n"))
        .with("intruding.yaml", &intruding)
        .with(
            "http.yaml",
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web, namespace: default}\nspec:\n  parentRefs: [{name: http, sectionName: http}]\n  rules:\n  - backendRefs: [{name: web, port: 80}]\n",
        )
        .with(
            "tcp.yaml",
            &tcp_route("all", "default", "name: tcp", "{name: tcp-backend, port: 80}"),
        )
        .with(
            "tenant.yaml",
            &tcp_route(
                "tenant",
                "tenant",
                "name: tcp, namespace: default, sectionName: own",
                "{name: tenant-backend, port: 80}",
            ),
        );
    let weir = Weir::start(&dir);
    assert_eq!(backend_at(own).await, "tcp-backend");
    for _ in 0..20 {
        assert_eq!(greeting(at(own)).await.unwrap(), "tcp-backend");
    }
    // The home port still speaks HTTP.
    assert_eq!(weir.get("any.example", "/").await.backend(), "web");
    // The shared port stays the older Gateway's HTTP port (no route there: 404).
    let reply = eventually(Duration::from_secs(5), "the shared port", || async {
        TcpStream::connect(at(shared)).await.ok()?;
        Some(request(at(shared), "any.example", "/", &[], Bytes::new(), "GET").await)
    })
    .await;
    assert_eq!(reply.status, 404);
    // Two TCP listeners of one Gateway on one port: neither is served.
    assert!(TcpStream::connect(at(twice)).await.is_err());
    let stderr = weir.stderr().join("\n");
    for (listener, gateway, port, owner) in [
        ("shared", "tcp", shared, "http"),
        ("taken", "intruder", own, "tcp"),
    ] {
        let said = format!("listener {listener} of Gateway default/{gateway} wants port {port} of Gateway default/{owner}");
        assert!(stderr.contains(&said), "{said}: {stderr}");
    }
    assert!(
        stderr.contains("listener home of Gateway default/tcp is on port 80"),
        "{stderr}"
    );
    let warnings = weir.admin_get("/config").await.json()["snapshot"]["warnings"].to_string();
    assert!(warnings.contains("NotAllowedByListeners"), "{warnings}");
}

/// A port carries at most `--max-stream-connections` at once: more are closed as they come
/// (counted `over_limit`), and a place freed is taken again.
#[tokio::test]
async fn a_port_carries_at_most_its_connection_cap() {
    let port = free_port();
    let dir = backends(&["tcp-backend"])
        .await
        .with("gw.yaml", &gateway("gw", &tcp_listener("tcp", port)))
        .with(
            "route.yaml",
            &tcp_route("r", "default", "name: gw", "{name: tcp-backend, port: 80}"),
        );
    let weir = Weir::start_with(&dir, &["--max-stream-connections", "2"]);
    backend_at(port).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        // The probe's connection above frees its place a moment after it closes.
        let carried = eventually(Duration::from_secs(5), "a place", || async {
            let stream = TcpStream::connect(at(port)).await.ok()?;
            let (read, write) = tokio::io::split(stream);
            let mut lines = BufReader::new(read).lines();
            let greeting = lines.next_line().await.ok()??;
            (greeting == "hello tcp-backend").then_some((lines, write))
        })
        .await;
        held.push(carried);
    }
    closes_at_once(port).await;
    let over = weir
        .metric("weir_stream_connections_total{result=\"over_limit\",route=\"tcproute:default/r\"}")
        .await;
    assert!(over >= Some(1.0), "{over:?}");
    held.pop();
    let again = eventually(Duration::from_secs(5), "a freed place", || async {
        greeting(at(port)).await.ok()
    })
    .await;
    assert_eq!(again, "tcp-backend");
}
