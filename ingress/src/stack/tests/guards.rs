//! Stages 2a, 4a and 4b: an AuthPolicy's API keys (401 without, the client named to the
//! backend with), the headers it vouches for stripped in every spelling, and a local
//! RateLimitPolicy answering 429 with `Retry-After` once the burst is spent.

use super::{policy, route, service, stub::Stub, Pipeline};

/// A Secret `keys` with one API key: client `mobile`, key `k-mobile-123`.
const KEYS: &str = "apiVersion: v1\nkind: Secret\nmetadata: {name: keys, namespace: default}\nstringData: {mobile: k-mobile-123}\n";

/// The app behind route `shop` on `shop.example.com`, with `policies`.
async fn shop_with(policies: &[&str]) -> (Pipeline, Stub) {
    let app = Stub::start("app").await;
    let svc = service("app", &[app.addr]);
    let rules = "  - backendRefs: [{name: app, port: 80}]\n";
    let shop = route("shop", &["shop.example.com"], rules);
    let mut objects = vec![svc.as_str(), shop.as_str()];
    objects.extend(policies);
    (Pipeline::serving(&objects), app)
}

fn api_keys(spec: &str) -> String {
    policy("AuthPolicy", "shop", "HTTPRoute/shop", spec)
}

#[tokio::test]
async fn an_api_key_is_required_and_names_the_client_to_the_backend() {
    let auth = api_keys("  apiKeys: {secretRef: {name: keys}, header: X-API-Key}\n");
    let (pipe, app) = shop_with(&[KEYS, &auth]).await;

    let missing = pipe.get("shop.example.com/").send().await;
    assert_eq!(missing.status, 401);
    assert!(missing.header("www-authenticate").is_some());
    let wrong = pipe.get("shop.example.com/").header("x-api-key", "k-guess");
    assert_eq!(wrong.send().await.status, 401);
    assert_eq!(app.count(), 0, "no refused request reaches the backend");

    let ok = pipe
        .get("shop.example.com/")
        .header("x-api-key", "k-mobile-123")
        .header("x-weir-client", "admin")
        .send()
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(app.one().all("x-weir-client"), ["mobile"]);
}

#[tokio::test]
async fn lookalikes_of_a_vouched_header_never_reach_the_backend() {
    let auth = api_keys("  apiKeys: {secretRef: {name: keys}}\n  required: false\n");
    let (pipe, app) = shop_with(&[KEYS, &auth]).await;
    let pipe = pipe.keeping_underscores();
    let r = pipe
        .get("shop.example.com/")
        .header("x-weir-client", "admin")
        .header("x_weir_client", "admin")
        .header("X_Weir-Client", "admin")
        .header("x_app_flag", "1")
        .send()
        .await;
    assert_eq!(
        r.status, 200,
        "anonymous is let in when credentials are optional"
    );
    let seen = app.one();
    for spelling in ["x-weir-client", "x_weir_client", "x_weir-client"] {
        assert_eq!(seen.header(spelling), None, "{spelling}");
    }
    assert_eq!(
        seen.header("x_app_flag"),
        Some("1"),
        "other underscores are kept when asked to"
    );
}

#[tokio::test]
async fn a_local_limit_answers_429_with_retry_after_once_the_burst_is_spent() {
    let limit = policy(
        "RateLimitPolicy",
        "per-user",
        "HTTPRoute/shop",
        "  limits:\n  - {name: per-user, key: {header: X-User}, rate: {requests: 3, per: 1m}, algorithm: gcra, burst: 2}\n",
    );
    let (pipe, app) = shop_with(&[&limit]).await;
    let as_alice = || {
        pipe.get("shop.example.com/")
            .header("x-user", "alice")
            .send()
    };
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = as_alice().await;
        assert_eq!(r.status, 200);
        remaining.push(r.header("ratelimit-remaining").map(str::to_string));
    }
    assert_eq!(
        remaining,
        [Some("2".into()), Some("1".into()), Some("0".into())]
    );

    let refused = as_alice().await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.error(), Some("rate-limited"));
    assert_eq!(
        refused.header("retry-after"),
        Some("20"),
        "one request every 20 s"
    );
    assert_eq!(app.count(), 3);

    let bob = pipe.get("shop.example.com/").header("x-user", "bob");
    assert_eq!(
        bob.send().await.status,
        200,
        "another key has its own count"
    );
}
