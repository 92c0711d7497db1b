//! A cluster for the Kubernetes-mode tests: the test API server with the namespaces, a
//! backend, the Gateway and a route; the real `weir-controller --kubernetes` on it, and a real
//! `weir-ingress` connected to the controller with a token the API server reviews. With the
//! helpers that read the status the controller writes back.

use std::{path::PathBuf, time::Duration};

use serde_json::Value;

use crate::{
    apiserver::ApiServer, eventually, gateway, http_route, service, Controller, Echo, Weir,
};

pub const NAMESPACES: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: weir-system}\n";
pub const INGRESS_TOKEN: &str = "projected-token-of-weir-ingress";

pub fn route(name: &str, host: &str) -> String {
    http_route(name, &[host], "  - backendRefs: [{name: app, port: 80}]\n")
}

pub struct Cluster {
    pub api: ApiServer,
    pub dir: PathBuf,
    pub app: Echo,
    pub controller: Controller,
    pub weir: Weir,
}

/// A cluster with one backend, the Gateway and a route for shop.example.com; the controller
/// on it and an ingress connected to the controller.
pub async fn cluster(extra: &[&str]) -> Cluster {
    cluster_on(ApiServer::start(), extra).await
}

/// [`cluster`] on a given API server.
pub async fn cluster_on(api: ApiServer, extra: &[&str]) -> Cluster {
    let cluster = unready_cluster(api, extra);
    cluster.weir.wait_ready_config().await;
    cluster
}

/// [`cluster_on`], not waiting for the ingress to have a configuration.
pub fn unready_cluster(api: ApiServer, extra: &[&str]) -> Cluster {
    let app = Echo::start("app");
    api.apply(NAMESPACES);
    api.apply(&service("app", &[&app]));
    api.apply(&gateway());
    api.apply(&route("shop", "shop.example.com"));
    api.add_token(INGRESS_TOKEN, "weir-system", "weir-ingress", &["weir"]);
    let dir = std::env::temp_dir().join(format!("weir-k8s-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let mut args = vec![
        "--status-address",
        "203.0.113.7",
        "--pod-name",
        "controller-0",
    ];
    args.extend(extra);
    let controller = Controller::start_kubernetes(&api, &dir, &args);
    let token = dir.join("ingress-token");
    std::fs::write(&token, INGRESS_TOKEN).unwrap();
    let weir = Weir::connect(&controller, &token, &[]);
    Cluster {
        api,
        dir,
        app,
        controller,
        weir,
    }
}

pub async fn status_of(weir: &Weir, host: &str) -> u16 {
    weir.get(host, "/").await.status.as_u16()
}

/// `(status, reason)` of condition `kind` of listener `name`.
pub fn listener_reason(listeners: &[Value], name: &str, kind: &str) -> (String, String) {
    let listener = listeners.iter().find(|l| l["name"] == name).unwrap();
    reason(&listener["conditions"], kind)
}

/// `(status, reason)` of condition `kind` among `conditions`.
pub fn reason(conditions: &Value, kind: &str) -> (String, String) {
    let c = condition(conditions, kind);
    pair(
        c["status"].as_str().unwrap_or_default(),
        c["reason"].as_str().unwrap_or_default(),
    )
}

pub fn pair(status: &str, reason: &str) -> (String, String) {
    (status.to_string(), reason.to_string())
}

pub fn condition<'a>(conditions: &'a Value, kind: &str) -> &'a Value {
    conditions
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

/// An HTTPRoute's Weir parent status (its `Accepted` and `ResolvedRefs` conditions), once the
/// status writer has written it with `Accepted` = `accepted`.
pub async fn route_conditions(
    api: &ApiServer,
    namespace: &str,
    name: &str,
    accepted: &str,
) -> Value {
    conditions_of(api, "HTTPRoute", namespace, name, accepted).await
}

/// [`route_conditions`] for a route of any kind.
pub async fn conditions_of(
    api: &ApiServer,
    kind: &str,
    namespace: &str,
    name: &str,
    accepted: &str,
) -> Value {
    let what = format!("{kind} {namespace}/{name} with Accepted={accepted}");
    eventually(Duration::from_secs(10), &what, || async {
        let route = api.get("gateway.networking.k8s.io/v1", kind, namespace, name)?;
        let parent = route["status"]["parents"]
            .as_array()?
            .iter()
            .find(|p| p["controllerName"] == "weir.dev/gateway-controller")?
            .clone();
        (condition(&parent["conditions"], "Accepted")["status"] == accepted)
            .then_some(parent["conditions"].clone())
    })
    .await
}
