//! The admin listener: `/healthz` (the process is alive), `/readyz` (it has a configuration and
//! is not shutting down), `/config` (the active snapshot and the last reload's outcome; never
//! secrets) and `/metrics` (Prometheus text).

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::{
    body::{full, Body},
    config::ConfigStore,
    metrics::Metrics,
    server::Shutdown,
};

/// What the admin pages read.
#[derive(Clone)]
pub struct AdminState {
    /// The served configuration.
    pub store: Arc<ConfigStore>,
    /// The process's metrics.
    pub metrics: Metrics,
    /// False once shutdown begins.
    pub accepting: Arc<AtomicBool>,
}

/// Serves the admin pages until `shutdown`.
pub async fn serve_admin(listener: TcpListener, state: AdminState, mut shutdown: Shutdown) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(_) => continue,
            },
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let response = handle(&state, &req);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn handle(state: &AdminState, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n", "text/plain");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n", "text/plain"),
        "/readyz" => {
            if !state.accepting.load(Ordering::Relaxed) {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shutting down\n",
                    "text/plain",
                )
            } else if !state.store.loaded() {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no configuration yet\n",
                    "text/plain",
                )
            } else {
                text(StatusCode::OK, "ready\n", "text/plain")
            }
        }
        "/config" => {
            let body = serde_json::to_string_pretty(&state.store.describe()).unwrap_or_default();
            text(StatusCode::OK, body, "application/json")
        }
        "/metrics" => text(
            StatusCode::OK,
            state.metrics.render(),
            "text/plain; version=0.0.4",
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz /readyz /config /metrics\n",
            "text/plain",
        ),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
