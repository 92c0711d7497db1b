//! Stage 4, routing: the host, path, method and headers choose the backend, a request nothing
//! matches gets 404, and the backend receives the path that was matched.

use http::Method;

use super::{route, service, stub::Stub, Pipeline};

/// One host, four rules: a path prefix, an exact path with a method, a header, and the rest.
const RULES: &str = "  - matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: api, port: 80}]
  - matches: [{method: POST, path: {type: Exact, value: /orders}}]
    backendRefs: [{name: orders, port: 80}]
  - matches: [{headers: [{name: x-canary, value: 'yes'}]}]
    backendRefs: [{name: canary, port: 80}]
  - backendRefs: [{name: web, port: 80}]
";

struct Backends {
    api: Stub,
    orders: Stub,
    canary: Stub,
    web: Stub,
}

async fn shop() -> (Pipeline, Backends) {
    let b = Backends {
        api: Stub::start("api").await,
        orders: Stub::start("orders").await,
        canary: Stub::start("canary").await,
        web: Stub::start("web").await,
    };
    let pipe = Pipeline::serving(&[
        &service("api", &[b.api.addr]),
        &service("orders", &[b.orders.addr]),
        &service("canary", &[b.canary.addr]),
        &service("web", &[b.web.addr]),
        &route("shop", &["shop.example.com"], RULES),
    ]);
    (pipe, b)
}

#[tokio::test]
async fn requests_go_to_the_backend_their_path_method_and_headers_match() {
    let (pipe, b) = shop().await;
    let answered = |r: super::Reply| r.stub().map(str::to_string);
    let get = |url: &'static str| pipe.get(url).send();
    assert_eq!(
        answered(get("shop.example.com/api/items").await),
        Some("api".into())
    );
    let post = pipe.call(Method::POST, "shop.example.com/orders");
    assert_eq!(answered(post.send().await), Some("orders".into()));
    assert_eq!(
        answered(get("shop.example.com/orders").await),
        Some("web".into()),
        "a GET does not match the POST rule"
    );
    let canary = pipe.get("shop.example.com/").header("x-canary", "yes");
    assert_eq!(answered(canary.send().await), Some("canary".into()));
    let canary_api = pipe.get("shop.example.com/api").header("x-canary", "yes");
    assert_eq!(
        answered(canary_api.send().await),
        Some("api".into()),
        "a longer path beats a header match"
    );
    assert_eq!(
        answered(get("Shop.Example.COM:8080/").await),
        Some("web".into()),
        "the host is matched without case or port"
    );
    assert_eq!(b.orders.one().method, Method::POST);
    let counts = [&b.api, &b.orders, &b.canary, &b.web].map(Stub::count);
    assert_eq!(counts, [2, 1, 1, 2]);
}

#[tokio::test]
async fn a_request_no_route_matches_gets_404_and_reaches_no_backend() {
    let (pipe, b) = shop().await;
    let r = pipe.get("other.example.com/api/items").send().await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error(), Some("no-route"));
    let all = [&b.api, &b.orders, &b.canary, &b.web];
    assert_eq!(all.map(Stub::count), [0; 4]);
}

#[tokio::test]
async fn the_backend_receives_the_path_that_was_matched() {
    let (pipe, b) = shop().await;
    let r = pipe
        .get("shop.example.com/web/../api/./items?q=1")
        .send()
        .await;
    assert_eq!(r.stub(), Some("api"), "routed by the normalised path");
    assert_eq!(b.api.one().target, "/api/items?q=1");
    assert_eq!(b.web.count(), 0);

    let refused = pipe.get("shop.example.com/api%2F..%2Fadmin").send().await;
    assert_eq!(
        refused.status, 400,
        "an encoded slash is refused by default"
    );
    assert_eq!(b.api.count(), 1);
}
