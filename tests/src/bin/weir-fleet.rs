//! Load tools for the controller benchmark (bench/controller.sh):
//!
//! - `weir-fleet nodes`: N simulated ingress nodes in one process, each on its own TLS
//!   connection and config stream, ACKing every version. After they all have the first
//!   version, it changes an object in the config directory K times and reports, per change,
//!   the time until the last node received the new version (and ACKed it).
//! - `weir-fleet propagation`: changes a route K times and measures, per change, the time
//!   until a connected `weir-ingress` serves it.
//! - `weir-fleet certs`: certificates signed per second over gRPC.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use weir_api::proto::{
    config_discovery_client::ConfigDiscoveryClient, identity_client::IdentityClient,
    watch_request::Kind, Ack, CertifyRequest, Hello, Role, WatchRequest,
};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Target {
    /// The controller, `https://127.0.0.1:15010`.
    #[arg(long)]
    controller: String,
    /// Its trust bundle.
    #[arg(long)]
    ca: PathBuf,
    /// A token file for the ServiceAccount to act as.
    #[arg(long)]
    token: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    Nodes {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// The controller's config directory (a file `fleet-change.yaml` is rewritten there).
        #[arg(long)]
        config_dir: PathBuf,
        #[arg(long, default_value_t = 20)]
        changes: usize,
    },
    Propagation {
        /// The ingress's traffic address.
        #[arg(long)]
        ingress: std::net::SocketAddr,
        /// Change a file in the controller's config directory...
        #[arg(long, required_unless_present = "api_server")]
        config_dir: Option<PathBuf>,
        /// ...or an HTTPRoute in this (test) API server, `http://127.0.0.1:PORT`.
        #[arg(long, conflicts_with = "config_dir")]
        api_server: Option<String>,
        #[arg(long, default_value_t = 100)]
        changes: usize,
    },
    Certs {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// The ServiceAccount the token proves, NAMESPACE/NAME.
        #[arg(long)]
        account: String,
    },
}

async fn channel(target: &Target) -> anyhow::Result<Channel> {
    let ca = std::fs::read(&target.ca)?;
    Ok(Endpoint::from_shared(target.controller.clone())?
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))?
        .connect()
        .await?)
}

fn bearer(
    target: &Target,
) -> anyhow::Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> {
    let token = std::fs::read_to_string(&target.token)?;
    Ok(format!("Bearer {}", token.trim()).parse()?)
}

/// One change: a route whose hostname carries the change number.
fn change_route(i: usize) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: fleet-change, namespace: bench}}\nspec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [change-{i}.bench]\n  rules: [{{backendRefs: [{{name: backend, port: 80}}]}}]\n"
    )
}

fn write_change(dir: &std::path::Path, i: usize) -> anyhow::Result<()> {
    let tmp = dir.join(".fleet-change.tmp");
    std::fs::write(&tmp, change_route(i))?;
    std::fs::rename(tmp, dir.join("fleet-change.yaml"))?;
    Ok(())
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let pick =
        |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1];
    println!(
        "{what}: n={} p50={:.1}ms p99={:.1}ms max={:.1}ms",
        samples.len(),
        pick(0.5).as_secs_f64() * 1e3,
        pick(0.99).as_secs_f64() * 1e3,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

async fn node(
    target: Target,
    id: usize,
    versions: Arc<Vec<watch::Sender<u64>>>,
) -> anyhow::Result<()> {
    let mut client =
        ConfigDiscoveryClient::new(channel(&target).await?).max_decoding_message_size(256 << 20);
    let (tx, rx) = mpsc::channel(4);
    tx.send(WatchRequest {
        kind: Some(Kind::Hello(Hello {
            role: Role::Ingress as i32,
            namespace: "weir-system".into(),
            service_account: "weir-ingress".into(),
            pod: format!("fleet-{id}"),
            node_version: "fleet".into(),
        })),
    })
    .await?;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("authorization", bearer(&target)?);
    let mut updates = client.watch(request).await?.into_inner();
    while let Some(update) = updates.message().await? {
        tx.send(WatchRequest {
            kind: Some(Kind::Ack(Ack {
                version: update.version,
            })),
        })
        .await?;
        versions[id].send_replace(update.version);
    }
    Ok(())
}

async fn wait_all(versions: &[watch::Sender<u64>], at_least: u64) -> Instant {
    for v in versions {
        let mut rx = v.subscribe();
        let _ = rx.wait_for(|seen| *seen >= at_least).await;
    }
    Instant::now()
}

async fn nodes(target: Target, count: usize, dir: PathBuf, changes: usize) -> anyhow::Result<()> {
    write_change(&dir, 0)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let versions: Arc<Vec<_>> = Arc::new((0..count).map(|_| watch::Sender::new(0)).collect());
    let started = Instant::now();
    for id in 0..count {
        let (target, versions) = (target.clone(), versions.clone());
        tokio::spawn(async move {
            if let Err(e) = node(target, id, versions).await {
                eprintln!("node {id}: {e}");
            }
        });
    }
    wait_all(&versions, 1).await;
    let first = *versions[0].borrow();
    println!(
        "{count} nodes connected and at version {first} in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    let mut samples = Vec::new();
    for i in 1..=changes {
        let t0 = Instant::now();
        write_change(&dir, i)?;
        // Every change makes the next version of the view.
        let last = wait_all(&versions, first + i as u64).await;
        samples.push(last - t0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    report(&format!("change → last of {count} nodes ACKed"), samples);
    Ok(())
}

/// Where a change is made.
enum Source {
    Dir(PathBuf),
    ApiServer(String),
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
>;

impl Source {
    /// Makes change `i` (0 creates the route in the API server).
    async fn change(&self, client: &HttpClient, i: usize) -> anyhow::Result<()> {
        let url = match self {
            Source::Dir(dir) => return write_change(dir, i),
            Source::ApiServer(url) => url,
        };
        let routes = format!("{url}/apis/gateway.networking.k8s.io/v1/namespaces/bench/httproutes");
        let (method, uri, content_type, body) = if i == 0 {
            let route: serde_json::Value = serde_saphyr::from_str(&change_route(0))?;
            ("POST", routes, "application/json", route)
        } else {
            let patch = serde_json::json!({"spec": {"hostnames": [format!("change-{i}.bench")]}});
            (
                "PATCH",
                format!("{routes}/fleet-change"),
                "application/merge-patch+json",
                patch,
            )
        };
        let request = http::Request::builder()
            .method(method)
            .uri(uri)
            .header(
                "authorization",
                format!("Bearer {}", weir_e2e::apiserver::ADMIN_TOKEN),
            )
            .header("content-type", content_type)
            .body(http_body_util::Full::new(serde_json::to_vec(&body)?.into()))?;
        let status = client.request(request).await?.status();
        anyhow::ensure!(status.is_success(), "the API server answered {status}");
        Ok(())
    }
}

async fn propagation(
    ingress: std::net::SocketAddr,
    source: Source,
    changes: usize,
) -> anyhow::Result<()> {
    let client: HttpClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    if matches!(source, Source::ApiServer(_)) {
        source.change(&client, 0).await?;
    }
    let mut samples = Vec::new();
    for i in 1..=changes {
        let t0 = Instant::now();
        source.change(&client, i).await?;
        loop {
            let request = http::Request::get(format!("http://{ingress}/"))
                .header("host", format!("change-{i}.bench"))
                .body(http_body_util::Full::default())?;
            if client.request(request).await?.status() == 200 {
                break;
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(10),
                "change {i} never served"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        samples.push(t0.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    report("object change → served by the connected ingress", samples);
    Ok(())
}

async fn certs(
    target: Target,
    seconds: u64,
    concurrency: usize,
    account: String,
) -> anyhow::Result<()> {
    let (namespace, name) = account
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("NAMESPACE/NAME"))?;
    let spiffe = format!("spiffe://cluster.local/ns/{namespace}/sa/{name}");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(spiffe.try_into()?)];
    let csr = params.serialize_request(&key)?.pem()?;
    let channel = channel(&target).await?;
    let bearer = bearer(&target)?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (mut client, csr, bearer) = (
            IdentityClient::new(channel.clone()),
            csr.clone(),
            bearer.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                let mut request = tonic::Request::new(CertifyRequest {
                    csr_pem: csr.clone(),
                });
                request
                    .metadata_mut()
                    .insert("authorization", bearer.clone());
                client.certify(request).await?;
                done += 1;
            }
            Ok::<_, tonic::Status>(done)
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    println!(
        "certificates signed: {total} in {:.1}s = {:.0}/s (concurrency {concurrency})",
        started.elapsed().as_secs_f64(),
        total as f64 / started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Nodes {
            target,
            count,
            config_dir,
            changes,
        } => nodes(target, count, config_dir, changes).await,
        Command::Propagation {
            ingress,
            config_dir,
            api_server,
            changes,
        } => {
            let source = match (config_dir, api_server) {
                (Some(dir), _) => Source::Dir(dir),
                (None, Some(url)) => Source::ApiServer(url),
                (None, None) => anyhow::bail!("give --config-dir or --api-server"),
            };
            propagation(ingress, source, changes).await
        }
        Command::Certs {
            target,
            seconds,
            concurrency,
            account,
        } => certs(target, seconds, concurrency, account).await,
    }
}
