//! `admission.k8s.io/v1` AdmissionReview in, AdmissionReview out. Whatever comes in, the
//! answer is a well-formed review: a malformed request gets one that says what was wrong.

use base64::Engine;
use kube::core::{
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation},
    DynamicObject,
};
use serde_json::Value;

use crate::{
    config::Config,
    inject::{self, NamespaceDefault, Outcome},
};

/// Answers one review body.
pub fn answer(config: &Config, body: &[u8], default: NamespaceDefault) -> Value {
    let review = match decide(config, body, default) {
        Ok(response) => response.into_review(),
        Err(message) => {
            tracing::warn!(%message, "malformed AdmissionReview");
            AdmissionResponse::invalid(message).into_review()
        }
    };
    let mut answer = serde_json::to_value(review).unwrap_or_default();
    // kube copies the request's type into the answer; the answer is always this one.
    answer["kind"] = "AdmissionReview".into();
    answer["apiVersion"] = "admission.k8s.io/v1".into();
    // kube serializes the patch bytes as a JSON array of numbers; the API documents (and Go
    // writes) a []byte as a base64 string, a quarter of the size.
    if let Some(bytes) = answer["response"]["patch"].as_array() {
        let bytes: Vec<u8> = bytes
            .iter()
            .filter_map(|b| b.as_u64())
            .map(|b| b as u8)
            .collect();
        answer["response"]["patch"] = base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .into();
    }
    answer
}

fn decide(
    config: &Config,
    body: &[u8],
    default: NamespaceDefault,
) -> Result<AdmissionResponse, String> {
    let raw: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    if raw["kind"] != "AdmissionReview" || raw["apiVersion"] != "admission.k8s.io/v1" {
        return Err(format!(
            "the body is not an admission.k8s.io/v1 AdmissionReview (kind {}, apiVersion {})",
            raw["kind"], raw["apiVersion"]
        ));
    }
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(raw.clone())
        .map_err(|e| format!("the body is not an admission.k8s.io/v1 AdmissionReview: {e}"))?;
    let request: AdmissionRequest<DynamicObject> = review
        .try_into()
        .map_err(|_| "the AdmissionReview has no request".to_string())?;
    let response = AdmissionResponse::from(&request);
    if request.kind.kind != "Pod" || request.operation != Operation::Create {
        // Only Pod CREATE is registered; anything else passes untouched.
        return Ok(response);
    }
    let pod = &raw["request"]["object"];
    if !pod.is_object() {
        return Ok(response.deny("the review of a Pod CREATE carries no object"));
    }
    let name = pod["metadata"]["name"]
        .as_str()
        .or(pod["metadata"]["generateName"].as_str())
        .unwrap_or_default();
    let namespace = request.namespace.as_deref().unwrap_or_default();
    match inject::pod(config, pod, default) {
        Outcome::Skip(why) => {
            tracing::debug!(pod = %format!("{namespace}/{name}"), why, "not injected");
            Ok(response)
        }
        Outcome::Refuse(message) => {
            tracing::info!(pod = %format!("{namespace}/{name}"), %message, "refused");
            Ok(response.deny(format!("weir-injector: {message}")))
        }
        Outcome::Inject { patch, warnings } => {
            tracing::info!(pod = %format!("{namespace}/{name}"), "injected");
            let mut response = response
                .with_patch(patch)
                .map_err(|e| format!("internal error encoding the patch: {e}"))?;
            if !warnings.is_empty() {
                response.warnings = Some(warnings);
            }
            Ok(response)
        }
    }
}
