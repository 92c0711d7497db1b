//! `weir-injector --listen ADDR --tls-cert F --tls-key F [--config F]`: the mutating
//! admission webhook. `POST /inject` (namespaces labelled `weir.dev/inject=enabled`: every
//! pod unless annotated `weir.dev/inject: disabled`) and `POST /inject/opt-in` (other
//! namespaces: only pods annotated `weir.dev/inject: enabled`); `GET /healthz`. `--admin`
//! serves `/healthz` and `/metrics`.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context;
use clap::Parser;
use weir_api::process::Signals;
use weir_injector::{
    config::Config,
    metrics::{self, Metrics},
    server,
};

#[derive(Parser)]
#[command(name = "weir-injector", version, about)]
struct Cli {
    /// HTTPS listener for the API server's AdmissionReviews.
    #[arg(long, default_value = "0.0.0.0:9443")]
    listen: SocketAddr,
    /// Admin listener: /healthz, /metrics.
    #[arg(long, default_value = "127.0.0.1:9902")]
    admin: SocketAddr,
    /// The serving certificate chain (PEM); reloaded when it changes.
    #[arg(long)]
    tls_cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long)]
    tls_key: PathBuf,
    /// What to inject (YAML; see docs/injector.md). Without it, the documented defaults.
    #[arg(long)]
    config: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    weir_api::init_logging();
    let config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    tokio::runtime::Runtime::new()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(cli.listen)
            .await
            .with_context(|| format!("cannot listen on --listen {}", cli.listen))?;
        let admin = tokio::net::TcpListener::bind(cli.admin)
            .await
            .with_context(|| format!("cannot listen on --admin {}", cli.admin))?;
        let mut signals =
            Signals::install().context("installing the SIGTERM and SIGINT handlers")?;
        let metrics = Arc::new(Metrics::default());
        tokio::spawn(metrics::serve(admin, metrics.clone()));
        tracing::info!(listen = %cli.listen, admin = %cli.admin, image = %config.image, "weir-injector started");
        tokio::select! {
            served = server::serve(listener, Arc::new(config), metrics, cli.tls_cert, cli.tls_key) => served,
            _ = signals.received() => {
                tracing::info!("weir-injector stopped");
                Ok(())
            }
        }
    })
}
