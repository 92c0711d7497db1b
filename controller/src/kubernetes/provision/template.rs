//! What a Gateway's own deployment and Service look like: the install's `weir-ingress`
//! Deployment (and Service) with the pods made to serve that Gateway alone. Pure functions, so
//! what is written can be tested without an API server.
//!
//! From the template the pods keep everything the operator set (image, flags such as
//! `--redis`, resources, security context, probes, volumes, the admin port); they lose what
//! would mix them up with the shared gateway: its labels (the shared Service would send them
//! Ingress traffic), its `--serve`, `--gateway` and listen flags, and its `http` and `https`
//! container ports. The pods do not depend on the Gateway's listeners (the gateway opens the
//! listeners' ports itself), so a listener added does not restart them; the Service does.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{
            Container, ContainerPort, PodSecurityContext, Service, ServicePort, ServiceSpec, Sysctl,
        },
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use kube::api::ObjectMeta;

/// Labels and annotations on what the controller makes.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY`].
pub const CONTROLLER: &str = "weir-controller";
/// The label that selects one Gateway's pods (its value is the instance name).
pub const INSTANCE_LABEL: &str = "weir.dev/gateway";
/// The annotation naming the Gateway served (`namespace/name`).
pub const GATEWAY_ANNOTATION: &str = "weir.dev/gateway";
/// The annotation holding a digest of what was written, so an unchanged object is not
/// written again (the API server adds defaults, so objects cannot be compared as they are).
pub const DIGEST_ANNOTATION: &str = "weir.dev/spec-digest";
/// `app.kubernetes.io/name` of every Gateway's pods.
pub const APP_NAME: &str = "weir-gateway";
/// A Gateway's Service carries at most this many ports: what its gateway opens at most
/// (`weir-ingress --max-listener-ports`' default, beside the home ports).
pub const MAX_PORTS: usize = 64;
/// Annotations of the template Service copied to Gateways' Services: the cloud load
/// balancers' settings...
const SERVICE_ANNOTATION_PREFIXES: &[&str] = &[
    "service.beta.kubernetes.io/",
    "service.kubernetes.io/",
    "cloud.google.com/",
    "networking.gke.io/",
    "metallb.universe.tf/",
    "oci.oraclecloud.com/",
    "load-balancer.hetzner.cloud/",
];
/// ...save those that pin an address or share one: each Gateway has its own.
const SERVICE_ANNOTATION_PINS: &[&str] = &[
    "service.beta.kubernetes.io/aws-load-balancer-eip-allocations",
    "service.beta.kubernetes.io/aws-load-balancer-private-ipv4-addresses",
    "service.beta.kubernetes.io/aws-load-balancer-ipv6-addresses",
    "service.beta.kubernetes.io/azure-pip-name",
    "service.beta.kubernetes.io/azure-load-balancer-ipv4",
    "service.beta.kubernetes.io/azure-load-balancer-ipv6",
    "networking.gke.io/load-balancer-ip-addresses",
    "metallb.universe.tf/loadBalancerIPs",
    "metallb.universe.tf/allow-shared-ip",
    "metallb.universe.tf/ip-allocated-from-pool",
];

/// Flags of the template the controller sets itself (dropped from the template's arguments,
/// with their values).
const OWN_FLAGS: &[&str] = &[
    "--serve",
    "--gateway",
    "--listen",
    "--listen-tls",
    "--gateway-http-port",
    "--gateway-tls-port",
];
/// Environment variables that would say what `OWN_FLAGS` say.
const OWN_ENV: &[&str] = &["WEIR_SERVE", "WEIR_GATEWAYS"];
/// The sysctl that lets the non-root gateway bind the Gateway's ports below 1024 (a safe
/// sysctl: allowed in every pod, scoped to the pod's network namespace).
const UNPRIVILEGED_PORTS: &str = "net.ipv4.ip_unprivileged_port_start";

/// The instance name of Gateway `namespace/name`: a DNS label (Deployment, Service and label
/// value alike), readable, and unique by its digest of the full name.
pub fn instance_name(namespace: &str, name: &str) -> String {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("{namespace}/{name}").as_bytes(),
    );
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let readable: String = format!("{namespace}-{name}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63 - "weir-".len() - 1 - hex.len())
        .collect();
    format!("weir-{readable}-{hex}")
}

/// The labels of every object made for instance `instance`.
fn labels(instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), APP_NAME.into()),
        ("app.kubernetes.io/part-of".into(), "weir".into()),
        (MANAGED_BY.into(), CONTROLLER.into()),
        (INSTANCE_LABEL.into(), instance.into()),
    ])
}

fn meta(namespace: &str, instance: &str, gateway: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(instance.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(labels(instance)),
        annotations: Some(BTreeMap::from([(
            GATEWAY_ANNOTATION.to_string(),
            gateway.to_string(),
        )])),
        ..ObjectMeta::default()
    }
}

/// `meta` with the digest annotation of itself and `spec`, once both are final.
fn seal(mut meta: ObjectMeta, spec: &impl serde::Serialize) -> ObjectMeta {
    let text = serde_json::to_vec(&(&meta, spec)).unwrap_or_default();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &text);
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    meta.annotations
        .get_or_insert_with(Default::default)
        .insert(DIGEST_ANNOTATION.to_string(), hex);
    meta
}

/// The digest an object was written with.
pub fn digest_of(meta: &ObjectMeta) -> Option<&str> {
    meta.annotations
        .as_ref()?
        .get(DIGEST_ANNOTATION)
        .map(String::as_str)
}

/// The Gateway (`namespace/name`) an object was made for.
pub fn gateway_of(meta: &ObjectMeta) -> Option<&str> {
    meta.annotations
        .as_ref()?
        .get(GATEWAY_ANNOTATION)
        .map(String::as_str)
}

/// Whether the controller made this object (an object it did not make is never replaced).
pub fn is_managed(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY))
        .is_some_and(|v| v == CONTROLLER)
}

/// The deployment of Gateway `gateway` (`namespace/name`), made from `template`; `None` when
/// the template has no container running `weir-ingress`.
pub fn deployment(template: &Deployment, namespace: &str, gateway: &str) -> Option<Deployment> {
    let (gw_namespace, gw_name) = gateway.split_once('/')?;
    let instance = instance_name(gw_namespace, gw_name);
    let mut spec = template.spec.clone()?;
    let selector = BTreeMap::from([(INSTANCE_LABEL.to_string(), instance.clone())]);
    spec.selector = LabelSelector {
        match_labels: Some(selector.clone()),
        match_expressions: None,
    };
    let pod_meta = spec.template.metadata.get_or_insert_with(Default::default);
    pod_meta.labels = Some(labels(&instance));
    let pod = spec.template.spec.as_mut()?;
    let container = pod.containers.iter_mut().find(|c| runs_ingress(c))?;
    gateway_container(container, gateway);
    // Spread and anti-affinity select the pods of this Gateway, not the template's.
    let own = || {
        Some(LabelSelector {
            match_labels: Some(selector.clone()),
            match_expressions: None,
        })
    };
    for spread in pod.topology_spread_constraints.iter_mut().flatten() {
        spread.label_selector = own();
    }
    if let Some(anti) = pod
        .affinity
        .as_mut()
        .and_then(|a| a.pod_anti_affinity.as_mut())
    {
        for term in anti
            .preferred_during_scheduling_ignored_during_execution
            .iter_mut()
            .flatten()
        {
            term.pod_affinity_term.label_selector = own();
        }
        for term in anti
            .required_during_scheduling_ignored_during_execution
            .iter_mut()
            .flatten()
        {
            term.label_selector = own();
        }
    }
    let security = pod
        .security_context
        .get_or_insert_with(PodSecurityContext::default);
    let sysctls = security.sysctls.get_or_insert_with(Vec::new);
    sysctls.retain(|s| s.name != UNPRIVILEGED_PORTS);
    sysctls.push(Sysctl {
        name: UNPRIVILEGED_PORTS.to_string(),
        value: "0".to_string(),
    });
    // The replica count is the template's when the deployment is made, then whoever scales
    // it decides: not part of what is compared.
    let replicas = spec.replicas.take();
    let metadata = seal(meta(namespace, &instance, gateway), &spec);
    spec.replicas = replicas;
    Some(Deployment {
        metadata,
        spec: Some(spec),
        status: None,
    })
}

/// The template gateway's ports other than its traffic ones (its admin port): not for
/// listeners, and never on a Gateway's Service.
pub fn reserved_ports(template: &Deployment) -> Vec<u16> {
    let pod = template
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref());
    let container = pod.and_then(|p| p.containers.iter().find(|c| runs_ingress(c)));
    let mut reserved: Vec<u16> = container
        .and_then(|c| c.ports.as_ref())
        .into_iter()
        .flatten()
        .filter(|p| !matches!(p.name.as_deref(), Some("http" | "https")))
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .collect();
    // The admin listener, whether or not the template names its port.
    let admin = container
        .and_then(|c| flag_value(c, "--admin"))
        .and_then(|a| a.rsplit(':').next()?.parse::<u16>().ok());
    reserved.extend(admin);
    reserved
}

/// The ports of a Gateway's Service: its listeners' ports but the reserved ones, at most
/// [`MAX_PORTS`] (the lowest).
pub fn service_ports(listener_ports: &[u16], reserved: &[u16]) -> Vec<u16> {
    listener_ports
        .iter()
        .copied()
        .filter(|p| !reserved.contains(p))
        .take(MAX_PORTS)
        .collect()
}

/// The value of `--flag=VALUE` or `--flag VALUE` among a container's arguments.
fn flag_value(c: &Container, flag: &str) -> Option<String> {
    let args = c.args.as_ref()?;
    args.iter()
        .enumerate()
        .find_map(|(i, a)| match a.split_once('=') {
            Some((f, v)) if f == flag => Some(v.to_string()),
            None if a == flag => args.get(i + 1).cloned(),
            _ => None,
        })
}

fn runs_ingress(c: &Container) -> bool {
    c.command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .any(|a| a.rsplit('/').next() == Some("weir-ingress"))
        || c.name == "ingress"
}

/// The template's container, made to serve `gateway`, each listener at its own port number.
fn gateway_container(container: &mut Container, gateway: &str) {
    // An IPv6 template listens on IPv6 (dual-stack) as well.
    let any = match flag_value(container, "--listen") {
        Some(listen) if listen.starts_with('[') => "[::]",
        _ => "0.0.0.0",
    };
    let mut args = Vec::new();
    let mut skip_value = false;
    for arg in container.args.take().unwrap_or_default() {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        let flag = arg.split('=').next().unwrap_or_default();
        if OWN_FLAGS.contains(&flag) {
            skip_value = !arg.contains('=');
            continue;
        }
        args.push(arg);
    }
    args.extend([
        "--serve=gateways".to_string(),
        format!("--gateway={gateway}"),
        format!("--listen={any}:80"),
        format!("--listen-tls={any}:443"),
        "--gateway-http-port=80".to_string(),
        "--gateway-tls-port=443".to_string(),
    ]);
    container.args = Some(args);
    if let Some(env) = container.env.as_mut() {
        env.retain(|e| !OWN_ENV.contains(&e.name.as_str()));
    }
    // The template's traffic ports go; the others (admin) stay, under their names.
    if let Some(ports) = container.ports.as_mut() {
        ports.retain(|p: &ContainerPort| !matches!(p.name.as_deref(), Some("http" | "https")));
    }
}

fn port_name(port: u16) -> String {
    format!("port-{port}")
}

/// The Service of Gateway `gateway`: the template Service's type and load-balancer settings,
/// one port per listener port, selecting that Gateway's pods.
pub fn service(
    template: Option<&Service>,
    namespace: &str,
    gateway: &str,
    ports: &[u16],
) -> Option<Service> {
    let (gw_namespace, gw_name) = gateway.split_once('/')?;
    let instance = instance_name(gw_namespace, gw_name);
    let from = template.and_then(|t| t.spec.clone()).unwrap_or_default();
    let spec = ServiceSpec {
        type_: Some(from.type_.unwrap_or_else(|| "LoadBalancer".to_string())),
        external_traffic_policy: from.external_traffic_policy,
        internal_traffic_policy: from.internal_traffic_policy,
        load_balancer_class: from.load_balancer_class,
        load_balancer_source_ranges: from.load_balancer_source_ranges,
        allocate_load_balancer_node_ports: from.allocate_load_balancer_node_ports,
        ip_family_policy: from.ip_family_policy,
        ip_families: from.ip_families,
        selector: Some(BTreeMap::from([(
            INSTANCE_LABEL.to_string(),
            instance.clone(),
        )])),
        ports: Some(
            ports
                .iter()
                .map(|&port| ServicePort {
                    name: Some(port_name(port)),
                    port: i32::from(port),
                    target_port: Some(IntOrString::Int(i32::from(port))),
                    protocol: Some("TCP".to_string()),
                    ..ServicePort::default()
                })
                .collect(),
        ),
        ..ServiceSpec::default()
    };
    let mut metadata = meta(namespace, &instance, gateway);
    // Cloud load-balancer settings live in the template Service's annotations; names (DNS)
    // and pinned addresses are the template's own.
    if let Some(extra) = template.and_then(|t| t.metadata.annotations.clone()) {
        let annotations = metadata.annotations.get_or_insert_with(Default::default);
        for (k, v) in extra {
            let cloud = SERVICE_ANNOTATION_PREFIXES.iter().any(|p| k.starts_with(p));
            if cloud && !SERVICE_ANNOTATION_PINS.contains(&k.as_str()) {
                annotations.entry(k).or_insert(v);
            }
        }
    }
    Some(Service {
        metadata: seal(metadata, &spec),
        spec: Some(spec),
        status: None,
    })
}

#[cfg(test)]
mod tests;
