//! Reading Secrets: `stringData` over `data`, as the API server merges them on write.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;

use super::Context;
use crate::{model::SecretBytes, objects::Object};

impl<'a> Context<'a> {
    /// The Secret `namespace/name`, if it exists.
    pub(super) fn find_secret(&self, namespace: &str, name: &str) -> Option<&'a Secret> {
        self.iter().find_map(|(o, _)| match o {
            Object::Secret(s)
                if s.metadata.namespace.as_deref() == Some(namespace)
                    && s.metadata.name.as_deref() == Some(name) =>
            {
                Some(s)
            }
            _ => None,
        })
    }
}

/// One entry of a Secret; empty when it has none.
pub(super) fn value(secret: &Secret, key: &str) -> SecretBytes {
    if let Some(v) = secret.string_data.as_ref().and_then(|d| d.get(key)) {
        return SecretBytes(Arc::from(v.as_bytes()));
    }
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| SecretBytes(Arc::from(v.0.as_slice())))
        .unwrap_or_default()
}

/// Every entry of a Secret, `stringData` winning over `data`, in key order.
pub(super) fn entries(secret: &Secret) -> Vec<(String, SecretBytes)> {
    let mut all: std::collections::BTreeMap<String, SecretBytes> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), SecretBytes(Arc::from(v.0.as_slice()))))
        .collect();
    for (k, v) in secret.string_data.iter().flatten() {
        all.insert(k.clone(), SecretBytes(Arc::from(v.as_bytes())));
    }
    all.into_iter().collect()
}
