//! What the injector adds to a pod: image, ports, resources, where the controller is. Read
//! from `--config F` (YAML); every field has a documented default.

use std::path::Path;

use anyhow::Context as _;
use serde::Deserialize;

/// The injection settings.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    /// The image with `weir-sidecar` (used for the init container too).
    pub image: String,
    /// `imagePullPolicy` of both containers.
    pub image_pull_policy: String,
    /// The controller the sidecar follows.
    pub controller: String,
    /// The SPIFFE trust domain of workload identities (the controller's `--trust-domain`).
    pub trust_domain: String,
    /// The ConfigMap (in the pod's namespace) holding the controller's trust bundle as
    /// `ca.crt`; mounted optional, so a pod still starts before it exists.
    pub trust_bundle_config_map: String,
    /// Add the sidecar as a native sidecar (an init container with `restartPolicy: Always`,
    /// Kubernetes 1.29+). `false`: a regular container, for older clusters.
    pub native_sidecar: bool,
    /// The user id the sidecar runs as; its own traffic is not intercepted.
    pub proxy_uid: i64,
    /// The sidecar's ports.
    pub ports: Ports,
    /// Default resources (each overridable per pod by annotation).
    pub resources: Resources,
    /// Lifetime of the projected ServiceAccount token (audience `weir`).
    pub token_expiration_seconds: i64,
    /// Traces: the sidecars export a span per sampled request to this OpenTelemetry
    /// collector (OTLP/HTTP, `weir-sidecar --otlp-endpoint`); empty for none.
    pub otlp_endpoint: String,
    /// The share of the traces a sidecar starts that are sampled (`--trace-sampling`).
    pub trace_sampling: String,
}

/// The sidecar's ports.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Ports {
    /// Intercepted inbound traffic.
    pub inbound: u16,
    /// Intercepted outbound traffic.
    pub outbound: u16,
    /// `/healthz`, `/readyz`, `/metrics`, `/app-health/...`.
    pub admin: u16,
}

/// Resource requests and limits, as Kubernetes quantities.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Resources {
    /// `requests.cpu`.
    pub cpu_request: String,
    /// `limits.cpu`; empty for none.
    pub cpu_limit: String,
    /// `requests.memory`.
    pub memory_request: String,
    /// `limits.memory`; empty for none.
    pub memory_limit: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            image: format!(
                "ghcr.io/weir-dev/weir-sidecar:{}",
                env!("CARGO_PKG_VERSION")
            ),
            image_pull_policy: "IfNotPresent".into(),
            controller: "https://weir-controller.weir-system.svc:15010".into(),
            trust_domain: "cluster.local".into(),
            trust_bundle_config_map: "weir-ca-root".into(),
            native_sidecar: true,
            proxy_uid: 1337,
            ports: Ports::default(),
            resources: Resources::default(),
            token_expiration_seconds: 3600,
            otlp_endpoint: String::new(),
            trace_sampling: "0.01".into(),
        }
    }
}

impl Default for Ports {
    fn default() -> Self {
        Self {
            inbound: 15006,
            outbound: 15001,
            admin: 15020,
        }
    }
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            cpu_request: "50m".into(),
            cpu_limit: String::new(),
            memory_request: "32Mi".into(),
            memory_limit: "128Mi".into(),
        }
    }
}

impl Config {
    /// Reads a config file; unknown fields and bad quantities are errors naming the field.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --config {}", path.display()))?;
        let config: Self = serde_saphyr::from_str(&text)
            .with_context(|| format!("--config {}", path.display()))?;
        config
            .check()
            .with_context(|| format!("--config {}", path.display()))?;
        Ok(config)
    }

    fn check(&self) -> anyhow::Result<()> {
        let r = &self.resources;
        for (field, value) in [
            ("resources.cpuRequest", &r.cpu_request),
            ("resources.cpuLimit", &r.cpu_limit),
            ("resources.memoryRequest", &r.memory_request),
            ("resources.memoryLimit", &r.memory_limit),
        ] {
            if !value.is_empty() && !is_quantity(value) {
                anyhow::bail!("{field}: {value:?} is not a Kubernetes quantity");
            }
        }
        anyhow::ensure!(!self.image.is_empty(), "image: must be set");
        anyhow::ensure!(
            self.controller.starts_with("https://"),
            "controller: {:?} must be an https:// URL",
            self.controller
        );
        anyhow::ensure!(
            self.otlp_endpoint.is_empty()
                || self.otlp_endpoint.starts_with("http://")
                || self.otlp_endpoint.starts_with("https://"),
            "otlpEndpoint: {:?} must be an http:// or https:// URL",
            self.otlp_endpoint
        );
        let ratio = self.trace_sampling.parse::<f64>();
        anyhow::ensure!(
            ratio.is_ok_and(|r| (0.0..=1.0).contains(&r)),
            "traceSampling: {:?} is not a ratio from 0 to 1",
            self.trace_sampling
        );
        Ok(())
    }
}

/// A Kubernetes resource quantity: a decimal number with an optional suffix
/// (`m`, `k`, `M`, `G`, `T`, `Ki`, `Mi`, `Gi`, `Ti`).
pub fn is_quantity(text: &str) -> bool {
    let suffixes = ["Ki", "Mi", "Gi", "Ti", "m", "k", "M", "G", "T", ""];
    suffixes.iter().any(|suffix| {
        text.strip_suffix(suffix).is_some_and(|number| {
            let mut parts = number.splitn(2, '.');
            let whole = parts.next().unwrap_or_default();
            let fraction = parts.next();
            !whole.is_empty()
                && whole.bytes().all(|b| b.is_ascii_digit())
                && fraction.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
        })
    })
}
