//! The directory source: the same objects as a cluster, from YAML files, polled for changes
//! (see [`weir_api::load::fingerprint`]).

use std::{path::PathBuf, sync::Arc, time::Duration};

use weir_api::load::{fingerprint, load_dir_partial};

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
    loop {
        let now = fingerprint(&dir);
        if seen.as_ref() != Some(&now) {
            if seen.is_some() {
                tokio::time::sleep(debounce).await;
            }
            seen = Some(fingerprint(&dir));
            let (dir, controller) = (dir.clone(), controller.clone());
            // Reading and compiling touches the disk and takes a while for big configs.
            let _ = tokio::task::spawn_blocking(move || {
                let (objects, errors) = load_dir_partial(&dir);
                controller.apply(objects, errors);
            })
            .await;
        }
        tokio::time::sleep(poll).await;
    }
}
