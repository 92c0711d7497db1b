//! Any bytes as a chunked body, fed to the decoder whole and in pieces of any size: both ways
//! give the same data and the same trailers (or both refuse it) and leave the same bytes after
//! the body, so where a body ends never depends on how the network split it. Never panics.
//!
//! cargo +nightly fuzz run chunked fuzz/corpus/chunked   (from proxy/)
#![no_main]

use bytes::BytesMut;
use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use weir_http::codec::{Chunked, Decoded, ProtocolError};

/// How decoding ended: the body, its trailers and the bytes left after it; or still waiting
/// (with the data so far); or an error.
#[derive(Debug, PartialEq)]
enum Outcome {
    Ended(Vec<u8>, Option<HeaderMap>, usize),
    Waiting(Vec<u8>),
    Failed(ProtocolError),
}

fn decode(wire: &[u8], step: usize) -> Outcome {
    let mut decoder = Chunked::default();
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    let mut fed = 0;
    loop {
        match decoder.decode(&mut buf) {
            Ok(Decoded::Data(d)) => {
                assert!(!d.is_empty(), "no empty data frames");
                data.extend_from_slice(&d);
            }
            Ok(Decoded::Trailers(t)) => {
                return Outcome::Ended(data, Some(t), buf.len() + wire.len() - fed)
            }
            Ok(Decoded::Done) => return Outcome::Ended(data, None, buf.len() + wire.len() - fed),
            Ok(Decoded::More) if fed == wire.len() => return Outcome::Waiting(data),
            Ok(Decoded::More) => {
                let end = (fed + step).min(wire.len());
                buf.extend_from_slice(&wire[fed..end]);
                fed = end;
            }
            Err(e) => return Outcome::Failed(e),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, wire)) = data.split_first() else {
        return;
    };
    let whole = decode(wire, wire.len().max(1));
    let pieces = decode(wire, usize::from(step).max(1));
    match (&whole, &pieces) {
        // Waiting with part of the data: pieces may have handed out less of a chunk so far.
        (Outcome::Waiting(a), Outcome::Waiting(b)) => assert!(a.starts_with(b) || b.starts_with(a)),
        // Refused both ways; which fault is seen first may depend on the split (`\r\r\n\n`
        // in a trailer: a bad field value, or a bare LF), and both refuse the message.
        (Outcome::Failed(_), Outcome::Failed(_)) => {}
        _ => assert_eq!(whole, pieces),
    }
});
