//! The configuration a proxy is serving, swapped atomically.
//!
//! A request loads the [`Active`] config once and uses it to the end, so a reload in the middle
//! of a request never mixes two versions, and nothing on the connection (keep-alive, an open
//! WebSocket) depends on the config: routes are swapped in place under live connections.

use std::{
    any::Any,
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use arc_swap::ArcSwap;
use serde::Serialize;
use weir_api::{error::ConfigErrors, Snapshot};

use crate::{
    balance::{Endpoint, Pool},
    metrics::Metrics,
    mtls::Dialer,
    resilience::health,
    router::Router,
    tls::{CertStatus, CertStore},
};

/// One version of the configuration, ready to serve.
pub struct Active {
    /// Increases by one per accepted change; 0 before the first.
    pub version: u64,
    /// The compiled snapshot.
    pub snapshot: Arc<Snapshot>,
    /// The route index over it.
    pub router: Router,
    /// Running clusters by name.
    pub pools: HashMap<String, Arc<Pool>>,
    /// What the role built from this snapshot (see [`ConfigStore::with_role`]).
    pub role: Option<Arc<dyn Any + Send + Sync>>,
}

/// Builds a role's own runtime state for a snapshot (key caches, rate limiters), once per
/// accepted change; the stack finds it in [`Active::role`].
pub type Prepare = Box<dyn Fn(&Snapshot) -> Arc<dyn Any + Send + Sync> + Send + Sync>;

/// The last reload's outcome, shown at `/config`.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadStatus {
    /// Unix time of the last accepted change.
    pub last_accepted: Option<u64>,
    /// Unix time of the last rejected change.
    pub last_rejected: Option<u64>,
    /// Why it was rejected: every error, with file, object and field.
    pub errors: Vec<weir_api::ConfigError>,
    /// Each certificate's outcome at the last accepted change (a refused one keeps serving
    /// its previous content).
    pub certificates: Vec<CertStatus>,
}

/// Holds the active configuration and swaps in new versions.
pub struct ConfigStore {
    active: ArcSwap<Active>,
    status: Mutex<ReloadStatus>,
    metrics: Metrics,
    /// Certificates for the TLS listener, updated with each accepted change.
    pub certs: Arc<CertStore>,
    prepare: Option<Prepare>,
    /// The mesh dialer: taught each snapshot's meshed endpoints, used by health checks.
    dialer: Option<Arc<Dialer>>,
}

impl ConfigStore {
    /// An empty store (version 0, no routes: every request gets 404).
    pub fn new(metrics: Metrics) -> Self {
        let empty = Active {
            version: 0,
            snapshot: Arc::default(),
            router: Router::default(),
            pools: HashMap::new(),
            role: None,
        };
        Self {
            active: ArcSwap::from_pointee(empty),
            status: Mutex::default(),
            certs: Arc::new(CertStore::new(metrics.clone())),
            metrics,
            prepare: None,
            dialer: None,
        }
    }

    /// Runs `prepare` on every accepted snapshot before it is served.
    pub fn with_role(mut self, prepare: Prepare) -> Self {
        self.prepare = Some(prepare);
        self
    }

    /// Makes this proxy a mesh workload: `dialer` learns from every accepted snapshot which
    /// endpoints are meshed (before any connection to them is made), and health checks reach
    /// those over mTLS.
    pub fn mesh(mut self, dialer: Arc<Dialer>) -> Self {
        self.dialer = Some(dialer);
        self
    }

    /// The configuration to use for one request.
    pub fn load(&self) -> Arc<Active> {
        self.active.load_full()
    }

    /// True once a configuration has been accepted.
    pub fn loaded(&self) -> bool {
        self.active.load().version > 0
    }

    /// Makes `snapshot` the active configuration and returns its version. Endpoint state
    /// (latency, in-flight counts) carries over by address. Its warnings are logged.
    pub fn install(&self, snapshot: Snapshot) -> u64 {
        let role = self.prepare.as_ref().map(|p| p(&snapshot));
        self.install_prepared(snapshot, role)
    }

    /// [`install`](Self::install) with the role's state already made (a sidecar makes it from
    /// the parts of its view that are not in the snapshot).
    pub fn install_prepared(
        &self,
        snapshot: Snapshot,
        role: Option<Arc<dyn Any + Send + Sync>>,
    ) -> u64 {
        for warning in &snapshot.warnings {
            tracing::warn!(%warning, "configuration warning");
        }
        if let Some(dialer) = &self.dialer {
            dialer.update(snapshot.clusters.values());
        }
        let previous = self.active.load();
        let endpoints: HashMap<SocketAddr, Arc<Endpoint>> = previous
            .pools
            .values()
            .flat_map(|p| p.endpoints().iter().map(|e| (e.addr, e.clone())))
            .collect();
        let pools = snapshot
            .clusters
            .iter()
            .map(|(name, cluster)| {
                let pool = Arc::new(Pool::new(
                    cluster.clone(),
                    &endpoints,
                    previous.pools.get(name).map(|p| &**p),
                    &self.metrics,
                ));
                health::spawn(&pool, self.dialer.as_ref());
                (name.clone(), pool)
            })
            .collect();
        let certificates = self.certs.update(&snapshot.tls);
        let version = previous.version + 1;
        let router = Router::new(&snapshot);
        self.active.store(Arc::new(Active {
            version,
            snapshot: Arc::new(snapshot),
            router,
            pools,
            role,
        }));
        self.metrics.config_version.set(version as i64);
        self.metrics.config_reloads.with_label_values(&["ok"]).inc();
        let mut status = crate::lock(&self.status);
        status.last_accepted = Some(crate::unix_now());
        status.errors.clear();
        status.certificates = certificates;
        version
    }

    /// Records a rejected change; the active configuration stays.
    pub fn reject(&self, errors: &ConfigErrors) {
        self.metrics
            .config_reloads
            .with_label_values(&["rejected"])
            .inc();
        let mut status = crate::lock(&self.status);
        status.last_rejected = Some(crate::unix_now());
        status.errors = errors.0.clone();
    }

    /// The `/config` page: version, snapshot, and the last reload's outcome.
    pub fn describe(&self) -> serde_json::Value {
        let active = self.load();
        let status = crate::lock(&self.status).clone();
        serde_json::json!({
            "version": active.version,
            "reload": status,
            "snapshot": &*active.snapshot,
        })
    }
}
