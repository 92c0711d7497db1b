//! How a RateLimitPolicy limit counts: `algorithm` with its `burst`, and `syncInterval`.
//! A limit counts by sliding window unless `algorithm: gcra` asks for even pacing, which then
//! needs its `burst`. A `burst` with no `algorithm` is GCRA, as every limit was before the
//! sliding window, so a policy written then keeps counting as it did; a `burst` with
//! `slidingWindow`, or a `syncInterval` where it cannot apply, is refused rather than ignored.
//! Each check returns the field in error and why.

use std::time::Duration;

use crate::{crds::Limit, duration::parse_duration, model::Algorithm};

/// A field under `spec.limits[i]` and what is wrong with it.
pub(super) type Bad = (&'static str, String);

/// `algorithm` and `burst` together, or the field in error and why.
pub(super) fn algorithm(l: &Limit) -> Result<Algorithm, Bad> {
    match (l.algorithm.as_deref(), l.burst) {
        (None | Some("slidingWindow"), None) => Ok(Algorithm::SlidingWindow),
        (None, Some(burst)) => Ok(Algorithm::Gcra { burst }),
        (Some("slidingWindow"), Some(_)) => Err((
            "burst",
            "applies to algorithm: gcra only (the default slidingWindow admits rate.requests \
             at once): remove burst, or set algorithm: gcra for even pacing"
                .into(),
        )),
        (Some("gcra"), Some(burst)) => Ok(Algorithm::Gcra { burst }),
        (Some("gcra"), None) => Err((
            "burst",
            "is required with algorithm: gcra (requests allowed at once above the even rate; \
             0 admits one at a time)"
                .into(),
        )),
        (Some(other), _) => Err(("algorithm", format!("{other:?}: use slidingWindow or gcra"))),
    }
}

/// `syncInterval`: for global sliding-window limits only, and shorter than `per`.
pub(super) fn sync_interval(
    l: &Limit,
    per: Duration,
    global: bool,
    algorithm: Algorithm,
) -> Result<Option<Duration>, Bad> {
    let Some(text) = &l.sync_interval else {
        return Ok(None);
    };
    let bad = |why: String| Err(("syncInterval", why));
    let interval = match parse_duration(text) {
        Ok(d) => d,
        Err(e) => return bad(e),
    };
    if !global {
        return bad("applies to scope: global only (a local limit never calls Redis)".into());
    }
    if algorithm != Algorithm::SlidingWindow {
        return bad(
            "batching works with the sliding window only: remove algorithm: gcra, or \
             syncInterval"
                .into(),
        );
    }
    if interval.is_zero() || interval >= per {
        return bad(format!(
            "{text:?} must be longer than 0 and shorter than rate.per ({})",
            l.rate.per
        ));
    }
    Ok(Some(interval))
}
