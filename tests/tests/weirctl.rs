//! `weirctl analyze DIR`: every error (a refused object) and warning (a reference that does not
//! resolve, a route attached nowhere, a rule another route shadows) with file, object and
//! field; the exit status a CI job can gate on.

use std::process::Command;

use weir_e2e::{binary, gateway, http_route, service, ConfigDir, Echo};

/// Runs `weirctl analyze DIR` with `extra`: exit code and stdout.
fn analyze(dir: &ConfigDir, extra: &[&str]) -> (i32, String) {
    let out = Command::new(binary("weirctl"))
        .arg("analyze")
        .arg(&dir.path)
        .args(extra)
        .output()
        .expect("run weirctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn analyze_names_every_refusal_and_warning_with_file_object_and_field() {
    let app = Echo::start("app");
    let bad = http_route(
        "bad",
        &["bad.example.com"],
        "  - matches: [{path: {type: RegularExpression, value: \"/(unclosed\"}}]\n    backendRefs: [{name: app, port: 80}]\n",
    );
    let dangling = http_route(
        "dangling",
        &["d.example.com"],
        "  - backendRefs: [{name: nowhere, port: 80}]\n",
    );
    let older = http_route(
        "older",
        &["shop.example.com"],
        "  - backendRefs: [{name: app, port: 80}]\n",
    )
    .replace(
        "namespace: default}",
        "namespace: default, creationTimestamp: \"2026-01-01T00:00:00Z\"}",
    );
    let newer = http_route(
        "newer",
        &["shop.example.com"],
        "  - backendRefs: [{name: app, port: 80}]\n",
    )
    .replace(
        "namespace: default}",
        "namespace: default, creationTimestamp: \"2026-02-01T00:00:00Z\"}",
    );
    let dir = ConfigDir::new()
        .with("svc.yaml", &service("app", &[&app]))
        .with("gw.yaml", &gateway())
        .with("bad.yaml", &bad)
        .with("dangling.yaml", &dangling)
        .with("older.yaml", &older)
        .with("newer.yaml", &newer);

    let (code, text) = analyze(&dir, &[]);
    assert_eq!(code, 1, "a refused object fails the run:\n{text}");
    assert!(
        text.lines().any(|l| l.starts_with("error: ")
            && l.contains("bad.yaml")
            && l.contains("HTTPRoute default/bad")
            && l.contains("spec.rules[0].matches[0].path.value")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("warning: ")
            && l.contains("dangling.yaml")
            && l.contains("HTTPRoute default/dangling")
            && l.contains("nowhere")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("warning: ")
            && l.contains("newer.yaml")
            && l.contains("HTTPRoute default/newer")
            && l.contains("shadowed on shop.example.com")
            && l.contains("HTTPRoute default/older")),
        "{text}"
    );
    assert!(
        !text.contains("HTTPRoute default/older: spec"),
        "the older route serves:\n{text}"
    );

    let (_, json) = analyze(&dir, &["--output", "json"]);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let error = &report["errors"][0];
    assert_eq!(error["object"], "HTTPRoute default/bad");
    assert_eq!(error["field"], "spec.rules[0].matches[0].path.value");
    assert!(error["file"].as_str().unwrap().ends_with("bad.yaml"));
    assert_eq!(report["warnings"].as_array().unwrap().len(), 2, "{json}");

    // Without the refused object, warnings alone pass, unless --strict.
    std::fs::remove_file(dir.path.join("bad.yaml")).unwrap();
    assert_eq!(analyze(&dir, &[]).0, 0);
    assert_eq!(analyze(&dir, &["--strict"]).0, 1);
    std::fs::remove_file(dir.path.join("dangling.yaml")).unwrap();
    std::fs::remove_file(dir.path.join("newer.yaml")).unwrap();
    let (code, text) = analyze(&dir, &["--strict"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("no problems found"), "{text}");
}

#[test]
fn analyze_a_directory_that_cannot_be_read_exits_2() {
    let out = Command::new(binary("weirctl"))
        .args(["analyze", "/nonexistent/weir-config"])
        .output()
        .expect("run weirctl");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/weir-config"));
}

/// Runs weirctl with `args`: exit code and stdout (stderr after it).
fn weirctl(args: &[&str]) -> (i32, String) {
    let out = Command::new(binary("weirctl"))
        .args(args)
        .output()
        .expect("run weirctl");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// `weirctl status` lists the ingress connected to the controller, in sync with its view
/// (exit 0); `weirctl config NAMESPACE/POD` prints the configuration it was sent, with its
/// routes and its certificate but never its private key; an unknown node and an unreachable
/// controller are said plainly.
#[tokio::test]
async fn status_lists_connected_nodes_and_config_prints_a_nodes_view_with_secrets_redacted() {
    use weir_e2e::{
        tls::{KeyType, Pki},
        tls_secret, Controller, Weir,
    };
    let app = Echo::start("app");
    let cert = Pki::new().issue(&["shop.example.com"], KeyType::Ecdsa);
    let gateway_yaml = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\nspec:\n  gatewayClassName: weir\n  listeners:\n  - {name: http, protocol: HTTP, port: 80}\n  - {name: https, protocol: HTTPS, port: 443, tls: {certificateRefs: [{name: shop-tls}]}}\n";
    let dir = ConfigDir::new()
        .with("svc.yaml", &service("app", &[&app]))
        .with("gw.yaml", gateway_yaml)
        .with("cert.yaml", &tls_secret("shop-tls", &cert))
        .with(
            "route.yaml",
            &http_route(
                "shop",
                &["shop.example.com"],
                "  - backendRefs: [{name: app, port: 80}]\n",
            ),
        );
    let controller = Controller::start(&dir);
    let weir = Weir::connect(
        &controller,
        &controller.token_file("weir-system", "weir-ingress"),
        &[],
    );
    weir.wait_ready_config().await;
    let admin = format!("http://{}", controller.admin);
    let status = weir_e2e::eventually(
        std::time::Duration::from_secs(10),
        "the ingress in sync",
        || {
            let admin = admin.clone();
            async move {
                let (code, out) = weirctl(&["status", "--controller-admin", &admin]);
                (code == 0 && out.contains("in sync")).then_some(out)
            }
        },
    )
    .await;
    assert!(status.contains("weir-system/ingress-0"), "{status}");
    assert!(
        status.lines().any(|l| l.starts_with("ingress ")),
        "{status}"
    );
    let (code, json) = weirctl(&["status", "--controller-admin", &admin, "--output", "json"]);
    assert_eq!(code, 0, "{json}");
    let listed: serde_json::Value = serde_json::from_str(&json).unwrap();
    let node = &listed["nodes"][0];
    assert_eq!(node["role"], "ingress");
    assert_eq!(node["applied"], node["latest"], "{node}");
    assert_eq!(node["behind"], false);

    let (code, config) = weirctl(&[
        "config",
        "weir-system/ingress-0",
        "--controller-admin",
        &admin,
    ]);
    assert_eq!(code, 0, "{config}");
    assert!(config.contains("shop.example.com"), "{config}");
    let key_body = cert.key.lines().nth(1).unwrap();
    assert!(
        !config.contains(key_body),
        "the private key left the controller: {config}"
    );

    let (code, out) = weirctl(&["config", "weir-system/nobody", "--controller-admin", &admin]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("no node weir-system/nobody is connected"),
        "{out}"
    );
    let closed = format!("http://127.0.0.1:{}", weir_e2e::free_port());
    let (code, out) = weirctl(&["status", "--controller-admin", &closed]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("cannot reach the controller"), "{out}");
}

/// `weirctl check --kubeconfig F` against a cluster with Weir installed: the kinds served, the
/// controller holding its Lease, the webhook's caBundle and the trust bundle valid (exit 0),
/// a pod of a labelled namespace running without the sidecar named; a missing required CRD is
/// an error (exit 1), a missing optional one a warning.
#[tokio::test]
async fn check_says_whether_the_cluster_is_ready_for_weir_and_weir_is_well() {
    use weir_e2e::cluster::cluster;
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    api.apply(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {weir.dev/inject: enabled}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: old-0, namespace: shop}\nspec: {containers: [{name: app, image: app}]}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: new-0, namespace: shop, annotations: {weir.dev/injected: \"true\"}}\nspec: {containers: [{name: app, image: app}]}\n---\n\
         apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\nmetadata: {name: weir-injector}\n\
         webhooks:\n- name: pod.inject.weir.dev\n  clientConfig: {service: {name: weir-injector, namespace: weir-system, path: /inject}}\n",
    );
    let kubeconfig = api.kubeconfig(&cluster.dir);
    let kubeconfig = kubeconfig.to_str().unwrap();
    let healthy = weir_e2e::eventually(
        std::time::Duration::from_secs(15),
        "weirctl check passing",
        || async {
            let (code, out) = weirctl(&["check", "--kubeconfig", kubeconfig]);
            (code == 0).then_some(out)
        },
    )
    .await;
    for expected in [
        "ok       kubernetes",
        "are served",
        "held by controller-0",
        "MutatingWebhookConfiguration weir-injector (pod.inject.weir.dev): 1 certificate(s)",
        "ConfigMap weir-system/weir-ca-root: 1 certificate(s)",
        "warning  injection",
        "shop/old-0",
        "1 pod(s) with the sidecar",
    ] {
        assert!(
            healthy.contains(expected),
            "{expected:?} missing:\n{healthy}"
        );
    }
    assert!(!healthy.contains("shop/new-0"), "{healthy}");
    api.uninstall("tlsroutes");
    api.uninstall("trafficpolicies");
    let (code, out) = weirctl(&["check", "--kubeconfig", kubeconfig]);
    assert_eq!(code, 1, "{out}");
    let line = |needle: &str| {
        out.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("trafficpolicies").starts_with("error"), "{out}");
    assert!(line("tlsroutes").starts_with("warning"), "{out}");
    // No API server at all: said, and exit 1.
    let missing = cluster.dir.join("missing-kubeconfig");
    let (code, out) = weirctl(&["check", "--kubeconfig", missing.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cannot read --kubeconfig"), "{out}");
}

/// `weirctl status --kubeconfig F` and `config --kubeconfig F` reach the controller's admin
/// pages (loopback only) through the API server, by port-forward to every ready replica of
/// its Deployment: the nodes of the replica that answers are listed with it, a replica that
/// cannot be asked is named (exit 2: the list may be incomplete), one that is not ready is
/// not asked, and a cluster without the controller's Deployment is said plainly.
#[tokio::test]
async fn status_and_config_reach_every_controller_replica_through_the_kubeconfig() {
    use weir_e2e::cluster::cluster;
    let cluster = cluster(&[]).await;
    let api = &cluster.api;
    let kubeconfig = api.kubeconfig(&cluster.dir);
    let kubeconfig = kubeconfig.to_str().unwrap();
    let via = |extra: &[&str]| {
        let mut args = extra.to_vec();
        args.extend(["--kubeconfig", kubeconfig]);
        weirctl(&args)
    };
    let (code, out) = via(&["status"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("no Deployment weir-system/weir-controller"),
        "{out}"
    );

    let pod = |name: &str, port: u16, ready: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: weir-system, labels: {{app.kubernetes.io/name: weir-controller}}}}\n\
             spec: {{containers: [{{name: controller, image: weir, ports: [{{name: grpc, containerPort: 15010}}, {{name: admin, containerPort: {port}}}]}}]}}\n\
             status: {{phase: Running, podIP: 127.0.0.1, conditions: [{{type: Ready, status: \"{ready}\"}}]}}\n"
        )
    };
    api.apply(&format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: weir-controller, namespace: weir-system}}\n\
         spec: {{selector: {{matchLabels: {{app.kubernetes.io/name: weir-controller}}}}, template: {{metadata: {{labels: {{app.kubernetes.io/name: weir-controller}}}}, spec: {{containers: [{{name: controller, image: weir}}]}}}}}}\n---\n{}---\n{}",
        pod("controller-0", cluster.controller.admin.port(), "True"),
        // Not ready: never asked (its port answers nothing).
        pod("controller-2", weir_e2e::free_port(), "False"),
    ));
    let status = weir_e2e::eventually(
        std::time::Duration::from_secs(10),
        "the ingress in sync, through the kubeconfig",
        || async {
            let (code, out) = via(&["status"]);
            (code == 0 && out.contains("in sync")).then_some(out)
        },
    )
    .await;
    assert!(status.contains("weir-system/ingress-0"), "{status}");
    assert!(!status.contains("controller-2"), "{status}");
    let (code, json) = via(&["status", "--output", "json"]);
    assert_eq!(code, 0, "{json}");
    let listed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(listed["nodes"][0]["role"], "ingress", "{listed}");
    assert_eq!(listed["nodes"][0]["controller"], "weir-system/controller-0");
    assert_eq!(
        listed["controllers"],
        serde_json::json!(["weir-system/controller-0"])
    );

    let (code, config) = via(&["config", "weir-system/ingress-0"]);
    assert_eq!(code, 0, "{config}");
    assert!(config.contains("shop.example.com"), "{config}");
    let (code, out) = via(&["config", "weir-system/nobody"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("no node weir-system/nobody is connected"),
        "{out}"
    );

    // A second replica, ready, whose admin port refuses: named, the first one's nodes still
    // listed, and exit 2.
    let closed = weir_e2e::free_port();
    api.apply(&pod("controller-1", closed, "True"));
    let (code, out) = via(&["status"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("weir-system/ingress-0"), "{out}");
    assert!(
        out.contains("controller weir-system/controller-1")
            && out.contains(&format!("error forwarding port {closed}")),
        "{out}"
    );
    assert!(
        out.contains("(2 replicas)") || out.contains("1 node(s)"),
        "{out}"
    );
}
