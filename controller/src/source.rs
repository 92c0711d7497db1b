//! The directory source: the same objects as a cluster, from YAML files, polled for changes
//! by [`weir_api::watch`]. Parsed files are kept between loads ([`DirCache`]): a big
//! directory is reloaded at every change, and only the files that changed are parsed again.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use weir_api::{
    load::DirCache,
    watch::{self, Poll, Start},
};

use crate::{lock, Controller};

/// Loads `dir` now, then again after every change (looking every `poll.interval`, waiting
/// `poll.settle` after a change is seen so that several writes are compiled once). Runs until
/// its task is dropped.
pub async fn watch_dir(dir: PathBuf, controller: Arc<Controller>, poll: Poll) {
    let cache = Mutex::new(DirCache::default());
    watch::watch_dir(dir, poll, Start::Load, move |dir: &Path| {
        let (objects, errors) = lock(&cache).load(dir);
        controller.apply(objects, errors);
    })
    .await
}
