//! Active health checks: every `interval`, `GET path` on each endpoint of a cluster; an
//! endpoint is taken out after `unhealthyThreshold` failures in a row and put back after
//! `healthyThreshold` passes. The checker stops when its pool is replaced.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use bytes::Bytes;
use http::{header, Request, Uri};
use http_body_util::Empty;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::{task::JoinSet, time::MissedTickBehavior};
use weir_api::model::HealthCheckPolicy;

use weir_http::{
    upstream::{Expect, MeshConnector, PeerDialer},
    HTTP1_ALPN,
};

use crate::balance::Pool;

type CheckClient = Client<MeshConnector, Empty<Bytes>>;

/// Starts checking `pool`'s endpoints if its policy asks for it (and a runtime is running).
/// With the mesh `dialer`, meshed endpoints are checked over mTLS, as requests reach them.
pub fn spawn(pool: &Arc<Pool>, dialer: Option<Arc<dyn PeerDialer>>) {
    let Some(policy) = pool.cluster.resilience.health_check.clone() else {
        return;
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let connector = MeshConnector::new(policy.timeout, dialer, HTTP1_ALPN)
        .expecting(Expect::Cluster(Arc::from(pool.cluster.name.as_str())));
    runtime.spawn(run(Arc::downgrade(pool), policy, connector));
}

async fn run(pool: Weak<Pool>, policy: HealthCheckPolicy, connector: MeshConnector) {
    let client: CheckClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build(connector);
    let mut tick = tokio::time::interval(policy.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(current) = pool.upgrade() else {
            return;
        };
        let mut checks = JoinSet::new();
        for endpoint in current.endpoints() {
            let (client, endpoint) = (client.clone(), endpoint.clone());
            let (path, timeout) = (policy.path.clone(), policy.timeout);
            checks.spawn(async move {
                let passed = check(&client, &endpoint.addr.to_string(), &path, timeout).await;
                (endpoint, passed)
            });
        }
        drop(current);
        while let Some(Ok((endpoint, passed))) = checks.join_next().await {
            let Some(current) = pool.upgrade() else {
                return;
            };
            current.metrics.health_check(&current.cluster.name, passed);
            let changed =
                endpoint.health_check(passed, policy.unhealthy_threshold, policy.healthy_threshold);
            match changed {
                Some(false) => {
                    tracing::warn!(cluster = %current.cluster.name, endpoint = %endpoint.addr, "health checks failing: endpoint taken out")
                }
                Some(true) => {
                    tracing::info!(cluster = %current.cluster.name, endpoint = %endpoint.addr, "health checks passing: endpoint back in")
                }
                None => {}
            }
        }
    }
}

/// One check: a 2xx answer within `timeout` passes.
async fn check(client: &CheckClient, authority: &str, path: &str, timeout: Duration) -> bool {
    let Ok(uri) = Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path)
        .build()
    else {
        return false;
    };
    let Ok(request) = Request::get(uri)
        .header(header::USER_AGENT, "weir-health-check")
        .body(Empty::new())
    else {
        return false;
    };
    matches!(
        tokio::time::timeout(timeout, client.request(request)).await,
        Ok(Ok(response)) if response.status().is_success()
    )
}
