//! The admin listener: `/healthz`, `/readyz` (a snapshot has been compiled), `/metrics`, and
//! `/status` (the last compile: version, refused objects with their errors, warnings).

use std::sync::Arc;

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Json, Router};
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
    axum::serve(listener, router).await
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

async fn status(State(controller): State<Arc<Controller>>) -> impl IntoResponse {
    Json(controller.status())
}
