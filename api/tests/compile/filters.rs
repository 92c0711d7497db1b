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
    let errs = errors(&route("  - filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Magic, name: m}}]\n    backendRefs: [{name: app, port: 80}]\n"));
    assert!(
        errs[0].contains("spec.rules[0].filters[0].type") && errs[0].contains("ExtensionRef"),
        "{errs:?}"
    );
}

/// A CORS filter is compiled with every value checked: a policy that would read differently
/// than written (an origin with a path, a wildcard in the middle of a host, a scheme browsers
/// never send, a method or header name HTTP has not) is refused, naming the field.
#[test]
fn a_cors_filter_compiles_and_its_bad_values_are_refused_by_field() {
    let cors = |policy: &str| {
        route(&format!(
            "  - filters: [{{type: CORS, cors: {policy}}}]\n    backendRefs: [{{name: app, port: 80}}]\n"
        ))
    };
    let snapshot = ok(&cors("{allowOrigins: ['https://www.foo.com', 'https://*.bar.com:8443', '*'], allowMethods: [GET, '*'], allowHeaders: [X-One], exposeHeaders: ['*'], allowCredentials: true, maxAge: 60}"));
    let json = serde_json::to_value(&snapshot.routes[0].action).unwrap();
    let policy = &json["forward"]["filters"][0]["cors"];
    assert_eq!(policy["anyOrigin"], true, "{json}");
    assert_eq!(
        policy["origins"],
        serde_json::json!([
            {"scheme": "https", "host": "www.foo.com", "port": 443},
            {"scheme": "https", "host": "*.bar.com", "port": 8443},
        ])
    );
    assert_eq!(policy["methods"], serde_json::json!(["GET"]));
    assert_eq!(policy["anyMethod"], true);
    assert_eq!(policy["headers"], serde_json::json!(["x-one"]));
    assert_eq!(policy["exposeAny"], true);
    assert_eq!(policy["credentials"], true);
    assert_eq!(policy["maxAge"], 60);
    // maxAge defaults to 5, as the spec says.
    let json = serde_json::to_value(&ok(&cors("{allowOrigins: ['*']}")).routes[0].action).unwrap();
    assert_eq!(json["forward"]["filters"][0]["cors"]["maxAge"], 5);

    for (policy, field, why) in [
        (
            "{allowOrigins: ['https://www.foo.com/']}",
            "cors.allowOrigins[0]",
            "no path",
        ),
        (
            "{allowOrigins: ['ftp://www.foo.com']}",
            "cors.allowOrigins[0]",
            "http or https",
        ),
        (
            "{allowOrigins: ['www.foo.com']}",
            "cors.allowOrigins[0]",
            "scheme://host",
        ),
        (
            "{allowOrigins: ['https://a.*.foo.com']}",
            "cors.allowOrigins[0]",
            "host name",
        ),
        (
            "{allowOrigins: ['https://*foo.com']}",
            "cors.allowOrigins[0]",
            "whole labels",
        ),
        (
            "{allowOrigins: ['https://www.foo.com:0']}",
            "cors.allowOrigins[0]",
            "1 to 65535",
        ),
        (
            "{allowOrigins: ['*', 'https://u@www.foo.com']}",
            "cors.allowOrigins[1]",
            "user",
        ),
        (
            "{allowMethods: ['GE T']}",
            "cors.allowMethods[0]",
            "not an HTTP method",
        ),
        (
            "{allowHeaders: ['x one']}",
            "cors.allowHeaders[0]",
            "not a header name",
        ),
        (
            "{exposeHeaders: ['a:b']}",
            "cors.exposeHeaders[0]",
            "not a header name",
        ),
        ("{maxAge: -1}", "cors.maxAge", "negative"),
    ] {
        let errs = errors(&cors(policy));
        assert!(
            errs[0].contains(&format!("spec.rules[0].filters[0].{field}")) && errs[0].contains(why),
            "{policy}: {errs:?}"
        );
    }
    // One CORS filter a rule; none beside a redirect (which answers before it could act).
    let errs = errors(&route("  - filters: [{type: CORS, cors: {allowOrigins: ['*']}}, {type: CORS, cors: {allowOrigins: ['*']}}]\n    backendRefs: [{name: app, port: 80}]\n"));
    assert!(
        errs[0].contains("filters[1]") && errs[0].contains("one CORS"),
        "{errs:?}"
    );
    let errs = errors(&route("  - filters: [{type: CORS, cors: {allowOrigins: ['*']}}, {type: RequestRedirect, requestRedirect: {hostname: a.example}}]\n"));
    assert!(errs[0].contains("RequestRedirect"), "{errs:?}");
}
