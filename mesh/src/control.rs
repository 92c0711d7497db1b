//! The client side of the controller's `ConfigDiscovery` stream: connect, say who we are,
//! apply each version or say why not, and keep serving the last good one while the controller
//! is away, reconnecting with exponential backoff and full jitter.
//!
//! The node is ready (`/readyz`) once its first snapshot is applied, not before. The token is
//! read from its file at every connect, because projected ServiceAccount tokens are rotated
//! on disk by the kubelet.

use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use weir_api::{
    error::{ConfigError, ConfigErrors, Location},
    proto::{
        config_discovery_client::ConfigDiscoveryClient, watch_request::Kind, Ack, ConfigUpdate,
        Hello, Nack, Role, WatchRequest,
    },
};

/// First wait after a failed connection; doubles up to 15 s.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(15));
/// A connection attempt that takes longer than this has failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest snapshot accepted.
const MAX_SNAPSHOT: usize = 512 << 20;

/// How to reach the controller and who this node is.
#[derive(Clone, Debug)]
pub struct ControlSettings {
    /// `https://host:port`: the stream carries TLS private keys, so it is only spoken over TLS.
    pub url: String,
    /// PEM roots the controller's certificate is checked against (its trust bundle). When
    /// given, they are the only roots: no public CA may vouch for the controller, which
    /// receives this node's token.
    pub ca_pem: Option<Vec<u8>>,
    /// The file holding this node's token.
    pub token_file: PathBuf,
    /// What this node is.
    pub role: Role,
    /// Its namespace, ServiceAccount and pod name, as the token proves them.
    pub namespace: String,
    /// Its ServiceAccount.
    pub service_account: String,
    /// Its pod (or host) name, for the controller's logs.
    pub pod: String,
}

/// Reads `--controller-ca`, when given: a PEM file with at least one certificate (an empty or
/// wrong file would otherwise surface as a TLS failure at every reconnection).
pub fn read_controller_ca(file: Option<&std::path::Path>) -> Result<Option<Vec<u8>>, String> {
    file.map(read_ca).transpose()
}

fn read_ca(file: &std::path::Path) -> Result<Vec<u8>, String> {
    use rustls_pki_types::{pem::PemObject, CertificateDer};
    let pem =
        std::fs::read(file).map_err(|e| format!("--controller-ca {}: {e}", file.display()))?;
    if !CertificateDer::pem_slice_iter(&pem).any(|c| c.is_ok()) {
        return Err(format!(
            "--controller-ca {}: no PEM certificate in it",
            file.display()
        ));
    }
    Ok(pem)
}

/// Exponential backoff with full jitter, so a restarted controller is not met by every node
/// at the same instant.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Starts at `first`, doubles up to `max`.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            current: first,
        }
    }

    /// The next wait: a random part of the current step, which then doubles.
    pub fn wait(&mut self) -> Duration {
        let wait = self.current.mul_f64(fastrand::f64());
        self.current = (self.current * 2).min(self.max);
        wait
    }

    /// Back to the first step, after a success.
    pub fn reset(&mut self) {
        self.current = self.first;
    }
}

impl ControlSettings {
    /// A TLS channel to the controller.
    pub async fn channel(&self) -> Result<tonic::transport::Channel, String> {
        let tls = tls_config(self.ca_pem.as_deref());
        Endpoint::from_shared(self.url.clone())
            .map_err(|e| format!("bad controller URL {:?}: {e}", self.url))?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
            .tls_config(tls)
            .map_err(|e| format!("TLS settings: {e}"))?
            .connect()
            .await
            .map_err(|e| format!("cannot connect: {}", weir_http::error::chain(&e)))
    }

    /// `Bearer <token>`, the token read from its file now (the kubelet rotates it on disk).
    pub fn bearer(&self) -> Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>, String> {
        let token = std::fs::read_to_string(&self.token_file)
            .map_err(|e| format!("cannot read {}: {e}", self.token_file.display()))?;
        format!("Bearer {}", token.trim())
            .parse()
            .map_err(|_| format!("{} does not hold a token", self.token_file.display()))
    }
}

/// How the controller's certificate is checked: against `ca_pem` alone when given, else the
/// system's roots.
fn tls_config(ca_pem: Option<&[u8]>) -> ClientTlsConfig {
    match ca_pem {
        Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)),
        None => ClientTlsConfig::new().with_native_roots(),
    }
}

/// What the node does with each version: serve it, or say why not. The engine's install step
/// implements it; this client knows nothing of what a version holds.
pub trait Apply: Send + Sync + 'static {
    /// Decodes and serves one payload and returns the node's own version for it; the error
    /// (why it cannot be served) is sent back as the version's NACK.
    fn apply(&self, encoding: &str, payload: &[u8]) -> Result<u64, String>;
    /// Records that a payload was refused (shown at `/config`).
    fn refuse(&self, errors: &ConfigErrors);
}

/// Follows the controller forever, handing every version it sends to `node`.
pub async fn follow(settings: ControlSettings, node: Arc<dyn Apply>) {
    let mut backoff = RECONNECT;
    let mut last_payload: Option<bytes::Bytes> = None;
    loop {
        match stream_once(&settings, &node, &mut last_payload, &mut backoff).await {
            Ok(()) => {
                tracing::warn!(url = %settings.url, "the controller closed the config stream; reconnecting")
            }
            Err(error) => {
                tracing::warn!(url = %settings.url, %error, "config stream failed; the current configuration keeps serving")
            }
        }
        tokio::time::sleep(backoff.wait()).await;
    }
}

/// One connection, until the stream ends. A stream that gets as far as applying a version
/// resets `backoff`: the next reconnect after it is quick again.
async fn stream_once(
    settings: &ControlSettings,
    node: &Arc<dyn Apply>,
    last_payload: &mut Option<bytes::Bytes>,
    backoff: &mut Backoff,
) -> Result<(), String> {
    let bearer = settings.bearer()?;
    let channel = settings.channel().await?;
    // A big cluster's snapshot is larger than tonic's 4 MiB default.
    let mut client = ConfigDiscoveryClient::new(channel).max_decoding_message_size(MAX_SNAPSHOT);

    let (tx, rx) = mpsc::channel(4);
    let hello = Hello {
        role: settings.role as i32,
        namespace: settings.namespace.clone(),
        service_account: settings.service_account.clone(),
        pod: settings.pod.clone(),
        node_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let _ = tx
        .send(WatchRequest {
            kind: Some(Kind::Hello(hello)),
        })
        .await;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request.metadata_mut().insert("authorization", bearer);
    let mut updates = client
        .watch(request)
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    tracing::info!(url = %settings.url, "connected to the controller");

    while let Some(update) = updates
        .message()
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
    {
        let version = update.version;
        let reply = match apply(node, update, last_payload, &settings.url).await {
            Ok(()) => {
                backoff.reset();
                Kind::Ack(Ack { version })
            }
            Err(error) => Kind::Nack(Nack { version, error }),
        };
        if tx.send(WatchRequest { kind: Some(reply) }).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// Decodes and installs one version. The same payload as the one being served (a reconnect
/// to an unchanged view) is acknowledged without being installed again.
async fn apply(
    node: &Arc<dyn Apply>,
    update: ConfigUpdate,
    last_payload: &mut Option<bytes::Bytes>,
    url: &str,
) -> Result<(), String> {
    if last_payload.as_ref() == Some(&update.payload) {
        return Ok(());
    }
    let (node, url, payload) = (node.clone(), url.to_string(), update.payload.clone());
    // Decoding and building the router for a big snapshot takes a while: off the worker.
    tokio::task::spawn_blocking(move || {
        match node.apply(&update.encoding, &update.payload) {
            Ok(local) => {
                tracing::info!(
                    version = update.version,
                    local_version = local,
                    "configuration from the controller applied"
                );
                Ok(())
            }
            Err(error) => {
                let location = Location {
                    file: Some(format!("controller {url}")),
                    document: None,
                };
                let refused = ConfigError::new(&location, "-", "payload", error.clone());
                node.refuse(&ConfigErrors(vec![refused]));
                tracing::error!(version = update.version, %error, "configuration from the controller refused; the current one keeps serving");
                Err(error)
            }
        }
    })
    .await
    .map_err(|e| format!("applying failed: {e}"))??;
    *last_payload = Some(payload);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A node that serves payloads saying `ok` and refuses the rest, recording both.
    #[derive(Default)]
    struct Node {
        served: Mutex<Vec<String>>,
        refused: Mutex<Vec<ConfigError>>,
    }

    impl Apply for Node {
        fn apply(&self, encoding: &str, payload: &[u8]) -> Result<u64, String> {
            if payload != b"ok" {
                return Err(format!("unknown encoding {encoding:?}"));
            }
            let mut served = self.served.lock().unwrap();
            served.push(encoding.to_string());
            Ok(served.len() as u64)
        }

        fn refuse(&self, errors: &ConfigErrors) {
            self.refused
                .lock()
                .unwrap()
                .extend(errors.0.iter().cloned());
        }
    }

    fn update(version: u64, encoding: &str, payload: &[u8]) -> ConfigUpdate {
        ConfigUpdate {
            version,
            encoding: encoding.to_string(),
            payload: payload.to_vec().into(),
        }
    }

    #[tokio::test]
    async fn a_refused_version_is_nacked_with_its_reason_and_a_resent_one_is_not_served_twice() {
        let node = Arc::new(Node::default());
        let dyn_node: Arc<dyn Apply> = node.clone();
        let mut last = None;
        let url = "https://controller:15010";
        apply(&dyn_node, update(1, "snapshot", b"ok"), &mut last, url)
            .await
            .unwrap();

        let err = apply(
            &dyn_node,
            update(2, "text/yaml", b"routes: []"),
            &mut last,
            url,
        )
        .await
        .unwrap_err();
        assert!(err.contains("unknown encoding \"text/yaml\""), "{err}");
        let refused = node.refused.lock().unwrap().clone();
        assert_eq!(refused.len(), 1);
        let error = serde_json::to_value(&refused[0]).unwrap();
        assert_eq!(
            error["location"]["file"],
            "controller https://controller:15010"
        );
        assert!(error["message"]
            .as_str()
            .unwrap()
            .contains("unknown encoding"));

        // A reconnect re-sends the same view: acknowledged, not served again.
        apply(&dyn_node, update(1, "snapshot", b"ok"), &mut last, url)
            .await
            .unwrap();
        assert_eq!(node.served.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_given_controller_ca_is_the_only_root() {
        let ca = rcgen::generate_simple_self_signed(vec!["ca".to_string()]).unwrap();
        let pem = ca.cert.pem();
        let only = format!("{:?}", tls_config(Some(pem.as_bytes())));
        assert!(only.contains("with_native_roots: false"), "{only}");
        assert_eq!(
            only.matches("Certificate {").count(),
            1,
            "exactly the given CA: {only}"
        );
        let system = format!("{:?}", tls_config(None));
        assert!(system.contains("with_native_roots: true"), "{system}");
        assert!(!system.contains("Certificate {"), "{system}");
    }
}
