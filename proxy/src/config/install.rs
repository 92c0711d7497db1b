//! The install step: everything accepting a version sets in motion, in order, in one place.
//!
//! ```text
//!  snapshot ─▶ role state (prepare or the decoded view) ─▶ mesh dialer learns the endpoints
//!           ─▶ next version (pools, router) ─▶ health checks ─▶ certificates ─▶ swap
//! ```
//!
//! The dialer learns which endpoints are meshed before the version is served, so no request
//! of it dials a meshed endpoint in plaintext. [`Follow`] is the same step fed by the
//! controller's stream.

use std::sync::Arc;

use weir_api::{error::ConfigErrors, Snapshot};
use weir_http::upstream::PeerDialer;
use weir_mesh::{control::Apply, mtls::Dialer};

use super::{ConfigStore, Ports};
use crate::{backend_tls::BackendDialer, resilience::health, tls::CertStore};

/// Builds a role's state for a snapshot that came without one (key caches, rate limiters).
pub type Prepare<R> = Box<dyn Fn(&Snapshot) -> R + Send + Sync>;

/// Decodes a `ConfigUpdate`'s payload, given its encoding: the snapshot, and the role's state
/// when the payload carries more than a snapshot (a sidecar's view).
pub type Decode<R> = fn(&str, &[u8]) -> Result<(Snapshot, Option<R>), String>;

/// Installs versions into a store with their side effects.
pub struct Installer<R> {
    store: Arc<ConfigStore<R>>,
    prepare: Option<Prepare<R>>,
    dialer: Option<Arc<Dialer>>,
    backends: Option<Arc<BackendDialer>>,
    certs: Option<Arc<CertStore>>,
    ports: Option<Ports>,
}

impl<R: Default + Send + Sync + 'static> Installer<R> {
    /// Installs into `store`; the role's state is `R::default()` unless given or prepared.
    pub fn new(store: Arc<ConfigStore<R>>) -> Self {
        Self {
            store,
            prepare: None,
            dialer: None,
            backends: None,
            certs: None,
            ports: None,
        }
    }

    /// Runs `prepare` on every snapshot that comes without the role's state.
    pub fn prepare(mut self, prepare: Prepare<R>) -> Self {
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

    /// Makes `backends` learn every version's BackendTLSPolicies (and, for its mesh, the
    /// meshed endpoints) before it serves; health checks dial through it.
    pub fn backends(mut self, backends: Arc<BackendDialer>) -> Self {
        self.backends = Some(backends);
        self
    }

    /// Gives the TLS listener each version's certificates.
    pub fn certificates(mut self, certs: Arc<CertStore>) -> Self {
        self.certs = Some(certs);
        self
    }

    /// Builds each version's route index per port (a gateway's listeners).
    pub fn ports(mut self, ports: Ports) -> Self {
        self.ports = Some(ports);
        self
    }

    /// The store installed into.
    pub fn store(&self) -> &Arc<ConfigStore<R>> {
        &self.store
    }

    /// Makes `snapshot` the active configuration and returns its version. Its warnings are
    /// logged.
    pub fn install(&self, snapshot: Snapshot, role: Option<R>) -> u64 {
        for warning in &snapshot.warnings {
            tracing::warn!(%warning, "configuration warning");
        }
        let role = role
            .or_else(|| self.prepare.as_ref().map(|p| p(&snapshot)))
            .unwrap_or_default();
        if let Some(dialer) = &self.dialer {
            dialer.update(snapshot.clusters.values());
        }
        if let Some(backends) = &self.backends {
            backends.update(snapshot.clusters.values());
        }
        let certificates = match &self.certs {
            Some(certs) => {
                certs.update_clients(&snapshot.frontend);
                certs.update(&snapshot.tls)
            }
            None => Vec::new(),
        };
        let next = self.store.next(snapshot, role, self.ports.as_ref());
        let dialer = match &self.backends {
            Some(b) => Some(b.clone() as Arc<dyn PeerDialer>),
            None => self.dialer.clone().map(|d| d as Arc<dyn PeerDialer>),
        };
        for pool in next.pools.values() {
            health::spawn(pool, dialer.clone());
        }
        self.store.swap(next, certificates)
    }

    /// Records a rejected change; the active configuration stays.
    pub fn reject(&self, errors: &ConfigErrors) {
        self.store.reject(errors);
    }

    /// Records the objects the active configuration was compiled without.
    pub fn refused(&self, errors: Vec<weir_api::ConfigError>) {
        self.store.refused(errors);
    }
}

/// The install step fed by the controller: decodes each payload with the role's [`Decode`].
pub struct Follow<R> {
    /// Where versions go.
    pub installer: Arc<Installer<R>>,
    /// How the role reads a payload.
    pub decode: Decode<R>,
}

impl<R: Default + Send + Sync + 'static> Apply for Follow<R> {
    fn apply(&self, encoding: &str, payload: &[u8]) -> Result<u64, String> {
        let (snapshot, role) = (self.decode)(encoding, payload)?;
        Ok(self.installer.install(snapshot, role))
    }

    fn refuse(&self, errors: &ConfigErrors) {
        self.installer.reject(errors);
    }
}
