//! The upstream conformance suite's Gateway and HTTPRoute status tests, mirrored one by one
//! (named after their ShortNames) against the real `weir-controller --kubernetes` on the test
//! API server: generations followed, listeners added and removed, attached routes counted,
//! foreign conditions kept, parameters refused, overlapping TLS hostnames flagged.

use std::time::Duration;

use serde_json::Value;
use weir_e2e::{
    apiserver::ApiServer,
    cluster::{cluster, condition, conditions_of, pair, reason, status_of, Cluster},
    eventually, service,
    tls::{KeyType, Pki},
    tls_secret, Echo,
};

const V1: &str = "gateway.networking.k8s.io/v1";

fn gateway_yaml(name: &str, listeners: &str) -> String {
    format!("apiVersion: {V1}\nkind: Gateway\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  gatewayClassName: weir\n  listeners:\n{listeners}")
}

fn route_yaml(name: &str, spec: &str) -> String {
    format!("apiVersion: {V1}\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n{spec}")
}

/// Every condition of `object`'s status (and of its listeners', for a Gateway) carries its
/// current generation: what the suite's `...MustHaveLatestConditions` checks.
fn at_latest_generation(object: &Value) -> bool {
    let generation = object["metadata"]["generation"].as_i64();
    let status = &object["status"];
    let lists = std::iter::once(&status["conditions"]).chain(
        status["listeners"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| &l["conditions"]),
    );
    let conditions: Vec<&Value> = lists
        .flat_map(|c| c.as_array().into_iter().flatten())
        .collect();
    !conditions.is_empty()
        && conditions
            .iter()
            .filter(|c| c["reason"] != "Seeded")
            .all(|c| c["observedGeneration"].as_i64() == generation)
}

/// Gateway `name` once its status is written for its current generation and `generation` is
/// that generation.
async fn gateway_at(api: &ApiServer, name: &str, generation: i64) -> Value {
    object_at(api, "Gateway", name, generation).await
}

async fn object_at(api: &ApiServer, kind: &str, name: &str, generation: i64) -> Value {
    let namespace = if kind == "GatewayClass" {
        ""
    } else {
        "default"
    };
    let what = format!("{kind} {name} with its status at generation {generation}");
    // Generous: a full test run on two cores can hold the status writer back for seconds.
    eventually(Duration::from_secs(30), &what, || async {
        let object = api.get(V1, kind, namespace, name)?;
        (object["metadata"]["generation"].as_i64() == Some(generation)
            && at_latest_generation(&object))
        .then_some(object)
    })
    .await
}

/// Gateway `name` at `generation` once its listeners count the routes `attached` says (the
/// status is written as routes arrive; the suite waits for the counts too).
async fn gateway_counting(
    api: &ApiServer,
    name: &str,
    generation: i64,
    attached: &[(&str, i64)],
) -> Value {
    let what = format!("Gateway {name} counting {attached:?}");
    eventually(Duration::from_secs(30), &what, || async {
        let gateway = gateway_at(api, name, generation).await;
        let listeners = gateway["status"]["listeners"].as_array()?;
        let counted = attached.iter().all(|(l, n)| {
            listeners
                .iter()
                .any(|x| x["name"] == *l && x["attachedRoutes"] == *n)
        });
        counted.then_some(gateway)
    })
    .await
}

/// The status entry of listener `name`.
fn listener<'a>(gateway: &'a Value, name: &str) -> &'a Value {
    let listeners = gateway["status"]["listeners"].as_array();
    let found = listeners.and_then(|l| l.iter().find(|l| l["name"] == name));
    found.unwrap_or_else(|| panic!("no listener {name} in {}", gateway["status"]))
}

/// What the suite's `GatewayStatusMustHaveListeners` checks of one listener: it takes HTTPRoute,
/// `attachedRoutes` as given, `Accepted` and `ResolvedRefs` True.
fn assert_listener_takes_routes(gateway: &Value, name: &str, attached: i64) {
    let l = listener(gateway, name);
    assert_eq!(l["attachedRoutes"], attached, "{name}: {l}");
    let kinds = l["supportedKinds"].as_array().unwrap();
    assert!(
        kinds.iter().any(|k| k["kind"] == "HTTPRoute"),
        "{name}: {l}"
    );
    for kind in ["Accepted", "ResolvedRefs"] {
        assert_eq!(
            condition(&l["conditions"], kind)["status"],
            "True",
            "{name}: {l}"
        );
    }
}

fn listener_count(gateway: &Value) -> usize {
    gateway["status"]["listeners"]
        .as_array()
        .map_or(0, Vec::len)
}

#[tokio::test]
async fn gateway_class_observed_generation_bump() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    let class = |description: &str| {
        format!("apiVersion: {V1}\nkind: GatewayClass\nmetadata: {{name: gatewayclass-observed-generation-bump}}\nspec:\n  controllerName: weir.dev/gateway-controller\n  description: {description}\n")
    };
    api.apply(&class("old"));
    let first = object_at(
        api,
        "GatewayClass",
        "gatewayclass-observed-generation-bump",
        1,
    )
    .await;
    // Weir serves the class `weir` alone; this one gets an Accepted condition all the same.
    assert!(!condition(&first["status"]["conditions"], "Accepted").is_null());
    api.apply(&class("new"));
    let second = object_at(
        api,
        "GatewayClass",
        "gatewayclass-observed-generation-bump",
        2,
    )
    .await;
    assert!(!condition(&second["status"]["conditions"], "Accepted").is_null());
}

/// `SupportedVersion`: the Gateway API CRDs installed say their version (the Gateway CRD's
/// bundle-version annotation); Weir's class says whether Weir supports it, and follows an
/// upgrade of the CRDs. Past what Weir supports, the class stays Accepted and says why.
#[tokio::test]
async fn gateway_class_supported_version_follows_the_installed_crds() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    api.apply(&format!("apiVersion: {V1}\nkind: GatewayClass\nmetadata: {{name: weir}}\nspec:\n  controllerName: weir.dev/gateway-controller\n"));
    let crd = |version: &str| {
        format!("apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: gateways.gateway.networking.k8s.io\n  annotations: {{gateway.networking.k8s.io/bundle-version: {version}, gateway.networking.k8s.io/channel: standard}}\nspec:\n  group: gateway.networking.k8s.io\n  names: {{kind: Gateway, plural: gateways}}\n  scope: Namespaced\n  versions: [{{name: v1, served: true, storage: true}}]\n")
    };
    let supported_version = |want: &'static str| async move {
        eventually(
            Duration::from_secs(30),
            &format!("SupportedVersion {want}"),
            || async {
                let class = api.get(V1, "GatewayClass", "", "weir")?;
                let c = condition(&class["status"]["conditions"], "SupportedVersion").clone();
                (c["status"] == want).then_some((class, c))
            },
        )
        .await
    };
    api.apply(&crd("v1.6.0"));
    let (class, c) = supported_version("True").await;
    assert_eq!(c["reason"], "SupportedVersion");
    assert!(c["message"].as_str().unwrap().contains("v1.6.0"), "{c}");
    assert_eq!(
        reason(&class["status"]["conditions"], "Accepted"),
        pair("True", "Accepted")
    );
    api.apply(&crd("v1.7.0"));
    let (class, c) = supported_version("False").await;
    assert_eq!(c["reason"], "UnsupportedVersion");
    assert!(c["message"].as_str().unwrap().contains("v1.7.0"), "{c}");
    assert_eq!(
        reason(&class["status"]["conditions"], "Accepted"),
        pair("True", "Accepted")
    );
}

#[tokio::test]
async fn gateway_observed_generation_bump() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    let http =
        "  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}\n";
    api.apply(&gateway_yaml("gateway-observed-generation-bump", http));
    let ready = |gateway: &Value| {
        for kind in ["Accepted", "Programmed"] {
            assert_eq!(
                condition(&gateway["status"]["conditions"], kind)["status"],
                "True",
                "{}",
                gateway["status"]
            );
        }
    };
    ready(&gateway_at(api, "gateway-observed-generation-bump", 1).await);
    let alternate = "  - {name: alternate, hostname: foo.com, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}\n";
    api.apply(&gateway_yaml(
        "gateway-observed-generation-bump",
        &format!("{http}{alternate}"),
    ));
    ready(&gateway_at(api, "gateway-observed-generation-bump", 2).await);
}

/// The suite's HTTPS listener certificate, as a Secret in `default`.
fn certificate(api: &ApiServer, names: &[&str]) {
    let pki = Pki::new();
    api.apply(&tls_secret(
        "tls-validity-checks-certificate",
        &pki.issue(names, KeyType::Ecdsa),
    ));
}

#[tokio::test]
async fn gateway_modify_listeners() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    certificate(api, &["secure.test.com"]);
    api.apply(&service("infra-backend-v1", &[&cluster.app]));
    let https = "  - name: https\n    port: 443\n    protocol: HTTPS\n    hostname: secure.test.com\n    allowedRoutes: {namespaces: {from: All}}\n    tls: {certificateRefs: [{group: \"\", kind: Secret, name: tls-validity-checks-certificate, namespace: default}]}\n";
    let route = |name: &str, gateway: &str| {
        route_yaml(name, &format!("  parentRefs: [{{kind: Gateway, name: {gateway}, namespace: default}}]\n  rules:\n  - backendRefs: [{{name: infra-backend-v1, port: 80}}]\n"))
    };
    // Adding a listener.
    api.apply(&gateway_yaml("gateway-add-listener", https));
    api.apply(&route("http-route-1", "gateway-add-listener"));
    gateway_at(api, "gateway-add-listener", 1).await;
    let added = "  - {name: http, port: 80, protocol: HTTP, hostname: data.test.com, allowedRoutes: {namespaces: {from: All}}}\n";
    api.apply(&gateway_yaml(
        "gateway-add-listener",
        &format!("{https}{added}"),
    ));
    let gateway =
        gateway_counting(api, "gateway-add-listener", 2, &[("https", 1), ("http", 1)]).await;
    assert_eq!(listener_count(&gateway), 2, "{}", gateway["status"]);
    assert_listener_takes_routes(&gateway, "https", 1);
    assert_listener_takes_routes(&gateway, "http", 1);
    // Removing one.
    let http =
        "  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}\n";
    api.apply(&gateway_yaml(
        "gateway-remove-listener",
        &format!("{https}{http}"),
    ));
    api.apply(&route("http-route-2", "gateway-remove-listener"));
    let gateway = gateway_at(api, "gateway-remove-listener", 1).await;
    assert_eq!(listener_count(&gateway), 2, "{}", gateway["status"]);
    api.apply(&gateway_yaml("gateway-remove-listener", http));
    let gateway = gateway_counting(api, "gateway-remove-listener", 2, &[("http", 1)]).await;
    assert_eq!(listener_count(&gateway), 1, "{}", gateway["status"]);
    assert_listener_takes_routes(&gateway, "http", 1);
}

#[tokio::test]
async fn gateway_with_attached_routes() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    api.apply(&service("infra-backend-v1", &[&cluster.app]));
    let allowed = "allowedRoutes: {kinds: [{kind: HTTPRoute}], namespaces: {from: Selector, selector: {matchLabels: {kubernetes.io/metadata.name: default}}}}";
    let route = |name: &str, parent: &str, extra: &str, backend: &str| {
        route_yaml(name, &format!("  parentRefs: [{parent}]\n{extra}  rules:\n  - backendRefs: [{{name: {backend}, port: 80}}]\n"))
    };
    api.apply(&gateway_yaml(
        "gateway-with-one-attached-route",
        &format!("  - {{name: http, port: 80, protocol: HTTP, {allowed}}}\n"),
    ));
    api.apply(&route(
        "http-route-1",
        "{kind: Gateway, name: gateway-with-one-attached-route, namespace: default}",
        "",
        "infra-backend-v1",
    ));
    api.apply(&gateway_yaml(
        "gateway-with-two-attached-routes",
        &format!(
            "  - {{name: http, port: 80, protocol: HTTP, hostname: foo.example.com, {allowed}}}\n"
        ),
    ));
    let two = "{kind: Gateway, name: gateway-with-two-attached-routes, namespace: default}";
    api.apply(&route("http-route-2", two, "", "infra-backend-v1"));
    api.apply(&route("http-route-3", two, "", "infra-backend-v1"));
    api.apply(&route(
        "http-route-not-accepted",
        two,
        "  hostnames: [not-accepted.test.com]\n",
        "infra-backend-v1",
    ));
    api.apply(&gateway_yaml(
        "unresolved-gateway-with-one-attached-unresolved-route",
        &format!("  - name: tls\n    port: 443\n    protocol: HTTPS\n    {allowed}\n    tls: {{mode: Terminate, certificateRefs: [{{group: \"\", kind: Secret, name: does-not-exist}}]}}\n"),
    ));
    api.apply(&route(
        "http-route-4",
        "{kind: Gateway, name: unresolved-gateway-with-one-attached-unresolved-route, namespace: default, sectionName: tls}",
        "",
        "does-not-exist",
    ));
    // One valid route attached.
    let gateway = gateway_counting(api, "gateway-with-one-attached-route", 1, &[("http", 1)]).await;
    assert_eq!(listener_count(&gateway), 1);
    assert_listener_takes_routes(&gateway, "http", 1);
    // Two valid routes attached; the third's hostname matches no listener's.
    let gateway =
        gateway_counting(api, "gateway-with-two-attached-routes", 1, &[("http", 2)]).await;
    assert_eq!(listener_count(&gateway), 1);
    assert_listener_takes_routes(&gateway, "http", 2);
    let refused = conditions_of(
        api,
        "HTTPRoute",
        "default",
        "http-route-not-accepted",
        "False",
    )
    .await;
    assert_eq!(
        reason(&refused, "Accepted"),
        pair("False", "NoMatchingListenerHostname")
    );
    // Attached routes are counted even when the Gateway has unresolved references.
    let unresolved = "unresolved-gateway-with-one-attached-unresolved-route";
    let gateway = gateway_counting(api, unresolved, 1, &[("tls", 1)]).await;
    let tls = listener(&gateway, "tls");
    assert_eq!(tls["attachedRoutes"], 1, "{tls}");
    assert_eq!(
        condition(&tls["conditions"], "Programmed")["status"],
        "False",
        "{tls}"
    );
    assert_eq!(
        condition(&tls["conditions"], "ResolvedRefs")["status"],
        "False",
        "{tls}"
    );
    let route4 = conditions_of(api, "HTTPRoute", "default", "http-route-4", "True").await;
    assert_eq!(
        condition(&route4, "ResolvedRefs")["status"],
        "False",
        "{route4}"
    );
}

#[tokio::test]
async fn gateway_update_listener_hostname() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    api.apply(&service("infra-backend-v1", &[&cluster.app]));
    let gateway = |host: &str| {
        gateway_yaml(
            "gateway-update-listener-hostname",
            &format!("  - {{name: http, port: 80, protocol: HTTP, hostname: {host}, allowedRoutes: {{namespaces: {{from: Same}}}}}}\n"),
        )
    };
    api.apply(&gateway("other.example.com"));
    api.apply(&route_yaml("httproute-update-listener-hostname", "  parentRefs: [{kind: Gateway, name: gateway-update-listener-hostname, namespace: default}]\n  hostnames: [accepted.example.com]\n  rules:\n  - backendRefs: [{name: infra-backend-v1, port: 80}]\n"));
    gateway_at(api, "gateway-update-listener-hostname", 1).await;
    let before = conditions_of(
        api,
        "HTTPRoute",
        "default",
        "httproute-update-listener-hostname",
        "False",
    )
    .await;
    assert_eq!(
        reason(&before, "Accepted"),
        pair("False", "NoMatchingListenerHostname")
    );
    api.apply(&gateway("accepted.example.com"));
    let after = conditions_of(
        api,
        "HTTPRoute",
        "default",
        "httproute-update-listener-hostname",
        "True",
    )
    .await;
    assert_eq!(reason(&after, "Accepted"), pair("True", "Accepted"));
    let gateway =
        gateway_counting(api, "gateway-update-listener-hostname", 2, &[("http", 1)]).await;
    assert_eq!(listener_count(&gateway), 1);
    assert_listener_takes_routes(&gateway, "http", 1);
    // And the route serves the new name.
    eventually(
        Duration::from_secs(10),
        "accepted.example.com served",
        || async { (status_of(&cluster.weir, "accepted.example.com").await == 200).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn gateway_preserve_foreign_conditions() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    let gateway = |hostname: &str| {
        gateway_yaml(
            "gateway-preserve-foreign-conditions",
            &format!("  - {{name: http, port: 80, protocol: HTTP{hostname}, allowedRoutes: {{namespaces: {{from: Same}}}}}}\n"),
        )
    };
    api.apply(&gateway(""));
    let mut seeded = gateway_at(api, "gateway-preserve-foreign-conditions", 1).await;
    // Another controller's condition on the Gateway and on its listener.
    let foreign = serde_json::json!({
        "type": "example.com/Stale", "status": "True", "reason": "Seeded",
        "message": "another controller's", "observedGeneration": 1,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    });
    seeded["status"]["conditions"]
        .as_array_mut()
        .unwrap()
        .push(foreign.clone());
    let listeners = seeded["status"]["listeners"].as_array_mut().unwrap();
    listeners[0]["conditions"]
        .as_array_mut()
        .unwrap()
        .push(foreign.clone());
    let mut yaml = gateway("");
    yaml.push_str(&format!("status: {}\n", seeded["status"]));
    api.apply(&yaml);
    api.apply(&gateway(", hostname: second.example.com"));
    let updated = gateway_at(api, "gateway-preserve-foreign-conditions", 2).await;
    let kept = |conditions: &Value| condition(conditions, "example.com/Stale").clone();
    assert_eq!(
        kept(&updated["status"]["conditions"]),
        foreign,
        "{}",
        updated["status"]
    );
    assert_eq!(kept(&listener(&updated, "http")["conditions"]), foreign);
}

#[tokio::test]
async fn gateway_invalid_parameters_ref() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    let yaml = gateway_yaml(
        "gateway-invalid-parameters-ref",
        "  - {name: http, port: 80, protocol: HTTP}\n  infrastructure:\n    parametersRef: {group: invalid.io, kind: InvalidParameters, name: invalid}\n",
    );
    api.apply(&yaml);
    let gateway = gateway_at(api, "gateway-invalid-parameters-ref", 1).await;
    assert_eq!(
        reason(&gateway["status"]["conditions"], "Accepted"),
        pair("False", "InvalidParameters")
    );
    // Refused alone: the other Gateway serves on.
    assert_eq!(status_of(&cluster.weir, "shop.example.com").await, 200);
}

/// A Gateway asking for an address (`spec.addresses`) is refused alone, `Accepted: False`
/// with `UnsupportedAddress`: Weir does not serve it at some other address instead.
#[tokio::test]
async fn gateway_asking_for_addresses_is_refused_with_unsupported_address() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    let yaml = gateway_yaml(
        "gateway-static-addresses",
        "  - {name: http, port: 80, protocol: HTTP}\n  addresses: [{type: IPAddress, value: 192.0.2.1}]\n",
    );
    api.apply(&yaml);
    let gateway = gateway_at(api, "gateway-static-addresses", 1).await;
    let accepted = condition(&gateway["status"]["conditions"], "Accepted");
    assert_eq!(accepted["reason"], "UnsupportedAddress", "{accepted}");
    assert!(accepted["message"]
        .as_str()
        .unwrap()
        .contains("spec.addresses"));
    assert_eq!(status_of(&cluster.weir, "shop.example.com").await, 200);
}

#[tokio::test]
async fn gateway_overlapping_tls_config_hostnames() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    certificate(api, &["*.example.com", "example.com"]);
    let listener_yaml = |name: &str, port: u16, host: &str| {
        format!("  - name: {name}\n    port: {port}\n    protocol: HTTPS\n    hostname: \"{host}\"\n    allowedRoutes: {{namespaces: {{from: Same}}}}\n    tls: {{mode: Terminate, certificateRefs: [{{name: tls-validity-checks-certificate}}]}}\n")
    };
    let overlapping = [
        ("foo-example-https", "foo.example.com"),
        ("bar-example-https", "bar.bar.example.com"),
        ("wildcard-example-https", "*.example.com"),
        ("wildcard-other-https", "*.other.com"),
        ("wildcard-bar-other-https", "*.bar.other.com"),
    ];
    let apart = [
        ("not-overlapping-https", "example.com"),
        ("not-overlapping-wildcard-https", "*.example.io"),
    ];
    let mut listeners: String = overlapping
        .iter()
        .chain(&apart)
        .map(|(name, host)| listener_yaml(name, 443, host))
        .collect();
    listeners.push_str(&listener_yaml(
        "not-overlapping-other-port",
        9443,
        "foo.example.com",
    ));
    api.apply(&gateway_yaml("gateway-overlapping-hostnames", &listeners));
    let gateway = gateway_at(api, "gateway-overlapping-hostnames", 1).await;
    let all = overlapping.iter().chain(&apart).map(|(n, _)| *n);
    for name in all.chain(["not-overlapping-other-port"]) {
        let l = listener(&gateway, name);
        assert_eq!(
            reason(&l["conditions"], "Accepted"),
            pair("True", "Accepted"),
            "{l}"
        );
    }
    for (name, _) in overlapping {
        let l = listener(&gateway, name);
        let overlap = reason(&l["conditions"], "OverlappingTLSConfig");
        assert_eq!(overlap, pair("True", "OverlappingHostnames"), "{l}");
    }
    for name in apart
        .iter()
        .map(|(n, _)| *n)
        .chain(["not-overlapping-other-port"])
    {
        let l = listener(&gateway, name);
        assert!(
            condition(&l["conditions"], "OverlappingTLSConfig").is_null(),
            "{l}"
        );
    }
}

/// A route's parent entry for `parent`, once written with Accepted = `accepted`.
async fn parent_of(cluster: &Cluster, route: &str, parent: &str, accepted: &str) -> Value {
    let api = &cluster.api;
    let what = format!("HTTPRoute {route}: parent {parent} Accepted={accepted}");
    eventually(Duration::from_secs(10), &what, || async {
        let route = api.get(V1, "HTTPRoute", "default", route)?;
        let generation = route["metadata"]["generation"].as_i64();
        let parents = route["status"]["parents"].as_array()?.clone();
        let entry = parents
            .into_iter()
            .find(|p| p["parentRef"]["name"] == parent)?;
        let conditions = entry["conditions"].as_array()?;
        let latest = conditions
            .iter()
            .all(|c| c["observedGeneration"].as_i64() == generation);
        (latest && condition(&entry["conditions"], "Accepted")["status"] == accepted)
            .then_some(entry)
    })
    .await
}

/// A route refused by every listener of its parent: the suite's NotAllowedByListeners and
/// NoMatchingParent cases, which also want the Gateway to count no route.
async fn refused_by(cluster: &Cluster, route: &str, gateway: &str, why: &str) {
    let entry = parent_of(cluster, route, gateway, "False").await;
    assert_eq!(reason(&entry["conditions"], "Accepted"), pair("False", why));
    assert_eq!(
        reason(&entry["conditions"], "ResolvedRefs"),
        pair("True", "ResolvedRefs")
    );
    let route = cluster.api.get(V1, "HTTPRoute", "default", route).unwrap();
    let parents = route["status"]["parents"].as_array().unwrap();
    assert_eq!(parents.len(), 1, "{parents:?}");
    let gateway = gateway_at(&cluster.api, gateway, 1).await;
    let listeners = gateway["status"]["listeners"].as_array().unwrap();
    assert!(
        listeners.iter().all(|l| l["attachedRoutes"] == 0),
        "{listeners:?}"
    );
}

#[tokio::test]
async fn http_route_disallowed_kind() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    api.apply(&service("infra-backend-v1", &[&cluster.app]));
    api.apply(&gateway_yaml(
        "tlsroutes-only",
        "  - {name: tls, port: 443, protocol: TLS, tls: {mode: Passthrough}, allowedRoutes: {namespaces: {from: Same}, kinds: [{kind: TLSRoute}]}}\n",
    ));
    api.apply(&route_yaml("disallowed-kind", "  parentRefs: [{name: tlsroutes-only, namespace: default}]\n  rules:\n  - backendRefs: [{name: infra-backend-v1, port: 80}]\n"));
    refused_by(
        &cluster,
        "disallowed-kind",
        "tlsroutes-only",
        "NotAllowedByListeners",
    )
    .await;
}

#[tokio::test]
async fn http_route_invalid_parent_ref_not_matching_listener_port() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    api.apply(&service("infra-backend-v1", &[&cluster.app]));
    api.apply(&gateway_yaml(
        "same-namespace",
        "  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Same}}}\n",
    ));
    api.apply(&route_yaml("httproute-listener-not-matching-route-port", "  parentRefs: [{name: same-namespace, namespace: default, port: 81}]\n  rules:\n  - backendRefs: [{name: infra-backend-v1, kind: Service, port: 80}]\n"));
    refused_by(
        &cluster,
        "httproute-listener-not-matching-route-port",
        "same-namespace",
        "NoMatchingParent",
    )
    .await;
}

#[tokio::test]
async fn http_route_invalid_parent_ref_section_name_not_matching_port() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    api.apply(&service("infra-backend-v1", &[&cluster.app]));
    let gateway = "gateway-with-one-not-matching-port-and-section-name-route";
    api.apply(&gateway_yaml(
        gateway,
        "  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {kinds: [{kind: HTTPRoute}], namespaces: {from: All}}}\n",
    ));
    let route = "httproute-listener-section-name-not-matching-port";
    api.apply(&route_yaml(route, &format!("  parentRefs: [{{name: {gateway}, namespace: default, sectionName: http, port: 81}}]\n  rules:\n  - backendRefs: [{{name: infra-backend-v1, kind: Service, port: 80}}]\n")));
    refused_by(&cluster, route, gateway, "NoMatchingParent").await;
}

#[tokio::test]
async fn http_route_observed_generation_bump() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    let v2 = Echo::start("infra-backend-v2");
    api.apply(&service("infra-backend-v1", &[&cluster.app]));
    api.apply(&service("infra-backend-v2", &[&v2]));
    let route = |backend: &str| {
        route_yaml("observed-generation-bump", &format!("  parentRefs: [{{name: gw}}]\n  hostnames: [bump.example.com]\n  rules:\n  - backendRefs: [{{name: {backend}, port: 80}}]\n"))
    };
    api.apply(&route("infra-backend-v1"));
    parent_of(&cluster, "observed-generation-bump", "gw", "True").await;
    api.apply(&route("infra-backend-v2"));
    let route = eventually(Duration::from_secs(10), "generation 2", || async {
        let route = api.get(V1, "HTTPRoute", "default", "observed-generation-bump")?;
        (route["metadata"]["generation"] == 2).then_some(route)
    })
    .await;
    assert_eq!(route["metadata"]["generation"], 2);
    let entry = parent_of(&cluster, "observed-generation-bump", "gw", "True").await;
    assert_eq!(
        reason(&entry["conditions"], "ResolvedRefs"),
        pair("True", "ResolvedRefs")
    );
    // The new backend serves.
    eventually(
        Duration::from_secs(10),
        "infra-backend-v2 serving",
        || async {
            let reply = cluster.weir.get("bump.example.com", "/").await;
            (reply.backend() == "infra-backend-v2").then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn http_route_preserve_foreign_status() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    api.apply(&service("infra-backend-v1", &[&cluster.app]));
    let foreign = serde_json::json!({
        "parentRef": {"name": "unmanaged-gateway"},
        "controllerName": "example.com/another-controller",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "theirs",
            "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z"}],
    });
    let route = |path: &str, status: &str| {
        route_yaml("preserve-foreign-status", &format!("  parentRefs: [{{name: gw}}, {{name: unmanaged-gateway}}]\n  hostnames: [foreign.example.com]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n    backendRefs: [{{name: infra-backend-v1, port: 80}}]\n{status}"))
    };
    let seeded = format!("status: {{parents: [{foreign}]}}\n");
    api.apply(&route("/preserve-foreign-status", &seeded));
    parent_of(&cluster, "preserve-foreign-status", "gw", "True").await;
    api.apply(&route("/preserve-foreign-status-updated", ""));
    let ours = eventually(Duration::from_secs(10), "generation 2", || async {
        let route = api.get(V1, "HTTPRoute", "default", "preserve-foreign-status")?;
        (route["metadata"]["generation"] == 2).then_some(())
    });
    ours.await;
    parent_of(&cluster, "preserve-foreign-status", "gw", "True").await;
    let route = api
        .get(V1, "HTTPRoute", "default", "preserve-foreign-status")
        .unwrap();
    let parents = route["status"]["parents"].as_array().unwrap();
    let kept = parents
        .iter()
        .find(|p| p["controllerName"] == "example.com/another-controller");
    assert_eq!(kept, Some(&foreign), "{parents:?}");
}

#[tokio::test]
async fn gateway_maximum_name_length() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    let name = format!("gateway-name-maximum-length-{}", "a".repeat(253 - 28));
    assert_eq!(name.len(), 253);
    api.apply(&gateway_yaml(
        &name,
        "  - {name: http, port: 80, protocol: HTTP}\n",
    ));
    let gateway = gateway_at(api, &name, 1).await;
    assert_eq!(
        reason(&gateway["status"]["conditions"], "Accepted").0,
        "True"
    );
}
