//! One gateway deployment per Gateway (`weir-controller --provision-gateways`), against the
//! test API server with the install's own `weir-ingress` Deployment and Service as the
//! template: the controller writes each Gateway a Deployment and a Service, the test runs
//! the pods' `weir-ingress` with the arguments written there, and checks that each answers
//! for its own Gateway alone (the upstream HTTPRouteMultipleGateways, as an install runs it),
//! that Gateways' addresses are their Services', that what is gone is deleted, and that a
//! tenant creating Gateways can neither replace a workload nor make gateways without end.

use std::time::Duration;

use serde_json::{json, Value};
use weir_e2e::{
    apiserver::ApiServer,
    cluster::{pair, reason, INGRESS_TOKEN, NAMESPACES},
    eventually, service,
    tls::{https_get, KeyType, Pki},
    ConfigDir, Controller, Echo, Weir,
};

const V1: &str = "gateway.networking.k8s.io/v1";
const WAIT: Duration = Duration::from_secs(30);

/// The install's `weir-ingress` Deployment and Service, as `kubectl apply -k manifests` makes
/// them in weir-system.
fn template() -> String {
    let yaml = include_str!("../../manifests/ingress.yaml");
    let documents: Vec<Value> = serde_saphyr::from_multiple(yaml).unwrap();
    documents
        .into_iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("Deployment" | "Service")))
        .map(|mut d| {
            d["metadata"]["namespace"] = "weir-system".into();
            serde_json::to_string(&d).unwrap()
        })
        .collect::<Vec<_>>()
        .join("\n---\n")
}

fn gateway(namespace: &str, name: &str, listeners: &str) -> String {
    format!("apiVersion: {V1}\nkind: Gateway\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  gatewayClassName: weir\n  listeners:\n{listeners}")
}

fn http(port: u16, from: &str) -> String {
    format!("  - {{name: http-{port}, port: {port}, protocol: HTTP, allowedRoutes: {{namespaces: {{from: {from}}}}}}}\n")
}

fn route(name: &str, parents: &str, path: &str, backend: &str) -> String {
    format!("apiVersion: {V1}\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs: {parents}\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n    backendRefs: [{{name: {backend}, port: 80}}]\n")
}

struct Install {
    api: ApiServer,
    dir: std::path::PathBuf,
    controller: Controller,
}

/// The test API server with the namespaces and the template, and the controller provisioning
/// Gateways with `extra` flags.
fn install(extra: &[&str]) -> Install {
    let api = ApiServer::start();
    api.apply(NAMESPACES);
    api.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n");
    api.apply(&template());
    api.add_token(INGRESS_TOKEN, "weir-system", "weir-ingress", &["weir"]);
    let dir = std::env::temp_dir().join(format!("weir-provision-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("token"), INGRESS_TOKEN).unwrap();
    let mut args = vec!["--provision-gateways", "--pod-name", "controller-0"];
    args.extend(extra);
    let controller = Controller::start_kubernetes(&api, &dir, &args);
    Install {
        api,
        dir,
        controller,
    }
}

/// The object of `kind` the controller made for Gateway `namespace/name`, once it exists.
async fn made_for(api: &ApiServer, kind: &str, gateway: &str) -> Value {
    let version = if kind == "Deployment" {
        "apps/v1"
    } else {
        "v1"
    };
    eventually(
        WAIT,
        &format!("the {kind} of Gateway {gateway}"),
        || async {
            api.list(version, kind)
                .into_iter()
                .find(|o| o["metadata"]["annotations"]["weir.dev/gateway"] == gateway)
        },
    )
    .await
}

/// Writes `status` on `object` (as listed: without its kind), as the cluster's controllers
/// would: a Deployment's ready pods, a load balancer's address.
fn set_status(api: &ApiServer, version: &str, kind: &str, mut object: Value, status: Value) {
    object["apiVersion"] = version.into();
    object["kind"] = kind.into();
    object["status"] = status;
    api.apply(&serde_json::to_string(&object).unwrap());
}

/// The gateway's own container's arguments.
fn args_of(deployment: &Value) -> Vec<String> {
    let containers = &deployment["spec"]["template"]["spec"]["containers"];
    let ingress = containers
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["command"][0] == "weir-ingress")
        .unwrap();
    serde_json::from_value(ingress["args"].clone()).unwrap()
}

/// Runs a pod of `deployment`: `weir-ingress` with the arguments written there, save the ones
/// that say how to reach the controller and where to listen, which the test chooses (a free
/// loopback port stands for the pod's port 80).
fn run_pod(install: &Install, deployment: &Value) -> Weir {
    let test_chooses = [
        "--controller",
        "--controller-ca",
        "--identity-token-file",
        "--listen",
        "--listen-tls",
        "--admin",
    ];
    let kept: Vec<String> = args_of(deployment)
        .into_iter()
        .filter(|a| !test_chooses.contains(&a.split('=').next().unwrap_or_default()))
        .collect();
    let kept: Vec<&str> = kept.iter().map(String::as_str).collect();
    Weir::connect(&install.controller, &install.dir.join("token"), &kept)
}

async fn gateway_status(
    api: &ApiServer,
    name: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    eventually(WAIT, what, || async {
        let gw = api.get(V1, "Gateway", "default", name)?;
        check(&gw["status"]).then_some(gw["status"].clone())
    })
    .await
}

/// HTTPRouteMultipleGateways as the installed manifests run it: two Gateways on port 80,
/// each with a deployment of its own; a route attached to both answers at both, one attached
/// to one answers there alone. The shared gateway (`--serve=ingresses`) answers for neither.
#[tokio::test]
async fn http_route_multiple_gateways_each_gateway_is_served_by_its_own_deployment() {
    let install = install(&[]);
    let api = &install.api;
    let mut backends = Vec::new();
    for name in ["infra-backend-v1", "infra-backend-v2", "infra-backend-v3"] {
        let backend = Echo::start(name);
        api.apply(&service(name, &[&backend]));
        backends.push(backend);
    }
    api.apply(&gateway("default", "same-namespace", &http(80, "Same")));
    api.apply(&gateway("default", "all-namespaces", &http(80, "All")));
    api.apply(&route(
        "multiple-gateways-shared-route",
        "[{name: same-namespace}, {name: all-namespaces}]",
        "/shared",
        "infra-backend-v1",
    ));
    api.apply(&route(
        "same-namespace-dedicated-route",
        "[{name: same-namespace}]",
        "/",
        "infra-backend-v2",
    ));
    api.apply(&route(
        "all-namespaces-dedicated-route",
        "[{name: all-namespaces}]",
        "/",
        "infra-backend-v3",
    ));

    let mut pods = Vec::new();
    for (name, dedicated) in [
        ("same-namespace", "infra-backend-v2"),
        ("all-namespaces", "infra-backend-v3"),
    ] {
        let gateway = format!("default/{name}");
        let deployment = made_for(api, "Deployment", &gateway).await;
        assert_eq!(deployment["metadata"]["namespace"], "weir-system");
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(
            pod["serviceAccountName"], "weir-ingress",
            "the template's account"
        );
        let args = args_of(&deployment);
        assert!(args.contains(&"--serve=gateways".to_string()), "{args:?}");
        assert!(args.contains(&format!("--gateway={gateway}")), "{args:?}");
        let service = made_for(api, "Service", &gateway).await;
        let selector = &service["spec"]["selector"];
        let labels = &deployment["spec"]["template"]["metadata"]["labels"];
        for (k, v) in selector.as_object().unwrap() {
            assert_eq!(&labels[k], v, "the Service selects the Gateway's pods");
        }
        assert_ne!(
            labels["app.kubernetes.io/name"], "weir-ingress",
            "the shared Service does not select them"
        );
        assert_eq!(service["spec"]["ports"][0]["port"], 80);
        assert_eq!(service["spec"]["type"], "LoadBalancer");
        let weir = run_pod(&install, &deployment);
        weir.wait_ready_config().await;
        eventually(WAIT, "the dedicated route", || async {
            (weir.get("example.com", "/").await.backend() == dedicated).then_some(())
        })
        .await;
        assert_eq!(
            weir.get("example.com", "/shared").await.backend(),
            "infra-backend-v1"
        );
        pods.push(weir);
    }
    // The shared gateway of the install serves Ingresses alone.
    let shared = Weir::connect(
        &install.controller,
        &install.dir.join("token"),
        &["--serve=ingresses"],
    );
    shared.wait_ready_config().await;
    for path in ["/", "/shared"] {
        assert_eq!(
            shared.get("example.com", path).await.status.as_u16(),
            404,
            "{path}"
        );
    }
}

/// A Gateway's address is its Service's: the cluster IP the API server gave it, then the load
/// balancer's once it has one. Listeners added are added to the Service; a Gateway deleted
/// takes its Deployment and Service with it.
#[tokio::test]
async fn a_gateways_address_is_its_services_and_what_is_gone_is_deleted() {
    let install = install(&[]);
    let api = &install.api;
    api.apply(&gateway("default", "web", &http(80, "Same")));
    let service = made_for(api, "Service", "default/web").await;
    let name = service["metadata"]["name"].as_str().unwrap().to_string();
    let cluster_ip = service["spec"]["clusterIP"].as_str().unwrap().to_string();
    let programmed =
        |want: &'static str| move |s: &Value| reason(&s["conditions"], "Programmed").1 == want;
    // No pod is ready yet.
    let status = gateway_status(
        api,
        "web",
        "Programmed False, Pending",
        programmed("Pending"),
    )
    .await;
    assert_eq!(reason(&status["conditions"], "Programmed").0, "False");
    assert!(status["addresses"].as_array().is_none_or(Vec::is_empty));
    // A pod ready, but the load balancer has no address: its cluster IP is not one clients
    // outside reach.
    let deployment = made_for(api, "Deployment", "default/web").await;
    set_status(
        api,
        "apps/v1",
        "Deployment",
        deployment.clone(),
        json!({"availableReplicas": 1}),
    );
    let what = "Programmed False, AddressNotAssigned";
    let status = gateway_status(api, "web", what, programmed("AddressNotAssigned")).await;
    assert!(
        status["addresses"].as_array().is_none_or(Vec::is_empty),
        "{status}"
    );
    assert!(!status.to_string().contains(&cluster_ip));
    // A cloud load balancer gives the Service an address.
    let lb = json!({"loadBalancer": {"ingress": [{"ip": "198.51.100.20"}]}});
    set_status(api, "v1", "Service", service.clone(), lb);
    let status = gateway_status(api, "web", "the load balancer's address", |s| {
        s["addresses"][0]["value"] == "198.51.100.20"
    })
    .await;
    assert_eq!(status["addresses"][0]["type"], "IPAddress");
    assert_eq!(status["addresses"].as_array().unwrap().len(), 1);
    assert_eq!(
        reason(&status["conditions"], "Programmed"),
        pair("True", "Programmed")
    );

    // A listener on a port of its own is on the Service.
    let before = api
        .get("apps/v1", "Deployment", "weir-system", &name)
        .unwrap();
    let listeners = format!("{}{}", http(80, "Same"), http(8080, "Same"));
    api.apply(&gateway("default", "web", &listeners));
    eventually(WAIT, "port 8080 on the Service", || async {
        let s = api.get("v1", "Service", "weir-system", &name)?;
        let ports: Vec<i64> = s["spec"]["ports"]
            .as_array()?
            .iter()
            .filter_map(|p| p["port"].as_i64())
            .collect();
        (ports == [80, 8080]).then_some(())
    })
    .await;
    let kept = api.get("v1", "Service", "weir-system", &name).unwrap();
    assert_eq!(
        kept["spec"]["clusterIP"],
        cluster_ip.as_str(),
        "the replacement keeps the cluster IP"
    );
    // The pods do not change with the listeners: they are not restarted for one.
    let now = api
        .get("apps/v1", "Deployment", "weir-system", &name)
        .unwrap();
    assert_eq!(
        now["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );

    assert!(api.delete(V1, "Gateway", "default", "web"));
    eventually(WAIT, "the Deployment and Service deleted", || async {
        (api.get("apps/v1", "Deployment", "weir-system", &name)
            .is_none()
            && api.get("v1", "Service", "weir-system", &name).is_none())
        .then_some(())
    })
    .await;
    // The template is not the controller's to delete.
    assert!(api
        .get("apps/v1", "Deployment", "weir-system", "weir-ingress")
        .is_some());
    assert!(api
        .get("v1", "Service", "weir-system", "weir-ingress")
        .is_some());
}

/// Abuse: a tenant names a Gateway so that its deployment's name is one a workload already
/// has, or one the controller made for another Gateway. Neither is replaced; the Gateway says
/// why it has no deployment.
#[tokio::test]
async fn an_object_weir_did_not_make_for_this_gateway_is_never_replaced() {
    let install = install(&[]);
    let api = &install.api;
    api.apply(&gateway("default", "web", &http(80, "Same")));
    let deployment = made_for(api, "Deployment", "default/web").await;
    let name = deployment["metadata"]["name"].as_str().unwrap().to_string();
    assert!(api.delete(V1, "Gateway", "default", "web"));
    eventually(WAIT, "the Deployment deleted", || async {
        let gone = api
            .get("apps/v1", "Deployment", "weir-system", &name)
            .is_none();
        gone.then_some(())
    })
    .await;
    let workload = |labels: &str, annotations: &str, image: &str| {
        format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: weir-system, labels: {{app: payroll{labels}}}, annotations: {{{annotations}}}}}\nspec:\n  selector: {{matchLabels: {{app: payroll}}}}\n  template:\n    metadata: {{labels: {{app: payroll}}}}\n    spec:\n      containers: [{{name: payroll, image: {image}}}]\n")
    };
    let image_of = |api: &ApiServer| {
        let d = api
            .get("apps/v1", "Deployment", "weir-system", &name)
            .unwrap();
        d["spec"]["template"]["spec"]["containers"][0]["image"].clone()
    };
    // A workload of that name, made by someone else.
    api.apply(&workload("", "", "payroll:1"));
    api.apply(&gateway("default", "web", &http(80, "Same")));
    let message = no_resources(api, "web").await;
    assert!(
        message.contains(&name) && message.contains("not made by Weir for this Gateway"),
        "{message}"
    );
    assert_eq!(image_of(api), "payroll:1");
    assert!(api.get("v1", "Service", "weir-system", &name).is_none());
    // One that says the controller made it, for another Gateway (what a name collision would
    // look like), while this Gateway exists: left as it is through the syncs that follow.
    let made_for_another =
        format!(", app.kubernetes.io/managed-by: weir-controller, weir.dev/gateway: {name}");
    api.apply(&workload(
        &made_for_another,
        "weir.dev/gateway: other/gw",
        "payroll:2",
    ));
    tokio::time::sleep(Duration::from_secs(6)).await;
    let message = no_resources(api, "web").await;
    assert!(
        message.contains("not made by Weir for this Gateway"),
        "{message}"
    );
    assert_eq!(image_of(api), "payroll:2");
    // The Gateway gone, a workload it did not make stays.
    api.apply(&workload("", "", "payroll:1"));
    assert!(api.delete(V1, "Gateway", "default", "web"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(image_of(api), "payroll:1");
}

/// The message of Gateway default/`name`'s `Programmed: False, NoResources`, once it says so.
async fn no_resources(api: &ApiServer, name: &str) -> String {
    let status = gateway_status(api, name, "Programmed False, NoResources", |s| {
        reason(&s["conditions"], "Programmed").1 == "NoResources"
    })
    .await;
    weir_e2e::cluster::condition(&status["conditions"], "Programmed")["message"].to_string()
}

/// Mistakes that must not take every Gateway down: a template that cannot be used (its
/// container renamed, its image's entrypoint relied on) deletes nothing, and says so on each
/// Gateway; a Gateway refused for a bad edit keeps its deployment.
#[tokio::test]
async fn a_broken_template_or_a_refused_gateway_deletes_nothing() {
    let install = install(&[]);
    let api = &install.api;
    for name in ["one", "two"] {
        api.apply(&gateway("default", name, &http(80, "Same")));
    }
    let one = made_for(api, "Deployment", "default/one").await;
    made_for(api, "Deployment", "default/two").await;
    let mut broken = api
        .get("apps/v1", "Deployment", "weir-system", "weir-ingress")
        .unwrap();
    broken["spec"]["template"]["spec"]["containers"][0]["name"] = "proxy".into();
    broken["spec"]["template"]["spec"]["containers"][0]["command"] = json!(["/entrypoint"]);
    api.apply(&serde_json::to_string(&broken).unwrap());
    for name in ["one", "two"] {
        let status = gateway_status(api, name, "Programmed False, Pending", |s| {
            let c = weir_e2e::cluster::condition(&s["conditions"], "Programmed");
            c["message"]
                .as_str()
                .is_some_and(|m| m.contains("has no weir-ingress container"))
        })
        .await;
        assert_eq!(
            reason(&status["conditions"], "Programmed"),
            pair("False", "Pending")
        );
    }
    let made = |api: &ApiServer| {
        api.list("apps/v1", "Deployment")
            .into_iter()
            .filter(|d| {
                d["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "weir-controller"
            })
            .count()
    };
    assert_eq!(made(api), 2, "both deployments kept");
    // The template mended; a Gateway then edited into one the controller refuses (a listener
    // whose port is not a number) keeps its deployment.
    api.apply(&template());
    let bad = gateway(
        "default",
        "one",
        "  - {name: http, port: eighty, protocol: HTTP}\n",
    );
    api.apply(&bad);
    eventually(WAIT, "Gateway default/one refused", || async {
        let status = install.controller.status().await;
        let rejected = status["rejected"]
            .as_array()?
            .iter()
            .any(|r| r["object"] == "Gateway default/one");
        rejected.then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let name = one["metadata"]["name"].as_str().unwrap();
    assert!(
        api.get("apps/v1", "Deployment", "weir-system", name)
            .is_some(),
        "kept"
    );
    assert_eq!(made(api), 2);
}

/// Abuse: one namespace's Gateways take no more than their share of the places.
#[tokio::test]
async fn one_namespace_cannot_take_every_place() {
    let install = install(&["--max-provisioned-gateways-per-namespace", "2"]);
    let api = &install.api;
    for name in ["a", "b", "c"] {
        api.apply(&gateway("team", name, &http(80, "Same")));
    }
    made_for(api, "Deployment", "team/a").await;
    made_for(api, "Deployment", "team/b").await;
    eventually(WAIT, "team/c NoResources", || async {
        let gw = api.get(V1, "Gateway", "team", "c")?;
        (reason(&gw["status"]["conditions"], "Programmed").1 == "NoResources").then_some(())
    })
    .await;
    // Another namespace still gets one.
    api.apply(&gateway("default", "platform", &http(80, "Same")));
    made_for(api, "Deployment", "default/platform").await;
    let for_c = api
        .list("apps/v1", "Deployment")
        .into_iter()
        .any(|d| d["metadata"]["annotations"]["weir.dev/gateway"] == "team/c");
    assert!(!for_c);
}

/// Abuse: Gateways without end. Past --max-provisioned-gateways the youngest get none and say
/// so; a tenant's Gateway is served from the controller's namespace, as the template's account,
/// whatever it asks of its infrastructure.
#[tokio::test]
async fn gateways_past_the_limit_get_no_deployment_and_tenants_choose_nothing_of_theirs() {
    let install = install(&["--max-provisioned-gateways", "1"]);
    let api = &install.api;
    api.apply(&gateway("default", "first", &http(80, "Same")));
    made_for(api, "Deployment", "default/first").await;
    let tenant = format!(
        "{}  infrastructure: {{labels: {{app.kubernetes.io/name: weir-ingress}}, annotations: {{evil: x}}}}\n",
        gateway("team", "second", &http(80, "Same"))
    );
    api.apply(&tenant);
    let what = "the second Gateway NoResources";
    eventually(WAIT, what, || async {
        let gw = api.get(V1, "Gateway", "team", "second")?;
        (reason(&gw["status"]["conditions"], "Programmed")
            == ("False".to_string(), "NoResources".to_string()))
            .then_some(())
    })
    .await;
    let made: Vec<Value> = api
        .list("apps/v1", "Deployment")
        .into_iter()
        .filter(|d| d["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "weir-controller")
        .collect();
    assert_eq!(made.len(), 1, "one Gateway, one deployment");
    // The first one deleted, the second gets its place, in the controller's namespace.
    assert!(api.delete(V1, "Gateway", "default", "first"));
    let deployment = made_for(api, "Deployment", "team/second").await;
    assert_eq!(deployment["metadata"]["namespace"], "weir-system");
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(
        labels["app.kubernetes.io/name"], "weir-gateway",
        "the tenant's labels are not the pods'"
    );
    assert!(deployment["metadata"]["annotations"].get("evil").is_none());
    assert!(api
        .list("apps/v1", "Deployment")
        .iter()
        .all(|d| d["metadata"]["namespace"] != "team"));
}

/// `weir-ingress --serve`: a Gateway's deployment (`gateways`) answers no Ingress host and
/// offers no Ingress certificate; the shared one (`ingresses`) answers no Gateway route.
#[tokio::test]
async fn serve_keeps_ingresses_and_gateways_apart() {
    let app = Echo::start("app");
    let pki = Pki::new();
    let cert = pki.issue(&["legacy.example.com"], KeyType::Ecdsa);
    let dir = ConfigDir::new()
        .with("svc.yaml", &service("app", &[&app]))
        .with("secret.yaml", &weir_e2e::tls_secret("legacy-tls", &cert))
        .with("ingress.yaml", "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: legacy, namespace: default}\nspec:\n  ingressClassName: weir\n  tls: [{hosts: [legacy.example.com], secretName: legacy-tls}]\n  rules:\n  - host: legacy.example.com\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}]}\n")
        .with("gw.yaml", &gateway("default", "gw", &http(80, "Same")))
        .with("route.yaml", &format!("apiVersion: {V1}\nkind: HTTPRoute\nmetadata: {{name: shop, namespace: default}}\nspec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [shop.example.com]\n  rules: [{{backendRefs: [{{name: app, port: 80}}]}}]\n"));
    let gateways = Weir::start_with(&dir, &["--serve", "gateways", "--gateway", "default/gw"]);
    let ingresses = Weir::start_with(&dir, &["--serve", "ingresses"]);
    let all = Weir::start_with(&dir, &[]);
    let code = |r: weir_e2e::Reply| r.status.as_u16();
    assert_eq!(code(gateways.get("shop.example.com", "/").await), 200);
    assert_eq!(code(gateways.get("legacy.example.com", "/").await), 404);
    assert_eq!(code(ingresses.get("shop.example.com", "/").await), 404);
    assert_eq!(code(ingresses.get("legacy.example.com", "/").await), 200);
    assert_eq!(code(all.get("shop.example.com", "/").await), 200);
    assert_eq!(code(all.get("legacy.example.com", "/").await), 200);
    // The Ingress's certificate is offered by the gateways that serve Ingresses alone.
    let https = |weir: &Weir| {
        https_get(
            weir.tls,
            "legacy.example.com",
            pki.client(&[], false),
            "/",
            &[],
        )
    };
    assert_eq!(https(&ingresses).await.unwrap().reply.status.as_u16(), 200);
    assert!(
        https(&gateways).await.is_err(),
        "no certificate for an Ingress host"
    );
}
