//! The state directory of directory mode: the CA's root and the token-signing key, created on
//! first use and kept between runs, so certificates and tokens stay valid across restarts.
//!
//! ```text
//! STATE/ca.crt      the root certificate (the trust bundle nodes are given)
//! STATE/ca.key      its private key (0600)
//! STATE/token.key   the key tokens are signed with (0600)
//! STATE/trust-bundle.pem   the roots nodes check the controller against, rewritten at start
//! ```

use std::{
    fs,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::Context;

use crate::{ca::Root, tokens::TokenKey};

/// An opened state directory.
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Opens `dir`, creating it (0700) if needed.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(dir)
            .with_context(|| format!("cannot create state directory {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The CA root: read, or generated and written on first use.
    pub fn root(&self, trust_domain: &str) -> anyhow::Result<Root> {
        let (cert, key) = (self.dir.join("ca.crt"), self.dir.join("ca.key"));
        if cert.exists() || key.exists() {
            return Ok(Root {
                cert_pem: read(&cert)?,
                key_pem: read(&key)?,
            });
        }
        let root = Root::generate(trust_domain)?;
        // The key first: a crash between the two leaves no certificate without its key.
        write_private(&key, &root.key_pem)?;
        write_private(&cert, &root.cert_pem)?;
        tracing::info!(path = %cert.display(), "generated a new CA root");
        Ok(root)
    }

    /// The token-signing key: read, or generated and written on first use.
    pub fn token_key(&self) -> anyhow::Result<TokenKey> {
        let path = self.dir.join("token.key");
        let pem = if path.exists() {
            read(&path)?
        } else {
            let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?.serialize_pem();
            write_private(&path, &pem)?;
            pem
        };
        TokenKey::from_pem(&pem).with_context(|| format!("{} is not a P-256 key", path.display()))
    }

    /// Writes the trust bundle for nodes started on this machine (`--controller-ca`) and
    /// returns its path.
    pub fn write_bundle(&self, roots: &[String]) -> anyhow::Result<PathBuf> {
        let path = self.dir.join("trust-bundle.pem");
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, roots.concat())
            .and_then(|()| fs::rename(&tmp, &path))
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}

fn read(path: &Path) -> anyhow::Result<String> {
    fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Writes `text` to `path` with mode 0600, through a temporary file and a rename, so a reader
/// never sees half a key.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
