//! What the server itself sets and checks on objects: type, names, uid, timestamps, and the
//! metadata a client cannot change.

use serde_json::Value;

use super::{ApiError, Resource};

pub(super) fn check_type(resource: &Resource, object: &mut Value) -> Result<(), ApiError> {
    let Some(map) = object.as_object_mut() else {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    };
    for (field, expected) in [
        ("apiVersion", resource.api_version()),
        ("kind", resource.kind.to_string()),
    ] {
        match map.get(field).and_then(Value::as_str) {
            None | Some("") => {
                map.insert(field.to_string(), expected.into());
            }
            Some(given) if given != expected => {
                return Err(ApiError::bad_request(format!(
                    "the {field} of the object ({given}) does not match the endpoint's ({expected})"
                )))
            }
            Some(_) => {}
        }
    }
    // As the real API server does on every write: a Namespace carries its name as the label
    // `kubernetes.io/metadata.name`, which selectors of namespaces rely on.
    if resource.kind == "Namespace" {
        let name = object.pointer("/metadata/name").cloned();
        if let (Some(name), Some(meta)) = (name, object["metadata"].as_object_mut()) {
            let labels = meta
                .entry("labels")
                .or_insert_with(|| serde_json::json!({}));
            if let Some(labels) = labels.as_object_mut() {
                labels.insert("kubernetes.io/metadata.name".into(), name);
            }
        }
    }
    Ok(())
}

/// Metadata only the server sets survives whatever a client sent.
pub(super) fn keep_system_metadata(object: &mut Value, current: &Value) {
    for field in ["uid", "creationTimestamp", "generation", "namespace"] {
        match current["metadata"].get(field) {
            Some(value) => object["metadata"][field] = value.clone(),
            None => {
                if let Some(meta) = object["metadata"].as_object_mut() {
                    meta.remove(field);
                }
            }
        }
    }
}

pub(super) fn set_or_remove(object: &mut Value, field: &str, value: Option<Value>) {
    if let Some(map) = object.as_object_mut() {
        match value {
            Some(v) => {
                map.insert(field.to_string(), v);
            }
            None => {
                map.remove(field);
            }
        }
    }
}

pub(super) fn without(object: &Value, fields: &[&str]) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        for field in fields {
            map.remove(*field);
        }
    }
    object
}

pub(super) fn valid_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

pub(super) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect()
}

pub(super) fn uid() -> String {
    let hex = format!("{:032x}", fastrand::u128(..));
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

pub(super) fn now() -> String {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("0 ns is valid");
    now.format(&time::format_description::well_known::Rfc3339)
        .expect("RFC 3339")
}
