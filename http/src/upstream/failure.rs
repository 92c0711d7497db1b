//! Why an exchange with a backend failed, for the operator. The client and the metrics see
//! only its classification ([`classify`]: `connect-failed`, `backend-reset`, ...), which is
//! what decides the status, the retries and the breaker; the debug log gets the whole cause
//! (every source, down to the system call's error) and the endpoint, the way Pingora's
//! `Error` keeps its type, side and cause together.
//!
//! A dead backend under load fails thousands of times a second, so the lines are rate-limited
//! as Tor's `ratelim_t` summarizes repeated messages: at most one line per endpoint and kind of
//! failure each second, carrying how many lines it stands for since the last one. The limiter
//! is consulted only when debug lines are wanted, so a quiet log costs the request path
//! nothing.

use std::{
    collections::HashMap,
    hash::Hash,
    net::SocketAddr,
    sync::{LazyLock, Mutex},
    time::{Duration, Instant},
};

use super::{classify, UpstreamError};
use crate::error::{chain, ProxyError};

/// How often one endpoint's failures of one kind may be logged.
const PERIOD: Duration = Duration::from_secs(1);

/// How many endpoint-and-kind pairs are remembered at once: far more than fail together.
const CAPACITY: usize = 4096;

static FAILURES: LazyLock<LogLimit<(SocketAddr, ProxyError)>> =
    LazyLock::new(|| LogLimit::new(PERIOD, CAPACITY));

/// What a failed exchange with `endpoint` is for the client and the metrics ([`classify`]);
/// its cause goes to the debug log, at most once a second for this endpoint and kind.
pub fn classify_and_log(error: &UpstreamError, endpoint: SocketAddr) -> ProxyError {
    let kind = classify(error);
    if tracing::enabled!(tracing::Level::DEBUG) {
        if let Some(suppressed) = FAILURES.admit((endpoint, kind), Instant::now()) {
            tracing::debug!(
                %endpoint,
                kind = kind.reason(),
                side = kind.side().label(),
                suppressed,
                cause = %chain(error),
                "backend exchange failed"
            );
        }
    }
    kind
}

/// At most one log line per key each period, counting the lines it holds back.
pub(crate) struct LogLimit<K> {
    period: Duration,
    capacity: usize,
    keys: Mutex<HashMap<K, Slot>>,
}

/// When a key was last logged, and how many lines about it were held back since.
struct Slot {
    last: Instant,
    suppressed: u64,
}

impl<K: Hash + Eq> LogLimit<K> {
    /// A limiter remembering up to `capacity` keys.
    pub(crate) fn new(period: Duration, capacity: usize) -> Self {
        Self {
            period,
            capacity,
            keys: Mutex::default(),
        }
    }

    /// Whether a line about `key` may be written at `now`: `Some` with how many were held back
    /// since the last one, or `None` to hold this one back too (and count it). When `capacity`
    /// keys were all logged within the period, a new key is held back uncounted; keys quiet
    /// for a period are forgotten first, with their counts.
    pub(crate) fn admit(&self, key: K, now: Instant) -> Option<u64> {
        let mut keys = crate::lock(&self.keys);
        if let Some(slot) = keys.get_mut(&key) {
            if now.saturating_duration_since(slot.last) < self.period {
                slot.suppressed += 1;
                return None;
            }
            slot.last = now;
            return Some(std::mem::take(&mut slot.suppressed));
        }
        if keys.len() >= self.capacity {
            // Endpoints come and go: only the ones failing now are worth remembering.
            keys.retain(|_, slot| now.saturating_duration_since(slot.last) < self.period);
            if keys.len() >= self.capacity {
                return None;
            }
        }
        keys.insert(
            key,
            Slot {
                last: now,
                suppressed: 0,
            },
        );
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io,
        sync::{Arc, Mutex},
    };

    use super::*;
    use crate::upstream::h1;

    #[test]
    fn one_line_per_key_and_period_and_the_next_counts_the_rest() {
        let limit = LogLimit::new(Duration::from_secs(1), 16);
        let t0 = Instant::now();
        assert_eq!(limit.admit("a", t0), Some(0));
        assert_eq!(limit.admit("a", t0 + Duration::from_millis(10)), None);
        assert_eq!(limit.admit("a", t0 + Duration::from_millis(999)), None);
        assert_eq!(limit.admit("b", t0), Some(0), "keys are limited apart");
        assert_eq!(limit.admit("a", t0 + Duration::from_secs(1)), Some(2));
        assert_eq!(limit.admit("a", t0 + Duration::from_secs(3)), Some(0));
    }

    #[test]
    fn a_full_limiter_forgets_quiet_keys_and_holds_back_new_ones() {
        let limit = LogLimit::new(Duration::from_secs(1), 1);
        let t0 = Instant::now();
        assert_eq!(limit.admit("a", t0), Some(0));
        assert_eq!(limit.admit("b", t0), None, "no room while a is fresh");
        assert_eq!(limit.admit("b", t0 + Duration::from_secs(1)), Some(0));
        assert_eq!(limit.admit("a", t0 + Duration::from_secs(1)), None);
    }

    /// A writer for the test's subscriber, keeping what it is given.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            crate::lock(&self.0).extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_line_carries_the_cause_and_the_endpoint_and_the_client_sees_only_the_kind() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        // An address no other test logs about, so the shared limiter has not seen it.
        let endpoint: SocketAddr = "192.0.2.7:8123".parse().unwrap();
        let refused = || {
            let cause = io::Error::new(io::ErrorKind::ConnectionRefused, "refused by the test");
            UpstreamError::Http1(h1::Error::Connect(Box::new(cause)))
        };
        let kinds = tracing::subscriber::with_default(subscriber, || {
            [refused(), refused(), refused()].map(|e| classify_and_log(&e, endpoint))
        });
        assert_eq!(kinds, [ProxyError::ConnectFailed; 3]);
        let log = String::from_utf8(crate::lock(&captured.0).clone()).unwrap();
        assert_eq!(log.lines().count(), 1, "the repeats are held back: {log}");
        for part in [
            "backend exchange failed",
            "endpoint=192.0.2.7:8123",
            "kind=\"connect-failed\"",
            "connecting to the backend failed: refused by the test",
        ] {
            assert!(log.contains(part), "{part:?} not in {log}");
        }
        // What a client gets names the kind, never the cause.
        let response = ProxyError::ConnectFailed.response();
        assert_eq!(response.headers()["x-weir-error"], "connect-failed");
    }
}
