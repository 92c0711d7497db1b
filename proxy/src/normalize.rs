//! Path normalisation before routing, so that a route for `/public` can never be used to reach
//! `/admin`: percent-encoded unreserved characters are decoded (`%2e` → `.`), `//` collapses,
//! `.` and `..` segments are resolved (never above the root). Encoded slashes (`%2F`) stay
//! encoded: they are data inside a segment, not separators. The backend receives the path
//! exactly as it was matched.

use std::borrow::Cow;

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
}

/// Returns the normalised form of `path` (without the query): `path` itself, borrowed, when
/// it is already normal (the usual case, which then costs no copy).
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        // `*` (OPTIONS *) and authority-form are not routable paths.
        return Err(PathError::NotAbsolute);
    }
    // Fast path: nothing to decode, no empty or dot segments.
    if !path.contains('%') && !path.contains("//") && !path.contains("/.") {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    let mut segments: Vec<&str> = Vec::new();
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    for segment in decoded.split('/') {
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
/// the rest, and refuses malformed escapes and control characters.
fn decode_unreserved(path: &str) -> Result<String, PathError> {
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
            } else {
                out.push(b'%');
                out.extend(hex.bytes().map(|h| h.to_ascii_uppercase()));
            }
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    // Only ASCII took the place of ASCII escapes: still the UTF-8 it was.
    String::from_utf8(out).map_err(|_| PathError::BadEscape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_cannot_escape_a_prefix() {
        assert_eq!(normalize_path("/public/../admin").unwrap(), "/admin");
        assert_eq!(normalize_path("/public/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(normalize_path("/public/%2E%2E/admin").unwrap(), "/admin");
        assert_eq!(normalize_path("/a/../../../admin").unwrap(), "/admin");
        assert_eq!(normalize_path("//admin").unwrap(), "/admin");
        assert_eq!(normalize_path("/./admin/.").unwrap(), "/admin/");
    }

    #[test]
    fn keeps_what_it_must() {
        assert_eq!(normalize_path("/").unwrap(), "/");
        assert_eq!(normalize_path("/a/b/").unwrap(), "/a/b/");
        assert_eq!(normalize_path("/a%2Fb").unwrap(), "/a%2Fb");
        assert_eq!(normalize_path("/a%2fb/..").unwrap(), "/");
        assert_eq!(normalize_path("/%7euser").unwrap(), "/~user");
        assert_eq!(normalize_path("/..").unwrap(), "/");
    }

    #[test]
    fn characters_beyond_ascii_stay_as_they_were_sent() {
        // Found by proxy/fuzz's normalize_path: each byte of `é` became a character of its
        // own, so the normal form changed again when normalised.
        let normal = normalize_path("/caf\u{e9}//%41/\u{48d}/./x").unwrap();
        assert_eq!(normal, "/caf\u{e9}/A/\u{48d}/x");
        assert_eq!(normalize_path(&normal).unwrap(), normal);
        assert!(http::Uri::try_from("/caf\u{e9}/%41").is_ok());
    }

    #[test]
    fn refuses_malformed() {
        assert_eq!(normalize_path("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(normalize_path("/a%2"), Err(PathError::BadEscape));
        assert_eq!(normalize_path("/a%00"), Err(PathError::Control));
        assert_eq!(normalize_path("*"), Err(PathError::NotAbsolute));
    }
}
