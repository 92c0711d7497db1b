//! What the install needs from the CA, kept current by the Lease holder:
//! - the trust bundle as ConfigMap `weir-ca-root` (`ca.crt`) in the controller's namespace and
//!   in every namespace labelled `weir.dev/inject=enabled`, where sidecars and the ingress
//!   mount it to check the controller;
//! - the injector's serving certificate (Secret `weir-system/weir-injector-tls`), signed by
//!   the CA, renewed a month before it expires or when the root changes;
//! - the `caBundle` of the injector's MutatingWebhookConfiguration, so the API server trusts
//!   that certificate. No cert-manager needed.

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use k8s_openapi::{
    api::core::v1::{ConfigMap, Secret},
    ByteString,
};
use kube::{
    api::{ApiResource, DynamicObject, ObjectMeta, PostParams},
    Api, Client,
};
use serde_json::Value;
use weir_api::{Object, Objects};

use crate::ca::Authority;

/// The namespace label that opts a namespace into the mesh.
pub const INJECT_LABEL: &str = "weir.dev/inject";
/// Renew the injector's certificate when it has less than this left.
const RENEW_BEFORE: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);
/// On the injector's Secret: which root signed it.
const ROOT_ANNOTATION: &str = "weir.dev/signed-by";

/// What to publish, and where.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The controller's namespace (the bundle is always published there).
    pub namespace: String,
    /// The bundle ConfigMap's name; empty publishes none.
    pub bundle_config_map: String,
    /// The injector's serving certificate Secret (in `namespace`); empty makes none.
    pub injector_secret: String,
    /// The names in that certificate (the injector Service's DNS names).
    pub injector_names: Vec<String>,
    /// The MutatingWebhookConfiguration whose `caBundle` is kept current; empty: none.
    pub injector_webhook: String,
}

/// What was published, so unchanged things are not written again.
#[derive(Default)]
pub struct Published {
    bundles: HashMap<String, String>,
    /// The root the injector's certificate was last checked against, and when.
    injector_checked: Option<(String, std::time::Instant)>,
    webhook_bundle: Option<String>,
}

/// How often the injector's certificate is looked at again when nothing changed.
const RECHECK: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl Published {
    /// Brings everything up to date; returns what could not be done, for the log.
    pub async fn update(
        &mut self,
        client: &Client,
        authority: &Authority,
        objects: &Objects,
        settings: &Settings,
    ) -> Vec<String> {
        let bundle = authority.bundle().concat();
        let mut problems = Vec::new();
        if !settings.bundle_config_map.is_empty() {
            let mut namespaces = vec![settings.namespace.clone()];
            namespaces.extend(objects.iter().filter_map(|(o, _)| {
                match o {
                    Object::Namespace(ns)
                        if ns
                            .metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get(INJECT_LABEL))
                            == Some(&"enabled".to_string()) =>
                    {
                        ns.metadata.name.clone()
                    }
                    _ => None,
                }
            }));
            for namespace in namespaces {
                if self.bundles.get(&namespace) == Some(&bundle) {
                    continue;
                }
                match config_map(client, &namespace, &settings.bundle_config_map, &bundle).await {
                    Ok(()) => {
                        self.bundles.insert(namespace, bundle.clone());
                    }
                    Err(e) => problems.push(format!(
                        "ConfigMap {namespace}/{}: {e}",
                        settings.bundle_config_map
                    )),
                }
            }
        }
        let root = authority.bundle().first().cloned().unwrap_or_default();
        let fresh = self
            .injector_checked
            .as_ref()
            .is_some_and(|(checked, at)| *checked == root && at.elapsed() < RECHECK);
        if !settings.injector_secret.is_empty() && !fresh {
            match injector_secret(client, authority, settings, &root).await {
                Ok(()) => self.injector_checked = Some((root, std::time::Instant::now())),
                Err(e) => problems.push(format!(
                    "Secret {}/{}: {e}",
                    settings.namespace, settings.injector_secret
                )),
            }
        }
        if !settings.injector_webhook.is_empty() && self.webhook_bundle.as_ref() != Some(&bundle) {
            match webhook(client, &settings.injector_webhook, &bundle).await {
                Ok(true) => self.webhook_bundle = Some(bundle),
                // Not installed (yet): look again next time.
                Ok(false) => {}
                Err(e) => problems.push(format!(
                    "MutatingWebhookConfiguration {}: {e}",
                    settings.injector_webhook
                )),
            }
        }
        problems
    }
}

async fn config_map(
    client: &Client,
    namespace: &str,
    name: &str,
    bundle: &str,
) -> Result<(), kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let data = BTreeMap::from([("ca.crt".to_string(), bundle.to_string())]);
    match api.get_opt(name).await? {
        Some(current) if current.data.as_ref() == Some(&data) => Ok(()),
        Some(mut current) => {
            current.data = Some(data);
            api.replace(name, &PostParams::default(), &current)
                .await
                .map(drop)
        }
        None => {
            let map = ConfigMap {
                metadata: managed(name),
                data: Some(data),
                ..Default::default()
            };
            api.create(&PostParams::default(), &map).await.map(drop)
        }
    }
}

fn managed(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        labels: Some(BTreeMap::from([(
            "app.kubernetes.io/managed-by".to_string(),
            "weir-controller".to_string(),
        )])),
        ..Default::default()
    }
}

/// Makes the injector's certificate unless the current one was signed by `root` and has
/// more than a month left.
async fn injector_secret(
    client: &Client,
    authority: &Authority,
    settings: &Settings,
    root: &str,
) -> anyhow::Result<()> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &settings.namespace);
    let name = &settings.injector_secret;
    let current = api.get_opt(name).await?;
    let fingerprint = fingerprint(root);
    if let Some(secret) = &current {
        let signed_by = secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ROOT_ANNOTATION));
        let cert = secret.data.as_ref().and_then(|d| d.get("tls.crt"));
        if signed_by == Some(&fingerprint) && cert.is_some_and(|c| lasts(&c.0)) {
            return Ok(());
        }
    }
    let (cert, key) = authority.serving_certificate(&settings.injector_names)?;
    let mut metadata = managed(name);
    metadata.annotations = Some(BTreeMap::from([(ROOT_ANNOTATION.to_string(), fingerprint)]));
    let mut secret = Secret {
        metadata,
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            ("tls.crt".to_string(), ByteString(cert.into_bytes())),
            ("tls.key".to_string(), ByteString(key.into_bytes())),
            (
                "ca.crt".to_string(),
                ByteString(authority.bundle().concat().into_bytes()),
            ),
        ])),
        ..Default::default()
    };
    match current {
        Some(current) => {
            secret.metadata.resource_version = current.metadata.resource_version;
            api.replace(name, &PostParams::default(), &secret).await?;
        }
        None => {
            api.create(&PostParams::default(), &secret).await?;
        }
    }
    tracing::info!(secret = %format!("{}/{name}", settings.namespace), "injector serving certificate issued");
    Ok(())
}

fn fingerprint(pem: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, pem.trim().as_bytes());
    digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether a PEM certificate is valid for more than [`RENEW_BEFORE`].
fn lasts(pem: &[u8]) -> bool {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(pem) else {
        return false;
    };
    let Ok(cert) = pem.parse_x509() else {
        return false;
    };
    let left = cert.validity().time_to_expiration();
    left.is_some_and(|left| left.whole_seconds() > RENEW_BEFORE.as_secs() as i64)
}

/// Sets every webhook's `clientConfig.caBundle`; false when the configuration is not there.
async fn webhook(client: &Client, name: &str, bundle: &str) -> Result<bool, kube::Error> {
    let resource = ApiResource {
        group: "admissionregistration.k8s.io".into(),
        version: "v1".into(),
        api_version: "admissionregistration.k8s.io/v1".into(),
        kind: "MutatingWebhookConfiguration".into(),
        plural: "mutatingwebhookconfigurations".into(),
    };
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let Some(mut config) = api.get_opt(name).await? else {
        return Ok(false);
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(bundle);
    let mut changed = false;
    for webhook in config.data["webhooks"].as_array_mut().into_iter().flatten() {
        let slot = &mut webhook["clientConfig"]["caBundle"];
        if slot.as_str() != Some(encoded.as_str()) {
            *slot = Value::String(encoded.clone());
            changed = true;
        }
    }
    if changed {
        api.replace(name, &PostParams::default(), &config).await?;
        tracing::info!(webhook = name, "caBundle updated");
    }
    Ok(true)
}
