//! Path normalisation before routing, so that a route for `/public` can never be used to reach
//! `/admin`: percent-encoded unreserved characters are decoded (`%2e` → `.`), `//` collapses,
//! `.` and `..` segments are resolved (never above the root). The backend receives the path
//! exactly as it was matched: normalised once, and that form forwarded.
//!
//! Some backends read a path differently from plain RFC 3986, and a path they would resolve to
//! `/admin` must not match `/public` here. The [`PathPolicy`] (weir-ingress's and
//! `weir-sidecar run`'s `--escaped-slashes` and `--path-parameters`) says what happens to:
//! - encoded slashes and backslashes (`%2F`, `%5C`) and raw backslashes, which backends that
//!   decode before resolving dots, or that run on Windows, take as separators;
//! - `;` parameters in a segment (`/admin;x/users`, `/..;/`), which Tomcat and Spring remove
//!   before routing.
//!
//! Both are refused (400) by default; either can be made separators (unescape) or removed
//! (strip) before routing, or passed through as data (keep).

use std::borrow::Cow;

use crate::headers::named;

/// Why a path was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `%` not followed by two hex digits.
    #[error("malformed percent-encoding in the path")]
    BadEscape,
    /// Not an origin-form path (`/...`).
    #[error("the path must start with /")]
    NotAbsolute,
    /// A decoded NUL or control character.
    #[error("control character in the path")]
    Control,
    /// `%2F`, `%5C` or `\` under [`EscapedSlashes::Reject`].
    #[error("encoded slash or backslash in the path")]
    EscapedSlash,
    /// A `;` parameter under [`PathParameters::Reject`].
    #[error("path parameter (;) in the path")]
    Parameter,
}

/// How paths are read before routing: what a gateway does with the forms that backends read
/// differently. The default refuses both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathPolicy {
    /// `%2F`, `%5C` and `\`.
    pub escaped_slashes: EscapedSlashes,
    /// `;` parameters in a segment.
    pub parameters: PathParameters,
}

/// What happens to encoded slashes and backslashes (`%2F`, `%5C`) and raw backslashes (`\`)
/// (Envoy's `path_with_escaped_slashes_action`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EscapedSlashes {
    /// The request is refused with 400.
    #[default]
    Reject,
    /// Each is a `/`, before dots are resolved and routes matched; the backend receives the
    /// path with `/` in their place.
    Unescape,
    /// Passed on as data inside a segment (`%2F` stays encoded, `\` stays). Only for backends
    /// known to read them the same way.
    Keep,
}

/// What happens to `;` parameters in a path segment (`/a;jsessionid=1/b`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PathParameters {
    /// The request is refused with 400.
    #[default]
    Reject,
    /// Removed from every segment (from `;` to the segment's end) before dots are resolved and
    /// routes matched: `/public/..;/admin` is `/admin`, and is sent on as that.
    Strip,
    /// Part of the segment, as RFC 3986 reads it (`..;` is not a dot segment).
    Keep,
}

named!(EscapedSlashes: "reject" => Reject, "unescape" => Unescape, "keep" => Keep);
named!(PathParameters: "reject" => Reject, "strip" => Strip, "keep" => Keep);

/// Returns the normalised form of `path` (without the query) under `policy`: `path` itself,
/// borrowed, when it is already normal (the usual case, which then costs no copy).
pub fn normalize_path(path: &str, policy: PathPolicy) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        // `*` (OPTIONS *) and authority-form are not routable paths.
        return Err(PathError::NotAbsolute);
    }
    // Fast path: nothing to decode, no empty or dot segments, nothing a backend reads
    // differently.
    let special = path.bytes().any(|b| matches!(b, b'%' | b'\\' | b';'));
    if !special && !path.contains("//") && !path.contains("/.") {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(path, policy.escaped_slashes)?;
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing = false;
    for segment in decoded.split('/') {
        let segment = match (segment.split_once(';'), policy.parameters) {
            (None, _) | (Some(_), PathParameters::Keep) => segment,
            (Some(_), PathParameters::Reject) => return Err(PathError::Parameter),
            (Some((kept, _)), PathParameters::Strip) => kept,
        };
        // Whether the path ends in a directory: after an empty, `.` or `..` last segment.
        trailing = matches!(segment, "" | "." | "..");
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || (trailing && !segments.is_empty()) {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// Decodes `%XX` escapes of unreserved characters (RFC 3986 §6.2.2.2), uppercases the hex of
/// the rest, applies `slashes` to `%2F`, `%5C` and `\`, and refuses malformed escapes and
/// control characters.
fn decode(path: &str, slashes: EscapedSlashes) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    // Bytes, not chars: a byte of a multi-byte character pushed as a char would become a
    // character of its own (`é` would turn into `Ã©`).
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
            let hex = std::str::from_utf8(hex).map_err(|_| PathError::BadEscape)?;
            let value = u8::from_str_radix(hex, 16).map_err(|_| PathError::BadEscape)?;
            if value < 0x20 || value == 0x7f {
                return Err(PathError::Control);
            }
            if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~') {
                out.push(value);
            } else if matches!(value, b'/' | b'\\') {
                separator(&mut out, slashes, Some(hex))?;
            } else {
                out.push(b'%');
                out.extend(hex.bytes().map(|h| h.to_ascii_uppercase()));
            }
            i += 3;
        } else {
            if b == b'\\' {
                separator(&mut out, slashes, None)?;
            } else {
                out.push(b);
            }
            i += 1;
        }
    }
    // Only ASCII took the place of ASCII escapes: still the UTF-8 it was.
    String::from_utf8(out).map_err(|_| PathError::BadEscape)
}

/// Writes what stands for an encoded slash or backslash (`escape`: its hex digits) or a raw
/// backslash (`None`) under `slashes`.
fn separator(
    out: &mut Vec<u8>,
    slashes: EscapedSlashes,
    escape: Option<&str>,
) -> Result<(), PathError> {
    match (slashes, escape) {
        (EscapedSlashes::Reject, _) => return Err(PathError::EscapedSlash),
        (EscapedSlashes::Unescape, _) => out.push(b'/'),
        (EscapedSlashes::Keep, Some(hex)) => {
            out.push(b'%');
            out.extend(hex.bytes().map(|h| h.to_ascii_uppercase()));
        }
        (EscapedSlashes::Keep, None) => out.push(b'\\'),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The policy as RFC 3986 alone reads paths: Weir's behaviour before the path policy.
    const KEEP: PathPolicy = PathPolicy {
        escaped_slashes: EscapedSlashes::Keep,
        parameters: PathParameters::Keep,
    };
    const UNESCAPE_STRIP: PathPolicy = PathPolicy {
        escaped_slashes: EscapedSlashes::Unescape,
        parameters: PathParameters::Strip,
    };

    fn normal(path: &str) -> Result<Cow<'_, str>, PathError> {
        normalize_path(path, PathPolicy::default())
    }

    #[test]
    fn traversal_cannot_escape_a_prefix() {
        assert_eq!(normal("/public/../admin").unwrap(), "/admin");
        assert_eq!(normal("/public/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(normal("/public/%2E%2E/admin").unwrap(), "/admin");
        assert_eq!(normal("/a/../../../admin").unwrap(), "/admin");
        assert_eq!(normal("//admin").unwrap(), "/admin");
        assert_eq!(normal("/./admin/.").unwrap(), "/admin/");
    }

    #[test]
    fn keeps_what_it_must() {
        assert!(matches!(normal("/a/b").unwrap(), Cow::Borrowed("/a/b")));
        assert_eq!(normal("/").unwrap(), "/");
        assert_eq!(normal("/a/b/").unwrap(), "/a/b/");
        assert_eq!(normal("/%7euser").unwrap(), "/~user");
        assert_eq!(normal("/..").unwrap(), "/");
        assert_eq!(normal("/a%3Bb").unwrap(), "/a%3Bb", "an encoded ; is data");
        assert_eq!(normalize_path("/a%2Fb", KEEP).unwrap(), "/a%2Fb");
        assert_eq!(normalize_path("/a%2fb/..", KEEP).unwrap(), "/");
    }

    #[test]
    fn characters_beyond_ascii_stay_as_they_were_sent() {
        // Found by proxy/fuzz's normalize_path: each byte of `é` became a character of its
        // own, so the normal form changed again when normalised.
        let form = normal("/caf\u{e9}//%41/\u{48d}/./x").unwrap();
        assert_eq!(form, "/caf\u{e9}/A/\u{48d}/x");
        assert_eq!(normal(&form).unwrap(), form);
        assert!(http::Uri::try_from("/caf\u{e9}/%41").is_ok());
    }

    #[test]
    fn refuses_malformed() {
        assert_eq!(normal("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(normal("/a%2"), Err(PathError::BadEscape));
        assert_eq!(normal("/a%00"), Err(PathError::Control));
        assert_eq!(normal("*"), Err(PathError::NotAbsolute));
    }

    /// Every form a backend may read as `/admin/users` while RFC 3986 reads it otherwise.
    const TRICKS: [&str; 6] = [
        "/admin;x/users",
        "/public/..;/admin/users",
        "/admin%2fusers",
        "/public/..%2Fadmin/users",
        "/public\\..\\admin\\users",
        "/admin%5cusers",
    ];

    #[test]
    fn forms_backends_read_differently_are_refused_by_default() {
        for path in TRICKS {
            assert!(normal(path).is_err(), "{path} passed");
        }
        assert_eq!(normal("/admin;x/users"), Err(PathError::Parameter));
        assert_eq!(normal("/admin%2Fusers"), Err(PathError::EscapedSlash));
        assert_eq!(normal("/a\\b"), Err(PathError::EscapedSlash));
        assert_eq!(normal("/a%5Cb"), Err(PathError::EscapedSlash));
    }

    #[test]
    fn unescape_and_strip_give_the_path_backends_see() {
        for path in TRICKS {
            assert_eq!(
                normalize_path(path, UNESCAPE_STRIP).unwrap(),
                "/admin/users",
                "{path}"
            );
        }
        assert_eq!(
            normalize_path("/a;v=1;w=2/b;x/", UNESCAPE_STRIP).unwrap(),
            "/a/b/"
        );
        assert_eq!(normalize_path("/a/..;", UNESCAPE_STRIP).unwrap(), "/");
    }

    #[test]
    fn each_option_applies_alone() {
        let strip_only = PathPolicy {
            parameters: PathParameters::Strip,
            ..PathPolicy::default()
        };
        assert_eq!(normalize_path("/a;x/b", strip_only).unwrap(), "/a/b");
        assert_eq!(
            normalize_path("/a%2Fb", strip_only),
            Err(PathError::EscapedSlash)
        );
        let keep_slashes = PathPolicy {
            escaped_slashes: EscapedSlashes::Keep,
            ..PathPolicy::default()
        };
        assert_eq!(
            normalize_path("/a%5cb\\c", keep_slashes).unwrap(),
            "/a%5Cb\\c"
        );
        assert_eq!(
            normalize_path("/a;x", keep_slashes),
            Err(PathError::Parameter)
        );
        assert_eq!(
            normalize_path("/public/..;/admin", KEEP).unwrap(),
            "/public/..;/admin"
        );
    }

    #[test]
    fn modes_are_named_on_the_command_line() {
        assert_eq!("unescape".parse(), Ok(EscapedSlashes::Unescape));
        assert_eq!("reject".parse(), Ok(EscapedSlashes::default()));
        assert_eq!("strip".parse(), Ok(PathParameters::Strip));
        assert_eq!("keep".parse(), Ok(PathParameters::Keep));
        assert!("merge".parse::<EscapedSlashes>().is_err());
    }
}
