//! AuthPolicy end to end against a real HTTPS JWKS endpoint: valid, expired, wrong audience,
//! wrong issuer, tampered, `alg: none`, HMAC signed with the public key, missing scope, key
//! rotation with an unknown `kid`, spoofed claim headers, and API keys.

use std::time::Duration;

use weir_e2e::{
    gateway, http_route,
    idp::{claims, hmac_signed, unsigned, JwksServer, Signer},
    request, route_policy, service,
    tls::Pki,
    ConfigDir, Echo, Reply, Weir,
};

const ISS: &str = "https://idp.example.com";

/// An AuthPolicy spec with one JWT provider, `idp`, and the lines given (of the provider, then
/// of the policy).
fn jwt_policy(idp: &JwksServer, lines: &str) -> String {
    format!(
        "  jwt:\n    providers:\n    - name: idp\n      issuer: {ISS}\n      jwks: {{uri: \"{}\"}}\n{lines}",
        idp.uri()
    )
}

async fn call(weir: &Weir, host: &str, headers: &[(&str, &str)]) -> Reply {
    request(weir.addr, host, "/", headers, Default::default(), "GET").await
}

async fn bearer(weir: &Weir, token: &str) -> Reply {
    let auth = format!("Bearer {token}");
    call(
        weir,
        "shop.example.com",
        &[("authorization", &auth), ("x-user-id", "spoofed")],
    )
    .await
}

#[tokio::test]
async fn jwts_are_verified_against_the_idps_keys_and_every_forgery_is_refused() {
    let pki = Pki::new();
    let (first, second) = (Signer::new("k1"), Signer::new("k2"));
    let idp = JwksServer::start(&pki, vec![first.jwk.clone()]).await;
    let app = Echo::start("app");
    let policy = jwt_policy(
        &idp,
        "      audiences: [shop]\n      forwardClaims: {sub: X-User-Id}\n      clockSkew: 5s\n  required: true\n",
    );
    let admin_policy = jwt_policy(&idp, "      requiredScopes: [orders.write]\n");
    let dir = ConfigDir::new()
        .with("svc.yaml", &service("app", &[&app]))
        .with("gw.yaml", &gateway())
        .with(
            "routes.yaml",
            &[
                http_route(
                    "shop",
                    &["shop.example.com"],
                    "  - backendRefs: [{name: app, port: 80}]\n",
                ),
                http_route(
                    "admin",
                    &["admin.example.com"],
                    "  - backendRefs: [{name: app, port: 80}]\n",
                ),
            ]
            .join("---\n"),
        )
        .with(
            "auth.yaml",
            &[
                route_policy("AuthPolicy", "shop", "shop", &policy),
                route_policy("AuthPolicy", "admin", "admin", &admin_policy),
            ]
            .join("---\n"),
        );
    let ca = dir.path.join("ca.pem");
    std::fs::write(&ca, pki.ca_pem()).unwrap();
    let weir = Weir::start_with_env(&dir, &[], &[("SSL_CERT_FILE", ca.to_str().unwrap())]);

    // Valid: the backend gets the verified subject, never the client's copy.
    let ok = bearer(&weir, &first.sign(&claims(ISS, "shop", "alice", 300))).await;
    assert_eq!(ok.status, 200, "{:?}", ok.headers);
    assert_eq!(ok.json()["headers"]["x-user-id"], "alice");

    // Missing: 401 with a Bearer challenge; the spoofed header never reaches the backend.
    let missing = call(&weir, "shop.example.com", &[("x-user-id", "mallory")]).await;
    assert_eq!(missing.status, 401);
    assert_eq!(
        missing.header("www-authenticate"),
        Some("Bearer realm=\"weir\"")
    );

    let valid = claims(ISS, "shop", "alice", 300);
    let good = first.sign(&valid);
    let tampered = {
        let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
        let forged = claims(ISS, "shop", "admin", 300);
        parts[1] = unsigned(&forged).split('.').nth(1).unwrap().to_string();
        parts.join(".")
    };
    let public_key = first.jwk.to_string();
    let cases = [
        (
            "expired",
            first.sign(&claims(ISS, "shop", "alice", -60)),
            "expired",
        ),
        (
            "wrong audience",
            first.sign(&claims(ISS, "other", "alice", 300)),
            "audience",
        ),
        (
            "wrong issuer",
            first.sign(&claims("https://evil.example.com", "shop", "alice", 300)),
            "issuer",
        ),
        ("tampered", tampered, "signature"),
        ("alg none", unsigned(&valid), "malformed"),
        (
            "HS256 with the public key",
            hmac_signed(&valid, "k1", public_key.as_bytes()),
            "not accepted",
        ),
        (
            "unknown signer",
            Signer::new("k1").sign(&valid),
            "signature",
        ),
        ("garbage", "not.a.jwt".to_string(), "malformed"),
    ];
    for (what, token, reason) in cases {
        let r = bearer(&weir, &token).await;
        assert_eq!(r.status, 401, "{what}");
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.contains("invalid_token") && challenge.contains(reason),
            "{what}: {challenge}"
        );
        assert_eq!(r.header("x-weir-error"), Some("unauthenticated"));
    }

    // A scope the token lacks: 403.
    let auth = format!("Bearer {good}");
    let forbidden = call(&weir, "admin.example.com", &[("authorization", &auth)]).await;
    assert_eq!(forbidden.status, 403);
    assert!(forbidden
        .header("www-authenticate")
        .unwrap()
        .contains("orders.write"));

    // Rotation: the IdP publishes k2; the first token with kid k2 makes the gateway refetch.
    idp.publish(vec![first.jwk.clone(), second.jwk.clone()]);
    let before = idp.fetches();
    let rotated = bearer(&weir, &second.sign(&claims(ISS, "shop", "bob", 300))).await;
    assert_eq!(rotated.status, 200);
    assert_eq!(rotated.json()["headers"]["x-user-id"], "bob");
    assert_eq!(idp.fetches(), before + 1);
    // Made-up kids do not hammer the IdP: at most one refetch per 5 s.
    for i in 0..5 {
        let r = bearer(&weir, &Signer::new(&format!("x{i}")).sign(&valid)).await;
        assert_eq!(r.status, 401);
    }
    assert_eq!(idp.fetches(), before + 1);

    // The IdP going away does not matter to keys already fetched.
    drop(idp);
    assert_eq!(bearer(&weir, &good).await.status, 200);
    assert!(
        weir.metric("weir_auth_decisions_total{result=\"invalid\"}")
            .await
            .unwrap()
            >= 8.0
    );
}

#[tokio::test]
async fn api_keys_name_the_client_and_wrong_keys_are_refused() {
    let app = Echo::start("app");
    let keys = "apiVersion: v1\nkind: Secret\nmetadata: {name: shop-keys, namespace: default}\nstringData: {mobile: k-mobile-123, partner: k-partner-456}\n";
    let dir = ConfigDir::new()
        .with("svc.yaml", &service("app", &[&app]))
        .with("gw.yaml", &gateway())
        .with(
            "route.yaml",
            &http_route(
                "shop",
                &["shop.example.com"],
                "  - backendRefs: [{name: app, port: 80}]\n",
            ),
        )
        .with("keys.yaml", keys)
        .with(
            "auth.yaml",
            &route_policy(
                "AuthPolicy",
                "shop",
                "shop",
                "  apiKeys: {secretRef: {name: shop-keys}, header: X-API-Key}\n",
            ),
        );
    let weir = Weir::start(&dir);
    let ok = call(
        &weir,
        "shop.example.com",
        &[("x-api-key", "k-partner-456"), ("x-weir-client", "admin")],
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["headers"]["x-weir-client"], "partner");
    let wrong = call(&weir, "shop.example.com", &[("x-api-key", "k-partner-457")]).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong
        .header("www-authenticate")
        .unwrap()
        .contains("unknown API key"));
    assert_eq!(call(&weir, "shop.example.com", &[]).await.status, 401);

    // Optional credentials: anonymous passes, but a wrong key is still refused, and the
    // spoofed client header is still removed.
    dir.write(
        "auth.yaml",
        &route_policy(
            "AuthPolicy",
            "shop",
            "shop",
            "  apiKeys: {secretRef: {name: shop-keys}}\n  required: false\n",
        ),
    );
    let anonymous = weir_e2e::eventually(Duration::from_secs(5), "optional auth", || async {
        let r = call(&weir, "shop.example.com", &[("x-weir-client", "admin")]).await;
        (r.status == 200).then_some(r)
    })
    .await;
    assert!(
        anonymous.json()["headers"].get("x-weir-client").is_none(),
        "spoofed client header reached the backend"
    );
    assert_eq!(
        call(&weir, "shop.example.com", &[("x-api-key", "nope")])
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn the_access_log_names_users_by_a_keyed_hash_that_replicas_share() {
    let pki = Pki::new();
    let signer = Signer::new("k1");
    let idp = JwksServer::start(&pki, vec![signer.jwk.clone()]).await;
    let app = Echo::start("app");
    let policy = jwt_policy(&idp, "      audiences: [shop]\n  required: true\n");
    let dir = ConfigDir::new()
        .with("svc.yaml", &service("app", &[&app]))
        .with("gw.yaml", &gateway())
        .with(
            "routes.yaml",
            &http_route(
                "shop",
                &["shop.example.com"],
                "  - backendRefs: [{name: app, port: 80}]\n",
            ),
        )
        .with(
            "auth.yaml",
            &route_policy("AuthPolicy", "shop", "shop", &policy),
        );
    let ca = dir.path.join("ca.pem");
    std::fs::write(&ca, pki.ca_pem()).unwrap();
    // The key lives outside the config directory, as a mounted Secret would.
    let key_dir = ConfigDir::new();
    let key = key_dir.path.join("log-key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").unwrap();
    let env = [("SSL_CERT_FILE", ca.to_str().unwrap())];
    let key_flag = ["--access-log-user-key-file", key.to_str().unwrap()];
    let replicas = [
        Weir::start_with_env(&dir, &key_flag, &env),
        Weir::start_with_env(&dir, &key_flag, &env),
    ];
    let plain = Weir::start_with_env(&dir, &["--access-log-user", "plain"], &env);

    let alice = signer.sign(&claims(ISS, "shop", "alice", 300));
    let bob = signer.sign(&claims(ISS, "shop", "bob", 300));
    let mut users = Vec::new();
    for weir in replicas.iter().chain([&plain]) {
        let mut ids = Vec::new();
        for token in [&alice, &alice, &bob] {
            let reply = bearer(weir, token).await;
            assert_eq!(reply.status, 200);
            ids.push(reply.header("x-request-id").unwrap().to_string());
        }
        let refused = call(weir, "shop.example.com", &[]).await;
        assert_eq!(refused.status, 401);
        ids.push(refused.header("x-request-id").unwrap().to_string());
        let lines =
            weir_e2e::eventually(Duration::from_secs(5), "four access log lines", || async {
                Some(weir.access_log()).filter(|lines| lines.len() >= 4)
            })
            .await;
        // Lines from different workers come out of order: each request's by its id.
        let user: Vec<_> = ids
            .iter()
            .map(|id| {
                let line = lines.iter().find(|l| l["request_id"] == id.as_str());
                line.expect("a line for each request")["user"].clone()
            })
            .collect();
        let everything = weir.stdout().join("\n");
        assert!(
            !everything.contains(alice.as_str()),
            "a token reached the log"
        );
        users.push(user);
    }
    let (first, second, plain) = (&users[0], &users[1], &users[2]);
    assert_eq!(plain[..3], ["alice", "alice", "bob"], "plain: {plain:?}");
    assert!(plain[3].is_null(), "a refused request has no user");
    let hash = first[0].as_str().unwrap();
    assert_eq!(hash.len(), 32, "{hash}");
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(first[1], first[0], "one user, one hash");
    assert_ne!(first[2], first[0], "two users, one hash");
    assert!(
        !first.iter().any(|u| u == "alice" || u == "bob"),
        "{first:?}"
    );
    assert_eq!(second, first, "replicas with the same key disagree");
}
