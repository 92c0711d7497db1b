//! The admin listener: `/healthz`, `/readyz` (a snapshot has been compiled), `/metrics`,
//! `/status` (the last compile: version, refused objects with their errors, warnings),
//! `/nodes` (every connected node: role, pod, versions applied and refused, certificate
//! expiry, last seen) and `/nodes/NAMESPACE/POD` (its latest view, secrets
//! redacted), which `weirctl status` and `weirctl config` read.
//!
//! The health pages and `/metrics` are served to any peer (the kubelet and Prometheus reach
//! the pod's address); the rest name refused objects, nodes and their configurations, so they
//! are served only to a peer on loopback (inside the pod, or `kubectl port-forward`).

use std::{net::SocketAddr, sync::Arc};

use axum::{
    extract::{ConnectInfo, Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use tokio::net::TcpListener;

use crate::Controller;

/// Serves the admin pages until the process ends.
pub async fn serve(listener: TcpListener, controller: Arc<Controller>) -> std::io::Result<()> {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/nodes", get(nodes))
        .route("/nodes/{namespace}/{pod}", get(node_config))
        .with_state(controller);
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}

async fn ready(State(controller): State<Arc<Controller>>) -> impl IntoResponse {
    if controller.ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no snapshot compiled yet\n",
        )
    }
}

async fn metrics(State(controller): State<Arc<Controller>>) -> impl IntoResponse {
    let (behind, refusing) = (
        &controller.metrics.nodes_behind,
        &controller.metrics.refusing_nodes,
    );
    for role in ["ingress", "sidecar"] {
        behind.with_label_values(&[role]).set(0);
        refusing.with_label_values(&[role]).set(0);
    }
    for (role, (late, refused)) in controller.nodes.by_role() {
        behind.with_label_values(&[&role]).set(late);
        refusing.with_label_values(&[&role]).set(refused);
    }
    if let Some(expiry) = controller.authority.roots_expire() {
        controller.metrics.ca_expiry.set(expiry);
    }
    (
        [("content-type", "text/plain; version=0.0.4")],
        controller.metrics.render(),
    )
}

/// What names refused objects, nodes and their configurations is for a peer on loopback.
fn loopback_only(peer: SocketAddr, page: &str) -> Option<Response> {
    (!peer.ip().to_canonical().is_loopback()).then(|| {
        let message = format!(
            "{page} is served on loopback only: /healthz /readyz /metrics are served here\n"
        );
        (StatusCode::FORBIDDEN, message).into_response()
    })
}

async fn status(
    State(controller): State<Arc<Controller>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    if let Some(refused) = loopback_only(peer, "/status") {
        return refused;
    }
    Json(controller.status()).into_response()
}

/// Every connected node (`weirctl status`).
async fn nodes(
    State(controller): State<Arc<Controller>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    if let Some(refused) = loopback_only(peer, "/nodes") {
        return refused;
    }
    let status = controller.status();
    Json(serde_json::json!({
        "version": status.version,
        "nodes": controller.nodes.list(),
    }))
    .into_response()
}

/// A node's latest view, decoded, secrets redacted (`weirctl config`).
async fn node_config(
    State(controller): State<Arc<Controller>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((namespace, pod)): Path<(String, String)>,
) -> Response {
    if let Some(refused) = loopback_only(peer, "/nodes/NAMESPACE/POD") {
        return refused;
    }
    let Some((role, view)) = controller.nodes.view_of(&namespace, &pod, None) else {
        let message = format!("no node {namespace}/{pod} is connected, or it has no view yet\n");
        return (StatusCode::NOT_FOUND, message).into_response();
    };
    let decoded = match role.as_str() {
        "ingress" => weir_api::wire::decode(view.encoding, &view.payload)
            .and_then(|s| serde_json::to_value(s).map_err(|e| e.to_string())),
        _ => weir_api::wire::decode_view::<weir_api::model::SidecarView>(
            weir_api::wire::SIDECAR_ENCODING,
            view.encoding,
            &view.payload,
        )
        .and_then(|s| serde_json::to_value(s).map_err(|e| e.to_string())),
    };
    match decoded {
        // JSON redacts secrets (keys, API keys): they never leave the controller.
        Ok(config) => Json(serde_json::json!({
            "node": format!("{namespace}/{pod}"),
            "role": role,
            "version": view.version,
            "config": config,
        }))
        .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
