//! What every Weir process needs beside its configuration: a lock that outlives a panicked
//! holder, the wall clock in Unix seconds, and (feature `signal`) the wait for the signal that
//! stops it. They live here because weir-api is the one crate every binary and the engine
//! already depend on. The signal wait is behind a feature so that this crate, a pure
//! configuration model, pulls in tokio only for the binaries that stop on signals (all four
//! do, and tokio is in each of their builds already); a library or tool using the model alone
//! does not link a runtime.

use std::sync::{Mutex, MutexGuard};

/// Locks a mutex whose data stays valid even if a holder panicked (counters, estimates,
/// status): a poisoned lock is used as it is rather than taking the process down with it.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// SIGTERM (how Kubernetes stops a pod) and SIGINT (Ctrl-C): installed apart from the wait,
/// so that a process can install them as it starts (and fail then, with its own context)
/// rather than when it is told to stop.
#[cfg(feature = "signal")]
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

#[cfg(feature = "signal")]
impl Signals {
    /// Installs both handlers (inside a tokio runtime).
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits until either signal arrives.
    pub async fn received(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_used_as_it_is() {
        let mutex = std::sync::Arc::new(Mutex::new(1));
        let held = mutex.clone();
        let _ = std::thread::spawn(move || {
            let _guard = held.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(mutex.is_poisoned());
        *lock(&mutex) += 1;
        assert_eq!(*lock(&mutex), 2);
    }
}
