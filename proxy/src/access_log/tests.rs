use std::{
    io::Write,
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant, UNIX_EPOCH},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use serde_json::Value;

use super::*;
use weir_http::body::full;

/// An output the test reads back; `stuck` holds every write until released.
#[derive(Clone, Default)]
struct Sink {
    out: Arc<Mutex<Vec<u8>>>,
    stuck: Arc<(Mutex<bool>, Condvar)>,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (stuck, released) = &*self.stuck;
        let mut held = stuck.lock().unwrap();
        while *held {
            held = released.wait(held).unwrap();
        }
        self.out.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink {
    fn lines(&self) -> Vec<Value> {
        let out = self.out.lock().unwrap();
        String::from_utf8(out.clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
    fn hold(&self, on: bool) {
        *self.stuck.0.lock().unwrap() = on;
        self.stuck.1.notify_all();
    }
}

fn counter() -> prometheus::IntCounter {
    prometheus::IntCounter::new("dropped", "dropped").unwrap()
}

fn log_to(sink: &Sink, args: LogArgs) -> AccessLog {
    AccessLog::to(&args, Box::new(sink.clone()), counter()).unwrap()
}

fn request(id: &str) -> request::Parts {
    Request::get("/shop/cart?token=secret")
        .header("x-request-id", id)
        .header("user-agent", "curl/8")
        .body(())
        .unwrap()
        .into_parts()
        .0
}

/// One request through `on_end`, its body read to the end as a client would.
async fn exchange(log: &AccessLog, id: &str, user: Option<&str>) {
    let parts = request(id);
    let arrival = Arrival::of(
        &parts,
        "10.0.0.7:5555".parse().unwrap(),
        "shop.example",
        Instant::now(),
    );
    let outcome = Outcome {
        route: Some("shop/cart".into()),
        user: user.map(Into::into),
        ..Outcome::default()
    };
    let response = Response::new(full(Bytes::from_static(b"hello")));
    let response = log.on_end(arrival, outcome, response);
    response.into_body().collect().await.unwrap();
}

async fn eventually(sink: &Sink, n: usize) -> Vec<Value> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let lines = sink.lines();
        if lines.len() >= n || Instant::now() > until {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn lines_from_every_thread_reach_the_output_whole_without_settling() {
    let sink = Sink::default();
    let log = log_to(&sink, LogArgs::default());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                for i in 0..500 {
                    rt.block_on(exchange(&log, &format!("t{t}-{i}"), None));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Within a sweep or two, with no settle() asked for.
    let lines = eventually(&sink, 2000).await;
    assert_eq!(lines.len(), 2000);
    let first = &lines[0];
    assert_eq!(first["path"], "/shop/cart", "no query string: {first}");
    assert_eq!(first["host"], "shop.example");
    assert_eq!(first["status"], 200);
    assert_eq!(first["bytes_out"], 5);
    assert_eq!(first["route"], "shop/cart");
    assert_eq!(first["user_agent"], "curl/8");
    assert_eq!(first["client"], "10.0.0.7:5555");
    assert!(first["user"].is_null());
    let mut ids: Vec<_> = lines
        .iter()
        .map(|l| l["request_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2000, "every line once");
}

#[tokio::test]
async fn a_stuck_output_drops_and_counts_lines_and_never_blocks_a_request() {
    let sink = Sink::default();
    sink.hold(true);
    let dropped = counter();
    let log = AccessLog::to(&LogArgs::default(), Box::new(sink.clone()), dropped.clone()).unwrap();
    // Far more than the queue holds (each line is about 400 bytes).
    let n = 60_000;
    let started = Instant::now();
    for i in 0..n {
        exchange(&log, &format!("r{i}"), None).await;
    }
    assert!(
        dropped.get() > 0,
        "nothing was dropped while stdout was stuck"
    );
    // Let it go: what was kept is written, and kept + dropped is everything.
    sink.hold(false);
    log.settle();
    let written = eventually(&sink, n - dropped.get() as usize).await.len();
    assert_eq!(
        written as u64 + dropped.get(),
        n as u64,
        "written {written}, dropped {}",
        dropped.get()
    );
    // Bounded: what waited was at most the queue and one buffer per thread.
    let held = (writer::QUEUE + 2) * (writer::CHUNK + 1024);
    assert!(
        written * 300 <= held,
        "{written} lines were held for a stuck output"
    );
    println!("{n} requests in {:?} with stdout stuck", started.elapsed());
}

#[tokio::test]
async fn settle_writes_what_was_logged_at_once() {
    let sink = Sink::default();
    let log = log_to(&sink, LogArgs::default());
    exchange(&log, "one", None).await;
    let asked = Instant::now();
    log.settle();
    assert_eq!(sink.lines().len(), 1);
    assert!(asked.elapsed() < Duration::from_secs(1));
}

#[test]
fn the_timestamp_is_rfc3339_utc_with_milliseconds() {
    let t = UNIX_EPOCH + Duration::from_millis(1_796_618_670_123);
    assert_eq!(Stamp::of(t).as_str(), "2026-12-07T04:44:30.123Z");
    // The cached second is not reused for another.
    let t = UNIX_EPOCH + Duration::from_millis(951_782_400_007);
    assert_eq!(Stamp::of(t).as_str(), "2000-02-29T00:00:00.007Z");
    let t = UNIX_EPOCH + Duration::from_millis(951_782_400_999);
    assert_eq!(Stamp::of(t).as_str(), "2000-02-29T00:00:00.999Z");
}

#[test]
fn sampling_keeps_about_the_ratio_and_agrees_across_processes_by_request_id() {
    let args = |r| LogArgs {
        access_log_sample: r,
        ..LogArgs::default()
    };
    let tenth = AccessLog::to(&args(0.1), Box::new(std::io::sink()), counter()).unwrap();
    let again = AccessLog::to(&args(0.1), Box::new(std::io::sink()), counter()).unwrap();
    let all = AccessLog::to(&args(1.0), Box::new(std::io::sink()), counter()).unwrap();
    let mut kept = 0;
    for i in 0..20_000 {
        let parts = request(&format!("{i:032x}"));
        let wants = tenth.wants(&parts);
        assert_eq!(
            wants,
            again.wants(&parts),
            "two logs disagree on request {i}"
        );
        assert!(all.wants(&parts));
        kept += usize::from(wants);
    }
    assert!(
        (1_700..2_300).contains(&kept),
        "kept {kept} of 20,000 at 0.1"
    );
    assert!(!AccessLog::off().wants(&request("x")));
    for bad in ["0", "1.5", "-1", "half", "NaN"] {
        assert!(ratio(bad).is_err(), "{bad} was taken");
    }
}

#[tokio::test]
async fn users_are_hashed_under_the_key_unless_plain_is_asked() {
    let dir = std::env::temp_dir().join(format!("weir-log-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("key");
    std::fs::write(&key, "an example key of 32 bytes......\n").unwrap();
    let with = |user: &str, key_file: Option<&std::path::Path>| LogArgs {
        access_log_user: user.into(),
        access_log_user_key_file: key_file.map(Into::into),
        ..LogArgs::default()
    };
    let mut seen = Vec::new();
    for args in [
        with("hash", Some(&key)),
        with("hash", Some(&key)),
        with("hash", None),
        with("plain", None),
        with("off", None),
    ] {
        let sink = Sink::default();
        let log = log_to(&sink, args);
        exchange(&log, "a", Some("alice@example.com")).await;
        exchange(&log, "b", Some("bob@example.com")).await;
        log.settle();
        let lines = sink.lines();
        seen.push((lines[0]["user"].clone(), lines[1]["user"].clone()));
    }
    let (alice, bob) = &seen[0];
    let alice = alice.as_str().unwrap();
    assert_eq!(alice.len(), 32);
    assert!(alice.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(!alice.contains("alice"));
    assert_ne!(Some(alice), bob.as_str(), "two users, one hash");
    assert_eq!(seen[1], seen[0], "the same key gives the same hash");
    assert_ne!(seen[2].0, seen[0].0, "a random key is not the file's");
    assert_eq!(seen[3].0, "alice@example.com");
    assert!(seen[4].0.is_null());

    // A name as long as a token allows: clipped when plain, hashed (not remembered) otherwise.
    let huge = "u".repeat(60_000);
    for (user, hashed) in [("plain", false), ("hash", true)] {
        let sink = Sink::default();
        let log = log_to(&sink, with(user, Some(&key)));
        exchange(&log, "h", Some(&huge)).await;
        log.settle();
        let logged = sink.lines()[0]["user"].as_str().unwrap().to_string();
        assert_eq!(logged.len(), if hashed { 32 } else { CLIP }, "{user}");
    }

    std::fs::write(&key, "short").unwrap();
    let err = AccessLog::to(
        &with("hash", Some(&key)),
        Box::new(std::io::sink()),
        counter(),
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("at least 16"), "{err:#}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_huge_client_field_is_clipped_so_a_line_stays_small() {
    let sink = Sink::default();
    let log = log_to(&sink, LogArgs::default());
    let agent = "agent-".repeat(20_000);
    let parts = Request::get("/")
        .header("user-agent", agent.as_str())
        .body(())
        .unwrap()
        .into_parts()
        .0;
    let arrival = Arrival::of(
        &parts,
        "10.0.0.7:5555".parse().unwrap(),
        "h",
        Instant::now(),
    );
    let response = Response::new(full(Bytes::from_static(b"")));
    let response = log.on_end(arrival, Outcome::default(), response);
    response.into_body().collect().await.unwrap();
    log.settle();
    let lines = sink.lines();
    let logged = lines[0]["user_agent"].as_str().unwrap();
    assert!(
        logged.len() <= CLIP && logged.len() > CLIP - 4,
        "{}",
        logged.len()
    );
    assert!(agent.starts_with(logged));
}

#[test]
fn addresses_are_written_as_rust_writes_them() {
    for addr in [
        "10.0.0.7:5555",
        "0.0.0.0:0",
        "255.255.255.255:65535",
        "[2001:db8::1]:443",
        "[::ffff:10.1.2.3]:80",
        "[fe80::1%7]:8080",
    ] {
        let parsed: SocketAddr = addr.parse().unwrap();
        let json = serde_json::to_string(&Addr(parsed)).unwrap();
        assert_eq!(json, format!("\"{parsed}\""), "{addr}");
    }
}

#[test]
fn a_duration_is_written_as_json_writes_its_milliseconds_to_the_microsecond() {
    let mut micros: Vec<u64> = (0..20_000).collect();
    // Up to 31 years: past 15 digits a double no longer holds every microsecond.
    micros.extend([999_999, 1_000_000, 4_294_967_295_999, 4_294_967_296_000]);
    micros.extend((0..2_000).map(|_| fastrand::u64(..1_000_000_000_000_000)));
    for m in micros {
        let millis = Millis(Duration::from_micros(m));
        let ours = String::from_utf8(millis.text(&mut [0; 32]).to_vec()).unwrap();
        assert_eq!(ours, serde_json::to_string(&millis).unwrap(), "{m} µs");
    }
    // Below a microsecond is not written.
    let ns = Millis(Duration::from_nanos(1_999));
    assert_eq!(ns.text(&mut [0; 32]), b"0.001");
}

#[test]
fn the_line_is_the_json_serde_would_write_escapes_included() {
    let now = UNIX_EPOCH + Duration::from_millis(1_796_618_670_123);
    let entries = [
        Entry {
            time: Stamp::of(now),
            client: Addr("10.0.0.7:5555".parse().unwrap()),
            protocol: "HTTP/1.1",
            method: "GET",
            host: "shop.example.com",
            path: "/cart/items",
            status: 200,
            route: Some("httproute:shop/cart:0"),
            backend: Some("shop/cart:80"),
            endpoint: Some(Addr("[2001:db8::1]:8080".parse().unwrap())),
            error: None,
            attempts: 1,
            duration_ms: Millis(Duration::from_nanos(359_161)),
            upstream_ms: Some(Millis(Duration::from_nanos(217_927))),
            bytes_in: 0,
            bytes_out: 1234,
            request_id: "fb00b2baefade18a2bdce7f8785b966f",
            trace_id: "f393bdbacaedc5dedf01eea9c8d9b2e4",
            user_agent: Some("curl/8"),
            user: Some("0123456789abcdef0123456789abcdef"),
        },
        Entry {
            time: Stamp::of(now),
            client: Addr("[::1]:1".parse().unwrap()),
            protocol: "HTTP/2",
            method: "PO\"ST",
            host: "h\\ost",
            path: "/a\u{1}b\n\"c\"/é/\u{7f}",
            status: 502,
            route: None,
            backend: None,
            endpoint: None,
            error: Some("connect-failed"),
            attempts: 0,
            duration_ms: Millis(Duration::from_secs(86_400 * 60)),
            upstream_ms: None,
            bytes_in: u64::MAX,
            bytes_out: 0,
            request_id: "",
            trace_id: "",
            user_agent: Some("\"><script>"),
            user: None,
        },
    ];
    for entry in entries {
        let mut ours = Vec::new();
        entry.write_json(&mut ours);
        let serde = serde_json::to_vec(&entry).unwrap();
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            String::from_utf8(serde).unwrap()
        );
    }
}

#[tokio::test]
async fn a_client_choosing_ids_outside_the_sample_still_has_its_refusals_and_failures_logged() {
    let sink = Sink::default();
    let args = LogArgs {
        access_log_sample: 0.01,
        ..LogArgs::default()
    };
    let log = log_to(&sink, args);
    // Ids a client found to fall outside the sample.
    let outside: Vec<String> = (0..)
        .map(|i| format!("evade-{i}"))
        .filter(|id| !log.wants(&request(id)))
        .take(4)
        .collect();
    let send = |id: &str, status: u16, error: Option<&'static str>| {
        let arrival = Arrival::of(
            &request(id),
            "10.0.0.9:1".parse().unwrap(),
            "h",
            Instant::now(),
        );
        let outcome = Outcome {
            error,
            ..Outcome::default()
        };
        let mut response = Response::new(full(Bytes::from_static(b"x")));
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
        log.on_end(arrival, outcome, response)
    };
    for (id, status, error) in [
        (&outside[0], 200, None),
        (&outside[1], 401, Some("unauthenticated")),
        (&outside[2], 503, None),
        (&outside[3], 404, Some("no-route")),
    ] {
        send(id, status, error).into_body().collect().await.unwrap();
    }
    log.settle();
    let logged: Vec<_> = sink
        .lines()
        .iter()
        .map(|l| l["request_id"].clone())
        .collect();
    assert_eq!(logged.len(), 3, "{logged:?}");
    for id in &outside[1..] {
        assert!(
            logged.iter().any(|l| l == id.as_str()),
            "{id} was hidden: {logged:?}"
        );
    }
}
