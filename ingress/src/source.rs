//! Where weir-ingress's configuration comes from: a directory, or a controller's stream.

use std::path::PathBuf;

use anyhow::bail;
use weir_api::proto::Role;
use weir_mesh::control::{read_controller_ca, ControlSettings};

use super::Args;

/// Where the configuration comes from.
pub(crate) enum Source {
    Dir(PathBuf),
    Controller(ControlSettings),
}

pub(crate) fn config_source(args: &Args) -> anyhow::Result<Source> {
    let Some(url) = &args.controller else {
        let dir = args.config_dir.clone().unwrap_or_default();
        if !dir.is_dir() {
            bail!("--config-dir {}: not a directory", dir.display());
        }
        return Ok(Source::Dir(dir));
    };
    if !url.starts_with("https://") {
        bail!(
            "--controller {url:?}: the config stream carries TLS private keys, so it only runs over TLS: use https://HOST:PORT"
        );
    }
    let ca_pem = read_controller_ca(args.controller_ca.as_deref()).map_err(anyhow::Error::msg)?;
    let pod = args.pod_name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "weir-ingress".to_string())
    });
    Ok(Source::Controller(ControlSettings {
        url: url.clone(),
        ca_pem,
        token_file: args.identity_token_file.clone().unwrap_or_default(),
        role: Role::Ingress,
        namespace: args.namespace.clone(),
        service_account: args.service_account.clone(),
        pod,
    }))
}
