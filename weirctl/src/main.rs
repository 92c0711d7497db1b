//! weirctl: asks Weir about a configuration, and the controller about its nodes.
//!
//! `weirctl analyze DIR` compiles a directory of Kubernetes objects the way `weir-ingress
//! --config-dir` and the controller do, and prints every finding with the file its object came
//! from, the object and the field:
//!
//! - **errors**: objects the compile refuses (an invalid value, a field Weir does not support,
//!   a document that does not parse); Weir serves the rest without them;
//! - **warnings**: what compiles but deserves a look: references that do not resolve (a
//!   backend Service, a Secret, a ReferenceGrant missing), routes that attach to no listener
//!   and why, policies that target nothing, and rules another route shadows (the same host and
//!   match, so one of them never serves).
//!
//! Exit status: 0 when nothing is refused (warnings only, unless `--strict`), 1 when an object
//! is refused (or, with `--strict`, anything is found), 2 when the directory cannot be read.
//!
//! `weirctl status` lists the nodes connected to the controller and how far each is;
//! `weirctl config NAMESPACE/POD` prints what a node was sent, secrets redacted;
//! `weirctl check` checks a cluster before and after the install.

use std::{collections::HashMap, path::PathBuf, process::ExitCode};

mod check;
mod forward;
mod nodes;

use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;
use weir_api::{load::load_dir_partial, Compiler, ConfigError, Objects, Snapshot};

/// Asks Weir about a configuration.
#[derive(Parser)]
#[command(name = "weirctl", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compiles a directory of objects as Weir would, and prints every error and warning with
    /// file, object and field.
    Analyze {
        /// The directory (YAML as `kubectl get -o yaml` writes it; read recursively).
        dir: PathBuf,
        /// `text` (a line per finding) or `json` (`{"errors": [...], "warnings": [...]}`).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Exit 1 on warnings too.
        #[arg(long)]
        strict: bool,
    },
    /// Lists every node connected to the controller: role, pod, software version, the view
    /// version it applied and its latest, a refusal (NACK) with its error, certificate expiry,
    /// last seen. Exit 1 when a node refuses its view or has been behind for 30 s or more, 2
    /// when the controller (or one of its replicas) cannot be asked.
    Status {
        #[command(flatten)]
        reach: Reach,
        /// `text` (a line per node) or `json` (every replica's `/nodes`, merged).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Checks a cluster before and after installing Weir: the kinds it reads are served, a
    /// controller holds the status Lease, the injector's webhook has a valid caBundle, the
    /// trust bundle is published and far from expiry, pods of namespaces labelled for
    /// injection have the sidecar. Exit 1 on any error.
    Check {
        /// The kubeconfig (default: the usual kubeconfig, else the in-cluster configuration,
        /// as kubectl finds them).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// Weir's namespace.
        #[arg(long, default_value = "weir-system")]
        namespace: String,
        /// The controller's status Lease (NAMESPACE/NAME, or NAME in --namespace).
        #[arg(long, default_value = "weir-controller")]
        status_lease: String,
        /// The injector's MutatingWebhookConfiguration.
        #[arg(long, default_value = "weir-injector")]
        injector_webhook: String,
        /// The trust bundle's ConfigMap (NAMESPACE/NAME, or NAME in --namespace).
        #[arg(long, default_value = "weir-ca-root")]
        trust_bundle_config_map: String,
    },
    /// Prints the configuration a node was sent last (`NAMESPACE/POD`), as JSON, secrets
    /// redacted.
    Config {
        /// `NAMESPACE/POD`.
        node: String,
        #[command(flatten)]
        reach: Reach,
    },
}

/// How `status` and `config` reach the controller's admin pages (served on loopback only):
/// `--controller-admin URL` asks one listener (inside the controller's pod, or through a
/// port-forward); otherwise every ready replica is asked through the Kubernetes API by
/// port-forward, with `--kubeconfig` or the usual kubeconfig; with neither (inside the
/// controller's pod), the pod's own listener.
#[derive(clap::Args)]
struct Reach {
    /// The controller's admin address.
    #[arg(long, conflicts_with = "kubeconfig")]
    controller_admin: Option<String>,
    /// The kubeconfig (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Weir's namespace.
    #[arg(long, default_value = "weir-system")]
    namespace: String,
    /// The controller's Deployment.
    #[arg(long, default_value = "weir-controller")]
    controller: String,
}

impl Reach {
    fn source(self) -> nodes::Source {
        if let Some(admin) = self.controller_admin {
            return nodes::Source::Admin(admin);
        }
        // As kubectl finds a kubeconfig: the files $KUBECONFIG lists, else ~/.kube/config.
        let usual: Vec<PathBuf> = match std::env::var_os("KUBECONFIG").filter(|k| !k.is_empty()) {
            Some(list) => std::env::split_paths(&list).collect(),
            None => std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".kube/config"))
                .into_iter()
                .collect(),
        };
        if self.kubeconfig.is_none() && !usual.iter().any(|k| k.exists()) {
            return nodes::Source::Admin(nodes::DEFAULT_ADMIN.to_string());
        }
        nodes::Source::Cluster(forward::Cluster {
            kubeconfig: self.kubeconfig,
            namespace: self.namespace,
            deployment: self.controller,
        })
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

/// One thing the analysis found.
#[derive(Debug, Serialize)]
struct Finding {
    /// The file its object came from (none for a finding about the whole directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    /// `Kind namespace/name`.
    object: String,
    /// The field, when the finding names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    /// What is wrong.
    message: String,
}

/// Everything found in one directory.
#[derive(Debug, Default, Serialize)]
struct Report {
    errors: Vec<Finding>,
    warnings: Vec<Finding>,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Analyze {
            dir,
            output,
            strict,
        } => analyze_dir(&dir, output, strict),
        Command::Status { reach, output } => {
            nodes::status(&reach.source(), matches!(output, Output::Json))
        }
        Command::Config { node, reach } => nodes::config(&reach.source(), &node),
        Command::Check {
            kubeconfig,
            namespace,
            status_lease,
            injector_webhook,
            trust_bundle_config_map,
        } => check::check(&check::Names {
            kubeconfig,
            namespace,
            lease: status_lease,
            webhook: injector_webhook,
            trust_bundle: trust_bundle_config_map,
        }),
    }
}

/// `weirctl analyze DIR`.
fn analyze_dir(dir: &std::path::Path, output: Output, strict: bool) -> ExitCode {
    if let Err(e) = std::fs::read_dir(dir) {
        eprintln!("weirctl: cannot read {}: {e}", dir.display());
        return ExitCode::from(2);
    }
    let (objects, load_errors) = load_dir_partial(dir);
    if load_errors.iter().any(|e| {
        e.location
            .file
            .as_deref()
            .is_some_and(|f| std::path::Path::new(f).is_dir())
    }) {
        for e in &load_errors {
            eprintln!("weirctl: {e}");
        }
        return ExitCode::from(2);
    }
    let report = analyze(objects, load_errors);
    match output {
        Output::Json => match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("weirctl: {e}");
                return ExitCode::from(2);
            }
        },
        Output::Text => print_text(&report, dir),
    }
    let failed = !report.errors.is_empty() || (strict && !report.warnings.is_empty());
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Compiles `objects` as a node would (a refused object left out, the rest compiled) and
/// collects what it found.
fn analyze(objects: Objects, load_errors: Vec<ConfigError>) -> Report {
    let files: HashMap<String, Option<String>> = objects
        .iter()
        .map(|(o, l)| (o.key().to_string(), l.file.clone()))
        .collect();
    let mut report = Report::default();
    let compiled = match Compiler::default().compile(objects, load_errors) {
        Ok(compiled) => compiled,
        Err(errors) => {
            report.errors = errors.0.into_iter().map(Finding::from).collect();
            return report;
        }
    };
    for rejection in compiled.rejected {
        report
            .errors
            .extend(rejection.errors.into_iter().map(Finding::from));
    }
    for warning in &compiled.snapshot.warnings {
        // A warning opens with the object it is about: `Kind namespace/name: ...`.
        let about = files
            .keys()
            .filter(|key| warning.starts_with(&format!("{key}: ")))
            .max_by_key(|key| key.len());
        report.warnings.push(match about {
            Some(key) => Finding {
                file: files[key].clone(),
                object: key.clone(),
                field: None,
                message: warning[key.len() + 2..].to_string(),
            },
            None => Finding {
                file: None,
                object: "-".into(),
                field: None,
                message: warning.clone(),
            },
        });
    }
    report.warnings.extend(shadowed(&compiled.snapshot, &files));
    report
}

/// Rules that never serve on some host: another route has that host and the same match, and
/// goes first (the older object, then `namespace/name`, then rule order, as the router orders
/// them).
fn shadowed(snapshot: &Snapshot, files: &HashMap<String, Option<String>>) -> Vec<Finding> {
    let mut first: HashMap<(String, String), &weir_api::model::Route> = HashMap::new();
    let mut routes: Vec<_> = snapshot.routes.iter().collect();
    routes.sort_by(|a, b| a.order.cmp(&b.order));
    let mut found = Vec::new();
    for route in routes {
        let matcher = serde_json::to_string(&route.matcher).unwrap_or_default();
        let mut hidden = Vec::new();
        let mut winner = None;
        for host in &route.hosts {
            let key = (
                serde_json::to_string(host).unwrap_or_default(),
                matcher.clone(),
            );
            match first.get(&key) {
                Some(w) => {
                    hidden.push(host_text(host));
                    winner.get_or_insert(*w);
                }
                None => {
                    first.insert(key, route);
                }
            }
        }
        let Some(winner) = winner else {
            continue;
        };
        let object = object_of(&route.name);
        found.push(Finding {
            file: files.get(&object).cloned().flatten(),
            field: Some(format!(
                "spec.rules[{}].matches[{}]",
                route.order.rule, route.order.matcher
            )),
            message: format!(
                "shadowed on {}: {} (spec.rules[{}]) has the same host and match and goes first, so this rule never serves there",
                hidden.join(", "),
                object_of(&winner.name),
                winner.order.rule
            ),
            object,
        });
    }
    found
}

fn host_text(host: &weir_api::model::HostMatch) -> String {
    use weir_api::model::HostMatch;
    match host {
        HostMatch::Exact(h) => h.clone(),
        HostMatch::Wildcard(suffix) => format!("*{suffix}"),
        HostMatch::Any => "any host".into(),
    }
}

/// `Kind namespace/name` of a route named `httproute:ns/name:rule`.
fn object_of(route: &str) -> String {
    let mut parts = route.splitn(3, ':');
    let kind = match parts.next() {
        Some("httproute") => "HTTPRoute",
        Some("grpcroute") => "GRPCRoute",
        Some("ingress") => "Ingress",
        Some(other) => other,
        None => "-",
    };
    format!("{kind} {}", parts.next().unwrap_or("-"))
}

impl From<ConfigError> for Finding {
    fn from(e: ConfigError) -> Self {
        Finding {
            file: e.location.file,
            object: e.object,
            field: Some(e.field).filter(|f| !f.is_empty() && f != "-"),
            message: e.message,
        }
    }
}

fn print_text(report: &Report, dir: &std::path::Path) {
    for (severity, findings) in [("error", &report.errors), ("warning", &report.warnings)] {
        for f in findings {
            let file = f.file.as_deref().unwrap_or("-");
            match &f.field {
                Some(field) => println!("{severity}: {file}: {}: {field}: {}", f.object, f.message),
                None => println!("{severity}: {file}: {}: {}", f.object, f.message),
            }
        }
    }
    let (errors, warnings) = (report.errors.len(), report.warnings.len());
    if errors + warnings == 0 {
        println!("{}: no problems found", dir.display());
    } else {
        println!(
            "{}: {errors} error(s) (refused: the rest serves without them), {warnings} warning(s)",
            dir.display()
        );
    }
}
