//! Reading objects from a directory of multi-document YAML files, as `kubectl get -o yaml`
//! writes them (single objects, `---`-separated documents, or a `kind: List`).

use std::{
    path::{Path, PathBuf},
    time::SystemTime,
};

use crate::{
    error::{ConfigError, ConfigErrors, Location},
    objects::{Object, Objects},
};

/// Loads every `*.yaml`/`*.yml`/`*.json` file directly in `dir` (hidden files are skipped, as
/// Kubernetes ConfigMap volumes keep their bookkeeping in `..data`-style hidden entries).
/// Kinds Weir does not use are ignored; everything else must parse, and all problems are
/// reported together.
pub fn load_dir(dir: &Path) -> Result<Objects, ConfigErrors> {
    let (objects, errors) = load_dir_partial(dir);
    if errors.is_empty() {
        Ok(objects)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Like [`load_dir`], but keeps every object that did load next to the errors, for a caller
/// that applies the rest of the configuration and keeps the last good version of what failed
/// (the controller). Each file is parsed straight into the result: unlike [`DirCache`], nothing
/// is kept and nothing copied, so loading a big directory peaks at one copy of its objects.
pub fn load_dir_partial(dir: &Path) -> (Objects, Vec<ConfigError>) {
    let (mut objects, mut errors) = (Objects::new(), Vec::new());
    let files = match config_files(dir) {
        Ok(files) => files,
        Err(e) => return (objects, vec![unreadable_dir(dir, &e)]),
    };
    for file in files {
        read_file(&file, &mut objects, &mut errors);
    }
    (objects, errors)
}

const UNREADABLE_DIR: &str = "cannot read directory: ";

fn unreadable_dir(dir: &Path, e: &std::io::Error) -> ConfigError {
    let location = Location {
        file: Some(dir.display().to_string()),
        document: None,
    };
    ConfigError::new(&location, "-", "-", format!("{UNREADABLE_DIR}{e}"))
}

/// Whether `error` says the directory itself could not be read (missing, not a directory, no
/// permission): a load that says nothing about its objects.
pub fn is_unreadable_dir(error: &ConfigError) -> bool {
    error.object == "-" && error.field == "-" && error.message.starts_with(UNREADABLE_DIR)
}

/// Loads a directory again and again, parsing only the files whose size or modification time
/// changed since the last load (the controller reloads a big directory on every change).
#[derive(Default)]
pub struct DirCache {
    files: std::collections::HashMap<PathBuf, CachedFile>,
}

struct CachedFile {
    stamp: (u64, Option<SystemTime>),
    objects: Objects,
    errors: Vec<ConfigError>,
}

impl DirCache {
    /// Every object in `dir` and every problem, as [`load_dir_partial`] gives them.
    pub fn load(&mut self, dir: &Path) -> (Objects, Vec<ConfigError>) {
        let mut errors = Vec::new();
        let mut objects = Objects::new();
        let files = match config_files(dir) {
            Ok(files) => files,
            Err(e) => {
                errors.push(unreadable_dir(dir, &e));
                return (objects, errors);
            }
        };
        self.files.retain(|path, _| files.contains(path));
        for file in files {
            let stamp = std::fs::metadata(&file)
                .map(|m| (m.len(), m.modified().ok()))
                .unwrap_or_default();
            let cached = match self.files.get(&file) {
                Some(cached) if cached.stamp == stamp => cached,
                _ => {
                    let parsed = parse_file(&file, stamp);
                    self.files
                        .entry(file.clone())
                        .insert_entry(parsed)
                        .into_mut()
                }
            };
            errors.extend(cached.errors.iter().cloned());
            for (object, location) in cached.objects.iter() {
                if let Err(e) = objects.insert(object.clone(), location.clone()) {
                    errors.push(e);
                }
            }
        }
        (objects, errors)
    }
}

/// The `*.yaml`/`*.yml`/`*.json` files directly in `dir`, hidden ones skipped, sorted.
fn config_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_none_or(|n| n.starts_with('.'));
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or_default();
            !hidden && matches!(ext, "yaml" | "yml" | "json") && p.is_file()
        })
        .collect();
    files.sort();
    Ok(files)
}

fn parse_file(file: &Path, stamp: (u64, Option<SystemTime>)) -> CachedFile {
    let (mut objects, mut errors) = (Objects::new(), Vec::new());
    read_file(file, &mut objects, &mut errors);
    CachedFile {
        stamp,
        objects,
        errors,
    }
}

/// Parses `file` into `objects`, or says why it cannot be read.
fn read_file(file: &Path, objects: &mut Objects, errors: &mut Vec<ConfigError>) {
    let name = file.display().to_string();
    match std::fs::read_to_string(file) {
        Ok(text) => load_str(&text, &name, objects, errors),
        Err(e) => {
            let location = Location {
                file: Some(name),
                document: None,
            };
            errors.push(ConfigError::new(
                &location,
                "-",
                "-",
                format!("cannot read file: {e}"),
            ));
        }
    }
}

/// What a directory looks like to a watcher: each entry's path, size and modification time.
pub type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// Fingerprints `dir`. Watchers poll this rather than use inotify: polling sees every way a
/// file can change, including the atomic symlink swap Kubernetes uses for ConfigMap volumes,
/// and costs a few `stat` calls per interval.
pub fn fingerprint(dir: &Path) -> Fingerprint {
    let mut entries: Fingerprint = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            // metadata() follows symlinks, so a ConfigMap's swapped target is seen.
            let meta = std::fs::metadata(e.path()).ok()?;
            Some((e.path(), meta.len(), meta.modified().ok()))
        })
        .collect();
    entries.sort();
    entries
}

/// Parses the documents of one file into `objects`, collecting problems in `errors`.
///
/// Documents are read one at a time and turned into typed objects as soon as the parser
/// yields them, so a large file never holds all its documents as generic JSON values at once
/// (for 5,000 routes that intermediate form was most of the gateway's peak memory).
pub fn load_str(text: &str, file: &str, objects: &mut Objects, errors: &mut Vec<ConfigError>) {
    // serde-saphyr's default budget (1,024 documents per file) is a guard against document
    // storms; a `kubectl get -o yaml` dump of a big cluster legitimately has many more. The
    // alias and depth limits (billion-laughs protection) and the 256 MiB input cap stay.
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! { max_documents: 1_000_000, max_nodes: 50_000_000, max_events: 200_000_000 },
    };
    let mut reader = text.as_bytes();
    let documents = serde_saphyr::read_with_options::<_, serde_json::Value>(&mut reader, options);
    for (index, document) in documents.enumerate() {
        let location = Location {
            file: Some(file.to_string()),
            document: Some(index),
        };
        let document = match document {
            Ok(document) => document,
            Err(e) => {
                // The parser stops at the first broken document; the ones before it stand.
                errors.push(ConfigError::new(
                    &location,
                    "-",
                    "-",
                    format!("invalid YAML: {e}"),
                ));
                return;
            }
        };
        for item in typed(document, &location) {
            match item {
                Ok(object) => {
                    if let Err(e) = objects.insert(object, location.clone()) {
                        errors.push(e);
                    }
                }
                Err(e) => errors.push(e),
            }
        }
    }
}

/// One document's objects: itself, or the items of a `kind: List`. Kinds Weir does not use
/// are left out.
fn typed(document: serde_json::Value, location: &Location) -> Vec<Result<Object, ConfigError>> {
    let items = match document {
        serde_json::Value::Null => return Vec::new(),
        serde_json::Value::Object(mut map)
            if map.get("kind").and_then(|k| k.as_str()) == Some("List") =>
        {
            match map.remove("items") {
                Some(serde_json::Value::Array(items)) => items,
                _ => {
                    return vec![Err(ConfigError::new(
                        location,
                        "List",
                        "items",
                        "a List needs an items array",
                    ))]
                }
            }
        }
        other => vec![other],
    };
    items
        .into_iter()
        .filter_map(|item| Object::from_value(item, location).transpose())
        .collect()
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    fn names(objects: &Objects) -> Vec<String> {
        objects.iter().map(|(o, _)| o.key().to_string()).collect()
    }

    fn service(name: &str) -> String {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{ports: [{{port: 80}}]}}\n")
    }

    #[test]
    fn a_cached_directory_sees_every_change_and_only_reparses_changed_files() {
        let dir = std::env::temp_dir().join(format!("weir-dircache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.yaml"), service("a")).unwrap();
        std::fs::write(dir.join("b.yaml"), service("b")).unwrap();
        let mut cache = DirCache::default();
        let (objects, errors) = cache.load(&dir);
        assert!(errors.is_empty());
        assert_eq!(names(&objects), ["Service shop/a", "Service shop/b"]);

        std::fs::write(dir.join("b.yaml"), service("b2")).unwrap();
        std::fs::write(dir.join("c.yaml"), service("a")).unwrap();
        let (objects, errors) = cache.load(&dir);
        assert_eq!(names(&objects), ["Service shop/a", "Service shop/b2"]);
        assert!(
            errors[0]
                .message
                .contains("the same object is also defined in"),
            "a duplicate across files is still caught: {errors:?}"
        );

        std::fs::remove_file(dir.join("a.yaml")).unwrap();
        std::fs::remove_file(dir.join("c.yaml")).unwrap();
        let (objects, errors) = cache.load(&dir);
        assert!(errors.is_empty());
        assert_eq!(names(&objects), ["Service shop/b2"]);
        assert_eq!(cache.files.len(), 1, "removed files leave the cache");
        assert_eq!(load_dir_partial(&dir).0.len(), objects.len());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
