//! ListenerSet, as the upstream conformance suite's ListenerSet tests check it (each test here
//! named after one, with its objects in namespace `default` for upstream's infra namespace):
//! a Gateway takes ListenerSets only from the namespaces its `allowedListeners` lets in; their
//! listeners serve beside its own, yield to its own and to older sets' on a conflict; routes
//! reach them by a parentRef of kind ListenerSet alone. Against the real controller on the
//! test API server and a real gateway connected to it, and in directory mode.

use std::time::Duration;

use serde_json::Value;
use weir_e2e::{
    apiserver::ApiServer,
    cluster::{cluster, condition, conditions_of, pair, reason, Cluster},
    eventually, service, service_at,
    tls::{https_get, Issued, KeyType, Pki},
    tls_secret, ConfigDir, Echo, Weir,
};

const V1: &str = "gateway.networking.k8s.io/v1";

fn namespace(name: &str, labels: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {{{labels}}}}}\n")
}

/// A Gateway in `default` whose `allowedListeners` come `from` (`""`: none said).
fn gateway(name: &str, from: &str, listeners: &str) -> String {
    let allowed = match from {
        "" => String::new(),
        from => format!("  allowedListeners: {{namespaces: {{from: {from}}}}}\n"),
    };
    format!("apiVersion: {V1}\nkind: Gateway\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  gatewayClassName: weir\n{allowed}  listeners:\n{listeners}")
}

/// An HTTP listener on port 80 for `host` (YAML list item), routes from `from`.
fn http(name: &str, host: &str, from: &str) -> String {
    format!("  - {{name: {name}, port: 80, protocol: HTTP, hostname: {host}, allowedRoutes: {{namespaces: {{from: {from}}}}}}}\n")
}

/// A ListenerSet `namespace/name` for Gateway `default/parent`.
fn set(namespace: &str, name: &str, parent: &str, listeners: &str) -> String {
    format!("apiVersion: {V1}\nkind: ListenerSet\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  parentRef: {{kind: Gateway, group: gateway.networking.k8s.io, name: {parent}, namespace: default}}\n  listeners:\n{listeners}")
}

/// An HTTPRoute `namespace/name` with `parents`, sending `path` to `backend` (in `default`).
fn route(namespace: &str, name: &str, parents: &str, path: &str, backend: &str) -> String {
    format!("apiVersion: {V1}\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  parentRefs: {parents}\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n    backendRefs: [{{name: {backend}, namespace: default, port: 80}}]\n")
}

fn set_ref(namespace: &str, name: &str) -> String {
    format!("{{kind: ListenerSet, group: gateway.networking.k8s.io, name: {name}, namespace: {namespace}}}")
}

/// The three infra backends, as Services in `default`.
fn backends(api: &ApiServer) -> Vec<Echo> {
    (1..=3)
        .map(|n| {
            let name = format!("infra-backend-v{n}");
            let echo = Echo::start(&name);
            api.apply(&service(&name, &[&echo]));
            echo
        })
        .collect()
}

/// A ListenerSet's status once written for its current generation with `Accepted` = `accepted`.
async fn set_status(api: &ApiServer, namespace: &str, name: &str, accepted: &str) -> Value {
    let what = format!("ListenerSet {namespace}/{name} with Accepted={accepted}");
    eventually(Duration::from_secs(10), &what, || async {
        let set = api.get(V1, "ListenerSet", namespace, name)?;
        let generation = set["metadata"]["generation"].as_i64();
        let conditions = set["status"]["conditions"].as_array()?;
        let latest = conditions
            .iter()
            .all(|c| c["observedGeneration"].as_i64() == generation);
        (latest && condition(&set["status"]["conditions"], "Accepted")["status"] == accepted)
            .then(|| set["status"].clone())
    })
    .await
}

/// Gateway `name`'s status once it counts `sets` attached ListenerSets.
async fn gateway_with_sets(api: &ApiServer, name: &str, sets: i64) -> Value {
    let what = format!("Gateway {name} with {sets} attached ListenerSets");
    eventually(Duration::from_secs(10), &what, || async {
        let gateway = api.get(V1, "Gateway", "default", name)?;
        let status = &gateway["status"];
        (status["attachedListenerSets"] == sets
            && condition(&status["conditions"], "Accepted")["status"] == "True")
            .then(|| status.clone())
    })
    .await
}

fn listener<'a>(status: &'a Value, name: &str) -> &'a Value {
    let listeners = status["listeners"].as_array();
    let found = listeners.and_then(|l| l.iter().find(|l| l["name"] == name));
    found.unwrap_or_else(|| panic!("no listener {name} in {status}"))
}

/// The listener is accepted, resolved and programmed.
fn assert_accepted(status: &Value, name: &str) {
    let l = listener(status, name);
    for kind in ["Accepted", "ResolvedRefs", "Programmed"] {
        assert_eq!(
            condition(&l["conditions"], kind)["status"],
            "True",
            "{name} {kind}: {l}"
        );
    }
}

/// The listener yields to another: `Accepted`, `Programmed` False and `Conflicted` True, all
/// with `reason`.
fn assert_conflicted(status: &Value, name: &str, why: &str) {
    let l = listener(status, name);
    for (kind, state) in [
        ("Accepted", "False"),
        ("Programmed", "False"),
        ("Conflicted", "True"),
    ] {
        assert_eq!(
            reason(&l["conditions"], kind),
            pair(state, why),
            "{name} {kind}: {l}"
        );
    }
}

/// Both of the set's conditions False with `why`.
fn assert_refused(status: &Value, why: &str) {
    for kind in ["Accepted", "Programmed"] {
        assert_eq!(
            reason(&status["conditions"], kind),
            pair("False", why),
            "{kind}: {status}"
        );
    }
}

async fn expect(cluster: &Cluster, host: &str, path: &str, backend: Option<&str>) {
    let what = format!("{host}{path} answered by {backend:?}");
    eventually(Duration::from_secs(10), &what, || async {
        let reply = cluster.weir.get(host, path).await;
        let ok = match backend {
            Some(b) => reply.status == 200 && reply.backend() == b,
            None => reply.status == 404,
        };
        ok.then_some(())
    })
    .await;
}

#[tokio::test]
async fn listener_set_default_not_allowed() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    let name = "gateway-default-does-not-allow-listenerset";
    api.apply(&gateway(
        name,
        "",
        &http("gateway-listener", "gateway-listener.com", "All"),
    ));
    let listeners = http(
        "listenerset-default-not-allowed-listener",
        "listenerset-default-not-allowed-listener.com",
        "All",
    );
    api.apply(&set(
        "default",
        "listenerset-default-not-allowed",
        name,
        &listeners,
    ));
    gateway_with_sets(api, name, 0).await;
    let status = set_status(api, "default", "listenerset-default-not-allowed", "False").await;
    assert_refused(&status, "NotAllowed");
    // Its listener is not served: its hostname finds no route.
    assert_eq!(
        cluster
            .weir
            .get("listenerset-default-not-allowed-listener.com", "/")
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn listener_set_allowed_namespace_none() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    let name = "gateway-does-not-allow-listenerset";
    api.apply(&gateway(
        name,
        "None",
        &http("gateway-listener", "gateway-listener.com", "All"),
    ));
    let listeners = http("listener-set-listener", "listener-set-listener.com", "All");
    api.apply(&set("default", "listenerset-not-allowed", name, &listeners));
    gateway_with_sets(api, name, 0).await;
    let status = set_status(api, "default", "listenerset-not-allowed", "False").await;
    assert_refused(&status, "NotAllowed");
}

#[tokio::test]
async fn listener_set_allowed_namespace_same() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    let name = "gateway-allows-listenerset-in-same-namespace";
    api.apply(&gateway(
        name,
        "Same",
        &http("gateway-listener", "gateway-listener.com", "All"),
    ));
    api.apply(&namespace("gateway-api-listenerset-not-allowed-ns", ""));
    let listener = |n: &str| http(n, &format!("{n}.com"), "All");
    api.apply(&set(
        "default",
        "listenerset-in-same-namespace",
        name,
        &listener("listenerset-in-same-namespace-listener"),
    ));
    api.apply(&set(
        "gateway-api-listenerset-not-allowed-ns",
        "listenerset-in-different-namespace",
        name,
        &listener("listenerset-in-different-namespace-listener"),
    ));
    gateway_with_sets(api, name, 1).await;
    let taken = set_status(api, "default", "listenerset-in-same-namespace", "True").await;
    assert_eq!(
        reason(&taken["conditions"], "Accepted"),
        pair("True", "Accepted")
    );
    assert_eq!(
        reason(&taken["conditions"], "Programmed"),
        pair("True", "Programmed")
    );
    assert_accepted(&taken, "listenerset-in-same-namespace-listener");
    let refused = set_status(
        api,
        "gateway-api-listenerset-not-allowed-ns",
        "listenerset-in-different-namespace",
        "False",
    )
    .await;
    assert_refused(&refused, "NotAllowed");
}

#[tokio::test]
async fn listener_set_allowed_namespace_selector() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    let name = "gateway-allows-listenerset-in-selected-namespace";
    let yaml = gateway(
        name,
        "Selector",
        &http("gateway-listener", "gateway-listener.com", "All"),
    )
    .replace(
        "from: Selector}",
        "from: Selector, selector: {matchLabels: {allowed: ns}}}",
    );
    api.apply(&yaml);
    api.apply(&namespace(
        "gateway-api-listenerset-selector-allowed-ns",
        "allowed: ns",
    ));
    api.apply(&namespace(
        "gateway-api-listenerset-selector-not-allowed-ns",
        "",
    ));
    let listener = |n: &str| http(n, &format!("{n}.com"), "All");
    api.apply(&set(
        "gateway-api-listenerset-selector-allowed-ns",
        "listenerset-in-selected-namespace",
        name,
        &listener("listenerset-in-selected-namespace-listener"),
    ));
    api.apply(&set(
        "gateway-api-listenerset-selector-not-allowed-ns",
        "listenerset-not-in-selected-namespace",
        name,
        &listener("listenerset-not-in-selected-namespace-listener"),
    ));
    gateway_with_sets(api, name, 1).await;
    let taken = set_status(
        api,
        "gateway-api-listenerset-selector-allowed-ns",
        "listenerset-in-selected-namespace",
        "True",
    )
    .await;
    assert_accepted(&taken, "listenerset-in-selected-namespace-listener");
    let refused = set_status(
        api,
        "gateway-api-listenerset-selector-not-allowed-ns",
        "listenerset-not-in-selected-namespace",
        "False",
    )
    .await;
    assert_refused(&refused, "NotAllowed");
}

#[tokio::test]
async fn listener_set_allowed_routes_namespaces() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    let _backends = backends(api);
    let name = "gateway-with-listener-sets-test-allowed-routes";
    api.apply(&gateway(
        name,
        "All",
        &http("gateway-listener", "gateway-listener.com", "All"),
    ));
    api.apply(&namespace("gateway-api-routes-allowed-ns", "allowed: ns"));
    api.apply(&namespace("gateway-api-routes-not-allowed-ns", ""));
    api.apply(&namespace("gateway-api-ls-cross-ns", ""));
    let set_name = "listenerset-test-allowed-routes-namespaces";
    let prefix = "listener-set-listener-allowed-routes";
    let listeners = format!(
        "{}{}{}",
        http(
            &format!("{prefix}-all"),
            &format!("{prefix}-all.com"),
            "All"
        ),
        http(
            &format!("{prefix}-same"),
            &format!("{prefix}-same.com"),
            "Same"
        ),
        http(
            &format!("{prefix}-selector"),
            &format!("{prefix}-selector.com"),
            "Selector"
        )
        .replace(
            "from: Selector}",
            "from: Selector, selector: {matchLabels: {allowed: ns}}}"
        ),
    );
    api.apply(&set("default", set_name, name, &listeners));
    let parents = format!("[{}]", set_ref("default", set_name));
    api.apply(&route(
        "default",
        "route-in-same-namespace",
        &parents,
        "/route-in-same-namespace",
        "infra-backend-v1",
    ));
    api.apply(&route(
        "gateway-api-routes-allowed-ns",
        "route-in-selected-namespace",
        &parents,
        "/route-in-selected-namespace",
        "infra-backend-v2",
    ));
    api.apply(&route(
        "gateway-api-routes-not-allowed-ns",
        "route-not-in-selected-namespace",
        &parents,
        "/route-not-in-selected-namespace",
        "infra-backend-v3",
    ));
    // A set in another namespace: routes from there are "Same", routes from the Gateway's not.
    let cross = "listenerset-test-allowed-routes-cross-ns";
    let cross_listener = format!("{prefix}-cross-ns-same");
    api.apply(&set(
        "gateway-api-ls-cross-ns",
        cross,
        name,
        &http(&cross_listener, &format!("{cross_listener}.com"), "Same"),
    ));
    let cross_parents = format!("[{}]", set_ref("gateway-api-ls-cross-ns", cross));
    api.apply(&route(
        "gateway-api-ls-cross-ns",
        "route-in-listenerset-namespace",
        &cross_parents,
        "/route-in-listenerset-namespace",
        "infra-backend-v1",
    ));
    api.apply(&route(
        "default",
        "route-in-gateway-namespace",
        &cross_parents,
        "/route-in-gateway-namespace",
        "infra-backend-v2",
    ));
    let grant = "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: routes-to-infra, namespace: default}\nspec:\n  from:\n  - {group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: gateway-api-routes-allowed-ns}\n  - {group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: gateway-api-routes-not-allowed-ns}\n  - {group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: gateway-api-ls-cross-ns}\n  to: [{group: \"\", kind: Service}]\n";
    api.apply(grant);
    gateway_with_sets(api, name, 2).await;
    for (ns, route) in [
        ("default", "route-in-same-namespace"),
        (
            "gateway-api-routes-allowed-ns",
            "route-in-selected-namespace",
        ),
        (
            "gateway-api-routes-not-allowed-ns",
            "route-not-in-selected-namespace",
        ),
        ("gateway-api-ls-cross-ns", "route-in-listenerset-namespace"),
    ] {
        let conditions = conditions_of(api, "HTTPRoute", ns, route, "True").await;
        assert_eq!(
            reason(&conditions, "Accepted"),
            pair("True", "Accepted"),
            "{route}"
        );
    }
    let refused = conditions_of(
        api,
        "HTTPRoute",
        "default",
        "route-in-gateway-namespace",
        "False",
    )
    .await;
    assert_eq!(
        reason(&refused, "Accepted"),
        pair("False", "NotAllowedByListeners")
    );
    let status = eventually(
        Duration::from_secs(10),
        "three routes on the All listener",
        || async {
            let status = set_status(api, "default", set_name, "True").await;
            (listener(&status, &format!("{prefix}-all"))["attachedRoutes"] == 3).then_some(status)
        },
    )
    .await;
    for (suffix, attached) in [("all", 3), ("same", 1), ("selector", 1)] {
        let name = format!("{prefix}-{suffix}");
        assert_accepted(&status, &name);
        let l = listener(&status, &name);
        assert_eq!(l["attachedRoutes"], attached, "{name}: {l}");
        let kinds: Vec<&Value> = l["supportedKinds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| &k["kind"])
            .collect();
        assert_eq!(kinds, ["HTTPRoute", "GRPCRoute"], "{name}");
    }
    let cross_status = eventually(
        Duration::from_secs(10),
        "the cross-namespace route counted",
        || async {
            let status = set_status(api, "gateway-api-ls-cross-ns", cross, "True").await;
            (listener(&status, &cross_listener)["attachedRoutes"] == 1).then_some(status)
        },
    )
    .await;
    assert_eq!(
        listener(&cross_status, &cross_listener)["attachedRoutes"],
        1
    );
    let (v1, v2, v3) = (
        Some("infra-backend-v1"),
        Some("infra-backend-v2"),
        Some("infra-backend-v3"),
    );
    let all = format!("{prefix}-all.com");
    let same = format!("{prefix}-same.com");
    let selector = format!("{prefix}-selector.com");
    let cross_host = format!("{cross_listener}.com");
    for (host, path, backend) in [
        (&all, "/route-in-same-namespace", v1),
        (&all, "/route-in-selected-namespace", v2),
        (&all, "/route-not-in-selected-namespace", v3),
        (&same, "/route-in-same-namespace", v1),
        (&same, "/route-in-selected-namespace", None),
        (&same, "/route-not-in-selected-namespace", None),
        (&selector, "/route-in-selected-namespace", v2),
        (&selector, "/route-in-same-namespace", None),
        (&selector, "/route-not-in-selected-namespace", None),
        (&cross_host, "/route-in-listenerset-namespace", v1),
        (&cross_host, "/route-in-gateway-namespace", None),
    ] {
        expect(&cluster, host, path, backend).await;
    }
}

#[tokio::test]
async fn listener_set_allowed_routes_supported_kinds() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    let name = "gateway-with-listener-sets-test-supported-route-kinds";
    api.apply(&gateway(
        name,
        "All",
        &http("gateway-listener", "gateway-listener.com", "All"),
    ));
    let listener = "  - {name: listener-set-listener-allowed-routes-tls-only, port: 443, protocol: TLS, hostname: listener-set-listener-allowed-routes-tls-only.com, tls: {mode: Passthrough}, allowedRoutes: {kinds: [{kind: HTTPRoute}]}}\n";
    api.apply(&set(
        "default",
        "listenerset-test-allowed-routes-supported-kinds",
        name,
        listener,
    ));
    let status = set_status(
        api,
        "default",
        "listenerset-test-allowed-routes-supported-kinds",
        "False",
    )
    .await;
    let l = listener_status(&status, "listener-set-listener-allowed-routes-tls-only");
    assert_eq!(
        reason(&l["conditions"], "ResolvedRefs"),
        pair("False", "InvalidRouteKinds")
    );
}

fn listener_status<'a>(status: &'a Value, name: &str) -> &'a Value {
    listener(status, name)
}

/// The Gateway and four ListenerSets of upstream's conflict tests, with `conflicting` the
/// listener (YAML item) each conflicting one has for `name` (a hostname or a protocol clash).
async fn conflicts(
    cluster: &Cluster,
    gateway_name: &str,
    conflicting: &dyn Fn(&str) -> String,
    why: &str,
) {
    let api = &cluster.api;
    let kind = why.trim_end_matches("Conflict").to_lowercase();
    let with_gateway = format!("{kind}-conflict-with-gateway-listener");
    let with_set = format!("{kind}-conflict-with-listener-set-listener");
    let listeners = format!(
        "{}{}",
        http("gateway-listener", "gateway-listener.com", "All"),
        http(&with_gateway, &format!("{with_gateway}.com"), "All"),
    );
    api.apply(&gateway(gateway_name, "Same", &listeners));
    let plain = |name: &str| http(name, &format!("{name}.com"), "All");
    let sets = [
        (
            format!("listenerset-with-{kind}-conflict-with-gateway-1"),
            format!(
                "{}{}{}",
                plain("listener-set-1-listener"),
                conflicting(&with_gateway),
                plain(&with_set)
            ),
        ),
        (
            format!("listenerset-with-{kind}-conflict-with-gateway-2"),
            conflicting(&with_gateway),
        ),
        (
            format!("listenerset-with-{kind}-conflict-with-listener-set-1"),
            format!(
                "{}{}",
                plain("listener-set-2-listener"),
                conflicting(&with_set)
            ),
        ),
        (
            format!("listenerset-with-{kind}-conflict-with-listener-set-2"),
            conflicting(&with_set),
        ),
    ];
    // Created one after the other: the older set comes first.
    for (name, listeners) in &sets {
        api.apply(&set("default", name, gateway_name, listeners));
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let gateway = gateway_with_sets(api, gateway_name, 2).await;
    assert_accepted(&gateway, "gateway-listener");
    assert_accepted(&gateway, &with_gateway);
    let first = set_status(api, "default", &sets[0].0, "True").await;
    assert_eq!(
        reason(&first["conditions"], "Programmed"),
        pair("True", "Programmed")
    );
    assert_accepted(&first, "listener-set-1-listener");
    assert_accepted(&first, &with_set);
    assert_conflicted(&first, &with_gateway, why);
    let second = set_status(api, "default", &sets[1].0, "False").await;
    assert_refused(&second, "ListenersNotValid");
    assert_conflicted(&second, &with_gateway, why);
    let third = set_status(api, "default", &sets[2].0, "True").await;
    assert_accepted(&third, "listener-set-2-listener");
    assert_conflicted(&third, &with_set, why);
    let fourth = set_status(api, "default", &sets[3].0, "False").await;
    assert_refused(&fourth, "ListenersNotValid");
    assert_conflicted(&fourth, &with_set, why);
}

#[tokio::test]
async fn listener_set_hostname_conflict() {
    let cluster = cluster(&[]).await;
    let same_host = |name: &str| http(name, &format!("{name}.com"), "All");
    conflicts(
        &cluster,
        "gateway-with-listenerset-hostname-conflict",
        &same_host,
        "HostnameConflict",
    )
    .await;
}

#[tokio::test]
async fn listener_set_protocol_conflict() {
    let cluster = cluster(&[]).await;
    let tcp = |name: &str| {
        format!("  - {{name: {name}, port: 80, protocol: TCP, allowedRoutes: {{namespaces: {{from: All}}}}}}\n")
    };
    conflicts(
        &cluster,
        "gateway-with-listenerset-protocol-conflict",
        &tcp,
        "ProtocolConflict",
    )
    .await;
}

#[tokio::test]
async fn listener_set_reference_grant() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    let pki = Pki::new();
    api.apply(&namespace("gateway-conformance-web-backend", ""));
    api.apply(&namespace(
        "gateway-api-listener-sets-test-reference-grant-ns",
        "",
    ));
    let cert = pki.issue(
        &[
            "gateway-listener.com",
            "listenerset-with-reference-grant-listener.com",
            "listenerset-without-reference-grant-listener-1.com",
        ],
        KeyType::Ecdsa,
    );
    api.apply(&tls_secret("certificate", &cert).replace(
        "namespace: default",
        "namespace: gateway-conformance-web-backend",
    ));
    let https = |name: &str, host: &str| {
        format!("  - {{name: {name}, port: 443, protocol: HTTPS, hostname: {host}, tls: {{certificateRefs: [{{kind: Secret, name: certificate, namespace: gateway-conformance-web-backend}}]}}}}\n")
    };
    let name = "gateway-with-listener-sets-test-reference-grant";
    api.apply(&gateway(
        name,
        "All",
        &https("gateway-listener", "gateway-listener.com"),
    ));
    let grant = |name: &str, kind: &str, from: &str| {
        format!("apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: {name}, namespace: gateway-conformance-web-backend}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: {kind}, namespace: {from}}}]\n  to: [{{group: \"\", kind: Secret}}]\n")
    };
    api.apply(&grant("reference-grant-for-gateway", "Gateway", "default"));
    api.apply(&grant(
        "reference-grant-for-listener-set",
        "ListenerSet",
        "default",
    ));
    api.apply(&set(
        "default",
        "listenerset-with-reference-grant",
        name,
        &https(
            "listenerset-with-reference-grant-listener",
            "listenerset-with-reference-grant-listener.com",
        ),
    ));
    api.apply(&set(
        "gateway-api-listener-sets-test-reference-grant-ns",
        "listenerset-without-reference-grant",
        name,
        &https(
            "listenerset-without-reference-grant-listener",
            "listenerset-without-reference-grant-listener-1.com",
        ),
    ));
    let granted = set_status(api, "default", "listenerset-with-reference-grant", "True").await;
    assert_eq!(reason(&granted["conditions"], "Programmed").0, "True");
    let l = listener(&granted, "listenerset-with-reference-grant-listener");
    assert_eq!(
        condition(&l["conditions"], "ResolvedRefs")["status"],
        "True",
        "{l}"
    );
    let ungranted = set_status(
        api,
        "gateway-api-listener-sets-test-reference-grant-ns",
        "listenerset-without-reference-grant",
        "False",
    )
    .await;
    assert_refused(&ungranted, "ListenersNotValid");
    let l = listener(&ungranted, "listenerset-without-reference-grant-listener");
    assert_eq!(
        reason(&l["conditions"], "ResolvedRefs"),
        pair("False", "RefNotPermitted"),
        "{l}"
    );
}

/// A ListenerSet's passthrough listener has no certificate to use, so its certificateRefs are
/// not looked up: its status cannot tell a tenant whether another namespace's Secret exists.
#[tokio::test]
async fn a_listener_sets_status_does_not_tell_whether_another_namespaces_secret_exists() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    api.apply(&namespace("vault", ""));
    api.apply(&namespace("tenant", ""));
    let cert = Pki::new().issue(&["db.internal"], KeyType::Ecdsa);
    api.apply(&tls_secret("db-creds", &cert).replace("namespace: default", "namespace: vault"));
    api.apply(&gateway(
        "shared",
        "All",
        &http("http", "shared.example.com", "All"),
    ));
    let probe = |name: &str, secret: &str| {
        let listener = format!("  - {{name: probe, port: 443, protocol: TLS, hostname: {name}.example.com, tls: {{mode: Passthrough, certificateRefs: [{{name: {secret}, namespace: vault}}]}}}}
");
        set("tenant", name, "shared", &listener)
    };
    api.apply(&probe("exists", "db-creds"));
    api.apply(&probe("missing", "nope"));
    let mut seen = Vec::new();
    for name in ["exists", "missing"] {
        let status = set_status(api, "tenant", name, "True").await;
        let l = listener(&status, "probe");
        seen.push(reason(&l["conditions"], "ResolvedRefs"));
    }
    assert_eq!(seen[0], seen[1], "the two answers differ: {seen:?}");
}

#[tokio::test]
async fn listener_set_dual_parent_ref_independence() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    let _backends = backends(api);
    let name = "gateway-dual-parentref";
    api.apply(&gateway(
        name,
        "Same",
        &http("gw-dual-parentref-listener", "gw-dual.com", "Same"),
    ));
    api.apply(&set(
        "default",
        "ls-dual-parentref",
        name,
        &http("ls-dual-parentref-listener", "ls-dual.com", "Same"),
    ));
    let both = format!(
        "[{{name: {name}, namespace: default}}, {}]",
        set_ref("default", "ls-dual-parentref")
    );
    api.apply(&route(
        "default",
        "route-dual-parentref-both",
        &both,
        "/dualboth",
        "infra-backend-v1",
    ));
    let one = format!("[{{name: {name}, sectionName: ls-dual-parentref-listener}}, {{kind: ListenerSet, name: ls-dual-parentref, sectionName: ls-dual-parentref-listener}}]");
    api.apply(&route(
        "default",
        "route-dual-parentref-one",
        &one,
        "/dualone",
        "infra-backend-v2",
    ));
    gateway_with_sets(api, name, 1).await;
    let status = eventually(
        Duration::from_secs(10),
        "two routes on the set's listener",
        || async {
            let status = set_status(api, "default", "ls-dual-parentref", "True").await;
            (listener(&status, "ls-dual-parentref-listener")["attachedRoutes"] == 2)
                .then_some(status)
        },
    )
    .await;
    assert_accepted(&status, "ls-dual-parentref-listener");
    // Both parents take the first route; the Gateway has no listener of the second's section.
    let parents = |route: &str| {
        let route = api.get(V1, "HTTPRoute", "default", route).unwrap();
        route["status"]["parents"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let accepted = |parents: &[Value], kind: &str| {
        let entry = parents
            .iter()
            .find(|p| p["parentRef"]["kind"].as_str().unwrap_or("Gateway") == kind);
        entry.map(|e| reason(&e["conditions"], "Accepted"))
    };
    let both = parents("route-dual-parentref-both");
    assert_eq!(
        accepted(&both, "Gateway"),
        Some(pair("True", "Accepted")),
        "{both:?}"
    );
    assert_eq!(
        accepted(&both, "ListenerSet"),
        Some(pair("True", "Accepted")),
        "{both:?}"
    );
    let one = parents("route-dual-parentref-one");
    assert_eq!(
        accepted(&one, "Gateway"),
        Some(pair("False", "NoMatchingParent")),
        "{one:?}"
    );
    assert_eq!(
        accepted(&one, "ListenerSet"),
        Some(pair("True", "Accepted")),
        "{one:?}"
    );
    expect(
        &cluster,
        "gw-dual.com",
        "/dualboth",
        Some("infra-backend-v1"),
    )
    .await;
    expect(
        &cluster,
        "ls-dual.com",
        "/dualboth",
        Some("infra-backend-v1"),
    )
    .await;
    expect(
        &cluster,
        "ls-dual.com",
        "/dualone",
        Some("infra-backend-v2"),
    )
    .await;
    expect(&cluster, "gw-dual.com", "/dualone", None).await;
}

#[tokio::test]
async fn listener_set_http_routing() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    let _backends = backends(api);
    let name = "gateway-with-listener-sets-http-routing";
    let own = format!(
        "{}{}",
        http("gateway-listener-1", "gateway-listener-1.com", "All"),
        http("gateway-listener-2", "gateway-listener-2.com", "All")
    );
    api.apply(&gateway(name, "All", &own));
    for n in 1..=2 {
        let set_name = format!("listener-set-http-routing-{n}");
        let listener = |i: u8| {
            let l = format!("{set_name}-listener-{i}");
            http(&l, &format!("{l}.com"), "All")
        };
        api.apply(&set(
            "default",
            &set_name,
            name,
            &format!("{}{}", listener(1), listener(2)),
        ));
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let gw = format!("{{name: {name}}}");
    let (ls1, ls2) = (
        set_ref("default", "listener-set-http-routing-1"),
        set_ref("default", "listener-set-http-routing-2"),
    );
    let routes = [
        (
            "attaches-to-all-listeners",
            format!("[{gw}, {ls1}, {ls2}]"),
            "/route",
            "infra-backend-v1",
        ),
        (
            "gateway-route",
            format!("[{gw}]"),
            "/gateway-route",
            "infra-backend-v2",
        ),
        (
            "gateway-section-route",
            format!("[{{name: {name}, sectionName: gateway-listener-1}}]"),
            "/gateway-section-route",
            "infra-backend-v3",
        ),
        (
            "listener-set-http-routing-1-route",
            format!("[{ls1}]"),
            "/listener-set-http-routing-1-route",
            "infra-backend-v2",
        ),
        (
            "listener-set-http-routing-1-section-route",
            format!(
                "[{}]",
                ls1.replace(
                    '}',
                    ", sectionName: listener-set-http-routing-1-listener-1}"
                )
            ),
            "/listener-set-http-routing-1-section-route",
            "infra-backend-v3",
        ),
        (
            "listener-set-http-routing-2-route",
            format!("[{ls2}]"),
            "/listener-set-http-routing-2-route",
            "infra-backend-v2",
        ),
    ];
    for (route_name, parents, path, backend) in &routes {
        api.apply(&route("default", route_name, parents, path, backend));
    }
    gateway_with_sets(api, name, 2).await;
    let ls1_status = eventually(
        Duration::from_secs(10),
        "routes counted on the first set",
        || async {
            let status = set_status(api, "default", "listener-set-http-routing-1", "True").await;
            (listener(&status, "listener-set-http-routing-1-listener-1")["attachedRoutes"] == 3)
                .then_some(status)
        },
    )
    .await;
    assert_eq!(
        listener(&ls1_status, "listener-set-http-routing-1-listener-2")["attachedRoutes"],
        2
    );
    // Its status is written as the routes arrive: read it once it counts them.
    let ls2_status = eventually(
        Duration::from_secs(10),
        "routes counted on the second set",
        || async {
            let status = set_status(api, "default", "listener-set-http-routing-2", "True").await;
            let counted = |i: u8| {
                let name = format!("listener-set-http-routing-2-listener-{i}");
                listener(&status, &name)["attachedRoutes"] == 2
            };
            (counted(1) && counted(2)).then_some(status)
        },
    )
    .await;
    for i in 1..=2 {
        assert_eq!(
            listener(
                &ls2_status,
                &format!("listener-set-http-routing-2-listener-{i}")
            )["attachedRoutes"],
            2
        );
    }
    // Each path on the hosts of its own parents (and section) only.
    let hosts_of = |route: &str| -> Vec<&str> {
        match route {
            "attaches-to-all-listeners" => vec![
                "gateway-listener-1.com",
                "gateway-listener-2.com",
                "listener-set-http-routing-1-listener-1.com",
                "listener-set-http-routing-1-listener-2.com",
                "listener-set-http-routing-2-listener-1.com",
                "listener-set-http-routing-2-listener-2.com",
            ],
            "gateway-route" => vec!["gateway-listener-1.com", "gateway-listener-2.com"],
            "gateway-section-route" => vec!["gateway-listener-1.com"],
            "listener-set-http-routing-1-route" => vec![
                "listener-set-http-routing-1-listener-1.com",
                "listener-set-http-routing-1-listener-2.com",
            ],
            "listener-set-http-routing-1-section-route" => {
                vec!["listener-set-http-routing-1-listener-1.com"]
            }
            _ => vec![
                "listener-set-http-routing-2-listener-1.com",
                "listener-set-http-routing-2-listener-2.com",
            ],
        }
    };
    let all_hosts = hosts_of("attaches-to-all-listeners");
    for (route_name, _, path, backend) in &routes {
        for host in &all_hosts {
            let expected = hosts_of(route_name).contains(host).then_some(*backend);
            expect(&cluster, host, path, expected).await;
        }
    }
}

#[tokio::test]
async fn listener_set_parent_not_accepted() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    let name = "gateway-with-listenerset-not-accepted";
    let yaml = gateway(name, "Same", "  - {name: http, port: 80, protocol: HTTP}\n")
        + "  infrastructure:\n    parametersRef: {group: invalid.io, kind: InvalidParameters, name: invalid}\n";
    api.apply(&yaml);
    let listener = "  - {name: http, port: 8080, protocol: HTTP}\n";
    api.apply(
        &set("default", "listenerset-parent-not-accepted", name, listener)
            .replace(", namespace: default}\n  listeners", "}\n  listeners"),
    );
    let status = set_status(api, "default", "listenerset-parent-not-accepted", "False").await;
    assert_eq!(
        reason(&status["conditions"], "Accepted"),
        pair("False", "ParentNotAccepted")
    );
    assert_eq!(
        condition(&status["conditions"], "Programmed")["status"],
        "False"
    );
    let gateway = api.get(V1, "Gateway", "default", name).unwrap();
    assert_eq!(
        condition(&gateway["status"]["conditions"], "Accepted")["status"],
        "False"
    );
    assert_eq!(gateway["status"]["attachedListenerSets"], 0);
}

#[tokio::test]
async fn listener_set_update_listener_hostname() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    let _backends = backends(api);
    let name = "gateway-listenerset-update-listener-hostname";
    api.apply(&gateway(
        name,
        "Same",
        "  - {name: gateway-listener, port: 80, protocol: HTTP}\n",
    ));
    let set_name = "listenerset-update-listener-hostname";
    let with_host = |host: &str| set("default", set_name, name, &http("http", host, "All"));
    api.apply(&with_host("other.example.com"));
    let route_yaml = format!("apiVersion: {V1}\nkind: HTTPRoute\nmetadata: {{name: httproute-listenerset-update-listener-hostname, namespace: default}}\nspec:\n  parentRefs: [{}]\n  hostnames: [accepted.example.com]\n  rules:\n  - backendRefs: [{{name: infra-backend-v1, port: 80}}]\n", set_ref("default", set_name));
    api.apply(&route_yaml);
    let before = conditions_of(
        api,
        "HTTPRoute",
        "default",
        "httproute-listenerset-update-listener-hostname",
        "False",
    )
    .await;
    assert_eq!(
        reason(&before, "Accepted"),
        pair("False", "NoMatchingListenerHostname")
    );
    api.apply(&with_host("accepted.example.com"));
    let after = conditions_of(
        api,
        "HTTPRoute",
        "default",
        "httproute-listenerset-update-listener-hostname",
        "True",
    )
    .await;
    assert_eq!(reason(&after, "Accepted"), pair("True", "Accepted"));
    let status = eventually(Duration::from_secs(10), "the route counted", || async {
        let status = set_status(api, "default", set_name, "True").await;
        (listener(&status, "http")["attachedRoutes"] == 1).then_some(status)
    })
    .await;
    assert_eq!(status["listeners"].as_array().unwrap().len(), 1);
    assert_accepted(&status, "http");
    expect(
        &cluster,
        "accepted.example.com",
        "/",
        Some("infra-backend-v1"),
    )
    .await;
}

/// A directory with namespace `tenant`, Services `default/owner` and `tenant/tenant`, and
/// (given the certificates) Secrets `default/owner-cert` and `tenant/tenant-cert`.
fn tenancy(owner: &Echo, tenant: &Echo, certs: Option<(&Issued, &Issued)>) -> ConfigDir {
    let dir = ConfigDir::new()
        .with("ns.yaml", &namespace("tenant", ""))
        .with("svc.yaml", &service("owner", &[owner]))
        .with(
            "tenant-svc.yaml",
            &service_at("tenant", "tenant", tenant.addr),
        );
    match certs {
        None => dir,
        Some((owner_cert, tenant_cert)) => dir
            .with("owner-cert.yaml", &tls_secret("owner-cert", owner_cert))
            .with(
                "tenant-cert.yaml",
                &tls_secret("tenant-cert", tenant_cert)
                    .replace("namespace: default", "namespace: tenant"),
            ),
    }
}

/// `shop.example.com` over HTTPS answers with the owner's certificate and backend.
async fn assert_shop_is_the_owners(weir: &Weir, pki: &Pki, owner_cert: &Issued) {
    let client = pki.client(&["http/1.1"], false);
    let reply = https_get(weir.tls, "shop.example.com", client, "/", &[])
        .await
        .unwrap();
    let leaf = reply.leaf == owner_cert.leaf_der();
    assert!(
        leaf,
        "shop.example.com answered with the tenant's certificate"
    );
    assert_eq!(reply.reply.backend(), "owner");
}

/// A tenant allowed to add listeners cannot take the Gateway's names: a ListenerSet listener
/// for the Gateway's own hostname, with the tenant's certificate, yields (Conflicted) and
/// gets no certificate, so clients of that name still get the Gateway's certificate and its
/// routes. A ListenerSet the Gateway does not take opens no port. In directory mode, as
/// `weir-ingress --config-dir` serves the objects.
#[tokio::test]
async fn a_listener_set_cannot_take_its_gateways_names_or_open_ports_unasked() {
    let (owner, tenant) = (Echo::start("owner"), Echo::start("tenant"));
    let pki = Pki::new();
    let owner_cert = pki.issue(&["shop.example.com"], KeyType::Ecdsa);
    let tenant_cert = pki.issue(&["shop.example.com", "tenant.example.com"], KeyType::Ecdsa);
    let https = |name: &str, host: &str, secret: &str| {
        format!("  - {{name: {name}, port: 443, protocol: HTTPS, hostname: {host}, allowedRoutes: {{namespaces: {{from: Same}}}}, tls: {{certificateRefs: [{{name: {secret}}}]}}}}\n")
    };
    let closed_port = weir_e2e::free_port();
    let mut gw = gateway(
        "gw",
        "All",
        &https("shop", "shop.example.com", "owner-cert"),
    );
    gw.push_str(&format!(
        "---\n{}",
        gateway("closed", "", &http("closed", "closed.example.com", "All"))
    ));
    let tenant_set = set(
        "tenant",
        "tenant-listeners",
        "gw",
        &https("steal", "shop.example.com", "tenant-cert"),
    )
    .trim_end()
    .to_string()
        + "\n"
        + &https("own", "tenant.example.com", "tenant-cert");
    let unasked = set(
        "tenant",
        "unasked",
        "closed",
        &format!("  - {{name: extra, port: {closed_port}, protocol: HTTP}}\n"),
    );
    let routes = [
        format!("apiVersion: {V1}\nkind: HTTPRoute\nmetadata: {{name: shop, namespace: default}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - backendRefs: [{{name: owner, port: 80}}]\n"),
        format!("apiVersion: {V1}\nkind: HTTPRoute\nmetadata: {{name: steal, namespace: tenant}}\nspec:\n  parentRefs: [{}]\n  rules:\n  - backendRefs: [{{name: tenant, port: 80}}]\n", set_ref("tenant", "tenant-listeners")),
    ];
    let dir = tenancy(&owner, &tenant, Some((&owner_cert, &tenant_cert)))
        .with("gw.yaml", &gw)
        .with("sets.yaml", &format!("{tenant_set}---\n{unasked}"))
        .with("routes.yaml", &routes.join("---\n"));
    let weir = Weir::start(&dir);
    for _ in 0..5 {
        assert_shop_is_the_owners(&weir, &pki, &owner_cert).await;
    }
    // The tenant's own name serves the tenant's route.
    let client = pki.client(&["http/1.1"], false);
    let reply = https_get(weir.tls, "tenant.example.com", client, "/", &[])
        .await
        .unwrap();
    assert_eq!(reply.reply.backend(), "tenant");
    // The Gateway that takes no ListenerSets opened no port for one.
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", closed_port)).await;
    assert!(
        refused.is_err(),
        "port {closed_port} was opened for a ListenerSet its Gateway does not take"
    );
}

/// A Gateway `name` in `default` created at `created`, taking ListenerSets from everywhere.
fn gateway_created(name: &str, created: &str, allowed: &str, listeners: &str) -> String {
    gateway(name, allowed, listeners).replace(
        &format!("metadata: {{name: {name}, namespace: default}}"),
        &format!(
            "metadata: {{name: {name}, namespace: default, creationTimestamp: \"{created}\"}}"
        ),
    )
}

fn owner_route(parent: &str, hosts: &str) -> String {
    format!("apiVersion: {V1}\nkind: HTTPRoute\nmetadata: {{name: owner-{parent}, namespace: default}}\nspec:\n  parentRefs: [{{name: {parent}}}]\n  hostnames: [{hosts}]\n  rules:\n  - backendRefs: [{{name: owner, port: 80}}]\n")
}

/// A tenant whose namespace an older Gateway lets in cannot, through a ListenerSet of that
/// Gateway, take a port a younger Gateway has: not by asking for it as TCP (which would carry
/// the younger Gateway's clients, requests and credentials, to the tenant's backend), nor as
/// HTTP for a hostname of its own.
#[tokio::test]
async fn a_listener_set_cannot_take_another_gateways_port() {
    let (owner, tenant) = (Echo::start("owner"), Echo::start("tenant"));
    let port = weir_e2e::free_port();
    let gateways = [
        gateway_created(
            "old",
            "2020-01-01T00:00:00Z",
            "All",
            &http("http", "old.example.com", "All"),
        ),
        gateway_created(
            "infra",
            "2024-01-01T00:00:00Z",
            "",
            &format!("  - {{name: api, port: {port}, protocol: HTTP}}\n"),
        ),
    ];
    let sets = [
        set("tenant", "grab", "old", &format!("  - {{name: raw, port: {port}, protocol: TCP, allowedRoutes: {{kinds: [{{kind: TCPRoute}}]}}}}\n")),
        set("tenant", "share", "old", &format!("  - {{name: named, port: {port}, protocol: HTTP, hostname: tenant.example.com}}\n")),
    ];
    let routes = [
        owner_route("infra", "api.example.com"),
        format!("apiVersion: {V1}\nkind: TCPRoute\nmetadata: {{name: grab, namespace: tenant}}\nspec:\n  parentRefs: [{}]\n  rules:\n  - backendRefs: [{{name: tenant, port: 80}}]\n", set_ref("tenant", "grab")),
    ];
    let dir = tenancy(&owner, &tenant, None)
        .with("gw.yaml", &gateways.join("---\n"))
        .with("sets.yaml", &sets.join("---\n"))
        .with("routes.yaml", &routes.join("---\n"));
    let weir = Weir::start(&dir);
    let at: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let reply = eventually(
        Duration::from_secs(10),
        "the younger Gateway's port served",
        || async {
            tokio::net::TcpStream::connect(at).await.ok()?;
            let reply = weir_e2e::request(
                at,
                "api.example.com",
                "/secret?token=victim",
                &[],
                Default::default(),
                "GET",
            )
            .await;
            (reply.status == 200).then_some(reply)
        },
    )
    .await;
    assert_eq!(reply.backend(), "owner");
    // The tenant's own name on that port is not served either: the port is the other's.
    let named = weir_e2e::request(
        at,
        "tenant.example.com",
        "/",
        &[],
        Default::default(),
        "GET",
    )
    .await;
    assert_eq!(named.status, 404);
    let stderr = weir.stderr().join("\n");
    assert!(
        stderr.contains("a ListenerSet may not take another Gateway's port"),
        "{stderr}"
    );
}

/// A ListenerSet cannot take a name its Gateway's own listeners name, in another case, on
/// another port (the Gateway's plaintext port, where an ACME HTTP-01 challenge for the name
/// would be answered), or by giving two of its listeners one name; the set with the
/// duplicate names is refused alone.
#[tokio::test]
async fn a_listener_set_cannot_take_its_gateways_names_by_case_port_or_duplicate_names() {
    let (owner, tenant) = (Echo::start("owner"), Echo::start("tenant"));
    let pki = Pki::new();
    let owner_cert = pki.issue(&["shop.example.com"], KeyType::Ecdsa);
    let tenant_cert = pki.issue(&["shop.example.com"], KeyType::Ecdsa);
    let https = |name: &str, host: &str, secret: &str| {
        format!("  - {{name: {name}, port: 443, protocol: HTTPS, hostname: \"{host}\", tls: {{certificateRefs: [{{name: {secret}}}]}}}}\n")
    };
    let own = format!("  - {{name: http, port: 80, protocol: HTTP, allowedRoutes: {{namespaces: {{from: Same}}}}}}\n{}", https("shop", "shop.example.com", "owner-cert"));
    let free = weir_e2e::free_port();
    let sets = [
        set(
            "tenant",
            "case",
            "gw",
            &https("steal", "SHOP.example.com", "tenant-cert"),
        ),
        set(
            "tenant",
            "acme",
            "gw",
            &http("challenge", "shop.example.com", "Same"),
        ),
        set(
            "tenant",
            "dup",
            "gw",
            &format!(
                "  - {{name: x, port: {free}, protocol: HTTP}}\n{}",
                https("x", "shop.example.com.", "tenant-cert")
            ),
        ),
    ];
    let tenant_route = format!("apiVersion: {V1}\nkind: HTTPRoute\nmetadata: {{name: steal, namespace: tenant}}\nspec:\n  parentRefs: [{}, {}, {}]\n  rules:\n  - backendRefs: [{{name: tenant, port: 80}}]\n", set_ref("tenant", "case"), set_ref("tenant", "acme"), set_ref("tenant", "dup"));
    let dir = tenancy(&owner, &tenant, Some((&owner_cert, &tenant_cert)))
        .with("gw.yaml", &gateway("gw", "All", &own))
        .with("sets.yaml", &sets.join("---\n"))
        .with(
            "routes.yaml",
            &format!(
                "{}---\n{tenant_route}",
                owner_route("gw", "shop.example.com")
            ),
        );
    let weir = Weir::start(&dir);
    assert_shop_is_the_owners(&weir, &pki, &owner_cert).await;
    let challenge = weir
        .get("shop.example.com", "/.well-known/acme-challenge/token")
        .await;
    assert_eq!(
        challenge.backend(),
        "owner",
        "the tenant answers the name's HTTP-01 challenge"
    );
    let refused = weir.refusals().await;
    let text = serde_json::to_string(&refused).unwrap();
    assert!(
        text.contains("ListenerSet tenant/dup") && text.contains("names another listener"),
        "{text}"
    );
}

/// The ports a gateway limited by `--max-listener-ports` opens are its Gateways' own first: a
/// ListenerSet's listeners on lower ports do not crowd out their Gateway's own port.
#[tokio::test]
async fn a_listener_sets_ports_do_not_crowd_out_its_gateways_own() {
    let owner = Echo::start("owner");
    let mut ports: Vec<u16> = (0..4).map(|_| weir_e2e::free_port()).collect();
    ports.sort_unstable();
    let own = format!("  - {{name: api, port: {}, protocol: HTTP}}\n", ports[3]);
    let theirs: String = ports[..3]
        .iter()
        .enumerate()
        .map(|(i, p)| format!("  - {{name: l{i}, port: {p}, protocol: HTTP}}\n"))
        .collect();
    let dir = ConfigDir::new()
        .with("ns.yaml", &namespace("tenant", ""))
        .with("svc.yaml", &service("owner", &[&owner]))
        .with("gw.yaml", &gateway("gw", "All", &own))
        .with("sets.yaml", &set("tenant", "many", "gw", &theirs))
        .with("routes.yaml", &owner_route("gw", "api.example.com"));
    let _weir = Weir::start_with(&dir, &["--max-listener-ports", "3"]);
    let at: std::net::SocketAddr = format!("127.0.0.1:{}", ports[3]).parse().unwrap();
    let reply = eventually(
        Duration::from_secs(10),
        "the Gateway's own port served",
        || async {
            tokio::net::TcpStream::connect(at).await.ok()?;
            Some(
                weir_e2e::request(at, "api.example.com", "/", &[], Default::default(), "GET").await,
            )
        },
    )
    .await;
    assert_eq!(reply.backend(), "owner");
}

/// A Gateway takes at most 256 listeners from ListenerSets (older sets first); the compile
/// stays quick with hundreds of them on one port, and those past the limit are not served.
#[tokio::test]
async fn a_gateway_takes_a_bounded_number_of_listener_set_listeners() {
    let tenant = Echo::start("tenant");
    let mut sets = Vec::new();
    let mut routes = Vec::new();
    for s in 0..5 {
        let listeners: String = (0..64)
            .map(|i| format!("  - {{name: l{i}, port: 80, protocol: HTTP, hostname: h{s}-{i}.example.com}}\n"))
            .collect();
        let name = format!("set-{s}");
        sets.push(set("tenant", &name, "gw", &listeners).replace(
            &format!("metadata: {{name: {name}, namespace: tenant}}"),
            &format!("metadata: {{name: {name}, namespace: tenant, creationTimestamp: \"2025-01-0{}T00:00:00Z\"}}", s + 1),
        ));
        routes.push(format!("apiVersion: {V1}\nkind: HTTPRoute\nmetadata: {{name: r{s}, namespace: tenant}}\nspec:\n  parentRefs: [{}]\n  rules:\n  - backendRefs: [{{name: tenant, port: 80}}]\n", set_ref("tenant", &name)));
    }
    let dir = ConfigDir::new()
        .with("ns.yaml", &namespace("tenant", ""))
        .with("svc.yaml", &service_at("tenant", "tenant", tenant.addr))
        .with(
            "gw.yaml",
            &gateway("gw", "All", &http("http", "gw.example.com", "All")),
        )
        .with("sets.yaml", &sets.join("---\n"))
        .with("routes.yaml", &routes.join("---\n"));
    let weir = Weir::start(&dir);
    // The first four sets' 256 listeners are served, the fifth's are not.
    for host in ["h0-0.example.com", "h3-63.example.com"] {
        assert_eq!(weir.get(host, "/").await.backend(), "tenant", "{host}");
    }
    for host in ["h4-0.example.com", "h4-63.example.com"] {
        assert_eq!(weir.get(host, "/").await.status, 404, "{host}");
    }
}

/// A ListenerSet cannot take a name another listener holds: not one of its Gateway's own
/// listeners' names through a wildcard or a listener without a hostname on another port (the
/// owner's HTTP-01 challenge), and not another Gateway's name on a port they share (its
/// plaintext challenge, its certificate, its `/login`).
#[tokio::test]
async fn a_listener_set_cannot_take_names_other_listeners_hold() {
    let (owner, tenant) = (Echo::start("owner"), Echo::start("tenant"));
    let pki = Pki::new();
    let owner_cert = pki.issue(&["shop.example.com", "bank.example.com"], KeyType::Ecdsa);
    let tenant_cert = pki.issue(&["bank.example.com", "shop.example.com"], KeyType::Ecdsa);
    let https = |name: &str, host: &str, secret: &str| {
        format!("  - {{name: {name}, port: 443, protocol: HTTPS, hostname: \"{host}\", allowedRoutes: {{namespaces: {{from: All}}}}, tls: {{certificateRefs: [{{name: {secret}, namespace: default}}]}}}}\n")
    };
    // `gw` lets everyone add listeners and names shop.example.com on 443 only; `bank`, another
    // Gateway, serves bank.example.com on 80 and 443.
    let gateways = [
        gateway(
            "gw",
            "All",
            &https("shop", "shop.example.com", "owner-cert"),
        ),
        gateway(
            "bank",
            "",
            &format!(
                "{}{}",
                http("http", "bank.example.com", "All"),
                https("https", "bank.example.com", "owner-cert")
            ),
        ),
    ];
    let sets = [
        set(
            "tenant",
            "wild",
            "gw",
            &http("wild", "*.example.com", "All"),
        ),
        set(
            "tenant",
            "bare",
            "gw",
            "  - {name: bare, port: 80, protocol: HTTP}\n",
        ),
        set(
            "tenant",
            "bank",
            "gw",
            &format!(
                "{}{}",
                http("plain", "bank.example.com", "All"),
                https("tls", "bank.example.com", "tenant-cert")
                    .replace("namespace: default", "namespace: tenant")
            ),
        ),
    ];
    let parents: Vec<String> = ["wild", "bare", "bank"]
        .iter()
        .map(|s| set_ref("tenant", s))
        .collect();
    let tenant_route = format!("apiVersion: {V1}\nkind: HTTPRoute\nmetadata: {{name: take, namespace: tenant}}\nspec:\n  parentRefs: [{}]\n  hostnames: [shop.example.com, bank.example.com]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /.well-known/acme-challenge/}}}}, {{path: {{type: PathPrefix, value: /login}}}}]\n    backendRefs: [{{name: tenant, port: 80}}]\n", parents.join(", "));
    let owner_routes = format!(
        "{}---\n{}",
        owner_route("gw", "shop.example.com"),
        owner_route("bank", "bank.example.com")
    );
    let dir = tenancy(&owner, &tenant, Some((&owner_cert, &tenant_cert)))
        .with("gw.yaml", &gateways.join("---\n"))
        .with("sets.yaml", &sets.join("---\n"))
        .with("routes.yaml", &format!("{owner_routes}---\n{tenant_route}"));
    let weir = Weir::start(&dir);
    for host in ["shop.example.com", "bank.example.com"] {
        let challenge = weir.get(host, "/.well-known/acme-challenge/token").await;
        // The owner's backend, or no route here (404): never the tenant's.
        let who = match challenge.status.as_u16() {
            200 => challenge.backend(),
            status => status.to_string(),
        };
        assert_ne!(
            who, "tenant",
            "the tenant answers {host}'s HTTP-01 challenge"
        );
    }
    let client = pki.client(&["http/1.1"], false);
    let login = https_get(weir.tls, "bank.example.com", client, "/login", &[])
        .await
        .unwrap();
    assert_eq!(
        login.leaf,
        owner_cert.leaf_der(),
        "bank.example.com answered with the tenant's certificate"
    );
    assert_eq!(login.reply.backend(), "owner");
}

/// Of two ListenerSets on different Gateways that want one new port, the older set has it,
/// whichever Gateway is older: a tenant of an older Gateway cannot knock a working port away
/// from another Gateway's tenant.
#[tokio::test]
async fn the_older_listener_set_keeps_a_new_port() {
    let (first, second) = (Echo::start("first"), Echo::start("second"));
    let port = weir_e2e::free_port();
    let gateways = [
        gateway_created(
            "old",
            "2020-01-01T00:00:00Z",
            "All",
            &http("http", "old.example.com", "All"),
        ),
        gateway_created(
            "young",
            "2024-01-01T00:00:00Z",
            "All",
            &http("http", "young.example.com", "All"),
        ),
    ];
    let aged = |namespace: &str, name: &str, parent: &str, created: &str| {
        set(namespace, name, parent, &format!("  - {{name: p, port: {port}, protocol: HTTP, hostname: p.example.com}}\n")).replace(
            &format!("metadata: {{name: {name}, namespace: {namespace}}}"),
            &format!("metadata: {{name: {name}, namespace: {namespace}, creationTimestamp: \"{created}\"}}"),
        )
    };
    let sets = [
        aged("t1", "early", "young", "2024-02-01T00:00:00Z"),
        aged("t2", "late", "old", "2025-06-01T00:00:00Z"),
    ];
    let route = |namespace: &str, set_name: &str, backend: &str| {
        format!("apiVersion: {V1}\nkind: HTTPRoute\nmetadata: {{name: r, namespace: {namespace}}}\nspec:\n  parentRefs: [{}]\n  rules:\n  - backendRefs: [{{name: {backend}, port: 80}}]\n", set_ref(namespace, set_name))
    };
    let dir = ConfigDir::new()
        .with(
            "ns.yaml",
            &format!("{}---\n{}", namespace("t1", ""), namespace("t2", "")),
        )
        .with(
            "svc.yaml",
            &format!(
                "{}---\n{}",
                service_at("first", "t1", first.addr),
                service_at("second", "t2", second.addr)
            ),
        )
        .with("gw.yaml", &gateways.join("---\n"))
        .with("sets.yaml", &sets.join("---\n"))
        .with(
            "routes.yaml",
            &format!(
                "{}---\n{}",
                route("t1", "early", "first"),
                route("t2", "late", "second")
            ),
        );
    let _weir = Weir::start(&dir);
    let at: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let reply = eventually(Duration::from_secs(10), "the port served", || async {
        tokio::net::TcpStream::connect(at).await.ok()?;
        let reply =
            weir_e2e::request(at, "p.example.com", "/", &[], Default::default(), "GET").await;
        (reply.status == 200).then_some(reply)
    })
    .await;
    assert_eq!(
        reply.backend(),
        "first",
        "the younger Gateway's older set lost its port"
    );
}
