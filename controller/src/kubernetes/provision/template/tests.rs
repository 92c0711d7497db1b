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
    let d = deployment(&template, "weir-system", "shop/web").unwrap();
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
    // The admin port stays (the probes name it); the shared gateway's traffic ports go.
    let ports: Vec<(Option<String>, i32)> = container(&d)
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone(), p.container_port))
        .collect();
    assert_eq!(ports, [(Some("admin".into()), 9901)]);
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
    let d = deployment(&template, "weir-system", "shop/web").unwrap();
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
    assert!(deployment(&template, "weir-system", "shop/web").is_none());
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
fn the_digest_changes_with_what_is_written_and_not_with_the_replica_count() {
    let mut template: Deployment = install("Deployment");
    let a = deployment(&template, "weir-system", "shop/web").unwrap();
    let again = deployment(&template, "weir-system", "shop/web").unwrap();
    assert_eq!(digest_of(&a.metadata), digest_of(&again.metadata));
    assert!(digest_of(&a.metadata).is_some());
    // The shared gateway's autoscaler changes its replicas: no Gateway's deployment is
    // written again for it (and a new one starts with the template's count).
    template.spec.as_mut().unwrap().replicas = Some(7);
    let scaled = deployment(&template, "weir-system", "shop/web").unwrap();
    assert_eq!(digest_of(&a.metadata), digest_of(&scaled.metadata));
    assert_eq!(scaled.spec.as_ref().unwrap().replicas, Some(7));
    pod_of(&mut template).containers[0].image = Some("weir:next".into());
    let upgraded = deployment(&template, "weir-system", "shop/web").unwrap();
    assert_ne!(digest_of(&a.metadata), digest_of(&upgraded.metadata));
    // Services: a port more is a change.
    let one = service(None, "weir-system", "shop/web", &[80]).unwrap();
    let two = service(None, "weir-system", "shop/web", &[80, 8080]).unwrap();
    assert_ne!(digest_of(&one.metadata), digest_of(&two.metadata));
}

#[test]
fn the_admin_port_is_reserved_and_a_service_has_at_most_max_ports() {
    let template: Deployment = install("Deployment");
    let reserved = reserved_ports(&template);
    assert!(reserved.contains(&9901), "{reserved:?}");
    let listeners: Vec<u16> = (9000..9200).collect();
    let ports = service_ports(&listeners, &reserved);
    assert_eq!(ports.len(), MAX_PORTS);
    assert!(!ports.contains(&9901));
    assert_eq!(service_ports(&[80, 9901, 443], &reserved), [80, 443]);
}

#[test]
fn an_ipv6_template_listens_on_ipv6() {
    let mut template: Deployment = install("Deployment");
    for arg in pod_of(&mut template).containers[0]
        .args
        .iter_mut()
        .flatten()
    {
        if arg.starts_with("--listen=") {
            *arg = "--listen=[::]:8080".into();
        }
    }
    let d = deployment(&template, "weir-system", "shop/web").unwrap();
    let args = container(&d).args.clone().unwrap();
    assert!(args.contains(&"--listen=[::]:80".to_string()), "{args:?}");
    assert!(
        args.contains(&"--listen-tls=[::]:443".to_string()),
        "{args:?}"
    );
}

#[test]
fn the_service_keeps_the_templates_restrictions_but_not_its_names_or_addresses() {
    let mut template: Service = install("Service");
    let spec = template.spec.as_mut().unwrap();
    spec.load_balancer_source_ranges = Some(vec!["203.0.113.0/24".into()]);
    spec.internal_traffic_policy = Some("Local".into());
    let annotation = |k: &str, v: &str| (k.to_string(), v.to_string());
    template.metadata.annotations = Some(BTreeMap::from([
        annotation(
            "service.beta.kubernetes.io/aws-load-balancer-scheme",
            "internal",
        ),
        annotation(
            "service.beta.kubernetes.io/aws-load-balancer-eip-allocations",
            "eipalloc-1",
        ),
        annotation("metallb.universe.tf/loadBalancerIPs", "192.0.2.10"),
        annotation(
            "external-dns.alpha.kubernetes.io/hostname",
            "shop.example.com",
        ),
        annotation("kubectl.kubernetes.io/last-applied-configuration", "{}"),
    ]));
    let s = service(Some(&template), "weir-system", "team/gw", &[80]).unwrap();
    let spec = s.spec.as_ref().unwrap();
    assert_eq!(
        spec.load_balancer_source_ranges,
        Some(vec!["203.0.113.0/24".into()])
    );
    assert_eq!(spec.internal_traffic_policy.as_deref(), Some("Local"));
    let annotations = s.metadata.annotations.clone().unwrap();
    assert_eq!(
        annotations["service.beta.kubernetes.io/aws-load-balancer-scheme"],
        "internal"
    );
    for gone in [
        "service.beta.kubernetes.io/aws-load-balancer-eip-allocations",
        "metallb.universe.tf/loadBalancerIPs",
        "external-dns.alpha.kubernetes.io/hostname",
        "kubectl.kubernetes.io/last-applied-configuration",
    ] {
        assert!(!annotations.contains_key(gone), "{gone}");
    }
    assert_eq!(gateway_of(&s.metadata), Some("team/gw"));
}
