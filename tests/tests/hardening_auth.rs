//! The ingress's authentication and rate limits attacked (issue 24), against the real
//! `weir-ingress`:
//!
//! - a correctly signed JWT that is not valid yet (`nbf`), or whose header makes an extension
//!   critical (`crit`), is refused;
//! - a flood of invented keys never lets a spent key past its local limit;
//! - two IPv6 clients of one /64 share one `clientIP` limit (addresses added on `lo`, which
//!   needs root, as the network-namespace tests do).

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    process::Command,
};

use jsonwebtoken::{Algorithm, Header};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpSocket,
};
use weir_e2e::{
    idp::{claims, Signer},
    netns::ipv6_enabled,
    request, route_policy, routed, ConfigDir, Echo, Weir,
};

const ISS: &str = "https://idp.example.com";

/// Service `app`, a Gateway, HTTPRoute `shop` for shop.example.com, and a `kind` policy on it.
fn shop_with(app: &Echo, kind: &str, spec: &str) -> ConfigDir {
    routed(app, "shop", "shop.example.com")
        .with("policy.yaml", &route_policy(kind, "policy", "shop", spec))
}

async fn status(weir: &Weir, headers: &[(&str, &str)]) -> u16 {
    request(
        weir.addr,
        "shop.example.com",
        "/",
        headers,
        Default::default(),
        "GET",
    )
    .await
    .status
    .as_u16()
}

#[tokio::test]
async fn a_jwt_not_valid_yet_or_with_a_critical_extension_is_refused() {
    let signer = Signer::new("k1");
    let jwks = json!({ "keys": [signer.jwk] }).to_string();
    let app = Echo::start("app");
    let policy = format!(
        "  jwt:\n    providers:\n    - name: idp\n      issuer: {ISS}\n      audiences: [shop]\n      jwks: {{inline: '{jwks}'}}\n      clockSkew: 5s\n  required: true\n"
    );
    let weir = Weir::start(&shop_with(&app, "AuthPolicy", &policy));
    let with = |token: String| format!("Bearer {token}");

    let valid = claims(ISS, "shop", "alice", 300);
    let ok = with(signer.sign(&valid));
    assert_eq!(status(&weir, &[("authorization", &ok)]).await, 200);

    // Signed by the provider's key, but not valid for another ten minutes.
    let mut early = valid.clone();
    early["nbf"] = json!(valid["iat"].as_i64().unwrap() + 600);
    let early = with(signer.sign(&early));
    assert_eq!(status(&weir, &[("authorization", &early)]).await, 401);

    // Signed, valid claims, but the header makes an extension Weir does not know critical.
    let mut header = Header::new(Algorithm::ES256);
    header.crit = Some(vec!["weir-never-heard-of-it".into()]);
    header.extras.insert("weir-never-heard-of-it", true);
    let critical = with(signer.sign_with_header(header, &valid));
    assert_eq!(status(&weir, &[("authorization", &critical)]).await, 401);
}

#[tokio::test]
async fn a_flood_of_invented_keys_never_lets_a_spent_key_through() {
    let app = Echo::start("app");
    let spec =
        "  limits:\n  - {name: per-key, key: {header: X-Key}, rate: {requests: 2, per: 1h}}\n";
    // The smallest table, so the flood overflows it many times over.
    let weir = Weir::start_with(
        &shop_with(&app, "RateLimitPolicy", spec),
        &["--ratelimit-local-keys", "16"],
    );
    let victims = ["alice", "bob", "carol"];
    for victim in victims {
        assert_eq!(status(&weir, &[("x-key", victim)]).await, 200);
        assert_eq!(status(&weir, &[("x-key", victim)]).await, 200);
        assert_eq!(
            status(&weir, &[("x-key", victim)]).await,
            429,
            "{victim} spent"
        );
    }
    for i in 0..400 {
        let key = format!("invented-{i}");
        // Each invented key is spent too, so none is idle and the table must forget busy ones.
        status(&weir, &[("x-key", &key)]).await;
        status(&weir, &[("x-key", &key)]).await;
        if i % 40 == 39 {
            for victim in victims {
                let got = status(&weir, &[("x-key", victim)]).await;
                assert_eq!(
                    got,
                    429,
                    "{victim} got through after {} invented keys",
                    i + 1
                );
            }
        }
    }
}

/// IPv6 addresses added on `lo` for the test, removed on drop.
struct LoopbackAddresses(Vec<Ipv6Addr>);

impl LoopbackAddresses {
    fn add(addresses: &[Ipv6Addr]) -> Self {
        let added = Self(addresses.to_vec());
        for a in addresses {
            let out = Command::new("ip")
                .args([
                    "-6",
                    "addr",
                    "add",
                    &format!("{a}/128"),
                    "dev",
                    "lo",
                    "nodad",
                ])
                .output()
                .expect("run ip");
            assert!(
                out.status.success(),
                "ip -6 addr add {a} dev lo (needs root): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        added
    }
}

impl Drop for LoopbackAddresses {
    fn drop(&mut self) {
        for a in &self.0 {
            let _ = Command::new("ip")
                .args(["-6", "addr", "del", &format!("{a}/128"), "dev", "lo"])
                .output();
        }
    }
}

/// The status of one GET sent from `source` over a raw socket.
async fn status_from(source: Ipv6Addr, to: SocketAddr) -> u16 {
    let socket = TcpSocket::new_v6().unwrap();
    socket.bind(SocketAddr::new(source.into(), 0)).unwrap();
    let mut stream = socket.connect(to).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    let text = String::from_utf8_lossy(&reply);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

#[tokio::test]
async fn ipv6_clients_of_one_64_share_one_client_ip_limit() {
    if !ipv6_enabled() {
        panic!("IPv6 is off on this machine; this test needs it");
    }
    // Per process, so concurrent runs do not collide.
    let id = (std::process::id() % 0xffff) as u16;
    let (a, b) = (
        Ipv6Addr::new(0xfd24, 0x19, id, 0, 0, 0, 0, 0xa),
        Ipv6Addr::new(0xfd24, 0x19, id, 0, 0xdead, 0xbeef, 0, 0xb),
    );
    let other = Ipv6Addr::new(0xfd24, 0x19, id, 1, 0, 0, 0, 0xc);
    let listen = Ipv6Addr::new(0xfd24, 0x19, id, 2, 0, 0, 0, 1);
    let _lo = LoopbackAddresses::add(&[a, b, other, listen]);

    let app = Echo::start("app");
    let spec =
        "  limits:\n  - {name: per-client, key: {clientIP: {}}, rate: {requests: 2, per: 1h}}\n";
    let weir = Weir::start_listening_on(
        &shop_with(&app, "RateLimitPolicy", spec),
        IpAddr::V6(listen),
        &[],
    );
    assert_eq!(status_from(a, weir.addr).await, 200);
    assert_eq!(status_from(a, weir.addr).await, 200);
    // Another address of the same /64 is the same client: already spent.
    assert_eq!(status_from(b, weir.addr).await, 429);
    // Another /64 counts apart.
    assert_eq!(status_from(other, weir.addr).await, 200);
}
