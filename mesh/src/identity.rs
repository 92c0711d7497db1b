//! A workload's identity: a key made here (it never leaves the process), a certificate for
//! `spiffe://TRUST_DOMAIN/ns/NS/sa/SA` from the controller's `Identity.Certify`, and the trust
//! bundle that came with it.
//!
//! The certificate is renewed at half its lifetime, so a controller away for up to half a
//! lifetime costs nothing; a failed renewal is retried with backoff while the current
//! certificate keeps serving, until it expires. Each renewal makes a new key. Whoever holds
//! [`WorkloadIdentity`] reads the current certificate at each handshake, so a renewal is picked
//! up without dropping connections.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwapOption;
use rcgen::{CertificateParams, KeyPair, SanType};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use weir_api::proto::{identity_client::IdentityClient, CertifyRequest};

use crate::control::{Backoff, ControlSettings};

/// First wait after a failed request; doubles up to 30 s.
const RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));

/// One issued certificate, with what came with it.
#[derive(Debug)]
pub struct Issued {
    /// The key and chain, as rustls serves them.
    pub certified: Arc<CertifiedKey>,
    /// The SPIFFE ID in it.
    pub spiffe_id: String,
    /// When it was issued (received), and when it expires.
    pub issued: SystemTime,
    /// Its `notAfter`.
    pub not_after: SystemTime,
    /// The roots peers' certificates are checked against.
    pub bundle: Vec<CertificateDer<'static>>,
}

impl Issued {
    /// When to renew: half way through its life.
    pub fn renew_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.issued)
            .unwrap_or_default();
        self.issued + life / 2
    }
}

/// The current identity, shared with whoever serves or dials mTLS.
#[derive(Debug, Default)]
pub struct WorkloadIdentity {
    current: ArcSwapOption<Issued>,
}

impl WorkloadIdentity {
    /// The current certificate, if there is one and it has not expired.
    pub fn current(&self) -> Option<Arc<Issued>> {
        self.current
            .load_full()
            .filter(|issued| issued.not_after > SystemTime::now())
    }

    /// Ready means: holding a valid certificate.
    pub fn ready(&self) -> bool {
        self.current().is_some()
    }

    /// Swaps in a new certificate; handshakes from now on use it.
    pub fn install(&self, issued: Arc<Issued>) {
        self.current.store(Some(issued));
    }
}

/// Keeps `identity` holding a valid certificate for `spiffe_id`, forever; `expiry` shows
/// when the current one expires.
pub async fn maintain(
    settings: ControlSettings,
    spiffe_id: String,
    identity: Arc<WorkloadIdentity>,
    expiry: prometheus::IntGauge,
) {
    let mut backoff = RETRY;
    loop {
        match certify(&settings, &spiffe_id).await {
            Ok(issued) => {
                let renew_at = issued.renew_at();
                tracing::info!(
                    %spiffe_id,
                    not_after = ?issued.not_after,
                    "workload certificate issued"
                );
                let not_after = issued
                    .not_after
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default();
                expiry.set(not_after.as_secs() as i64);
                identity.install(Arc::new(issued));
                backoff.reset();
                // A little jitter, so a fleet started together does not renew together.
                let wait = renew_at
                    .duration_since(SystemTime::now())
                    .unwrap_or_default()
                    .mul_f64(0.9 + 0.1 * fastrand::f64());
                tokio::time::sleep(wait).await;
            }
            Err(error) => {
                let left = identity
                    .current()
                    .and_then(|c| c.not_after.duration_since(SystemTime::now()).ok());
                tracing::warn!(%error, ?left, "certificate request failed; retrying");
                let wait = backoff.wait();
                tokio::time::sleep(left.map_or(wait, |left| wait.min(left))).await;
            }
        }
    }
}

/// A fresh P-256 key and a CSR (PEM) asking for `spiffe_id` as its only name.
pub fn csr(spiffe_id: &str) -> Result<(KeyPair, String), String> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("cannot make a key: {e}"))?;
    let mut params = CertificateParams::default();
    let uri = spiffe_id
        .to_string()
        .try_into()
        .map_err(|e| format!("{spiffe_id:?} is not a URI: {e}"))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|e| format!("cannot make the CSR: {e}"))?;
    Ok((key, csr))
}

/// One `Certify` call with a fresh key.
pub async fn certify(settings: &ControlSettings, spiffe_id: &str) -> Result<Issued, String> {
    let (key, csr) = csr(spiffe_id)?;

    let mut request = tonic::Request::new(CertifyRequest { csr_pem: csr });
    request
        .metadata_mut()
        .insert("authorization", settings.bearer()?);
    let channel = settings.channel().await?;
    let response = IdentityClient::new(channel)
        .certify(request)
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    if response.spiffe_id != spiffe_id {
        return Err(format!(
            "the controller issued {} instead of {spiffe_id}",
            response.spiffe_id
        ));
    }
    let chain = CertificateDer::pem_slice_iter(response.certificate_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate is not PEM: {e}"))?;
    let bundle = response
        .trust_bundle_pem
        .iter()
        .flat_map(|pem| CertificateDer::pem_slice_iter(pem.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the trust bundle is not PEM: {e}"))?;
    if chain.is_empty() || bundle.is_empty() {
        return Err("the controller sent no certificate or no trust bundle".into());
    }
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let certified = CertifiedKey::from_der(chain, private, &provider)
        .map_err(|e| format!("the certificate does not match the key: {e}"))?;
    let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(response.not_after.max(0) as u64);
    Ok(Issued {
        certified: Arc::new(certified),
        spiffe_id: spiffe_id.to_string(),
        issued: SystemTime::now(),
        not_after,
        bundle,
    })
}
