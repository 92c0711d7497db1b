//! `--config-dir`: the ingress on its own, compiling a directory of objects itself and
//! installing the result, again after every change ([`weir_api::watch`] polls it). Every
//! file is read again at each reload: an ingress keeps no parsed copy of its objects between
//! reloads (the controller, which reloads big directories often, does).

use std::{path::Path, path::PathBuf, sync::Arc};

use weir_api::{
    error::ConfigErrors,
    load::load_dir_partial,
    watch::{self, Poll, Start},
};
use weir_proxy::config::Installer;

/// Loads and compiles `dir`, installing the result or recording why not. Returns the new
/// version, or the errors.
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

/// Reloads `dir` after every change, forever; the caller has loaded it once already.
pub async fn follow<R: Default + Send + Sync + 'static>(
    dir: PathBuf,
    installer: Arc<Installer<R>>,
) {
    watch::watch_dir(dir, Poll::default(), Start::Wait, move |dir: &Path| {
        let _ = reload(dir, &installer);
    })
    .await
}
