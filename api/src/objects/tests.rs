use crate::load::load_str;

#[test]
fn secret_refs_are_the_secrets_configuration_names_and_only_those() {
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: shop}
spec:
  tls: [{hosts: [shop.example.com], secretName: shop-tls}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: weir
  listeners:
  - name: https
    protocol: HTTPS
    port: 443
    tls:
      certificateRefs: [{name: wildcard}, {name: shared, namespace: certs}]
---
apiVersion: weir.dev/v1alpha1
kind: AuthPolicy
metadata: {name: auth, namespace: shop}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]
  jwt: {providers: [{name: idp, issuer: "https://idp", jwks: {secretRef: {name: jwks}}}]}
  apiKeys: {secretRef: {name: keys}}
---
apiVersion: v1
kind: Secret
metadata: {name: unrelated, namespace: shop}
"#;
    let (mut objects, mut errors) = (super::Objects::new(), Vec::new());
    load_str(yaml, "refs.yaml", &mut objects, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    let refs: Vec<String> = objects
        .secret_refs()
        .into_iter()
        .map(|(ns, name)| format!("{ns}/{name}"))
        .collect();
    assert_eq!(
        refs,
        [
            "certs/shared",
            "infra/wildcard",
            "shop/jwks",
            "shop/keys",
            "shop/shop-tls"
        ]
    );
}
