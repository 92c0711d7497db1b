//! Any bytes as a backend's answer: the response head parser waits, refuses with a typed
//! error, or gives a head whose body length (for GET and HEAD alike) is one reading of it, the
//! same with a fresh field cache and a reused one. A chunked body after it decodes without
//! panicking. Backends are not trusted either: a compromised one must not crash the gateway.
//!
//! cargo +nightly fuzz run response_head fuzz/corpus/response_head   (from proxy/)
#![no_main]

use bytes::BytesMut;
use http::Method;
use libfuzzer_sys::fuzz_target;
use weir_http::codec::{body_length, parse_head, BodyLength, Chunked, Decoded, Fields};

fuzz_target!(|data: &[u8]| {
    let mut fields = Fields::default();
    let mut first = BytesMut::from(data);
    let fresh = parse_head(&mut first, &mut fields);
    let mut second = BytesMut::from(data);
    let cached = parse_head(&mut second, &mut fields);
    let head = match (fresh, cached) {
        (Ok(Some(a)), Ok(Some(b))) => {
            assert_eq!(
                (a.status, a.version, a.keep_alive),
                (b.status, b.version, b.keep_alive)
            );
            assert_eq!(a.headers, b.headers);
            assert_eq!(body_length(&Method::GET, &a), body_length(&Method::GET, &b));
            a
        }
        (Ok(None), Ok(None)) => return,
        (Err(a), Err(b)) => return assert_eq!(a, b),
        (a, b) => panic!(
            "fresh {:?} but cached {:?}",
            a.map(|h| h.is_some()),
            b.map(|h| h.is_some())
        ),
    };
    assert_eq!(body_length(&Method::HEAD, &head), Ok(BodyLength::Empty));
    if body_length(&Method::GET, &head) == Ok(BodyLength::Chunked) {
        let mut decoder = Chunked::default();
        while let Ok(Decoded::Data(_)) = decoder.decode(&mut first) {}
    }
});
