//! Reading objects from a directory of multi-document YAML files, as `kubectl get -o yaml`
//! writes them (single objects, `---`-separated documents, or a `kind: List`).

use std::path::Path;

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
/// (the controller).
pub fn load_dir_partial(dir: &Path) -> (Objects, Vec<ConfigError>) {
    let mut errors = Vec::new();
    let mut objects = Objects::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            let location = Location {
                file: Some(dir.display().to_string()),
                document: None,
            };
            errors.push(ConfigError::new(
                &location,
                "-",
                "-",
                format!("cannot read directory: {e}"),
            ));
            return (objects, errors);
        }
    };
    let mut files: Vec<_> = entries
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
    for file in files {
        let name = file.display().to_string();
        match std::fs::read_to_string(&file) {
            Ok(text) => load_str(&text, &name, &mut objects, &mut errors),
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
    (objects, errors)
}

/// What a directory looks like to a watcher: each entry's path, size and modification time.
pub type Fingerprint = Vec<(std::path::PathBuf, u64, Option<std::time::SystemTime>)>;

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
pub fn load_str(text: &str, file: &str, objects: &mut Objects, errors: &mut Vec<ConfigError>) {
    // serde-saphyr's default budget (1,024 documents per file) is a guard against document
    // storms; a `kubectl get -o yaml` dump of a big cluster legitimately has many more. The
    // alias and depth limits (billion-laughs protection) and the 256 MiB input cap stay.
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! { max_documents: 1_000_000, max_nodes: 50_000_000, max_events: 200_000_000 },
    };
    let documents: Documents = match serde_saphyr::from_str_multiple_with_options(text, options) {
        Ok(docs) => docs,
        Err(e) => {
            let location = Location {
                file: Some(file.to_string()),
                document: None,
            };
            errors.push(ConfigError::new(
                &location,
                "-",
                "-",
                format!("invalid YAML: {e}"),
            ));
            return;
        }
    };
    for (index, document) in documents.0.into_iter().enumerate() {
        let location = Location {
            file: Some(file.to_string()),
            document: Some(index),
        };
        for item in document {
            match item {
                Ok(object) => {
                    if let Err(e) = objects.insert(object, location.clone()) {
                        errors.push(e);
                    }
                }
                Err(mut e) => {
                    e.location.file = location.file.clone();
                    errors.push(e);
                }
            }
        }
    }
}

/// The documents of one file, each turned into typed objects as soon as the parser yields it,
/// so a large file never holds all its documents as generic JSON values at once (for 5,000
/// routes that intermediate form was most of the gateway's peak memory).
#[derive(Default)]
struct Documents(Vec<Vec<Result<Object, ConfigError>>>);

impl Extend<serde_json::Value> for Documents {
    fn extend<I: IntoIterator<Item = serde_json::Value>>(&mut self, values: I) {
        for value in values {
            let location = Location {
                file: None,
                document: Some(self.0.len()),
            };
            self.0.push(typed(value, &location));
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
