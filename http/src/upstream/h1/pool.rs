//! Idle keep-alive connections to backends, by authority. A connection is taken out for one
//! exchange and put back when its response has been read to the end. Each worker thread
//! prefers the connections it made (they are registered with its own event loop); a sweeper
//! closes connections idle past the timeout or closed by the backend.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, PoisonError, Weak,
    },
    time::Duration,
};

use http::uri::Authority;

use super::Conn;

/// Idle connections, most recently used last, by authority as written. (`Authority`'s own
/// `Hash` and `Eq` fold case byte by byte, which cost more than the rest of a checkout; the
/// client's URIs name backends one way.)
pub(super) struct Pool {
    idle: Mutex<HashMap<Box<str>, Vec<Idle>, foldhash::fast::RandomState>>,
    timeout: Duration,
    /// Sweeps so far. A connection put back notes the count rather than the time (a clock read
    /// per request); it has been idle for the timeout once enough sweeps have followed.
    sweeps: AtomicU64,
}

struct Idle {
    conn: Conn,
    /// The mesh identity it proved (`None`: plaintext).
    peer: Option<Arc<str>>,
    /// Sweeps done when it was put back.
    since: u64,
    home: usize,
}

/// How often a pool with this idle timeout is swept.
fn sweep_period(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5))
}

/// A small number naming the current thread (cheaper to ask than `std::thread::current()`,
/// which counts a reference to the thread's handle up and down).
fn thread_number() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static NUMBER: usize = NEXT.fetch_add(1, Ordering::Relaxed));
    NUMBER.with(|n| *n)
}

impl Pool {
    /// A pool closing connections idle for `timeout`; with a tokio runtime at hand, a task
    /// sweeps it for as long as the pool lives.
    pub(super) fn new(timeout: Duration) -> Arc<Self> {
        let pool = Arc::new(Self {
            idle: Mutex::default(),
            timeout,
            sweeps: AtomicU64::new(0),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep(Arc::downgrade(&pool)));
        }
        pool
    }

    /// An open idle connection to `authority` that proved `expected` (plaintext for `None`),
    /// preferring one this thread made.
    pub(super) fn checkout(
        &self,
        authority: &Authority,
        expected: Option<&Arc<str>>,
    ) -> Option<Conn> {
        let here = thread_number();
        loop {
            let idle = {
                let mut map = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                let list = map.get_mut(authority.as_str())?;
                let proved = |i: &Idle| i.peer.as_deref() == expected.map(|e| &**e);
                let at = list
                    .iter()
                    .rposition(|i| i.home == here && proved(i))
                    .or_else(|| list.iter().rposition(proved))?;
                list.swap_remove(at)
            };
            // Closed by the backend while idle: close it and look again. (Connections idle
            // past the timeout are the sweeper's.)
            if idle.conn.is_open() {
                return Some(idle.conn);
            }
        }
    }

    /// Puts a connection whose exchange is complete back for the next request.
    pub(super) fn put(&self, authority: &Authority, peer: Option<Arc<str>>, conn: Conn) {
        let idle = Idle {
            conn,
            peer,
            since: self.sweeps.load(Ordering::Relaxed),
            home: thread_number(),
        };
        let mut map = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get_mut(authority.as_str()) {
            Some(list) => list.push(idle),
            None => {
                map.insert(authority.as_str().into(), vec![idle]);
            }
        }
    }

    /// Counts a sweep and takes out the connections idle too long or closed by their backend;
    /// they close when dropped, after the lock is released. A connection put back after sweep
    /// `n` has been idle for the timeout by sweep `n + 1 + ceil(timeout / period)`: at most one
    /// period late, never early.
    fn expired(&self) -> Vec<Conn> {
        let period = sweep_period(self.timeout);
        let periods =
            u64::try_from(self.timeout.as_nanos().div_ceil(period.as_nanos())).unwrap_or(u64::MAX);
        let now = self.sweeps.fetch_add(1, Ordering::Relaxed) + 1;
        let mut gone = Vec::new();
        let mut map = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        for list in map.values_mut() {
            let mut i = 0;
            while i < list.len() {
                let idle_periods = now.saturating_sub(list[i].since + 1);
                if idle_periods >= periods || !list[i].conn.is_open() {
                    gone.push(list.remove(i).conn);
                } else {
                    i += 1;
                }
            }
        }
        map.retain(|_, list| !list.is_empty());
        gone
    }
}

/// Sweeps the pool a few times per idle timeout until it is dropped.
async fn sweep(pool: Weak<Pool>) {
    let Some(period) = pool.upgrade().map(|p| sweep_period(p.timeout)) else {
        return;
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        drop(pool.expired());
    }
}
