//! weir-controller: Weir's control plane.
//!
//! - `weir-controller run --config-dir DIR --state-dir STATE`: compiles the objects in DIR,
//!   streams each node its view over gRPC (TLS, with a serving certificate from its own CA),
//!   and signs workload certificates.
//! - `weir-controller token --state-dir STATE --namespace NS --service-account SA`: prints a
//!   token that proves that ServiceAccount to this controller (directory mode).
//! - `weir-controller crds`: prints the CustomResourceDefinitions of Weir's resources.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tonic::transport::{server::TcpIncoming, Identity, Server, ServerTlsConfig};
use weir_api::{
    duration::parse_duration,
    process::Signals,
    proto::{config_discovery_server::ConfigDiscoveryServer, identity_server::IdentityServer},
};
use weir_controller::{
    admin,
    ca::{Authority, Root},
    grpc::Services,
    identity::ServiceAccount,
    kubernetes, source,
    state::StateDir,
    tokens::Authenticator,
    Controller,
};

#[derive(Parser)]
#[command(name = "weir-controller", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile the objects, serve config streams and certificates.
    Run(Box<Run>),
    /// Print a token proving a ServiceAccount to this controller (directory mode).
    Token(Token),
    /// Print the CustomResourceDefinitions of Weir's resources as multi-document YAML.
    Crds,
}

#[derive(Args)]
struct Run {
    /// Read the objects from the YAML files in this directory (watched for changes).
    #[arg(
        long,
        required_unless_present = "kubernetes",
        conflicts_with = "kubernetes"
    )]
    config_dir: Option<PathBuf>,
    /// Watch the objects in the cluster (in-cluster configuration, or --kubeconfig).
    #[arg(long)]
    kubernetes: bool,
    /// The kubeconfig to use with --kubernetes instead of the in-cluster configuration.
    #[arg(long, requires = "kubernetes")]
    kubeconfig: Option<PathBuf>,
    /// Where the CA root and the token-signing key are kept between runs (directory mode);
    /// with --kubernetes, only the trust bundle is written there.
    #[arg(long, required_unless_present = "kubernetes")]
    state_dir: Option<PathBuf>,
    /// The Secret (NAMESPACE/NAME) that keeps the CA root with --kubernetes; created on first
    /// start.
    #[arg(long, default_value = "weir-system/weir-ca")]
    ca_secret: String,
    /// This replica's name, the holder identity of the status Lease.
    #[arg(long, env = "POD_NAME", default_value = "weir-controller")]
    pod_name: String,
    /// The Lease (NAMESPACE/NAME) whose holder writes status with --kubernetes.
    #[arg(long, default_value = "weir-system/weir-controller")]
    status_lease: String,
    /// The controller's own namespace: the trust bundle and the injector's certificate are
    /// published there.
    #[arg(long, env = "POD_NAMESPACE", default_value = "weir-system")]
    namespace: String,
    /// The ConfigMap (key `ca.crt`) the trust bundle is published as, in the controller's
    /// namespace and in every namespace labelled weir.dev/inject=enabled; "" for none.
    #[arg(long, default_value = "weir-ca-root")]
    trust_bundle_config_map: String,
    /// The Secret the injector's serving certificate is kept in; "" for none.
    #[arg(long, default_value = "weir-injector-tls")]
    injector_secret: String,
    /// The names in the injector's serving certificate.
    #[arg(
        long = "injector-name",
        default_value = "weir-injector.weir-system.svc",
        value_delimiter = ','
    )]
    injector_names: Vec<String>,
    /// The MutatingWebhookConfiguration whose caBundle is kept current; "" for none.
    #[arg(long, default_value = "weir-injector")]
    injector_webhook: String,
    /// Addresses (IPs or hostnames) the ingress is reached at, written to Ingress and Gateway
    /// status.
    #[arg(long = "status-address", value_delimiter = ',')]
    status_addresses: Vec<String>,
    /// Give every Gateway of class `weir` a deployment and Service of its own in --namespace,
    /// made from the --gateway-template Deployment (and Service); the template's own gateway
    /// then serves Ingresses alone (`weir-ingress --serve=ingresses`).
    #[arg(long, env = "WEIR_PROVISION_GATEWAYS")]
    provision_gateways: bool,
    /// With --provision-gateways: the Deployment in --namespace Gateways' deployments are
    /// made from (and the Service their Services copy their type and annotations from).
    #[arg(long, env = "WEIR_GATEWAY_TEMPLATE", default_value = "weir-ingress")]
    gateway_template: String,
    /// With --provision-gateways: at most this many Gateways get a deployment, the oldest
    /// first; the others are `Programmed: False` (NoResources).
    #[arg(long, env = "WEIR_MAX_PROVISIONED_GATEWAYS", default_value_t = 64)]
    max_provisioned_gateways: usize,
    /// With --provision-gateways: at most this many Gateways of one namespace get a
    /// deployment, so one namespace cannot take every place.
    #[arg(
        long,
        env = "WEIR_MAX_PROVISIONED_GATEWAYS_PER_NAMESPACE",
        default_value_t = 8
    )]
    max_provisioned_gateways_per_namespace: usize,
    /// The SPIFFE trust domain of workload identities.
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// gRPC listener (TLS) for config streams and certificates.
    #[arg(long, default_value = "0.0.0.0:15010")]
    grpc: SocketAddr,
    /// Admin listener: /healthz, /readyz, /metrics, /status.
    #[arg(long, default_value = "127.0.0.1:15014")]
    admin: SocketAddr,
    /// Names in the gRPC serving certificate (the names nodes dial).
    #[arg(
        long = "grpc-name",
        default_value = "localhost,127.0.0.1,weir-controller.weir-system.svc",
        value_delimiter = ','
    )]
    grpc_names: Vec<String>,
    /// ServiceAccounts (NAMESPACE/NAME) allowed to receive the ingress view, which holds TLS
    /// private keys and API keys.
    #[arg(
        long = "ingress-account",
        default_value = "weir-system/weir-ingress",
        value_delimiter = ','
    )]
    ingress_accounts: Vec<ServiceAccount>,
    /// How often the config directory is looked at for changes.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    poll_interval: Duration,
    /// Wait this long after a change is seen before compiling, so several writes compile once.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    debounce: Duration,
    /// Sign with this root certificate (PEM) instead of the one kept in the state directory;
    /// needs --ca-key.
    #[arg(long, requires = "ca_key")]
    ca_cert: Option<PathBuf>,
    /// The private key of --ca-cert (PKCS#8 PEM).
    #[arg(long, requires = "ca_cert")]
    ca_key: Option<PathBuf>,
    /// More roots (PEM files) to put in the trust bundle next to the signing root: the old
    /// root during a rotation, so certificates it signed stay trusted until they expire.
    #[arg(long = "extra-root")]
    extra_roots: Vec<PathBuf>,
    /// Lifetime of workload certificates.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    cert_lifetime: Duration,
    /// With --kubernetes: tokens not seen in the last 30 s become TokenReviews at most this
    /// many times per second per peer address (IPv6: per /64); over it, RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 5.0)]
    token_review_rate: f64,
    /// The burst of --token-review-rate.
    #[arg(long, default_value_t = 10)]
    token_review_burst: u32,
    /// Config streams one ServiceAccount may hold open at once; more are refused
    /// (RESOURCE_EXHAUSTED).
    #[arg(long, default_value_t = weir_controller::streams::DEFAULT_PER_ACCOUNT)]
    max_streams_per_account: usize,
}

#[derive(Args)]
struct Token {
    /// The state directory of the controller that will check the token.
    #[arg(long)]
    state_dir: PathBuf,
    /// The ServiceAccount's namespace.
    #[arg(long)]
    namespace: String,
    /// The ServiceAccount's name.
    #[arg(long)]
    service_account: String,
    /// How long the token is valid.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    ttl: Duration,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crds => print!("{}", weir_controller::crds_yaml()?),
        Command::Token(args) => {
            let account: ServiceAccount = format!("{}/{}", args.namespace, args.service_account)
                .parse()
                .map_err(anyhow::Error::msg)?;
            let key = StateDir::open(&args.state_dir)?.token_key()?;
            println!("{}", key.sign(&account, args.ttl)?);
        }
        Command::Run(args) => {
            weir_api::init_logging();
            tokio::runtime::Runtime::new()?.block_on(run(*args))?;
        }
    }
    Ok(())
}

fn split_name(flag: &str, value: &str) -> anyhow::Result<(String, String)> {
    match value.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => anyhow::bail!("{flag} {value:?} is not NAMESPACE/NAME"),
    }
}

async fn run(args: Run) -> anyhow::Result<()> {
    let state = args.state_dir.as_deref().map(StateDir::open).transpose()?;
    let client = match args.kubernetes {
        true => Some(kubernetes::client(args.kubeconfig.as_deref(), None).await?),
        false => None,
    };
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let root = match (&args.ca_cert, &args.ca_key, &client, &state) {
        (Some(cert), Some(key), _, _) => Root {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        },
        (_, _, Some(client), _) => {
            let (namespace, name) = split_name("--ca-secret", &args.ca_secret)?;
            kubernetes::ca_root(client, &namespace, &name, &args.trust_domain).await?
        }
        (_, _, None, Some(state)) => state.root(&args.trust_domain)?,
        (_, _, None, None) => anyhow::bail!("--state-dir is required without --kubernetes"),
    };
    let extra_roots = args
        .extra_roots
        .iter()
        .map(read)
        .collect::<Result<_, _>>()?;
    let authority = Authority::new(&root, extra_roots, &args.trust_domain, args.cert_lifetime)
        .context("the CA root cannot sign")?;
    let bundle = match &state {
        Some(state) => Some(state.write_bundle(authority.bundle())?),
        None => None,
    };
    let (cert, key) = authority
        .serving_certificate(&args.grpc_names)
        .context("cannot make the gRPC serving certificate")?;
    let authenticator = match (&client, &state) {
        (Some(client), _) => Authenticator::Reviewed(kubernetes::TokenReviewer::new(
            client.clone(),
            args.token_review_rate,
            args.token_review_burst,
        )),
        (None, Some(state)) => Authenticator::Signed(state.token_key()?),
        (None, None) => anyhow::bail!("--state-dir is required without --kubernetes"),
    };
    let controller = Arc::new(
        Controller::new(authority, authenticator, args.ingress_accounts)
            .with_streams_per_account(args.max_streams_per_account),
    );

    let admin_listener = tokio::net::TcpListener::bind(args.admin)
        .await
        .with_context(|| format!("cannot listen on --admin {}", args.admin))?;
    let grpc_listener = tokio::net::TcpListener::bind(args.grpc)
        .await
        .with_context(|| format!("cannot listen on --grpc {}", args.grpc))?;
    tracing::info!(
        grpc = %args.grpc,
        admin = %args.admin,
        trust_bundle = ?bundle,
        source = if client.is_some() { "kubernetes" } else { "directory" },
        "weir-controller started"
    );

    match (client, args.config_dir) {
        (Some(client), _) => {
            let (lease_namespace, lease_name) = split_name("--status-lease", &args.status_lease)?;
            let status = kubernetes::status::Writer::start(
                client.clone(),
                controller.clone(),
                kubernetes::status::Settings {
                    identity: args.pod_name,
                    lease_namespace,
                    lease_name,
                    lease_duration: Duration::from_secs(15),
                    addresses: args.status_addresses,
                    provision: args
                        .provision_gateways
                        .then(|| kubernetes::provision::Settings {
                            namespace: args.namespace.clone(),
                            template: args.gateway_template,
                            max: args.max_provisioned_gateways,
                            max_per_namespace: args.max_provisioned_gateways_per_namespace,
                        }),
                    publish: kubernetes::publish::Settings {
                        namespace: args.namespace,
                        bundle_config_map: args.trust_bundle_config_map,
                        injector_secret: args.injector_secret,
                        injector_names: args.injector_names,
                        injector_webhook: args.injector_webhook,
                    },
                },
            );
            tokio::spawn(kubernetes::watch(
                client,
                controller.clone(),
                args.debounce,
                Some(status),
            ));
        }
        (None, Some(dir)) => {
            let poll = weir_api::watch::Poll {
                interval: args.poll_interval,
                settle: args.debounce,
            };
            tokio::spawn(source::watch_dir(dir, controller.clone(), poll));
        }
        (None, None) => anyhow::bail!("give --config-dir or --kubernetes"),
    }
    tokio::spawn(admin::serve(admin_listener, controller.clone()));

    let mut signals = Signals::install().context("installing the SIGTERM and SIGINT handlers")?;
    let services = Services(controller.clone());
    // Small unary replies (certificates) must not wait out Nagle's algorithm and delayed ACKs.
    let incoming = TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
    Server::builder()
        .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))?
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(ConfigDiscoveryServer::new(services.clone()))
        .add_service(IdentityServer::new(services))
        .serve_with_incoming_shutdown(incoming, async move {
            signals.received().await;
            tracing::info!("shutting down: closing config streams");
            controller.close();
        })
        .await?;
    tracing::info!("weir-controller stopped");
    Ok(())
}
