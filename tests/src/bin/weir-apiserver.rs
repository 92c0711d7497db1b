//! The test Kubernetes API server as a process, for benchmarks and for trying
//! `weir-controller --kubernetes` by hand:
//!
//! ```text
//! weir-apiserver --kubeconfig /tmp/kubeconfig [--token TOKEN=NAMESPACE/SERVICEACCOUNT ...] [FILE.yaml ...]
//! ```
//!
//! It loads the files (multi-document YAML, as `kubectl apply -f` would), writes a kubeconfig
//! with its admin token, lets each `--token` authenticate (audience `weir`) in TokenReviews,
//! prints its URL and serves until it is killed.

use std::path::PathBuf;

use clap::Parser;
use weir_e2e::apiserver::ApiServer;

#[derive(Parser)]
struct Cli {
    /// Where to write the kubeconfig (its directory must exist).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// TOKEN=NAMESPACE/SERVICEACCOUNT: a projected token TokenReview accepts for `weir`.
    #[arg(long = "token")]
    tokens: Vec<String>,
    /// YAML files to load.
    files: Vec<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let server = ApiServer::start();
    for token in &cli.tokens {
        let (token, account) = token
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--token {token:?} is not TOKEN=NAMESPACE/NAME"))?;
        let (namespace, name) = account
            .split_once('/')
            .ok_or_else(|| anyhow::anyhow!("--token {account:?} is not TOKEN=NAMESPACE/NAME"))?;
        server.add_token(token, namespace, name, &["weir"]);
    }
    for file in &cli.files {
        server.apply(&std::fs::read_to_string(file)?);
    }
    let written = server.kubeconfig(cli.kubeconfig.parent().unwrap_or(".".as_ref()));
    if written != cli.kubeconfig {
        std::fs::rename(&written, &cli.kubeconfig)?;
    }
    println!("{}", server.url());
    loop {
        std::thread::park();
    }
}
