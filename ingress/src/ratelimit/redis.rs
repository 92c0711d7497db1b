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

/// Why Redis could not decide.
#[derive(Debug)]
pub struct Unavailable;

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

/// The batched sliding window (`batch.rs`). ARGV: per, limit, back (unused lease given
/// back), back_start (the window it was counted in), want, gateway id, stale (µs after which
/// a gateway that asked no more counts as gone). Gives back, then grants up to the room
/// divided among the gateways that asked lately. Returns `{grant, start, prev, cur, x, room}`.
const LEASE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local per, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local back, back_start, want = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local me, stale = 'g:' .. ARGV[6], tonumber(ARGV[7])
local h = redis.call('HGETALL', KEYS[1])
local start, cur, prev, active = nil, 0, 0, 1
for i = 1, #h, 2 do
  local f, v = h[i], tonumber(h[i + 1])
  if f == 's' then start = v elseif f == 'c' then cur = v elseif f == 'p' then prev = v
  elseif f ~= me and string.sub(f, 1, 2) == 'g:' then
    if v + stale >= now then active = active + 1 else redis.call('HDEL', KEYS[1], f) end
  end
end
if start == nil or now >= start + 2 * per then
  start, cur, prev = now, 0, 0
elseif now >= start + per then
  start, cur, prev = start + per, 0, cur
end
if back > 0 then
  if back_start == start then cur = math.max(0, cur - back)
  elseif back_start == start - per then prev = math.max(0, prev - back) end
end
local x = now - start
if x < 0 then x = 0 end
local room = math.max(0, limit - math.floor(prev * (per - x) / per) - cur)
local grant = 0
if want > 0 then
  grant = math.min(want, math.ceil(room / active))
  redis.call('HSET', KEYS[1], me, now)
end
cur = cur + grant
redis.call('HSET', KEYS[1], 's', start, 'c', cur, 'p', prev)
redis.call('PEXPIRE', KEYS[1], math.floor((start + 2 * per - now) / 1000) + 1)
return {grant, start, prev, cur, x, room - grant}
"#;

/// One key's part of a lease call.
#[derive(Clone, Debug, Default)]
pub struct Ask {
    /// The Redis key.
    pub key: String,
    /// Unused lease given back.
    pub back: u64,
    /// Start (Redis clock) of the window the given-back lease was counted in.
    pub back_start: u64,
    /// How many to lease (0: none, and this gateway stops counting as active on the key).
    pub want: u64,
}

/// Redis's answer for one key.
#[derive(Clone, Copy, Debug, Default)]
pub struct Grant {
    /// Leased to this gateway (already counted in Redis).
    pub granted: u64,
    /// Start of Redis's current window (its clock).
    pub start: u64,
    /// The previous window's count.
    pub prev: u64,
    /// The current window's count, the grant included.
    pub cur: u64,
    /// How far into the current window Redis is.
    pub x: u64,
    /// Room left after the grant.
    pub room: u64,
}

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
    lease: Arc<Script>,
    /// This process's name in lease calls (`g:<id>` fields).
    gateway: String,
    timeout: Duration,
    /// `now_micros()` before which Redis is not asked.
    skip_until: AtomicU64,
}

impl GlobalStore {
    /// Connects to `urls` (one server, or the seed nodes of a cluster) in the background.
    pub fn connect(urls: Vec<String>, cluster: bool, timeout: Duration) -> Arc<Self> {
        let store = Arc::new(Self {
            conn: ArcSwapOption::empty(),
            gcra: Script::new(GCRA),
            window: Script::new(WINDOW),
            lease: Arc::new(Script::new(LEASE)),
            gateway: format!("{:016x}", fastrand::u64(..)),
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
        let conn = self.permit(now)?;
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

    /// The connection, unless Redis is to be skipped (known down, or another caller is the
    /// probe after a failure).
    fn permit(&self, now: u64) -> Result<Arc<Conn>, Unavailable> {
        let skip = self.skip_until.load(Ordering::Relaxed);
        if now < skip {
            return Err(Unavailable);
        }
        let probe = skip == 0
            || self
                .skip_until
                .compare_exchange(
                    skip,
                    now + BACKOFF.as_micros() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok();
        match self.conn.load_full() {
            Some(conn) if probe => Ok(conn),
            _ => Err(Unavailable),
        }
    }

    /// Leases for a batched limit (`batch.rs`): one script call per key, all sent at once on
    /// the multiplexed connection (a pipeline), answered together within the timeout or not at
    /// all.
    pub async fn lease(
        &self,
        p: window::Params,
        stale: Duration,
        asks: &[Ask],
    ) -> Result<Vec<Grant>, Unavailable> {
        let now = now_micros();
        let conn = self.permit(now)?;
        let mut calls = tokio::task::JoinSet::new();
        for (i, ask) in asks.iter().enumerate() {
            let (conn, script, ask) = (conn.clone(), self.lease.clone(), ask.clone());
            let gateway = self.gateway.clone();
            calls.spawn(async move {
                let mut call = script.prepare_invoke();
                call.key(&ask.key).arg(p.per).arg(p.limit).arg(ask.back);
                call.arg(ask.back_start).arg(ask.want).arg(gateway);
                call.arg(stale.as_micros() as u64);
                let reply = match (*conn).clone() {
                    Conn::Single(mut c) => call.invoke_async::<Vec<u64>>(&mut c).await,
                    Conn::Cluster(mut c) => call.invoke_async::<Vec<u64>>(&mut c).await,
                };
                (i, reply)
            });
        }
        let all = async {
            let mut grants = vec![Grant::default(); asks.len()];
            while let Some(done) = calls.join_next().await {
                let (i, reply) = done.map_err(|_| Unavailable)?;
                let reply = reply.map_err(|e| {
                    tracing::debug!(error = %e, "Redis lease call failed");
                    Unavailable
                })?;
                let at = |j: usize| reply.get(j).copied().unwrap_or(0);
                grants[i] = Grant {
                    granted: at(0),
                    start: at(1),
                    prev: at(2),
                    cur: at(3),
                    x: at(4),
                    room: at(5),
                };
            }
            Ok::<_, Unavailable>(grants)
        };
        match tokio::time::timeout(self.timeout, all).await {
            Ok(Ok(grants)) => {
                self.skip_until.store(0, Ordering::Relaxed);
                Ok(grants)
            }
            _ => {
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
