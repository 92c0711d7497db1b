//! weir-ingress as a library: the request pipeline and the north-south guards (auth and rate
//! limiting), shared by the binary and the benchmarks.

pub mod auth;
pub mod config_dir;
pub mod listeners;
pub mod metrics;
pub mod ratelimit;
pub mod security;
pub mod stack;

/// SHA-256 of `bytes`: token cache keys, API-key digests, rate-limit and JWKS identities.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}
