use std::sync::Arc;

use rcgen::{CertificateParams, KeyPair};
use weir_api::model::{HostMatch, SecretBytes, TlsCertificate};

use super::CertStore;
use crate::metrics::Metrics;

/// A self-signed certificate for `names`, valid until `not_after` (a year).
fn issue(names: &[&str], year: i32) -> (Vec<u8>, Vec<u8>) {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(year, 1, 1);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem().into_bytes(), key.serialize_pem().into_bytes())
}

fn secret(name: &str, hosts: Vec<HostMatch>, (chain, key): &(Vec<u8>, Vec<u8>)) -> TlsCertificate {
    TlsCertificate {
        secret: format!("default/{name}"),
        hosts,
        used_by: vec![],
        listeners: vec![],
        ingress: true,
        chain: SecretBytes(Arc::from(chain.as_slice())),
        key: SecretBytes(Arc::from(key.as_slice())),
    }
}

fn exact(h: &str) -> HostMatch {
    HostMatch::Exact(h.into())
}

/// The leaf DER of the certificate picked for `sni`.
fn picked(store: &CertStore, sni: Option<&str>) -> Option<Vec<u8>> {
    store.pick(sni, None).map(|c| c.cert[0].to_vec())
}

fn der(pem: &[u8]) -> Vec<u8> {
    use rustls_pki_types::{pem::PemObject, CertificateDer};
    CertificateDer::from_pem_slice(pem).unwrap().to_vec()
}

#[test]
fn sni_picks_exact_then_the_most_specific_wildcard_then_the_default() {
    let store = CertStore::new(Metrics::new());
    let shop = issue(&["shop.example.com"], 2099);
    let any_example = issue(&["*.example.com"], 2099);
    let any_api = issue(&["*.api.example.com"], 2099);
    let fallback = issue(&["fallback"], 2099);
    let statuses = store.update(&[
        secret("fallback", vec![HostMatch::Any], &fallback),
        secret("shop", vec![exact("shop.example.com")], &shop),
        secret(
            "wild",
            vec![HostMatch::Wildcard(".example.com".into())],
            &any_example,
        ),
        secret(
            "api",
            vec![HostMatch::Wildcard(".api.example.com".into())],
            &any_api,
        ),
    ]);
    assert!(statuses
        .iter()
        .all(|s| s.serving == "current" && s.error.is_none()));
    assert_eq!(picked(&store, Some("SHOP.example.com")), Some(der(&shop.0)));
    assert_eq!(
        picked(&store, Some("www.example.com")),
        Some(der(&any_example.0))
    );
    assert_eq!(
        picked(&store, Some("v1.api.example.com")),
        Some(der(&any_api.0))
    );
    assert_eq!(picked(&store, Some("other.org")), Some(der(&fallback.0)));
    assert_eq!(picked(&store, None), Some(der(&fallback.0)));
}

#[test]
fn without_a_default_the_first_certificate_answers_unknown_names() {
    let store = CertStore::new(Metrics::new());
    assert_eq!(picked(&store, Some("a.example.com")), None);
    let a = issue(&["a.example.com"], 2099);
    store.update(&[secret("a", vec![exact("a.example.com")], &a)]);
    assert_eq!(picked(&store, None), Some(der(&a.0)));
}

#[test]
fn a_bad_new_certificate_is_refused_and_the_previous_one_keeps_serving() {
    let metrics = Metrics::new();
    let store = CertStore::new(metrics.clone());
    let good = issue(&["shop.example.com"], 2099);
    store.update(&[secret("shop", vec![exact("shop.example.com")], &good)]);

    let other = issue(&["shop.example.com"], 2099);
    let cases = [
        ("mismatched key", (good.0.clone(), other.1.clone())),
        ("not PEM", (b"garbage".to_vec(), good.1.clone())),
        ("expired", issue(&["shop.example.com"], 2001)),
        ("no key", (good.0.clone(), vec![])),
    ];
    for (what, bad) in cases {
        let statuses = store.update(&[secret("shop", vec![exact("shop.example.com")], &bad)]);
        assert_eq!(statuses[0].serving, "previous", "{what}");
        let error = statuses[0].error.as_deref().unwrap_or_default();
        assert!(error.contains("Secret default/shop"), "{what}: {error}");
        assert_eq!(
            picked(&store, Some("shop.example.com")),
            Some(der(&good.0)),
            "{what}"
        );
    }
    // A bad certificate with nothing before it serves nothing for its names.
    let fresh = CertStore::new(metrics);
    let statuses = fresh.update(&[secret("x", vec![exact("x")], &(good.0.clone(), other.1))]);
    assert_eq!(statuses[0].serving, "none");
    assert!(statuses[0].error.as_deref().unwrap().contains("default/x"));
    assert_eq!(picked(&fresh, Some("x")), None);

    // Fixing it is picked up.
    let rotated = issue(&["shop.example.com"], 2098);
    store.update(&[secret("shop", vec![exact("shop.example.com")], &rotated)]);
    assert_eq!(
        picked(&store, Some("shop.example.com")),
        Some(der(&rotated.0))
    );
}
