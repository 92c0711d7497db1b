//! `--config-dir`: the ingress on its own, compiling a directory of objects itself and
//! installing the result, again after every change ([`weir_api::watch`] polls it). Every
//! file is read again at each reload. As in the controller, a bad object is refused and the
//! rest of the directory serves: its last good version if it had one, nothing if not
//! ([`Compiler`]).

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use weir_api::{
    error::ConfigErrors,
    load::{load_dir_partial, Fingerprint},
    watch::{self, Poll, Start},
    Compiler,
};
use weir_proxy::config::Installer;

/// Loads and compiles `dir` (each refused object logged with its file, object and field, the
/// rest installed), or records why nothing could be. Returns the new version, or the errors.
pub fn reload<R: Default + Send + Sync + 'static>(
    dir: &Path,
    compiler: &Mutex<Compiler>,
    installer: &Installer<R>,
) -> Result<u64, ConfigErrors> {
    let (objects, load_errors) = load_dir_partial(dir);
    let result = compiler
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .compile(objects, load_errors);
    match result {
        Ok(compiled) => {
            let mut refused = Vec::new();
            for rejection in compiled.rejected {
                for error in &rejection.errors {
                    tracing::warn!(%error, serving = rejection.serving, "object refused; the rest of the directory serves");
                }
                refused.extend(rejection.errors);
            }
            let version = installer.install(compiled.snapshot, None);
            installer.refused(refused);
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

/// Reloads `dir` after every change, forever; the caller has loaded it once already, as it
/// was when `read` was taken (just before).
pub async fn follow<R: Default + Send + Sync + 'static>(
    dir: PathBuf,
    compiler: Arc<Mutex<Compiler>>,
    installer: Arc<Installer<R>>,
    read: Fingerprint,
) {
    watch::watch_dir(
        dir,
        Poll::default(),
        Start::After(read),
        move |dir: &Path| {
            let _ = reload(dir, &compiler, &installer);
        },
    )
    .await
}
