//! Any string as a request path, under any path policy (the first byte picks it): normalisation
//! refuses it or gives a path that starts with `/`, has no empty, `.` or `..` segment, and is
//! its own normal form, so that the backend (were it to normalise again) sees the path the
//! route matched. Never panics.
//!
//! cargo +nightly fuzz run normalize_path fuzz/corpus/normalize_path   (from proxy/)
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use weir_proxy::normalize::{normalize_path, EscapedSlashes, PathParameters, PathPolicy};

fuzz_target!(|data: &[u8]| {
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    let Ok(path) = std::str::from_utf8(rest) else {
        return;
    };
    let policy = PathPolicy {
        escaped_slashes: match choice % 3 {
            0 => EscapedSlashes::Reject,
            1 => EscapedSlashes::Unescape,
            _ => EscapedSlashes::Keep,
        },
        parameters: match choice / 3 % 3 {
            0 => PathParameters::Reject,
            1 => PathParameters::Strip,
            _ => PathParameters::Keep,
        },
    };
    let Ok(normal) = normalize_path(path, policy) else {
        return;
    };
    if let Cow::Borrowed(same) = &normal {
        assert_eq!(*same, path);
    }
    assert!(normal.starts_with('/'), "{path:?} -> {normal:?}");
    let segments: Vec<&str> = normal[1..].split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        // Only the last may be empty: a trailing slash.
        let empty = segment.is_empty() && i + 1 < segments.len();
        assert!(
            !empty && !matches!(*segment, "." | ".."),
            "{path:?} -> {normal:?}"
        );
    }
    let again = normalize_path(&normal, policy).expect("a normal path is a valid path");
    assert_eq!(again, normal, "{path:?} normalises in one pass");
});
