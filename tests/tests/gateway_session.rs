//! HTTPRoute `sessionPersistence` (GEP-1619), as the upstream conformance tests check it
//! (kubernetes-sigs/gateway-api, conformance/tests, httproute-session-persistence-*): the first
//! answer gives the client a session cookie (a session cookie: no Expires nor Max-Age, unless
//! the lifetime is Permanent), and the requests that carry it reach the endpoint the first one
//! did. Upstream's backend has replicas; here a Service with three endpoints plays it. Then what
//! a client could try with it: a forged ticket, a ticket for an endpoint that is gone, a session
//! past its timeout, and a route with a wrong `sessionPersistence` refused alone.

use std::time::Duration;

use bytes::Bytes;
use weir_e2e::{gateway, http_route, request, service, ConfigDir, Echo, Reply, Weir};

const PODS: [&str; 3] = [
    "infra-backend-v1-a",
    "infra-backend-v1-b",
    "infra-backend-v1-c",
];

/// A route for `session.example` whose one rule (`/session-persistence` and below) has
/// `session` (YAML flow) and goes to Service `infra-backend-v1` of `pods`.
fn serve(pods: &[Echo], session: &str) -> (ConfigDir, Weir) {
    let route = http_route(
        "session-persistence-cookie",
        &["session.example"],
        &format!("  - matches: [{{path: {{type: PathPrefix, value: /session-persistence}}}}]\n    sessionPersistence: {session}\n    backendRefs: [{{name: infra-backend-v1, port: 80}}]\n"),
    );
    let pods: Vec<&Echo> = pods.iter().collect();
    let dir = ConfigDir::new()
        .with("svc.yaml", &service("infra-backend-v1", &pods))
        .with("gw.yaml", &gateway())
        .with("route.yaml", &route);
    let weir = Weir::start(&dir);
    (dir, weir)
}

/// `GET /session-persistence` with these headers.
async fn get(weir: &Weir, headers: &[(&str, &str)]) -> Reply {
    request(
        weir.addr,
        "session.example",
        "/session-persistence",
        headers,
        Bytes::new(),
        "GET",
    )
    .await
}

/// The first `Set-Cookie` of `reply`: `(name=value, attributes)`.
fn cookie(reply: &Reply) -> (String, String) {
    let set = reply.headers["set-cookie"].to_str().unwrap();
    let (pair, attributes) = set.split_once(';').unwrap_or((set, ""));
    (pair.to_string(), attributes.to_string())
}

/// HTTPRouteSessionPersistenceCookie: a session cookie, and every request carrying it reaches
/// the endpoint the first one did (without it, requests spread).
#[tokio::test]
async fn http_route_session_persistence_cookie() {
    let pods = Echo::group(&PODS);
    let (_dir, weir) = serve(&pods, "{type: Cookie}");
    let first = get(&weir, &[]).await;
    assert_eq!(first.status, 200);
    let (pair, attributes) = cookie(&first);
    // A name of the route's own: another rule's session on the same host never overwrites it.
    assert!(pair.starts_with("weir-session-"), "{pair}");
    let lower = attributes.to_lowercase();
    assert!(
        !lower.contains("expires") && !lower.contains("max-age"),
        "{attributes}"
    );
    assert!(
        lower.contains("httponly") && lower.contains("samesite=lax"),
        "{attributes}"
    );
    let pod = first.backend();
    for _ in 0..10 {
        let reply = get(&weir, &[("cookie", &pair)]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.backend(), pod);
        // The session is kept: nothing to set again.
        assert!(reply.headers.get("set-cookie").is_none());
    }
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        seen.insert(get(&weir, &[]).await.backend());
    }
    assert!(
        seen.len() > 1,
        "without the cookie requests spread: {seen:?}"
    );
}

/// HTTPRouteSessionPersistenceCookiePermanentLifetime: a Permanent cookie carries its
/// lifetime (Max-Age, the absolute timeout).
#[tokio::test]
async fn http_route_session_persistence_cookie_permanent_lifetime() {
    let pods = Echo::group(&PODS);
    let session = "{type: Cookie, absoluteTimeout: 1h, cookieConfig: {lifetimeType: Permanent}}";
    let (_dir, weir) = serve(&pods, session);
    let (_, attributes) = cookie(&get(&weir, &[]).await);
    assert!(attributes.contains("Max-Age=3600"), "{attributes}");
}

/// `type: Header`: the session comes in a response header, and requests sending it back reach
/// the same endpoint.
#[tokio::test]
async fn a_header_session_is_sent_back_by_the_client() {
    let pods = Echo::group(&PODS);
    let (_dir, weir) = serve(&pods, "{type: Header, sessionName: x-session}");
    let first = get(&weir, &[]).await;
    let ticket = first.headers["x-session"].to_str().unwrap().to_string();
    assert!(first.headers.get("set-cookie").is_none());
    for _ in 0..10 {
        let reply = get(&weir, &[("x-session", &ticket)]).await;
        assert_eq!(reply.backend(), first.backend());
    }
}

/// A ticket is no key to the backends: a forged one, one naming an endpoint the Service no
/// longer has, or one past its session's timeout is picked anew (with a new cookie), never an
/// error nor an endpoint outside the route; the ticket holds no endpoint address.
#[tokio::test]
async fn a_forged_stale_or_timed_out_ticket_is_picked_anew() {
    let pods = Echo::group(&PODS);
    let (dir, weir) = serve(&pods, "{absoluteTimeout: 2s}");
    let first = get(&weir, &[]).await;
    let (pair, _) = cookie(&first);
    for pod in &pods {
        assert!(!pair.contains(&pod.addr.ip().to_string()), "{pair}");
    }
    let name = pair.split('=').next().unwrap();
    let forged = format!("{name}=00000000000000ff.1.1");
    let forged = get(&weir, &[("cookie", &forged)]).await;
    assert_eq!(forged.status, 200);
    assert!(cookie(&forged).0.starts_with(&format!("{name}=")));
    let garbage = format!("{name}=../../etc; other=1");
    assert_eq!(get(&weir, &[("cookie", &garbage)]).await.status, 200);

    // The endpoint it names leaves the Service: another one answers, with a new ticket.
    let gone = PODS.iter().position(|n| *n == first.backend()).unwrap();
    let kept: Vec<&Echo> = pods
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != gone)
        .map(|(_, p)| p)
        .collect();
    let version = weir.version().await;
    dir.write("svc.yaml", &service("infra-backend-v1", &kept));
    weir.wait_version(version + 1, Duration::from_secs(10))
        .await;
    let moved = get(&weir, &[("cookie", &pair)]).await;
    assert_eq!(moved.status, 200);
    assert_ne!(moved.backend(), first.backend());
    let (new_pair, _) = cookie(&moved);
    assert_ne!(new_pair, pair);

    // Past the absolute timeout, the session is over: picked anew, a new ticket.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let later = get(&weir, &[("cookie", &new_pair)]).await;
    assert!(
        later.headers.get("set-cookie").is_some(),
        "a session past its timeout was kept"
    );
}

/// A `sessionPersistence` Weir cannot take refuses that route alone, naming the field.
#[tokio::test]
async fn a_route_with_a_wrong_session_is_refused_alone() {
    let pods = Echo::group(&PODS);
    let wrong = [
        (
            "{cookieConfig: {lifetimeType: Permanent}}",
            "sessionPersistence.absoluteTimeout",
        ),
        ("{sessionName: \"a b\"}", "sessionPersistence.sessionName"),
        (
            "{type: Header, cookieConfig: {lifetimeType: Session}}",
            "sessionPersistence.cookieConfig",
        ),
        (
            "{type: Header, sessionName: Content-Length}",
            "sessionPersistence.sessionName",
        ),
    ];
    for (session, field) in wrong {
        let (_dir, weir) = serve(&pods, session);
        assert_eq!(get(&weir, &[]).await.status, 404, "{session}");
        let refused = weir.admin_get("/config").await.json()["reload"]["refused"].to_string();
        assert!(refused.contains(field), "{field}: {refused}");
    }
}

/// A session does not begin with an endpoint that failed: a 5xx answer carries no ticket.
#[tokio::test]
async fn a_failing_endpoint_gives_no_ticket() {
    let pods = Echo::group(&PODS[..1]);
    pods[0].mode("fail").await;
    let (_dir, weir) = serve(&pods, "{type: Cookie}");
    let reply = get(&weir, &[]).await;
    assert_eq!(reply.status, 503);
    assert!(reply.headers.get("set-cookie").is_none());
}
