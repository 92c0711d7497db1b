//! The admin listener: `/healthz` (the process is alive), `/readyz` (it has a configuration and
//! is not shutting down), `/config` (the active snapshot and the last reload's outcome; never
//! secrets) and `/metrics` (Prometheus text). A role adds its own readiness condition and
//! pages with [`Pages`].
//!
//! The listener is often bound to every address so that the kubelet's probes and Prometheus
//! reach it; what they need — the health pages, `/metrics` and the pages a role calls public
//! — is served to any peer. `/config` and every other debug page describe the mesh (every
//! service, endpoint and expected identity, the pod's policy) and are served only to a peer on
//! loopback: inside the pod, or `kubectl port-forward`.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
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

use crate::{config::Served, metrics::Metrics};
use weir_http::{
    body::{full, Body},
    server::Shutdown,
};

/// What the admin pages read.
#[derive(Clone)]
pub struct AdminState {
    /// The served configuration.
    pub store: Arc<dyn Served>,
    /// The process's metrics.
    pub metrics: Metrics,
    /// False once shutdown begins.
    pub accepting: Arc<AtomicBool>,
    /// The role's own readiness and pages.
    pub pages: Option<Arc<dyn Pages>>,
}

/// A response being made.
pub type Responding = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// What a role adds to the admin listener.
pub trait Pages: Send + Sync {
    /// Why the process is not ready yet, if it is not (besides having no configuration).
    fn not_ready(&self) -> Option<&'static str>;
    /// Answers a path the admin listener does not know, or `None` for 404.
    fn serve(&self, req: Request<Incoming>) -> Option<Responding>;
    /// Whether `path` may be served to a peer that is not on loopback (a health page the
    /// kubelet probes); every other page of the role is loopback only.
    fn public(&self, _path: &str) -> bool {
        false
    }
}

/// Serves the admin pages until `shutdown`.
pub async fn serve_admin(listener: TcpListener, state: AdminState, mut shutdown: Shutdown) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(_) => continue,
            },
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let state = state.clone();
        let local = peer.ip().to_canonical().is_loopback();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let response = handle(&state, req, local);
                async move { Ok::<_, Infallible>(response.await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Whether `path` is served to a peer off loopback.
fn public(state: &AdminState, path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
        || state.pages.as_ref().is_some_and(|p| p.public(path))
}

fn handle(state: &AdminState, req: Request<Incoming>, local: bool) -> Responding {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let refused = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n", "text/plain");
        return Box::pin(std::future::ready(refused));
    }
    if !local && !public(state, req.uri().path()) {
        let refused = text(
            StatusCode::FORBIDDEN,
            "this page is served on loopback only: /healthz /readyz /metrics are served here\n",
            "text/plain",
        );
        return Box::pin(std::future::ready(refused));
    }
    let not_ready = state.pages.as_ref().and_then(|p| p.not_ready());
    let page = match req.uri().path() {
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
            } else if let Some(why) = not_ready {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{why}\n"),
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
        _ => {
            if let Some(responding) = state.pages.as_ref().and_then(|p| p.serve(req)) {
                return responding;
            }
            text(
                StatusCode::NOT_FOUND,
                "not found: try /healthz /readyz /config /metrics\n",
                "text/plain",
            )
        }
    };
    Box::pin(std::future::ready(page))
}

/// A short response with a content type.
pub fn text(
    status: StatusCode,
    body: impl Into<Bytes>,
    content_type: &'static str,
) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
