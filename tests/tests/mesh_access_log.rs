//! The sidecar's access log: the same JSON line per request as the ingress's, on stdout, in
//! both directions, and none with `--access-log off`.

use http::StatusCode;
use serde_json::Value;
use weir_e2e::{
    eventually,
    mesh::{echo_app, strict_shop, Ports, Sidecar},
    Controller,
};

/// The line whose `path` is `path`, once it is written.
async fn line(sidecar: &Sidecar, path: &str) -> Value {
    eventually(
        std::time::Duration::from_secs(5),
        "an access-log line",
        || async { sidecar.access_log().into_iter().find(|l| l["path"] == path) },
    )
    .await
}

#[tokio::test]
async fn each_direction_logs_one_json_line_per_request_and_the_flag_turns_it_off() {
    let (front, back) = (Ports::free(), Ports::free());
    let dir = strict_shop(&front, &back);
    let controller = Controller::start(&dir);
    let app = echo_app("backend", None);
    let frontend = Sidecar::shop(&controller, "frontend", app.port, front, &[]);
    let backend = Sidecar::shop(&controller, "backend", app.port, back, &[]);
    let quiet = Sidecar::shop(
        &controller,
        "frontend",
        app.port,
        Ports::free(),
        &["--access-log", "off"],
    );
    for sidecar in [&frontend, &backend, &quiet] {
        sidecar.wait_ready().await;
    }

    let reply = frontend
        .call("backend.shop", "/orders/7?token=secret")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    // Outbound, in the caller's sidecar: the Service it went to and the endpoint (the
    // backend's sidecar) it reached over mTLS.
    let out = line(&frontend, "/orders/7").await;
    assert_eq!(out["method"], "GET");
    assert_eq!(out["status"], 200);
    assert_eq!(out["host"], "backend.shop");
    assert_eq!(out["route"], "shop/backend");
    assert_eq!(out["endpoint"], back.endpoint().to_string());
    assert_eq!(out["attempts"], 1);
    assert!(out["request_id"].as_str().is_some(), "{out}");
    assert!(
        !out.to_string().contains("secret"),
        "the query string is never logged: {out}"
    );
    // Inbound, in the callee's sidecar: the app it handed the request to.
    let inbound = line(&backend, "/orders/7").await;
    assert_eq!(inbound["status"], 200);
    assert_eq!(inbound["endpoint"], format!("127.0.0.1:{}", app.port));
    assert_eq!(
        frontend.access_log().len(),
        1,
        "one line per request: {:?}",
        frontend.access_log()
    );

    // A refusal is logged with its reason.
    let refused = frontend.call("nowhere.shop", "/missing").await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
    let missing = line(&frontend, "/missing").await;
    assert_eq!(missing["status"], 404);
    assert_eq!(missing["error"], "no-route");

    // Switched off: the same traffic, no line.
    let reply = quiet.call("backend.shop", "/orders/8").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(quiet.access_log().is_empty(), "{:?}", quiet.access_log());

    // The callee's line shows the path as its AccessPolicy matched it and the app read it, not
    // the spelling a caller chose to hide it behind.
    let reply = frontend.call("backend.shop", "/x/../orders/9").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let normalised = line(&backend, "/orders/9").await;
    assert_eq!(normalised["status"], 200);
    assert!(
        backend
            .access_log()
            .iter()
            .all(|l| l["path"] != "/x/../orders/9"),
        "{:?}",
        backend.access_log()
    );
}
