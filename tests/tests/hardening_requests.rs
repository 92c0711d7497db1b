//! Requests crafted to be read one way by Weir and another by the backend (issue 24), sent as
//! raw bytes (curl and hyper rewrite some of them) to the real binaries:
//! - paths backends resolve differently (`;` parameters, `%2F`, `%5C`, `\`): refused, or
//!   unescaped/stripped before routing, at the ingress and at a sidecar's AccessPolicy;
//! - header names that a CGI/WSGI/Rack backend reads as a trusted header (`X_User_Id`);
//! - `Connection` naming the headers Weir vouches for;
//! - protocol upgrades other than WebSocket, and `h2c`.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use weir_e2e::{
    api_key_policy, gateway, http_route,
    idp::{claims, JwksServer, Signer},
    mesh::{echo_app, frontend_and_backend, Ports, Sidecar},
    mesh_tls, route_policy, service,
    tls::Pki,
    ConfigDir, Controller, Echo, Weir, API_KEYS,
};

/// What a raw request got back: the status, the head as text, and the body.
struct Raw {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Raw {
    /// The body as the echo backend's JSON.
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Writes `request` (a whole HTTP/1.1 head) to `addr` as it is, and reads one answer: its
/// head, then a `Content-Length` body, nothing more after a 101, or everything to the end.
async fn raw(addr: SocketAddr, request: &str) -> Raw {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    exchange(&mut tcp, request).await
}

/// [`raw`] on a connection already open.
async fn exchange(tcp: &mut TcpStream, request: &str) -> Raw {
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let split = loop {
        if let Some(at) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
            .await
            .expect("the answer took too long")
            .unwrap();
        assert!(
            n > 0,
            "closed before a head: {:?}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let mut body = answer[split + 4..].to_vec();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let length = head
        .to_ascii_lowercase()
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    if status == 101 {
        return Raw { status, head, body };
    }
    match length {
        Some(length) => {
            while body.len() < length {
                let mut buf = [0u8; 4096];
                let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
                    .await
                    .expect("the body took too long")
                    .unwrap();
                assert!(n > 0, "closed inside the body");
                body.extend_from_slice(&buf[..n]);
            }
        }
        // Weir's and the echo app's answers have a length; this is for a close-delimited one.
        None => {
            tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut body))
                .await
                .expect("the body took too long")
                .unwrap();
        }
    }
    Raw { status, head, body }
}

/// A GET of `path` for `host` with extra header lines (each ending in CRLF).
fn get(host: &str, path: &str, headers: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n")
}

/// Every path below is read by some backend as `/admin/users`, while RFC 3986 alone reads
/// it as something under `/public` or as one `/admin…` segment.
const TRICKS: [&str; 6] = [
    "/admin;x/users",
    "/public/..;/admin/users",
    "/admin%2fusers",
    "/public/..%2fadmin/users",
    "/public\\..\\admin\\users",
    "/admin%5cusers",
];

const SHOP: &str = "shop.example.com";
const KEY: &str = "X-API-Key: k-mobile-123\r\n";

/// The ingress in front of one echo app: `/admin` behind an API key, `/` public.
fn admin_and_public(app: &Echo) -> ConfigDir {
    let admin = http_route(
        "shop",
        &[SHOP],
        "  - matches: [{path: {type: PathPrefix, value: /admin}}]\n    backendRefs: [{name: app, port: 80}]\n",
    );
    let public = http_route(
        "public",
        &[SHOP],
        "  - backendRefs: [{name: app, port: 80}]\n",
    );
    ConfigDir::new()
        .with("svc.yaml", &service("app", &[app]))
        .with("gw.yaml", &gateway())
        .with("routes.yaml", &format!("{admin}---\n{public}"))
        .with("keys.yaml", API_KEYS)
        .with("auth.yaml", &api_key_policy("X-API-Key"))
}

#[tokio::test]
async fn paths_backends_read_as_another_route_are_refused_by_default() {
    let app = Echo::start("app");
    let dir = admin_and_public(&app);
    let weir = Weir::start(&dir);
    // The routes work as meant.
    assert_eq!(
        raw(weir.addr, &get(SHOP, "/admin/users", "")).await.status,
        401
    );
    let keyed = raw(weir.addr, &get(SHOP, "/admin/users", KEY)).await;
    assert_eq!(keyed.status, 200, "{}", keyed.head);
    assert_eq!(
        raw(weir.addr, &get(SHOP, "/public/x", "")).await.status,
        200
    );
    // Every form a backend reads as /admin/users is refused, key or no key.
    for path in TRICKS {
        for key in ["", KEY] {
            let answer = raw(weir.addr, &get(SHOP, path, key)).await;
            assert_eq!(answer.status, 400, "{path}: {}", answer.head);
        }
    }
}

#[tokio::test]
async fn unescaped_and_stripped_paths_match_the_route_the_backend_sees() {
    let app = Echo::start("app");
    let dir = admin_and_public(&app);
    let flags = [
        "--escaped-slashes",
        "unescape",
        "--path-parameters",
        "strip",
    ];
    let weir = Weir::start_with(&dir, &flags);
    for path in TRICKS {
        let anonymous = raw(weir.addr, &get(SHOP, path, "")).await;
        assert_eq!(anonymous.status, 401, "{path}: {}", anonymous.head);
        let keyed = raw(weir.addr, &get(SHOP, path, KEY)).await;
        assert_eq!(keyed.status, 200, "{path}: {}", keyed.head);
        // The backend receives the path that was matched.
        assert_eq!(keyed.json()["path"], "/admin/users", "{path}");
    }
}

/// A frontend and a backend sidecar under STRICT; the backend's AccessPolicy lets the
/// frontend reach `/public/*` only. The backend sidecar runs with `flags`.
struct Mesh {
    frontend: Sidecar,
    _backend: Sidecar,
    _app: weir_e2e::mesh::App,
    _controller: Controller,
    _dir: ConfigDir,
}

const PUBLIC_ONLY: &str = "apiVersion: weir.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: backend, namespace: shop}\nspec:\n  selector: {matchLabels: {app: backend}}\n  rules: [{from: [{serviceAccount: frontend}], to: [{paths: [\"/public/*\"]}]}]\n";

impl Mesh {
    async fn start(flags: &[&str]) -> Self {
        let (front, back) = (Ports::free(), Ports::free());
        let dir = ConfigDir::new()
            .with(
                "workloads.yaml",
                &frontend_and_backend(front.endpoint(), back.endpoint()),
            )
            .with("access.yaml", PUBLIC_ONLY)
            .with("tls.yaml", &mesh_tls("STRICT"));
        let controller = Controller::start(&dir);
        let app = echo_app("backend", None);
        let frontend = Sidecar::shop(&controller, "frontend", app.port, front, &[]);
        let backend = Sidecar::shop(&controller, "backend", app.port, back, flags);
        frontend.wait_ready().await;
        backend.wait_ready().await;
        Self {
            frontend,
            _backend: backend,
            _app: app,
            _controller: controller,
            _dir: dir,
        }
    }

    /// A raw request from the frontend app to the backend, through both sidecars.
    async fn call(&self, path: &str, headers: &str) -> Raw {
        raw(self.frontend.outbound, &get("backend.shop", path, headers)).await
    }
}

#[tokio::test]
async fn access_policy_paths_cannot_be_bypassed_with_forms_the_app_reads_differently() {
    let mesh = Mesh::start(&[]).await;
    assert_eq!(mesh.call("/public/ok", "").await.status, 200);
    assert_eq!(mesh.call("/admin/users", "").await.status, 403);
    for path in TRICKS {
        let answer = mesh.call(path, "").await;
        assert_eq!(answer.status, 400, "{path}: {}", answer.head);
    }
}

#[tokio::test]
async fn sidecars_vouch_for_the_caller_and_switch_to_websocket_only() {
    let mesh = Mesh::start(&[]).await;
    // A lookalike of the identity header never reaches the app; the proved identity does.
    let forged =
        "X_Weir_Peer_Identity: spiffe://forged\r\nx-weir-peer-identity: spiffe://forged\r\n";
    let answer = mesh.call("/public/ok", forged).await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    let sent = &answer.json()["headers"];
    assert!(sent.get("x_weir_peer_identity").is_none(), "{sent}");
    assert_eq!(
        sent["x-weir-peer-identity"],
        "spiffe://cluster.local/ns/shop/sa/frontend"
    );
    // Upgrades other than WebSocket are served as plain requests, h2c included.
    for protocol in ["my-proto", "h2c"] {
        let request = upgrade("backend.shop", protocol, "").replace("/chat", "/public/chat");
        let answer = raw(mesh.frontend.outbound, &request).await;
        assert_eq!(answer.status, 200, "{protocol}: {}", answer.head);
        assert!(answer.json()["headers"].get("upgrade").is_none());
    }
    let ws = upgrade("backend.shop", "websocket", "").replace("/chat", "/public/chat");
    assert_eq!(raw(mesh.frontend.outbound, &ws).await.status, 101);
}

#[tokio::test]
async fn access_policy_paths_see_unescaped_and_stripped_forms() {
    let flags = [
        "--escaped-slashes",
        "unescape",
        "--path-parameters",
        "strip",
    ];
    let mesh = Mesh::start(&flags).await;
    let allowed = mesh.call("/public;v=1/ok", "").await;
    assert_eq!(allowed.status, 200, "{}", allowed.head);
    assert_eq!(allowed.json()["path"], "/public/ok");
    for path in TRICKS {
        let answer = mesh.call(path, "").await;
        assert_eq!(answer.status, 403, "{path}: {}", answer.head);
    }
}

const JWT_HOST: &str = "jwt.example.com";
const KEYS_HOST: &str = "keys.example.com";
const ISS: &str = "https://idp.example.com";

/// The ingress in front of one echo app: `jwt.example.com` needs a token whose `sub` goes to
/// the app as `X-User-Id`, `keys.example.com` an API key whose client goes as
/// `X-Weir-Client`; `flags` for weir-ingress. Returns the gateway, a valid token, and what
/// must outlive the test.
async fn trusted_headers(flags: &[&str]) -> (Weir, String, impl Sized) {
    let pki = Pki::new();
    let signer = Signer::new("k1");
    let idp = JwksServer::start(&pki, vec![signer.jwk.clone()]).await;
    let app = Echo::start("app");
    let route = |name: &str, host: &str| {
        http_route(name, &[host], "  - backendRefs: [{name: app, port: 80}]\n")
    };
    let jwt = format!(
        "  jwt:\n    providers:\n    - name: idp\n      issuer: {ISS}\n      audiences: [shop]\n      jwks: {{uri: \"{}\"}}\n      forwardClaims: {{sub: X-User-Id}}\n",
        idp.uri()
    );
    let keys = "  apiKeys: {secretRef: {name: keys}, header: X-API-Key}\n";
    let dir = ConfigDir::new()
        .with("svc.yaml", &service("app", &[&app]))
        .with("gw.yaml", &gateway())
        .with(
            "routes.yaml",
            &format!(
                "{}---\n{}",
                route("jwt", JWT_HOST),
                route("keys", KEYS_HOST)
            ),
        )
        .with("keys.yaml", API_KEYS)
        .with(
            "auth.yaml",
            &format!(
                "{}---\n{}",
                route_policy("AuthPolicy", "jwt", "jwt", &jwt),
                route_policy("AuthPolicy", "keys", "keys", keys)
            ),
        );
    let ca = dir.path.join("ca.pem");
    std::fs::write(&ca, pki.ca_pem()).unwrap();
    let weir = Weir::start_with_env(&dir, flags, &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    let token = signer.sign(&claims(ISS, "shop", "alice", 300));
    (weir, token, (idp, app, dir))
}

const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn connection_cannot_name_away_what_weir_vouches_for() {
    let (weir, token, _keep) = trusted_headers(&[]).await;
    let named = "Connection: x-user-id, x-weir-client, x-request-id, traceparent\r\n";
    let stamps = format!("traceparent: {TRACE}\r\nx-request-id: client-id\r\n");
    let bearer = format!("Authorization: Bearer {token}\r\n{stamps}");
    let with_token = format!("GET / HTTP/1.1\r\nHost: {JWT_HOST}\r\n{bearer}{named}\r\n");
    let answer = raw(weir.addr, &with_token).await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    let sent = &answer.json()["headers"];
    assert_eq!(sent["x-user-id"], "alice", "{sent}");
    let id = sent["x-request-id"].as_str().expect("an x-request-id");
    assert_eq!(id.len(), 32, "a new id: the client's was hop-by-hop");
    let trace = sent["traceparent"].as_str().expect("a traceparent");
    assert!(
        trace.starts_with("00-") && !trace.contains("4bf92f3577b34da6"),
        "{trace}"
    );

    let key = format!("GET / HTTP/1.1\r\nHost: {KEYS_HOST}\r\n{KEY}{stamps}{named}\r\n");
    let answer = raw(weir.addr, &key).await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    let sent = &answer.json()["headers"];
    assert_eq!(sent["x-weir-client"], "mobile", "{sent}");
    assert_eq!(
        sent["x-request-id"].as_str().map(str::len),
        Some(32),
        "{sent}"
    );
    assert!(sent["traceparent"].is_string(), "{sent}");

    // An API key named hop-by-hop is not the client's credential for the backend's hop.
    let hidden =
        format!("GET / HTTP/1.1\r\nHost: {KEYS_HOST}\r\n{KEY}Connection: x-api-key\r\n\r\n");
    assert_eq!(raw(weir.addr, &hidden).await.status, 401);
}

/// Lookalikes of what Weir sets or vouches for, plus one header of the app's own.
const LOOKALIKES: &str = "X_User_Id: mallory\r\nX_Weir_Client: admin\r\nX_Request_Id: chosen\r\nX_Forwarded_For: 203.0.113.9\r\nX_Weir_Peer_Identity: spiffe://forged\r\nMy_App_Flag: 1\r\n";

#[tokio::test]
async fn header_names_with_underscores_are_dropped_by_default() {
    let (weir, token, _keep) = trusted_headers(&[]).await;
    for request in [
        format!("GET / HTTP/1.1\r\nHost: {JWT_HOST}\r\nAuthorization: Bearer {token}\r\n{LOOKALIKES}\r\n"),
        format!("GET / HTTP/1.1\r\nHost: {KEYS_HOST}\r\n{KEY}{LOOKALIKES}\r\n"),
    ] {
        let answer = raw(weir.addr, &request).await;
        assert_eq!(answer.status, 200, "{}", answer.head);
        let sent = answer.json()["headers"].as_object().unwrap().clone();
        let underscored: Vec<&String> = sent.keys().filter(|n| n.contains('_')).collect();
        assert!(underscored.is_empty(), "{underscored:?} reached the backend");
    }
}

#[tokio::test]
async fn kept_underscores_never_shadow_a_vouched_header() {
    let (weir, token, _keep) = trusted_headers(&["--underscore-headers", "keep"]).await;
    // On a route without the JWT policy too: x-user-id is vouched for by the snapshot.
    let request = format!("GET / HTTP/1.1\r\nHost: {KEYS_HOST}\r\n{KEY}{LOOKALIKES}\r\n");
    let answer = raw(weir.addr, &request).await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    let sent = &answer.json()["headers"];
    for name in [
        "x_user_id",
        "x_weir_client",
        "x_request_id",
        "x_forwarded_for",
    ] {
        assert!(
            sent.get(name).is_none(),
            "{name} reached the backend: {sent}"
        );
    }
    assert_eq!(sent["my_app_flag"], "1", "{sent}");
    assert_eq!(sent["x-weir-client"], "mobile");
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {JWT_HOST}\r\nAuthorization: Bearer {token}\r\n{LOOKALIKES}\r\n"
    );
    let sent = raw(weir.addr, &request).await.json()["headers"].clone();
    assert!(sent.get("x_user_id").is_none(), "{sent}");
    assert_eq!(sent["x-user-id"], "alice");
}

const PROTO_HOST: &str = "proto.example.com";

/// `Upgrade: protocol` on a connection kept open, with extra header lines.
fn upgrade(host: &str, protocol: &str, headers: &str) -> String {
    format!("GET /chat HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade{headers}\r\nUpgrade: {protocol}\r\n\r\n")
}

#[tokio::test]
async fn only_the_upgrades_a_route_allows_reach_the_backend_and_never_h2c() {
    let app = Echo::start("app");
    let plain = http_route(
        "shop",
        &[SHOP],
        "  - backendRefs: [{name: app, port: 80}]\n",
    );
    let more = http_route("proto", &[PROTO_HOST], "  - backendRefs: [{name: app, port: 80}]\n")
        .replace(
            "metadata: {name: proto, namespace: default}",
            "metadata: {name: proto, namespace: default, annotations: {weir.dev/upgrades: 'websocket,my-proto'}}",
        );
    let dir = ConfigDir::new()
        .with("svc.yaml", &service("app", &[&app]))
        .with("gw.yaml", &gateway())
        .with("routes.yaml", &format!("{plain}---\n{more}"));
    let weir = Weir::start(&dir);

    // WebSocket switches anywhere; another protocol only where the route allows it.
    assert_eq!(
        raw(weir.addr, &upgrade(SHOP, "websocket", "")).await.status,
        101
    );
    let mut tcp = TcpStream::connect(weir.addr).await.unwrap();
    let refused = exchange(&mut tcp, &upgrade(SHOP, "my-proto", "")).await;
    assert_eq!(refused.status, 200, "{}", refused.head);
    assert!(refused.json()["headers"].get("upgrade").is_none());
    // The connection is still HTTP: the next request is routed as one.
    let next = exchange(&mut tcp, &get(SHOP, "/after", "")).await;
    assert_eq!(next.json()["path"], "/after");

    let mut tcp = TcpStream::connect(weir.addr).await.unwrap();
    let switched = exchange(&mut tcp, &upgrade(PROTO_HOST, "my-proto", "")).await;
    assert_eq!(switched.status, 101, "{}", switched.head);
    assert!(switched
        .head
        .to_ascii_lowercase()
        .contains("upgrade: my-proto"));
    tcp.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut echoed))
        .await
        .expect("the tunnel echoes")
        .unwrap();
    assert_eq!(&echoed, b"ping");

    // h2c is served as plain HTTP/1.1, even where other protocols are allowed.
    let h2c = ", HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__";
    for host in [SHOP, PROTO_HOST] {
        let answer = raw(weir.addr, &upgrade(host, "h2c", h2c)).await;
        assert_eq!(answer.status, 200, "{host}: {}", answer.head);
        let sent = &answer.json()["headers"];
        assert!(
            sent.get("upgrade").is_none() && sent.get("http2-settings").is_none(),
            "{sent}"
        );
    }
}
