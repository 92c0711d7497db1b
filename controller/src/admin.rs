//! The admin listener: `/healthz`, `/readyz` (a snapshot has been compiled), `/metrics`, and
//! `/status` (the last compile: version, refused objects with their errors, warnings).
//!
//! The health pages and `/metrics` are served to any peer (the kubelet and Prometheus reach
//! the pod's address); `/status` names every refused object and why, so it is served only to
//! a peer on loopback (inside the pod, or `kubectl port-forward`).

use std::{net::SocketAddr, sync::Arc};

use axum::{
    extract::{ConnectInfo, State},
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
    (
        [("content-type", "text/plain; version=0.0.4")],
        controller.metrics.render(),
    )
}

async fn status(
    State(controller): State<Arc<Controller>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    if !peer.ip().to_canonical().is_loopback() {
        return (
            StatusCode::FORBIDDEN,
            "/status is served on loopback only: /healthz /readyz /metrics are served here\n",
        )
            .into_response();
    }
    Json(controller.status()).into_response()
}
