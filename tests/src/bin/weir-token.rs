//! weir-token: prints one ES256-signed token, with a fresh key (or `--key`, a P-256 PKCS#8
//! PEM) whose public JWKS it writes to `--jwks`, for the quickstart, benchmarks and manual
//! tries of AuthPolicy.
//!
//! `weir-token --jwks jwks.json --iss https://idp --aud shop --sub alice --ttl 3600`

use anyhow::Context;
use clap::Parser;
use weir_e2e::idp::{claims, Signer};

#[derive(Parser)]
struct Args {
    /// Where to write the JWKS (public key).
    #[arg(long)]
    jwks: Option<std::path::PathBuf>,
    /// Sign with this P-256 key (PKCS#8 PEM) instead of a fresh one.
    #[arg(long)]
    key: Option<std::path::PathBuf>,
    #[arg(long, default_value = "k1")]
    kid: String,
    #[arg(long, default_value = "https://idp.example.com")]
    iss: String,
    #[arg(long, default_value = "shop")]
    aud: String,
    #[arg(long, default_value = "alice")]
    sub: String,
    /// Seconds until the token expires.
    #[arg(long, default_value_t = 3600)]
    ttl: i64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let signer = match &args.key {
        Some(path) => {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Signer::from_pem(&args.kid, &pem)
                .with_context(|| format!("{} is not a P-256 PKCS#8 key", path.display()))?
        }
        None => Signer::new(&args.kid),
    };
    if let Some(jwks) = &args.jwks {
        std::fs::write(jwks, serde_json::json!({"keys": [signer.jwk]}).to_string())?;
    }
    println!(
        "{}",
        signer.sign(&claims(&args.iss, &args.aud, &args.sub, args.ttl))
    );
    Ok(())
}
