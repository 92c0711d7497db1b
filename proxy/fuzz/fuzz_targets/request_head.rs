//! Any bytes as the start of a client connection: the request head parser waits for more,
//! refuses the head with a typed error, or returns a head whose framing is one reading of it;
//! it never panics. The same bytes parse the same way with a fresh field cache and with the
//! one a previous head left (as a keep-alive connection reuses it).
//!
//! cargo +nightly fuzz run request_head fuzz/corpus/request_head   (from proxy/)
#![no_main]

use bytes::BytesMut;
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use libfuzzer_sys::fuzz_target;
use weir_http::codec::{parse_request, Fields, RequestBodyLength, MAX_HEAD};

fuzz_target!(|data: &[u8]| {
    let mut fields = Fields::default();
    let mut first = BytesMut::from(data);
    let fresh = parse_request(&mut first, &mut fields, MAX_HEAD);
    let mut second = BytesMut::from(data);
    let cached = parse_request(&mut second, &mut fields, MAX_HEAD);
    match (fresh, cached) {
        (Ok(Some(a)), Ok(Some(b))) => {
            assert_eq!(a.parts.method, b.parts.method);
            assert_eq!(a.parts.uri, b.parts.uri);
            assert_eq!(a.parts.version, b.parts.version);
            assert_eq!(a.parts.headers, b.parts.headers);
            assert_eq!((a.body, a.keep_alive), (b.body, b.keep_alive));
            assert_eq!(first, second, "the same bytes are left for the body");
            let headers = &a.parts.headers;
            assert!(headers.get_all(HOST).iter().count() <= 1);
            match a.body {
                RequestBodyLength::Chunked => {
                    assert!(headers.contains_key(TRANSFER_ENCODING));
                    assert!(!headers.contains_key(CONTENT_LENGTH));
                }
                RequestBodyLength::Length(n) => {
                    assert!(n > 0);
                    assert!(!headers.contains_key(TRANSFER_ENCODING));
                }
                RequestBodyLength::Empty => assert!(!headers.contains_key(TRANSFER_ENCODING)),
            }
        }
        (Ok(None), Ok(None)) => {}
        (Err(a), Err(b)) => assert_eq!(a, b),
        (a, b) => panic!(
            "fresh {:?} but cached {:?}",
            a.map(|h| h.is_some()),
            b.map(|h| h.is_some())
        ),
    }
});
