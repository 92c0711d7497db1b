//! The gRPC services: `ConfigDiscovery` (config streams) and `Identity` (the CA).
//!
//! Every call must carry a token in `authorization: Bearer …`; the ServiceAccount it proves is
//! who the caller is. A config stream is only opened for a node whose Hello names that same
//! account, and an ingress view only for the accounts allowed to be an ingress: the ingress
//! view holds TLS private keys and API keys. A sidecar gets the view of the pod its Hello
//! names, which must run as the proven account when the controller knows the pod, and which
//! must be the pod the token was issued for when the token is bound to one.
//!
//! Tokens the controller has not seen are rationed per peer address (RESOURCE_EXHAUSTED over
//! it), and each ServiceAccount holds at most `--max-streams-per-account` config streams.

use std::{net::IpAddr, pin::Pin, sync::Arc};

use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, Stream};
use tonic::{metadata::MetadataMap, Request, Response, Status, Streaming};
use weir_api::proto::{
    config_discovery_server::ConfigDiscovery, identity_server::Identity, watch_request::Kind,
    CertifyRequest, CertifyResponse, ConfigUpdate, Hello, Role, WatchRequest,
};

use crate::{
    ca::Refused,
    streams::StreamSlot,
    tokens::{Proven, Rejected},
    Controller,
};

/// Both services over one shared controller.
#[derive(Clone)]
pub struct Services(pub Arc<Controller>);

impl Services {
    async fn authenticate(
        &self,
        metadata: &MetadataMap,
        peer: Option<IpAddr>,
    ) -> Result<Proven, Status> {
        let token = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated("send the node's token as `authorization: Bearer <token>`")
            })?;
        self.0
            .authenticator
            .authenticate(token, peer)
            .await
            .map_err(|rejected| match rejected {
                Rejected::Unauthenticated(why) => Status::unauthenticated(why),
                Rejected::Throttled => Status::resource_exhausted(rejected.to_string()),
            })
    }

    fn refuse(&self, reason: &str, status: Status) -> Status {
        self.0
            .metrics
            .streams_refused
            .with_label_values(&[reason])
            .inc();
        tracing::warn!(reason, message = status.message(), "config stream refused");
        status
    }
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<ConfigUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl ConfigDiscovery for Services {
    type WatchStream = UpdateStream;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<UpdateStream>, Status> {
        let peer = request.remote_addr().map(|a| a.ip());
        let Proven {
            account: caller,
            pod: bound_pod,
        } = self
            .authenticate(request.metadata(), peer)
            .await
            .map_err(|s| match s.code() {
                tonic::Code::ResourceExhausted => self.refuse("throttled", s),
                _ => self.refuse("unauthenticated", s),
            })?;
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await? {
            Some(WatchRequest {
                kind: Some(Kind::Hello(hello)),
            }) => hello,
            _ => {
                return Err(self.refuse(
                    "no-hello",
                    Status::invalid_argument("the first message on a stream must be a Hello"),
                ))
            }
        };
        if hello.namespace != caller.namespace || hello.service_account != caller.name {
            return Err(self.refuse(
                "identity-mismatch",
                Status::permission_denied(format!(
                    "the Hello says {}/{}, but the token proves {caller}",
                    hello.namespace, hello.service_account
                )),
            ));
        }
        if let Some(pod) = bound_pod.filter(|pod| *pod != hello.pod) {
            return Err(self.refuse(
                "pod-mismatch",
                Status::permission_denied(format!(
                    "the Hello names pod {:?}, but the token was issued for pod {pod:?}",
                    hello.pod
                )),
            ));
        }
        let slot = self.0.streams.open(&caller).ok_or_else(|| {
            self.refuse(
                "too-many-streams",
                Status::resource_exhausted(format!(
                    "ServiceAccount {caller} already holds {} config streams, the most it may (--max-streams-per-account)",
                    self.0.streams.max()
                )),
            )
        })?;
        let role = Role::try_from(hello.role).unwrap_or(Role::Unspecified);
        let views = match role {
            Role::Ingress if self.0.ingress_accounts.contains(&caller) => self.0.views.ingress(),
            Role::Ingress => {
                return Err(self.refuse(
                    "not-an-ingress",
                    Status::permission_denied(format!(
                        "ServiceAccount {caller} may not be an ingress (allowed: {})",
                        self.0
                            .ingress_accounts
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                ))
            }
            Role::Sidecar if hello.pod.is_empty() => {
                return Err(self.refuse(
                    "no-pod",
                    Status::invalid_argument("a sidecar's Hello must name its pod"),
                ))
            }
            Role::Sidecar => {
                // A known pod must run as the account the token proves: a sidecar sees only
                // its own pod's policy.
                let runs_as = self.0.views.pod_account(&hello.namespace, &hello.pod);
                if let Some(account) = runs_as.filter(|a| *a != caller.name) {
                    return Err(self.refuse(
                        "identity-mismatch",
                        Status::permission_denied(format!(
                            "pod {}/{} runs as ServiceAccount {account}, but the token proves {caller}",
                            hello.namespace, hello.pod
                        )),
                    ));
                }
                self.0.views.sidecar(&hello.namespace, &hello.pod)
            }
            Role::Unspecified => {
                return Err(self.refuse(
                    "no-role",
                    Status::invalid_argument("the Hello must name a role"),
                ))
            }
        };
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(serve_stream(
            self.0.clone(),
            slot,
            hello,
            role,
            inbound,
            views,
            tx,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Sends the node every new version of its view and reads its ACKs and NACKs, until either
/// side goes away.
async fn serve_stream(
    controller: Arc<Controller>,
    // Counted against the ServiceAccount until the stream ends.
    _slot: StreamSlot,
    hello: Hello,
    role: Role,
    mut inbound: Streaming<WatchRequest>,
    mut views: tokio::sync::watch::Receiver<Option<Arc<crate::views::View>>>,
    tx: mpsc::Sender<Result<ConfigUpdate, Status>>,
) {
    let role_name = role
        .as_str_name()
        .trim_start_matches("ROLE_")
        .to_lowercase();
    let connected = controller
        .metrics
        .connected_nodes
        .with_label_values(&[&role_name, &hello.node_version]);
    connected.inc();
    let node = format!("{}/{} ({})", hello.namespace, hello.pod, role_name);
    let account = format!("{}/{}", hello.namespace, hello.service_account);
    let listed = controller.nodes.connect(
        (&role_name, &hello.namespace, &hello.pod),
        &account,
        &hello.node_version,
        views.clone(),
    );
    tracing::info!(%node, version = %hello.node_version, "node connected");
    views.mark_changed();
    let connected_at = std::time::Instant::now();
    let mut sent: Option<Arc<crate::views::View>> = None;
    // The version whose refusal was last logged and reported.
    let mut reported: Option<u64> = None;
    loop {
        tokio::select! {
            () = controller.closed() => break,
            changed = views.changed() => {
                if changed.is_err() {
                    break;
                }
                let Some(view) = views.borrow_and_update().clone() else { continue };
                let update = ConfigUpdate {
                    version: view.version,
                    encoding: view.encoding.to_string(),
                    payload: view.payload.clone(),
                };
                sent = Some(view);
                if tx.send(Ok(update)).await.is_err() {
                    break;
                }
            }
            message = inbound.message() => match message {
                Ok(Some(WatchRequest { kind: Some(Kind::Ack(ack)) })) => {
                    controller.metrics.acks.with_label_values(&[&role_name, "ack"]).inc();
                    if let Some(view) = sent.as_ref().filter(|v| v.version == ack.version) {
                        // From publication, or from connecting for a view older than the stream.
                        let since = view.published.max(connected_at);
                        controller.metrics.push_seconds.observe(since.elapsed().as_secs_f64());
                    }
                    listed.applied(ack.version);
                    tracing::debug!(%node, version = ack.version, "applied");
                }
                Ok(Some(WatchRequest { kind: Some(Kind::Nack(nack)) })) => {
                    controller.metrics.acks.with_label_values(&[&role_name, "nack"]).inc();
                    listed.refused(nack.version, &nack.error);
                    // Logged and recorded as an Event once per version the node was sent: a
                    // node repeating its NACK, or naming versions it never got, floods neither.
                    let sent_now = sent.as_ref().is_some_and(|v| v.version == nack.version);
                    // An Event names the node's Pod: only one known to run as the caller (a
                    // token not bound to a pod must not put Events on its neighbours).
                    let own_pod = match role {
                        Role::Sidecar => controller
                            .views
                            .pod_account(&hello.namespace, &hello.pod)
                            .is_some_and(|a| a == hello.service_account),
                        _ => !hello.pod.is_empty(),
                    };
                    if sent_now && reported != Some(nack.version) {
                        reported = Some(nack.version);
                        tracing::warn!(%node, version = nack.version, error = %nack.error, "node refused a version; it keeps serving its previous one");
                        let refusal = own_pod.then(|| crate::nodes::NodeRefusal {
                            role: role_name.clone(),
                            namespace: hello.namespace.clone(),
                            pod: hello.pod.clone(),
                            version: nack.version,
                            error: nack.error.clone(),
                        });
                        if let Some(refusal) = refusal {
                            let _ = controller.node_refusals.send(refusal);
                        }
                    }
                }
                Ok(Some(_)) => {
                    let _ = tx.send(Err(Status::invalid_argument("after the Hello, send only Ack or Nack"))).await;
                    break;
                }
                Ok(None) | Err(_) => break,
            },
        }
    }
    connected.dec();
    tracing::info!(%node, "node disconnected");
}

#[tonic::async_trait]
impl Identity for Services {
    async fn certify(
        &self,
        request: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let certificates = &self.0.metrics.certificates;
        let peer = request.remote_addr().map(|a| a.ip());
        let caller = self
            .authenticate(request.metadata(), peer)
            .await
            .inspect_err(|s| {
                let label = match s.code() {
                    tonic::Code::ResourceExhausted => "throttled",
                    _ => "unauthenticated",
                };
                certificates.with_label_values(&[label]).inc();
            })?
            .account;
        let authority = &self.0.authority;
        match authority.certify(&request.get_ref().csr_pem, &caller) {
            Ok(issued) => {
                certificates.with_label_values(&["issued"]).inc();
                let account = format!("{}/{}", caller.namespace, caller.name);
                let not_after = u64::try_from(issued.not_after).unwrap_or_default();
                self.0.nodes.certified(&account, not_after);
                tracing::info!(spiffe_id = %issued.spiffe_id, "certificate issued");
                Ok(Response::new(CertifyResponse {
                    certificate_pem: issued.certificate_pem,
                    trust_bundle_pem: authority.bundle().to_vec(),
                    not_after: issued.not_after,
                    spiffe_id: issued.spiffe_id,
                }))
            }
            Err(refused) => {
                certificates.with_label_values(&["refused"]).inc();
                tracing::warn!(%caller, reason = %refused, "certificate refused");
                Err(match refused {
                    Refused::WrongIdentity { .. } | Refused::ExtraNames(_) => {
                        Status::permission_denied(refused.to_string())
                    }
                    _ => Status::invalid_argument(refused.to_string()),
                })
            }
        }
    }
}
