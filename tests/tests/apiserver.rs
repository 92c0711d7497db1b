//! The test API server against kube's own client: if it answers the way the real one does,
//! kube's watcher, patch and status calls work against it unchanged.

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    core::v1::ConfigMap,
};
use kube::{
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::watcher,
    Api, Client, Config,
};
use serde_json::{json, Value};
use weir_e2e::apiserver::ApiServer;

async fn client(server: &ApiServer, dir: &std::path::Path) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(server.kubeconfig(dir)).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

fn config_map(name: &str, labels: Value) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "data": {"k": "v"},
    }))
    .unwrap()
}

#[tokio::test]
async fn writes_follow_the_api_conventions() {
    let server = ApiServer::start();
    let dir = tempdir();
    let client = client(&server, &dir).await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "app");

    // No namespace, no object: the NamespaceLifecycle rule.
    let refused = maps
        .create(&PostParams::default(), &config_map("a", json!({})))
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("namespaces \"app\" not found"),
        "{refused}"
    );
    server.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: app}\n");

    let created = maps
        .create(&PostParams::default(), &config_map("a", json!({})))
        .await
        .unwrap();
    let stale = created.clone();
    let again = maps
        .create(&PostParams::default(), &config_map("a", json!({})))
        .await
        .unwrap_err();
    assert!(
        matches!(again, kube::Error::Api(ref e) if e.code == 409 && e.reason == "AlreadyExists"),
        "{again}"
    );

    // Optimistic concurrency: an update from a stale read is refused.
    let patched = maps
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "w"}})),
        )
        .await
        .unwrap();
    assert_ne!(
        patched.metadata.resource_version,
        created.metadata.resource_version
    );
    let conflict = maps
        .replace("a", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(
        matches!(conflict, kube::Error::Api(ref e) if e.code == 409 && e.reason == "Conflict"),
        "{conflict}"
    );

    // JSON patch, including a failing `test` operation.
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/data/k", "value": "w"},
        {"op": "add", "path": "/data/j", "value": "x"},
    ]))
    .unwrap();
    let patched = maps
        .patch("a", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap()["j"], "x");
    let failing: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/data/k", "value": "nope"}]))
            .unwrap();
    let refused = maps
        .patch("a", &PatchParams::default(), &Patch::<()>::Json(failing))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, kube::Error::Api(ref e) if e.code == 422),
        "{refused}"
    );

    // Pages are consistent with the first page's version.
    for name in ["b", "c", "d", "e"] {
        maps.create(&PostParams::default(), &config_map(name, json!({})))
            .await
            .unwrap();
    }
    let first = maps.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    let token = first.metadata.continue_.clone().unwrap();
    maps.create(&PostParams::default(), &config_map("bb", json!({})))
        .await
        .unwrap();
    let rest = maps
        .list(&ListParams::default().limit(10).continue_token(&token))
        .await
        .unwrap();
    let names: Vec<_> = rest
        .items
        .iter()
        .map(|m| m.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        ["c", "d", "e"],
        "created after the first page: not in this list"
    );
    server.compact();
    let gone = maps
        .list(&ListParams::default().limit(10).continue_token(&token))
        .await
        .unwrap_err();
    assert!(
        matches!(gone, kube::Error::Api(ref e) if e.code == 410),
        "{gone}"
    );
}

#[tokio::test]
async fn the_status_subresource_is_separate_from_the_object() {
    let server = ApiServer::start();
    let dir = tempdir();
    let client = client(&server, &dir).await;
    server.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: app}\n");
    server.apply(
        "apiVersion: weir.dev/v1alpha1\nkind: MeshTLSPolicy\nmetadata: {name: p, namespace: app}\nspec: {mode: STRICT}\n",
    );
    let resource = kube::api::ApiResource {
        group: "weir.dev".into(),
        version: "v1alpha1".into(),
        api_version: "weir.dev/v1alpha1".into(),
        kind: "MeshTLSPolicy".into(),
        plural: "meshtlspolicies".into(),
    };
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client, "app", &resource);
    let status = json!({"status": {"conditions": [{"type": "Accepted", "status": "True"}]}});
    api.patch_status("p", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let after = api.get("p").await.unwrap();
    assert_eq!(
        after.metadata.generation,
        Some(1),
        "a status write is not a new generation"
    );
    assert_eq!(after.data["status"]["conditions"][0]["type"], "Accepted");

    // Writing the object ignores its status and moves the generation.
    let spec = json!({"spec": {"mode": "PERMISSIVE"}, "status": {"conditions": []}});
    let after = api
        .patch("p", &PatchParams::default(), &Patch::Merge(&spec))
        .await
        .unwrap();
    assert_eq!(after.metadata.generation, Some(2));
    assert_eq!(after.data["spec"]["mode"], "PERMISSIVE");
    assert_eq!(after.data["status"]["conditions"][0]["type"], "Accepted");

    // A write that changes nothing is not a write.
    let same = api
        .patch("p", &PatchParams::default(), &Patch::Merge(&spec))
        .await
        .unwrap();
    assert_eq!(
        same.metadata.resource_version,
        after.metadata.resource_version
    );
}

#[tokio::test]
async fn kubes_watcher_follows_changes_and_recovers_from_a_compaction() {
    let server = ApiServer::start();
    let dir = tempdir();
    let client = client(&server, &dir).await;
    server.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: app}\n");
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "app");
    maps.create(
        &PostParams::default(),
        &config_map("old", json!({"team": "a"})),
    )
    .await
    .unwrap();

    // No bookmark may move the watch's version past the compaction below.
    server.bookmark_every(Duration::from_secs(3600));
    let config = watcher::Config::default().labels("team=a");
    let mut events = watcher(maps.clone(), config).boxed();
    assert!(matches!(next(&mut events).await, watcher::Event::Init));
    assert!(
        matches!(next(&mut events).await, watcher::Event::InitApply(m) if m.metadata.name.as_deref() == Some("old"))
    );
    assert!(matches!(next(&mut events).await, watcher::Event::InitDone));

    maps.create(
        &PostParams::default(),
        &config_map("new", json!({"team": "a"})),
    )
    .await
    .unwrap();
    maps.create(
        &PostParams::default(),
        &config_map("other", json!({"team": "b"})),
    )
    .await
    .unwrap();
    assert!(
        matches!(next(&mut events).await, watcher::Event::Apply(m) if m.metadata.name.as_deref() == Some("new"))
    );

    // Relabelled out of the selector: the watch sees it go.
    maps.patch(
        "new",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "b"}}})),
    )
    .await
    .unwrap();
    assert!(
        matches!(next(&mut events).await, watcher::Event::Delete(m) if m.metadata.name.as_deref() == Some("new"))
    );

    // History compacted past what the watch has seen and the watch cut: the rewatch gets
    // 410 Gone and kube lists again.
    maps.create(
        &PostParams::default(),
        &config_map("unseen", json!({"team": "b"})),
    )
    .await
    .unwrap();
    server.compact();
    server.expire_watches();
    maps.create(
        &PostParams::default(),
        &config_map("later", json!({"team": "a"})),
    )
    .await
    .unwrap();
    let mut relisted = Vec::new();
    let mut gone = false;
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap_or_else(|_| panic!("no event within 5 s: {:#?}", server.requests()))
            .expect("the stream goes on");
        match event {
            Ok(watcher::Event::InitApply(m)) => relisted.push(m.metadata.name.unwrap()),
            Ok(watcher::Event::InitDone) => break,
            Ok(_) => {}
            // What kube reports when the rewatch from its old version is answered with 410.
            Err(watcher::Error::WatchError(status)) if status.code == 410 => gone = true,
            Err(other) => panic!("unexpected watch error {other}"),
        }
    }
    assert!(
        gone,
        "the rewatch from a compacted version must get 410 Gone"
    );
    relisted.sort();
    assert_eq!(relisted, ["later", "old"]);
    assert!(
        server
            .requests()
            .iter()
            .filter(|r| r.contains("watch=true"))
            .count()
            >= 2,
        "{:?}",
        server.requests()
    );
}

#[tokio::test]
async fn token_reviews_check_the_audience() {
    let server = ApiServer::start();
    let dir = tempdir();
    let client = client(&server, &dir).await;
    server.add_token("t-1", "shop", "frontend", &["weir"]);
    let reviews: Api<TokenReview> = Api::all(client);
    let review = |token: &str, audience: &str| TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.into()),
            audiences: Some(vec![audience.into()]),
        },
        ..Default::default()
    };
    let ok = reviews
        .create(&PostParams::default(), &review("t-1", "weir"))
        .await
        .unwrap();
    let status = ok.status.unwrap();
    assert_eq!(status.authenticated, Some(true));
    assert_eq!(
        status.user.unwrap().username.as_deref(),
        Some("system:serviceaccount:shop:frontend")
    );
    let wrong = reviews
        .create(&PostParams::default(), &review("t-1", "vault"))
        .await
        .unwrap();
    assert_eq!(wrong.status.unwrap().authenticated, Some(false));
    let unknown = reviews
        .create(&PostParams::default(), &review("nope", "weir"))
        .await
        .unwrap();
    assert_eq!(unknown.status.unwrap().authenticated, Some(false));
}

async fn next<S>(events: &mut S) -> watcher::Event<ConfigMap>
where
    S: futures_util::Stream<Item = Result<watcher::Event<ConfigMap>, watcher::Error>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(5), events.try_next())
        .await
        .expect("an event within 5 s")
        .expect("no watch error")
        .expect("the stream goes on")
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-apiserver-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
