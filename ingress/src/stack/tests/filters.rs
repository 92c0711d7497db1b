//! Stages 6 and 9, the route's filters: they run in the order the route lists them, each on
//! the request as the ones before it left it; a RequestRedirect answers without forwarding.

use super::{route, service, stub::Stub, Pipeline};

/// The app behind `shop.example.com/api`, with `filters` (YAML list items, indented by 4)
/// on the rule, and a `shadow` Service for mirrors.
async fn shop_filtered(filters: &str) -> (Pipeline, Stub, Stub) {
    let (app, shadow) = (Stub::start("app").await, Stub::start("shadow").await);
    let rules = format!(
        "  - matches: [{{path: {{type: PathPrefix, value: /api}}}}]\n    filters:\n{filters}    backendRefs: [{{name: app, port: 80}}]\n"
    );
    let pipe = Pipeline::serving(&[
        &service("app", &[app.addr]),
        &service("shadow", &[shadow.addr]),
        &route("shop", &["shop.example.com"], &rules),
    ]);
    (pipe, app, shadow)
}

const REWRITE: &str = "    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
";
const MIRROR: &str = "    - type: RequestMirror
      requestMirror: {backendRef: {name: shadow, port: 80}}
";

#[tokio::test]
async fn header_modifiers_run_in_order_and_the_later_one_wins() {
    let (pipe, app, _) = shop_filtered(
        "    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-tier, value: first}], add: [{name: x-trail, value: a}]}
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-tier, value: second}], add: [{name: x-trail, value: b}], remove: [x-secret]}
",
    )
    .await;
    let r = pipe
        .get("shop.example.com/api")
        .header("x-tier", "client")
        .header("x-secret", "s")
        .send()
        .await;
    assert_eq!(r.status, 200);
    let seen = app.one();
    assert_eq!(seen.all("x-tier"), ["second"]);
    assert_eq!(seen.all("x-trail"), ["a", "b"]);
    assert_eq!(seen.header("x-secret"), None);
}

#[tokio::test]
async fn a_prefix_rewrite_replaces_the_matched_prefix_and_keeps_the_rest() {
    let (pipe, app, _) = shop_filtered(REWRITE).await;
    let r = pipe.get("shop.example.com/api/items/7?full=1").send().await;
    assert_eq!(r.status, 200);
    assert_eq!(app.one().target, "/v2/items/7?full=1");
}

#[tokio::test]
async fn a_mirror_after_a_rewrite_sends_the_rewritten_path() {
    let (pipe, app, shadow) = shop_filtered(&format!("{REWRITE}{MIRROR}")).await;
    let r = pipe.get("shop.example.com/api/items").send().await;
    assert_eq!(r.stub(), Some("app"), "the client gets the app's answer");
    assert_eq!(app.one().target, "/v2/items");
    shadow.wait_for(1).await;
    assert_eq!(shadow.one().target, "/v2/items");
}

#[tokio::test]
async fn a_mirror_before_a_rewrite_sends_the_original_path() {
    let (pipe, app, shadow) = shop_filtered(&format!("{MIRROR}{REWRITE}")).await;
    let r = pipe.get("shop.example.com/api/items").send().await;
    assert_eq!(r.stub(), Some("app"));
    assert_eq!(app.one().target, "/v2/items");
    shadow.wait_for(1).await;
    assert_eq!(shadow.one().target, "/api/items");
}

#[tokio::test]
async fn a_redirect_answers_with_the_location_and_forwards_nothing() {
    let (pipe, app, _) = shop_filtered(
        "    - type: RequestRedirect
      requestRedirect: {scheme: https, hostname: www.example.com, statusCode: 301}
",
    )
    .await;
    let r = pipe.get("shop.example.com/api/items?x=1").send().await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some("https://www.example.com/api/items?x=1")
    );
    assert_eq!(app.count(), 0);
}

#[tokio::test]
async fn a_response_header_modifier_changes_what_the_client_gets() {
    let (pipe, _app, _shadow) = shop_filtered(
        "    - type: ResponseHeaderModifier
      responseHeaderModifier: {set: [{name: x-stub, value: hidden}], add: [{name: x-served-by, value: weir}]}
",
    )
    .await;
    let r = pipe.get("shop.example.com/api").send().await;
    assert_eq!(r.body, "app");
    assert_eq!(r.stub(), Some("hidden"));
    assert_eq!(r.header("x-served-by"), Some("weir"));
}
