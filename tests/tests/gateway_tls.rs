//! TLSRoute on the TLS listener, as the upstream conformance tests check it
//! (kubernetes-sigs/gateway-api, conformance/tests, tlsroute-*): connections chosen by the SNI of
//! their ClientHello and carried to a Service byte for byte, passed through unopened
//! (`Passthrough`: the client's TLS ends at the backend, which shows its own certificate) or
//! after the gateway's TLS ends (`Terminate`: the backend gets the plaintext as TCP, no HTTP
//! parsed, a server-first protocol works). A route whose backend cannot be had resets the
//! connection. Then the abuse: ClientHellos that are slow, garbage, without SNI; a newer route
//! in another namespace claiming a name; HTTPS and passthrough sharing the port.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};
use weir_e2e::{
    http_route, service, service_at,
    tls::{https_echo, https_get, tcp_backend, Issued, KeyType, Pki},
    tls_secret, ConfigDir, Echo, Weir,
};

/// A Gateway `gw` in `default` with these listeners (YAML list items).
fn gateway(listeners: &str) -> String {
    format!("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: default}}\nspec:\n  gatewayClassName: weir\n  listeners:\n{listeners}")
}

/// The passthrough listener upstream's simple test uses.
const PASSTHROUGH: &str = "  - name: tls\n    protocol: TLS\n    port: 443\n    hostname: \"*.example.com\"\n    tls: {mode: Passthrough}\n    allowedRoutes: {namespaces: {from: All}, kinds: [{kind: TLSRoute}]}\n";

/// A TLSRoute in `namespace` attached to `gw` (in `default`), for `hostnames`, to `backend`
/// (`name` or `namespace/name`, port 80).
fn tls_route(name: &str, namespace: &str, hostnames: &[&str], backend: &str) -> String {
    let backend = match backend.split_once('/') {
        Some((ns, svc)) => format!("{{name: {svc}, namespace: {ns}, port: 80}}"),
        None => format!("{{name: {backend}, port: 80}}"),
    };
    format!("apiVersion: gateway.networking.k8s.io/v1\nkind: TLSRoute\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  parentRefs: [{{name: gw, namespace: default}}]\n  hostnames: {hostnames:?}\n  rules:\n  - backendRefs: [{backend}]\n")
}

/// An HTTPS echo backend `name` with a certificate for `names`, on a free loopback port.
async fn tls_backend(pki: &Pki, name: &str, names: &[&str]) -> SocketAddr {
    https_echo(
        name,
        &pki.issue(names, KeyType::Ecdsa),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
}

/// The passthrough listener beside an HTTPS listener (`hostname`, `port`) with `cert`, whose
/// HTTPRoute for `web_host` goes to `web`; `tls-backend` is at `backend`. Add the TLSRoute.
fn passthrough_beside_https(
    backend: SocketAddr,
    web: &Echo,
    (hostname, port): (&str, u16),
    cert: &Issued,
    web_host: &str,
) -> ConfigDir {
    let https = format!("  - name: https\n    protocol: HTTPS\n    port: {port}\n    hostname: \"{hostname}\"\n    tls: {{certificateRefs: [{{name: web-tls}}]}}\n");
    let services = [
        service_at("tls-backend", "default", backend),
        service("web", &[web]),
    ];
    let web_route = http_route(
        "web",
        &[web_host],
        "  - backendRefs: [{name: web, port: 80}]\n",
    );
    ConfigDir::new()
        .with("svc.yaml", &services.join("---\n"))
        .with("gw.yaml", &gateway(&format!("{PASSTHROUGH}{https}")))
        .with("cert.yaml", &tls_secret("web-tls", cert))
        .with("web.yaml", &web_route)
}

/// `GET /` over TLS with SNI `sni` (and `Host: sni`), trusting `pki`: the backend that
/// answered, or why the connection failed.
async fn passthrough_get(weir: &Weir, pki: &Pki, sni: &str) -> Result<String, String> {
    let reply = https_get(weir.tls, sni, pki.client(&["http/1.1"], false), "/", &[]).await?;
    if reply.reply.status != 200 {
        return Err(format!("status {}", reply.reply.status));
    }
    Ok(reply.reply.backend())
}

/// Whether `stream` ends (EOF or an error) within `within`, whatever it reads before.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = vec![0u8; 16 * 1024];
    let ended = tokio::time::timeout(within, async {
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                return;
            }
        }
    });
    ended.await.is_ok()
}

fn is_reset(result: &Result<String, String>) -> bool {
    matches!(result, Err(e) if e.contains("reset") || e.contains("os error 104"))
}

/// A ClientHello for `sni` as a client would send it: the bytes before any answer.
fn client_hello(pki: &Pki, sni: &str) -> Vec<u8> {
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let mut client = rustls::ClientConnection::new(pki.client(&[], false), name).unwrap();
    let mut hello = Vec::new();
    client.write_tls(&mut hello).unwrap();
    hello
}

/// TLSRouteSimpleSameNamespace, and HTTPS beside it on the same port
/// (GatewayHTTPSAndTLSPassthroughSamePort): the passthrough name reaches the backend, whose
/// own certificate the client sees (the gateway never opened the TLS); another name under
/// the HTTPS listener's wildcard is HTTP through Weir.
#[tokio::test]
async fn tls_route_simple_same_namespace() {
    let pki = Pki::new();
    let backend = tls_backend(&pki, "tls-backend", &["abc.example.com"]).await;
    let web = Echo::start("infra-backend-v1");
    let web_cert = pki.issue(&["*.example.com"], KeyType::Ecdsa);
    let dir = passthrough_beside_https(
        backend,
        &web,
        ("other.example.com", 443),
        &web_cert,
        "other.example.com",
    )
    .with(
        "route.yaml",
        &tls_route(
            "gateway-conformance-infra-test",
            "default",
            &["abc.example.com"],
            "tls-backend",
        ),
    );
    let weir = Weir::start(&dir);

    let client = pki.client(&["http/1.1"], false);
    let through = https_get(weir.tls, "abc.example.com", client.clone(), "/", &[])
        .await
        .unwrap();
    assert_eq!(through.reply.status, 200);
    assert_eq!(through.reply.backend(), "tls-backend");
    let backend_cert = through.leaf.clone();
    assert_ne!(
        backend_cert,
        web_cert.leaf_der(),
        "the backend's certificate, not Weir's"
    );
    // Names are DNS names: any case is the same name.
    assert_eq!(
        passthrough_get(&weir, &pki, "ABC.Example.COM")
            .await
            .unwrap(),
        "tls-backend"
    );

    // Another name on the same port: Weir's HTTPS, with its certificate.
    let served = https_get(weir.tls, "other.example.com", client, "/", &[])
        .await
        .unwrap();
    assert_eq!(served.reply.backend(), "infra-backend-v1");
    assert_eq!(served.leaf, web_cert.leaf_der());

    let carried = weir
        .metric("weir_stream_connections_total{result=\"carried\",route=\"tlsroute:default/gateway-conformance-infra-test\"}")
        .await;
    assert_eq!(carried, Some(2.0));
    let passed = weir
        .metric("weir_tls_handshakes_total{result=\"passthrough\"}")
        .await;
    assert_eq!(passed, Some(2.0));
}

/// TLSRouteInvalidBackendRefNonexistent and TLSRouteInvalidReferenceGrant: a route whose
/// backend does not exist, or is in another namespace without a ReferenceGrant, resets the
/// connection (never another backend); with the grant, the same route works.
#[tokio::test]
async fn tls_route_with_a_backend_it_cannot_have_resets_the_connection() {
    let pki = Pki::new();
    let foreign = tls_backend(&pki, "app-backend", &["abc.example.com"]).await;
    let listener =
        "  - name: tls\n    protocol: TLS\n    port: 443\n    tls: {mode: Passthrough}\n";
    let dir = ConfigDir::new()
        .with(
            "ns.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: app}\n",
        )
        .with("svc.yaml", &service_at("tls-backend", "app", foreign))
        .with("gw.yaml", &gateway(listener))
        .with(
            "missing.yaml",
            &tls_route(
                "invalid-backend-ref-nonexistent",
                "default",
                &["example.com"],
                "nonexistent",
            ),
        )
        .with(
            "foreign.yaml",
            &tls_route(
                "gateway-conformance-infra-test",
                "default",
                &["abc.example.com"],
                "app/tls-backend",
            ),
        );
    let weir = Weir::start(&dir);

    let missing = passthrough_get(&weir, &pki, "example.com").await;
    assert!(is_reset(&missing), "{missing:?}");
    let refused = passthrough_get(&weir, &pki, "abc.example.com").await;
    assert!(is_reset(&refused), "{refused:?}");
    let config = weir.admin_get("/config").await.json();
    let warnings = config["snapshot"]["warnings"].to_string();
    assert!(
        warnings.contains("no ReferenceGrant in app allows TLSRoutes from default"),
        "{warnings}"
    );

    dir.write(
        "grant.yaml",
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: tls, namespace: app}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: TLSRoute, namespace: default}]\n  to: [{group: \"\", kind: Service}]\n",
    );
    weir_e2e::eventually(
        Duration::from_secs(10),
        "the grant to take effect",
        || async { passthrough_get(&weir, &pki, "abc.example.com").await.ok() },
    )
    .await;
    let no_backend = weir
        .metric("weir_stream_connections_total{result=\"no_backend\",route=\"tlsroute:default/invalid-backend-ref-nonexistent\"}")
        .await;
    assert_eq!(no_backend, Some(1.0));
}

/// TLSRouteHostnameIntersection and TLSRouteMultipleRoutesAttachmentSameHostnameIntersection:
/// a route's names within its listener's; the most specific name wins over an older route's
/// wildcard; a name nothing takes is reset.
#[tokio::test]
async fn tls_route_hostname_intersection() {
    let pki = Pki::new();
    let one = tls_backend(
        &pki,
        "tls-backend",
        &["abc.example.com", "other.example.com"],
    )
    .await;
    let two = tls_backend(&pki, "tls-backend-2", &["abc.example.com"]).await;
    let listener = "  - name: tls\n    protocol: TLS\n    port: 443\n    hostname: \"*.example.com\"\n    tls: {mode: Passthrough}\n";
    let older = "apiVersion: gateway.networking.k8s.io/v1\nkind: TLSRoute\nmetadata: {name: older, namespace: default, creationTimestamp: \"2026-01-01T00:00:00Z\"}\nspec:\n  parentRefs: [{name: gw}]\n  hostnames: [\"*.com\"]\n  rules:\n  - backendRefs: [{name: tls-backend, port: 80}]\n";
    let newer = "apiVersion: gateway.networking.k8s.io/v1\nkind: TLSRoute\nmetadata: {name: newer, namespace: default, creationTimestamp: \"2026-02-01T00:00:00Z\"}\nspec:\n  parentRefs: [{name: gw}]\n  hostnames: [abc.example.com]\n  rules:\n  - backendRefs: [{name: tls-backend-2, port: 80}]\n";
    let dir = ConfigDir::new()
        .with(
            "svc.yaml",
            &[
                service_at("tls-backend", "default", one),
                service_at("tls-backend-2", "default", two),
            ]
            .join("---\n"),
        )
        .with("gw.yaml", &gateway(listener))
        .with("older.yaml", older)
        .with("newer.yaml", newer);
    let weir = Weir::start(&dir);
    // `*.com` within `*.example.com` is `*.example.com`: other.example.com by the older route,
    // abc.example.com by the newer, more specific one.
    assert_eq!(
        passthrough_get(&weir, &pki, "other.example.com")
            .await
            .unwrap(),
        "tls-backend"
    );
    assert_eq!(
        passthrough_get(&weir, &pki, "abc.example.com")
            .await
            .unwrap(),
        "tls-backend-2"
    );
    // Within `*.com` but not the listener's `*.example.com`: nothing takes it, and with no
    // certificate for HTTPS either, the handshake fails.
    assert!(passthrough_get(&weir, &pki, "non.matching.com")
        .await
        .is_err());
    let config = weir.admin_get("/config").await.json();
    let streams = &config["snapshot"]["streams"];
    let older_hosts = streams
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "tlsroute:default/older")
        .unwrap();
    assert_eq!(
        older_hosts["hosts"],
        serde_json::json!([{"wildcard": ".example.com"}])
    );
}

/// TLSRouteTerminateSimpleSameNamespace and TLSRouteMixedTerminationSameNamespace: a
/// `Terminate` listener ends the client's TLS with its certificate and carries the plaintext
/// to the backend as TCP, the backend speaking first; beside it, on the same port, a
/// `Passthrough` listener for another name.
#[tokio::test]
async fn tls_route_terminate_and_mixed_on_one_port() {
    let pki = Pki::new();
    let tcp = tcp_backend("tcp-backend").await;
    let passed = tls_backend(&pki, "tls-backend", &["abc.example.com"]).await;
    let cert = pki.issue(&["tls.example.com"], KeyType::Ecdsa);
    let listeners = "  - name: tls-terminate\n    protocol: TLS\n    port: 443\n    hostname: tls.example.com\n    tls: {mode: Terminate, certificateRefs: [{name: tls-terminate-checks-certificate}]}\n  - name: tls-passthrough\n    protocol: TLS\n    port: 443\n    hostname: abc.example.com\n    tls: {mode: Passthrough}\n";
    let dir = ConfigDir::new()
        .with(
            "svc.yaml",
            &[
                service_at("tcp-backend", "default", tcp),
                service_at("tls-backend", "default", passed),
            ]
            .join("---\n"),
        )
        .with("gw.yaml", &gateway(listeners))
        .with(
            "cert.yaml",
            &tls_secret("tls-terminate-checks-certificate", &cert),
        )
        .with(
            "terminate.yaml",
            &tls_route(
                "gateway-conformance-mixed-terminateroute",
                "default",
                &["tls.example.com"],
                "tcp-backend",
            ),
        )
        .with(
            "passthrough.yaml",
            &tls_route(
                "gateway-conformance-mixed-passthroughroute",
                "default",
                &["abc.example.com"],
                "tls-backend",
            ),
        );
    let weir = Weir::start(&dir);

    // The client verifies the gateway's certificate for tls.example.com, offers h2 (the
    // route carries bytes, whatever ALPN chose), and hears the backend first.
    let tcp_stream = TcpStream::connect(weir.tls).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("tls.example.com").unwrap();
    let tls = tokio_rustls::TlsConnector::from(pki.client(&["h2", "http/1.1"], false))
        .connect(name, tcp_stream)
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.peer_certificates().unwrap()[0].as_ref(),
        &cert.leaf_der()[..]
    );
    let (read, mut write) = tokio::io::split(tls);
    let mut lines = BufReader::new(read).lines();
    let greeting = tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await;
    assert_eq!(
        greeting.unwrap().unwrap().as_deref(),
        Some("hello tcp-backend")
    );
    // Not HTTP: the bytes arrive as sent, nothing added (the backend echoes line by line).
    write
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nPING\n")
        .await
        .unwrap();
    for expected in ["GET / HTTP/1.1", "Host: x", "", "PING"] {
        assert_eq!(lines.next_line().await.unwrap().as_deref(), Some(expected));
    }
    // The passthrough name on the same port.
    assert_eq!(
        passthrough_get(&weir, &pki, "abc.example.com")
            .await
            .unwrap(),
        "tls-backend"
    );
}

/// Abuse of the ClientHello read ahead: one that stalls half-sent is dropped at the
/// header-read timeout; garbage where a ClientHello should be is dropped; one without SNI is
/// never passed through (it gets Weir's HTTPS); none of them reaches the backend.
#[tokio::test]
async fn clienthellos_that_stall_lie_or_omit_the_name_reach_no_backend() {
    let pki = Pki::new();
    let backend = tls_backend(&pki, "tls-backend", &["abc.example.com"]).await;
    let web = Echo::start("web");
    let cert = pki.issue(&["web.example.org", "127.0.0.1"], KeyType::Ecdsa);
    let dir = passthrough_beside_https(
        backend,
        &web,
        ("web.example.org", 443),
        &cert,
        "web.example.org",
    )
    .with(
        "route.yaml",
        &tls_route("pass", "default", &["abc.example.com"], "tls-backend"),
    );
    let weir = Weir::start_with(&dir, &["--header-read-timeout", "1s"]);

    // Half a ClientHello, then silence: closed after the timeout, nothing carried.
    let hello = client_hello(&pki, "abc.example.com");
    let mut stalled = TcpStream::connect(weir.tls).await.unwrap();
    stalled.write_all(&hello[..hello.len() / 2]).await.unwrap();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");

    // A record header that claims a handshake, then garbage.
    let mut garbage = TcpStream::connect(weir.tls).await.unwrap();
    garbage.write_all(&[0x16, 3, 1, 0, 40]).await.unwrap();
    garbage.write_all(&[0xAB; 40]).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), garbage.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");

    // The whole ClientHello, sent one byte at a time: still read, and passed through.
    let mut slow = TcpStream::connect(weir.tls).await.unwrap();
    for byte in &hello {
        slow.write_all(&[*byte]).await.unwrap();
    }
    let answered = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf)).await;
    assert!(
        matches!(answered, Ok(Ok(n)) if n > 0),
        "the backend's ServerHello: {answered:?}"
    );
    drop(slow);

    // No SNI (a client dialing an address sends none): Weir's own HTTPS, with its default
    // certificate (valid for the address too), never the passthrough backend.
    let tcp = TcpStream::connect(weir.tls).await.unwrap();
    let ip = rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let tls = tokio_rustls::TlsConnector::from(pki.client(&[], false))
        .connect(ip, tcp)
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.peer_certificates().unwrap()[0].as_ref(),
        &cert.leaf_der()[..]
    );

    let carried = weir
        .metric("weir_stream_connections_total{result=\"carried\",route=\"tlsroute:default/pass\"}")
        .await;
    assert_eq!(
        carried,
        Some(1.0),
        "only the slow but whole ClientHello was carried"
    );
}

/// A tenant's newer TLSRoute, in its own namespace, for a name another namespace's route
/// already serves, through a listener that takes routes from every namespace: the older route
/// keeps the name; the newcomer gets only what nobody had.
#[tokio::test]
async fn a_newer_route_in_another_namespace_cannot_take_a_served_name() {
    let pki = Pki::new();
    let victim = tls_backend(&pki, "victim", &["pay.example.com"]).await;
    let attacker = tls_backend(&pki, "attacker", &["pay.example.com", "evil.example.com"]).await;
    let route = |name: &str, ns: &str, created: &str, host: &str, svc: &str| {
        tls_route(name, ns, &[host], svc).replace(
            &format!("namespace: {ns}}}"),
            &format!("namespace: {ns}, creationTimestamp: \"{created}\"}}"),
        )
    };
    let dir = ConfigDir::new()
        .with(
            "ns.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: tenant}\n",
        )
        .with(
            "svc.yaml",
            &[
                service_at("pay", "default", victim),
                service_at("evil", "tenant", attacker),
            ]
            .join("---\n"),
        )
        .with("gw.yaml", &gateway(PASSTHROUGH))
        .with(
            "pay.yaml",
            &route(
                "pay",
                "default",
                "2026-01-01T00:00:00Z",
                "pay.example.com",
                "pay",
            ),
        )
        .with(
            "evil.yaml",
            &route(
                "evil",
                "tenant",
                "2026-03-01T00:00:00Z",
                "pay.example.com",
                "evil",
            ),
        )
        .with(
            "also.yaml",
            &route(
                "also",
                "tenant",
                "2026-03-01T00:00:00Z",
                "evil.example.com",
                "evil",
            ),
        );
    let weir = Weir::start(&dir);
    for _ in 0..5 {
        assert_eq!(
            passthrough_get(&weir, &pki, "pay.example.com")
                .await
                .unwrap(),
            "victim"
        );
    }
    assert_eq!(
        passthrough_get(&weir, &pki, "evil.example.com")
            .await
            .unwrap(),
        "attacker"
    );
}

/// A tenant's TLSRoute for a name the gateway already serves as HTTP (an Ingress or an
/// HTTPRoute naming it as exactly) does not take it, through a listener without a hostname
/// that takes routes from every namespace: that name stays HTTPS, with its certificate, and the
/// route still takes names nobody serves. Over HTTPS, a request whose Host is a name a TLSRoute
/// carries, on a connection whose SNI named another (domain fronting), gets 421.
#[tokio::test]
async fn a_tls_route_cannot_take_a_name_served_as_http_nor_be_fronted() {
    let pki = Pki::new();
    let shop = Echo::start("shop");
    let taken = tls_backend(&pki, "tenant", &["pay.example.com", "db.example.com"]).await;
    let cert = pki.issue(&["pay.example.com", "www.example.com"], KeyType::Ecdsa);
    let listener = "  - name: tls\n    protocol: TLS\n    port: 443\n    tls: {mode: Passthrough}\n    allowedRoutes: {namespaces: {from: All}}\n";
    let dir = ConfigDir::new()
        .with(
            "ns.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: tenant}\n",
        )
        .with(
            "svc.yaml",
            &[
                service("shop", &[&shop]),
                service_at("tenant", "tenant", taken),
            ]
            .join("---\n"),
        )
        .with("cert.yaml", &tls_secret("shop-tls", &cert))
        .with(
            "shop.yaml",
            &weir_e2e::ingress_tls("shop", "pay.example.com", "shop", "shop-tls"),
        )
        .with(
            "www.yaml",
            &weir_e2e::ingress_tls("www", "www.example.com", "shop", "shop-tls"),
        )
        .with("gw.yaml", &gateway(listener))
        .with(
            "steal.yaml",
            &tls_route("steal", "tenant", &["pay.example.com"], "tenant"),
        )
        .with(
            "db.yaml",
            &tls_route("db", "tenant", &["db.example.com"], "tenant"),
        );
    let weir = Weir::start(&dir);
    let client = pki.client(&["http/1.1"], false);
    for _ in 0..3 {
        let got = https_get(weir.tls, "pay.example.com", client.clone(), "/", &[])
            .await
            .unwrap();
        assert_eq!(got.reply.backend(), "shop");
        assert_eq!(
            got.leaf,
            cert.leaf_der(),
            "the gateway's certificate: not passed through"
        );
    }
    assert_eq!(
        passthrough_get(&weir, &pki, "db.example.com")
            .await
            .unwrap(),
        "tenant"
    );
    // SNI www.example.com (served here), Host db.example.com (a TLSRoute's): 421.
    let tcp = TcpStream::connect(weir.tls).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("www.example.com").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(client)
        .connect(name, tcp)
        .await
        .unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: db.example.com\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    let _ = tls.read_to_string(&mut answer).await;
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");
    assert!(answer.contains("x-weir-error: misdirected"), "{answer}");
}

/// A carried connection that moves nothing either way for `--stream-idle-timeout` is closed,
/// and it gets an access-log line (route, backend, endpoint, bytes each way); on SIGTERM the
/// carried connections close and the gateway exits without waiting out the drain timeout.
#[tokio::test]
async fn carried_connections_idle_out_are_logged_and_end_with_the_gateway() {
    let pki = Pki::new();
    let backend = tls_backend(&pki, "tls-backend", &["abc.example.com"]).await;
    let dir = ConfigDir::new()
        .with("svc.yaml", &service_at("tls-backend", "default", backend))
        .with("gw.yaml", &gateway(PASSTHROUGH))
        .with(
            "route.yaml",
            &tls_route("pass", "default", &["abc.example.com"], "tls-backend"),
        );
    let mut weir = Weir::start_with(
        &dir,
        &["--stream-idle-timeout", "1s", "--drain-timeout", "30s"],
    );

    assert_eq!(
        passthrough_get(&weir, &pki, "abc.example.com")
            .await
            .unwrap(),
        "tls-backend"
    );
    // A ClientHello, then silence from the client (the backend answers and waits).
    let mut idle = TcpStream::connect(weir.tls).await.unwrap();
    idle.write_all(&client_hello(&pki, "abc.example.com"))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    assert!(
        closed_within(&mut idle, Duration::from_secs(10)).await,
        "the idle connection was never closed"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );

    let lines = weir_e2e::eventually(Duration::from_secs(5), "two stream log lines", || async {
        let lines: Vec<_> = weir
            .access_log()
            .into_iter()
            .filter(|l| l["protocol"] == "tls-passthrough")
            .collect();
        (lines.len() == 2).then_some(lines)
    })
    .await;
    let line = &lines[0];
    assert_eq!(line["host"], "abc.example.com");
    assert_eq!(line["route"], "tlsroute:default/pass");
    assert_eq!(line["backend"], "default/tls-backend:80");
    assert_eq!(line["endpoint"], backend.to_string());
    assert!(line["bytes_in"].as_u64().unwrap() > 100, "{line}");
    assert!(line["bytes_out"].as_u64().unwrap() > 100, "{line}");

    // A carried connection open at SIGTERM: closed, and the gateway exits well before the
    // 30 s drain timeout.
    let mut open = TcpStream::connect(weir.tls).await.unwrap();
    open.write_all(&client_hello(&pki, "abc.example.com"))
        .await
        .unwrap();
    let _ = open.read(&mut [0u8; 1024]).await.unwrap();
    weir.signal("TERM");
    assert!(
        closed_within(&mut open, Duration::from_secs(5)).await,
        "the carried connection outlived the shutdown"
    );
    assert_eq!(weir.wait_exit(Duration::from_secs(10)), Some(0));
}

/// A TLSRoute to a meshed workload (its pod runs a sidecar, which takes mTLS from meshed
/// peers only) is refused: the connection is reset rather than sent in plaintext.
#[tokio::test]
async fn a_tls_route_to_a_meshed_backend_is_refused() {
    let pki = Pki::new();
    let dir = ConfigDir::new()
        .with("mesh.yaml", weir_e2e::MESH)
        .with("gw.yaml", &gateway(PASSTHROUGH))
        .with(
            "route.yaml",
            &tls_route("meshed", "shop", &["abc.example.com"], "backend"),
        );
    let weir = Weir::start(&dir);
    let refused = passthrough_get(&weir, &pki, "abc.example.com").await;
    assert!(is_reset(&refused), "{refused:?}");
    let meshed = weir
        .metric("weir_stream_connections_total{result=\"meshed_backend\",route=\"tlsroute:shop/meshed\"}")
        .await;
    assert_eq!(meshed, Some(1.0));
}

/// Gateways sharing the TLS port: a Terminate TLSRoute of one Gateway cannot carry a name that
/// another Gateway's certificate answers there (it would get that Gateway's clients' traffic,
/// decrypted with its key), even naming it in its own listener's certificate; the names that
/// are its own it carries.
#[tokio::test]
async fn a_terminated_route_cannot_carry_another_gateways_name() {
    let pki = Pki::new();
    let victim = pki.issue(&["victim.example.com"], KeyType::Ecdsa);
    let tenant = pki.issue(
        &["victim.example.com", "tenant.example.com"],
        KeyType::Ecdsa,
    );
    let backend = tcp_backend("tenant-backend").await;
    let gateways = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: victim, namespace: default}\nspec:\n  gatewayClassName: weir\n  listeners:\n  - {name: https, protocol: HTTPS, port: 443, hostname: victim.example.com, tls: {certificateRefs: [{name: victim-cert}]}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: tenant, namespace: default}\nspec:\n  gatewayClassName: weir\n  listeners:\n  - {name: tls, protocol: TLS, port: 443, tls: {mode: Terminate, certificateRefs: [{name: tenant-cert}]}}\n";
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: TLSRoute\nmetadata: {name: tenant, namespace: default}\nspec:\n  parentRefs: [{name: tenant}]\n  hostnames: [victim.example.com, tenant.example.com]\n  rules:\n  - backendRefs: [{name: tenant-backend, port: 80}]\n";
    let dir = ConfigDir::new()
        .with(
            "svc.yaml",
            &service_at("tenant-backend", "default", backend),
        )
        .with(
            "certs.yaml",
            &[
                tls_secret("victim-cert", &victim),
                tls_secret("tenant-cert", &tenant),
            ]
            .join("---\n"),
        )
        .with("gw.yaml", gateways)
        .with("route.yaml", route);
    let weir = Weir::start(&dir);
    // The first line the connection brings within a second, if any (the backend greets first;
    // HTTPS waits for a request).
    let first_line = |sni: &'static str| {
        let client = pki.client(&[], false);
        async move {
            let tcp = TcpStream::connect(weir.tls).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from(sni).unwrap();
            let tls = tokio_rustls::TlsConnector::from(client)
                .connect(name, tcp)
                .await
                .ok()?;
            let mut lines = BufReader::new(tls).lines();
            let line = tokio::time::timeout(Duration::from_secs(1), lines.next_line());
            line.await.ok()?.ok()?
        }
    };
    assert_eq!(
        first_line("tenant.example.com").await.as_deref(),
        Some("hello tenant-backend")
    );
    assert_eq!(first_line("victim.example.com").await, None);
    let warnings = weir.admin_get("/config").await.json()["snapshot"]["warnings"].to_string();
    assert!(
        warnings.contains(
            "victim.example.com on port 443 is answered by a certificate of Gateway default/victim"
        ),
        "{warnings}"
    );
}
