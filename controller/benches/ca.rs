//! What the CA costs per certificate, in process: the token check and the CSR check + signing
//! that `Identity.Certify` does for every request.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use weir_controller::{
    ca::{Authority, Root},
    identity::ServiceAccount,
    tokens::TokenKey,
};

fn certify(c: &mut Criterion) {
    let root = Root::generate("cluster.local").unwrap();
    let lifetime = Duration::from_secs(86400);
    let authority = Authority::new(&root, Vec::new(), "cluster.local", lifetime).unwrap();
    let web: ServiceAccount = "shop/web".parse().unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        web.spiffe_id("cluster.local").try_into().unwrap(),
    )];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    c.bench_function("certify a P-256 CSR", |b| {
        b.iter(|| authority.certify(&csr, &web).unwrap())
    });

    let signing = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let tokens = TokenKey::from_pem(&signing.serialize_pem()).unwrap();
    let token = tokens.sign(&web, Duration::from_secs(3600)).unwrap();
    c.bench_function("verify a node token", |b| {
        b.iter(|| tokens.verify(&token).unwrap())
    });
}

criterion_group!(benches, certify);
criterion_main!(benches);
