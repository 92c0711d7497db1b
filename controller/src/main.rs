//! weir-controller: Weir's control plane.
//!
//! Built so far: `weir-controller crds`, which prints the CustomResourceDefinitions of Weir's
//! own resources, generated from their Rust types (`api/src/crds`). `manifests/crds/` holds
//! that output; a test fails when the two differ. Watching the cluster, compiling snapshots and
//! streaming them to the proxies (`run`) is the controller issue's remaining work.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "weir-controller", version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions of Weir's resources as multi-document YAML.
    Crds,
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Crds => print!("{}", weir_controller::crds_yaml()?),
    }
    Ok(())
}
