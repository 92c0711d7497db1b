use crate::load::load_str;

use super::*;

const BASE: &str = "
apiVersion: v1
kind: Service
metadata: {name: app, namespace: shop}
spec: {ports: [{port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: shop}
spec:
  gatewayClassName: weir
  listeners: [{name: web, protocol: HTTP, port: 80}]
";

fn route(name: &str, path_type: &str) -> String {
    format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: shop}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{path: {{type: {path_type}, value: /{name}}}}}]
    backendRefs: [{{name: app, port: 80}}]
"
    )
}

fn load(files: &[(&str, String)]) -> (Objects, Vec<ConfigError>) {
    let mut objects = Objects::new();
    let mut errors = Vec::new();
    for (file, text) in files {
        load_str(text, file, &mut objects, &mut errors);
    }
    (objects, errors)
}

fn paths(snapshot: &Snapshot) -> Vec<String> {
    let mut names: Vec<String> = snapshot.routes.iter().map(|r| r.name.to_string()).collect();
    names.sort();
    names
}

#[test]
fn a_bad_object_keeps_its_last_good_version_and_the_rest_applies() {
    let mut compiler = Compiler::default();
    let (objects, errors) = load(&[("a.yaml", format!("{BASE}{}", route("a", "PathPrefix")))]);
    let first = compiler.compile(objects, errors).unwrap();
    assert_eq!(paths(&first.snapshot), ["httproute:shop/a:0"]);
    assert!(first.rejected.is_empty());

    // Route a breaks (a regex that does not compile) while route b is added.
    let broken = route("a", "RegularExpression").replace("value: /a", "value: '/a('");
    let (objects, errors) = load(&[("a.yaml", format!("{BASE}{broken}{}", route("b", "Exact")))]);
    let second = compiler.compile(objects, errors).unwrap();
    assert_eq!(
        paths(&second.snapshot),
        ["httproute:shop/a:0", "httproute:shop/b:0"],
        "b applies and a keeps serving"
    );
    assert_eq!(second.rejected.len(), 1);
    let rejection = &second.rejected[0];
    assert_eq!(rejection.object, "HTTPRoute shop/a");
    assert_eq!(rejection.serving, "previous");
    assert!(
        rejection.errors[0]
            .field
            .contains("spec.rules[0].matches[0].path"),
        "{:?}",
        rejection.errors
    );

    // A new object that was never good is simply left out.
    let never = route("c", "RegularExpression").replace("value: /c", "value: '/c('");
    let (objects, errors) = load(&[(
        "a.yaml",
        format!(
            "{BASE}{}{}{never}",
            route("a", "PathPrefix"),
            route("b", "Exact")
        ),
    )]);
    let third = compiler.compile(objects, errors).unwrap();
    assert_eq!(
        paths(&third.snapshot),
        ["httproute:shop/a:0", "httproute:shop/b:0"]
    );
    assert_eq!(third.rejected[0].object, "HTTPRoute shop/c");
    assert_eq!(third.rejected[0].serving, "none");
}

#[test]
fn a_file_that_does_not_parse_keeps_its_objects() {
    let mut compiler = Compiler::default();
    let files = [
        ("base.yaml", BASE.to_string()),
        ("a.yaml", route("a", "PathPrefix")),
    ];
    let (objects, errors) = load(&files);
    compiler.compile(objects, errors).unwrap();

    let files = [
        ("base.yaml", BASE.to_string()),
        ("a.yaml", "kind: [unclosed".to_string()),
    ];
    let (objects, errors) = load(&files);
    let compiled = compiler.compile(objects, errors).unwrap();
    assert_eq!(paths(&compiled.snapshot), ["httproute:shop/a:0"]);
    assert!(compiled.rejected[0].errors[0]
        .message
        .contains("invalid YAML"));
}

/// An object defined in a second file (a tenant's `00-takeover.yaml` naming another's route):
/// neither copy serves; the last good version does, and nothing else of either file changes.
#[test]
fn an_object_defined_twice_serves_neither_copy_but_its_last_good_version() {
    let mut compiler = Compiler::default();
    let files = [
        ("base.yaml", BASE.to_string()),
        ("team.yaml", route("a", "PathPrefix")),
    ];
    let (objects, errors) = load(&files);
    compiler.compile(objects, errors).unwrap();

    let takeover = route("a", "Exact").replace("value: /a", "value: /stolen");
    let files = [
        (
            "00-takeover.yaml",
            format!("{takeover}{}", route("b", "Exact")),
        ),
        ("base.yaml", BASE.to_string()),
        ("team.yaml", route("a", "PathPrefix")),
    ];
    let (objects, errors) = load(&files);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let compiled = compiler.compile(objects, errors).unwrap();
    assert_eq!(
        paths(&compiled.snapshot),
        ["httproute:shop/a:0", "httproute:shop/b:0"]
    );
    let a = compiled
        .snapshot
        .routes
        .iter()
        .find(|r| r.name.as_ref() == "httproute:shop/a:0")
        .unwrap();
    assert!(
        format!("{:?}", a.matcher.path).contains("/a"),
        "the last good version, not the takeover: {:?}",
        a.matcher.path
    );
    assert_eq!(compiled.rejected[0].object, "HTTPRoute shop/a");
    assert_eq!(compiled.rejected[0].serving, "previous");
}

/// A directory that cannot be read says nothing about its objects: the change is refused
/// whole (the last good configuration keeps serving), never compiled as an empty one.
#[test]
fn an_unreadable_directory_refuses_the_change_instead_of_emptying_the_configuration() {
    let mut compiler = Compiler::default();
    let (objects, errors) = load(&[("a.yaml", format!("{BASE}{}", route("a", "PathPrefix")))]);
    compiler.compile(objects, errors).unwrap();
    let dir = std::env::temp_dir();
    let unreadable = ConfigError::new(
        &crate::Location {
            file: Some(dir.display().to_string()),
            document: None,
        },
        "-",
        "-",
        "cannot read directory: permission denied",
    );
    assert!(compiler.compile(Objects::new(), vec![unreadable]).is_err());
}

/// A directory that is gone (deleted, a volume unmounted) is read as unreadable too: the
/// change is refused, not compiled as an empty configuration.
#[test]
fn a_deleted_directory_refuses_the_change() {
    let mut compiler = Compiler::default();
    let (objects, errors) = load(&[("a.yaml", format!("{BASE}{}", route("a", "PathPrefix")))]);
    compiler.compile(objects, errors).unwrap();
    let gone = std::env::temp_dir().join(format!("weir-gone-{}", std::process::id()));
    let (objects, errors) = crate::load::load_dir_partial(&gone);
    assert!(compiler.compile(objects, errors).is_err());
}
