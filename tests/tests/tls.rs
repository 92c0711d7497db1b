//! TLS termination: certificates from Secrets chosen by SNI, HTTP/1.1 and HTTP/2 by ALPN,
//! TLS 1.2 and 1.3, session resumption, and certificate rotation without restart (a bad
//! certificate is refused and the previous one keeps serving).

use std::time::Duration;

use weir_e2e::{
    eventually, gateway, http_route, ingress_tls, service,
    tls::{https_get, KeyType, Pki},
    tls_secret, ConfigDir, Echo, Weir,
};

#[tokio::test]
async fn sni_picks_each_hosts_certificate_and_alpn_picks_the_protocol() {
    let pki = Pki::new();
    let shop_cert = pki.issue(&["shop.example.com"], KeyType::Ecdsa);
    let api_cert = pki.issue(&["*.api.example.com"], KeyType::Rsa);
    let (shop, api) = (Echo::start("shop"), Echo::start("api"));
    // One Ingress, and one Gateway HTTPS listener with a wildcard hostname.
    let listener = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\nspec:\n  gatewayClassName: weir\n  listeners:\n  - {name: http, protocol: HTTP, port: 80}\n  - name: https\n    protocol: HTTPS\n    port: 443\n    hostname: \"*.api.example.com\"\n    tls: {certificateRefs: [{name: api-tls}]}\n";
    let dir = ConfigDir::new()
        .with(
            "svc.yaml",
            &[service("shop", &[&shop]), service("api", &[&api])].join("---\n"),
        )
        .with(
            "certs.yaml",
            &[
                tls_secret("shop-tls", &shop_cert),
                tls_secret("api-tls", &api_cert),
            ]
            .join("---\n"),
        )
        .with(
            "shop.yaml",
            &ingress_tls("shop", "shop.example.com", "shop", "shop-tls"),
        )
        .with("gw.yaml", listener)
        .with(
            "api.yaml",
            &http_route(
                "api",
                &["*.api.example.com"],
                "  - backendRefs: [{name: api, port: 80}]\n",
            ),
        );
    let weir = Weir::start(&dir);

    for (alpn, tls12, expect_alpn, expect_version) in [
        (vec!["h2", "http/1.1"], false, "h2", "TLSv1_3"),
        (vec!["http/1.1"], false, "http/1.1", "TLSv1_3"),
        (vec!["h2", "http/1.1"], true, "h2", "TLSv1_2"),
    ] {
        let client = pki.client(&alpn, tls12);
        let got = https_get(weir.tls, "shop.example.com", client.clone(), "/", &[])
            .await
            .unwrap();
        assert_eq!(got.leaf, shop_cert.leaf_der());
        assert_eq!(got.alpn.as_deref(), Some(expect_alpn));
        assert_eq!(got.version, expect_version);
        assert_eq!(got.reply.status, 200);
        assert_eq!(got.reply.backend(), "shop");
        let headers = &got.reply.json()["headers"];
        assert_eq!(headers["x-forwarded-proto"], "https", "{headers}");

        let got = https_get(weir.tls, "v2.api.example.com", client, "/", &[])
            .await
            .unwrap();
        assert_eq!(got.leaf, api_cert.leaf_der(), "RSA wildcard certificate");
        assert_eq!(got.reply.backend(), "api");
    }

    // A name no certificate covers gets the default (the first), which the client refuses.
    let refused = https_get(
        weir.tls,
        "other.example.org",
        pki.client(&["h2"], false),
        "/",
        &[],
    )
    .await;
    assert!(
        refused.unwrap_err().contains("certificate"),
        "name mismatch is a certificate error"
    );
    // Plain HTTP on the cleartext port is untouched.
    assert_eq!(weir.get("shop.example.com", "/").await.backend(), "shop");
    assert!(
        weir.metric("weir_tls_handshakes_total{result=\"ok\"}")
            .await
            .unwrap()
            >= 6.0
    );
}

#[tokio::test]
async fn sessions_resume_with_tickets_on_tls13_and_tls12() {
    let pki = Pki::new();
    let cert = pki.issue(&["shop.example.com"], KeyType::Ecdsa);
    let shop = Echo::start("shop");
    let dir = ConfigDir::new()
        .with("svc.yaml", &service("shop", &[&shop]))
        .with("cert.yaml", &tls_secret("shop-tls", &cert))
        .with(
            "shop.yaml",
            &ingress_tls("shop", "shop.example.com", "shop", "shop-tls"),
        );
    let weir = Weir::start(&dir);
    for tls12 in [false, true] {
        let client = pki.client(&["http/1.1"], tls12);
        let first = https_get(weir.tls, "shop.example.com", client.clone(), "/", &[])
            .await
            .unwrap();
        assert!(!first.resumed);
        // TLS 1.3 tickets arrive after the handshake; the first exchange has read them.
        let second = https_get(weir.tls, "shop.example.com", client, "/", &[])
            .await
            .unwrap();
        assert!(
            second.resumed,
            "tls12={tls12}: the second connection resumes"
        );
        assert_eq!(second.reply.status, 200);
    }
}

#[tokio::test]
async fn a_rotated_certificate_is_served_without_restart_and_a_bad_one_is_refused() {
    let pki = Pki::new();
    let first = pki.issue(&["shop.example.com"], KeyType::Ecdsa);
    let shop = Echo::start("shop");
    let dir = ConfigDir::new()
        .with("svc.yaml", &service("shop", &[&shop]))
        .with("cert.yaml", &tls_secret("shop-tls", &first))
        .with(
            "shop.yaml",
            &ingress_tls("shop", "shop.example.com", "shop", "shop-tls"),
        )
        .with("gw.yaml", &gateway());
    let weir = Weir::start(&dir);
    // A fresh client each time: a resumed session would not show the server's certificate.
    let leaf = || async {
        https_get(
            weir.tls,
            "shop.example.com",
            pki.client(&["h2"], false),
            "/",
            &[],
        )
        .await
        .unwrap()
        .leaf
    };
    assert_eq!(leaf().await, first.leaf_der());

    let second = pki.issue(&["shop.example.com"], KeyType::Rsa);
    dir.write("cert.yaml", &tls_secret("shop-tls", &second));
    eventually(
        Duration::from_secs(5),
        "the rotated certificate",
        || async { (leaf().await == second.leaf_der()).then_some(()) },
    )
    .await;

    // A key that doesn't match the certificate: refused, named, and the second keeps serving
    // while the rest of the change (a new route) is applied.
    let v = weir.version().await;
    let mismatched = weir_e2e::tls::Issued {
        chain: pki.issue(&["shop.example.com"], KeyType::Ecdsa).chain,
        key: second.key.clone(),
    };
    dir.write("cert.yaml", &tls_secret("shop-tls", &mismatched));
    dir.write(
        "route.yaml",
        &http_route(
            "new",
            &["new.example.com"],
            "  - backendRefs: [{name: shop, port: 80}]\n",
        ),
    );
    eventually(Duration::from_secs(5), "the new route", || async {
        (weir.get("new.example.com", "/").await.status == 200).then_some(())
    })
    .await;
    assert!(weir.version().await > v);
    let config = weir.admin_get("/config").await.json();
    let status = &config["reload"]["certificates"][0];
    assert_eq!(status["secret"], "default/shop-tls", "{config}");
    assert_eq!(status["serving"], "previous", "{status}");
    assert!(
        status["error"]
            .as_str()
            .unwrap()
            .contains("Secret default/shop-tls"),
        "{status}"
    );
    assert_eq!(leaf().await, second.leaf_der());
    // The key material never appears in /config.
    assert!(!config.to_string().contains("PRIVATE KEY"));
}
