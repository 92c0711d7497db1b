//! The injector's metrics and its admin listener (`/healthz`, `/metrics`).

use std::sync::Arc;

use axum::{extract::State, response::IntoResponse, routing::get, Router};
use prometheus::{Encoder, Histogram, HistogramOpts, IntCounterVec, Opts, Registry, TextEncoder};
use serde_json::Value;
use tokio::net::TcpListener;

/// What the injector counts.
pub struct Metrics {
    registry: Registry,
    /// `weir_injector_reviews_total{outcome}`: injected, skipped, refused, malformed.
    pub reviews: IntCounterVec,
    /// `weir_injector_review_seconds`: from the body read to the answer encoded.
    pub review_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let reviews = IntCounterVec::new(
            Opts::new(
                "weir_injector_reviews_total",
                "AdmissionReviews answered, by outcome",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let review_seconds = Histogram::with_opts(
            HistogramOpts::new("weir_injector_review_seconds", "Time to answer a review").buckets(
                vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05],
            ),
        )
        .expect("valid metric");
        registry
            .register(Box::new(reviews.clone()))
            .expect("registers once");
        registry
            .register(Box::new(review_seconds.clone()))
            .expect("registers once");
        Self {
            registry,
            reviews,
            review_seconds,
        }
    }
}

impl Metrics {
    /// Counts one answered review by what it says.
    pub fn count(&self, answer: &Value) {
        let response = &answer["response"];
        let outcome = if response["uid"].as_str().unwrap_or_default().is_empty() {
            "malformed"
        } else if response["allowed"] == false {
            "refused"
        } else if response["patch"].is_string() {
            "injected"
        } else {
            "skipped"
        };
        self.reviews.with_label_values(&[outcome]).inc();
    }

    fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Serves `/healthz` and `/metrics` until the process ends.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(render))
        .with_state(metrics);
    axum::serve(listener, router).await
}

async fn render(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        metrics.render(),
    )
}
