//! The query parameters of lists and watches.

use std::time::Duration;

use serde_json::Value;

use super::{
    selector::{FieldSelector, LabelSelector},
    ApiError,
};

/// The query parameters of a list or watch.
#[derive(Default)]
pub struct Query {
    pub watch: bool,
    pub resource_version: Option<u64>,
    pub(super) exact: bool,
    pub(super) limit: Option<usize>,
    pub(super) continue_token: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    pub timeout: Option<Duration>,
    pub bookmarks: bool,
}

impl Query {
    pub fn parse(query: &str) -> Result<Self, ApiError> {
        let mut parsed = Self::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = decode(value);
            match key {
                "watch" => parsed.watch = value == "true" || value == "1",
                "resourceVersion" if value.is_empty() => {}
                "resourceVersion" => {
                    parsed.resource_version = Some(value.parse().map_err(|_| {
                        ApiError::bad_request(format!("invalid resourceVersion {value:?}"))
                    })?)
                }
                "resourceVersionMatch" => match value.as_str() {
                    "Exact" => parsed.exact = true,
                    "NotOlderThan" | "" => {}
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "resourceVersionMatch: Unsupported value: {other:?}"
                        )))
                    }
                },
                "limit" => parsed.limit = value.parse().ok().filter(|l| *l > 0),
                "continue" if !value.is_empty() => parsed.continue_token = Some(value),
                "labelSelector" => parsed.labels = LabelSelector::parse(&value)?,
                "fieldSelector" => parsed.fields = FieldSelector::parse(&value)?,
                "timeoutSeconds" => {
                    parsed.timeout = value.parse().ok().map(Duration::from_secs);
                }
                "allowWatchBookmarks" => parsed.bookmarks = value == "true",
                _ => {}
            }
        }
        if parsed.exact && parsed.resource_version.is_none() {
            return Err(ApiError::bad_request(
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        Ok(parsed)
    }

    pub(super) fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }
}

pub(super) fn decode(value: &str) -> String {
    let value = value.replace('+', " ");
    percent_encoding::percent_decode_str(&value)
        .decode_utf8_lossy()
        .into_owned()
}
