//! GRPCRoute as the HTTPRoute it amounts to: a gRPC call is an HTTP/2 POST to
//! `/package.Service/Method`, so a method match is a path match, and hostnames, header matches,
//! filters, weighted backends and parents mean what they mean on an HTTPRoute. The route is
//! then compiled by the HTTPRoute code (named `grpcroute:ns/name:rule`); its backends are
//! spoken to over HTTP/2, as gRPC needs.
//!
//! | GRPCRoute `method` match          | HTTPRoute `path` match                       |
//! |-----------------------------------|----------------------------------------------|
//! | none                              | none (every path)                            |
//! | `Exact`, service and method       | `Exact` `/service/method`                    |
//! | `Exact`, service                  | `PathPrefix` `/service`                      |
//! | `Exact`, method                   | `RegularExpression` `/[^/]+/method` (quoted) |
//! | `RegularExpression`               | `RegularExpression` `/(service)/(method)`, a missing part `[^/]+` |

use serde_json::{json, Value};

use gateway_api::apis::experimental::grpcroutes::GrpcRoute;

use super::HttpRoute;

/// The HTTPRoute `route` amounts to, or the field that cannot be one and why.
pub(super) fn as_http_route(route: &GrpcRoute) -> Result<HttpRoute, (String, String)> {
    let spec = serde_json::to_value(&route.spec).map_err(|e| ("spec".into(), e.to_string()))?;
    let mut rules = Vec::new();
    for (r, rule) in spec["rules"].as_array().into_iter().flatten().enumerate() {
        let mut rule = rule.clone();
        if let Some(matches) = rule.get_mut("matches").and_then(Value::as_array_mut) {
            for (m, matcher) in matches.iter_mut().enumerate() {
                let field = format!("spec.rules[{r}].matches[{m}].method");
                let path = method_path(&matcher["method"]).map_err(|e| (field, e))?;
                let object = matcher.as_object_mut().expect("a match is an object");
                object.remove("method");
                if let Some(path) = path {
                    object.insert("path".into(), path);
                }
            }
        }
        rules.push(rule);
    }
    let mut http = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": serde_json::to_value(&route.metadata).unwrap_or_default(),
        "spec": {"rules": rules},
    });
    for field in ["parentRefs", "hostnames"] {
        if !spec[field].is_null() {
            http["spec"][field] = spec[field].clone();
        }
    }
    serde_json::from_value(http).map_err(|e| ("spec".into(), e.to_string()))
}

/// The path match a method match amounts to (see the module's table).
fn method_path(method: &Value) -> Result<Option<Value>, String> {
    if method.is_null() {
        return Ok(None);
    }
    let service = method["service"].as_str().filter(|s| !s.is_empty());
    let name = method["method"].as_str().filter(|s| !s.is_empty());
    let regex = match method["type"].as_str().unwrap_or("Exact") {
        "Exact" => false,
        "RegularExpression" => true,
        other => return Err(format!("type {other:?} is not Exact or RegularExpression")),
    };
    for part in [service, name].into_iter().flatten() {
        if part.contains('/') {
            return Err(format!("{part:?}: a service or method name has no `/`"));
        }
        // Each expression whole on its own, so that one cannot close the group it is put in
        // and match paths outside its service (`.*)|(.*`).
        if regex && regex::Regex::new(part).is_err() {
            return Err(format!("{part:?} is not a regular expression on its own"));
        }
    }
    let (kind, value) = match (regex, service, name) {
        (_, None, None) => return Err("names neither service nor method".into()),
        (false, Some(s), Some(m)) => ("Exact", format!("/{s}/{m}")),
        (false, Some(s), None) => ("PathPrefix", format!("/{s}")),
        (false, None, Some(m)) => ("RegularExpression", format!("/[^/]+/{}", escape(m))),
        (true, s, m) => (
            "RegularExpression",
            format!("/({})/({})", s.unwrap_or("[^/]+"), m.unwrap_or("[^/]+")),
        ),
    };
    Ok(Some(json!({"type": kind, "value": value})))
}

/// `text` as a regular expression matching it literally.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(method: Value) -> Value {
        method_path(&method).unwrap().unwrap_or(Value::Null)
    }

    #[test]
    fn method_matches_become_the_paths_grpc_calls_use() {
        assert_eq!(
            path(json!({"service": "grpc.Echo", "method": "Say"})),
            json!({"type": "Exact", "value": "/grpc.Echo/Say"})
        );
        assert_eq!(
            path(json!({"service": "grpc.Echo"})),
            json!({"type": "PathPrefix", "value": "/grpc.Echo"})
        );
        assert_eq!(
            path(json!({"method": "Say.It"})),
            json!({"type": "RegularExpression", "value": "/[^/]+/Say\\.It"})
        );
        assert_eq!(
            path(json!({"type": "RegularExpression", "service": "grpc\\..*", "method": "S.*"})),
            json!({"type": "RegularExpression", "value": "/(grpc\\..*)/(S.*)"})
        );
        assert_eq!(
            path(json!({"type": "RegularExpression", "method": "S.*"})),
            json!({"type": "RegularExpression", "value": "/([^/]+)/(S.*)"})
        );
        assert!(method_path(&json!({})).is_err());
        assert!(method_path(&json!({"service": "a/b"})).is_err());
        // An expression cannot break out of its group to match other services' paths.
        let escape = json!({"type": "RegularExpression", "service": ".*)|(.*", "method": "x"});
        assert!(method_path(&escape).unwrap_err().contains("on its own"));
    }
}
