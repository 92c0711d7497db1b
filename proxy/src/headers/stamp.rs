//! The fields the gateway stamps on every request as it comes in, and how much of that an
//! operator wants ([`FieldPolicy`], weir-ingress's `--request-id`, `--trace-context` and
//! `--forwarded`):
//!
//! - `x-request-id`: the client's when usable, or a new one; returned to the client and logged;
//! - `traceparent` (W3C trace context): the client's trace continued with a new span, or a new
//!   trace;
//! - `X-Forwarded-For` (the client's address appended, or alone), `-Proto` and `-Host`.

use std::net::IpAddr;

use bytes::Bytes;
use http::{header::Entry, HeaderMap, HeaderName, HeaderValue};

use super::policy::{FieldPolicy, ForwardedMode, RequestIdMode, Sampling, TraceContext};

/// The request id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The W3C trace context header.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
// Names as constants: inserting by `&str` copies a custom name into a new allocation each time.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// What a client may send about where it is from, besides `X-Forwarded-For/-Proto/-Host`:
/// dropped with [`ForwardedMode::Replace`], so a backend sees only what the gateway saw.
const CLIENT_CLAIMS: [HeaderName; 2] = [
    HeaderName::from_static("forwarded"),
    HeaderName::from_static("x-real-ip"),
];

/// What [`stamp`] hands the rest of the pipeline. The values it makes, and the `traceparent`
/// it sets, share one allocation.
pub struct Stamps {
    /// The request id, also returned to the client and logged (none only with
    /// [`RequestIdMode::Preserve`] and no usable id from the client).
    pub request_id: Option<HeaderValue>,
    /// The client's address as text, for [`set_forwarded`] (none with [`ForwardedMode::Off`]).
    pub client: Option<HeaderValue>,
    /// The request's span, when its trace is sampled (what the span is exported with).
    pub sampled: Option<TraceIds>,
}

/// The ids of a sampled request's span: its trace, its own id (the `traceparent` sent on
/// names it as the parent of the next hop), and its caller's span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceIds {
    /// The trace id.
    pub trace: u128,
    /// This proxy's span.
    pub span: u64,
    /// The caller's span (none when this proxy started the trace).
    pub parent: Option<u64>,
}

/// Lengths in the shared buffer: a request id, a `traceparent`, an address (IPv6 at most).
const ID_LEN: usize = 32;
const TRACEPARENT_LEN: usize = 55;
const ADDRESS_LEN: usize = 39;

/// Sets the request's `x-request-id` and `traceparent` as `policy` says (see [`trace_id`]),
/// and returns the id with the client's address for `X-Forwarded-For`.
pub fn stamp(headers: &mut HeaderMap, client: IpAddr, policy: FieldPolicy) -> Stamps {
    let given_id = match policy.request_id {
        RequestIdMode::Generate => None,
        RequestIdMode::PreserveOrGenerate | RequestIdMode::Preserve => headers
            .get(REQUEST_ID)
            .filter(|id| !id.is_empty() && id.len() <= 128 && id.to_str().is_ok())
            .cloned(),
    };
    let make_id = given_id.is_none() && policy.request_id != RequestIdMode::Preserve;
    let trace = policy.trace_context == TraceContext::Continue;
    let forwarded = policy.forwarded != ForwardedMode::Off;
    if !(make_id || trace || forwarded) {
        return Stamps {
            request_id: given_id,
            client: None,
            sampled: None,
        };
    }
    let mut buf = [0u8; ID_LEN + TRACEPARENT_LEN + ADDRESS_LEN];
    let (id, rest) = buf.split_at_mut(ID_LEN);
    let (traceparent, address) = rest.split_at_mut(TRACEPARENT_LEN);
    if make_id {
        hex(id, fastrand::u128(..));
    }
    let address_len = match forwarded {
        true => ip_text(client, address.try_into().expect("sized")).len(),
        false => 0,
    };
    // The caller's traceparent is read and replaced through one entry: one hash of the name.
    let entry = trace.then(|| headers.entry(TRACEPARENT));
    let mut sampled = None;
    if let Some(entry) = &entry {
        let incoming = match entry {
            Entry::Occupied(given) => Some(given.get()),
            Entry::Vacant(_) => None,
        };
        sampled = write_traceparent(traceparent, incoming, policy.sampling);
    }
    let shared = Bytes::from_owner(buf);
    let value = |from: usize, len: usize| {
        HeaderValue::from_maybe_shared(shared.slice(from..from + len))
            .unwrap_or(HeaderValue::from_static("invalid"))
    };
    match entry {
        Some(Entry::Occupied(mut given)) => {
            given.insert(value(ID_LEN, TRACEPARENT_LEN));
        }
        Some(Entry::Vacant(absent)) => {
            absent.insert(value(ID_LEN, TRACEPARENT_LEN));
        }
        None => {}
    }
    let request_id = match make_id {
        true => {
            let id = value(0, ID_LEN);
            headers.insert(REQUEST_ID, id.clone());
            Some(id)
        }
        false => given_id,
    };
    Stamps {
        request_id,
        client: forwarded.then(|| value(ID_LEN + TRACEPARENT_LEN, address_len)),
        sampled,
    }
}

/// Sets `X-Forwarded-For` to `client` (the address from [`Stamps`]; appended to the client's
/// own with [`ForwardedMode::Append`]), `-Proto`, and `-Host`: the `Host` the client asked for,
/// as it sent it. With [`ForwardedMode::Off`] it does nothing.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    mode: ForwardedMode,
    client: HeaderValue,
    proto: &'static str,
    host: Option<HeaderValue>,
) {
    match mode {
        ForwardedMode::Off => return,
        ForwardedMode::Append => match headers.entry(X_FORWARDED_FOR) {
            Entry::Occupied(mut given) if !given.get().is_empty() => {
                let appended = [given.get().as_bytes(), b", ", client.as_bytes()].concat();
                if let Ok(v) = HeaderValue::from_bytes(&appended) {
                    given.insert(v);
                }
            }
            Entry::Occupied(mut given) => {
                given.insert(client);
            }
            Entry::Vacant(absent) => {
                absent.insert(client);
            }
        },
        ForwardedMode::Replace => {
            headers.insert(X_FORWARDED_FOR, client);
            for name in &CLIENT_CLAIMS {
                headers.remove(name);
            }
            if host.is_none() {
                headers.remove(X_FORWARDED_HOST);
            }
        }
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST, host);
    }
}

/// Writes the `traceparent` to send on: the caller's trace id and flags with a new span id,
/// or a new trace, sampled as `sampling` says. Returns the span's ids when it is sampled.
fn write_traceparent(
    out: &mut [u8],
    incoming: Option<&HeaderValue>,
    sampling: Sampling,
) -> Option<TraceIds> {
    // 00-<trace id: 32>-<span id: 16>-<flags: 2>
    out.copy_from_slice(b"00-00000000000000000000000000000000-0000000000000000-00");
    // Not zero, which W3C reserves (over the full range: a bounded one costs a division).
    let span = fastrand::u64(..).max(1);
    hex(&mut out[36..52], u128::from(span));
    match incoming
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent)
    {
        Some((trace, parent, flags)) => {
            out[3..35].copy_from_slice(trace.as_bytes());
            out[53..55].copy_from_slice(flags.as_bytes());
            // Parent-based: the caller's sampled flag decides.
            let sampled = u8::from_str_radix(flags, 16).is_ok_and(|f| f & 1 == 1);
            sampled.then(|| TraceIds {
                trace: u128::from_str_radix(trace, 16).unwrap_or_default(),
                span,
                parent: u64::from_str_radix(parent, 16).ok(),
            })
        }
        None => {
            let trace = fastrand::u128(..).max(1);
            hex(&mut out[3..35], trace);
            let sampled = sampling.samples(trace);
            if sampled {
                out[54] = b'1';
            }
            sampled.then_some(TraceIds {
                trace,
                span,
                parent: None,
            })
        }
    }
}

/// An address as text in `buf`, without the formatting machinery for the common IPv4 case.
fn ip_text(ip: IpAddr, buf: &mut [u8; ADDRESS_LEN]) -> &[u8] {
    let IpAddr::V4(v4) = ip else {
        let text = ip.to_string();
        let n = text.len().min(buf.len());
        buf[..n].copy_from_slice(&text.as_bytes()[..n]);
        return &buf[..n];
    };
    let mut n = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            buf[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            buf[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + octet % 10;
        n += 1;
    }
    &buf[..n]
}

/// `value`'s low `out.len()` nibbles as lower-case hex into `out` (of even length), a byte
/// at a time.
fn hex(out: &mut [u8], value: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let bytes = value.to_be_bytes();
    let bytes = &bytes[bytes.len() - out.len() / 2..];
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

/// The trace id in a `traceparent` made by [`stamp`].
pub fn trace_id(traceparent: &HeaderValue) -> &str {
    traceparent
        .to_str()
        .ok()
        .and_then(|v| v.get(3..35))
        .unwrap_or("")
}

/// `(trace-id, parent-id, flags)` of a valid version-00 `traceparent`.
fn parse_traceparent(value: &str) -> Option<(&str, &str, &str)> {
    let mut parts = value.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let valid = version == "00"
        && parts.next().is_none()
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0');
    valid.then_some((trace, parent, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn all() -> FieldPolicy {
        FieldPolicy::default()
    }

    /// `headers` as (name, value) text pairs.
    fn map(headers: &[(&'static str, &'static str)]) -> HeaderMap {
        headers
            .iter()
            .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn trace_context_is_continued_or_started() {
        let mut h = map(&[("traceparent", PARENT)]);
        stamp(&mut h, CLIENT, all());
        let sent = h.get(TRACEPARENT).unwrap();
        assert_eq!(trace_id(sent), "4bf92f3577b34da6a3ce929d0e0e4736");
        let next = sent.to_str().unwrap();
        assert!(next.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && next.ends_with("-01"));
        assert_ne!(next, PARENT);
        assert!(next[36..52].bytes().all(|b| b.is_ascii_hexdigit()));

        let zero = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        let mut bad = map(&[("traceparent", zero)]);
        stamp(&mut bad, CLIENT, all());
        let started = bad.get(TRACEPARENT).unwrap();
        let trace = trace_id(started);
        assert_eq!(trace.len(), 32);
        assert!(trace.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(trace, "0".repeat(32));
    }

    #[test]
    fn sampling_follows_the_caller_or_the_ratio() {
        let sampling = |ratio: f64| FieldPolicy {
            sampling: Sampling::ratio(ratio).unwrap(),
            ..all()
        };
        // The caller sampled it: sampled whatever the ratio, as the caller's child.
        let mut h = map(&[("traceparent", PARENT)]);
        let ids = stamp(&mut h, CLIENT, sampling(0.0)).sampled.unwrap();
        assert_eq!(ids.trace, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(ids.parent, Some(0x00f067aa0ba902b7));
        let sent = h.get(TRACEPARENT).unwrap().to_str().unwrap().to_string();
        assert_eq!(
            sent,
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{:016x}-01", ids.span)
        );
        // The caller did not: not sampled whatever the ratio, and sent on unsampled.
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let mut h = map(&[("traceparent", unsampled)]);
        assert!(stamp(&mut h, CLIENT, sampling(1.0)).sampled.is_none());
        assert!(h
            .get(TRACEPARENT)
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with("-00"));
        // New traces: the ratio decides, and the flag says so.
        for (ratio, flag) in [(1.0, "-01"), (0.0, "-00")] {
            let mut h = HeaderMap::new();
            let ids = stamp(&mut h, CLIENT, sampling(ratio)).sampled;
            assert_eq!(ids.is_some(), ratio == 1.0);
            assert!(h
                .get(TRACEPARENT)
                .unwrap()
                .to_str()
                .unwrap()
                .ends_with(flag));
        }
        // About the ratio of them.
        let tenth = sampling(0.1);
        let n = (0..20_000)
            .filter(|_| {
                stamp(&mut HeaderMap::new(), CLIENT, tenth)
                    .sampled
                    .is_some()
            })
            .count();
        assert!((1_500..2_500).contains(&n), "{n} of 20000 at 0.1");
        assert!(Sampling::ratio(1.5).is_err() && "x".parse::<Sampling>().is_err());
    }

    #[test]
    fn trace_context_off_leaves_traceparent_as_sent() {
        let off = FieldPolicy {
            trace_context: TraceContext::Off,
            ..all()
        };
        let mut h = map(&[("traceparent", "not-a-trace")]);
        stamp(&mut h, CLIENT, off);
        assert_eq!(h.get(TRACEPARENT).unwrap(), "not-a-trace");
        let mut none = HeaderMap::new();
        let stamps = stamp(&mut none, CLIENT, off);
        assert!(none.get(TRACEPARENT).is_none());
        assert_eq!(stamps.request_id.unwrap().len(), 32, "the id is still made");
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = map(&[("x-forwarded-for", "203.0.113.9")]);
        let client = stamp(&mut h, CLIENT, all()).client.unwrap();
        let host = HeaderValue::from_static("shop.example.com:8080");
        set_forwarded(&mut h, ForwardedMode::Append, client, "http", Some(host));
        assert_eq!(h.get("x-forwarded-for").unwrap(), "203.0.113.9, 127.0.0.1");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "shop.example.com:8080");
        for ip in [
            "0.0.0.0",
            "10.20.3.255",
            "192.168.100.9",
            "::1",
            "2001:db8::7",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let mut h = HeaderMap::new();
            let client = stamp(&mut h, ip.parse().unwrap(), all()).client.unwrap();
            set_forwarded(&mut h, ForwardedMode::Append, client, "https", None);
            assert_eq!(h.get("x-forwarded-for").unwrap(), ip);
            assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
            assert!(h.get("x-forwarded-host").is_none());
        }
    }

    #[test]
    fn forwarded_replace_drops_what_the_client_claimed() {
        let claims = [
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=203.0.113.9"),
            ("x-real-ip", "203.0.113.9"),
        ];
        let replace = FieldPolicy {
            forwarded: ForwardedMode::Replace,
            ..all()
        };
        let mut h = map(&claims);
        let client = stamp(&mut h, CLIENT, replace).client.unwrap();
        let host = HeaderValue::from_static("shop.example.com");
        set_forwarded(&mut h, ForwardedMode::Replace, client, "http", Some(host));
        assert_eq!(h.get("x-forwarded-for").unwrap(), "127.0.0.1");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "shop.example.com");
        assert!(h.get("forwarded").is_none() && h.get("x-real-ip").is_none());

        let mut no_host = map(&claims);
        let client = HeaderValue::from_static("127.0.0.1");
        set_forwarded(&mut no_host, ForwardedMode::Replace, client, "http", None);
        assert!(no_host.get("x-forwarded-host").is_none());
    }

    #[test]
    fn forwarded_off_passes_the_clients_headers_untouched() {
        let off = FieldPolicy {
            forwarded: ForwardedMode::Off,
            ..all()
        };
        let claims = [("x-forwarded-for", "203.0.113.9"), ("forwarded", "for=x")];
        let mut h = map(&claims);
        assert!(stamp(&mut h, CLIENT, off).client.is_none());
        let client = HeaderValue::from_static("127.0.0.1");
        let host = Some(HeaderValue::from_static("shop.example.com"));
        set_forwarded(&mut h, ForwardedMode::Off, client, "http", host);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "203.0.113.9");
        assert_eq!(h.get("forwarded").unwrap(), "for=x");
        assert!(h.get("x-forwarded-proto").is_none() && h.get("x-forwarded-host").is_none());
    }

    #[test]
    fn hex_is_the_low_nibbles_in_order() {
        let mut long = [0u8; 32];
        let mut short = [0u8; 16];
        for v in [
            0,
            1,
            0xdead_beef,
            u128::MAX,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
        ] {
            hex(&mut long, v);
            assert_eq!(std::str::from_utf8(&long).unwrap(), format!("{v:032x}"));
            hex(&mut short, v);
            assert_eq!(
                std::str::from_utf8(&short).unwrap(),
                format!("{:016x}", v as u64)
            );
        }
    }

    #[test]
    fn request_ids_are_kept_or_made() {
        let mut h = HeaderMap::new();
        let made = stamp(&mut h, CLIENT, all()).request_id.unwrap();
        assert_eq!(h.get(REQUEST_ID), Some(&made));
        assert_eq!(made.len(), 32);
        assert!(made.as_bytes().iter().all(|b| b.is_ascii_hexdigit()));
        let other = stamp(&mut HeaderMap::new(), CLIENT, all()).request_id;
        assert_ne!(other.unwrap(), made);
        assert_eq!(
            stamp(&mut h, CLIENT, all()).request_id,
            Some(made),
            "an id the client sent is kept"
        );
        let mut unusable = map(&[("x-request-id", "")]);
        let replaced = stamp(&mut unusable, CLIENT, all()).request_id.unwrap();
        assert_eq!(replaced.len(), 32);
        assert_eq!(unusable.get(REQUEST_ID), Some(&replaced));
    }

    #[test]
    fn request_id_generate_replaces_the_clients() {
        let generate = FieldPolicy {
            request_id: RequestIdMode::Generate,
            ..all()
        };
        let mut h = map(&[("x-request-id", "chosen-by-client")]);
        let made = stamp(&mut h, CLIENT, generate).request_id.unwrap();
        assert_ne!(made, "chosen-by-client");
        assert_eq!(made.len(), 32);
        assert_eq!(h.get_all(REQUEST_ID).iter().collect::<Vec<_>>(), [&made]);
    }

    #[test]
    fn request_id_preserve_makes_none() {
        let preserve = FieldPolicy {
            request_id: RequestIdMode::Preserve,
            ..all()
        };
        let mut given = map(&[("x-request-id", "abc-123")]);
        let kept = stamp(&mut given, CLIENT, preserve).request_id;
        assert_eq!(kept.unwrap(), "abc-123");
        let mut none = HeaderMap::new();
        assert!(stamp(&mut none, CLIENT, preserve).request_id.is_none());
        assert!(none.get(REQUEST_ID).is_none());
        let mut unusable = map(&[("x-request-id", "")]);
        assert!(stamp(&mut unusable, CLIENT, preserve).request_id.is_none());
        assert_eq!(unusable.get(REQUEST_ID).unwrap(), "", "passed on as sent");
    }

    #[test]
    fn nothing_stamped_when_every_field_is_off() {
        let none = FieldPolicy {
            request_id: RequestIdMode::Preserve,
            trace_context: TraceContext::Off,
            forwarded: ForwardedMode::Off,
            sampling: Sampling::default(),
        };
        let mut h = map(&[("user-agent", "curl")]);
        let stamps = stamp(&mut h, CLIENT, none);
        assert!(stamps.request_id.is_none() && stamps.client.is_none());
        assert_eq!(h, map(&[("user-agent", "curl")]));
    }
}
