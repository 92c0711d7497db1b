//! One namespace's objects never change how another namespace's traffic is verified: an
//! endpoint's identity is its cluster's, and an EndpointSlice may only name its own
//! namespace's pods.

use super::{errors, ok};

/// `shop/backend`, meshed, at 10.0.0.5:15006, plus `zzz/backend`, whose slice claims the same
/// address and names `zzz`'s own injected pod (running as `zzz/thief`).
const TWO_NAMESPACES: &str = "
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: shop}
spec: {clusterIP: 10.96.0.20, ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: backend-1, namespace: shop, labels: {kubernetes.io/service-name: backend}}
addressType: IPv4
ports: [{name: http, port: 15006}]
endpoints:
- addresses: [10.0.0.5]
  targetRef: {kind: Pod, name: backend-a, namespace: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: backend-a, namespace: shop, annotations: {weir.dev/injected: 0.1.0}}
spec: {serviceAccountName: backend, containers: [{name: app}]}
---
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: zzz}
spec: {clusterIP: 10.96.0.99, ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: backend-1, namespace: zzz, labels: {kubernetes.io/service-name: backend}}
addressType: IPv4
ports: [{name: http, port: 15006}]
endpoints:
- addresses: [10.0.0.5]
  targetRef: {kind: Pod, name: thief-0, namespace: zzz}
---
apiVersion: v1
kind: Pod
metadata: {name: thief-0, namespace: zzz, annotations: {weir.dev/injected: 0.1.0}}
spec: {serviceAccountName: thief, containers: [{name: app}]}
";

#[test]
fn an_address_claimed_by_two_namespaces_keeps_each_clusters_own_identity() {
    let snapshot = ok(TWO_NAMESPACES);
    let identity = |cluster: &str| {
        let cluster = &snapshot.mesh.clusters[cluster];
        cluster
            .identities
            .iter()
            .map(|(a, id)| (a.to_string(), id.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        identity("shop/backend:80"),
        [("10.0.0.5:15006".to_string(), "shop/backend".to_string())]
    );
    assert_eq!(
        identity("zzz/backend:80"),
        [("10.0.0.5:15006".to_string(), "zzz/thief".to_string())]
    );
}

#[test]
fn a_target_ref_into_another_namespace_refuses_the_slice() {
    let yaml = format!(
        "{TWO_NAMESPACES}---\n{}",
        "
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: borrowed, namespace: zzz, labels: {kubernetes.io/service-name: backend}}
addressType: IPv4
ports: [{name: http, port: 15006}]
endpoints:
- addresses: [10.0.0.6]
  targetRef: {kind: Pod, name: backend-a, namespace: shop}
"
    );
    let errors = errors(&yaml);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("EndpointSlice zzz/borrowed")
            && errors[0].contains("endpoints[0].targetRef.namespace")
            && errors[0].contains("\"shop\" is not the EndpointSlice's namespace \"zzz\""),
        "{}",
        errors[0]
    );
}
