//! Batched global limits (`syncInterval`): instead of a Redis call per request, each gateway
//! admits from a share it leased from Redis and reconciles once per interval per active key,
//! all keys' calls sent together.
//!
//! ```text
//!   request ─▶ share of its key ─▶ lease left? pass : 429 (503 if Redis is down, closed)
//!                  ▲ first request of a key, or a share spent while Redis had room: lease
//!                    at once (within --redis-timeout)
//!   every syncInterval: for each key seen since the last sync, give back what exceeds its
//!   demand (or all of it, and forget the key, if it saw none) and top up to 1.5 × the
//!   requests seen ─▶ Redis (the LEASE script in `redis.rs`)
//! ```
//!
//! Redis counts a lease when it grants it, in the same sliding window as per-request global
//! limits, and grants at most the room left divided among the gateways that asked lately; so
//! the replicas together stay within the window's bound. What a lease costs: a gateway may
//! refuse while another holds unused share, until that one's next sync; a lease counted in
//! one window and spent after it ends still counts in the window it was granted in.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use tokio::sync::OnceCell;
use weir_proxy::lock;

use super::{
    local::now_micros,
    redis::{Ask, GlobalStore, Grant, Unavailable},
    window::{self, Windows},
    Decision,
};

/// One batched limit's shares, by key.
pub struct Batched {
    p: window::Params,
    interval: Duration,
    store: Arc<GlobalStore>,
    /// Keys held at most; past it, a new key is counted per request in Redis.
    cap: usize,
    keys: Mutex<HashMap<String, Arc<Entry>>>,
}

struct Entry {
    /// Set once the first lease call for the key has been answered (or failed).
    first: OnceCell<()>,
    /// Held by the one request topping up a spent share between syncs.
    refill: tokio::sync::Mutex<()>,
    share: Mutex<Share>,
}

#[derive(Default)]
struct Share {
    /// Requests this gateway may still admit (counted in Redis already).
    lease: u64,
    /// Start (Redis clock) of the window the lease was counted in.
    lease_start: u64,
    /// Requests seen since the last sync, passed or not: the demand.
    seen: u64,
    /// Redis's windows at the last sync, on this process's clock.
    view: Option<Windows>,
    /// Room Redis had left after the last grant.
    room: u64,
    /// When the last sync was answered (this process's clock).
    synced_at: u64,
    /// The last sync failed: Redis is unreachable.
    down: bool,
}

impl Batched {
    /// Shares of `p` counted in `store`, reconciled every `interval`, at most `cap` keys.
    pub fn start(
        p: window::Params,
        interval: Duration,
        store: Arc<GlobalStore>,
        cap: usize,
    ) -> Arc<Self> {
        let batched = Arc::new(Self {
            p,
            interval,
            store,
            cap,
            keys: Mutex::default(),
        });
        tokio::spawn(sync_every(Arc::downgrade(&batched), interval));
        batched
    }

    /// Decides one request for `key` (its Redis key `redis_key`): from the share, leasing one
    /// first for a key this gateway does not hold. `None`: the table is full, count this
    /// request per request instead.
    pub async fn check(&self, redis_key: &str) -> Option<Result<Decision, Unavailable>> {
        let entry = {
            let mut keys = lock(&self.keys);
            match keys.get(redis_key) {
                Some(e) => e.clone(),
                None if keys.len() >= self.cap => return None,
                None => {
                    let e = Arc::new(Entry {
                        first: OnceCell::new(),
                        refill: tokio::sync::Mutex::new(()),
                        share: Mutex::default(),
                    });
                    keys.insert(redis_key.to_string(), e.clone());
                    e
                }
            }
        };
        entry
            .first
            .get_or_init(|| self.sync(vec![(redis_key.to_string(), entry.clone())], true))
            .await;
        let spent = {
            let mut share = lock(&entry.share);
            share.seen += 1;
            share.lease == 0 && share.room > 0 && !share.down
        };
        if spent {
            // Spent before the next sync while Redis had room: top up now rather than refuse.
            self.refill(redis_key, &entry).await;
        }
        let now = now_micros();
        let mut share = lock(&entry.share);
        let Some(view) = share.view else {
            // Never reached Redis for this key.
            return Some(Err(Unavailable));
        };
        let view = Windows::at(Some(view), self.p.per, now);
        let x = now.saturating_sub(view.start);
        let until_sync = (share.synced_at + self.interval.as_micros() as u64).saturating_sub(now);
        let allowed = share.lease > 0;
        if allowed {
            share.lease -= 1;
        } else if share.down {
            // The share is spent and Redis cannot lease more: the failure mode decides.
            return Some(Err(Unavailable));
        }
        let retry_after = if allowed {
            0
        } else if share.room > 0 {
            until_sync
        } else {
            until_sync.max(window::until_fit(self.p, view, x, 1))
        };
        Some(Ok(Decision {
            allowed,
            limit: self.p.limit,
            remaining: share.lease,
            reset: Duration::from_micros(window::until_fit(self.p, view, x, self.p.limit)),
            retry_after: Duration::from_micros(retry_after),
        }))
    }

    /// Tops up `entry`'s spent share at once, to twice the requests seen since the last sync;
    /// one request does it while the others for the key wait for its answer.
    async fn refill(&self, redis_key: &str, entry: &Entry) {
        let _one = entry.refill.lock().await;
        let ask = {
            let share = lock(&entry.share);
            if share.lease > 0 || share.room == 0 || share.down {
                return;
            }
            Ask {
                key: redis_key.to_string(),
                back: 0,
                back_start: share.lease_start,
                want: (2 * share.seen).clamp(1, self.p.limit),
            }
        };
        match self.store.lease(self.p, 3 * self.interval, &[ask]).await {
            Ok(grants) => {
                if let Some(g) = grants.first() {
                    apply(&mut lock(&entry.share), *g, now_micros());
                }
            }
            Err(Unavailable) => lock(&entry.share).down = true,
        }
    }

    /// One lease call for `entries`: `first` asks for a whole share for keys just seen, else
    /// each key gives back what exceeds its demand (all of it, and leaves the table, if it
    /// saw no request) and tops up to 1.5 × its demand.
    async fn sync(&self, entries: Vec<(String, Arc<Entry>)>, first: bool) {
        let mut asks = Vec::with_capacity(entries.len());
        let mut idle = Vec::new();
        for (key, entry) in &entries {
            let mut share = lock(&entry.share);
            if !first && share.seen == 0 {
                idle.push(key.clone());
            }
            asks.push(plan(&mut share, key, first, self.p.limit));
        }
        if !idle.is_empty() {
            let mut keys = lock(&self.keys);
            for key in &idle {
                keys.remove(key);
            }
        }
        let stale = 3 * self.interval;
        let Ok(grants) = self.store.lease(self.p, stale, &asks).await else {
            for (_, entry) in &entries {
                lock(&entry.share).down = true;
            }
            return;
        };
        let now = now_micros();
        for ((_, entry), g) in entries.iter().zip(grants) {
            apply(&mut lock(&entry.share), g, now);
        }
    }

    /// Keys held (for tests of the memory bound).
    pub fn len(&self) -> usize {
        lock(&self.keys).len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a share asks of Redis at a sync: `first`, a whole share; else it keeps at most 1.5 ×
/// the requests it saw since the last sync and asks for the rest up to that; having seen
/// none, it gives everything back (and is forgotten).
fn plan(share: &mut Share, key: &str, first: bool, limit: u64) -> Ask {
    let target = match (first, share.seen) {
        (true, _) => limit,
        (false, 0) => 0,
        (false, seen) => (seen + seen / 2).clamp(1, limit),
    };
    let back = share.lease.saturating_sub(target);
    share.lease -= back;
    share.seen = 0;
    Ask {
        key: key.to_string(),
        back,
        back_start: share.lease_start,
        want: target - share.lease.min(target),
    }
}

/// Takes Redis's answer into a share.
fn apply(share: &mut Share, g: Grant, now: u64) {
    if g.granted > 0 || share.lease == 0 {
        share.lease_start = g.start;
    }
    share.lease += g.granted;
    share.room = g.room;
    share.synced_at = now;
    share.down = false;
    share.view = Some(Windows {
        start: now.saturating_sub(g.x),
        cur: g.cur,
        prev: g.prev,
    });
}

/// Reconciles every key held once per `interval`, until the limit is dropped.
async fn sync_every(batched: Weak<Batched>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(b) = batched.upgrade() else { return };
        let entries: Vec<(String, Arc<Entry>)> = lock(&b.keys)
            .iter()
            .filter(|(_, e)| e.first.initialized())
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        if !entries.is_empty() {
            b.sync(entries, false).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_keeps_what_its_demand_needs_and_gives_the_rest_back() {
        let mut share = Share::default();
        let first = plan(&mut share, "k", true, 600);
        assert_eq!(
            (first.want, first.back),
            (600, 0),
            "a new key asks for all it can get"
        );
        apply(
            &mut share,
            Grant {
                granted: 200,
                start: 7,
                cur: 200,
                room: 400,
                ..Grant::default()
            },
            1,
        );
        assert_eq!((share.lease, share.lease_start), (200, 7));
        // 40 requests since: keep 60, give 140 back to the window the lease came from.
        share.lease -= 30;
        share.seen = 40;
        let ask = plan(&mut share, "k", false, 600);
        assert_eq!((ask.back, ask.back_start, ask.want), (110, 7, 0));
        assert_eq!(share.lease, 60);
        // 100 requests, 60 passed: top up to 150.
        share.lease = 0;
        share.seen = 100;
        let ask = plan(&mut share, "k", false, 600);
        assert_eq!((ask.back, ask.want), (0, 150));
        // None since: everything back, nothing asked.
        share.lease = 25;
        let ask = plan(&mut share, "k", false, 600);
        assert_eq!((ask.back, ask.want, share.lease), (25, 0, 0));
    }

    #[test]
    fn redis_counts_become_a_view_on_this_clock() {
        let mut share = Share {
            down: true,
            ..Share::default()
        };
        let grant = Grant {
            granted: 3,
            start: 1_000,
            prev: 8,
            cur: 5,
            x: 400,
            room: 2,
        };
        apply(&mut share, grant, 10_000);
        assert!(!share.down);
        assert_eq!(
            share.view,
            Some(Windows {
                start: 9_600,
                cur: 5,
                prev: 8
            })
        );
        assert_eq!((share.lease, share.room, share.synced_at), (3, 2, 10_000));
    }
}
