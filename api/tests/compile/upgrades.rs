//! The `weir.dev/upgrades` annotation: which protocols a route's clients may switch to.

use super::{errors, ok, route};

/// The test route with `annotations` (a YAML flow map) on its metadata.
fn annotated(annotations: &str) -> String {
    route("  - backendRefs: [{name: app, port: 80}]\n").replace(
        "metadata: {name: r, namespace: shop}",
        &format!("metadata: {{name: r, namespace: shop, annotations: {annotations}}}"),
    )
}

#[test]
fn websocket_alone_unless_the_route_names_its_protocols() {
    let plain = ok(&annotated("{}"));
    assert_eq!(plain.routes[0].upgrades, ["websocket"]);
    let more = ok(&annotated(
        "{weir.dev/upgrades: 'WebSocket, my-proto,,my-proto'}",
    ));
    assert_eq!(more.routes[0].upgrades, ["websocket", "my-proto"]);
    let none = ok(&annotated("{weir.dev/upgrades: ''}"));
    assert!(none.routes[0].upgrades.is_empty());
}

#[test]
fn h2c_and_non_tokens_are_refused() {
    let h2c = errors(&annotated("{weir.dev/upgrades: 'websocket,h2c'}"));
    assert!(
        h2c[0].contains("metadata.annotations[weir.dev/upgrades]") && h2c[0].contains("h2c"),
        "{h2c:?}"
    );
    let bad = errors(&annotated("{weir.dev/upgrades: 'web socket'}"));
    assert!(bad[0].contains("not a protocol name"), "{bad:?}");
}
