//! A sidecar's view as it serves it: the snapshot of the clusters it may call (balanced and
//! made resilient by the engine, like the ingress's), and the rest, [`MeshState`]: its own
//! inbound policy and how a destination is mapped to a Service — by cluster IP and port in
//! transparent mode, by `Host` in explicit mode.
//!
//! A view that requires a restricting feature this sidecar does not enforce
//! ([`weir_api::model::features`]) is refused: the engine NACKs it with the error [`decode`]
//! returns, naming the features, and keeps serving the last good view.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, OnceLock},
};

use weir_api::{
    model::{features, Inbound, SidecarView},
    wire::{self, SIDECAR_ENCODING},
    Snapshot,
};

/// One port of one Service, as a destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `namespace/name`, for logs and metrics.
    pub service: Arc<str>,
    /// The cluster serving it.
    pub cluster: Arc<str>,
}

/// What the sidecar keeps of its view besides the clusters.
#[derive(Debug, Default)]
pub struct MeshState {
    /// Its own pod's mTLS mode and access policies.
    pub inbound: Inbound,
    /// Service cluster IP and port → target.
    by_addr: HashMap<SocketAddr, Target>,
    /// `name.namespace` → the Service's ports and their targets.
    by_name: HashMap<String, Vec<(u16, Target)>>,
}

/// The restricting features this sidecar enforces, each where it is enforced: access rules,
/// their operations and callers' trust domains in [`crate::access`], STRICT in
/// [`crate::inbound`].
pub const ENFORCES: &[&str] = &[
    features::ACCESS,
    features::ACCESS_METHODS,
    features::ACCESS_PATHS,
    features::ACCESS_PORTS,
    features::ACCESS_TRUST_DOMAIN,
    features::MTLS_STRICT,
];

/// Features this process acts as not enforcing (`--refuse-features`). Process-wide because the
/// engine calls [`decode`] as a plain function; set once at startup.
static REFUSED: OnceLock<Vec<String>> = OnceLock::new();

/// Makes [`decode`] refuse views requiring any of `refused`, as a node predating them would.
pub fn refuse_features(refused: Vec<String>) {
    let _ = REFUSED.set(refused);
}

/// [`Decode`](weir_proxy::config::Decode) for a sidecar view.
pub fn decode(encoding: &str, payload: &[u8]) -> Result<(Snapshot, Option<MeshState>), String> {
    let view: SidecarView = wire::decode_view(SIDECAR_ENCODING, encoding, payload)?;
    let refused = REFUSED.get().map(Vec::as_slice).unwrap_or_default();
    check(&view, refused)?;
    let (snapshot, state) = split(view);
    Ok((snapshot, Some(state)))
}

/// Whether this sidecar can enforce everything `view` requires, short of `refused`.
fn check(view: &SidecarView, refused: &[String]) -> Result<(), String> {
    let enforced: Vec<&str> = ENFORCES
        .iter()
        .copied()
        .filter(|feature| !refused.iter().any(|r| r == feature))
        .collect();
    let missing = view.unenforceable(&enforced);
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "this sidecar cannot enforce {} (required by its inbound policy); it keeps serving its last good view",
        missing.join(", ")
    ))
}

/// The snapshot the engine serves and the mesh state, from one view.
pub fn split(view: SidecarView) -> (Snapshot, MeshState) {
    let mut state = MeshState {
        inbound: view.inbound,
        ..MeshState::default()
    };
    for service in view.services {
        let name: Arc<str> = format!("{}/{}", service.namespace, service.name).into();
        let mut ports = Vec::with_capacity(service.ports.len());
        for port in &service.ports {
            let target = Target {
                service: name.clone(),
                cluster: Arc::from(port.cluster.as_str()),
            };
            for ip in &service.cluster_ips {
                state
                    .by_addr
                    .insert(SocketAddr::new(*ip, port.port), target.clone());
            }
            ports.push((port.port, target));
        }
        state
            .by_name
            .insert(format!("{}.{}", service.name, service.namespace), ports);
    }
    let snapshot = Snapshot {
        clusters: view.clusters,
        ..Snapshot::default()
    };
    (snapshot, state)
}

impl MeshState {
    /// The Service port behind a cluster IP and port (transparent mode).
    pub fn by_addr(&self, addr: SocketAddr) -> Option<&Target> {
        self.by_addr.get(&addr)
    }

    /// The Service port a `Host` names (explicit mode): `svc`, `svc.ns`, `svc.ns.svc` or
    /// `svc.ns.svc.CLUSTER_DOMAIN`, with an optional port. Without a port: port 80, or the
    /// Service's only port. A short name is in `own_namespace`.
    pub fn by_host(&self, host: &str, own_namespace: &str) -> Option<&Target> {
        let (name, port) = match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port.parse::<u16>().ok()?)),
            None => (host, None),
        };
        let name = name.to_ascii_lowercase();
        let labels: Vec<&str> = name.split('.').collect();
        let key = match labels.as_slice() {
            [service] => format!("{service}.{own_namespace}"),
            [service, namespace] => format!("{service}.{namespace}"),
            [service, namespace, "svc", ..] => format!("{service}.{namespace}"),
            _ => return None,
        };
        let ports = self.by_name.get(&key)?;
        let found = match port {
            Some(port) => ports.iter().find(|(p, _)| *p == port),
            None => ports
                .iter()
                .find(|(p, _)| *p == 80)
                .or_else(|| (ports.len() == 1).then(|| &ports[0])),
        };
        found.map(|(_, target)| target)
    }
}

#[cfg(test)]
mod tests {
    use weir_api::model::{MeshPort, MeshService};

    use super::*;

    fn state() -> MeshState {
        let service = |name: &str, ip: &str, ports: &[u16]| MeshService {
            namespace: "shop".into(),
            name: name.into(),
            cluster_ips: vec![ip.parse().unwrap()],
            ports: ports
                .iter()
                .map(|p| MeshPort {
                    port: *p,
                    name: String::new(),
                    cluster: format!("shop/{name}:{p}"),
                })
                .collect(),
        };
        let view = SidecarView {
            services: vec![
                service("backend", "10.96.0.20", &[80]),
                service("db", "10.96.0.30", &[5432, 9187]),
            ],
            ..SidecarView::default()
        };
        split(view).1
    }

    #[test]
    fn hosts_and_cluster_addresses_name_service_ports() {
        let state = state();
        let cluster = |t: Option<&Target>| t.map(|t| t.cluster.to_string());
        let backend = Some("shop/backend:80".to_string());
        for host in [
            "backend",
            "backend.shop",
            "Backend.Shop.svc",
            "backend.shop.svc.cluster.local",
            "backend.shop.svc.cluster.local:80",
        ] {
            assert_eq!(cluster(state.by_host(host, "shop")), backend, "{host}");
        }
        assert_eq!(cluster(state.by_host("backend", "other")), None);
        assert_eq!(cluster(state.by_host("backend.shop:81", "shop")), None);
        assert_eq!(
            cluster(state.by_host("db.shop", "shop")),
            None,
            "two ports and none is 80: the port must be said"
        );
        assert_eq!(
            cluster(state.by_host("db.shop:9187", "x")),
            Some("shop/db:9187".into())
        );
        assert_eq!(cluster(state.by_host("example.com", "shop")), None);
        assert_eq!(
            cluster(state.by_addr("10.96.0.30:5432".parse().unwrap())),
            Some("shop/db:5432".into())
        );
        assert_eq!(
            cluster(state.by_addr("10.96.0.30:80".parse().unwrap())),
            None
        );
    }

    fn encoded(view: &SidecarView) -> Vec<u8> {
        wire::encode_view(view)
    }

    /// The frontend may call port 8080 only.
    fn ports_policy() -> Inbound {
        serde_json::from_value(serde_json::json!({
            "mode": "PERMISSIVE",
            "access": [{"policy": "AccessPolicy shop/backend", "denyByDefault": true, "rules": [
                {"from": [{"namespace": {"namespace": "shop"}}], "to": [{"methods": [], "paths": [], "ports": [8080]}]},
            ]}],
        }))
        .unwrap()
    }

    #[test]
    fn the_sidecar_enforces_every_feature_the_model_can_express() {
        assert_eq!(ENFORCES, features::ALL);
    }

    #[test]
    fn a_view_requiring_what_the_sidecar_does_not_enforce_is_refused_by_name() {
        let newer = SidecarView {
            requires: vec!["access.headers".into(), features::ACCESS.into()],
            ..SidecarView::default()
        };
        let err = decode(SIDECAR_ENCODING, &encoded(&newer))
            .map(|_| ())
            .unwrap_err();
        assert!(err.contains("cannot enforce access.headers"), "{err}");
        assert!(
            !err.contains("access,"),
            "what it enforces is not named: {err}"
        );

        let known = SidecarView {
            requires: vec![features::ACCESS.into()],
            ..SidecarView::default()
        };
        assert!(decode(SIDECAR_ENCODING, &encoded(&known)).is_ok());
    }

    #[test]
    fn a_node_refusing_a_feature_refuses_it_listed_or_not() {
        let refused = vec![features::ACCESS_PORTS.to_string()];
        let listed = SidecarView {
            requires: vec![features::ACCESS.into(), features::ACCESS_PORTS.into()],
            inbound: ports_policy(),
            ..SidecarView::default()
        };
        let dropped = SidecarView {
            requires: vec![],
            ..listed.clone()
        };
        for view in [&listed, &dropped] {
            let err = check(view, &refused).unwrap_err();
            assert!(err.contains("cannot enforce access.ports"), "{err}");
            assert!(check(view, &[]).is_ok());
        }
    }
}
