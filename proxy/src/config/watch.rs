//! Watching a directory of objects and reloading when it changes. The directory is polled
//! (see [`weir_api::load::fingerprint`]).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use weir_api::{
    error::ConfigErrors,
    load::{fingerprint, load_dir_partial},
};

use super::Installer;

/// How the directory is watched.
#[derive(Clone, Debug)]
pub struct WatchSettings {
    /// How often to look for changes.
    pub interval: Duration,
    /// Wait this long after a change is seen, so an editor's several writes are read once.
    pub settle: Duration,
}

impl Default for WatchSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(200),
            settle: Duration::from_millis(50),
        }
    }
}

/// Loads and compiles `dir`, installing the result or recording why not. Returns the new
/// version, or the errors. Every file is read again: a proxy keeps no parsed copy of its
/// objects between reloads (the controller, which reloads big directories often, does).
pub fn reload<R: Default + Send + Sync + 'static>(
    dir: &Path,
    installer: &Installer<R>,
) -> Result<u64, ConfigErrors> {
    let (objects, errors) = load_dir_partial(dir);
    let result = if errors.is_empty() {
        weir_api::compile(&objects)
    } else {
        Err(ConfigErrors(errors))
    };
    match result {
        Ok(snapshot) => {
            let version = installer.install(snapshot, None);
            tracing::info!(version, dir = %dir.display(), "configuration applied");
            Ok(version)
        }
        Err(errors) => {
            installer.reject(&errors);
            for e in &errors.0 {
                tracing::error!(error = %e, "configuration rejected; the last good configuration keeps serving");
            }
            Err(errors)
        }
    }
}

/// Polls `dir` forever, reloading on change. Runs until its task is dropped.
pub async fn watch_dir<R: Default + Send + Sync + 'static>(
    dir: PathBuf,
    installer: Arc<Installer<R>>,
    settings: WatchSettings,
) {
    let mut seen = fingerprint(&dir);
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let now = fingerprint(&dir);
        if now == seen {
            continue;
        }
        tokio::time::sleep(settings.settle).await;
        seen = fingerprint(&dir);
        let (dir, installer) = (dir.clone(), installer.clone());
        // Reading and compiling touches the disk and may take a while for big configs.
        let _ = tokio::task::spawn_blocking(move || reload(&dir, &installer)).await;
    }
}
