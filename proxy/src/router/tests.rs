use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method};
use weir_api::model::{
    Forward, HostMatch, PathMatch, Route, RouteAction, RouteMatch, RouteOrder, Snapshot,
    StringMatch, ValueMatch,
};

use super::{RequestView, Router};

fn route(name: &str, host: HostMatch, path: PathMatch) -> Route {
    Route {
        name: Arc::from(name),
        hosts: vec![host],
        listeners: Vec::new(),
        excluded_hosts: Vec::new(),
        matcher: RouteMatch {
            path,
            ..RouteMatch::default()
        },
        order: RouteOrder {
            created: String::new(),
            object: name.to_string(),
            rule: 0,
            matcher: 0,
        },
        action: RouteAction::Forward(Forward::default()),
        max_request_body: None,
        upgrades: weir_api::model::websocket_only(),
        auth: None,
        limits: Vec::new(),
    }
}

fn lookup(
    router: &Router,
    host: &str,
    path: &str,
    method: Method,
    headers: &HeaderMap,
) -> Option<String> {
    let view = RequestView {
        host,
        path,
        query: None,
        method: &method,
        headers,
    };
    router.route(&view).map(|r| r.name.to_string())
}

fn regex(p: &str) -> PathMatch {
    PathMatch::Regex(Arc::new(regex::Regex::new(&format!("^(?:{p})$")).unwrap()))
}

fn shared(routes: Vec<Route>) -> Vec<Arc<Route>> {
    routes.into_iter().map(Arc::new).collect()
}

#[test]
fn regex_ranks_among_prefixes_by_length() {
    let snapshot = Snapshot {
        routes: shared(vec![
            route("root", HostMatch::Any, PathMatch::Prefix("/".into())),
            route(
                "long-prefix",
                HostMatch::Any,
                PathMatch::Prefix("/users/admin".into()),
            ),
            route("regex", HostMatch::Any, regex("/users/[0-9]+")),
        ]),
        ..Snapshot::default()
    };
    let router = Router::new(&snapshot);
    let h = HeaderMap::new();
    assert_eq!(
        lookup(&router, "a", "/users/42", Method::GET, &h).as_deref(),
        Some("regex")
    );
    assert_eq!(
        lookup(&router, "a", "/users/admin/x", Method::GET, &h).as_deref(),
        Some("long-prefix")
    );
    assert_eq!(
        lookup(&router, "a", "/users/bob", Method::GET, &h).as_deref(),
        Some("root")
    );
}

#[test]
fn equal_paths_order_by_method_headers_then_age() {
    let mut with_header = route("header", HostMatch::Any, PathMatch::Prefix("/".into()));
    with_header.matcher.headers = vec![ValueMatch {
        name: "x-v".into(),
        value: StringMatch::Exact("2".into()),
    }];
    let mut with_method = route("method", HostMatch::Any, PathMatch::Prefix("/".into()));
    with_method.matcher.method = Some("POST".into());
    let mut older = route("older", HostMatch::Any, PathMatch::Prefix("/".into()));
    older.order.created = "2020-01-01T00:00:00Z".into();
    let mut newer = route("newer", HostMatch::Any, PathMatch::Prefix("/".into()));
    newer.order.created = "2024-01-01T00:00:00Z".into();
    let snapshot = Snapshot {
        routes: shared(vec![newer, with_header, older, with_method]),
        ..Snapshot::default()
    };
    let router = Router::new(&snapshot);
    let mut h = HeaderMap::new();
    assert_eq!(
        lookup(&router, "a", "/", Method::GET, &h).as_deref(),
        Some("older")
    );
    h.insert("x-v", HeaderValue::from_static("2"));
    assert_eq!(
        lookup(&router, "a", "/", Method::GET, &h).as_deref(),
        Some("header")
    );
    assert_eq!(
        lookup(&router, "a", "/", Method::POST, &h).as_deref(),
        Some("method")
    );
}

#[test]
fn host_specificity_then_fallback() {
    let mut fallback = route("default", HostMatch::Any, PathMatch::Prefix("/".into()));
    fallback.order.rule = usize::MAX;
    let snapshot = Snapshot {
        routes: shared(vec![
            route(
                "exact",
                HostMatch::Exact("a.example.com".into()),
                PathMatch::Prefix("/api".into()),
            ),
            route(
                "wild",
                HostMatch::Wildcard(".example.com".into()),
                PathMatch::Prefix("/".into()),
            ),
        ]),
        default_route: Some(Arc::new(fallback)),
        ..Snapshot::default()
    };
    let router = Router::new(&snapshot);
    let h = HeaderMap::new();
    assert_eq!(
        lookup(&router, "a.example.com", "/api/x", Method::GET, &h).as_deref(),
        Some("exact")
    );
    assert_eq!(
        lookup(&router, "a.example.com", "/web", Method::GET, &h).as_deref(),
        Some("wild")
    );
    assert_eq!(
        lookup(&router, "elsewhere.org", "/", Method::GET, &h).as_deref(),
        Some("default")
    );
}
