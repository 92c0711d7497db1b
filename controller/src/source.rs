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
    let mut cache = DirCache::default();
    loop {
        let now = fingerprint(&dir);
        if seen.as_ref() != Some(&now) {
            if seen.is_some() {
                tokio::time::sleep(debounce).await;
            }
            seen = Some(fingerprint(&dir));
            let (dir, controller) = (dir.clone(), controller.clone());
            // Reading and compiling touches the disk and takes a while for big configs. The
            // cache goes along and comes back.
            cache = tokio::task::spawn_blocking(move || {
                let (objects, errors) = cache.load(&dir);
                controller.apply(objects, errors);
                cache
            })
            .await
            .unwrap_or_default();
        }
        tokio::time::sleep(poll).await;
    }
}
