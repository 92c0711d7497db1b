//! HTTPRoute filters the compile refuses rather than serve differently than written.

use super::{errors, ok, route};

/// A tenant's route cannot rewrite the `Host` a backend sees through a header modifier (any
/// spelling), nor stack two URLRewrites whose order would decide it: both are refused, naming
/// the filter.
#[test]
fn a_header_modifier_cannot_touch_host_and_a_rule_has_one_url_rewrite() {
    for modifier in [
        "{set: [{name: Host, value: evil.example}]}",
        "{add: [{name: host, value: evil.example}]}",
        "{remove: [HOST]}",
    ] {
        let errs = errors(&route(&format!("  - filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {modifier}}}]\n    backendRefs: [{{name: app, port: 80}}]\n")));
        assert!(
            errs[0].contains("spec.rules[0].filters[0]")
                && errs[0].contains("URLRewrite's hostname"),
            "{modifier}: {errs:?}"
        );
    }
    // The response's Host-named header is nobody's routing: allowed.
    ok(&route("  - filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: host, value: x}]}}]\n    backendRefs: [{name: app, port: 80}]\n"));
    let twice = "{type: URLRewrite, urlRewrite: {hostname: a.example}}";
    let errs = errors(&route(&format!(
        "  - filters: [{twice}, {twice}]\n    backendRefs: [{{name: app, port: 80}}]\n"
    )));
    assert!(
        errs[0].contains("spec.rules[0].filters[1]") && errs[0].contains("at most one URLRewrite"),
        "{errs:?}"
    );
}

#[test]
fn unsupported_filters_are_refused_not_ignored() {
    let errs = errors(&route("  - filters: [{type: CORS, cors: {allowOrigins: ['*']}}]\n    backendRefs: [{name: app, port: 80}]\n"));
    assert!(
        errs[0].contains("spec.rules[0].filters[0].type") && errs[0].contains("CORS"),
        "{errs:?}"
    );
}
