//! Opting out of STRICT is reported (issue 24, item 7): the real `weir-controller
//! --kubernetes` against the test API server, a STRICT MeshTLSPolicy, and pods that escape it
//! by `weir.dev/inject: disabled` or `weir.dev/skip-inbound-ports`. The annotations keep
//! working; the policy's `Enforced` condition, a `PodsOptedOut` Warning Event, the
//! `weir_controller_strict_uncovered_pods` gauge and `/status` say which pods and why.

use std::time::Duration;

use serde_json::Value;
use weir_e2e::{apiserver::ApiServer, eventually, mesh_tls, Controller};

const NAMESPACES: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: weir-system}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n";
const SERIES: &str = "weir_controller_strict_uncovered_pods{policy=\"shop/default\"}";

/// A pod of `shop` with these annotations (a YAML flow mapping's inside).
fn pod(name: &str, annotations: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop, annotations: {{{annotations}}}}}\nspec: {{containers: [{{name: app}}]}}\n")
}

/// The `Enforced` condition of MeshTLSPolicy `shop/default`, once its status is `status`.
async fn enforced(api: &ApiServer, status: &str) -> Value {
    let what = format!("MeshTLSPolicy condition Enforced={status}");
    eventually(Duration::from_secs(10), &what, || async {
        let policy = api.get("weir.dev/v1alpha1", "MeshTLSPolicy", "shop", "default")?;
        let condition = policy["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Enforced")?
            .clone();
        (condition["status"] == status).then_some(condition)
    })
    .await
}

/// Notes of the `PodsOptedOut` Events on MeshTLSPolicy `shop/default`, oldest first.
fn opted_out_events(api: &ApiServer) -> Vec<String> {
    api.list("events.k8s.io/v1", "Event")
        .into_iter()
        .filter(|e| {
            e["regarding"]["kind"] == "MeshTLSPolicy"
                && e["regarding"]["name"] == "default"
                && e["reason"] == "PodsOptedOut"
        })
        .inspect(|e| assert_eq!(e["type"], "Warning", "{e}"))
        .map(|e| e["note"].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn metric_is(controller: &Controller, value: f64) {
    let what = format!("{SERIES} {value}");
    eventually(Duration::from_secs(10), &what, || async {
        (controller.metric(SERIES).await == Some(value)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn pods_opting_out_of_a_strict_policy_are_named_in_its_status_an_event_and_a_metric() {
    let api = ApiServer::start();
    api.apply(NAMESPACES);
    api.apply(&mesh_tls("STRICT"));
    api.apply(&pod("web-0", "weir.dev/injected: 0.1.0"));
    api.apply(&pod("legacy-0", "weir.dev/inject: disabled"));
    api.apply(&pod(
        "db-0",
        "weir.dev/injected: 0.1.0, weir.dev/skip-inbound-ports: '5432'",
    ));
    let dir = std::env::temp_dir().join(format!("weir-optout-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let controller = Controller::start_kubernetes(&api, &dir, &["--pod-name", "controller-0"]);

    // Both escapes named, with why, on the policy itself.
    let condition = enforced(&api, "False").await;
    assert_eq!(condition["reason"], "PodsOptedOut");
    let message = condition["message"].as_str().unwrap();
    assert_eq!(
        message,
        "STRICT does not cover 2 pods: shop/db-0 (weir.dev/skip-inbound-ports: 5432), \
         shop/legacy-0 (weir.dev/inject: disabled)"
    );
    let policy = api
        .get("weir.dev/v1alpha1", "MeshTLSPolicy", "shop", "default")
        .unwrap();
    let accepted = policy["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Accepted")
        .unwrap();
    assert_eq!(accepted["status"], "True", "reporting is not refusing");
    let events = eventually(Duration::from_secs(10), "a PodsOptedOut Event", || async {
        let events = opted_out_events(&api);
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].contains("shop/db-0 (weir.dev/skip-inbound-ports: 5432)")
            && events[0].contains("shop/legacy-0 (weir.dev/inject: disabled)"),
        "{events:?}"
    );
    metric_is(&controller, 2.0).await;
    // Directory mode reports the same way: a compile warning on /status.
    let status = controller.status().await;
    let warnings = status["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().starts_with(
                "MeshTLSPolicy shop/default (STRICT) does not cover 2 pods: shop/db-0"
            )),
        "{warnings:?}"
    );
    assert_eq!(
        status["strictCoverage"][0]["uncovered"][1],
        serde_json::json!({"pod": "shop/legacy-0", "reason": "weir.dev/inject: disabled"})
    );

    // One fewer: the set changed, so a new Event names what is left.
    assert!(api.delete("v1", "Pod", "shop", "legacy-0"));
    metric_is(&controller, 1.0).await;
    let events = eventually(Duration::from_secs(10), "a second Event", || async {
        let events = opted_out_events(&api);
        (events.len() == 2).then_some(events)
    })
    .await;
    assert_eq!(
        events[1],
        "STRICT does not cover 1 pod: shop/db-0 (weir.dev/skip-inbound-ports: 5432)"
    );

    // Fixed: every pod meshed with nothing skipped.
    api.apply(&pod("db-0", "weir.dev/injected: 0.1.0"));
    let condition = enforced(&api, "True").await;
    assert_eq!(condition["reason"], "AllPodsCovered");
    metric_is(&controller, 0.0).await;
    let status = controller.status().await;
    assert!(
        !status["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("STRICT")),
        "{status}"
    );
    assert_eq!(
        opted_out_events(&api).len(),
        2,
        "no Event for a covered policy"
    );
    drop(controller);
    let _ = std::fs::remove_dir_all(&dir);
}
