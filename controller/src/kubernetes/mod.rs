//! The Kubernetes source: kube-runtime watchers for every kind Weir compiles, and for only
//! the Secrets and ConfigMaps that configuration refers to.
//!
//! Each kind is followed by its own watcher into one cache of typed objects (an object that
//! does not fit its schema is kept as the error that says why, so it is reported like a bad
//! file in directory mode). Nothing is compiled until every kind has been listed once, so a
//! node is never sent a configuration with half the cluster missing. After that every change
//! wakes the compile loop, which waits `debounce` so a burst compiles once.

pub mod provision;
pub mod publish;
mod review;
pub mod status;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures_util::StreamExt;
use kube::{
    api::{ApiResource, DynamicObject},
    runtime::{watcher, WatchStreamExt},
    Api, Client,
};
use tokio::{sync::Notify, task::JoinHandle};
use weir_api::{ConfigError, Location, Object, Objects};

pub use review::TokenReviewer;

use crate::{ca::Root, lock, Controller};

/// How long a newly referenced Secret (or ConfigMap) may take to be listed before the configuration is
/// compiled without it (it then counts as missing, with a warning, until it arrives).
const SECRET_SYNC_WAIT: Duration = Duration::from_secs(5);

/// Kinds a cluster may lack (their CRDs come with newer Gateway API releases, and clusters
/// without them are served): when the API server does not serve one, there are none. Every
/// other kind must be listed before the first compile: a core or `weir.dev` kind the API
/// server answers 404 for holds the compile, so a passing error never publishes a
/// configuration without the cluster's policies.
const OPTIONAL: &[&str] = &[
    "GRPCRoute",
    "TLSRoute",
    "TCPRoute",
    "BackendTLSPolicy",
    "ListenerSet",
];

/// A kind the controller watches.
#[derive(Clone, Copy)]
pub struct Kind {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
}

const fn kind(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
) -> Kind {
    Kind {
        group,
        version,
        kind,
        plural,
    }
}

/// Every kind Weir compiles, except Secrets (watched one by one, when referenced).
pub const WATCHED: &[Kind] = &[
    kind("", "v1", "Namespace", "namespaces"),
    kind("", "v1", "Service", "services"),
    kind("", "v1", "Pod", "pods"),
    kind("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
    kind("networking.k8s.io", "v1", "Ingress", "ingresses"),
    kind("networking.k8s.io", "v1", "IngressClass", "ingressclasses"),
    kind(
        "gateway.networking.k8s.io",
        "v1",
        "GatewayClass",
        "gatewayclasses",
    ),
    kind("gateway.networking.k8s.io", "v1", "Gateway", "gateways"),
    kind(
        "gateway.networking.k8s.io",
        "v1",
        "ListenerSet",
        "listenersets",
    ),
    kind("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes"),
    kind("gateway.networking.k8s.io", "v1", "GRPCRoute", "grpcroutes"),
    kind("gateway.networking.k8s.io", "v1", "TLSRoute", "tlsroutes"),
    kind("gateway.networking.k8s.io", "v1", "TCPRoute", "tcproutes"),
    kind(
        "gateway.networking.k8s.io",
        "v1",
        "BackendTLSPolicy",
        "backendtlspolicies",
    ),
    kind(
        "gateway.networking.k8s.io",
        "v1beta1",
        "ReferenceGrant",
        "referencegrants",
    ),
    kind("weir.dev", "v1alpha1", "TrafficPolicy", "trafficpolicies"),
    kind("weir.dev", "v1alpha1", "AuthPolicy", "authpolicies"),
    kind(
        "weir.dev",
        "v1alpha1",
        "RateLimitPolicy",
        "ratelimitpolicies",
    ),
    kind("weir.dev", "v1alpha1", "MeshTLSPolicy", "meshtlspolicies"),
    kind("weir.dev", "v1alpha1", "AccessPolicy", "accesspolicies"),
];

/// Whether the cluster may lack `kind` (its CRD comes with a newer Gateway API release).
pub fn is_optional(kind: &Kind) -> bool {
    OPTIONAL.contains(&kind.kind)
}

const SECRET: Kind = kind("", "v1", "Secret", "secrets");
const CONFIG_MAP: Kind = kind("", "v1", "ConfigMap", "configmaps");

impl Kind {
    /// kube's description of the resource.
    pub fn api_resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.to_string(),
            version: self.version.to_string(),
            api_version: if self.group.is_empty() {
                self.version.to_string()
            } else {
                format!("{}/{}", self.group, self.version)
            },
            kind: self.kind.to_string(),
            plural: self.plural.to_string(),
        }
    }
}

/// A client from `--kubeconfig`, or the in-cluster configuration (falling back to the
/// default kubeconfig, as kubectl does). `read_timeout` bounds each answer (none for watches,
/// which wait on purpose).
pub async fn client(
    kubeconfig: Option<&Path>,
    read_timeout: Option<Duration>,
) -> anyhow::Result<Client> {
    let mut config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read --kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .with_context(|| format!("--kubeconfig {} is not usable", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no in-cluster configuration and no kubeconfig")?,
    };
    if read_timeout.is_some() {
        config.read_timeout = read_timeout;
        config.connect_timeout = read_timeout;
    }
    Client::try_from(config).context("cannot build the Kubernetes client")
}

type Key = (&'static str, String, String);

/// What the watchers have seen.
#[derive(Default)]
struct Cache {
    objects: BTreeMap<Key, Result<Object, ConfigError>>,
    /// Kinds (and referenced Secrets and ConfigMaps, by `Kind ns/name`) listed at least once.
    synced: BTreeSet<String>,
}

/// The cache, and the bell that rings when it changes.
#[derive(Clone, Default)]
struct Shared {
    cache: Arc<Mutex<Cache>>,
    changed: Arc<Notify>,
}

/// Follows the cluster until the task is dropped: compiles every change into `controller`,
/// and (through `status`) reports what was refused on the objects themselves.
pub async fn watch(
    client: Client,
    controller: Arc<Controller>,
    debounce: Duration,
    status: Option<status::Writer>,
) {
    let shared = Shared::default();
    // The watches run as long as the source does.
    let _watches: Vec<JoinHandle<()>> = WATCHED
        .iter()
        .map(|kind| {
            let api = Api::<DynamicObject>::all_with(client.clone(), &kind.api_resource());
            tokio::spawn(follow(
                api,
                watcher::Config::default(),
                *kind,
                kind.kind.to_string(),
                shared.clone(),
            ))
        })
        .collect();
    // Secrets and ConfigMaps, watched one by one: `(kind, namespace, name)`.
    let mut referenced: HashMap<Key, (JoinHandle<()>, Instant)> = HashMap::new();
    loop {
        shared.changed.notified().await;
        tokio::time::sleep(debounce).await;
        let (objects, errors) = {
            let cache = lock(&shared.cache);
            if WATCHED.iter().any(|k| !cache.synced.contains(k.kind)) {
                continue;
            }
            collect(&cache)
        };
        // Watch exactly the Secrets and ConfigMaps the configuration refers to.
        let wanted: BTreeSet<Key> = objects
            .secret_refs()
            .into_iter()
            .map(|(ns, name)| (SECRET.kind, ns, name))
            .chain(
                objects
                    .config_map_refs()
                    .into_iter()
                    .map(|(ns, name)| (CONFIG_MAP.kind, ns, name)),
            )
            .collect();
        referenced.retain(|key, (task, _)| {
            let keep = wanted.contains(key);
            if !keep {
                task.abort();
                let mut cache = lock(&shared.cache);
                cache.objects.remove(key);
                cache.synced.remove(&referenced_sync(key));
            }
            keep
        });
        for key in &wanted {
            referenced.entry(key.clone()).or_insert_with(|| {
                let (kind, namespace, name) = key;
                let kind = if *kind == SECRET.kind {
                    SECRET
                } else {
                    CONFIG_MAP
                };
                let api = Api::<DynamicObject>::namespaced_with(
                    client.clone(),
                    namespace,
                    &kind.api_resource(),
                );
                let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
                let task = tokio::spawn(follow(
                    api,
                    config,
                    kind,
                    referenced_sync(key),
                    shared.clone(),
                ));
                (task, Instant::now())
            });
        }
        let waiting = {
            let cache = lock(&shared.cache);
            referenced.iter().any(|(key, (_, started))| {
                !cache.synced.contains(&referenced_sync(key))
                    && started.elapsed() < SECRET_SYNC_WAIT
            })
        };
        if waiting {
            // The Secret's first list rings the bell again (and a Secret listed since the
            // objects were collected has rung it already); if it never comes, look again
            // once the wait is over.
            let changed = shared.changed.clone();
            tokio::spawn(async move {
                tokio::time::sleep(SECRET_SYNC_WAIT).await;
                changed.notify_one();
            });
            continue;
        }
        let controller = controller.clone();
        let seen = objects.clone();
        let _ = tokio::task::spawn_blocking(move || controller.apply(objects, errors)).await;
        if let Some(status) = &status {
            status.report(seen);
        }
    }
}

/// How the watch of one referenced Secret or ConfigMap says it has listed.
fn referenced_sync((kind, namespace, name): &Key) -> String {
    format!("{kind} {namespace}/{name}")
}

fn collect(cache: &Cache) -> (Objects, Vec<ConfigError>) {
    let mut objects = Objects::new();
    let mut errors = Vec::new();
    for result in cache.objects.values() {
        match result {
            Ok(object) => {
                if let Err(e) = objects.insert(object.clone(), Location::default()) {
                    errors.push(e);
                }
            }
            Err(e) => errors.push(e.clone()),
        }
    }
    (objects, errors)
}

/// Follows one watch into the cache. `sync` names it in `Cache::synced`.
async fn follow(
    api: Api<DynamicObject>,
    config: watcher::Config,
    kind: Kind,
    sync: String,
    shared: Shared,
) {
    let resource = kind.api_resource();
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut relisted: Option<BTreeMap<Key, Result<Object, ConfigError>>> = None;
    let mut absent = false;
    while let Some(event) = events.next().await {
        match event {
            // The API server has no such resource (its CRD is not installed, as a cluster
            // with an older Gateway API has no TLSRoute v1): then there are none of them, and
            // the rest of the cluster is served. The watch keeps asking, so a CRD installed
            // later is picked up. Objects seen before stay until a list succeeds (removing a
            // CRD deletes its objects, and the watch sees those deletions first): a 404 that
            // is an API server's passing mistake never takes routes down.
            Err(watcher::Error::InitialListFailed(kube::Error::Api(status)))
                if status.is_not_found() && OPTIONAL.contains(&kind.kind) =>
            {
                if !absent {
                    tracing::warn!(kind = kind.kind, "the API server does not serve this kind (is its CRD installed?); serving the cluster without any");
                    absent = true;
                }
                let mut cache = lock(&shared.cache);
                if cache.synced.insert(sync.clone()) {
                    drop(cache);
                    shared.changed.notify_one();
                }
            }
            Ok(watcher::Event::Init) => relisted = Some(BTreeMap::new()),
            Ok(watcher::Event::InitApply(object)) => {
                let (key, typed) = typed(object, &resource, kind.kind);
                relisted.get_or_insert_default().insert(key, typed);
            }
            Ok(watcher::Event::InitDone) => {
                absent = false;
                let fresh = relisted.take().unwrap_or_default();
                let mut cache = lock(&shared.cache);
                // A relist replaces everything this watch owns (its kind, or its one Secret):
                // what is not in it was deleted while the watch was away.
                cache.objects.retain(|(k, ns, name), _| {
                    let one = kind.kind == SECRET.kind || kind.kind == CONFIG_MAP.kind;
                    let owned = *k == kind.kind
                        && (!one || referenced_sync(&(*k, ns.clone(), name.clone())) == sync);
                    !owned
                });
                cache.objects.extend(fresh);
                cache.synced.insert(sync.clone());
                drop(cache);
                shared.changed.notify_one();
            }
            Ok(watcher::Event::Apply(object)) => {
                let (key, typed) = typed(object, &resource, kind.kind);
                lock(&shared.cache).objects.insert(key, typed);
                shared.changed.notify_one();
            }
            Ok(watcher::Event::Delete(object)) => {
                let (key, _) = typed(object, &resource, kind.kind);
                lock(&shared.cache).objects.remove(&key);
                shared.changed.notify_one();
            }
            Err(error) => {
                tracing::warn!(kind = kind.kind, watch = %sync, %error, "watch failed; retrying with backoff");
            }
        }
    }
}

/// The typed object (or why it does not fit its kind) and its cache key.
fn typed(
    object: DynamicObject,
    resource: &ApiResource,
    kind: &'static str,
) -> (Key, Result<Object, ConfigError>) {
    let key = (
        kind,
        object.metadata.namespace.clone().unwrap_or_default(),
        object.metadata.name.clone().unwrap_or_default(),
    );
    let mut value = serde_json::to_value(&object).unwrap_or_default();
    value["apiVersion"] = resource.api_version.clone().into();
    value["kind"] = resource.kind.clone().into();
    let typed = match Object::from_value(value, &Location::default()) {
        Ok(Some(object)) => Ok(object),
        Ok(None) => Err(ConfigError::new(
            &Location::default(),
            format!("{kind} {}/{}", key.1, key.2),
            "kind",
            "not a kind Weir reads",
        )),
        Err(e) => Err(e),
    };
    (key, typed)
}

/// The CA root kept in a Secret (`kubernetes.io/tls`): read it, or make one and store it. Two
/// replicas starting together both try; the one that loses the create reads the winner's.
pub async fn ca_root(
    client: &Client,
    namespace: &str,
    name: &str,
    trust_domain: &str,
) -> anyhow::Result<Root> {
    use k8s_openapi::{api::core::v1::Secret, ByteString};
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let read = |secret: Secret| -> anyhow::Result<Root> {
        let data = secret.data.unwrap_or_default();
        let field = |key: &str| {
            data.get(key)
                .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                .with_context(|| format!("Secret {namespace}/{name} has no {key}"))
        };
        Ok(Root {
            cert_pem: field("tls.crt")?,
            key_pem: field("tls.key")?,
        })
    };
    if let Some(secret) = api
        .get_opt(name)
        .await
        .with_context(|| format!("cannot read Secret {namespace}/{name}"))?
    {
        return read(secret);
    }
    let root = Root::generate(trust_domain)?;
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "weir-controller".to_string(),
            )])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".to_string()),
        data: Some(BTreeMap::from([
            (
                "tls.crt".to_string(),
                ByteString(root.cert_pem.clone().into_bytes()),
            ),
            (
                "tls.key".to_string(),
                ByteString(root.key_pem.clone().into_bytes()),
            ),
        ])),
        ..Default::default()
    };
    match api.create(&Default::default(), &secret).await {
        Ok(_) => {
            tracing::info!(secret = %format!("{namespace}/{name}"), "generated the CA root");
            Ok(root)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => read(api.get(name).await?),
        Err(e) => Err(e).with_context(|| format!("cannot create Secret {namespace}/{name}")),
    }
}
