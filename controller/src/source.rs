//! The directory source: the same objects as a cluster, from YAML files, polled for changes
//! (see [`weir_api::load::fingerprint`]).

use std::{path::PathBuf, sync::Arc, time::Duration};

use weir_api::load::{fingerprint, DirCache};

use crate::Controller;

/// Loads `dir` now, then again after every change (looking every `poll`), waiting `debounce`
/// after a change is seen so that several writes are compiled once. Runs until its task is
/// dropped.
pub async fn watch_dir(
    dir: PathBuf,
    controller: Arc<Controller>,
    poll: Duration,
    debounce: Duration,
) {
    let mut seen = None;
    let cache = Arc::new(std::sync::Mutex::new(DirCache::default()));
    loop {
        let now = fingerprint(&dir);
        if seen.as_ref() != Some(&now) {
            if seen.is_some() {
                tokio::time::sleep(debounce).await;
            }
            seen = Some(fingerprint(&dir));
            let (dir, controller, cache) = (dir.clone(), controller.clone(), cache.clone());
            // Reading and compiling touches the disk and takes a while for big configs.
            let _ = tokio::task::spawn_blocking(move || {
                let (objects, errors) = cache.lock().unwrap_or_else(|e| e.into_inner()).load(&dir);
                controller.apply(objects, errors);
            })
            .await;
        }
        tokio::time::sleep(poll).await;
    }
}
