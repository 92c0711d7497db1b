//! Configuration errors that say exactly what was wrong: which file, which object, which field.

use std::fmt;

/// Where an object came from: a file (and the document index inside it) or the API server.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Location {
    /// The file the object was read from, if it came from a directory.
    pub file: Option<String>,
    /// Zero-based index of the YAML document inside the file.
    pub document: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.document) {
            (Some(file), Some(doc)) => write!(f, "{file} (document {})", doc + 1),
            (Some(file), None) => write!(f, "{file}"),
            _ => write!(f, "<api server>"),
        }
    }
}

/// One reason a piece of configuration was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("{location}: {object}: {field}: {message}")]
pub struct ConfigError {
    /// Where the object came from.
    pub location: Location,
    /// `Kind namespace/name` of the offending object (or `-` when it could not be read).
    pub object: String,
    /// Path of the offending field, e.g. `spec.rules[0].matches[1].path.value`.
    pub field: String,
    /// What was wrong, for a human.
    pub message: String,
}

impl ConfigError {
    /// Builds an error; `object` is usually an [`ObjectKey`](crate::ObjectKey) rendered.
    pub fn new(
        location: &Location,
        object: impl fmt::Display,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            location: location.clone(),
            object: object.to_string(),
            field: field.into(),
            message: message.into(),
        }
    }
}

/// All the errors of one load or compile, reported together so a user fixes them in one pass.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
