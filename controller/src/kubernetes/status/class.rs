//! The status of a GatewayClass naming Weir's controller: `Accepted` when it is the class
//! Weir serves (another one, or one with parameters, says why not), `SupportedVersion` for
//! the Gateway API CRDs installed in the cluster, and the features Weir supports.
//!
//! The installed version is the `gateway.networking.k8s.io/bundle-version` annotation of the
//! Gateway CRD, read by the Lease holder (it changes when the CRDs are upgraded, which is when
//! a cluster can move past what Weir was tested with).

use gateway_api::apis::standard::gatewayclasses::GatewayClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client};
use serde_json::{json, Value};
use weir_api::compile::{GATEWAY_CLASS, SUPPORTED_FEATURES};

use super::desired::condition;

/// The CRD whose annotation tells the installed Gateway API version.
const GATEWAY_CRD: &str = "gateways.gateway.networking.k8s.io";
const BUNDLE_VERSION: &str = "gateway.networking.k8s.io/bundle-version";
/// The Gateway API minor versions Weir is built and tested for (`v1.MINOR.*`): v1.5 made
/// TLSRoute and ListenerSet standard, at `v1`, which is what Weir reads.
const SUPPORTED_MINORS: std::ops::RangeInclusive<u64> = 5..=6;

/// The bundle version of the installed Gateway API CRDs; `None` when it cannot be read (no
/// CRD, no annotation, or the API server did not answer).
pub async fn installed_version(client: &Client) -> Option<String> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    match crds.get_opt(GATEWAY_CRD).await {
        Ok(crd) => crd?.metadata.annotations?.get(BUNDLE_VERSION).cloned(),
        Err(error) => {
            tracing::warn!(%error, "cannot read the Gateway API CRD's version; will try again");
            None
        }
    }
}

/// Whether Weir supports Gateway API `version` (`v1.5.0`, `v1.6.1`, `v1.6.0-rc.1`), and why
/// not.
pub fn supported(version: &str) -> Result<(), String> {
    let numbers = version.trim_start_matches('v');
    let mut parts = numbers.split(['.', '-']);
    let (major, minor) = (parts.next(), parts.next());
    let parsed = major
        .and_then(|m| m.parse::<u64>().ok())
        .zip(minor.and_then(|m| m.parse::<u64>().ok()));
    let wanted = format!(
        "Weir supports Gateway API v1.{} to v1.{}",
        SUPPORTED_MINORS.start(),
        SUPPORTED_MINORS.end()
    );
    match parsed {
        Some((1, minor)) if SUPPORTED_MINORS.contains(&minor) => Ok(()),
        Some(_) => Err(format!(
            "the installed CRDs are Gateway API {version}: {wanted}"
        )),
        None => Err(format!(
            "the installed CRDs' bundle version {version:?} is not a version: {wanted}"
        )),
    }
}

/// The status a GatewayClass naming Weir's controller should have, the installed CRDs being
/// of `installed` (`None`: not known, and `SupportedVersion` not written).
pub(super) fn class_status(
    name: &str,
    class: &GatewayClass,
    installed: Option<&str>,
    generation: Option<i64>,
) -> Value {
    let accepted = if name != GATEWAY_CLASS {
        let message = format!("Weir serves the GatewayClass named {GATEWAY_CLASS} alone");
        condition("Accepted", false, "Unsupported", &message, generation)
    } else if class.spec.parameters_ref.is_some() {
        let message = "Weir's GatewayClass takes no parametersRef";
        condition("Accepted", false, "InvalidParameters", message, generation)
    } else {
        let message = "Gateways of this class are served by weir-ingress";
        condition("Accepted", true, "Accepted", message, generation)
    };
    let mut conditions = vec![accepted];
    if let Some(version) = installed {
        conditions.push(match supported(version) {
            Ok(()) => {
                let message = format!("the installed CRDs are Gateway API {version}");
                condition(
                    "SupportedVersion",
                    true,
                    "SupportedVersion",
                    &message,
                    generation,
                )
            }
            Err(why) => condition(
                "SupportedVersion",
                false,
                "UnsupportedVersion",
                &why,
                generation,
            ),
        });
    }
    let features: Vec<Value> = SUPPORTED_FEATURES
        .iter()
        .map(|f| json!({"name": f}))
        .collect();
    json!({"conditions": conditions, "supportedFeatures": features})
}

#[cfg(test)]
mod tests {
    use super::supported;

    #[test]
    fn versions_weir_supports() {
        for ok in ["v1.5.0", "v1.5.1", "v1.6.0", "v1.6.0-rc.1", "1.6.2"] {
            assert_eq!(supported(ok), Ok(()), "{ok}");
        }
        for old_or_new in ["v1.4.1", "v1.0.0", "v1.7.0", "v2.0.0"] {
            let why = supported(old_or_new).unwrap_err();
            assert!(
                why.contains(old_or_new) && why.contains("v1.5 to v1.6"),
                "{why}"
            );
        }
        let why = supported("latest").unwrap_err();
        assert!(why.contains("\"latest\" is not a version"), "{why}");
    }
}
