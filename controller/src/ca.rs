//! The certificate authority: signs workload certificates (X.509 SVIDs) for the SPIFFE ID a
//! caller has proved, and the controller's own serving certificate.
//!
//! A CSR is only a carrier for the public key and a proof that the caller holds the private
//! key. Nothing else in it is copied: the certificate is built here, with exactly one URI SAN
//! (the proven SPIFFE ID), `CA:FALSE`, `digitalSignature`, and server + client auth.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use rustls_pki_types::{pem::PemObject, CertificateSigningRequestDer};
use time::OffsetDateTime;
use x509_parser::{
    certification_request::X509CertificationRequest,
    extensions::{GeneralName, ParsedExtension},
    oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ED25519},
    prelude::FromDer,
};

use crate::identity::ServiceAccount;

/// How long a generated root lives.
const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates start this far in the past, for peers whose clocks are a little behind.
const BACKDATE: Duration = Duration::from_secs(60);

/// Why a CSR was refused: said to the caller as is.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    /// The request could not be read.
    #[error("the CSR is not a PEM PKCS#10 request: {0}")]
    Malformed(String),
    /// The signature does not verify with the request's own key.
    #[error("the CSR's signature does not verify with its key")]
    BadSignature,
    /// A key type other than P-256 or Ed25519.
    #[error("key type {0} is not allowed: use ECDSA P-256 or Ed25519")]
    KeyType(String),
    /// The SPIFFE ID asked for is not the caller's.
    #[error("the CSR asks for {asked}, but the caller proved {proven}")]
    WrongIdentity {
        /// What the CSR asked for.
        asked: String,
        /// What the token proved.
        proven: String,
    },
    /// Names other than the one URI, or a CA request.
    #[error("the CSR asks for more than its SPIFFE ID: {0}")]
    ExtraNames(String),
}

/// A signed workload certificate.
#[derive(Debug)]
pub struct Issued {
    /// The leaf, PEM.
    pub certificate_pem: String,
    /// The SPIFFE ID in it.
    pub spiffe_id: String,
    /// Expiry, Unix seconds.
    pub not_after: i64,
}

/// A root certificate and key, PEM.
pub struct Root {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

impl Root {
    /// A new P-256 root for `trust_domain`, valid for ten years.
    pub fn generate(trust_domain: &str) -> anyhow::Result<Self> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "weir");
        params.distinguished_name.push(
            DnType::CommonName,
            format!("Weir root CA for {trust_domain}"),
        );
        // Workload certificates are signed by the root itself: no intermediates below it.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + ROOT_LIFETIME;
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The signing side of the CA.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    bundle: Vec<String>,
    trust_domain: String,
    lifetime: Duration,
}

impl Authority {
    /// An authority signing with `root`. The trust bundle is `root` plus `extra_roots` (the
    /// old or the next root during a rotation).
    pub fn new(
        root: &Root,
        extra_roots: Vec<String>,
        trust_domain: &str,
        lifetime: Duration,
    ) -> anyhow::Result<Self> {
        let key = KeyPair::from_pem(&root.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&root.cert_pem, key)?;
        let mut bundle = vec![root.cert_pem.clone()];
        bundle.extend(extra_roots);
        Ok(Self {
            issuer,
            bundle,
            trust_domain: trust_domain.to_string(),
            lifetime,
        })
    }

    /// The roots peers check chains against, PEM.
    pub fn bundle(&self) -> &[String] {
        &self.bundle
    }

    /// When the first of the trust bundle's roots expires (Unix seconds); `None` when none
    /// can be read.
    pub fn roots_expire(&self) -> Option<i64> {
        self.bundle
            .iter()
            .flat_map(|pem| x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()))
            .filter_map(|block| {
                let block = block.ok()?;
                let cert = block.parse_x509().ok()?;
                Some(cert.validity().not_after.timestamp())
            })
            .min()
    }

    /// The trust domain of the SPIFFE IDs it signs.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Signs `csr_pem` for `caller`, or says why not.
    pub fn certify(&self, csr_pem: &str, caller: &ServiceAccount) -> Result<Issued, Refused> {
        let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
            .map_err(|e| Refused::Malformed(e.to_string()))?;
        let (rest, csr) = X509CertificationRequest::from_der(der.as_ref())
            .map_err(|e| Refused::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(Refused::Malformed("trailing bytes".into()));
        }
        csr.verify_signature().map_err(|_| Refused::BadSignature)?;
        let spki = &csr.certification_request_info.subject_pki;
        check_key_type(spki)?;
        let expected = caller.spiffe_id(&self.trust_domain);
        check_names(&csr, &expected)?;

        let public_key = SubjectPublicKeyInfo::from_der(spki.raw)
            .map_err(|e| Refused::KeyType(e.to_string()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names =
            vec![SanType::URI(expected.clone().try_into().map_err(|_| {
                Refused::Malformed(format!("{expected} is not a valid URI"))
            })?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + self.lifetime;
        params.serial_number = Some(random_serial());
        let cert = params
            .signed_by(&public_key, &self.issuer)
            .map_err(|e| Refused::KeyType(e.to_string()))?;
        Ok(Issued {
            certificate_pem: cert.pem(),
            spiffe_id: expected,
            not_after: params.not_after.unix_timestamp(),
        })
    }

    /// A certificate and key for the controller's own gRPC listener, for `names` (DNS names
    /// or IP addresses), valid as long as a workload certificate.
    pub fn serving_certificate(&self, names: &[String]) -> anyhow::Result<(String, String)> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "weir-controller");
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + ROOT_LIFETIME.min(Duration::from_secs(365 * 24 * 3600));
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

fn check_key_type(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<(), Refused> {
    let algorithm = &spki.algorithm;
    if algorithm.algorithm == OID_SIG_ED25519 {
        return Ok(());
    }
    if algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
        return match curve {
            Some(curve) if curve == OID_EC_P256 => Ok(()),
            Some(curve) => Err(Refused::KeyType(format!("EC with curve {curve}"))),
            None => Err(Refused::KeyType("EC without a named curve".into())),
        };
    }
    Err(Refused::KeyType(algorithm.algorithm.to_id_string()))
}

fn check_names(csr: &X509CertificationRequest<'_>, expected: &str) -> Result<(), Refused> {
    let mut uris = Vec::new();
    for extension in csr.requested_extensions().into_iter().flatten() {
        match extension {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::URI(uri) => uris.push(uri.to_string()),
                        other => return Err(Refused::ExtraNames(format!("{other}"))),
                    }
                }
            }
            ParsedExtension::BasicConstraints(bc) if bc.ca => {
                return Err(Refused::ExtraNames("a CA certificate (CA:TRUE)".into()))
            }
            _ => {}
        }
    }
    match uris.as_slice() {
        [uri] if uri == expected => Ok(()),
        [uri] => Err(Refused::WrongIdentity {
            asked: uri.clone(),
            proven: expected.to_string(),
        }),
        [] => Err(Refused::WrongIdentity {
            asked: "no SPIFFE ID".into(),
            proven: expected.to_string(),
        }),
        more => Err(Refused::ExtraNames(more.join(", "))),
    }
}

/// 127 random bits from the system's CSPRNG, as RFC 5280 and the CA/Browser Forum ask.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system random source works");
    bytes[0] &= 0x7f; // positive
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests;
