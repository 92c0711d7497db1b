//! The CRDs in `manifests/crds/` are exactly what `weir-controller crds` prints, so what a
//! cluster installs always matches the types the code reads.

#[test]
fn the_committed_crds_are_the_generated_ones() {
    let generated = weir_controller::crds_yaml().expect("CRDs serialize");
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../manifests/crds/weir.dev.yaml"
    );
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        generated == committed,
        "manifests/crds/weir.dev.yaml is stale; regenerate it with\n  \
         cargo run -q -p weir-controller -- crds > manifests/crds/weir.dev.yaml"
    );
}

#[test]
fn the_schema_carries_the_validation_the_apiserver_can_do() {
    let yaml = weir_controller::crds_yaml().expect("CRDs serialize");
    for expected in [
        "name: trafficpolicies.weir.dev",
        "minItems: 1",
        "pattern: ^([0-9]{1,5}(h|m|s|ms)){1,4}$",
        "x-kubernetes-validations",
        "self.targetRefs.all(t, t.group == '' && t.kind == 'Service')",
        "duration(self.max) >= duration(self.base)",
        "subresources:",
        "name: Accepted",
    ] {
        assert!(yaml.contains(expected), "{expected:?} missing from the CRD");
    }
}
