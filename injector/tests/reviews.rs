//! AdmissionReviews shaped exactly as the API server sends them (a Deployment's pod: a
//! generateName, no name, two containers, an existing init container, probes on a named and
//! a numbered port), answered by the injector: the patch applies to the pod as sent, the
//! result reads as a k8s-openapi Pod, and it matches the reviewed golden file.
//!
//! `UPDATE_GOLDEN=1 cargo test -p weir-injector` rewrites the golden file; review the diff.

use base64::Engine;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};
use weir_injector::{config::Config, inject::NamespaceDefault, review};

fn deployment_review() -> Value {
    serde_json::from_str(include_str!("reviews/deployment.json")).unwrap()
}

fn answer(review: &Value, default: NamespaceDefault) -> Value {
    review::answer(
        &Config::default(),
        &serde_json::to_vec(review).unwrap(),
        default,
    )
}

/// The pod with the answer's patch applied, or `None` when the answer has no patch.
fn patched(review: &Value, answer: &Value) -> Option<Value> {
    let response = &answer["response"];
    assert_eq!(response["uid"], review["request"]["uid"], "{answer}");
    assert_eq!(response["allowed"], true, "{answer}");
    let patch = response["patch"].as_str()?;
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).expect("the patch applies to the pod as sent");
    Some(pod)
}

#[test]
fn a_deployments_pod_gets_the_sidecar_and_matches_the_golden_file() {
    let review = deployment_review();
    let answer = answer(&review, NamespaceDefault::Enabled);
    let pod = patched(&review, &answer).expect("a patch");
    let typed: Pod = serde_json::from_value(pod.clone()).expect("still a Pod");

    let spec = typed.spec.as_ref().unwrap();
    let init: Vec<_> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(init, ["weir-init", "weir-sidecar", "migrate"]);
    let sidecar = &spec.init_containers.as_ref().unwrap()[1];
    assert_eq!(
        sidecar.restart_policy.as_deref(),
        Some("Always"),
        "a native sidecar"
    );
    // The kubelet holds the app containers until this passes: the sidecar's /readyz, which
    // waits for a workload certificate and the first configuration.
    let startup = sidecar.startup_probe.as_ref().expect("a startupProbe");
    let get = startup.http_get.as_ref().unwrap();
    assert_eq!(get.path.as_deref(), Some("/readyz"));
    assert_eq!(
        get.port,
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(15020)
    );
    assert!(startup.failure_threshold.unwrap() * startup.period_seconds.unwrap() >= 300);
    let limits = sidecar.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert_eq!(
        limits["memory"].0, "256Mi",
        "the annotation overrides the config"
    );
    let app = &spec.containers[0];
    let liveness = app
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(liveness.path.as_deref(), Some("/app-health/app/livez"));
    let probes_env = sidecar
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "WEIR_APP_PROBES")
        .and_then(|e| e.value.clone())
        .unwrap();
    let probes: Value = serde_json::from_str(&probes_env).unwrap();
    assert_eq!(
        probes["/app-health/app/livez"]["port"], 8080,
        "named port resolved"
    );
    assert_eq!(
        probes["/app-health/app/readyz"]["httpHeaders"][0]["name"],
        "X-Probe"
    );
    let init_args = &spec.init_containers.as_ref().unwrap()[0].args;
    assert!(
        init_args
            .iter()
            .flatten()
            .collect::<Vec<_>>()
            .windows(2)
            .any(|w| w[0] == "--exclude-outbound-ports" && w[1] == "5432,6379"),
        "{init_args:?}"
    );
    // Fields of the pod the injector does not touch are exactly as sent.
    assert_eq!(
        pod["spec"]["tolerations"],
        review["request"]["object"]["spec"]["tolerations"]
    );
    assert_eq!(
        pod["metadata"]["annotations"]["weir.dev/injected"],
        env!("CARGO_PKG_VERSION")
    );

    let golden =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/deployment-pod.json");
    let rendered = serde_json::to_string_pretty(&pod).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(
            &golden,
            rendered.replace(env!("CARGO_PKG_VERSION"), "@VERSION@"),
        )
        .unwrap();
    }
    let expected =
        std::fs::read_to_string(&golden).expect("golden file (UPDATE_GOLDEN=1 writes it)");
    assert_eq!(
        rendered,
        expected.replace("@VERSION@", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn an_injected_pod_is_left_as_it_is() {
    let review = deployment_review();
    let once = patched(&review, &answer(&review, NamespaceDefault::Enabled)).unwrap();
    let mut again = review.clone();
    again["request"]["object"] = once;
    assert_eq!(
        patched(&again, &answer(&again, NamespaceDefault::Enabled)),
        None
    );
}

#[test]
fn pods_that_are_not_for_the_mesh_are_not_touched() {
    let cases: [(&str, Value, NamespaceDefault); 3] = [
        (
            "hostNetwork",
            json!({"spec": {"hostNetwork": true}}),
            NamespaceDefault::Enabled,
        ),
        (
            "opted out",
            json!({"metadata": {"annotations": {"weir.dev/inject": "disabled"}}}),
            NamespaceDefault::Enabled,
        ),
        (
            "namespace not enabled",
            json!({}),
            NamespaceDefault::Disabled,
        ),
    ];
    for (what, change, default) in cases {
        let mut review = deployment_review();
        json_patch::merge(&mut review["request"]["object"], &change);
        assert_eq!(patched(&review, &answer(&review, default)), None, "{what}");
    }
    // Opting in where the namespace does not.
    let mut review = deployment_review();
    json_patch::merge(
        &mut review["request"]["object"],
        &json!({"metadata": {"annotations": {"weir.dev/inject": "enabled"}}}),
    );
    assert!(patched(&review, &answer(&review, NamespaceDefault::Disabled)).is_some());
}

#[test]
fn bad_annotations_refuse_the_pod_with_a_reason() {
    // Found by the fuzzer: a pod without metadata got a patch that could not apply.
    let mut review = deployment_review();
    review["request"]["object"]
        .as_object_mut()
        .unwrap()
        .remove("metadata");
    let refused = answer(&review, NamespaceDefault::Enabled);
    assert_eq!(refused["response"]["allowed"], false, "{refused}");
    assert!(refused["response"]["patch"].is_null());

    for (annotation, value, expected) in [
        (
            "weir.dev/proxy-cpu-limit",
            "lots",
            "weir.dev/proxy-cpu-limit: \"lots\" is not a Kubernetes quantity",
        ),
        (
            "weir.dev/skip-inbound-ports",
            "22,70000",
            "weir.dev/skip-inbound-ports: \"70000\" is not a port",
        ),
        (
            "weir.dev/inject",
            "yes",
            "weir.dev/inject: \"yes\" is neither enabled nor disabled",
        ),
    ] {
        let mut review = deployment_review();
        review["request"]["object"]["metadata"]["annotations"][annotation] = json!(value);
        let answer = answer(&review, NamespaceDefault::Enabled);
        assert_eq!(answer["response"]["allowed"], false, "{answer}");
        let message = answer["response"]["status"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{message}");
        assert!(answer["response"]["patch"].is_null());
    }
}

#[test]
fn malformed_reviews_get_an_answer_that_says_what_was_wrong() {
    for (body, expected) in [
        (b"not json".to_vec(), "the body is not JSON"),
        (
            br#"{"kind": "AdmissionReview"}"#.to_vec(),
            "not an admission.k8s.io/v1 AdmissionReview",
        ),
        (
            br#"{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"}"#.to_vec(),
            "has no request",
        ),
    ] {
        let answer = review::answer(&Config::default(), &body, NamespaceDefault::Enabled);
        assert_eq!(answer["kind"], "AdmissionReview", "{answer}");
        assert_eq!(answer["response"]["allowed"], false, "{answer}");
        let message = answer["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(message.contains(expected), "{expected:?} in {answer}");
    }
    // A review of something else passes untouched.
    let mut review = deployment_review();
    review["request"]["operation"] = json!("UPDATE");
    assert_eq!(
        patched(&review, &answer(&review, NamespaceDefault::Enabled)),
        None
    );
}

#[test]
fn an_older_cluster_gets_the_sidecar_as_a_regular_container() {
    let config = Config {
        native_sidecar: false,
        ..Config::default()
    };
    let review = deployment_review();
    let answer = review::answer(
        &config,
        &serde_json::to_vec(&review).unwrap(),
        NamespaceDefault::Enabled,
    );
    let pod: Pod = serde_json::from_value(patched(&review, &answer).unwrap()).unwrap();
    let spec = pod.spec.unwrap();
    let names: Vec<_> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["app", "metrics", "weir-sidecar"]);
    assert!(spec.containers[2].restart_policy.is_none());
}

#[test]
fn sidecars_export_spans_where_the_config_says() {
    let config = Config {
        otlp_endpoint: "http://otel-collector.observability:4318".into(),
        trace_sampling: "0.05".into(),
        ..Config::default()
    };
    let review = deployment_review();
    let body = serde_json::to_vec(&review).unwrap();
    let env_of = |config: &Config| {
        let answer = review::answer(config, &body, NamespaceDefault::Enabled);
        let pod: Pod = serde_json::from_value(patched(&review, &answer).unwrap()).unwrap();
        let spec = pod.spec.unwrap();
        let sidecar = spec
            .init_containers
            .iter()
            .flatten()
            .find(|c| c.name == "weir-sidecar")
            .cloned()
            .unwrap();
        sidecar.env.unwrap_or_default()
    };
    let env = env_of(&config);
    let value = |name: &str| env.iter().find(|e| e.name == name)?.value.clone();
    let endpoint = value("WEIR_OTLP_ENDPOINT");
    assert_eq!(
        endpoint.as_deref(),
        Some("http://otel-collector.observability:4318")
    );
    assert_eq!(value("WEIR_TRACE_SAMPLING").as_deref(), Some("0.05"));
    let none = env_of(&Config::default());
    assert!(!none.iter().any(|e| e.name.starts_with("WEIR_OTLP")));
}

#[test]
fn a_bad_tracing_config_is_refused_naming_the_field() {
    let dir = std::env::temp_dir().join(format!("weir-injector-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (yaml, field) in [
        ("otlpEndpoint: collector:4318\n", "otlpEndpoint"),
        ("traceSampling: \"1.5\"\n", "traceSampling"),
    ] {
        let file = dir.join("config.yaml");
        std::fs::write(&file, yaml).unwrap();
        let error = format!("{:#}", Config::load(&file).unwrap_err());
        assert!(error.contains(field), "{error}");
    }
}
