//! `weirctl status` and `weirctl config`: the controller's admin pages `/nodes` and
//! `/nodes/NAMESPACE/POD`, printed for a person (or passed through as JSON).

use std::{
    process::ExitCode,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context as _};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::Value;

/// The controller's admin listener, as its manifests and defaults have it.
pub const DEFAULT_ADMIN: &str = "http://127.0.0.1:15014";

/// A node behind its latest view for this long (seconds) makes `status` exit 1, as the
/// controller's `weir_controller_nodes_behind` counts it.
const BEHIND_AFTER: u64 = 30;

/// GETs `path` from the controller's admin listener: the JSON it answers, or why not.
fn get(admin: &str, path: &str) -> anyhow::Result<Value> {
    let url = format!("{}{path}", admin.trim_end_matches('/'));
    let uri: hyper::Uri = url.parse().with_context(|| format!("invalid URL {url}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let exchange = async {
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
    let (status, body) = runtime.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(10), exchange)
            .await
            .with_context(|| format!("{url}: no answer within 10s"))?
    })?;
    if !status.is_success() {
        bail!("{url}: {status}: {}", String::from_utf8_lossy(&body).trim());
    }
    serde_json::from_slice(&body).with_context(|| format!("{url}: not JSON"))
}

/// `weirctl status`.
pub fn status(admin: &str, json: bool) -> ExitCode {
    let listed = match get(admin, "/nodes") {
        Ok(listed) => listed,
        Err(e) => {
            eprintln!("weirctl: {e:#}");
            return ExitCode::from(2);
        }
    };
    let Some(nodes) = listed["nodes"].as_array().cloned() else {
        eprintln!("weirctl: {admin}/nodes answered without a node list: is it weir-controller's admin address?");
        return ExitCode::from(2);
    };
    let unwell = |n: &Value| {
        !n["refused"].is_null() || n["behindSeconds"].as_u64().unwrap_or(0) >= BEHIND_AFTER
    };
    let failing = nodes.iter().filter(|n| unwell(n)).count();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&listed).unwrap_or_default()
        );
    } else {
        print_nodes(&listed, &nodes);
    }
    if failing > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn print_nodes(listed: &Value, nodes: &[Value]) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let version = |v: &Value| v.as_u64().map_or("-".to_string(), |v| v.to_string());
    let rows: Vec<[String; 8]> = nodes
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
            ]
        })
        // What nodes say about themselves is printed with control characters escaped: a
        // hostile node must not write escape sequences or lines into an operator's terminal.
        .map(|row: [String; 8]| row.map(|cell| printable(&cell)))
        .collect();
    println!(
        "controller: compile version {}, {} node(s) connected",
        version(&listed["version"]),
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
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
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

/// `weirctl config NAMESPACE/POD`.
pub fn config(admin: &str, node: &str) -> ExitCode {
    let Some((namespace, pod)) = node.split_once('/') else {
        eprintln!("weirctl: name the node NAMESPACE/POD (got {node:?})");
        return ExitCode::from(2);
    };
    match get(admin, &format!("/nodes/{namespace}/{pod}")) {
        Ok(config) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&config).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        // The controller answered: no such node (1); it did not answer (2), as `status`.
        Err(e) => {
            eprintln!("weirctl: {e:#}");
            let not_found = e.to_string().contains(" 404 ");
            ExitCode::from(if not_found { 1 } else { 2 })
        }
    }
}
