use super::*;

/// The install's own template: the `weir-ingress` Deployment and Service of the manifests.
fn install<T: serde::de::DeserializeOwned>(kind: &str) -> T {
    let yaml = include_str!("../../../../../manifests/ingress.yaml");
    let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(yaml).unwrap();
    let found = documents
        .into_iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == "weir-ingress")
        .unwrap();
    serde_json::from_value(found).unwrap()
}

fn pod_of(d: &mut Deployment) -> &mut k8s_openapi::api::core::v1::PodSpec {
    d.spec.as_mut().unwrap().template.spec.as_mut().unwrap()
}

fn container(d: &Deployment) -> &Container {
    &d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
}

#[test]
fn instance_names_are_dns_labels_and_tell_gateways_apart() {
    let long = "g".repeat(253);
    for (ns, name) in [
        ("default", "web"),
        ("a-b", "c"),
        ("a", "b-c"),
        ("team", &long),
        ("team", "my.gateway"),
    ] {
        let n = instance_name(ns, name);
        assert!(n.len() <= 63, "{n}");
        assert!(n.starts_with("weir-") && n.chars().last().unwrap().is_ascii_alphanumeric());
        assert!(n
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
    }
    assert_ne!(instance_name("a-b", "c"), instance_name("a", "b-c"));
    assert_eq!(
        instance_name("default", "web"),
        instance_name("default", "web")
    );
}

#[test]
fn a_gateways_deployment_serves_it_alone_on_its_own_ports() {
    let template: Deployment = install("Deployment");
    let d = deployment(&template, "weir-system", "shop/web", &[80, 443, 8080]).unwrap();
    let name = instance_name("shop", "web");
    assert_eq!(d.metadata.name.as_deref(), Some(name.as_str()));
    assert_eq!(d.metadata.namespace.as_deref(), Some("weir-system"));
    assert!(is_managed(&d.metadata));
    let spec = d.spec.as_ref().unwrap();
    let selector = spec.selector.match_labels.clone().unwrap();
    assert_eq!(
        selector,
        BTreeMap::from([(INSTANCE_LABEL.into(), name.clone())])
    );
    let pod_labels = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    assert_eq!(pod_labels[INSTANCE_LABEL], name);
    // The shared Service selects app.kubernetes.io/name=weir-ingress: not these pods.
    assert_eq!(pod_labels["app.kubernetes.io/name"], APP_NAME);
    let args = container(&d).args.clone().unwrap();
    for own in [
        "--serve=gateways",
        "--gateway=shop/web",
        "--listen=0.0.0.0:80",
    ] {
        assert_eq!(
            args.iter().filter(|a| *a == own).count(),
            1,
            "{own} in {args:?}"
        );
    }
    assert!(!args.iter().any(|a| a.starts_with("--listen=0.0.0.0:8080")));
    // The template's other flags (the controller, the token) are kept.
    assert!(args.iter().any(|a| a.starts_with("--controller=")));
    let ports: Vec<(Option<String>, i32)> = container(&d)
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone(), p.container_port))
        .collect();
    assert!(ports.contains(&(Some("admin".into()), 9901)));
    for port in [80, 443, 8080] {
        assert!(
            ports.contains(&(Some(format!("port-{port}")), port)),
            "{ports:?}"
        );
    }
    assert!(!ports.iter().any(|(n, _)| n.as_deref() == Some("http")));
    let pod = spec.template.spec.as_ref().unwrap();
    let sysctls = pod
        .security_context
        .as_ref()
        .unwrap()
        .sysctls
        .clone()
        .unwrap();
    assert!(sysctls
        .iter()
        .any(|s| s.name == UNPRIVILEGED_PORTS && s.value == "0"));
    let spread = &pod.topology_spread_constraints.as_ref().unwrap()[0];
    assert_eq!(
        spread.label_selector.as_ref().unwrap().match_labels,
        Some(selector)
    );
    // Everything else of the template stays: its account, its image, its probes.
    let t = template
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(pod.service_account_name, t.service_account_name);
    assert_eq!(container(&d).image, t.containers[0].image);
    assert_eq!(
        container(&d).readiness_probe,
        t.containers[0].readiness_probe
    );
}

#[test]
fn flags_the_template_sets_its_own_way_are_replaced() {
    let mut template: Deployment = install("Deployment");
    let pod = pod_of(&mut template);
    let c = &mut pod.containers[0];
    c.args.as_mut().unwrap().extend(
        [
            "--serve",
            "ingresses",
            "--gateway",
            "other/gw",
            "--redis=redis://r:6379",
        ]
        .map(String::from),
    );
    c.env
        .get_or_insert_with(Vec::new)
        .push(k8s_openapi::api::core::v1::EnvVar {
            name: "WEIR_GATEWAYS".into(),
            value: Some("other/gw".into()),
            ..Default::default()
        });
    let d = deployment(&template, "weir-system", "shop/web", &[80]).unwrap();
    let args = container(&d).args.clone().unwrap();
    assert!(!args
        .iter()
        .any(|a| a == "ingresses" || a == "other/gw" || a == "--serve"));
    assert!(args.contains(&"--redis=redis://r:6379".to_string()));
    assert!(!container(&d)
        .env
        .iter()
        .flatten()
        .any(|e| e.name == "WEIR_GATEWAYS"));
}

#[test]
fn a_template_without_weir_ingress_makes_nothing() {
    let mut template: Deployment = install("Deployment");
    let c = &mut pod_of(&mut template).containers[0];
    c.name = "app".into();
    c.command = Some(vec!["nginx".into()]);
    c.args = None;
    assert!(deployment(&template, "weir-system", "shop/web", &[80]).is_none());
}

#[test]
fn the_service_copies_the_templates_kind_and_maps_each_port_to_itself() {
    let template: Service = install("Service");
    let s = service(Some(&template), "weir-system", "shop/web", &[80, 9000]).unwrap();
    let spec = s.spec.as_ref().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
    let ports: Vec<(i32, Option<IntOrString>)> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| (p.port, p.target_port.clone()))
        .collect();
    assert_eq!(
        ports,
        [
            (80, Some(IntOrString::Int(80))),
            (9000, Some(IntOrString::Int(9000)))
        ]
    );
    let name = instance_name("shop", "web");
    assert_eq!(
        spec.selector,
        Some(BTreeMap::from([(INSTANCE_LABEL.into(), name)]))
    );
}

#[test]
fn the_digest_changes_with_what_is_written() {
    let template: Deployment = install("Deployment");
    let a = deployment(&template, "weir-system", "shop/web", &[80]).unwrap();
    let again = deployment(&template, "weir-system", "shop/web", &[80]).unwrap();
    let more = deployment(&template, "weir-system", "shop/web", &[80, 8080]).unwrap();
    assert_eq!(digest_of(&a.metadata), digest_of(&again.metadata));
    assert_ne!(digest_of(&a.metadata), digest_of(&more.metadata));
    assert!(digest_of(&a.metadata).is_some());
}
