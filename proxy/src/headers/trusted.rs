//! Header names that a backend may read as one Weir vouches for. CGI, WSGI and Rack map `-`
//! and `_` to the same variable (`X_User_Id` and `X-User-Id` are both `HTTP_X_USER_ID`), so
//! removing a client's `x-user-id` before stamping the verified one is not enough: its
//! `x_user_id` spelling must go too. [`drop_lookalikes`] removes, before anything reads the
//! request, every name with `_` (the default, as nginx's `underscores_in_headers off`), or
//! only those that read as a vouched name once `_` is `-` (weir-ingress's
//! `--underscore-headers keep`).

use http::{HeaderMap, HeaderName};

use super::named;

/// What happens to request header names that contain `_`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnderscoreHeaders {
    /// Every such header is removed: no backend can mistake one for a header Weir sets.
    #[default]
    Drop,
    /// Kept, unless `_` read as `-` gives a name Weir sets or vouches for.
    Keep,
}

named!(UnderscoreHeaders: "drop" => Drop, "keep" => Keep);

/// Names a gateway sets on the way in (request id, trace context, what it says about the
/// client), whatever its field modes: their lookalikes are dropped even when a mode leaves
/// the dash spelling as the client sent it, since a backend could not tell which one it got.
pub const STAMPED: [&str; 7] = [
    "x-request-id",
    "traceparent",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "x-real-ip",
];

/// Removes the request headers whose names contain `_`: all of them with
/// [`UnderscoreHeaders::Drop`], or those that `vouched` says are trusted once each `_` reads
/// as `-` ([`UnderscoreHeaders::Keep`]). Returns how many names went.
pub fn drop_lookalikes(
    headers: &mut HeaderMap,
    underscores: UnderscoreHeaders,
    vouched: impl Fn(&str) -> bool,
) -> usize {
    // Most requests have no such name: one pass over the names, no allocation.
    if !headers.keys().any(|n| n.as_str().contains('_')) {
        return 0;
    }
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().contains('_'))
        .filter(|n| match underscores {
            UnderscoreHeaders::Drop => true,
            UnderscoreHeaders::Keep => vouched(&n.as_str().replace('_', "-")),
        })
        .cloned()
        .collect();
    for name in &doomed {
        headers.remove(name);
    }
    doomed.len()
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn request() -> HeaderMap {
        [
            "x_user_id",
            "X_Weir_Peer_Identity",
            "x-user-id",
            "my_app_flag",
            "accept",
        ]
        .into_iter()
        .map(|n| {
            let name = HeaderName::from_bytes(n.as_bytes()).unwrap();
            (name, HeaderValue::from_static("v"))
        })
        .collect()
    }

    /// The names left, sorted (removal reorders the map).
    fn names(h: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    fn vouched(name: &str) -> bool {
        ["x-user-id", "x-weir-peer-identity"].contains(&name)
    }

    #[test]
    fn drop_removes_every_underscored_name() {
        let mut h = request();
        assert_eq!(
            drop_lookalikes(&mut h, UnderscoreHeaders::Drop, |_| false),
            3
        );
        assert_eq!(names(&h), ["accept", "x-user-id"]);
    }

    #[test]
    fn keep_removes_only_lookalikes_of_vouched_names() {
        let mut h = request();
        assert_eq!(drop_lookalikes(&mut h, UnderscoreHeaders::Keep, vouched), 2);
        assert_eq!(names(&h), ["accept", "my_app_flag", "x-user-id"]);
    }

    #[test]
    fn named_on_the_command_line() {
        assert_eq!("keep".parse(), Ok(UnderscoreHeaders::Keep));
        assert_eq!("drop".parse(), Ok(UnderscoreHeaders::default()));
        assert!("allow".parse::<UnderscoreHeaders>().is_err());
    }
}
