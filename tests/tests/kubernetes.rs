//! The controller in Kubernetes mode: the real `weir-controller --kubernetes` against the test
//! API server through a kubeconfig, a real `weir-ingress` connected to it with a token the API
//! server reviews, status written back to the objects.

use std::time::Duration;

use rustls::{client::danger::ServerCertVerifier, pki_types::pem::PemObject};
use serde_json::Value;
use weir_api::model::TlsMode;
use weir_e2e::cluster::*;
use weir_e2e::{
    api_key_policy,
    apiserver::ApiServer,
    ca_config_map, certify_request, csr_for, eventually, http_route, ingress_tls, mesh_tls,
    next_sidecar_view, service,
    tls::{https_get, KeyType, Pki},
    tls_secret, API_KEYS, MESH,
};

#[tokio::test]
async fn an_httproute_created_in_the_cluster_is_routable_and_gets_its_status() {
    let cluster = cluster(&[]).await;
    let weir = &cluster.weir;
    assert_eq!(status_of(weir, "shop.example.com").await, 200);
    assert_eq!(status_of(weir, "new.example.com").await, 404);

    let created = std::time::Instant::now();
    cluster.api.apply(&route("new", "new.example.com"));
    eventually(
        Duration::from_secs(5),
        "the new route is served",
        || async { (status_of(weir, "new.example.com").await == 200).then_some(()) },
    )
    .await;
    println!(
        "created in the API server to served: {:?}",
        created.elapsed()
    );

    // The status writer holds the Lease and reports on the route and the Gateway.
    let route = eventually(Duration::from_secs(10), "the route's status", || async {
        let route = cluster.api.get(
            "gateway.networking.k8s.io/v1",
            "HTTPRoute",
            "default",
            "new",
        )?;
        let parent = &route["status"]["parents"][0];
        (condition(&parent["conditions"], "Accepted")["status"] == "True").then_some(route)
    })
    .await;
    let parent = &route["status"]["parents"][0];
    assert_eq!(parent["controllerName"], "weir.dev/gateway-controller");
    assert_eq!(parent["parentRef"]["name"], "gw");
    assert_eq!(
        condition(&parent["conditions"], "ResolvedRefs")["status"],
        "True"
    );
    assert_eq!(
        condition(&parent["conditions"], "Accepted")["observedGeneration"],
        1
    );
    let gateway = eventually(Duration::from_secs(5), "the Gateway's status", || async {
        let gw = cluster
            .api
            .get("gateway.networking.k8s.io/v1", "Gateway", "default", "gw")?;
        (gw["status"]["listeners"][0]["attachedRoutes"] == 2).then_some(gw)
    })
    .await;
    assert_eq!(
        condition(&gateway["status"]["conditions"], "Programmed")["status"],
        "True"
    );
    assert_eq!(gateway["status"]["addresses"][0]["value"], "203.0.113.7");
    let lease = cluster
        .api
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            "weir-system",
            "weir-controller",
        )
        .expect("the status Lease");
    assert_eq!(lease["spec"]["holderIdentity"], "controller-0");

    // The CA root was made once and kept in the cluster.
    let ca = cluster
        .api
        .get("v1", "Secret", "weir-system", "weir-ca")
        .expect("CA Secret");
    assert_eq!(ca["type"], "kubernetes.io/tls");
    // Secrets are read one by one, never listed across the cluster.
    let listed_all = cluster
        .api
        .requests()
        .into_iter()
        // A list or watch of Secrets: the path ends at the collection (a GET by name does not).
        .filter(|r| r.starts_with("GET") && r.split('?').next().unwrap().ends_with("/secrets"))
        .filter(|r| !r.contains("metadata.name"))
        .collect::<Vec<_>>();
    assert!(listed_all.is_empty(), "{listed_all:?}");

    // Deleted in the cluster: gone from the ingress.
    assert!(cluster.api.delete(
        "gateway.networking.k8s.io/v1",
        "HTTPRoute",
        "default",
        "new"
    ));
    eventually(
        Duration::from_secs(5),
        "the deleted route is gone",
        || async { (status_of(weir, "new.example.com").await == 404).then_some(()) },
    )
    .await;
}

/// Route status in the Gateway API's words, as the upstream conformance tests check it:
/// HTTPRouteInvalidNonExistentBackendRef (BackendNotFound), HTTPRouteInvalidBackendRefUnknownKind
/// (InvalidKind), HTTPRouteInvalidCrossNamespaceBackendRef (RefNotPermitted),
/// HTTPRouteInvalidParentRefNotMatchingSectionName (NoMatchingParent),
/// HTTPRouteInvalidCrossNamespaceParentRef (NotAllowedByListeners), a route whose hostnames
/// match no listener's (NoMatchingListenerHostname), and a filter Weir does not support
/// (UnsupportedValue: that route alone is refused, the rest keeps serving).
#[tokio::test]
async fn route_status_gives_the_gateway_apis_reasons() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    api.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n");
    // Each on a host of its own, so that one route's fate shows on its host alone.
    let route_in = |namespace: &str, name: &str, parent: &str, rest: &str| {
        let hosts = match rest.contains("hostnames") {
            true => String::new(),
            false => format!("  hostnames: [{name}.example.com]\n"),
        };
        format!("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  parentRefs: [{parent}]\n{hosts}{rest}")
    };
    let backend = |refs: &str| format!("  rules: [{{backendRefs: [{refs}]}}]\n");
    let to_app = backend("{name: app, port: 80}");
    api.apply(&route_in(
        "default",
        "missing",
        "{name: gw}",
        &backend("{name: nothere, port: 80}"),
    ));
    api.apply(&route_in(
        "default",
        "kind",
        "{name: gw}",
        &backend("{group: unknown.example, kind: NotAService, name: app, port: 80}"),
    ));
    api.apply(&route_in(
        "default",
        "grant",
        "{name: gw}",
        &backend("{name: app, namespace: other, port: 80}"),
    ));
    api.apply(&route_in(
        "default",
        "section",
        "{name: gw, sectionName: nope}",
        &to_app,
    ));
    api.apply(&route_in(
        "other",
        "foreign",
        "{name: gw, namespace: default}",
        &to_app,
    ));
    api.apply("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: named, namespace: default}\nspec:\n  gatewayClassName: weir\n  listeners: [{name: http, protocol: HTTP, port: 80, hostname: \"*.example.com\"}]\n");
    api.apply(&route_in(
        "default",
        "hostname",
        "{name: named}",
        &format!("  hostnames: [x.example.net]\n{to_app}"),
    ));
    api.apply(&route_in("default", "extension", "{name: gw}", "  hostnames: [ext.example.com]\n  rules: [{filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Magic, name: m}}], backendRefs: [{name: app, port: 80}]}]\n"));

    for (name, reason) in [
        ("missing", "BackendNotFound"),
        ("kind", "InvalidKind"),
        ("grant", "RefNotPermitted"),
    ] {
        let conditions = route_conditions(api, "default", name, "True").await;
        let resolved = condition(&conditions, "ResolvedRefs");
        assert_eq!(resolved["status"], "False", "{name}: {conditions}");
        assert_eq!(resolved["reason"], reason, "{name}: {conditions}");
    }
    for (namespace, name, reason) in [
        ("default", "section", "NoMatchingParent"),
        ("other", "foreign", "NotAllowedByListeners"),
        ("default", "hostname", "NoMatchingListenerHostname"),
        ("default", "extension", "UnsupportedValue"),
    ] {
        let conditions = route_conditions(api, namespace, name, "False").await;
        let accepted = condition(&conditions, "Accepted");
        assert_eq!(accepted["reason"], reason, "{name}: {conditions}");
    }
    // A GRPCRoute gets the same.
    api.apply("apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: calls, namespace: default}\nspec:\n  parentRefs: [{name: gw}]\n  hostnames: [calls.example.com]\n  rules: [{matches: [{method: {service: a.B}}], backendRefs: [{name: app, port: 80}]}]\n");
    let grpc = eventually(
        Duration::from_secs(10),
        "the GRPCRoute's status",
        || async {
            let route = api.get(
                "gateway.networking.k8s.io/v1",
                "GRPCRoute",
                "default",
                "calls",
            )?;
            let parent = route["status"]["parents"][0].clone();
            (condition(&parent["conditions"], "Accepted")["status"] == "True").then_some(parent)
        },
    )
    .await;
    assert_eq!(grpc["controllerName"], "weir.dev/gateway-controller");
    assert_eq!(
        condition(&grpc["conditions"], "ResolvedRefs")["status"],
        "True"
    );

    // Each parent gets its own: attached to one listener, not to another.
    api.apply(&route_in(
        "default",
        "two",
        "{name: gw}, {name: gw, sectionName: nope}",
        &to_app,
    ));
    let parents = eventually(Duration::from_secs(10), "both parents' status", || async {
        let route = api.get(
            "gateway.networking.k8s.io/v1",
            "HTTPRoute",
            "default",
            "two",
        )?;
        let parents = route["status"]["parents"].as_array()?.clone();
        (parents.len() == 2).then_some(parents)
    })
    .await;
    let accepted = |p: &Value| {
        let c = condition(&p["conditions"], "Accepted");
        (
            c["status"].as_str().map(str::to_string),
            c["reason"].as_str().map(str::to_string),
        )
    };
    let first = parents
        .iter()
        .find(|p| p["parentRef"]["sectionName"].is_null())
        .unwrap();
    let second = parents
        .iter()
        .find(|p| p["parentRef"]["sectionName"] == "nope")
        .unwrap();
    assert_eq!(
        accepted(first),
        (Some("True".into()), Some("Accepted".into()))
    );
    assert_eq!(
        accepted(second),
        (Some("False".into()), Some("NoMatchingParent".into()))
    );
    assert_eq!(status_of(&cluster.weir, "two.example.com").await, 200);

    // The listener counts the routes it took: not the one another namespace may not attach,
    // nor the one for a section it does not have, nor the refused one.
    eventually(Duration::from_secs(10), "attachedRoutes", || async {
        let gw = api.get("gateway.networking.k8s.io/v1", "Gateway", "default", "gw")?;
        // shop, missing, kind, grant, two (its first parent) and the GRPCRoute calls.
        (gw["status"]["listeners"][0]["attachedRoutes"] == 6).then_some(())
    })
    .await;

    let conditions = route_conditions(api, "default", "extension", "False").await;
    let message = condition(&conditions, "Accepted")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("spec.rules[0].filters[0].type") && message.contains("ExtensionRef"),
        "{message}"
    );
    // The rest serves.
    assert_eq!(status_of(&cluster.weir, "shop.example.com").await, 200);
    assert_eq!(status_of(&cluster.weir, "ext.example.com").await, 404);
}

/// Listener status in the Gateway API's words: a protocol Weir does not serve
/// (UnsupportedProtocol, no supported kinds), two listeners on one port and hostname
/// (HostnameConflict) or protocols (ProtocolConflict), a certificate Secret that does not
/// exist (InvalidCertificateRef, as upstream's GatewayInvalidTLSConfiguration checks) or is in
/// another namespace without a ReferenceGrant (RefNotPermitted, as
/// GatewaySecretMissingReferenceGrant checks), route kinds Weir does not serve
/// (InvalidRouteKinds, as GatewayInvalidRouteKind checks); the valid listener beside them is
/// Programmed.
#[tokio::test]
async fn listener_status_gives_the_gateway_apis_reasons() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    api.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n");
    api.apply("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: edge, namespace: default}\nspec:\n  gatewayClassName: weir\n  listeners:\n  - {name: web, protocol: HTTP, port: 80, hostname: web.example.com}\n  - {name: raw, protocol: UDP, port: 9000}\n  - {name: a, protocol: HTTP, port: 8080, hostname: same.example.com}\n  - {name: b, protocol: HTTP, port: 8080, hostname: same.example.com}\n  - {name: plain, protocol: HTTP, port: 8443}\n  - {name: secure, protocol: HTTPS, port: 8443, tls: {certificateRefs: [{name: cert}]}}\n  - {name: missing, protocol: HTTPS, port: 443, hostname: missing.example.com, tls: {certificateRefs: [{name: nothere}]}}\n  - {name: foreign, protocol: HTTPS, port: 443, hostname: foreign.example.com, tls: {certificateRefs: [{name: cert, namespace: other}]}}\n  - {name: kinds, protocol: HTTP, port: 81, allowedRoutes: {kinds: [{kind: HTTPRoute}, {kind: FooRoute}]}}\n  - {name: tcponly, protocol: HTTP, port: 82, allowedRoutes: {kinds: [{kind: TCPRoute}]}}\n  - {name: nokey, protocol: HTTPS, port: 444, hostname: nokey.example.com, tls: {certificateRefs: [{name: opaque}]}}\n  - {name: wrongkind, protocol: HTTPS, port: 445, hostname: wrongkind.example.com, tls: {certificateRefs: [{group: \"\", kind: ConfigMap, name: opaque}]}}\n");
    api.apply("apiVersion: v1\nkind: Secret\nmetadata: {name: opaque, namespace: default}\ntype: Opaque\nstringData: {password: hunter2}\n");
    let listeners = eventually(Duration::from_secs(10), "the listeners' status", || async {
        let gw = api.get("gateway.networking.k8s.io/v1", "Gateway", "default", "edge")?;
        let listeners = gw["status"]["listeners"].as_array()?.clone();
        (listeners.len() == 12).then_some(listeners)
    })
    .await;
    let of = |name: &str| {
        listeners
            .iter()
            .find(|l| l["name"] == name)
            .unwrap()
            .clone()
    };
    let reason = |name: &str, kind: &str| listener_reason(&listeners, name, kind);
    let is = |(status, reason): (String, String), s: &str, r: &str| {
        assert_eq!((status.as_str(), reason.as_str()), (s, r));
    };
    is(reason("web", "Programmed"), "True", "Programmed");
    is(reason("web", "Conflicted"), "False", "NoConflicts");
    is(reason("raw", "Accepted"), "False", "UnsupportedProtocol");
    assert_eq!(of("raw")["supportedKinds"], serde_json::json!([]));
    is(reason("a", "Conflicted"), "True", "HostnameConflict");
    is(reason("b", "Conflicted"), "True", "HostnameConflict");
    is(reason("plain", "Conflicted"), "True", "ProtocolConflict");
    is(
        reason("missing", "ResolvedRefs"),
        "False",
        "InvalidCertificateRef",
    );
    is(reason("missing", "Programmed"), "False", "Invalid");
    // A Secret without a certificate and key, and a certificateRef of another kind (as
    // upstream's GatewayInvalidTLSConfiguration checks): that listener alone.
    for name in ["nokey", "wrongkind"] {
        is(
            reason(name, "ResolvedRefs"),
            "False",
            "InvalidCertificateRef",
        );
    }
    // Some listeners are not valid: the Gateway says so, and is still accepted.
    let gw = api
        .get("gateway.networking.k8s.io/v1", "Gateway", "default", "edge")
        .unwrap();
    let accepted = condition(&gw["status"]["conditions"], "Accepted");
    assert_eq!(
        (accepted["status"].as_str(), accepted["reason"].as_str()),
        (Some("True"), Some("ListenersNotValid"))
    );
    // allowedRoutes.kinds naming a kind Weir does not serve (as upstream's
    // GatewayInvalidRouteKind checks): InvalidRouteKinds, the served ones kept.
    is(
        reason("kinds", "ResolvedRefs"),
        "False",
        "InvalidRouteKinds",
    );
    let http = serde_json::json!([{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}]);
    assert_eq!(of("kinds")["supportedKinds"], http);
    let both = serde_json::json!([
        {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"},
        {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"},
    ]);
    is(
        reason("tcponly", "ResolvedRefs"),
        "False",
        "InvalidRouteKinds",
    );
    assert_eq!(of("tcponly")["supportedKinds"], serde_json::json!([]));
    assert_eq!(of("web")["supportedKinds"], both);
    is(
        reason("foreign", "ResolvedRefs"),
        "False",
        "RefNotPermitted",
    );
    // The rest of the cluster serves.
    assert_eq!(status_of(&cluster.weir, "shop.example.com").await, 200);
}

/// The GatewayClass the manifests install is accepted with the features Weir claims; another
/// class naming Weir's controller, or one with parameters, is not, and says why; a class of
/// another controller is left alone.
#[tokio::test]
async fn the_gatewayclass_is_accepted_with_its_supported_features() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    let manifests = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/ingress.yaml"),
    )
    .unwrap();
    let class = manifests
        .split("\n---\n")
        .find(|d| d.contains("kind: GatewayClass"))
        .expect("the manifests' GatewayClass");
    api.apply(class);
    let class_yaml = |name: &str, controller: &str, extra: &str| {
        format!("apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: {name}}}\nspec:\n  controllerName: {controller}\n{extra}")
    };
    api.apply(&class_yaml(
        "weir-second",
        "weir.dev/gateway-controller",
        "",
    ));
    api.apply(&class_yaml("other", "example.com/another-controller", ""));
    let status = |name: &str| {
        let name = name.to_string();
        async move {
            eventually(
                Duration::from_secs(10),
                &format!("GatewayClass {name}'s status"),
                || async {
                    let class =
                        api.get("gateway.networking.k8s.io/v1", "GatewayClass", "", &name)?;
                    let accepted = condition(&class["status"]["conditions"], "Accepted").clone();
                    (accepted != Value::Null).then_some(class["status"].clone())
                },
            )
            .await
        }
    };
    let weir = status("weir").await;
    let accepted = condition(&weir["conditions"], "Accepted");
    assert_eq!(accepted["status"], "True", "{weir}");
    assert_eq!(accepted["reason"], "Accepted");
    let features: Vec<&str> = weir["supportedFeatures"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert_eq!(features, weir_api::compile::SUPPORTED_FEATURES);
    let mut sorted = features.clone();
    sorted.sort();
    assert_eq!(features, sorted, "the spec asks for them sorted");
    let second = status("weir-second").await;
    let accepted = condition(&second["conditions"], "Accepted");
    assert_eq!(
        (accepted["status"].as_str(), accepted["reason"].as_str()),
        (Some("False"), Some("Unsupported"))
    );
    // Another controller's class gets nothing from Weir.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let other = api
        .get("gateway.networking.k8s.io/v1", "GatewayClass", "", "other")
        .unwrap();
    assert_eq!(
        condition(&other["status"]["conditions"], "Accepted"),
        &Value::Null,
        "{other}"
    );
}

/// Waits for the AuthPolicy `default/shop` to have `Accepted` with this status; returns it.
async fn policy_accepted(api: &ApiServer, status: &str) -> Value {
    let what = format!("AuthPolicy condition Accepted={status}");
    eventually(Duration::from_secs(10), &what, || async {
        let p = api.get("weir.dev/v1alpha1", "AuthPolicy", "default", "shop")?;
        let accepted = condition(&p["status"]["conditions"], "Accepted").clone();
        (accepted["status"] == status).then_some(accepted)
    })
    .await
}

#[tokio::test]
async fn an_invalid_policy_gets_a_false_condition_and_an_event_while_traffic_flows() {
    let cluster = cluster(&[]).await;
    let weir = &cluster.weir;
    let policy = api_key_policy;
    cluster.api.apply(API_KEYS);
    cluster.api.apply(&policy("X-API-Key"));
    eventually(Duration::from_secs(5), "the policy applies", || async {
        (status_of(weir, "shop.example.com").await == 401).then_some(())
    })
    .await;
    let accepted = policy_accepted(&cluster.api, "True").await;
    assert_eq!(accepted["reason"], "Accepted");

    // Broken: the condition says why, an Event is recorded, the last good policy still
    // protects the route and the rest of the cluster's changes still apply.
    cluster.api.apply(&policy("not a header"));
    cluster.api.apply(&route("new", "new.example.com"));
    let refused = policy_accepted(&cluster.api, "False").await;
    assert_eq!(refused["reason"], "Invalid");
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.contains("spec.apiKeys.header") && message.contains("not a header"),
        "{message}"
    );
    assert_eq!(refused["observedGeneration"], 2);
    assert_ne!(refused["lastTransitionTime"], Value::Null);
    assert_eq!(status_of(weir, "shop.example.com").await, 401);
    eventually(
        Duration::from_secs(5),
        "the rest of the change applies",
        || async { (status_of(weir, "new.example.com").await == 200).then_some(()) },
    )
    .await;
    let events = eventually(Duration::from_secs(5), "a Warning Event", || async {
        let events = cluster.api.list("events.k8s.io/v1", "Event");
        let found: Vec<Value> = events
            .into_iter()
            .filter(|e| e["regarding"]["name"] == "shop" && e["regarding"]["kind"] == "AuthPolicy")
            .collect();
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert_eq!(events[0]["type"], "Warning");
    assert!(
        events[0]["note"].as_str().unwrap().contains("not a header"),
        "{events:?}"
    );

    // Fixed: Accepted again.
    cluster.api.apply(&policy("X-Key"));
    eventually(Duration::from_secs(10), "Accepted=True again", || async {
        let p = cluster
            .api
            .get("weir.dev/v1alpha1", "AuthPolicy", "default", "shop")?;
        (condition(&p["status"]["conditions"], "Accepted")["status"] == "True").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_secret_created_after_the_ingress_that_names_it_is_picked_up() {
    let cluster = cluster(&[]).await;
    let pki = Pki::new();
    let cert = pki.issue(&["shop.example.com"], KeyType::Ecdsa);
    let client = pki.client(&["http/1.1"], false);
    // The Ingress names a Secret that does not exist yet: served without a certificate.
    cluster
        .api
        .apply(&ingress_tls("web", "shop.example.com", "app", "shop-tls"));
    let ingress = eventually(Duration::from_secs(10), "Ingress status", || async {
        let i = cluster
            .api
            .get("networking.k8s.io/v1", "Ingress", "default", "web")?;
        (i["status"]["loadBalancer"]["ingress"][0]["ip"] == "203.0.113.7").then_some(i)
    })
    .await;
    assert_eq!(
        ingress["status"]["loadBalancer"]["ingress"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(https_get(
        cluster.weir.tls,
        "shop.example.com",
        client.clone(),
        "/",
        &[]
    )
    .await
    .is_err());

    cluster.api.apply(&tls_secret("shop-tls", &cert));
    let served = eventually(
        Duration::from_secs(10),
        "the certificate is served",
        || async {
            https_get(
                cluster.weir.tls,
                "shop.example.com",
                client.clone(),
                "/",
                &[],
            )
            .await
            .ok()
        },
    )
    .await;
    assert_eq!(served.leaf, cert.leaf_der());
    assert_eq!(served.reply.status, 200);
    // That Secret was watched by name; nothing listed every Secret.
    let requests = cluster.api.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.contains("/namespaces/default/secrets?")
                && r.contains("metadata.name%3Dshop-tls")),
        "{requests:?}"
    );
}

#[tokio::test]
async fn the_ingress_keeps_serving_through_a_controller_restart_and_an_api_server_compaction() {
    let mut cluster = cluster(&[]).await;
    cluster.controller.kill();
    assert_eq!(status_of(&cluster.weir, "shop.example.com").await, 200);
    cluster.api.apply(&route("later", "later.example.com"));
    cluster.controller.restart();
    eventually(
        Duration::from_secs(10),
        "resynced after the restart",
        || async { (status_of(&cluster.weir, "later.example.com").await == 200).then_some(()) },
    )
    .await;

    // The API server forgets its history and drops every watch: the controller lists again
    // and picks up what changed meanwhile.
    cluster.api.compact();
    cluster.api.expire_watches();
    cluster.api.apply(&route("after", "after.example.com"));
    eventually(
        Duration::from_secs(10),
        "caught up after the compaction",
        || async { (status_of(&cluster.weir, "after.example.com").await == 200).then_some(()) },
    )
    .await;
    assert!(cluster.dir.exists());
}

#[tokio::test]
async fn certificates_are_signed_for_the_identity_the_api_server_reviewed() {
    let cluster = cluster(&[]).await;
    cluster.api.add_token("web-token", "shop", "web", &["weir"]);
    cluster
        .api
        .add_token("vault-token", "shop", "web", &["vault"]);
    let mut client = cluster.controller.identity_client().await;
    let web = "spiffe://cluster.local/ns/shop/sa/web";

    let other = client
        .certify(certify_request(
            csr_for("spiffe://cluster.local/ns/shop/sa/admin"),
            "web-token",
        ))
        .await
        .unwrap_err();
    assert_eq!(other.code(), tonic::Code::PermissionDenied, "{other:?}");
    let wrong_audience = client
        .certify(certify_request(csr_for(web), "vault-token"))
        .await
        .unwrap_err();
    assert_eq!(
        wrong_audience.code(),
        tonic::Code::Unauthenticated,
        "{wrong_audience:?}"
    );

    let issued = client
        .certify(certify_request(csr_for(web), "web-token"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(issued.spiffe_id, web);
    // Signed by the root kept in the weir-ca Secret.
    let secret = cluster
        .api
        .get("v1", "Secret", "weir-system", "weir-ca")
        .unwrap();
    let root_pem = secret["data"]["tls.crt"].as_str().unwrap();
    use base64::Engine;
    let root_pem = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(root_pem)
            .unwrap(),
    )
    .unwrap();
    let bundle: Vec<&str> = issued.trust_bundle_pem.iter().map(|p| p.trim()).collect();
    assert_eq!(bundle, [root_pem.trim()]);
    let reviews = cluster
        .api
        .requests()
        .into_iter()
        .filter(|r| r.contains("tokenreviews"))
        .count();
    assert!(
        reviews >= 3,
        "every token was reviewed by the API server ({reviews})"
    );
}

#[tokio::test]
async fn a_sidecar_follows_its_pods_policy_from_the_cluster() {
    let cluster = cluster(&[]).await;
    cluster
        .api
        .apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n");
    cluster.api.apply(MESH);
    cluster.api.apply(&mesh_tls("STRICT"));
    cluster
        .api
        .add_token("backend-token", "shop", "backend", &["weir"]);
    let (mut updates, acks) = eventually(Duration::from_secs(10), "a sidecar stream", || async {
        cluster
            .controller
            .sidecar_stream("backend-token", "shop", "backend", "backend-a")
            .await
            .ok()
    })
    .await;
    let (_, mut view) = next_sidecar_view(&mut updates).await;
    // The first views may predate some of the objects just applied (each kind has a watch of
    // its own: the policy may be seen before the pods); the controller sends the next.
    let complete = |view: &weir_api::model::SidecarView| {
        view.inbound.mode == TlsMode::Strict
            && view.services.iter().any(|s| {
                s.name == "backend"
                    && s.ports
                        .first()
                        .and_then(|p| view.clusters.get(&p.cluster))
                        .is_some_and(|c| !c.identities.is_empty())
            })
    };
    while !complete(&view) {
        view = next_sidecar_view(&mut updates).await.1;
    }
    let backend = view.services.iter().find(|s| s.name == "backend").unwrap();
    assert_eq!(
        backend.cluster_ips,
        ["10.96.0.20".parse::<std::net::IpAddr>().unwrap()]
    );
    let identities = &view.clusters[&backend.ports[0].cluster].identities;
    assert_eq!(identities.values().collect::<Vec<_>>(), ["shop/backend"]);

    cluster.api.apply(&mesh_tls("DISABLED"));
    let (version, view) = next_sidecar_view(&mut updates).await;
    assert_eq!(view.inbound.mode, TlsMode::Disabled);
    assert_eq!(
        view.inbound.mode_from.as_deref(),
        Some("MeshTLSPolicy shop/default")
    );

    // A version the sidecar refuses (NACK) becomes a Warning Event on its Pod.
    use weir_api::proto::{watch_request::Kind, Nack, WatchRequest};
    let nack = Nack {
        version,
        error: "this sidecar cannot enforce access.ports".into(),
    };
    // Repeated, and for versions it was never sent: one Event all the same.
    for version in [version, version, version, version + 100, 0] {
        let nack = Nack {
            version,
            ..nack.clone()
        };
        let refusal = WatchRequest {
            kind: Some(Kind::Nack(nack)),
        };
        acks.send(refusal).await.unwrap();
    }
    let event = eventually(
        Duration::from_secs(10),
        "the ConfigRefused Event",
        || async {
            let events = cluster.api.list("events.k8s.io/v1", "Event");
            events.into_iter().find(|e| e["reason"] == "ConfigRefused")
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = cluster.api.list("events.k8s.io/v1", "Event");
    let refused = events
        .iter()
        .filter(|e| e["reason"] == "ConfigRefused")
        .count();
    assert_eq!(refused, 1, "{events:?}");
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["regarding"]["kind"], "Pod");
    assert_eq!(event["regarding"]["namespace"], "shop");
    assert_eq!(event["regarding"]["name"], "backend-a");
    // With the Pod's uid: `kubectl describe pod` finds its Events by it.
    let pod = cluster.api.get("v1", "Pod", "shop", "backend-a").unwrap();
    assert_eq!(event["regarding"]["uid"], pod["metadata"]["uid"]);
    let note = event["note"].as_str().unwrap_or_default();
    assert!(
        note.contains(&format!("refused version {version}")),
        "{note}"
    );
    assert!(note.contains("cannot enforce access.ports"), "{note}");
}

#[tokio::test]
async fn the_trust_bundle_and_the_injectors_certificate_are_published() {
    let cluster = cluster(&[]).await;
    cluster.api.apply(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {weir.dev/inject: enabled}}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {name: legacy}\n---\n\
         apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\nmetadata: {name: weir-injector}\n\
         webhooks:\n- name: namespace.inject.weir.dev\n  clientConfig: {service: {name: weir-injector, namespace: weir-system, path: /inject}}\n\
         - name: pod.inject.weir.dev\n  clientConfig: {service: {name: weir-injector, namespace: weir-system, path: /inject, port: 443}}\n",
    );
    let bundle = std::fs::read_to_string(cluster.controller.bundle()).unwrap();
    for namespace in ["weir-system", "shop"] {
        let map = eventually(Duration::from_secs(10), "the bundle ConfigMap", || async {
            cluster
                .api
                .get("v1", "ConfigMap", namespace, "weir-ca-root")
        })
        .await;
        assert_eq!(
            map["data"]["ca.crt"].as_str().unwrap().trim(),
            bundle.trim(),
            "{namespace}"
        );
    }
    assert!(
        cluster
            .api
            .get("v1", "ConfigMap", "legacy", "weir-ca-root")
            .is_none(),
        "not opted in"
    );

    use base64::Engine;
    let decode = |v: &Value| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    let webhook = eventually(Duration::from_secs(10), "caBundle set", || async {
        let w = cluster.api.get(
            "admissionregistration.k8s.io/v1",
            "MutatingWebhookConfiguration",
            "",
            "weir-injector",
        )?;
        w["webhooks"][1]["clientConfig"]["caBundle"]
            .is_string()
            .then_some(w)
    })
    .await;
    for hook in webhook["webhooks"].as_array().unwrap() {
        assert_eq!(
            decode(&hook["clientConfig"]["caBundle"]).trim(),
            bundle.trim()
        );
    }

    // The injector's certificate: for its Service name, signed by the root in the bundle.
    let secret = cluster
        .api
        .get("v1", "Secret", "weir-system", "weir-injector-tls")
        .unwrap();
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let leaf = decode(&secret["data"]["tls.crt"]);
    let leaf = rustls::pki_types::CertificateDer::from_pem_slice(leaf.as_bytes()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(bundle.as_bytes()).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
            .build()
            .unwrap();
    verifier
        .verify_server_cert(
            &leaf,
            &[],
            &rustls::pki_types::ServerName::try_from("weir-injector.weir-system.svc").unwrap(),
            &[],
            rustls::pki_types::UnixTime::now(),
        )
        .expect("rustls accepts it for the injector's Service name");
}

/// TLSRoute and TLS listener status in the Gateway API's words, as upstream's TLS tests check
/// it: TLSRouteInvalidNoMatchingListener (NotAllowedByListeners on an HTTP-only Gateway,
/// NoMatchingParent for a sectionName no listener has), TLSRouteInvalidNoMatchingListenerHostname,
/// TLSRouteInvalidBackendRefNonexistent (BackendNotFound) and TLSRouteInvalidReferenceGrant
/// (RefNotPermitted) with the route still Accepted, TLSRouteListenerPassthroughSupportedKinds
/// (TCPRoute beside TLSRoute: InvalidRouteKinds), TLSRouteListenerTerminateSupportedKinds, and
/// GatewayListenerProtocolAndRouteKindConflicts (HTTPS and TLS on one port with one hostname
/// conflict and take no routes; an HTTPRoute on a TLS listener is not allowed).
#[tokio::test]
async fn tls_route_and_listener_status_give_the_gateway_apis_reasons() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    let pki = Pki::new();
    api.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: app}\n");
    api.apply(&tls_secret(
        "cert",
        &pki.issue(&["tls.example.com"], KeyType::Ecdsa),
    ));
    api.apply(&service("app", &[&cluster.app]).replace("namespace: default", "namespace: app"));
    api.apply("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: tls, namespace: default}\nspec:\n  gatewayClassName: weir\n  listeners:\n  - {name: tls-passthrough, protocol: TLS, port: 443, hostname: \"*.example.com\", tls: {mode: Passthrough}}\n  - {name: kinds, protocol: TLS, port: 444, tls: {mode: Passthrough}, allowedRoutes: {kinds: [{kind: TCPRoute}, {kind: TLSRoute}]}}\n  - {name: conflicted-https, protocol: HTTPS, port: 8443, tls: {certificateRefs: [{name: cert}]}}\n  - {name: conflicted-tls, protocol: TLS, port: 8443, tls: {mode: Passthrough}}\n  - {name: tls-terminate, protocol: TLS, port: 8883, hostname: tls.example.com, tls: {mode: Terminate, certificateRefs: [{name: cert}]}}\n");
    api.apply("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: http-only, namespace: default}\nspec:\n  gatewayClassName: weir\n  listeners:\n  - {name: http, protocol: HTTP, port: 80}\n");
    let tls_route = |name: &str, parent: &str, host: &str, backend: &str| {
        format!("apiVersion: gateway.networking.k8s.io/v1\nkind: TLSRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs: [{parent}]\n  hostnames: [{host}]\n  rules:\n  - backendRefs: [{backend}]\n")
    };
    let app = "{name: app, port: 80}";
    let ok_parent = "{name: tls, sectionName: tls-passthrough}";
    api.apply(&tls_route("good", ok_parent, "abc.example.com", app));
    api.apply(&tls_route(
        "wrong-protocol",
        "{name: http-only}",
        "abc.example.com",
        app,
    ));
    api.apply(&tls_route(
        "no-section",
        "{name: tls, sectionName: nonexistent}",
        "abc.example.com",
        app,
    ));
    api.apply(&tls_route(
        "hostname-mismatch",
        ok_parent,
        "www.nomatch.com",
        app,
    ));
    api.apply(&tls_route(
        "missing",
        ok_parent,
        "x.example.com",
        "{name: nonexistent, port: 443}",
    ));
    api.apply(&tls_route(
        "not-granted",
        ok_parent,
        "y.example.com",
        "{name: app, namespace: app, port: 80}",
    ));
    api.apply(&tls_route(
        "conflicted",
        "{name: tls, sectionName: conflicted-tls}",
        "z.example.com",
        app,
    ));
    api.apply(&tls_route(
        "terminated",
        "{name: tls, sectionName: tls-terminate}",
        "tls.example.com",
        app,
    ));
    api.apply(
        &http_route(
            "disallowed-kind",
            &["abc.example.com"],
            "  - backendRefs: [{name: app, port: 80}]\n",
        )
        .replace(
            "parentRefs: [{name: gw}]",
            "parentRefs: [{name: tls, sectionName: tls-passthrough}]",
        ),
    );

    let good = conditions_of(api, "TLSRoute", "default", "good", "True").await;
    assert_eq!(reason(&good, "ResolvedRefs"), pair("True", "ResolvedRefs"));
    for (name, why) in [
        ("wrong-protocol", "NotAllowedByListeners"),
        ("no-section", "NoMatchingParent"),
        ("hostname-mismatch", "NoMatchingListenerHostname"),
        ("conflicted", "NotAllowedByListeners"),
    ] {
        let c = conditions_of(api, "TLSRoute", "default", name, "False").await;
        assert_eq!(reason(&c, "Accepted"), pair("False", why), "{name}");
    }
    for (name, why) in [
        ("missing", "BackendNotFound"),
        ("not-granted", "RefNotPermitted"),
    ] {
        let c = conditions_of(api, "TLSRoute", "default", name, "True").await;
        assert_eq!(reason(&c, "ResolvedRefs"), pair("False", why), "{name}");
    }
    let c = route_conditions(api, "default", "disallowed-kind", "False").await;
    assert_eq!(
        reason(&c, "Accepted"),
        pair("False", "NotAllowedByListeners")
    );
    // The route's parent status names the parent as the route does.
    let good = api
        .get(
            "gateway.networking.k8s.io/v1",
            "TLSRoute",
            "default",
            "good",
        )
        .unwrap();
    assert_eq!(
        good["status"]["parents"][0]["parentRef"]["sectionName"],
        "tls-passthrough"
    );

    let listeners = eventually(
        Duration::from_secs(10),
        "the TLS listeners' status",
        || async {
            let gw = api.get("gateway.networking.k8s.io/v1", "Gateway", "default", "tls")?;
            let listeners = gw["status"]["listeners"].as_array()?.clone();
            let of = |name: &str| listeners.iter().find(|l| l["name"] == name).cloned();
            // good, missing and not-granted: not the detached one, nor the HTTPRoute.
            (of("tls-passthrough")?["attachedRoutes"] == 3
                && of("tls-terminate")?["attachedRoutes"] == 1)
                .then_some(listeners)
        },
    )
    .await;
    let of = |name: &str| {
        listeners
            .iter()
            .find(|l| l["name"] == name)
            .unwrap()
            .clone()
    };
    let tls_kind = serde_json::json!([{"group": "gateway.networking.k8s.io", "kind": "TLSRoute"}]);
    for name in ["tls-passthrough", "kinds", "tls-terminate"] {
        assert_eq!(of(name)["supportedKinds"], tls_kind, "{name}");
    }
    assert_eq!(
        reason(&of("kinds")["conditions"], "ResolvedRefs"),
        pair("False", "InvalidRouteKinds")
    );
    assert_eq!(
        reason(&of("tls-terminate")["conditions"], "Accepted"),
        pair("True", "Accepted")
    );
    assert_eq!(
        reason(&of("tls-terminate")["conditions"], "Programmed"),
        pair("True", "Programmed")
    );
    for name in ["conflicted-https", "conflicted-tls"] {
        let conditions = &of(name)["conditions"];
        assert_eq!(
            reason(conditions, "Accepted"),
            pair("False", "Invalid"),
            "{name}"
        );
        assert_eq!(
            reason(conditions, "Conflicted"),
            pair("True", "ProtocolConflict"),
            "{name}"
        );
        assert_eq!(reason(conditions, "Programmed").0, "False", "{name}");
        assert_eq!(of(name)["attachedRoutes"], 0, "{name}");
    }
    // The rest of the cluster serves.
    assert_eq!(status_of(&cluster.weir, "shop.example.com").await, 200);
}

/// TCPRoute and TCP listener status, as upstream's TCP tests check it:
/// TCPRouteMultipleRoutesAttachment (two routes on one listener, both Accepted, attachedRoutes
/// 2, supportedKinds exactly TCPRoute), TCPRouteInvalidBackendRefNonexistent (BackendNotFound)
/// and TCPRouteInvalidCrossNamespaceBackendRef (RefNotPermitted) with the route still
/// Accepted, TCPRouteInvalidNonTCPListener (a UDP listener: UnsupportedProtocol, the route
/// NotAllowedByListeners, no route counted), and a TLS listener that terminates and names
/// TCPRoute (TCPRouteOnTLSTerminate) beside a passthrough one, which takes none.
#[tokio::test]
async fn tcp_route_and_listener_status_give_the_gateway_apis_reasons() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    let pki = Pki::new();
    api.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: web-backend}\n");
    api.apply(&tls_secret(
        "cert",
        &pki.issue(&["tls.example.com"], KeyType::Ecdsa),
    ));
    api.apply(
        &service("app", &[&cluster.app]).replace("namespace: default", "namespace: web-backend"),
    );
    api.apply("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: tcp, namespace: default}\nspec:\n  gatewayClassName: weir\n  listeners:\n  - {name: tcp, protocol: TCP, port: 9091, allowedRoutes: {kinds: [{group: gateway.networking.k8s.io, kind: TCPRoute}], namespaces: {from: Same}}}\n  - {name: udp-listener, protocol: UDP, port: 5300, allowedRoutes: {kinds: [{kind: UDPRoute}]}}\n  - {name: tls-terminate, protocol: TLS, port: 8443, hostname: tls.example.com, tls: {mode: Terminate, certificateRefs: [{name: cert}]}, allowedRoutes: {kinds: [{kind: TCPRoute}]}}\n  - {name: passthrough, protocol: TLS, port: 8444, tls: {mode: Passthrough}, allowedRoutes: {kinds: [{kind: TCPRoute}]}}\n  - {name: every-name, protocol: TLS, port: 8445, tls: {mode: Terminate, certificateRefs: [{name: cert}]}, allowedRoutes: {kinds: [{kind: TCPRoute}]}}\n");
    let tcp_route = |name: &str, section: &str, backend: &str| {
        format!("apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs: [{{name: tcp, sectionName: {section}}}]\n  rules:\n  - backendRefs: [{backend}]\n")
    };
    let app = "{name: app, namespace: web-backend, port: 80}";
    api.apply("apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: tcp, namespace: web-backend}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: TCPRoute, namespace: default}]\n  to: [{group: \"\", kind: Service, name: app}]\n");
    api.apply(&tcp_route("tcproute-attach-older", "tcp", app));
    api.apply(&tcp_route("tcproute-attach-newer", "tcp", app));
    api.apply(&tcp_route(
        "nonexistent",
        "tcp",
        "{name: nonexistent-service, port: 8080}",
    ));
    api.apply(&tcp_route("on-udp", "udp-listener", app));
    api.apply(&tcp_route("terminated", "tls-terminate", app));
    api.apply(&tcp_route("passed-through", "passthrough", app));
    api.apply(&tcp_route("every-name", "every-name", app));

    for name in [
        "tcproute-attach-older",
        "tcproute-attach-newer",
        "terminated",
    ] {
        let c = conditions_of(api, "TCPRoute", "default", name, "True").await;
        assert_eq!(reason(&c, "Accepted"), pair("True", "Accepted"), "{name}");
        assert_eq!(
            reason(&c, "ResolvedRefs"),
            pair("True", "ResolvedRefs"),
            "{name}"
        );
    }
    let c = conditions_of(api, "TCPRoute", "default", "nonexistent", "True").await;
    assert_eq!(reason(&c, "ResolvedRefs"), pair("False", "BackendNotFound"));
    for name in ["on-udp", "passed-through", "every-name"] {
        let c = conditions_of(api, "TCPRoute", "default", name, "False").await;
        assert_eq!(
            reason(&c, "Accepted"),
            pair("False", "NotAllowedByListeners"),
            "{name}"
        );
    }
    // Without its grant, the cross-namespace backend is RefNotPermitted.
    api.delete(
        "gateway.networking.k8s.io/v1beta1",
        "ReferenceGrant",
        "web-backend",
        "tcp",
    );
    eventually(Duration::from_secs(10), "RefNotPermitted", || async {
        let c = conditions_of(api, "TCPRoute", "default", "tcproute-attach-older", "True").await;
        (reason(&c, "ResolvedRefs") == pair("False", "RefNotPermitted")).then_some(())
    })
    .await;

    let listeners = eventually(
        Duration::from_secs(10),
        "the TCP listeners' status",
        || async {
            let gw = api.get("gateway.networking.k8s.io/v1", "Gateway", "default", "tcp")?;
            let listeners = gw["status"]["listeners"].as_array()?.clone();
            let of = |name: &str| listeners.iter().find(|l| l["name"] == name).cloned();
            (of("tcp")?["attachedRoutes"] == 3).then_some(listeners)
        },
    )
    .await;
    let of = |name: &str| {
        listeners
            .iter()
            .find(|l| l["name"] == name)
            .unwrap()
            .clone()
    };
    let kind = |k: &str| serde_json::json!([{"group": "gateway.networking.k8s.io", "kind": k}]);
    assert_eq!(of("tcp")["supportedKinds"], kind("TCPRoute"));
    assert_eq!(
        reason(&of("tcp")["conditions"], "Accepted"),
        pair("True", "Accepted")
    );
    assert_eq!(
        reason(&of("udp-listener")["conditions"], "Accepted"),
        pair("False", "UnsupportedProtocol")
    );
    assert_eq!(of("udp-listener")["attachedRoutes"], 0);
    assert_eq!(of("tls-terminate")["attachedRoutes"], 1);
    assert_eq!(of("tls-terminate")["supportedKinds"], kind("TCPRoute"));
    // A passthrough listener has no plaintext to carry, and one without a hostname would carry
    // every name of its port: TCPRoute is not a kind either takes.
    for name in ["passthrough", "every-name"] {
        assert_eq!(
            reason(&of(name)["conditions"], "ResolvedRefs"),
            pair("False", "InvalidRouteKinds"),
            "{name}"
        );
        assert_eq!(of(name)["attachedRoutes"], 0, "{name}");
    }
    // A younger Gateway cannot have the older one's TCP port, nor the gateway's HTTP port for
    // TCP: its listeners say PortUnavailable (the gateway does not serve them).
    api.apply("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: younger, namespace: default}\nspec:\n  gatewayClassName: weir\n  listeners:\n  - {name: taken, protocol: TCP, port: 9091}\n  - {name: home, protocol: TCP, port: 80}\n  - {name: free, protocol: TCP, port: 9092}\n");
    let younger = eventually(
        Duration::from_secs(10),
        "the younger Gateway's status",
        || async {
            let gw = api.get(
                "gateway.networking.k8s.io/v1",
                "Gateway",
                "default",
                "younger",
            )?;
            let listeners = gw["status"]["listeners"].as_array()?.clone();
            (listeners.len() == 3).then_some(listeners)
        },
    )
    .await;
    for name in ["taken", "home"] {
        assert_eq!(
            listener_reason(&younger, name, "Accepted"),
            pair("False", "PortUnavailable"),
            "{name}"
        );
    }
    assert_eq!(
        listener_reason(&younger, "free", "Accepted"),
        pair("True", "Accepted")
    );
    // The rest of the cluster serves.
    assert_eq!(status_of(&cluster.weir, "shop.example.com").await, 200);
}

/// A cluster whose Gateway API has no TLSRoute (its CRD not installed, as before v1.5): the
/// controller serves everything else from the start, and picks TLSRoutes up once the CRD is
/// installed.
#[tokio::test]
async fn a_cluster_without_the_tlsroute_crd_is_served_and_tlsroutes_come_with_it() {
    let api = ApiServer::start();
    api.uninstall("tlsroutes");
    let cluster = cluster_on(api, &[]).await;
    let api = &cluster.api;
    assert_eq!(status_of(&cluster.weir, "shop.example.com").await, 200);
    api.install("tlsroutes");
    api.apply("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: tls, namespace: default}\nspec:\n  gatewayClassName: weir\n  listeners:\n  - {name: tls, protocol: TLS, port: 443, tls: {mode: Passthrough}}\n");
    api.apply("apiVersion: gateway.networking.k8s.io/v1\nkind: TLSRoute\nmetadata: {name: late, namespace: default}\nspec:\n  parentRefs: [{name: tls}]\n  hostnames: [late.example.com]\n  rules:\n  - backendRefs: [{name: app, port: 80}]\n");
    let c = eventually(
        Duration::from_secs(60),
        "the TLSRoute's status once its CRD is installed",
        || async {
            let route = api.get(
                "gateway.networking.k8s.io/v1",
                "TLSRoute",
                "default",
                "late",
            )?;
            route["status"]["parents"]
                .as_array()?
                .first()
                .map(|p| p["conditions"].clone())
        },
    )
    .await;
    assert_eq!(condition(&c, "Accepted")["status"], "True");
    let config = cluster.weir.admin_get("/config").await.json();
    assert_eq!(
        config["snapshot"]["streams"][0]["name"],
        "tlsroute:default/late"
    );
}

/// A kind every cluster has (here AuthPolicy, whose CRD the manifests install) that the API
/// server answers 404 for: no configuration is published without it — a passing error must not
/// send the proxies routes without their authentication — and once it is served, everything is.
#[tokio::test]
async fn a_required_kind_the_api_server_does_not_serve_holds_the_first_configuration() {
    let api = ApiServer::start();
    api.uninstall("authpolicies");
    let cluster = unready_cluster(api, &[]);
    let (api, weir) = (&cluster.api, &cluster.weir);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_ne!(
        weir.admin_get("/readyz").await.status,
        200,
        "published without AuthPolicies"
    );
    api.install("authpolicies");
    eventually(
        Duration::from_secs(60),
        "the configuration once AuthPolicies are served",
        || async { (weir.admin_get("/readyz").await.status == 200).then_some(()) },
    )
    .await;
    assert_eq!(status_of(weir, "shop.example.com").await, 200);
}

/// GatewaySecretReferenceGrantAllInNamespace, GatewaySecretReferenceGrantSpecific and
/// GatewaySecretInvalidReferenceGrant: a listener's certificate Secret in another namespace
/// resolves with a ReferenceGrant there for every Secret or for that one, and not with a grant
/// for another Secret (RefNotPermitted).
#[tokio::test]
async fn gateway_secret_reference_grants() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    let pki = Pki::new();
    api.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: certs-all}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: certs-one}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: certs-wrong}\n");
    let cert = pki.issue(&["secure.example.com"], KeyType::Ecdsa);
    for ns in ["certs-all", "certs-one", "certs-wrong"] {
        api.apply(
            &tls_secret("certificate", &cert)
                .replace("namespace: default", &format!("namespace: {ns}")),
        );
    }
    let grant = |ns: &str, to: &str| {
        format!("apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: grant, namespace: {ns}}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: Gateway, namespace: default}}]\n  to: [{to}]\n")
    };
    api.apply(&grant("certs-all", "{group: \"\", kind: Secret}"));
    api.apply(&grant(
        "certs-one",
        "{group: \"\", kind: Secret, name: certificate}",
    ));
    api.apply(&grant(
        "certs-wrong",
        "{group: \"\", kind: Secret, name: another}",
    ));
    api.apply("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: secrets, namespace: default}\nspec:\n  gatewayClassName: weir\n  listeners:\n  - {name: all, protocol: HTTPS, port: 443, hostname: all.example.com, tls: {certificateRefs: [{name: certificate, namespace: certs-all}]}}\n  - {name: one, protocol: HTTPS, port: 443, hostname: one.example.com, tls: {certificateRefs: [{name: certificate, namespace: certs-one}]}}\n  - {name: wrong, protocol: HTTPS, port: 443, hostname: wrong.example.com, tls: {certificateRefs: [{name: certificate, namespace: certs-wrong}]}}\n");
    let listeners = eventually(Duration::from_secs(10), "the listeners' status", || async {
        let gw = api.get(
            "gateway.networking.k8s.io/v1",
            "Gateway",
            "default",
            "secrets",
        )?;
        let listeners = gw["status"]["listeners"].as_array()?.clone();
        (listeners.len() == 3).then_some(listeners)
    })
    .await;
    let reason = |name: &str, kind: &str| {
        let listener = listeners.iter().find(|l| l["name"] == name).unwrap();
        let c = condition(&listener["conditions"], kind);
        (
            c["status"].as_str().unwrap_or_default().to_string(),
            c["reason"].as_str().unwrap_or_default().to_string(),
        )
    };
    for name in ["all", "one"] {
        assert_eq!(
            reason(name, "ResolvedRefs"),
            pair("True", "ResolvedRefs"),
            "{name}"
        );
        assert_eq!(
            reason(name, "Programmed"),
            pair("True", "Programmed"),
            "{name}"
        );
    }
    assert_eq!(
        reason("wrong", "ResolvedRefs"),
        pair("False", "RefNotPermitted")
    );
    assert_eq!(reason("wrong", "Programmed").0, "False");
}

/// GatewayWithAttachedRoutesWithPort8080: a listener on port 8080 beside one on 80, a route
/// attached to the latter by sectionName: both listeners are accepted and resolved, each
/// counting the routes attached to it alone.
#[tokio::test]
async fn gateway_with_attached_routes_with_port_8080() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    api.apply("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gateway-with-two-listeners-and-one-attached-route, namespace: default}\nspec:\n  gatewayClassName: weir\n  listeners:\n  - {name: http-unattached, port: 8080, protocol: HTTP, allowedRoutes: {kinds: [{kind: HTTPRoute}], namespaces: {from: All}}}\n  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {kinds: [{kind: HTTPRoute}], namespaces: {from: All}}}\n");
    api.apply(&service("app", &[&cluster.app]));
    api.apply("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: http-route-4-port8080, namespace: default}\nspec:\n  parentRefs: [{name: gateway-with-two-listeners-and-one-attached-route, sectionName: http}]\n  rules:\n  - backendRefs: [{name: app, port: 80}]\n");
    let listeners = eventually(Duration::from_secs(10), "the listeners' status", || async {
        let gw = api.get(
            "gateway.networking.k8s.io/v1",
            "Gateway",
            "default",
            "gateway-with-two-listeners-and-one-attached-route",
        )?;
        let listeners = gw["status"]["listeners"].as_array()?.clone();
        let attached = |name: &str| {
            listeners
                .iter()
                .find(|l| l["name"] == name)
                .map(|l| l["attachedRoutes"].clone())
        };
        (attached("http")? == 1 && attached("http-unattached")? == 0).then_some(listeners)
    })
    .await;
    assert_eq!(listeners.len(), 2);
    for listener in &listeners {
        let name = &listener["name"];
        assert_eq!(
            listener["supportedKinds"],
            serde_json::json!([{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}]),
            "{name}"
        );
        for kind in ["Accepted", "ResolvedRefs", "Programmed"] {
            assert_eq!(
                condition(&listener["conditions"], kind)["status"],
                "True",
                "{name} {kind}"
            );
        }
    }
}

/// A BackendTLSPolicy in the cluster: its CA ConfigMap is watched by name, the gateway speaks
/// TLS to the Service, and the policy's status names the Gateway as its ancestor, accepted and
/// resolved; a policy whose ConfigMap does not exist says `InvalidCACertificateRef` and
/// `NoValidCACertificate` (its Service is not reached in plaintext), as upstream's
/// BackendTLSPolicyInvalidCACertificateRef and BackendTLSPolicyInvalidKind check.
#[tokio::test]
async fn a_backend_tls_policy_in_the_cluster_is_served_and_gets_its_status() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    let pki = Pki::new();
    let secure = weir_e2e::tls::https_echo(
        "secure",
        &pki.issue(&["secure.internal"], KeyType::Ecdsa),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await;
    for name in ["secure", "broken"] {
        api.apply(&weir_e2e::service_with(name, &[(secure, true)], ""));
        api.apply(&http_route(
            name,
            &[&format!("{name}.example.com")],
            &format!("  - backendRefs: [{{name: {name}, port: 80}}]\n"),
        ));
    }
    api.apply(&ca_config_map("secure-ca", &pki.ca_pem()));
    let policy = |name: &str, config_map: &str| {
        format!("apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  targetRefs: [{{group: \"\", kind: Service, name: {name}}}]\n  validation:\n    caCertificateRefs: [{{group: \"\", kind: ConfigMap, name: {config_map}}}]\n    hostname: secure.internal\n")
    };
    api.apply(&policy("secure", "secure-ca"));
    api.apply(&policy("broken", "nonexistent"));
    let weir = &cluster.weir;
    eventually(Duration::from_secs(10), "TLS to the backend", || async {
        let reply = weir.get("secure.example.com", "/").await;
        (reply.status == 200 && reply.backend() == "secure").then_some(())
    })
    .await;
    assert!(weir
        .get("broken.example.com", "/")
        .await
        .status
        .is_server_error());
    let ancestor = |name: &'static str| async move {
        let policy = api.get(
            "gateway.networking.k8s.io/v1",
            "BackendTLSPolicy",
            "default",
            name,
        )?;
        let ancestor = policy["status"]["ancestors"].get(0)?.clone();
        Some(ancestor)
    };
    let secure_status = eventually(Duration::from_secs(10), "the policy's status", || {
        ancestor("secure")
    })
    .await;
    assert_eq!(
        secure_status["ancestorRef"]["name"], "gw",
        "{secure_status}"
    );
    assert_eq!(
        secure_status["controllerName"],
        "weir.dev/gateway-controller"
    );
    for kind in ["Accepted", "ResolvedRefs"] {
        assert_eq!(
            condition(&secure_status["conditions"], kind)["status"],
            "True",
            "{kind}: {secure_status}"
        );
    }
    let broken = eventually(
        Duration::from_secs(10),
        "the broken policy's status",
        || ancestor("broken"),
    )
    .await;
    let resolved = condition(&broken["conditions"], "ResolvedRefs");
    assert_eq!(resolved["status"], "False", "{broken}");
    assert_eq!(resolved["reason"], "InvalidCACertificateRef", "{broken}");
    let accepted = condition(&broken["conditions"], "Accepted");
    assert_eq!(accepted["status"], "False", "{broken}");
    assert_eq!(accepted["reason"], "NoValidCACertificate", "{broken}");
    // BackendTLSPolicyInvalidKind: a CA reference of a kind Weir does not read.
    api.apply(&policy("broken", "odd").replace(
        "{group: \"\", kind: ConfigMap, name: odd}",
        "{group: invalid.io, kind: InvalidKind, name: odd}",
    ));
    let odd = eventually(
        Duration::from_secs(10),
        "the InvalidKind status",
        || async {
            let a = ancestor("broken").await?;
            (condition(&a["conditions"], "ResolvedRefs")["reason"] == "InvalidKind").then_some(a)
        },
    )
    .await;
    assert_eq!(
        condition(&odd["conditions"], "Accepted")["reason"],
        "NoValidCACertificate",
        "{odd}"
    );
    assert!(weir
        .get("broken.example.com", "/")
        .await
        .status
        .is_server_error());
}

/// GatewayInvalidFrontendClientCertificateValidation: a listener whose port's client CA
/// certificates cannot be had (a ConfigMap that does not exist, a kind Weir does not read, a
/// ConfigMap in another namespace without a ReferenceGrant) is not accepted
/// (`NoValidCACertificate`) and says why in `ResolvedRefs`; the listener with a good one is;
/// and AllowInsecureFallback puts `InsecureFrontendValidationMode` on the Gateway.
#[tokio::test]
async fn gateway_invalid_frontend_client_certificate_validation() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    let pki = Pki::new();
    api.apply(&tls_secret(
        "server-cert",
        &pki.issue(&["example.org"], KeyType::Ecdsa),
    ));
    api.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: web-backend-cm}\n");
    for (namespace, name) in [
        ("default", "tls-validity-checks-ca-certificate"),
        ("web-backend-cm", "gateway-conformance-web-backend"),
    ] {
        let map = ca_config_map(name, &pki.ca_pem());
        api.apply(&map.replace("namespace: default", &format!("namespace: {namespace}")));
    }
    let listener = |name: &str, port: u16, host: &str| {
        format!("  - {{name: {name}, port: {port}, protocol: HTTPS, hostname: {host}, tls: {{certificateRefs: [{{name: server-cert}}]}}}}\n")
    };
    api.apply(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gateway-with-invalid-client-cert-validation, namespace: default}}\nspec:\n  gatewayClassName: weir\n  tls:\n    frontend:\n      default:\n        validation:\n          caCertificateRefs: [{{group: \"\", kind: ConfigMap, name: tls-validity-checks-ca-certificate}}]\n      perPort:\n      - {{port: 7443, tls: {{validation: {{caCertificateRefs: [{{group: \"\", kind: ConfigMap, name: non-exisitng-cm}}]}}}}}}\n      - {{port: 8443, tls: {{validation: {{caCertificateRefs: [{{group: \"\", kind: Service, name: infra-backend-v2}}]}}}}}}\n      - {{port: 6443, tls: {{validation: {{caCertificateRefs: [{{group: \"\", kind: ConfigMap, name: gateway-conformance-web-backend, namespace: web-backend-cm}}]}}}}}}\n  listeners:\n{}{}{}{}",
        listener("https", 443, "example.org"),
        listener("https-unresolved", 7443, "first-example.org"),
        listener("https-invalid-kind", 8443, "second-example.org"),
        listener("https-grant-missing", 6443, "fourth-example.org"),
    ));
    let listeners = eventually(Duration::from_secs(10), "the listeners' status", || async {
        let gw = api.get(
            "gateway.networking.k8s.io/v1",
            "Gateway",
            "default",
            "gateway-with-invalid-client-cert-validation",
        )?;
        let listeners = gw["status"]["listeners"].as_array()?.clone();
        (listeners.len() == 4).then_some(listeners)
    })
    .await;
    let reason = |name: &str, kind: &str| listener_reason(&listeners, name, kind);
    for kind in ["Accepted", "ResolvedRefs", "Programmed"] {
        assert_eq!(reason("https", kind).0, "True", "https {kind}");
    }
    for (name, why) in [
        ("https-unresolved", "InvalidCACertificateRef"),
        ("https-invalid-kind", "InvalidCACertificateKind"),
        ("https-grant-missing", "RefNotPermitted"),
    ] {
        assert_eq!(reason(name, "ResolvedRefs"), pair("False", why), "{name}");
        assert_eq!(
            reason(name, "Accepted"),
            pair("False", "NoValidCACertificate"),
            "{name}"
        );
        assert_eq!(reason(name, "Programmed").0, "False", "{name}");
    }

    // AllowInsecureFallback: the Gateway says so.
    api.apply("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: client-validation-insecure-fallback, namespace: default}\nspec:\n  gatewayClassName: weir\n  tls:\n    frontend:\n      default:\n        validation:\n          mode: AllowInsecureFallback\n          caCertificateRefs: [{group: \"\", kind: ConfigMap, name: tls-validity-checks-ca-certificate}]\n  listeners:\n  - {name: https, port: 443, protocol: HTTPS, hostname: fallback.example.org, tls: {certificateRefs: [{name: server-cert}]}}\n");
    let gateway = eventually(
        Duration::from_secs(10),
        "the fallback condition",
        || async {
            let gw = api.get(
                "gateway.networking.k8s.io/v1",
                "Gateway",
                "default",
                "client-validation-insecure-fallback",
            )?;
            (condition(
                &gw["status"]["conditions"],
                "InsecureFrontendValidationMode",
            )["status"]
                == "True")
                .then_some(gw)
        },
    )
    .await;
    assert_eq!(
        condition(
            &gateway["status"]["conditions"],
            "InsecureFrontendValidationMode"
        )["reason"],
        "ConfigurationChanged"
    );
}

/// BackendTLSPolicyObservedGenerationBump and BackendTLSPolicyPreserveForeignStatus: the
/// ancestor conditions Weir writes carry the policy's generation, and follow it when the spec
/// changes; an ancestor entry another controller wrote is kept beside Weir's.
#[tokio::test]
async fn backend_tls_policy_status_follows_its_generation_and_keeps_foreign_entries() {
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    let pki = Pki::new();
    api.apply(&ca_config_map("app-ca", &pki.ca_pem()));
    let foreign = "status:\n  ancestors:\n  - ancestorRef: {group: gateway.networking.k8s.io, kind: Gateway, name: their-gateway, namespace: default}\n    controllerName: example.com/another-controller\n    conditions:\n    - {type: Accepted, status: \"True\", reason: Accepted, message: theirs, lastTransitionTime: \"2026-01-01T00:00:00Z\", observedGeneration: 1}\n";
    let policy = |hostname: &str| {
        format!("apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {{name: app, namespace: default}}\nspec:\n  targetRefs: [{{group: \"\", kind: Service, name: app}}]\n  validation:\n    caCertificateRefs: [{{group: \"\", kind: ConfigMap, name: app-ca}}]\n    hostname: {hostname}\n{foreign}")
    };
    api.apply(&policy("app.internal"));
    // Weir's entry, with the generation it saw, once it has written one for `generation`.
    let ours = |generation: i64| async move {
        let policy = api.get(
            "gateway.networking.k8s.io/v1",
            "BackendTLSPolicy",
            "default",
            "app",
        )?;
        let ancestors = policy["status"]["ancestors"].as_array()?.clone();
        let entry = ancestors
            .iter()
            .find(|a| a["controllerName"] == "weir.dev/gateway-controller")?
            .clone();
        let seen = condition(&entry["conditions"], "Accepted")["observedGeneration"].as_i64();
        (policy["metadata"]["generation"].as_i64() == Some(generation) && seen == Some(generation))
            .then_some(ancestors)
    };
    // Generous: under a full test run on two cores, the status writer can lag (a busy
    // machine delays its Lease renewal and the compile it waits for).
    let first = eventually(Duration::from_secs(30), "generation 1", || ours(1)).await;
    api.apply(&policy("other.internal"));
    let second = eventually(Duration::from_secs(30), "generation 2", || ours(2)).await;
    for ancestors in [first, second] {
        let theirs = ancestors
            .iter()
            .find(|a| a["controllerName"] == "example.com/another-controller");
        let theirs = theirs.unwrap_or_else(|| panic!("the foreign entry is gone: {ancestors:?}"));
        assert_eq!(theirs["ancestorRef"]["name"], "their-gateway");
        assert_eq!(
            condition(&theirs["conditions"], "Accepted")["message"],
            "theirs"
        );
    }
}
