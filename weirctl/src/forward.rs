//! The controller's admin pages through the Kubernetes API: every ready replica of the
//! controller's Deployment, reached by a port-forward to its admin port, as `kubectl
//! port-forward` does. The pages are served on loopback only, and a port-forward arrives on
//! the pod's loopback: nothing is published, and the caller needs only `pods/portforward`.

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context as _};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{api::ListParams, Api, Client};

/// Where the controller runs.
pub struct Cluster {
    pub kubeconfig: Option<PathBuf>,
    pub namespace: String,
    pub deployment: String,
}

/// The admin port when the pod's container names none `admin` (the controller's default).
const DEFAULT_PORT: u16 = 15014;

/// Each exchange (the API server's answers, a page through its port-forward) within this.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One replica's answer to a page.
pub struct Answer {
    /// `NAMESPACE/POD` of the controller replica.
    pub replica: String,
    /// Its status and body, or why it could not be asked.
    pub result: anyhow::Result<(hyper::StatusCode, Bytes)>,
}

/// GETs `path` from every ready controller replica.
pub async fn get(cluster: &Cluster, path: &str) -> anyhow::Result<Vec<Answer>> {
    let client =
        weir_controller::kubernetes::client(cluster.kubeconfig.as_deref(), Some(TIMEOUT)).await?;
    let replicas = replicas(&client, cluster).await?;
    let pods: Api<Pod> = Api::namespaced(client, &cluster.namespace);
    let mut answers = Vec::new();
    for (name, port) in replicas {
        let result = tokio::time::timeout(TIMEOUT, page(&pods, &name, port, path))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {TIMEOUT:?}")));
        answers.push(Answer {
            replica: format!("{}/{name}", cluster.namespace),
            result,
        });
    }
    Ok(answers)
}

/// The ready pods of the controller's Deployment, each with its admin port.
async fn replicas(client: &Client, cluster: &Cluster) -> anyhow::Result<Vec<(String, u16)>> {
    let (namespace, name) = (&cluster.namespace, &cluster.deployment);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let deployment = deployments
        .get_opt(name)
        .await
        .with_context(|| format!("cannot read Deployment {namespace}/{name}"))?
        .with_context(|| {
            format!("no Deployment {namespace}/{name}: is Weir installed there? (--namespace, --controller)")
        })?;
    let labels = deployment
        .spec
        .and_then(|s| s.selector.match_labels)
        .unwrap_or_default();
    if labels.is_empty() {
        bail!("Deployment {namespace}/{name} selects its pods by no label");
    }
    let selector: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let listed = pods
        .list(&ListParams::default().labels(&selector.join(",")))
        .await
        .with_context(|| format!("cannot list the pods of Deployment {namespace}/{name}"))?;
    let ready: Vec<(String, u16)> = listed
        .items
        .into_iter()
        .filter(is_ready)
        .filter_map(|pod| {
            let port = admin_port(&pod);
            Some((pod.metadata.name?, port))
        })
        .collect();
    if ready.is_empty() {
        bail!("no pod of Deployment {namespace}/{name} is ready");
    }
    Ok(ready)
}

fn is_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    running && ready && pod.metadata.deletion_timestamp.is_none()
}

/// The container port named `admin`, as the manifests name it.
fn admin_port(pod: &Pod) -> u16 {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some("admin"))
        .and_then(|p| u16::try_from(p.container_port).ok())
        .unwrap_or(DEFAULT_PORT)
}

/// GETs `path` from `pod`'s `port`, through a port-forward.
async fn page(
    pods: &Api<Pod>,
    pod: &str,
    port: u16,
    path: &str,
) -> anyhow::Result<(hyper::StatusCode, Bytes)> {
    let mut forwarder = pods
        .portforward(pod, &[port])
        .await
        .with_context(|| format!("cannot port-forward to {pod}:{port}"))?;
    let stream = forwarder
        .take_stream(port)
        .context("the port-forward has no stream")?;
    // What the kubelet says on the port's error channel (the pod refused the connection).
    let refusal = forwarder.take_error(port);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("no HTTP over the port-forward")?;
    let connection = tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, format!("localhost:{port}"))
        .body(Empty::<Bytes>::new())?;
    let exchange = async {
        let response = sender
            .send_request(request)
            .await
            .with_context(|| format!("{pod}:{port} did not answer {path}"))?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    }
    .await;
    drop(sender);
    connection.abort();
    let exchange = match (exchange, refusal) {
        (Err(e), Some(refusal)) => {
            match tokio::time::timeout(Duration::from_secs(1), refusal).await {
                Ok(Some(said)) => Err(anyhow::anyhow!("{said}")),
                _ => Err(e),
            }
        }
        (exchange, _) => exchange,
    };
    forwarder.abort();
    exchange
}
