//! AuthPolicy end to end against a real HTTPS JWKS endpoint: valid, expired, wrong audience,
//! wrong issuer, tampered, `alg: none`, HMAC signed with the public key, missing scope, key
//! rotation with an unknown `kid`, spoofed claim headers, and API keys.

use weir_e2e::{
    gateway, http_route,
    idp::{claims, hmac_signed, unsigned, JwksServer, Signer},
    request, route_policy, service,
    tls::Pki,
    ConfigDir, Echo, Reply, Weir,
};

const ISS: &str = "https://idp.example.com";

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
    let policy = format!(
        "  jwt:\n    providers:\n    - name: idp\n      issuer: {ISS}\n      audiences: [shop]\n      jwks: {{uri: \"{}\"}}\n      forwardClaims: {{sub: X-User-Id}}\n      clockSkew: 5s\n  required: true\n",
        idp.uri()
    );
    let admin_policy = format!(
        "  jwt:\n    providers:\n    - name: idp\n      issuer: {ISS}\n      jwks: {{uri: \"{}\"}}\n      requiredScopes: [orders.write]\n",
        idp.uri()
    );
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
    let anonymous = weir_e2e::eventually(
        std::time::Duration::from_secs(5),
        "optional auth",
        || async {
            let r = call(&weir, "shop.example.com", &[("x-weir-client", "admin")]).await;
            (r.status == 200).then_some(r)
        },
    )
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
