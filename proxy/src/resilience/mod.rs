//! The resilience layer both roles share: what a TrafficPolicy asks of the data plane.
//!
//! - [`breaker`]: per-endpoint outlier detection (closed → open → half-open → closed);
//! - [`budget`]: the retry budget and backoff;
//! - [`ring`]: consistent hashing;
//! - [`health`]: active health checks;
//! - [`retry`]: the attempt loop that ties them to a request.

pub mod breaker;
pub mod budget;
pub mod health;
pub mod retry;
pub mod ring;
