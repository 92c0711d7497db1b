//! One compile with a bad object kept out instead of the whole change.
//!
//! [`crate::compile`] rejects a set of objects as a whole. The controller and `weir-ingress
//! --config-dir` must do better: the rest of a change applies, and a bad object's last good
//! version keeps serving. So a compile that fails is retried with each offending object
//! swapped for its last good version (or, when it never had one, left out) until the set
//! compiles.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::{error::ConfigErrors, ConfigError, ObjectKey, Objects, Snapshot};

/// At most this many retries per compile; each one changes at least one object.
const MAX_ROUNDS: usize = 16;

/// Compiles objects, remembering the last accepted version of each.
#[derive(Default)]
pub struct Compiler {
    last_good: Objects,
}

/// A compile that produced a snapshot, and what was kept out of it.
pub struct Compiled {
    /// The snapshot every node's view is cut from.
    pub snapshot: Snapshot,
    /// Objects whose current version was refused.
    pub rejected: Vec<Rejection>,
}

/// One refused object.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    /// `Kind namespace/name` (or `-` with the file, when the object could not be read).
    pub object: String,
    /// Every reason, with file and field.
    pub errors: Vec<ConfigError>,
    /// `previous` when its last good version is still serving, `none` when it never had one.
    pub serving: &'static str,
}

impl Compiler {
    /// Compiles `objects`; `load_errors` are the documents that did not even parse (their
    /// file's objects keep their last good versions).
    pub fn compile(
        &mut self,
        mut objects: Objects,
        load_errors: Vec<ConfigError>,
    ) -> Result<Compiled, ConfigErrors> {
        // A directory that could not be read (gone, unreadable) says nothing about its
        // objects: the whole change is refused (the last good configuration keeps serving; at
        // startup, none starts).
        if load_errors.iter().any(crate::load::is_unreadable_dir) {
            return Err(ConfigErrors(load_errors));
        }
        let mut errors: BTreeMap<String, Vec<ConfigError>> = BTreeMap::new();
        // What serves its last good version instead, by the name errors give it.
        let mut restored: BTreeSet<String> = BTreeSet::new();
        let keys: HashMap<String, ObjectKey> = objects
            .iter()
            .map(|(o, _)| (o.key().to_string(), o.key()))
            .collect();
        // An object defined in two files: neither copy serves (its last good version does, if
        // it had one), so the alphabetically first file cannot take another's object over.
        for error in load_errors.iter().filter(|e| keys.contains_key(&e.object)) {
            let key = &keys[&error.object];
            objects.remove(key);
            if let Some((object, location)) = self.last_good.get(key) {
                let _ = objects.insert(object.clone(), location.clone());
                restored.insert(error.object.clone());
            }
        }
        // Files that did not parse: their objects keep their last good versions.
        let broken_files: BTreeSet<String> = load_errors
            .iter()
            .filter(|e| !keys.contains_key(&e.object))
            .filter_map(|e| e.location.file.clone())
            .collect();
        let mut restored_files = BTreeSet::new();
        for (object, location) in self.last_good.iter() {
            let key = object.key();
            let Some(file) = location.file.as_ref().filter(|f| broken_files.contains(*f)) else {
                continue;
            };
            if objects.get(&key).is_none() {
                let _ = objects.insert(object.clone(), location.clone());
                restored.insert(key.to_string());
                restored_files.insert(file.clone());
            }
        }
        for error in load_errors {
            // A document that did not parse is served by its file's previous objects.
            if error
                .location
                .file
                .as_ref()
                .is_some_and(|f| restored_files.contains(f))
            {
                restored.insert(error.object.clone());
            }
            errors.entry(error.object.clone()).or_default().push(error);
        }
        for _ in 0..MAX_ROUNDS {
            let failed = match crate::compile(&objects) {
                Ok(snapshot) => {
                    self.last_good = objects;
                    let rejected = errors
                        .into_iter()
                        .map(|(object, errors)| {
                            let serving = if restored.contains(&object) {
                                "previous"
                            } else {
                                "none"
                            };
                            Rejection {
                                object,
                                errors,
                                serving,
                            }
                        })
                        .collect();
                    return Ok(Compiled { snapshot, rejected });
                }
                Err(failed) => failed,
            };
            let keys: HashMap<String, ObjectKey> = objects
                .iter()
                .map(|(o, _)| (o.key().to_string(), o.key()))
                .collect();
            let mut changed = false;
            for error in &failed.0 {
                let Some(key) = keys.get(&error.object) else {
                    continue;
                };
                errors
                    .entry(error.object.clone())
                    .or_default()
                    .push(error.clone());
                match self.last_good.get(key) {
                    Some((object, location)) if !restored.contains(&error.object) => {
                        // Replaced, wherever the failing version was defined.
                        objects.remove(key);
                        let _ = objects.insert(object.clone(), location.clone());
                        restored.insert(error.object.clone());
                        changed = true;
                    }
                    _ => {
                        changed |= objects.remove(key).is_some();
                        restored.remove(&error.object);
                    }
                }
            }
            if !changed {
                return Err(failed);
            }
        }
        Err(ConfigErrors(errors.into_values().flatten().collect()))
    }
}

#[cfg(test)]
mod tests;
