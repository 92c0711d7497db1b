//! The configuration a proxy is serving, swapped atomically.
//!
//! A request loads the [`Active`] config once and uses it to the end, so a reload in the middle
//! of a request never mixes two versions, and nothing on the connection (keep-alive, an open
//! WebSocket) depends on the config: routes are swapped in place under live connections.
//!
//! The store only holds versions and their outcome. What accepting a version sets in motion
//! (the mesh dialer learning its endpoints, health checks, certificates) is the install step's
//! ([`Installer`]), in one place.

mod install;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use arc_swap::ArcSwap;
use serde::Serialize;
use weir_api::{error::ConfigErrors, Snapshot};

pub use install::{Decode, Follow, Installer, Prepare};
pub use weir_api::model::{plan_ports, PortPlan, Speaks, Unserved};

use crate::{
    balance::{Endpoint, Pool},
    metrics::Metrics,
    router::Router,
    tls::CertStatus,
};

/// One version of the configuration, ready to serve; `R` is what the role compiled from it
/// (the ingress's auth and limit guards, the sidecar's mesh policy).
pub struct Active<R> {
    /// Increases by one per accepted change; 0 before the first.
    pub version: u64,
    /// The compiled snapshot.
    pub snapshot: Arc<Snapshot>,
    /// The route index over it: every route, whatever its listeners, for a proxy that does not
    /// tell ports apart (empty when `ports` is set: a gateway's requests use those).
    pub router: Router,
    /// A gateway's route index per port it serves (see [`Ports`]); `None` where every port
    /// serves every route (a sidecar).
    pub ports: Option<HashMap<u16, Router>>,
    /// Running clusters by name.
    pub pools: HashMap<String, Arc<Pool>>,
    /// The role's own state for this version.
    pub role: R,
}

impl<R> Active<R> {
    /// The routes a request that came to the gateway's port `port` may take.
    pub fn router_at(&self, port: u16) -> &Router {
        static NONE: std::sync::LazyLock<Router> = std::sync::LazyLock::new(Router::default);
        match &self.ports {
            None => &self.router,
            Some(ports) => ports.get(&port).unwrap_or(&NONE),
        }
    }
}

/// How a gateway tells its ports apart: its home ports and the Gateways it serves, planned as
/// [`plan_ports`] says.
#[derive(Clone, Debug, Default)]
pub struct Ports {
    /// The Gateway listener port the plaintext home socket serves (with Ingresses).
    pub http: u16,
    /// The Gateway listener port the TLS home socket serves (with Ingresses).
    pub tls: u16,
    /// The Gateways served (`namespace/name`); empty: every Gateway of the class.
    pub gateways: Vec<String>,
    /// What kinds of objects are served.
    pub serve: Serve,
}

/// What kinds of objects a gateway serves (`weir-ingress --serve`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Serve {
    /// Ingresses on the home ports, and Gateways.
    #[default]
    All,
    /// Ingresses alone: a shared gateway beside one deployment per Gateway.
    Ingresses,
    /// Gateways alone: a deployment of one Gateway (with `--gateway`), which must not answer
    /// for Ingress hosts or offer their certificates.
    Gateways,
}

impl std::str::FromStr for Serve {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" => Ok(Self::All),
            "ingresses" => Ok(Self::Ingresses),
            "gateways" => Ok(Self::Gateways),
            other => Err(format!("{other:?}: use all, ingresses or gateways")),
        }
    }
}

impl Ports {
    /// Whether Gateway `gateway`'s listeners are served.
    pub fn serves(&self, gateway: &str) -> bool {
        self.serve != Serve::Ingresses
            && (self.gateways.is_empty() || self.gateways.iter().any(|g| g == gateway))
    }

    /// Whether Ingresses (routes attached to no listener) are served on the home ports.
    pub fn serves_ingresses(&self) -> bool {
        self.serve != Serve::Gateways
    }

    /// Whether `port` is one of the gateway's own.
    pub fn is_home(&self, port: u16) -> bool {
        port == self.http || port == self.tls
    }

    /// What each port serves, and the listeners that cannot be served as they ask.
    pub fn plan(&self, snapshot: &Snapshot) -> (BTreeMap<u16, PortPlan>, Vec<Unserved>) {
        plan_ports(&snapshot.listeners, (self.http, self.tls), |g| {
            self.serves(g)
        })
    }

    /// The ports other than the home ones that are served, each with what connections to it
    /// speak, in precedence order (Gateways' own listeners' ports first, the oldest Gateway's
    /// first): a gateway that may open only some opens these first.
    pub fn others(&self, snapshot: &Snapshot) -> Vec<(u16, Speaks)> {
        let mut others: Vec<(usize, u16, Speaks)> = self
            .plan(snapshot)
            .0
            .into_iter()
            .filter(|(port, _)| !self.is_home(*port))
            .map(|(port, p)| (p.rank, port, p.speaks))
            .collect();
        others.sort_unstable_by_key(|(rank, port, _)| (*rank, *port));
        others
            .into_iter()
            .map(|(_, port, speaks)| (port, speaks))
            .collect()
    }

    /// A route index per served port: a route attached to listeners takes requests on the
    /// ports where its Gateway's listeners are served; one attached to none (an Ingress's) on
    /// the home ports.
    fn routers(&self, snapshot: &Snapshot) -> HashMap<u16, Router> {
        let (plan, unserved) = self.plan(snapshot);
        for u in unserved {
            tracing::error!(problem = %u.why, "a Gateway listener is not served");
        }
        plan.into_iter()
            .map(|(port, plan)| {
                let home = self.is_home(port);
                let serves = |g: &str| plan.gateways.contains(g);
                // Routes attached to no listener are Ingresses'.
                let unattached = home && self.serves_ingresses();
                let router = Router::serving(
                    snapshot,
                    |r| r.listens(port, unattached, serves),
                    |s| s.listens(port, unattached, serves),
                    unattached,
                );
                (port, router)
            })
            .collect()
    }
}

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
    /// The objects the active configuration was compiled without (or with their last good
    /// version), each error with file, object and field: the rest of their change serves.
    pub refused: Vec<weir_api::ConfigError>,
    /// Each certificate's outcome at the last accepted change (a refused one keeps serving
    /// its previous content).
    pub certificates: Vec<CertStatus>,
}

/// What the admin pages read of a store, whatever the role's state.
pub trait Served: Send + Sync {
    /// True once a configuration has been accepted.
    fn loaded(&self) -> bool;
    /// The `/config` page: version, snapshot, and the last reload's outcome.
    fn describe(&self) -> serde_json::Value;
}

impl<R: Send + Sync> Served for ConfigStore<R> {
    fn loaded(&self) -> bool {
        ConfigStore::loaded(self)
    }

    fn describe(&self) -> serde_json::Value {
        ConfigStore::describe(self)
    }
}

/// Holds the active configuration and swaps in new versions.
pub struct ConfigStore<R> {
    active: ArcSwap<Active<R>>,
    status: Mutex<ReloadStatus>,
    metrics: Metrics,
    /// The version served, for those that follow changes.
    served: tokio::sync::watch::Sender<u64>,
}

impl<R: Default> ConfigStore<R> {
    /// An empty store (version 0, no routes: every request gets 404).
    pub fn new(metrics: Metrics) -> Self {
        let empty = Active {
            version: 0,
            snapshot: Arc::default(),
            router: Router::default(),
            ports: None,
            pools: HashMap::new(),
            role: R::default(),
        };
        Self {
            active: ArcSwap::from_pointee(empty),
            status: Mutex::default(),
            metrics,
            served: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl<R> ConfigStore<R> {
    /// The configuration to use for one request.
    pub fn load(&self) -> Arc<Active<R>> {
        self.active.load_full()
    }

    /// True once a configuration has been accepted.
    pub fn loaded(&self) -> bool {
        self.active.load().version > 0
    }

    /// The version served, changing with each accepted one.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.served.subscribe()
    }

    /// The next version made of `snapshot`, not yet served. Endpoint state (latency,
    /// in-flight counts, health, ejection) carries over by cluster and address: an address
    /// that another cluster (another namespace's Service, a plaintext Service in front of a
    /// TLS port) also names keeps its own state in each, so one cannot take it out for the
    /// other.
    pub(crate) fn next(&self, snapshot: Snapshot, role: R, ports: Option<&Ports>) -> Active<R> {
        let previous = self.active.load();
        let pools = snapshot
            .clusters
            .iter()
            .map(|(name, cluster)| {
                let before = previous.pools.get(name);
                let endpoints: HashMap<SocketAddr, Arc<Endpoint>> = before
                    .iter()
                    .flat_map(|p| p.endpoints().iter().map(|e| (e.addr, e.clone())))
                    .collect();
                let pool = Pool::new(
                    cluster.clone(),
                    &endpoints,
                    before.map(|p| &**p),
                    &self.metrics,
                );
                (name.clone(), Arc::new(pool))
            })
            .collect();
        Active {
            version: previous.version + 1,
            router: match ports {
                Some(_) => Router::default(),
                None => Router::new(&snapshot),
            },
            ports: ports.map(|p| p.routers(&snapshot)),
            snapshot: Arc::new(snapshot),
            pools,
            role,
        }
    }

    /// Serves `next` from now on and returns its version.
    pub(crate) fn swap(&self, next: Active<R>, certificates: Vec<CertStatus>) -> u64 {
        let version = next.version;
        self.active.store(Arc::new(next));
        self.served.send_replace(version);
        self.metrics.config_version.set(version as i64);
        self.metrics.config_reloads.with_label_values(&["ok"]).inc();
        let mut status = crate::lock(&self.status);
        status.last_accepted = Some(crate::unix_now());
        status.errors.clear();
        status.certificates = certificates;
        version
    }

    /// Records the objects the active configuration was compiled without.
    pub fn refused(&self, errors: Vec<weir_api::ConfigError>) {
        let objects: BTreeSet<&str> = errors.iter().map(|e| e.object.as_str()).collect();
        self.metrics
            .config_refused_objects
            .set(objects.len() as i64);
        crate::lock(&self.status).refused = errors;
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
