//! `weirctl analyze DIR`: every error (a refused object) and warning (a reference that does not
//! resolve, a route attached nowhere, a rule another route shadows) with file, object and
//! field; the exit status a CI job can gate on.

use std::process::Command;

use weir_e2e::{binary, gateway, http_route, service, ConfigDir, Echo};

/// Runs `weirctl analyze DIR` with `extra`: exit code and stdout.
fn analyze(dir: &ConfigDir, extra: &[&str]) -> (i32, String) {
    let out = Command::new(binary("weirctl"))
        .arg("analyze")
        .arg(&dir.path)
        .args(extra)
        .output()
        .expect("run weirctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn analyze_names_every_refusal_and_warning_with_file_object_and_field() {
    let app = Echo::start("app");
    let bad = http_route(
        "bad",
        &["bad.example.com"],
        "  - matches: [{path: {type: RegularExpression, value: \"/(unclosed\"}}]\n    backendRefs: [{name: app, port: 80}]\n",
    );
    let dangling = http_route(
        "dangling",
        &["d.example.com"],
        "  - backendRefs: [{name: nowhere, port: 80}]\n",
    );
    let older = http_route(
        "older",
        &["shop.example.com"],
        "  - backendRefs: [{name: app, port: 80}]\n",
    )
    .replace(
        "namespace: default}",
        "namespace: default, creationTimestamp: \"2026-01-01T00:00:00Z\"}",
    );
    let newer = http_route(
        "newer",
        &["shop.example.com"],
        "  - backendRefs: [{name: app, port: 80}]\n",
    )
    .replace(
        "namespace: default}",
        "namespace: default, creationTimestamp: \"2026-02-01T00:00:00Z\"}",
    );
    let dir = ConfigDir::new()
        .with("svc.yaml", &service("app", &[&app]))
        .with("gw.yaml", &gateway())
        .with("bad.yaml", &bad)
        .with("dangling.yaml", &dangling)
        .with("older.yaml", &older)
        .with("newer.yaml", &newer);

    let (code, text) = analyze(&dir, &[]);
    assert_eq!(code, 1, "a refused object fails the run:\n{text}");
    assert!(
        text.lines().any(|l| l.starts_with("error: ")
            && l.contains("bad.yaml")
            && l.contains("HTTPRoute default/bad")
            && l.contains("spec.rules[0].matches[0].path.value")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("warning: ")
            && l.contains("dangling.yaml")
            && l.contains("HTTPRoute default/dangling")
            && l.contains("nowhere")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("warning: ")
            && l.contains("newer.yaml")
            && l.contains("HTTPRoute default/newer")
            && l.contains("shadowed on shop.example.com")
            && l.contains("HTTPRoute default/older")),
        "{text}"
    );
    assert!(
        !text.contains("HTTPRoute default/older: spec"),
        "the older route serves:\n{text}"
    );

    let (_, json) = analyze(&dir, &["--output", "json"]);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let error = &report["errors"][0];
    assert_eq!(error["object"], "HTTPRoute default/bad");
    assert_eq!(error["field"], "spec.rules[0].matches[0].path.value");
    assert!(error["file"].as_str().unwrap().ends_with("bad.yaml"));
    assert_eq!(report["warnings"].as_array().unwrap().len(), 2, "{json}");

    // Without the refused object, warnings alone pass, unless --strict.
    std::fs::remove_file(dir.path.join("bad.yaml")).unwrap();
    assert_eq!(analyze(&dir, &[]).0, 0);
    assert_eq!(analyze(&dir, &["--strict"]).0, 1);
    std::fs::remove_file(dir.path.join("dangling.yaml")).unwrap();
    std::fs::remove_file(dir.path.join("newer.yaml")).unwrap();
    let (code, text) = analyze(&dir, &["--strict"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("no problems found"), "{text}");
}

#[test]
fn analyze_a_directory_that_cannot_be_read_exits_2() {
    let out = Command::new(binary("weirctl"))
        .args(["analyze", "/nonexistent/weir-config"])
        .output()
        .expect("run weirctl");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/weir-config"));
}
