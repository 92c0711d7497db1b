//! Mesh mTLS from a [`WorkloadIdentity`]: both sides present the current workload certificate
//! and check the other's chain against the current trust bundle. Identities are SPIFFE IDs
//! (the only URI SAN of a workload certificate), never DNS names:
//! - inbound ([`server_config`]) requires a client certificate and lets the caller read its
//!   SPIFFE ID ([`peer_identity`]) for access policy;
//! - outbound ([`client_config`]) accepts a server only if its SPIFFE ID is one the
//!   configuration expects for that service.
//!
//! The certificate and the bundle are read at each handshake, so a renewal or a new root
//! applies to the next connection without touching open ones.

use std::sync::{Arc, Mutex};

use rustls::{
    client::ResolvesClientCert,
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
    Error, RootCertStore, SignatureScheme,
};
use rustls_pki_types::CertificateDer;

use crate::identity::{Issued, WorkloadIdentity};

mod dialer;
mod verify;

pub use dialer::Dialer;
use verify::{ClientVerifier, ServerVerifier};

/// ALPN of an mTLS connection that carries opaque TCP (not HTTP) to the peer's workload.
pub const OPAQUE_ALPN: &[u8] = b"weir-opaque";
/// ALPN of HTTP/2 and HTTP/1.1 over mesh mTLS: the protocol's own ids.
pub use weir_http::{H2_ALPN, HTTP1_ALPN};

/// `spiffe://TRUST_DOMAIN/ns/NS/sa/SA` for a `NS/SA` identity.
pub fn spiffe_uri(trust_domain: &str, namespace_account: &str) -> String {
    let (namespace, account) = namespace_account
        .split_once('/')
        .unwrap_or(("default", namespace_account));
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{account}")
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The SPIFFE ID of a workload certificate: its URI SAN starting with `spiffe://`.
pub fn spiffe_id(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) if uri.starts_with("spiffe://") => {
            Some(uri.to_string())
        }
        _ => None,
    })
}

/// The SPIFFE ID the peer of an mTLS connection proved.
pub fn peer_identity(peer_certificates: Option<&[CertificateDer<'_>]>) -> Option<String> {
    spiffe_id(peer_certificates?.first()?)
}

/// Serves (and presents) the current workload certificate.
#[derive(Debug)]
struct Current(Arc<WorkloadIdentity>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.current().map(|i| i.certified.clone())
    }
}

impl ResolvesClientCert for Current {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.current().map(|i| i.certified.clone())
    }

    fn has_certs(&self) -> bool {
        self.0.ready()
    }
}

fn roots(issued: &Issued) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for root in &issued.bundle {
        // A root that does not parse is simply not trusted.
        let _ = roots.add(root.clone());
    }
    roots
}

/// Inbound mTLS: presents the workload certificate and requires a client certificate from
/// the same trust bundle, with a SPIFFE ID.
pub fn server_config(identity: Arc<WorkloadIdentity>) -> Result<rustls::ServerConfig, Error> {
    let provider = provider();
    let verifier = Arc::new(ClientVerifier {
        identity: identity.clone(),
        algorithms: provider.signature_verification_algorithms,
        cached: Mutex::default(),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(Current(identity)));
    config.alpn_protocols = vec![H2_ALPN.to_vec(), HTTP1_ALPN.to_vec(), OPAQUE_ALPN.to_vec()];
    Ok(config)
}

/// Outbound mTLS to a service whose endpoints must prove one of the `expected` SPIFFE IDs.
pub fn client_config(
    identity: Arc<WorkloadIdentity>,
    expected: Vec<String>,
) -> Result<rustls::ClientConfig, Error> {
    let provider = provider();
    let verifier = Arc::new(ServerVerifier {
        identity: identity.clone(),
        expected,
        algorithms: provider.signature_verification_algorithms,
    });
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(Current(identity))))
}

#[cfg(test)]
mod tests;
