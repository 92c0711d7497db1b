use base64::Engine;
use rcgen::{CertificateParams, KeyPair, SanType, SignatureAlgorithm};
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, UnixTime},
    server::WebPkiClientVerifier,
    RootCertStore,
};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use std::sync::Arc;

use super::*;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn authority() -> Authority {
    let root = Root::generate("cluster.local").unwrap();
    Authority::new(&root, Vec::new(), "cluster.local", DAY).unwrap()
}

fn web() -> ServiceAccount {
    "shop/web".parse().unwrap()
}

fn csr(alg: &'static SignatureAlgorithm, names: Vec<SanType>, ca: bool) -> String {
    let key = KeyPair::generate_for(alg).unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = names;
    if ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.to_string().try_into().unwrap())
}

#[test]
fn a_csr_for_the_proven_identity_yields_a_certificate_rustls_accepts() {
    let ca = authority();
    for alg in [&rcgen::PKCS_ECDSA_P256_SHA256, &rcgen::PKCS_ED25519] {
        let request = csr(
            alg,
            vec![uri("spiffe://cluster.local/ns/shop/sa/web")],
            false,
        );
        let issued = ca.certify(&request, &web()).unwrap();
        assert_eq!(issued.spiffe_id, "spiffe://cluster.local/ns/shop/sa/web");

        let leaf = CertificateDer::from_pem_slice(issued.certificate_pem.as_bytes()).unwrap();
        let mut roots = RootCertStore::empty();
        for root in ca.bundle() {
            roots
                .add(CertificateDer::from_pem_slice(root.as_bytes()).unwrap())
                .unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
            .build()
            .unwrap();
        verifier
            .verify_client_cert(&leaf, &[], UnixTime::now())
            .expect("rustls accepts the chain");

        let (_, cert) = X509Certificate::from_der(&leaf).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(
            san.general_names,
            vec![GeneralName::URI("spiffe://cluster.local/ns/shop/sa/web")]
        );
        assert!(!cert.is_ca());
        let lifetime =
            cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(lifetime as u64, (DAY + BACKDATE).as_secs());
    }
}

#[test]
fn csrs_for_another_identity_other_keys_or_extra_names_are_refused() {
    let ca = authority();
    let p256 = &rcgen::PKCS_ECDSA_P256_SHA256;
    let cases = [
        (
            csr(p256, vec![uri("spiffe://cluster.local/ns/shop/sa/admin")], false),
            "asks for spiffe://cluster.local/ns/shop/sa/admin, but the caller proved spiffe://cluster.local/ns/shop/sa/web",
        ),
        (csr(p256, vec![], false), "asks for no SPIFFE ID"),
        (
            csr(
                p256,
                vec![
                    uri("spiffe://cluster.local/ns/shop/sa/web"),
                    SanType::DnsName("web.shop.svc".try_into().unwrap()),
                ],
                false,
            ),
            "more than its SPIFFE ID: DNSName(web.shop.svc)",
        ),
        (
            csr(p256, vec![uri("spiffe://cluster.local/ns/shop/sa/web")], true),
            "more than its SPIFFE ID: a CA certificate",
        ),
        (
            csr(
                &rcgen::PKCS_ECDSA_P384_SHA384,
                vec![uri("spiffe://cluster.local/ns/shop/sa/web")],
                false,
            ),
            "key type EC with curve 1.3.132.0.34 is not allowed",
        ),
        ("hello".to_string(), "not a PEM PKCS#10 request"),
    ];
    for (request, expected) in cases {
        let err = ca.certify(&request, &web()).unwrap_err().to_string();
        assert!(err.contains(expected), "{err:?} should say {expected:?}");
    }
}

#[test]
fn a_csr_whose_signature_does_not_verify_is_refused() {
    let request = csr(
        &rcgen::PKCS_ECDSA_P256_SHA256,
        vec![uri("spiffe://cluster.local/ns/shop/sa/web")],
        false,
    );
    let mut der = CertificateSigningRequestDer::from_pem_slice(request.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec();
    // The signature is the last field: change its last byte.
    *der.last_mut().unwrap() ^= 1;
    let tampered = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64::engine::general_purpose::STANDARD.encode(&der)
    );
    assert_eq!(
        authority().certify(&tampered, &web()).unwrap_err(),
        Refused::BadSignature
    );
}
