//! Global limits in Redis: one step of the limit's algorithm per request in a server-side Lua
//! script (atomic, on Redis's own clock, so every gateway replica shares one count): the
//! sliding window in a hash per key (`s` start of the current window, `c` its count, `p` the
//! previous window's), GCRA in a string per key (the TAT). One key per script call, in a
//! `{…}` hash tag, so Redis Cluster works.
//!
//! Redis must never make a request wait: each call has a short timeout, and after a failure
//! Redis is skipped for [`BACKOFF`] (one probe request then tries again), during which the
//! caller falls back as the policy's `failureMode` says. The connection (single server or
//! cluster) is opened in the background and reconnects by itself.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use arc_swap::ArcSwapOption;
use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
    Script,
};

use super::{gcra, local::now_micros, window, Decision, Rule};

/// How long Redis is skipped after a failed call.
pub const BACKOFF: Duration = Duration::from_secs(1);

const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tau - interval
if now < allow_at then
  return {0, tat - now, allow_at - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.floor((new_tat - now) / 1000) + 1)
return {1, new_tat - now, 0}
"#;

/// The sliding window of `window.rs`, returning `{allowed, prev, cur, x}`.
const WINDOW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local per = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local h = redis.call('HMGET', KEYS[1], 's', 'c', 'p')
local start, cur, prev = tonumber(h[1]), tonumber(h[2]) or 0, tonumber(h[3]) or 0
if start == nil or now >= start + 2 * per then
  start, cur, prev = now, 0, 0
elseif now >= start + per then
  start, cur, prev = start + per, 0, cur
end
local x = now - start
if x < 0 then x = 0 end
if math.floor(prev * (per - x) / per) + cur >= limit then
  return {0, prev, cur, x}
end
cur = cur + 1
redis.call('HSET', KEYS[1], 's', start, 'c', cur, 'p', prev)
redis.call('PEXPIRE', KEYS[1], math.floor((start + 2 * per - now) / 1000) + 1)
return {1, prev, cur, x}
"#;

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Where global counts live.
pub struct GlobalStore {
    conn: ArcSwapOption<Conn>,
    gcra: Script,
    window: Script,
    timeout: Duration,
    /// `now_micros()` before which Redis is not asked.
    skip_until: AtomicU64,
}

/// Why Redis could not decide.
#[derive(Debug)]
pub struct Unavailable;

impl GlobalStore {
    /// Connects to `urls` (one server, or the seed nodes of a cluster) in the background.
    pub fn connect(urls: Vec<String>, cluster: bool, timeout: Duration) -> Arc<Self> {
        let store = Arc::new(Self {
            conn: ArcSwapOption::empty(),
            gcra: Script::new(GCRA),
            window: Script::new(WINDOW),
            timeout,
            skip_until: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&store);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                let connected =
                    tokio::time::timeout(Duration::from_secs(5), open(&urls, cluster, timeout))
                        .await;
                let Some(store) = weak.upgrade() else { return };
                match connected {
                    Ok(Ok(conn)) => {
                        tracing::info!(redis = ?urls, "connected to Redis");
                        store.conn.store(Some(Arc::new(conn)));
                        return;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(redis = ?urls, error = %e, "cannot connect to Redis yet; retrying")
                    }
                    Err(_) => tracing::warn!(redis = ?urls, "Redis connect timed out; retrying"),
                }
                drop(store);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
        store
    }

    /// One step of `rule` for `key` in Redis, or [`Unavailable`] at once when Redis is known
    /// to be down, and within the timeout otherwise.
    pub async fn check(&self, rule: Rule, key: &str) -> Result<Decision, Unavailable> {
        let now = now_micros();
        let skip = self.skip_until.load(Ordering::Relaxed);
        if now < skip {
            return Err(Unavailable);
        }
        if skip != 0
            && self
                .skip_until
                .compare_exchange(
                    skip,
                    now + BACKOFF.as_micros() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            // Another request is the probe.
            return Err(Unavailable);
        }
        let Some(conn) = self.conn.load_full() else {
            return Err(Unavailable);
        };
        let mut invocation = match rule {
            Rule::Window(_) => self.window.prepare_invoke(),
            Rule::Gcra(_) => self.gcra.prepare_invoke(),
        };
        invocation.key(key);
        match rule {
            Rule::Window(p) => invocation.arg(p.per).arg(p.limit),
            Rule::Gcra(p) => invocation.arg(p.interval).arg(p.tau),
        };
        let call = async {
            match (*conn).clone() {
                Conn::Single(mut c) => invocation.invoke_async::<Vec<u64>>(&mut c).await,
                Conn::Cluster(mut c) => invocation.invoke_async::<Vec<u64>>(&mut c).await,
            }
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(reply)) => {
                self.skip_until.store(0, Ordering::Relaxed);
                Ok(decide(rule, &reply))
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "Redis rate-limit call failed");
                self.fail(now);
                Err(Unavailable)
            }
            Err(_) => {
                self.fail(now);
                Err(Unavailable)
            }
        }
    }

    fn fail(&self, now: u64) {
        self.skip_until
            .store(now + BACKOFF.as_micros() as u64, Ordering::Relaxed);
    }
}

/// The decision from a script's reply (a short reply reads as zeros: refused).
fn decide(rule: Rule, reply: &[u64]) -> Decision {
    let at = |i: usize| reply.get(i).copied().unwrap_or(0);
    match rule {
        Rule::Window(p) => {
            let w = window::Windows {
                start: 0,
                cur: at(2),
                prev: at(1),
            };
            window::decision(p, at(0) == 1, w, at(3))
        }
        Rule::Gcra(p) => gcra::decision(p, at(0) == 1, at(1), at(2)),
    }
}

async fn open(urls: &[String], cluster: bool, timeout: Duration) -> redis::RedisResult<Conn> {
    if cluster {
        let client = ClusterClient::builder(urls.iter().map(String::as_str))
            .connection_timeout(timeout.max(Duration::from_millis(500)))
            .response_timeout(timeout)
            .build()?;
        return Ok(Conn::Cluster(client.get_async_connection().await?));
    }
    let client = redis::Client::open(urls.first().map(String::as_str).unwrap_or_default())?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout.max(Duration::from_millis(500))))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(2));
    Ok(Conn::Single(
        ConnectionManager::new_with_config(client, config).await?,
    ))
}
