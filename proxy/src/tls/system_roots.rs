//! The TLS clients Weir dials public services with (a JWKS endpoint, an OpenTelemetry
//! collector): the system's trust roots (`SSL_CERT_FILE` and `SSL_CERT_DIR` override them), on
//! the workspace's one crypto provider.

use std::sync::Arc;

use hyper_rustls::{builderstates::WantsSchemes, HttpsConnectorBuilder};

/// A connector builder trusting the system's roots; with none found, one that trusts nothing
/// (its TLS connections fail, and `what` says in the log what that breaks).
pub fn system_roots(what: &str) -> HttpsConnectorBuilder<WantsSchemes> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    match HttpsConnectorBuilder::new().with_provider_and_native_roots(provider) {
        Ok(builder) => builder,
        Err(e) => {
            tracing::error!(error = %e, "no trusted root certificates found: {what}");
            let config = rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            HttpsConnectorBuilder::new().with_tls_config(config)
        }
    }
}
