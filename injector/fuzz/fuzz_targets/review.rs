//! Any bytes as an AdmissionReview body: the injector always answers with a well-formed
//! review, and any patch it sends applies cleanly to the pod it was given.
//!
//! cargo +nightly fuzz run review injector/fuzz/corpus/review   (from injector/)
#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use weir_injector::{config::Config, inject::NamespaceDefault, review};

fuzz_target!(|data: &[u8]| {
    let config = Config::default();
    for default in [NamespaceDefault::Enabled, NamespaceDefault::Disabled] {
        let answer = review::answer(&config, data, default);
        assert_eq!(answer["kind"], "AdmissionReview", "{answer}");
        assert!(answer["response"]["allowed"].is_boolean(), "{answer}");
        let Some(patch) = answer["response"]["patch"].as_str() else {
            continue;
        };
        let patch = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
        let request: serde_json::Value = serde_json::from_slice(data).unwrap();
        let mut pod = request["request"]["object"].clone();
        json_patch::patch(&mut pod, &patch).expect("the patch applies to the pod as sent");
    }
});
