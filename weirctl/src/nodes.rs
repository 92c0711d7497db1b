//! `weirctl status` and `weirctl config`: the controller's admin pages `/nodes` and
//! `/nodes/NAMESPACE/POD`, printed for a person (or passed through as JSON).

use std::{
    process::ExitCode,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;

use crate::forward;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::Value;

/// The controller's admin listener, as its manifests and defaults have it.
pub const DEFAULT_ADMIN: &str = "http://127.0.0.1:15014";

/// A node behind its latest view for this long (seconds) makes `status` exit 1, as the
/// controller's `weir_controller_nodes_behind` counts it.
const BEHIND_AFTER: u64 = 30;

/// How weirctl reaches the controller's admin pages.
pub enum Source {
    /// One admin listener, by its URL (inside the controller's pod, or a port-forward).
    Admin(String),
    /// Every ready replica of the controller, through the Kubernetes API.
    Cluster(forward::Cluster),
}

/// What one controller replica answered: its JSON, or why not (and whether it was a 404).
struct Page {
    from: String,
    result: Result<Value, (bool, anyhow::Error)>,
}

/// GETs `path` from the controller (every replica of it, through the cluster): what each
/// answered. An error when none could be asked.
fn fetch(source: &Source, path: &str) -> anyhow::Result<Vec<Page>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answers = runtime.block_on(async {
        match source {
            Source::Admin(admin) => Ok(vec![admin_get(admin, path).await]),
            Source::Cluster(cluster) => forward::get(cluster, path).await,
        }
    })?;
    Ok(answers
        .into_iter()
        .map(|answer| {
            let from = answer.replica;
            let result = match answer.result {
                Err(e) => Err((false, e)),
                Ok((status, body)) if !status.is_success() => Err((
                    status == hyper::StatusCode::NOT_FOUND,
                    anyhow::anyhow!("{status}: {}", String::from_utf8_lossy(&body).trim()),
                )),
                Ok((_, body)) => serde_json::from_slice(&body)
                    .map_err(|e| (false, anyhow::anyhow!("not JSON: {e}"))),
            };
            Page { from, result }
        })
        .collect())
}

/// GETs `path` from one admin listener.
async fn admin_get(admin: &str, path: &str) -> forward::Answer {
    let url = format!("{}{path}", admin.trim_end_matches('/'));
    let exchange = async {
        let uri: hyper::Uri = url.parse().with_context(|| format!("invalid URL {url}"))?;
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let response = client
            .get(uri)
            .await
            .with_context(|| format!("cannot reach the controller at {url}"))?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    };
    // The whole exchange within 10 s, the body too.
    let result = tokio::time::timeout(std::time::Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within 10s")));
    forward::Answer {
        replica: admin.trim_end_matches('/').to_string(),
        result,
    }
}

/// `weirctl status`.
pub fn status(source: &Source, json: bool) -> ExitCode {
    let pages = match fetch(source, "/nodes") {
        Ok(pages) => pages,
        Err(e) => {
            eprintln!("weirctl: {e:#}");
            return ExitCode::from(2);
        }
    };
    // Every replica's nodes, each marked with the replica it is connected to; a replica that
    // cannot be asked is said, and the others' nodes are listed.
    let (mut nodes, mut version, mut answered) = (Vec::new(), None::<u64>, Vec::new());
    let mut unanswered = 0;
    for page in pages {
        let listed = match page.result {
            Ok(listed) if listed["nodes"].is_array() => listed,
            Ok(_) => {
                eprintln!("weirctl: {}/nodes answered without a node list: is it weir-controller's admin address?", page.from);
                unanswered += 1;
                continue;
            }
            Err((_, e)) => {
                eprintln!("weirctl: controller {}: {e:#}", page.from);
                unanswered += 1;
                continue;
            }
        };
        version = version.max(listed["version"].as_u64());
        for mut node in listed["nodes"].as_array().cloned().unwrap_or_default() {
            node["controller"] = Value::String(page.from.clone());
            nodes.push(node);
        }
        answered.push(page.from);
    }
    if answered.is_empty() {
        return ExitCode::from(2);
    }
    let unwell = |n: &Value| {
        !n["refused"].is_null() || n["behindSeconds"].as_u64().unwrap_or(0) >= BEHIND_AFTER
    };
    let failing = nodes.iter().filter(|n| unwell(n)).count();
    if json {
        let listed =
            serde_json::json!({"version": version, "controllers": answered, "nodes": nodes});
        println!(
            "{}",
            serde_json::to_string_pretty(&listed).unwrap_or_default()
        );
    } else {
        print_nodes(version, &answered, &nodes);
    }
    // A replica that did not answer may hold nodes not listed: the answer is incomplete (2).
    if unanswered > 0 {
        ExitCode::from(2)
    } else if failing > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn print_nodes(compiled: Option<u64>, controllers: &[String], nodes: &[Value]) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let version = |v: &Value| v.as_u64().map_or("-".to_string(), |v| v.to_string());
    let rows: Vec<[String; 9]> = nodes
        .iter()
        .map(|n| {
            let state = match (&n["refused"], n["behindSeconds"].as_u64()) {
                (Value::Object(r), _) => {
                    format!(
                        "NACK {}: {}",
                        version(&r["version"]),
                        r["error"].as_str().unwrap_or("")
                    )
                }
                (_, Some(s)) => format!("behind {}", ago(s)),
                _ => "in sync".to_string(),
            };
            let expiry = match n["certificateExpiry"].as_u64() {
                Some(t) if t <= now => format!("EXPIRED {} ago", ago(now - t)),
                Some(t) => format!("in {}", ago(t - now)),
                None => "-".to_string(),
            };
            let seen = n["lastSeen"].as_u64().map_or("-".to_string(), |t| {
                format!("{} ago", ago(now.saturating_sub(t)))
            });
            [
                n["role"].as_str().unwrap_or("").to_string(),
                format!(
                    "{}/{}",
                    n["namespace"].as_str().unwrap_or(""),
                    n["pod"].as_str().unwrap_or("")
                ),
                n["nodeVersion"].as_str().unwrap_or("").to_string(),
                version(&n["applied"]),
                version(&n["latest"]),
                state,
                expiry,
                seen,
                // The replica's pod name (the namespace is the controller's).
                n["controller"]
                    .as_str()
                    .map(|c| c.rsplit('/').next().unwrap_or(c))
                    .unwrap_or("")
                    .to_string(),
            ]
        })
        // What nodes say about themselves is printed with control characters escaped: a
        // hostile node must not write escape sequences or lines into an operator's terminal.
        .map(|row: [String; 9]| row.map(|cell| printable(&cell)))
        .collect();
    let replicas = match controllers {
        [_] => String::new(),
        all => format!(" ({} replicas)", all.len()),
    };
    println!(
        "controller: compile version {}{replicas}, {} node(s) connected",
        compiled.map_or("-".to_string(), |v| v.to_string()),
        nodes.len()
    );
    if rows.is_empty() {
        return;
    }
    let header = [
        "ROLE",
        "NODE",
        "SOFTWARE",
        "APPLIED",
        "LATEST",
        "STATE",
        "CERTIFICATE",
        "LAST SEEN",
        "CONTROLLER",
    ];
    // Which replica a node is connected to, when there are several.
    let columns = if controllers.len() > 1 { 9 } else { 8 };
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .take(columns)
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// `text` with its control characters (escapes, newlines) shown escaped.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c.is_control() {
            true => c.escape_default().collect(),
            false => c.to_string(),
        })
        .collect()
}

/// `3s`, `5m`, `2h`, `4d`: how long, roughly.
fn ago(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// `weirctl config NAMESPACE/POD`: from the replica the node is connected to.
pub fn config(source: &Source, node: &str) -> ExitCode {
    let Some((namespace, pod)) = node.split_once('/') else {
        eprintln!("weirctl: name the node NAMESPACE/POD (got {node:?})");
        return ExitCode::from(2);
    };
    let pages = match fetch(source, &format!("/nodes/{namespace}/{pod}")) {
        Ok(pages) => pages,
        Err(e) => {
            eprintln!("weirctl: {e:#}");
            return ExitCode::from(2);
        }
    };
    let mut unreachable = false;
    for page in pages {
        match page.result {
            Ok(config) => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&config).unwrap_or_default()
                );
                return ExitCode::SUCCESS;
            }
            Err((true, _)) => {}
            Err((false, e)) => {
                eprintln!("weirctl: controller {}: {e:#}", page.from);
                unreachable = true;
            }
        }
    }
    // No replica has it (1), or one that might could not be asked (2), as `status`.
    if unreachable {
        return ExitCode::from(2);
    }
    eprintln!(
        "weirctl: no node {namespace}/{pod} is connected to the controller, or it has no view yet"
    );
    ExitCode::from(1)
}
