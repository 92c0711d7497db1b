//! The outbound pipeline: the `Host` the app sends names a Service of the mesh (in any of the
//! forms cluster DNS answers), a name that is none is 404, and a `consistentHash`
//! TrafficPolicy keeps each key on one endpoint on mesh traffic as it does at the ingress.

use super::{
    stub::{self, service, Stub},
    Sidecar,
};

#[tokio::test]
async fn the_host_names_the_service_the_request_goes_to() {
    let (app, reports) = (Stub::start("app").await, Stub::start("reports").await);
    let sidecar = Sidecar::serving(&[
        &service("app", &[app.addr]),
        &service("reports", &[reports.addr]),
    ]);
    for url in [
        "reports/monthly?year=2026",
        "reports.default/monthly?year=2026",
        "reports.default.svc.cluster.local:80/monthly?year=2026",
    ] {
        let r = sidecar.outbound(url).send().await;
        assert_eq!(
            (r.status.as_u16(), r.stub()),
            (200, Some("reports")),
            "{url}"
        );
    }
    let targets: Vec<String> = reports.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(targets, ["/monthly?year=2026"; 3]);
    assert_eq!(app.count(), 0);

    let r = sidecar.outbound("reports.other/monthly").send().await;
    assert_eq!(
        r.failure(),
        (404, Some("no-route")),
        "another namespace's name"
    );
    let r = sidecar.outbound("example.com/").send().await;
    assert_eq!(r.failure(), (404, Some("no-route")));
}

#[tokio::test]
async fn consistent_hashing_keeps_each_key_on_one_endpoint_on_mesh_traffic() {
    let stubs = stub::three().await;
    let hash = "apiVersion: weir.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: app, namespace: default}\nspec:\n  targetRefs: [{group: \"\", kind: Service, name: app}]\n  loadBalancer: {algorithm: consistentHash, hashOn: {header: x-user-id}}\n";
    let sidecar = Sidecar::serving(&[&service("app", &stubs.each_ref().map(|s| s.addr)), hash]);
    stub::assert_keys_stick(|key| sidecar.outbound("app/").header("x-user-id", &key).send()).await;
}
