//! A real Prometheus (Debian's `prometheus` package) on loopback, scraping the admin
//! `/metrics` of the processes a test started every second, and answering PromQL queries: what
//! proves that the dashboards and alerts in `manifests/observability/` ask for series Weir
//! really exports.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::StatusCode;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use crate::{collect_lines, eventually, free_port, request, wait_for_port, ConfigDir};

/// One series of a query's answer: its labels and its value.
#[derive(Debug)]
pub struct Sample {
    /// The series' labels.
    pub labels: serde_json::Map<String, serde_json::Value>,
    /// Its value (NaN when Prometheus says so).
    pub value: f64,
}

/// A running `prometheus`; killed on drop, its storage with it.
pub struct Prometheus {
    /// Its HTTP address (queries, `/-/ready`).
    pub addr: SocketAddr,
    /// How many targets it scrapes.
    targets: usize,
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    _dir: ConfigDir,
}

impl Prometheus {
    /// Starts Prometheus scraping each `(job, admin address)` every second, and waits until it
    /// answers. Panics, saying how to install it, when the binary is missing: the test script
    /// installs it, and a test that cannot run must not pass.
    pub fn scrape(targets: &[(&str, SocketAddr)]) -> Self {
        let binary = std::env::var("WEIR_TEST_PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
        let dir = ConfigDir::new();
        let mut config = String::from(
            "global: {scrape_interval: 1s, scrape_timeout: 900ms, evaluation_interval: 1s}\nscrape_configs:\n",
        );
        let mut jobs: Vec<&str> = targets.iter().map(|(job, _)| *job).collect();
        jobs.dedup();
        for job in jobs {
            let addrs: Vec<String> = targets
                .iter()
                .filter(|(j, _)| *j == job)
                .map(|(_, a)| format!("\"{a}\""))
                .collect();
            config.push_str(&format!(
                "- job_name: {job}\n  static_configs: [{{targets: [{}]}}]\n",
                addrs.join(", ")
            ));
        }
        dir.write("prometheus.yml", &config);
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new(&binary)
            .arg(format!(
                "--config.file={}",
                dir.path.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = child.unwrap_or_else(|e| {
            panic!("cannot start {binary}: {e}; install it (apt-get install prometheus), as scripts/test.sh does")
        });
        let stderr = collect_lines(child.stderr.take().expect("stderr"));
        wait_for_port(addr);
        Self {
            addr,
            targets: targets.len(),
            child,
            stderr,
            _dir: dir,
        }
    }

    /// The URL of its HTTP API.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits (at most `within`) until every target has been scraped successfully `scrapes`
    /// times since it started (counted by `up` samples over the time since then).
    pub async fn wait_scraped(&self, scrapes: usize, within: Duration) {
        eventually(within, "prometheus ready", || async {
            let ready = request(
                self.addr,
                "prometheus",
                "/-/ready",
                &[],
                Bytes::new(),
                "GET",
            );
            (ready.await.status == StatusCode::OK).then_some(())
        })
        .await;
        let query = format!("count_over_time(up[10m]) >= {scrapes} and up == 1");
        eventually(within, "every target scraped", || async {
            (self.query(&query).await.len() == self.targets).then_some(())
        })
        .await;
    }

    /// The series an instant PromQL query returns now.
    pub async fn query(&self, promql: &str) -> Vec<Sample> {
        let path = format!(
            "/api/v1/query?query={}",
            utf8_percent_encode(promql, NON_ALPHANUMERIC)
        );
        let reply = request(self.addr, "prometheus", &path, &[], Bytes::new(), "GET").await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{promql}: {}\n{}",
            reply.text(),
            self.logs()
        );
        let body = reply.json();
        let result = body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        result
            .into_iter()
            .map(|series| Sample {
                labels: series["metric"].as_object().cloned().unwrap_or_default(),
                value: series["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN),
            })
            .collect()
    }

    /// What it logged.
    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
