//! The real `weir-injector` over HTTPS: an AdmissionReview as the API server posts it gets a
//! JSON patch back, and a renewed serving certificate is used without a restart.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use base64::Engine;
use bytes::Bytes;
use weir_e2e::{
    binary, eventually, free_port, metric,
    tls::{https_get, https_request, KeyType, Pki},
    wait_for_port,
};

const REVIEW: &str = include_str!("../../injector/tests/reviews/deployment.json");

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn reviews_are_answered_over_https_and_a_renewed_certificate_is_picked_up() {
    let dir = std::env::temp_dir().join(format!("weir-injector-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let pki = Pki::new();
    let name = "weir-injector.weir-system.svc";
    let first = pki.issue(&[name], KeyType::Ecdsa);
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert, &first.chain).unwrap();
    std::fs::write(&key, &first.key).unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _injector = Killed(
        Command::new(binary("weir-injector"))
            .args(["--listen", &addr.to_string()])
            .args(["--admin", &admin.to_string()])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .stderr(
                std::fs::File::create(dir.join("injector.log"))
                    .map(Stdio::from)
                    .unwrap(),
            )
            .spawn()
            .unwrap(),
    );
    wait_for_port(addr);
    let client = pki.client(&["h2", "http/1.1"], false);

    let answer = https_request(
        addr,
        name,
        client.clone(),
        "POST",
        "/inject",
        &[("content-type", "application/json")],
        Bytes::from_static(REVIEW.as_bytes()),
    )
    .await
    .unwrap();
    assert_eq!(
        answer.alpn.as_deref(),
        Some("h2"),
        "the API server speaks HTTP/2 to webhooks"
    );
    assert_eq!(answer.leaf, first.leaf_der());
    let review = answer.reply.json();
    assert_eq!(
        review["response"]["uid"],
        "0df28fbd-5f5f-11e8-bc74-36e6bb280816"
    );
    assert_eq!(review["response"]["allowed"], true);
    assert_eq!(review["response"]["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(review["response"]["patch"].as_str().unwrap())
        .unwrap();
    let patch: serde_json::Value = serde_json::from_slice(&patch).unwrap();
    assert!(patch.as_array().unwrap().len() > 4, "{patch}");

    // The opt-in path leaves a pod without the annotation alone.
    let answer = https_request(
        addr,
        name,
        client.clone(),
        "POST",
        "/inject/opt-in",
        &[],
        Bytes::from_static(REVIEW.as_bytes()),
    )
    .await
    .unwrap();
    assert!(answer.reply.json()["response"]["patch"].is_null());
    for (outcome, count) in [("injected", 1.0), ("skipped", 1.0)] {
        let series = format!("weir_injector_reviews_total{{outcome=\"{outcome}\"}}");
        assert_eq!(metric(admin, &series).await, Some(count), "{series}");
    }

    // Renewed on disk: served without a restart.
    let second = pki.issue(&[name], KeyType::Ecdsa);
    std::fs::write(&key, &second.key).unwrap();
    std::fs::write(&cert, &second.chain).unwrap();
    eventually(
        Duration::from_secs(10),
        "the renewed certificate",
        || async {
            // A fresh client: a resumed session would show the certificate of the first one.
            let fresh = pki.client(&["http/1.1"], false);
            let got = https_get(addr, name, fresh, "/healthz", &[]).await.ok()?;
            (got.leaf == second.leaf_der() && got.reply.status == 200).then_some(())
        },
    )
    .await;
}
