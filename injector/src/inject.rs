//! The injection itself: from a pod as the API server sends it, the JSON patch that adds the
//! sidecar, or the reason to leave the pod alone.
//!
//! The patch is written operation by operation against the pod exactly as received (never a
//! diff of a re-serialized copy), so fields this build's Pod type does not know survive.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use weir_api::compile::{annotation_ports, INJECTED_ANNOTATION};
/// Pod annotations `weir.dev/inject` (`enabled` or `disabled` overrides the namespace) and
/// `weir.dev/skip-inbound-ports` (inbound ports not redirected to the sidecar), shared with
/// the compile, which reports the pods they leave outside a STRICT policy.
pub use weir_api::compile::{INJECT_ANNOTATION, SKIP_INBOUND_ANNOTATION};

use crate::config::{is_quantity, Config};

/// Pod annotations overriding the sidecar's resources.
pub const RESOURCE_ANNOTATIONS: [(&str, &str, &str); 4] = [
    ("weir.dev/proxy-cpu-request", "requests", "cpu"),
    ("weir.dev/proxy-cpu-limit", "limits", "cpu"),
    ("weir.dev/proxy-memory-request", "requests", "memory"),
    ("weir.dev/proxy-memory-limit", "limits", "memory"),
];
/// Outbound ports not redirected to the sidecar (comma-separated).
pub const SKIP_OUTBOUND_ANNOTATION: &str = "weir.dev/skip-outbound-ports";
/// The binary both injected containers run (`run` and `init`), from the sidecar image.
const BINARY: &str = "weir-sidecar";
/// The sidecar container's name.
pub const SIDECAR: &str = "weir-sidecar";
/// The iptables init container's name.
pub const INIT: &str = "weir-init";
/// Where the projected token is mounted in the sidecar.
pub const TOKEN_DIR: &str = "/var/run/secrets/weir";
/// Where the trust bundle is mounted in the sidecar.
pub const TRUST_DIR: &str = "/var/run/weir/ca";
/// The sidecar's environment variable listing the rewritten probes.
pub const PROBES_ENV: &str = "WEIR_APP_PROBES";

/// What the namespace asks for (the webhook path says it: `/inject` for namespaces labelled
/// `weir.dev/inject=enabled`, `/inject/opt-in` for the others).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NamespaceDefault {
    /// Inject unless the pod opts out.
    Enabled,
    /// Inject only when the pod opts in.
    Disabled,
}

/// What to do with a pod.
#[derive(Debug)]
pub enum Outcome {
    /// Admit it with this patch (and tell the user these warnings).
    Inject {
        /// The JSON patch.
        patch: json_patch::Patch,
        /// Things left as they were, for `kubectl`'s warnings.
        warnings: Vec<String>,
    },
    /// Admit it unchanged, for this reason.
    Skip(&'static str),
    /// Refuse it: it asks for injection in a way that cannot be honoured.
    Refuse(String),
}

/// Decides, and builds the patch for, one pod (`namespace` from the request: a pod being
/// created often has none yet).
pub fn pod(config: &Config, pod: &Value, namespace_default: NamespaceDefault) -> Outcome {
    let annotation = |key: &str| annotation(pod, key);
    let wanted = match (annotation(INJECT_ANNOTATION), namespace_default) {
        (Some("disabled"), _) => false,
        (Some("enabled"), _) => true,
        (Some(other), _) => {
            return Outcome::Refuse(format!(
                "annotation {INJECT_ANNOTATION}: {other:?} is neither enabled nor disabled"
            ))
        }
        (None, NamespaceDefault::Enabled) => true,
        (None, NamespaceDefault::Disabled) => false,
    };
    if !wanted {
        return Outcome::Skip("not requested");
    }
    if pod["spec"]["hostNetwork"].as_bool() == Some(true) {
        return Outcome::Skip("hostNetwork");
    }
    let named = |list: &Value| {
        list.as_array()
            .into_iter()
            .flatten()
            .any(|c| c["name"] == SIDECAR || c["name"] == INIT)
    };
    if annotation(INJECTED_ANNOTATION).is_some()
        || named(&pod["spec"]["containers"])
        || named(&pod["spec"]["initContainers"])
    {
        return Outcome::Skip("already injected");
    }
    if !pod["metadata"].is_object() {
        return Outcome::Refuse("metadata: a pod needs its metadata".into());
    }
    let Some(containers) = pod["spec"]["containers"].as_array() else {
        return Outcome::Refuse("spec.containers: a pod needs at least one container".into());
    };
    match build(config, pod, containers) {
        Ok((patch, warnings)) => Outcome::Inject { patch, warnings },
        Err(message) => Outcome::Refuse(message),
    }
}

/// The value of one of the pod's annotations.
fn annotation<'p>(pod: &'p Value, key: &str) -> Option<&'p str> {
    pod["metadata"]["annotations"]
        .get(key)
        .and_then(Value::as_str)
}

fn build(
    config: &Config,
    pod: &Value,
    containers: &[Value],
) -> Result<(json_patch::Patch, Vec<String>), String> {
    let mut ops = Vec::new();
    let mut warnings = Vec::new();

    // Resources: the config's, each overridable by annotation.
    let r = &config.resources;
    let mut resources: BTreeMap<&str, BTreeMap<&str, String>> = BTreeMap::new();
    for (kind, resource, value) in [
        ("requests", "cpu", &r.cpu_request),
        ("limits", "cpu", &r.cpu_limit),
        ("requests", "memory", &r.memory_request),
        ("limits", "memory", &r.memory_limit),
    ] {
        if !value.is_empty() {
            resources
                .entry(kind)
                .or_default()
                .insert(resource, value.clone());
        }
    }
    for (key, kind, resource) in RESOURCE_ANNOTATIONS {
        if let Some(value) = annotation(pod, key) {
            if !is_quantity(value) {
                return Err(format!(
                    "annotation {key}: {value:?} is not a Kubernetes quantity"
                ));
            }
            resources
                .entry(kind)
                .or_default()
                .insert(resource, value.to_string());
        }
    }
    let skip_inbound = ports(pod, SKIP_INBOUND_ANNOTATION)?;
    let skip_outbound = ports(pod, SKIP_OUTBOUND_ANNOTATION)?;

    // Probes go through the sidecar's admin port, so they keep working under STRICT mTLS.
    let mut probes = BTreeMap::new();
    for (i, container) in containers.iter().enumerate() {
        let name = container["name"].as_str().unwrap_or_default();
        for (field, kind) in [
            ("livenessProbe", "livez"),
            ("readinessProbe", "readyz"),
            ("startupProbe", "startupz"),
        ] {
            let get = &container[field]["httpGet"];
            if get.is_null() {
                continue;
            }
            let port = match &get["port"] {
                Value::Number(n) => n.as_u64(),
                Value::String(named) => container["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|p| p["name"] == named.as_str())
                    .and_then(|p| p["containerPort"].as_u64())
                    .or_else(|| named.parse().ok()),
                _ => None,
            };
            let Some(port) = port else {
                warnings.push(format!(
                    "container {name}: {field} port {} is not one of its ports; probe left as it was",
                    get["port"]
                ));
                continue;
            };
            let path = format!("/app-health/{name}/{kind}");
            let mut original = json!({
                "port": port,
                "path": get["path"].as_str().unwrap_or("/"),
                "scheme": get["scheme"].as_str().unwrap_or("HTTP"),
            });
            if let Some(headers) = get.get("httpHeaders") {
                original["httpHeaders"] = headers.clone();
            }
            probes.insert(path.clone(), original);
            ops.push(json!({
                "op": "replace",
                "path": format!("/spec/containers/{i}/{field}/httpGet"),
                "value": {"path": path, "port": config.ports.admin, "scheme": "HTTP"},
            }));
        }
    }

    let app_port = containers
        .iter()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .find(|p| p["protocol"].as_str().unwrap_or("TCP") == "TCP")
        .and_then(|p| p["containerPort"].as_u64());
    let sidecar = sidecar(config, resources, app_port, &probes);
    let init = init(config, &skip_inbound, &skip_outbound);

    let spec = &pod["spec"];
    match (config.native_sidecar, spec["initContainers"].as_array()) {
        // Ours first, in order: iptables, then the sidecar, so the pod's own init containers
        // already have the mesh.
        (true, Some(_)) => {
            ops.push(json!({"op": "add", "path": "/spec/initContainers/0", "value": init}));
            ops.push(json!({"op": "add", "path": "/spec/initContainers/1", "value": sidecar}));
        }
        (true, None) => {
            ops.push(json!({"op": "add", "path": "/spec/initContainers", "value": [init, sidecar]}))
        }
        (false, Some(_)) => {
            ops.push(json!({"op": "add", "path": "/spec/initContainers/0", "value": init}));
            ops.push(json!({"op": "add", "path": "/spec/containers/-", "value": sidecar}));
        }
        (false, None) => {
            ops.push(json!({"op": "add", "path": "/spec/initContainers", "value": [init]}));
            ops.push(json!({"op": "add", "path": "/spec/containers/-", "value": sidecar}));
        }
    }

    let volumes = [
        json!({"name": "weir-token", "projected": {"sources": [{"serviceAccountToken": {
            "audience": "weir",
            "expirationSeconds": config.token_expiration_seconds,
            "path": "token",
        }}]}}),
        json!({"name": "weir-ca", "configMap": {"name": config.trust_bundle_config_map, "optional": true}}),
    ];
    if spec["volumes"].is_array() {
        for volume in volumes {
            ops.push(json!({"op": "add", "path": "/spec/volumes/-", "value": volume}));
        }
    } else {
        ops.push(json!({"op": "add", "path": "/spec/volumes", "value": volumes}));
    }

    let injected = json!(env!("CARGO_PKG_VERSION"));
    if pod["metadata"]["annotations"].is_object() {
        ops.push(json!({
            "op": "add",
            "path": format!("/metadata/annotations/{}", INJECTED_ANNOTATION.replace('~', "~0").replace('/', "~1")),
            "value": injected,
        }));
    } else {
        ops.push(json!({
            "op": "add",
            "path": "/metadata/annotations",
            "value": {INJECTED_ANNOTATION: injected},
        }));
    }
    let patch = serde_json::from_value(Value::Array(ops))
        .map_err(|e| format!("internal error building the patch: {e}"))?;
    Ok((patch, warnings))
}

fn ports(pod: &Value, key: &str) -> Result<Vec<u16>, String> {
    annotation(pod, key).map_or(Ok(Vec::new()), |text| annotation_ports(key, text))
}

fn restricted(uid: i64) -> Value {
    json!({
        "runAsUser": uid,
        "runAsGroup": uid,
        "runAsNonRoot": true,
        "readOnlyRootFilesystem": true,
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

fn sidecar(
    config: &Config,
    resources: BTreeMap<&str, BTreeMap<&str, String>>,
    app_port: Option<u64>,
    probes: &BTreeMap<String, Value>,
) -> Value {
    let p = &config.ports;
    let mut args = vec![
        "run".to_string(),
        "--controller".into(),
        config.controller.clone(),
        "--controller-ca".into(),
        format!("{TRUST_DIR}/ca.crt"),
        "--identity-token-file".into(),
        format!("{TOKEN_DIR}/token"),
        "--inbound".into(),
        format!("[::]:{}", p.inbound),
        "--outbound".into(),
        format!("127.0.0.1:{0},[::1]:{0}", p.outbound),
        "--admin".into(),
        format!("0.0.0.0:{}", p.admin),
    ];
    if let Some(port) = app_port {
        args.extend(["--app-port".into(), port.to_string()]);
    }
    let field = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}});
    let mut env = vec![
        field("POD_NAME", "metadata.name"),
        field("POD_NAMESPACE", "metadata.namespace"),
        field("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        json!({"name": "TRUST_DOMAIN", "value": config.trust_domain}),
    ];
    if !config.otlp_endpoint.is_empty() {
        env.push(json!({"name": "WEIR_OTLP_ENDPOINT", "value": config.otlp_endpoint}));
        env.push(json!({"name": "WEIR_TRACE_SAMPLING", "value": config.trace_sampling}));
    }
    if !probes.is_empty() {
        env.push(
            json!({"name": PROBES_ENV, "value": serde_json::to_string(probes).unwrap_or_default()}),
        );
    }
    let mut container = json!({
        "name": SIDECAR,
        "image": config.image,
        "command": [BINARY],
        "imagePullPolicy": config.image_pull_policy,
        "args": args,
        "env": env,
        "ports": [
            {"name": "weir-inbound", "containerPort": p.inbound, "protocol": "TCP"},
            {"name": "weir-admin", "containerPort": p.admin, "protocol": "TCP"},
        ],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": p.admin}, "periodSeconds": 2, "failureThreshold": 30},
        "resources": resources,
        "securityContext": restricted(config.proxy_uid),
        "volumeMounts": [
            {"name": "weir-token", "mountPath": TOKEN_DIR, "readOnly": true},
            {"name": "weir-ca", "mountPath": TRUST_DIR, "readOnly": true},
        ],
    });
    if config.native_sidecar {
        container["restartPolicy"] = "Always".into();
        // The kubelet starts the app containers once a native sidecar's startupProbe passes:
        // `/readyz` passes only with a workload certificate and the first configuration
        // applied, so the app's first calls already have a mesh to go through. (A readiness
        // probe alone does not hold the app back.) Ten minutes, polled every second, before
        // the kubelet restarts it.
        container["startupProbe"] = json!({"httpGet": {"path": "/readyz", "port": p.admin}, "periodSeconds": 1, "timeoutSeconds": 3, "failureThreshold": 600});
    }
    container
}

fn init(config: &Config, skip_inbound: &[u16], skip_outbound: &[u16]) -> Value {
    let p = &config.ports;
    let mut args = vec![
        "init".to_string(),
        "--inbound-port".into(),
        p.inbound.to_string(),
        "--outbound-port".into(),
        p.outbound.to_string(),
        "--proxy-uid".into(),
        config.proxy_uid.to_string(),
        "--admin-port".into(),
        p.admin.to_string(),
    ];
    let list = |ports: &[u16]| {
        ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    if !skip_inbound.is_empty() {
        args.extend(["--exclude-inbound-ports".into(), list(skip_inbound)]);
    }
    if !skip_outbound.is_empty() {
        args.extend(["--exclude-outbound-ports".into(), list(skip_outbound)]);
    }
    json!({
        "name": INIT,
        "image": config.image,
        "command": [BINARY],
        "imagePullPolicy": config.image_pull_policy,
        "args": args,
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        // iptables needs root and these two capabilities, for the few milliseconds it runs.
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": false,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    })
}
