//! weir-token: makes an ES256 signing key, writes its public JWKS to a file and prints one
//! signed token, for benchmarks and manual tries of AuthPolicy.
//!
//! `weir-token --jwks jwks.json --iss https://idp --aud shop --sub alice --ttl 3600`

use clap::Parser;
use weir_e2e::idp::{claims, Signer};

#[derive(Parser)]
struct Args {
    /// Where to write the JWKS (public key).
    #[arg(long)]
    jwks: std::path::PathBuf,
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
    let signer = Signer::new("k1");
    std::fs::write(
        &args.jwks,
        serde_json::json!({"keys": [signer.jwk]}).to_string(),
    )?;
    println!(
        "{}",
        signer.sign(&claims(&args.iss, &args.aud, &args.sub, args.ttl))
    );
    Ok(())
}
