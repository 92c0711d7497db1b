//! Polling a directory of objects and acting on each change: the one poller behind the
//! controller's directory source and `weir-ingress --config-dir`. What a change means (compile
//! and install, or compile and publish) is the caller's; when to look, how long to let a
//! burst of writes settle and where the work runs are decided here.
//! The directory is polled, not watched with inotify; [`fingerprint`] says why.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use crate::load::{fingerprint, Fingerprint};

/// How a directory is polled.
#[derive(Clone, Copy, Debug)]
pub struct Poll {
    /// How often to look for changes.
    pub interval: Duration,
    /// Wait this long after a change is seen, so an editor's several writes are read once.
    pub settle: Duration,
}

impl Default for Poll {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(200),
            settle: Duration::from_millis(50),
        }
    }
}

/// Whether [`watch_dir`] acts on the directory as it is when it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// At once (nothing has read it yet).
    Load,
    /// Only after it changes from this fingerprint, taken before the caller read it: a
    /// change made while the caller read, or before the watch began, is still acted on.
    After(Fingerprint),
}

/// Calls `changed` with `dir` after every change to it (and at once with [`Start::Load`]), on a
/// blocking thread: reading and compiling touches the disk and takes a while for a big
/// directory. One call at a time; runs until its task is dropped.
pub async fn watch_dir<F>(dir: PathBuf, poll: Poll, start: Start, changed: F)
where
    F: Fn(&Path) + Send + Sync + 'static,
{
    let changed = Arc::new(changed);
    let mut seen = match start {
        Start::Load => None,
        Start::After(read) => Some(read),
    };
    loop {
        let now = fingerprint(&dir);
        if seen.as_ref() != Some(&now) {
            if seen.is_some() {
                tokio::time::sleep(poll.settle).await;
            }
            seen = Some(fingerprint(&dir));
            let (dir, changed) = (dir.clone(), changed.clone());
            // A panic in `changed` is the caller's bug, reported by the runtime; the poller
            // goes on with the next change.
            let _ = tokio::task::spawn_blocking(move || changed(&dir)).await;
        }
        tokio::time::sleep(poll.interval).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn each_change_is_acted_on_once_and_waiting_skips_the_start() {
        let dir = std::env::temp_dir().join(format!("weir-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.yaml"), "a").unwrap();
        let poll = Poll {
            interval: Duration::from_millis(10),
            settle: Duration::from_millis(5),
        };
        let count = |start| {
            let calls = Arc::new(AtomicUsize::new(0));
            let counter = calls.clone();
            let task = tokio::spawn(watch_dir(dir.clone(), poll, start, move |_: &Path| {
                counter.fetch_add(1, Ordering::SeqCst);
            }));
            (calls, task)
        };
        let (loaded, first) = count(Start::Load);
        let (waited, second) = count(Start::After(fingerprint(&dir)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(loaded.load(Ordering::SeqCst), 1, "loaded at start");
        assert_eq!(waited.load(Ordering::SeqCst), 0, "nothing changed");

        std::fs::write(dir.join("b.yaml"), "b").unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(loaded.load(Ordering::SeqCst), 2);
        assert_eq!(waited.load(Ordering::SeqCst), 1);
        first.abort();
        second.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A change between the caller's read and the watch's first look is not lost.
    #[tokio::test]
    async fn a_change_before_the_watch_begins_is_acted_on() {
        let dir = std::env::temp_dir().join(format!("weir-watch-early-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.yaml"), "a").unwrap();
        let read = fingerprint(&dir);
        std::fs::write(dir.join("a.yaml"), "changed").unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let poll = Poll {
            interval: Duration::from_millis(10),
            settle: Duration::from_millis(5),
        };
        let task = tokio::spawn(watch_dir(
            dir.clone(),
            poll,
            Start::After(read),
            move |_: &Path| {
                counter.fetch_add(1, Ordering::SeqCst);
            },
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        task.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
