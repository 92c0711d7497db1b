//! Opting out of STRICT is reported, not hidden: the pods a STRICT MeshTLSPolicy governs that
//! still take plaintext (no sidecar, or inbound ports that bypass it) are listed per policy,
//! with a warning, while the annotations keep working as they did.

use super::ok;
use weir_api::model::{OptOut, StrictCoverage, Uncovered};

/// A STRICT namespace-wide policy for `shop` and its one meshed pod.
const COVERED: &str = "
apiVersion: weir.dev/v1alpha1
kind: MeshTLSPolicy
metadata: {name: default, namespace: shop}
spec: {mode: STRICT}
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: shop, annotations: {weir.dev/injected: 0.1.0}}
spec: {containers: [{name: app}]}
";

/// A pod of every kind that escapes [`COVERED`], and one that ran to completion.
const ESCAPING: &str = "
apiVersion: v1
kind: Pod
metadata: {name: legacy-0, namespace: shop, labels: {app: legacy}, annotations: {weir.dev/inject: disabled}}
spec: {containers: [{name: app}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: db-0
  namespace: shop
  annotations: {weir.dev/injected: 0.1.0, weir.dev/skip-inbound-ports: '5432, 9187'}
spec: {containers: [{name: app}]}
---
apiVersion: v1
kind: Pod
metadata: {name: plain-0, namespace: shop}
spec: {containers: [{name: app}]}
---
apiVersion: v1
kind: Pod
metadata: {name: node-agent, namespace: shop}
spec: {hostNetwork: true, containers: [{name: app}]}
---
apiVersion: v1
kind: Pod
metadata: {name: job-x, namespace: shop, annotations: {weir.dev/inject: disabled}}
spec: {containers: [{name: app}]}
status: {phase: Succeeded}
";

/// A pod nobody injected, as a document to append.
fn plain_pod(namespace: &str, name: &str) -> String {
    format!("---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec: {{containers: [{{name: app}}]}}\n")
}

/// [`COVERED`] and [`ESCAPING`].
fn shop() -> String {
    format!("{COVERED}---{ESCAPING}")
}

fn uncovered(pod: &str, reason: OptOut) -> Uncovered {
    Uncovered {
        pod: pod.into(),
        reason,
    }
}

#[test]
fn every_pod_escaping_a_strict_policy_is_named_with_why() {
    let snapshot = ok(&shop());
    assert_eq!(
        snapshot.mesh.strict,
        [StrictCoverage {
            namespace: "shop".into(),
            name: "default".into(),
            uncovered: vec![
                uncovered("shop/db-0", OptOut::SkipInboundPorts(vec![5432, 9187])),
                uncovered("shop/legacy-0", OptOut::InjectDisabled),
                uncovered("shop/node-agent", OptOut::HostNetwork),
                uncovered("shop/plain-0", OptOut::NoSidecar),
            ],
        }]
    );
    let warnings: Vec<&String> = snapshot
        .warnings
        .iter()
        .filter(|w| w.contains("STRICT"))
        .collect();
    assert_eq!(
        warnings,
        [
            "MeshTLSPolicy shop/default (STRICT) does not cover 4 pods: \
          shop/db-0 (weir.dev/skip-inbound-ports: 5432,9187), \
          shop/legacy-0 (weir.dev/inject: disabled), \
          shop/node-agent (hostNetwork: no sidecar), \
          shop/plain-0 (no sidecar)"
        ]
    );
    // Reporting changes nothing a sidecar is sent: the meshed pods are still STRICT.
    assert_eq!(
        snapshot.mesh.inbound("shop", "db-0").mode,
        weir_api::model::TlsMode::Strict
    );
}

/// [`shop()`] plus a MeshTLSPolicy `shop/legacy` of this mode for the pods labelled
/// `app: legacy`.
fn with_legacy_policy(mode: &str) -> weir_api::Snapshot {
    ok(&format!(
        "{}---\napiVersion: weir.dev/v1alpha1\nkind: MeshTLSPolicy\nmetadata: {{name: legacy, namespace: shop}}\nspec: {{selector: {{matchLabels: {{app: legacy}}}}, mode: {mode}}}\n",
        shop()
    ))
}

#[test]
fn a_pod_governed_by_a_more_specific_permissive_policy_does_not_escape() {
    let snapshot = with_legacy_policy("PERMISSIVE");
    assert_eq!(snapshot.mesh.strict.len(), 1, "only STRICT policies");
    let pods: Vec<&str> = snapshot.mesh.strict[0]
        .uncovered
        .iter()
        .map(|u| u.pod.as_str())
        .collect();
    assert_eq!(pods, ["shop/db-0", "shop/node-agent", "shop/plain-0"]);
}

#[test]
fn a_pod_is_counted_against_the_strict_policy_that_governs_it() {
    let snapshot = with_legacy_policy("STRICT");
    let by_policy: Vec<(String, usize)> = snapshot
        .mesh
        .strict
        .iter()
        .map(|c| (c.policy(), c.uncovered.len()))
        .collect();
    assert_eq!(
        by_policy,
        [
            ("shop/default".to_string(), 3),
            ("shop/legacy".to_string(), 1)
        ]
    );
    assert!(snapshot
        .warnings
        .contains(&"MeshTLSPolicy shop/legacy (STRICT) does not cover 1 pod: shop/legacy-0 (weir.dev/inject: disabled)".to_string()));
}

#[test]
fn a_fully_meshed_namespace_is_covered_and_other_modes_and_namespaces_are_not_reported() {
    let yaml = format!(
        "{COVERED}---\napiVersion: weir.dev/v1alpha1\nkind: MeshTLSPolicy\nmetadata: {{name: default, namespace: blog}}\nspec: {{mode: PERMISSIVE}}\n{}{}",
        plain_pod("blog", "plain-0"),
        plain_pod("other", "plain-0")
    );
    let snapshot = ok(&yaml);
    assert_eq!(snapshot.mesh.strict.len(), 1);
    assert_eq!(snapshot.mesh.strict[0].policy(), "shop/default");
    assert!(snapshot.mesh.strict[0].uncovered.is_empty());
    assert!(
        !snapshot.warnings.iter().any(|w| w.contains("STRICT")),
        "{:?}",
        snapshot.warnings
    );
}

#[test]
fn a_long_list_names_ten_pods_and_counts_the_rest() {
    let mut yaml = COVERED.to_string();
    for i in 0..12 {
        yaml.push_str(&plain_pod("shop", &format!("p-{i:02}")));
    }
    let snapshot = ok(&yaml);
    let summary = snapshot.mesh.strict[0].summary();
    assert!(
        summary.starts_with("12 pods: shop/p-00 (no sidecar), "),
        "{summary}"
    );
    assert!(
        summary.ends_with("shop/p-09 (no sidecar) and 2 more"),
        "{summary}"
    );
}
