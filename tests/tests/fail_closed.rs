//! Fail closed on the wire (issue 25, item 6): a sidecar whose view requires a restricting
//! feature it does not enforce NACKs that version and keeps enforcing its last good policy,
//! and the controller shows the refusal on `/status` and in its metrics until the node
//! applies a version again.
//!
//! The backend's sidecar is started with `--refuse-features access.ports`: it acts as a
//! sidecar built before `AccessPolicy ... to[].ports` existed, which (without the requirement
//! list) would have skipped the field and allowed more than the policy says.

use std::time::Duration;

use http::StatusCode;
use weir_e2e::{
    eventually,
    mesh::{echo_app, frontend_and_backend, Ports, Sidecar},
    ConfigDir, Controller,
};

/// An AccessPolicy on the backend letting the frontend call `paths`, on `ports` when given.
fn backend_policy(paths: &[&str], ports: Option<&[u16]>) -> String {
    let paths: Vec<String> = paths.iter().map(|p| format!("\"{p}\"")).collect();
    let ports = ports
        .map(|ports| format!(", ports: {ports:?}"))
        .unwrap_or_default();
    format!(
        "apiVersion: weir.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: backend, namespace: shop}}\nspec:\n  selector: {{matchLabels: {{app: backend}}}}\n  rules: [{{from: [{{serviceAccount: frontend}}], to: [{{paths: [{}]{ports}}}]}}]\n",
        paths.join(", ")
    )
}

#[tokio::test]
async fn a_sidecar_nacks_a_view_it_cannot_enforce_and_keeps_its_last_good_policy() {
    let (front, back) = (Ports::free(), Ports::free());
    let workloads = frontend_and_backend(front.endpoint(), back.endpoint());
    let policy = backend_policy(&["/public*"], None);
    let dir = ConfigDir::new()
        .with("workloads.yaml", &workloads)
        .with("access.yaml", &policy);
    let controller = Controller::start(&dir);
    let app = echo_app("backend", None);
    let frontend = Sidecar::shop(&controller, "frontend", app.port, front, &[]);
    let backend = Sidecar::shop(
        &controller,
        "backend",
        app.port,
        back,
        &["--refuse-features", "access.ports"],
    );
    frontend.wait_ready().await;
    backend.wait_ready().await;
    let status = |path: &'static str| {
        let frontend = &frontend;
        async move { frontend.call("backend.shop", path).await.status }
    };
    assert_eq!(status("/public/a").await, StatusCode::OK);
    assert_eq!(status("/private/a").await, StatusCode::FORBIDDEN);

    // The new policy restricts by port (to one nothing listens on) and opens /private. A node
    // that skipped `ports` would now let the frontend into /private.
    dir.write(
        "access.yaml",
        &backend_policy(&["/public*", "/private*"], Some(&[1])),
    );
    let refusing = eventually(
        Duration::from_secs(10),
        "the controller sees the NACK",
        || async {
            let status = controller.status().await;
            let refusing = status["refusing"].as_array().cloned().unwrap_or_default();
            (!refusing.is_empty()).then_some(refusing)
        },
    )
    .await;
    assert_eq!(refusing.len(), 1, "{refusing:?}");
    assert_eq!(refusing[0]["node"], "shop/backend-0 (sidecar)");
    let error = refusing[0]["error"].as_str().unwrap();
    assert!(error.contains("cannot enforce access.ports"), "{error}");
    let refusing_nodes = r#"weir_controller_refusing_nodes{role="sidecar"}"#;
    assert_eq!(controller.metric(refusing_nodes).await, Some(1.0));
    let nacks = r#"weir_controller_acks_total{result="nack",role="sidecar"}"#;
    assert!(controller.metric(nacks).await >= Some(1.0));
    assert!(
        controller.logs().contains("node refused a version"),
        "{}",
        controller.logs()
    );

    // `weirctl status` shows the refusing node with its error, and fails.
    let admin = format!("http://{}", controller.admin);
    let out = std::process::Command::new(weir_e2e::binary("weirctl"))
        .args(["status", "--controller-admin", &admin])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let line = text.lines().find(|l| l.contains("shop/backend-0"));
    let line = line.unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("NACK") && line.contains("access.ports"),
        "{text}"
    );

    // The last good policy keeps being enforced, both ways, and the sidecar stays ready.
    assert_eq!(status("/public/b").await, StatusCode::OK);
    assert_eq!(status("/private/b").await, StatusCode::FORBIDDEN);
    assert_eq!(backend.admin_get("/readyz").await.status, StatusCode::OK);
    assert!(
        backend.logs().contains("access.ports"),
        "{}",
        backend.logs()
    );

    // A version the node can enforce is applied, and the refusal is gone.
    dir.write(
        "access.yaml",
        &backend_policy(&["/public*", "/private*"], None),
    );
    eventually(
        Duration::from_secs(10),
        "the new policy applied",
        || async { (status("/private/c").await == StatusCode::OK).then_some(()) },
    )
    .await;
    let status = controller.status().await;
    assert_eq!(status["refusing"], serde_json::json!([]), "{status}");
    assert_eq!(controller.metric(refusing_nodes).await, Some(0.0));
}
