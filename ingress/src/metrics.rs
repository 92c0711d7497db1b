//! The gateway's own Prometheus series — authentication, JWKS fetches, rate limits — in the
//! engine's registry beside the engine's, so `/metrics` shows them all.

use prometheus::{IntCounterVec, Opts, Registry};
use weir_http::metrics::registered;

/// What the guards of routes decided.
#[derive(Clone, Debug)]
pub struct GuardMetrics {
    /// Authentication decisions by result (`allowed`, `anonymous`, `missing`, `invalid`,
    /// `forbidden`).
    pub auth_decisions: IntCounterVec,
    /// JWKS fetches by provider and result (`ok`, `error`).
    pub jwks_fetches: IntCounterVec,
    /// Rate-limit decisions by limit and result (`allowed`, `limited`, `fallback`,
    /// `unavailable`).
    pub rate_limit_decisions: IntCounterVec,
}

impl GuardMetrics {
    /// The series, registered in `registry`.
    #[allow(clippy::expect_used)] // constant names, labels and help: valid by construction
    pub fn register(registry: &Registry) -> Self {
        let vec = |name: &str, help: &str, labels: &[&str]| {
            let vec = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registered(registry, vec)
        };
        Self {
            auth_decisions: vec(
                "weir_auth_decisions_total",
                "Authentication decisions, by result",
                &["result"],
            ),
            jwks_fetches: vec(
                "weir_jwks_fetches_total",
                "JWKS fetches, by provider and result",
                &["provider", "result"],
            ),
            rate_limit_decisions: vec(
                "weir_rate_limit_decisions_total",
                "Rate-limit decisions, by limit and result",
                &["limit", "result"],
            ),
        }
    }
}
