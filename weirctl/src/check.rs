//! `weirctl check`: is the cluster ready for Weir, and is Weir well? Before an install it says
//! which kinds the API server lacks; after, whether the controller holds its status Lease, the
//! injector's webhook trusts a valid CA, the trust bundle is published and far from expiry,
//! and which pods of namespaces labelled for injection run without the sidecar.

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{SystemTime, UNIX_EPOCH},
};

use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhookConfiguration,
    coordination::v1::Lease,
    core::v1::{ConfigMap, Namespace, Pod},
};
use kube::{
    api::{DynamicObject, ListParams},
    Api, Client,
};
use weir_api::compile::INJECTED_ANNOTATION;
use weir_controller::kubernetes::{client, is_optional, WATCHED};

/// Where Weir's install keeps what is checked (the controller's defaults).
pub struct Names {
    pub kubeconfig: Option<PathBuf>,
    pub namespace: String,
    pub lease: String,
    pub webhook: String,
    pub trust_bundle: String,
}

/// A certificate expiring within this many days is a warning.
const EXPIRY_WARNING_DAYS: i64 = 30;

#[derive(Clone, Copy, PartialEq)]
enum Level {
    Ok,
    Warning,
    Error,
}

struct Report {
    errors: usize,
}

impl Report {
    fn say(&mut self, level: Level, what: &str, message: &str) {
        let tag = match level {
            Level::Ok => "ok     ",
            Level::Warning => "warning",
            Level::Error => "error  ",
        };
        self.errors += usize::from(level == Level::Error);
        println!("{tag}  {what:<13} {message}");
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `weirctl check`.
pub fn check(names: &Names) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("weirctl: {e}");
            return ExitCode::from(2);
        }
    };
    let mut report = Report { errors: 0 };
    runtime.block_on(run(names, &mut report));
    println!(
        "{}",
        match report.errors {
            0 => "weirctl check: no errors".to_string(),
            n => format!("weirctl check: {n} error(s)"),
        }
    );
    if report.errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

async fn run(names: &Names, report: &mut Report) {
    // Every answer within 10 s: a stalled API server is said, not waited on forever.
    let timeout = Some(std::time::Duration::from_secs(10));
    let client = match client(names.kubeconfig.as_deref(), timeout).await {
        Ok(client) => client,
        Err(e) => return report.say(Level::Error, "kubernetes", &format!("{e:#}")),
    };
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if let Err(e) = namespaces.list(&ListParams::default().limit(1)).await {
        let message = format!("the API server does not answer: {e}");
        return report.say(Level::Error, "kubernetes", &message);
    }
    report.say(Level::Ok, "kubernetes", "the API server answers");
    kinds(&client, report).await;
    lease(&client, names, report).await;
    webhook(&client, names, report).await;
    trust_bundle(&client, names, report).await;
    injection(&client, report).await;
}

/// Every kind Weir reads is served (its CRD installed at the version Weir reads).
async fn kinds(client: &Client, report: &mut Report) {
    let mut served = 0;
    for kind in WATCHED {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind.api_resource());
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => served += 1,
            Err(kube::Error::Api(e)) if e.code == 404 => {
                let resource = kind.api_resource();
                let what = format!(
                    "{} {} ({})",
                    resource.api_version, resource.kind, resource.plural
                );
                if is_optional(kind) {
                    let message = format!("{what} is not served: install the Gateway API's CRDs of v1.5 or later to use it (Weir serves the rest)");
                    report.say(Level::Warning, "kinds", &message);
                } else {
                    let message = format!("{what} is not served: install its CRD (manifests/crds, or the Gateway API's standard channel); the controller waits for it");
                    report.say(Level::Error, "kinds", &message);
                }
            }
            Err(e) => {
                let message = format!("{}: {e}", kind.api_resource().plural);
                report.say(Level::Error, "kinds", &message);
            }
        }
    }
    let message = format!(
        "{served} of the {} kinds Weir reads are served",
        WATCHED.len()
    );
    let level = if served == WATCHED.len() {
        Level::Ok
    } else {
        Level::Warning
    };
    report.say(level, "kinds", &message);
}

/// `(namespace, name)` of a `NAMESPACE/NAME` flag, the namespace defaulting to Weir's.
fn split<'a>(names: &'a Names, value: &'a str) -> (&'a str, &'a str) {
    value
        .split_once('/')
        .unwrap_or((names.namespace.as_str(), value))
}

/// A controller replica holds the status Lease and renews it.
async fn lease(client: &Client, names: &Names, report: &mut Report) {
    let (namespace, name) = split(names, &names.lease);
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let spec = match leases.get_opt(name).await {
        Ok(Some(lease)) => lease.spec.unwrap_or_default(),
        Ok(None) => {
            let message = format!("Lease {namespace}/{name} does not exist: is weir-controller running (--kubernetes)?");
            return report.say(Level::Error, "controller", &message);
        }
        Err(e) => return report.say(Level::Error, "controller", &e.to_string()),
    };
    let renewed = spec.renew_time.map(|t| t.0.as_second());
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    match (spec.holder_identity, renewed) {
        (Some(holder), Some(renewed)) if !holder.is_empty() && renewed + duration >= now() => {
            let message = format!(
                "Lease {namespace}/{name} held by {holder}, renewed {}s ago",
                (now() - renewed).max(0)
            );
            report.say(Level::Ok, "controller", &message);
        }
        (holder, _) => {
            let message = format!(
                "Lease {namespace}/{name} is not renewed (last holder {}): no controller replica writes status; is it running?",
                holder.unwrap_or_else(|| "none".into())
            );
            report.say(Level::Error, "controller", &message);
        }
    }
}

/// The expiry (Unix seconds) of every certificate in `pem`, or why it could not be read.
fn expiries(pem: &[u8]) -> Result<Vec<i64>, String> {
    let mut out = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| format!("not PEM: {e}"))?;
        let cert = block
            .parse_x509()
            .map_err(|e| format!("not a certificate: {e}"))?;
        out.push(cert.validity().not_after.timestamp());
    }
    if out.is_empty() {
        return Err("no certificate in it".into());
    }
    Ok(out)
}

/// Says how soon the first of `expiries` comes: an error once past, a warning within 30 days.
fn expiry(report: &mut Report, what: &str, subject: &str, expiries: &[i64]) {
    let first = expiries.iter().copied().min().unwrap_or_default();
    let days = (first - now()) / 86_400;
    let (level, message) = match days {
        _ if first <= now() => (
            Level::Error,
            format!("{subject}: a certificate has expired"),
        ),
        d if d < EXPIRY_WARNING_DAYS => (
            Level::Warning,
            format!("{subject}: a certificate expires in {d} day(s)"),
        ),
        d => (
            Level::Ok,
            format!(
                "{subject}: {} certificate(s), the first expiring in {d} days",
                expiries.len()
            ),
        ),
    };
    report.say(level, what, &message);
}

/// The injector's webhook has a caBundle the API server can trust it with.
async fn webhook(client: &Client, names: &Names, report: &mut Report) {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let name = &names.webhook;
    let configuration = match api.get_opt(name).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            let message = format!("MutatingWebhookConfiguration {name} does not exist: sidecars are not injected (apply manifests/injector.yaml)");
            return report.say(Level::Warning, "webhook", &message);
        }
        Err(e) => return report.say(Level::Error, "webhook", &e.to_string()),
    };
    let hooks = configuration.webhooks.unwrap_or_default();
    if hooks.is_empty() {
        let message =
            format!("MutatingWebhookConfiguration {name} has no webhooks: no pod is injected");
        report.say(Level::Error, "webhook", &message);
    }
    for hook in &hooks {
        let subject = format!("MutatingWebhookConfiguration {name} ({})", hook.name);
        match hook
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| expiries(&b.0))
        {
            None => {
                let message = format!("{subject}: no caBundle yet: the controller publishes it once it runs; until then the API server cannot call the injector");
                report.say(Level::Error, "webhook", &message);
            }
            Some(Err(e)) => {
                report.say(Level::Error, "webhook", &format!("{subject}: caBundle {e}"))
            }
            Some(Ok(found)) => expiry(report, "webhook", &subject, &found),
        }
    }
}

/// The trust bundle is published, and its roots are far from expiry.
async fn trust_bundle(client: &Client, names: &Names, report: &mut Report) {
    let (namespace, name) = split(names, &names.trust_bundle);
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let subject = format!("ConfigMap {namespace}/{name}");
    match api.get_opt(name).await {
        Ok(Some(map)) => match map.data.unwrap_or_default().get("ca.crt") {
            Some(pem) => match expiries(pem.as_bytes()) {
                Ok(found) => expiry(report, "trust bundle", &subject, &found),
                Err(e) => report.say(
                    Level::Error,
                    "trust bundle",
                    &format!("{subject}: ca.crt {e}"),
                ),
            },
            None => report.say(
                Level::Error,
                "trust bundle",
                &format!("{subject} has no ca.crt"),
            ),
        },
        Ok(None) => {
            let message =
                format!("{subject} does not exist: the controller publishes it once it runs");
            report.say(Level::Error, "trust bundle", &message);
        }
        Err(e) => report.say(Level::Error, "trust bundle", &e.to_string()),
    }
}

/// Pods of namespaces labelled for injection that run without the sidecar.
async fn injection(client: &Client, report: &mut Report) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let labelled = match namespaces
        .list(&ListParams::default().labels("weir.dev/inject=enabled"))
        .await
    {
        Ok(list) => list.items,
        Err(e) => return report.say(Level::Error, "injection", &e.to_string()),
    };
    let mut meshed = 0;
    for namespace in &labelled {
        let name = namespace.metadata.name.clone().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &name);
        let list = match pods.list(&ListParams::default()).await {
            Ok(list) => list,
            Err(e) => {
                let message = format!("cannot list the pods of namespace {name}: {e}");
                report.say(Level::Warning, "injection", &message);
                continue;
            }
        };
        let bare: Vec<String> = list
            .items
            .iter()
            .filter(|p| {
                !p.metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key(INJECTED_ANNOTATION))
            })
            .map(|p| format!("{name}/{}", p.metadata.name.as_deref().unwrap_or_default()))
            .collect();
        meshed += list.items.len() - bare.len();
        if !bare.is_empty() {
            let message = format!(
                "namespace {name} is labelled weir.dev/inject=enabled, but these pods run without the sidecar (created before the label or while the injector was down? restart them): {}",
                bare.join(", ")
            );
            report.say(Level::Warning, "injection", &message);
        }
    }
    let message = format!(
        "{} namespace(s) labelled weir.dev/inject=enabled, {meshed} pod(s) with the sidecar",
        labelled.len()
    );
    report.say(Level::Ok, "injection", &message);
}
