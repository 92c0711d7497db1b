//! The two verifiers of mesh mTLS: a client certificate must chain to the current bundle
//! and carry a SPIFFE ID; a server's must also carry one of the SPIFFE IDs expected of it.

use std::sync::{Arc, Mutex};

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::WebPkiSupportedAlgorithms,
    server::{
        danger::{ClientCertVerified, ClientCertVerifier},
        ParsedCertificate, WebPkiClientVerifier,
    },
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::{provider, roots, spiffe_id};
use crate::identity::{Issued, WorkloadIdentity};

/// Checks client certificates against the current bundle; the WebPKI verifier is rebuilt only
/// when the certificate (and with it the bundle) changes.
#[derive(Debug)]
pub(super) struct ClientVerifier {
    pub(super) identity: Arc<WorkloadIdentity>,
    pub(super) algorithms: WebPkiSupportedAlgorithms,
    pub(super) cached: Mutex<Option<Cached>>,
}

/// A verifier for the bundle of one issued certificate.
type Cached = (Arc<Issued>, Arc<dyn ClientCertVerifier>);

impl ClientVerifier {
    fn current(&self) -> Result<Arc<dyn ClientCertVerifier>, Error> {
        let issued = self
            .identity
            .current()
            .ok_or_else(|| Error::General("no workload certificate yet".into()))?;
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((for_issued, verifier)) = cached.as_ref() {
            if Arc::ptr_eq(for_issued, &issued) {
                return Ok(verifier.clone());
            }
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots(&issued).into(), provider())
                .build()
                .map_err(|e| Error::General(format!("trust bundle: {e}")))?;
        *cached = Some((issued, verifier.clone()));
        Ok(verifier)
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.current()?
            .verify_client_cert(end_entity, intermediates, now)?;
        if spiffe_id(end_entity).is_none() {
            return Err(refused("the certificate carries no SPIFFE ID"));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.current()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.current()?.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Why a certificate that verified is still not accepted.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn refused(message: impl Into<String>) -> Error {
    Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        Refused(message.into()),
    ))))
}

/// Checks a server's chain against the current bundle and its SPIFFE ID against `expected`.
#[derive(Debug)]
pub(super) struct ServerVerifier {
    pub(super) identity: Arc<WorkloadIdentity>,
    pub(super) expected: Vec<String>,
    pub(super) algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let issued = self
            .identity
            .current()
            .ok_or_else(|| Error::General("no workload certificate yet".into()))?;
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots(&issued),
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let id =
            spiffe_id(end_entity).ok_or_else(|| refused("the certificate carries no SPIFFE ID"))?;
        if !self.expected.contains(&id) {
            let message = format!(
                "the server is {id}, not one of {}",
                self.expected.join(", ")
            );
            return Err(refused(message));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
