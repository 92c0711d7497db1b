//! weir-ingress: the north-south gateway.
//!
//! ```text
//!  --config-dir DIR ──watch──▶ compile ──▶ ConfigStore ◀── admin (/config /readyz /metrics)
//!                                              │
//!  clients ──▶ --listen ──────▶ server ──▶ stack::handle ──▶ backends (pooled h1 / h2c)
//!          └─▶ --listen-tls ──▶ TLS (SNI → certificate from Secrets) ──┘
//!                 └─ SNI of a TLSRoute ──▶ passed through, or carried after TLS ──▶ backend
//! ```
//!
//! It reads Kubernetes objects (Services, EndpointSlices, Ingresses, Gateways and routes) from a
//! directory or the controller, serves them, reloads without dropping a connection, and on
//! SIGTERM stops being ready, drains in-flight requests and exits 0.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{atomic::AtomicBool, Arc},
    time::Duration,
};
use weir_api::{duration::parse_duration, process::Signals};
use weir_ingress::{
    auth::jwks,
    config_dir,
    listeners::{self, serve_all, Own},
    metrics::GuardMetrics,
    ratelimit::{redis::GlobalStore, LimitSettings},
    security::Registry,
    stack,
};

use anyhow::{bail, Context as _};
use clap::Parser;
use tokio::net::TcpListener;
use weir_http::{
    server::ServerSettings,
    upstream::{Upstream, UpstreamSettings},
};
use weir_mesh::{
    control,
    identity::{self, WorkloadIdentity},
    mtls::{self, Dialer},
};
use weir_proxy::{
    access_log::{AccessLog, LogArgs},
    admin::{serve_admin, AdminState},
    backend_tls::BackendDialer,
    config::{ConfigStore, Follow, Installer, Ports, Serve},
    headers::{FieldPolicy, ForwardedMode, RequestIdMode, TraceContext, UnderscoreHeaders},
    metrics::Metrics,
    normalize::{EscapedSlashes, PathParameters, PathPolicy},
    stream::{StreamRouting, StreamSettings},
    tls::CertStore,
    trace::{Service, TraceArgs, Tracer},
};

/// Weir's north-south gateway: serves Kubernetes Ingress and Gateway API routes.
#[derive(Parser, Debug)]
#[command(name = "weir-ingress", version, about)]
struct Args {
    /// Directory of Kubernetes objects (multi-document YAML), watched for changes: the
    /// standalone gateway, with no controller.
    #[arg(
        long,
        env = "WEIR_CONFIG_DIR",
        required_unless_present = "controller",
        conflicts_with = "controller"
    )]
    config_dir: Option<PathBuf>,
    /// The controller to get configuration from (`https://host:15010`, always TLS) instead of
    /// a directory.
    #[arg(long, env = "WEIR_CONTROLLER", requires = "identity_token_file")]
    controller: Option<String>,
    /// The controller's trust bundle (PEM); without it the system roots are used.
    #[arg(long, env = "WEIR_CONTROLLER_CA")]
    controller_ca: Option<PathBuf>,
    /// The token that proves this gateway's ServiceAccount to the controller (re-read at every
    /// connect, as the kubelet rotates projected tokens).
    #[arg(long, env = "WEIR_IDENTITY_TOKEN_FILE")]
    identity_token_file: Option<PathBuf>,
    /// This gateway's namespace, as its token proves it.
    #[arg(long, env = "POD_NAMESPACE", default_value = "weir-system")]
    namespace: String,
    /// This gateway's ServiceAccount, as its token proves it.
    #[arg(long, env = "SERVICE_ACCOUNT", default_value = "weir-ingress")]
    service_account: String,
    /// The mesh's trust domain: with --controller the gateway joins the mesh as
    /// spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT and dials meshed backends with mTLS.
    #[arg(long, env = "TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// This gateway's pod name, for the controller's logs (default: the host name).
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// Address for client traffic (HTTP/1.1 and h2c).
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Address for HTTPS (HTTP/1.1 and HTTP/2 by ALPN), with certificates from the Secrets
    /// that Ingress `spec.tls` and Gateway HTTPS listeners name, chosen by SNI.
    #[arg(long)]
    listen_tls: Option<SocketAddr>,
    /// The Gateway listener port that --listen serves (with Ingresses): what clients reach it
    /// as. A Gateway listener on a port other than this and --gateway-tls-port gets a socket
    /// of its own on that port, at --listen's address.
    #[arg(long, default_value_t = 80)]
    gateway_http_port: u16,
    /// The Gateway listener port that --listen-tls serves (HTTPS and TLS listeners).
    #[arg(long, default_value_t = 443)]
    gateway_tls_port: u16,
    /// Serve only these Gateways' listeners and routes (`namespace/name`, repeatable; one
    /// gateway deployment per Gateway keeps Gateways apart). Default: every Gateway of class
    /// `weir`.
    #[arg(long = "gateway", env = "WEIR_GATEWAYS", value_delimiter = ',')]
    gateways: Vec<String>,
    /// What to serve: `all` (Ingresses on the home ports, and Gateways), `ingresses` (beside
    /// the controller's deployment per Gateway) or `gateways` (a Gateway's own deployment).
    #[arg(long, env = "WEIR_SERVE", default_value = "all")]
    serve: Serve,
    /// At most this many Gateway listener ports of their own (beyond the home ports); each
    /// costs a socket per worker. Listeners past it are not served (and logged).
    #[arg(long, default_value_t = 64)]
    max_listener_ports: usize,
    /// Address for /healthz, /readyz, /config and /metrics.
    #[arg(long, default_value = "127.0.0.1:9901")]
    admin: SocketAddr,
    /// Worker threads; 0 means one per core.
    #[arg(long, default_value_t = 0)]
    workers: usize,
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    trace: TraceArgs,
    /// The `x-request-id` each request carries on, returns and logs: `preserve-or-generate`
    /// (the client's when usable, else a new one), `generate` (always new), or `preserve`
    /// (only the client's; none made).
    #[arg(long, env = "WEIR_REQUEST_ID", default_value = "preserve-or-generate")]
    request_id: RequestIdMode,
    /// W3C `traceparent`: `continue` (the client's trace with a new span, or a new trace) or
    /// `off` (passed on as the client sent it).
    #[arg(long, env = "WEIR_TRACE_CONTEXT", default_value = "continue")]
    trace_context: TraceContext,
    /// `X-Forwarded-For/-Proto/-Host`: `append` (the client's address after any it sent),
    /// `replace` (what the client sent about its address is dropped: for a gateway clients
    /// reach directly), or `off` (none set, the client's passed on).
    #[arg(long, env = "WEIR_FORWARDED", default_value = "append")]
    forwarded: ForwardedMode,
    /// Encoded slashes and backslashes (`%2F`, `%5C`) and raw `\` in a path: `reject` (400),
    /// `unescape` (read as `/` before routing, and sent on so), or `keep` (passed on as data).
    #[arg(long, env = "WEIR_ESCAPED_SLASHES", default_value = "reject")]
    escaped_slashes: EscapedSlashes,
    /// `;` parameters in a path segment (`/a;x/b`): `reject` (400), `strip` (removed before
    /// routing, and sent on without), or `keep` (part of the segment).
    #[arg(long, env = "WEIR_PATH_PARAMETERS", default_value = "reject")]
    path_parameters: PathParameters,
    /// Request headers whose names contain `_`: `drop` (all of them: CGI, WSGI and Rack read
    /// `X_User_Id` as `X-User-Id`) or `keep` (all but those that read as a header Weir sets
    /// or vouches for).
    #[arg(long, env = "WEIR_UNDERSCORE_HEADERS", default_value = "drop")]
    underscore_headers: UnderscoreHeaders,
    /// Largest request header block accepted; larger gets 431.
    #[arg(long, default_value = "64Ki", value_parser = weir_api::duration::parse_bytes)]
    max_header_bytes: u64,
    /// Close a client connection that doesn't send its request headers within this time.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    header_read_timeout: Duration,
    /// A request body that has been waited on this long without a byte arriving fails with
    /// 408, and its backend connection is closed (nginx's client_body_timeout); 0s: no limit.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    client_body_timeout: Duration,
    /// Close (GOAWAY) an HTTP/2 client connection with no stream open for this long; 0s: never.
    #[arg(long, default_value = "3m", value_parser = parse_duration)]
    http2_idle_timeout: Duration,
    /// Send HTTP/2 clients a PING this often, and close a connection whose PING goes
    /// unanswered for --http2-keepalive-timeout; 0s: no PINGs.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    http2_keepalive_interval: Duration,
    /// How long an HTTP/2 client has to answer a PING.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    http2_keepalive_timeout: Duration,
    /// On SIGTERM, wait this long for in-flight requests before closing connections.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// On SIGTERM, keep accepting (but report not ready) this long first, so load balancers
    /// see the readiness change before connections are refused.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    shutdown_delay: Duration,
    /// Give up connecting to a backend after this long (502).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// A connection a TLSRoute or TCPRoute carries that moves no byte either way for this long is closed.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    stream_idle_timeout: Duration,
    /// At most this many connections carried at once per gateway port by TLSRoutes and
    /// TCPRoutes; more are closed as they come, so a flood on one port leaves the others their
    /// share of file descriptors.
    #[arg(long, default_value_t = 10_000)]
    max_stream_connections: usize,
    /// Redis for `scope: global` rate limits (`redis://host:6379`, `rediss://` for TLS).
    /// Several comma-separated URLs with --redis-cluster name a cluster's seed nodes.
    #[arg(long, env = "WEIR_REDIS", value_delimiter = ',')]
    redis: Vec<String>,
    /// The --redis URLs are a Redis Cluster.
    #[arg(long)]
    redis_cluster: bool,
    /// A global limit whose Redis call takes longer falls back (failureMode).
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    redis_timeout: Duration,
    /// Count `clientIP` rate limits of IPv6 clients per prefix of this length (32–128; 128
    /// counts each address alone). A host usually holds a whole /64.
    #[arg(long, env = "WEIR_RATELIMIT_IPV6_PREFIX", default_value_t = 64,
        value_parser = clap::value_parser!(u8).range(32..=128))]
    ratelimit_ipv6_prefix: u8,
    /// Keys one local rate limit holds at most; past it the keys nearest to full are forgotten
    /// and new keys start as far in debt as they were.
    #[arg(long, default_value_t = weir_ingress::ratelimit::local::DEFAULT_KEYS,
        value_parser = parse_local_keys)]
    ratelimit_local_keys: usize,
}

/// At least one key per shard.
fn parse_local_keys(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 16 => Ok(n),
        _ => Err(format!("{s:?} is not a number of keys, at least 16")),
    }
}

mod source;

use source::{config_source, Source};

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    weir_api::init_logging();
    let workers = if args.workers == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        args.workers
    };
    // Like nginx's workers: one single-threaded runtime per worker thread, all accepting from
    // the same listening socket. A request stays on one thread from accept to response, so no
    // work-stealing machinery is paid for on every wake-up. This thread is worker 0 and also
    // runs the admin listener, the config watcher and signal handling.
    let runtime = worker_runtime().context("starting the runtime")?;
    runtime.block_on(run(args, workers))
}

fn worker_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .thread_name("weir-worker")
        .enable_all()
        .build()
}

async fn run(args: Args, workers: usize) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let global = (!args.redis.is_empty())
        .then(|| GlobalStore::connect(args.redis.clone(), args.redis_cluster, args.redis_timeout));
    let guard_metrics = GuardMetrics::register(metrics.registry());
    let registry = Registry::new(guard_metrics.clone(), jwks::https_client(), global).with_limits(
        LimitSettings {
            local_keys: args.ratelimit_local_keys,
            ipv6_prefix: args.ratelimit_ipv6_prefix,
        },
    );
    let source = config_source(&args)?;
    // Following a controller, the gateway is a mesh workload: it holds an identity and dials
    // meshed backends with mTLS.
    let dialer = match &source {
        Source::Controller(_) => Some(Arc::new(Dialer::new(
            Arc::new(WorkloadIdentity::default()),
            &args.trust_domain,
            &metrics.identity,
        ))),
        Source::Dir(_) => None,
    };
    let store = Arc::new(ConfigStore::new(metrics.clone()));
    let ports = Ports {
        http: args.gateway_http_port,
        tls: args.gateway_tls_port,
        gateways: args.gateways.clone(),
        serve: args.serve,
    };
    let certs = Arc::new(CertStore::new(metrics.clone()).at_ports(ports.clone()));
    let mut installer = Installer::new(store.clone())
        .prepare(Box::new(move |snapshot| registry.prepare(snapshot)))
        .certificates(certs.clone())
        .ports(ports.clone());
    // Backends are dialed in plaintext, with a BackendTLSPolicy's TLS, or (meshed) with mTLS.
    let backends = Arc::new(BackendDialer::new(dialer.clone()));
    installer = installer.backends(backends.clone());
    let installer = Arc::new(installer);
    let compiler = Arc::new(std::sync::Mutex::new(weir_api::Compiler::default()));
    // Taken before the first read, so a change made while it is read is read again.
    let read = match &source {
        Source::Dir(dir) => weir_api::load::fingerprint(dir),
        Source::Controller(_) => Vec::new(),
    };
    if let Source::Dir(dir) = &source {
        if let Err(errors) = config_dir::reload(dir, &compiler, &installer) {
            bail!(
                "the configuration in {} is invalid:\n{errors}",
                dir.display()
            );
        }
    }
    let plain = bind(args.listen, "--listen")?;
    let tls = args
        .listen_tls
        .map(|addr| bind(addr, "--listen-tls"))
        .transpose()?;
    let admin = TcpListener::bind(args.admin)
        .await
        .with_context(|| format!("binding --admin {}", args.admin))?;
    tracing::info!(
        listen = %plain.local_addr()?,
        listen_tls = ?tls.as_ref().map(|l| l.local_addr()).transpose()?,
        admin = %admin.local_addr()?,
        "weir-ingress serving"
    );
    let admin_port = admin.local_addr()?.port();

    let access_log = AccessLog::stdout(&args.log, metrics.access_log_dropped.clone())?;
    let tracer = match &args.trace.otlp_endpoint {
        Some(endpoint) => {
            let service = Service {
                name: "weir-ingress",
                namespace: Some(args.namespace.clone()).filter(|n| !n.is_empty()),
                pod: args.pod_name.clone(),
            };
            Some(Tracer::new(endpoint, &service, args.trace.trace_sampling)?)
        }
        None => None,
    };
    let upstream_settings = UpstreamSettings {
        connect_timeout: args.connect_timeout,
        ..UpstreamSettings::default()
    };
    let upstream = Upstream::with_mesh(&upstream_settings, &metrics.http, backends.clone());
    let gateway = Arc::new(stack::Gateway {
        store: store.clone(),
        upstream,
        metrics: metrics.clone(),
        guard_metrics,
        access_log: access_log.clone(),
        max_header_bytes: usize::try_from(args.max_header_bytes).unwrap_or(usize::MAX),
        fields: FieldPolicy {
            request_id: args.request_id,
            trace_context: args.trace_context,
            forwarded: args.forwarded,
            sampling: args.trace.trace_sampling,
        },
        paths: PathPolicy {
            escaped_slashes: args.escaped_slashes,
            parameters: args.path_parameters,
        },
        underscores: args.underscore_headers,
        tracer: tracer.clone(),
    });

    let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
    let accepting = Arc::new(AtomicBool::new(true));
    let admin_state = AdminState {
        store: store.clone(),
        metrics: metrics.clone(),
        accepting: accepting.clone(),
        pages: None,
    };
    let admin_task = tokio::spawn(serve_admin(admin, admin_state, shutdown.clone()));
    let watcher = match source {
        Source::Dir(dir) => tokio::spawn(config_dir::follow(dir, compiler, installer, read)),
        Source::Controller(settings) => {
            if let Some(dialer) = &dialer {
                let own = format!("{}/{}", settings.namespace, settings.service_account);
                tokio::spawn(identity::maintain(
                    settings.clone(),
                    mtls::spiffe_uri(&args.trust_domain, &own),
                    dialer.identity().clone(),
                    metrics.identity.certificate_expiry.clone(),
                ));
            }
            let node = Arc::new(Follow {
                installer,
                decode: |encoding, payload| Ok((weir_api::wire::decode(encoding, payload)?, None)),
            });
            tokio::spawn(control::follow(settings, node))
        }
    };

    let plain_settings = ServerSettings {
        header_read_timeout: args.header_read_timeout,
        drain_timeout: args.drain_timeout,
        client_body_timeout: args.client_body_timeout,
        http2_idle_timeout: args.http2_idle_timeout,
        http2_keepalive_interval: args.http2_keepalive_interval,
        http2_keepalive_timeout: args.http2_keepalive_timeout,
        ..ServerSettings::default()
    };
    // TLSRoutes: connections carried as bytes by SNI, before or after the handshake.
    let streams = StreamRouting::new(
        store.clone(),
        StreamSettings {
            connect_timeout: args.connect_timeout,
            idle_timeout: args.stream_idle_timeout,
            max_connections: args.max_stream_connections,
        },
        metrics.clone(),
        access_log.clone(),
    )
    .dialing(backends);
    let own = Own {
        plain: (plain, args.gateway_http_port),
        tls: tls.map(|t| (t, args.gateway_tls_port)),
        admin_port,
        max: args.max_listener_ports,
    };
    let (home, binder) = listeners::sockets(own, plain_settings, certs, streams, ports, &metrics)?;
    let (bound, sockets) = listeners::follow(store.clone(), binder, shutdown.clone());
    let handler = move |port, client, req| stack::handle(gateway.clone(), port, client, req);
    let mut others = Vec::new();
    for worker in 1..workers {
        let home = home
            .iter()
            .map(|(l, s, p)| Ok((l.try_clone()?, s.clone(), *p)))
            .collect::<std::io::Result<Vec<_>>>()
            .context("sharing the listeners with a worker")?;
        let (handler, metrics, shutdown) = (handler.clone(), metrics.clone(), shutdown.clone());
        let bound = bound.clone();
        let runtime = worker_runtime().context("starting a worker runtime")?;
        others.push(
            std::thread::Builder::new()
                .name(format!("weir-worker-{worker}"))
                .spawn(move || {
                    runtime.block_on(serve_all(home, bound, handler, metrics.http, shutdown));
                })
                .context("starting a worker thread")?,
        );
    }
    let server = tokio::spawn(serve_all(
        home,
        bound,
        handler,
        metrics.http.clone(),
        shutdown.clone(),
    ));

    Signals::install()
        .context("installing the SIGTERM and SIGINT handlers")?
        .received()
        .await;
    tracing::info!("shutting down: no longer ready, draining connections");
    accepting.store(false, std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(args.shutdown_delay).await;
    let _ = shutdown_tx.send(true);
    server.await.context("the server task failed")?;
    let _ = sockets.await;
    tokio::task::spawn_blocking(move || {
        for worker in others {
            let _ = worker.join();
        }
    })
    .await
    .context("waiting for the workers")?;
    watcher.abort();
    admin_task.abort();
    access_log.settle();
    if let Some(tracer) = tracer {
        tracer.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}

fn bind(addr: SocketAddr, flag: &str) -> anyhow::Result<std::net::TcpListener> {
    listeners::bind(addr).with_context(|| format!("binding {flag} {addr}"))
}
