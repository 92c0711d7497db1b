//! `weir-sidecar run`: the mesh proxy of one workload; `weir-sidecar init`: the iptables rules
//! of transparent mode (run once, as root, in the pod's network namespace).

use std::{
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    pin::Pin,
    sync::{atomic::AtomicBool, Arc},
    time::Duration,
};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use tokio::net::{TcpListener, TcpStream};
use weir_api::{duration::parse_duration, process::Signals, proto::Role};
use weir_http::{
    server::{accept_loop, Http, ServerSettings},
    upstream::{Upstream, UpstreamSettings},
};
use weir_mesh::{
    control::{self, read_controller_ca, ControlSettings},
    identity::{self, WorkloadIdentity},
    mtls::{self, Dialer},
};
use weir_proxy::{
    access_log::{AccessLog, LogArgs},
    admin::{serve_admin, AdminState},
    config::{ConfigStore, Follow, Installer},
    metrics::Metrics,
    normalize::{EscapedSlashes, PathParameters, PathPolicy},
    trace::{Service, TraceArgs, Tracer},
};
use weir_sidecar::{
    health::{https_probes, parse_probes, SidecarPages},
    inbound::Inbound,
    init::Interception,
    metrics::MeshMetrics,
    outbound::Outbound,
    view,
};

/// Weir's east-west proxy.
#[derive(Parser, Debug)]
#[command(name = "weir-sidecar", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Proxy one workload's traffic.
    Run(Box<RunArgs>),
    /// Install the iptables rules of transparent mode.
    Init(InitArgs),
}

#[derive(Parser, Debug)]
struct RunArgs {
    /// The controller (`https://host:15010`).
    #[arg(long, env = "WEIR_CONTROLLER")]
    controller: String,
    /// The controller's trust bundle (PEM); without it the system roots are used.
    #[arg(long, env = "WEIR_CONTROLLER_CA")]
    controller_ca: Option<PathBuf>,
    /// The token proving this pod's ServiceAccount (re-read at every connect).
    #[arg(long, env = "WEIR_IDENTITY_TOKEN_FILE")]
    identity_token_file: PathBuf,
    /// The access log, in both directions (the same fields as weir-ingress's).
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    trace: TraceArgs,
    /// The app's port on localhost, for inbound connections that were not redirected
    /// (explicit mode); redirected ones go to the port they were sent to.
    #[arg(long)]
    app_port: Option<u16>,
    /// Inbound listener. `[::]` takes IPv4 and IPv6 (IPv4 alone where IPv6 is off).
    #[arg(long, default_value = "[::]:15006")]
    inbound: SocketAddr,
    /// Outbound listeners (the app's calls), comma-separated: loopback, IPv4 and IPv6 (the
    /// IPv6 one is skipped where IPv6 is off).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:15001,[::1]:15001"
    )]
    outbound: Vec<SocketAddr>,
    /// Admin listener: /healthz /readyz /config /metrics /app-health/.
    #[arg(long, default_value = "0.0.0.0:15020")]
    admin: SocketAddr,
    /// This pod's namespace.
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: String,
    /// This pod's name.
    #[arg(long, env = "POD_NAME")]
    pod: String,
    /// This pod's ServiceAccount.
    #[arg(long, env = "SERVICE_ACCOUNT", default_value = "default")]
    service_account: String,
    /// The mesh's trust domain (SPIFFE IDs are spiffe://TRUST_DOMAIN/ns/NS/sa/SA).
    #[arg(long, env = "TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// A client silent this long is proxied as opaque TCP (server-speaks-first protocols).
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    detect_timeout: Duration,
    /// Give up connecting to an endpoint after this long.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// On SIGTERM, wait this long for in-flight requests.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// A request body (in either direction) waited on this long without a byte arriving
    /// fails with 408, and its connection to the app or endpoint is closed; 0s: no limit.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    client_body_timeout: Duration,
    /// Close (GOAWAY) an HTTP/2 connection from the app or a peer with no stream open for
    /// this long; 0s: never.
    #[arg(long, default_value = "3m", value_parser = parse_duration)]
    http2_idle_timeout: Duration,
    /// PING HTTP/2 clients this often (0s: never), closing a connection whose PING goes
    /// unanswered for 20s.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    http2_keepalive_interval: Duration,
    /// The kubelet's probes, rewritten by the injector (JSON, path → probe).
    #[arg(long, env = "WEIR_APP_PROBES", hide_env_values = true)]
    app_probes: Option<String>,
    /// Encoded slashes and backslashes (`%2F`, `%5C`) and raw `\` in an inbound path:
    /// `reject` (400), `unescape` (read as `/` before AccessPolicy paths are matched, and sent
    /// on so), or `keep` (passed on as data).
    #[arg(long, env = "WEIR_ESCAPED_SLASHES", default_value = "reject")]
    escaped_slashes: EscapedSlashes,
    /// `;` parameters in an inbound path segment (`/a;x/b`): `reject` (400), `strip` (removed
    /// before AccessPolicy paths are matched, and sent on without), or `keep`.
    #[arg(long, env = "WEIR_PATH_PARAMETERS", default_value = "reject")]
    path_parameters: PathParameters,
    /// Acts as a node that predates these restricting features (comma-separated, e.g.
    /// `access.ports`): a view requiring one is refused. For rehearsing a rollout and for tests.
    #[arg(long, value_delimiter = ',', hide = true)]
    refuse_features: Vec<String>,
}

#[derive(Parser, Debug)]
struct InitArgs {
    /// Where inbound connections are redirected.
    #[arg(long, default_value_t = 15006)]
    inbound_port: u16,
    /// Where outbound connections are redirected.
    #[arg(long, default_value_t = 15001)]
    outbound_port: u16,
    /// The sidecar's user id (its own connections are not redirected).
    #[arg(long, default_value_t = 1337)]
    proxy_uid: u32,
    /// The sidecar's admin port (never redirected, so probes reach it; the inbound and outbound
    /// ports are never redirected either).
    #[arg(long, default_value_t = 15020)]
    admin_port: u16,
    /// Inbound ports to leave alone (comma-separated).
    #[arg(long, value_delimiter = ',')]
    exclude_inbound_ports: Vec<u16>,
    /// Outbound destination ports to leave alone (comma-separated).
    #[arg(long, value_delimiter = ',')]
    exclude_outbound_ports: Vec<u16>,
    /// The iptables binary.
    #[arg(long, default_value = "iptables")]
    iptables: String,
    /// The ip6tables binary: the same rules for IPv6, when the namespace has IPv6.
    #[arg(long, default_value = "ip6tables")]
    ip6tables: String,
    /// Print the commands instead of running them.
    #[arg(long)]
    dry_run: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    weir_api::init_logging();
    match cli.command {
        Command::Init(args) => init(args),
        Command::Run(args) => {
            // One thread: a sidecar's load is one workload's, and its memory is per pod.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?;
            runtime.block_on(run(*args))
        }
    }
}

fn init(args: InitArgs) -> anyhow::Result<()> {
    // The proxy's own ports are never redirected: a connection to one of them from outside
    // the pod must meet the listener as it is bound (the outbound one on loopback only), not
    // be carried by the inbound proxy to it.
    let mut exclude_inbound = vec![args.admin_port, args.inbound_port, args.outbound_port];
    exclude_inbound.extend(&args.exclude_inbound_ports);
    let interception = Interception {
        inbound_port: args.inbound_port,
        outbound_port: args.outbound_port,
        proxy_uid: args.proxy_uid,
        exclude_inbound,
        exclude_outbound: args.exclude_outbound_ports,
    };
    // With IPv6 on, traffic over it must be intercepted too, or it would reach the app
    // around the sidecar: its rules are required, not best effort.
    let mut tables = vec![&args.iptables];
    if ipv6_enabled() {
        tables.push(&args.ip6tables);
    }
    for table in tables {
        for step in interception.steps() {
            if args.dry_run {
                println!("{}", step.describe(table));
            } else {
                step.apply(table).map_err(anyhow::Error::msg)?;
            }
        }
    }
    if !args.dry_run {
        tracing::info!("transparent interception installed");
    }
    Ok(())
}

/// What a listener does with each accepted connection.
type ConnectionFn =
    dyn Fn(TcpStream, SocketAddr) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync;

/// Whether this network namespace has IPv6 (on unless the kernel or a sysctl turned it off).
fn ipv6_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6")
        .is_ok_and(|v| v.trim() == "0")
}

/// Binds `addr`; where IPv6 is off, `[::]` falls back to `0.0.0.0` and another IPv6 address
/// gives `None`.
async fn listen(addr: SocketAddr, flag: &str) -> anyhow::Result<Option<TcpListener>> {
    match TcpListener::bind(addr).await {
        Ok(listener) => Ok(Some(listener)),
        Err(e) if addr.is_ipv6() && !ipv6_enabled() => {
            if addr.ip().is_unspecified() {
                let v4 = SocketAddr::from(([0, 0, 0, 0], addr.port()));
                tracing::info!(%addr, "IPv6 is off: listening on {v4} instead");
                let listener = TcpListener::bind(v4)
                    .await
                    .with_context(|| format!("binding {flag} {v4}"))?;
                Ok(Some(listener))
            } else {
                tracing::info!(%addr, error = %e, "IPv6 is off: not listening there");
                Ok(None)
            }
        }
        Err(e) => Err(e).with_context(|| format!("binding {flag} {addr}")),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    if !args.controller.starts_with("https://") {
        bail!(
            "--controller {:?}: the controller is only spoken to over TLS: use https://HOST:PORT",
            args.controller
        );
    }
    let probes = match &args.app_probes {
        Some(json) => parse_probes(json).map_err(anyhow::Error::msg)?,
        None => Default::default(),
    };
    let ca_pem = read_controller_ca(args.controller_ca.as_deref()).map_err(anyhow::Error::msg)?;
    let settings = ControlSettings {
        url: args.controller.clone(),
        ca_pem,
        token_file: args.identity_token_file.clone(),
        role: Role::Sidecar,
        namespace: args.namespace.clone(),
        service_account: args.service_account.clone(),
        pod: args.pod.clone(),
    };
    let own = format!("{}/{}", args.namespace, args.service_account);
    let spiffe_id = mtls::spiffe_uri(&args.trust_domain, &own);

    let metrics = Metrics::new();
    let mesh = MeshMetrics::new(&metrics);
    let identity = Arc::new(WorkloadIdentity::default());
    let dialer = Arc::new(Dialer::new(
        identity.clone(),
        &args.trust_domain,
        &metrics.identity,
    ));
    let store = Arc::new(ConfigStore::new(metrics.clone()));
    let installer = Arc::new(Installer::new(store.clone()).mesh(dialer.clone()));
    let access_log = AccessLog::stdout(&args.log, metrics.access_log_dropped.clone())?;
    let tracer = match &args.trace.otlp_endpoint {
        Some(endpoint) => {
            let service = Service {
                name: "weir-sidecar",
                namespace: Some(args.namespace.clone()),
                pod: Some(args.pod.clone()),
            };
            Some(Tracer::new(endpoint, &service, args.trace.trace_sampling)?)
        }
        None => None,
    };

    let inbound_listener = listen(args.inbound, "--inbound")
        .await?
        .context("--inbound: nothing to listen on")?;
    let mut outbound_listeners = Vec::new();
    for addr in &args.outbound {
        outbound_listeners.extend(listen(*addr, "--outbound").await?);
    }
    if outbound_listeners.is_empty() {
        bail!("--outbound: none of {:?} can be listened on", args.outbound);
    }
    let admin = TcpListener::bind(args.admin)
        .await
        .with_context(|| format!("binding --admin {}", args.admin))?;
    tracing::info!(
        inbound = %inbound_listener.local_addr()?,
        outbound = ?outbound_listeners.iter().map(|l| l.local_addr()).collect::<Result<Vec<_>, _>>()?,
        admin = %admin.local_addr()?,
        %spiffe_id,
        "weir-sidecar starting"
    );

    let upstream_settings = UpstreamSettings {
        connect_timeout: args.connect_timeout,
        ..UpstreamSettings::default()
    };
    let app = Upstream::new(&upstream_settings, &metrics.http);
    let server_settings = ServerSettings {
        drain_timeout: args.drain_timeout,
        client_body_timeout: args.client_body_timeout,
        http2_idle_timeout: args.http2_idle_timeout,
        http2_keepalive_interval: args.http2_keepalive_interval,
        ..ServerSettings::default()
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(
        mtls::server_config(identity.clone()).context("the inbound mTLS configuration")?,
    ));
    let handshakes = |result: &str| {
        metrics
            .identity
            .handshakes
            .with_label_values(&["inbound", result])
    };
    let inbound = Arc::new(Inbound {
        store: store.clone(),
        acceptor,
        http: Http::new(&server_settings, &metrics.http),
        app: app.clone(),
        app_port: args.app_port,
        own_ports: std::iter::once(args.inbound.port())
            .chain(args.outbound.iter().map(SocketAddr::port))
            .chain([args.admin.port()])
            .collect(),
        detect_timeout: args.detect_timeout,
        handshake_timeout: server_settings.header_read_timeout,
        trust_domain: args.trust_domain.clone(),
        own: own.clone(),
        metrics: metrics.clone(),
        access_log: access_log.clone(),
        tracer: tracer.clone(),
        mesh: mesh.clone(),
        handshakes: (handshakes("ok"), handshakes("error")),
        paths: PathPolicy {
            escaped_slashes: args.escaped_slashes,
            parameters: args.path_parameters,
        },
    });
    let outbound = Arc::new(Outbound {
        store: store.clone(),
        http: Http::new(&server_settings, &metrics.http),
        upstream: Upstream::with_mesh(&upstream_settings, &metrics.http, dialer.clone()),
        dialer,
        namespace: args.namespace.clone(),
        detect_timeout: args.detect_timeout,
        connect_timeout: args.connect_timeout,
        metrics: metrics.clone(),
        access_log: access_log.clone(),
        tracer: tracer.clone(),
        mesh,
    });

    let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
    let accepting = Arc::new(AtomicBool::new(true));
    let pages = SidecarPages {
        identity: identity.clone(),
        probes,
        app,
        https: https_probes(),
    };
    let admin_state = AdminState {
        store: store.clone(),
        metrics: metrics.clone(),
        accepting: accepting.clone(),
        pages: Some(Arc::new(pages)),
    };
    let admin_task = tokio::spawn(serve_admin(admin, admin_state, shutdown.clone()));
    let certificates = tokio::spawn(identity::maintain(
        settings.clone(),
        spiffe_id,
        identity,
        metrics.identity.certificate_expiry.clone(),
    ));
    view::refuse_features(args.refuse_features.clone());
    let node = Arc::new(Follow {
        installer,
        decode: view::decode,
    });
    let config = tokio::spawn(control::follow(settings, node));

    // Each listener drains on its own; every connection task watches the same shutdown.
    let serve = |listener: TcpListener, connection: Box<ConnectionFn>| {
        let (metrics, shutdown, drain) = (metrics.clone(), shutdown.clone(), args.drain_timeout);
        tokio::spawn(async move {
            accept_loop(listener, drain, &metrics.http, shutdown, connection).await
        })
    };
    let conns = shutdown.clone();
    let mut servers = vec![serve(
        inbound_listener,
        Box::new(move |s, a| Box::pin(inbound.clone().connection(s, a, conns.clone()))),
    )];
    for listener in outbound_listeners {
        let (conns, outbound) = (shutdown.clone(), outbound.clone());
        servers.push(serve(
            listener,
            Box::new(move |s, a| Box::pin(outbound.clone().connection(s, a, conns.clone()))),
        ));
    }

    Signals::install()
        .context("installing the SIGTERM and SIGINT handlers")?
        .received()
        .await;
    tracing::info!("shutting down: no longer ready, draining connections");
    accepting.store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = shutdown_tx.send(true);
    for server in servers {
        let _ = server.await;
    }
    config.abort();
    certificates.abort();
    admin_task.abort();
    access_log.settle();
    if let Some(tracer) = tracer {
        tracer.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}
