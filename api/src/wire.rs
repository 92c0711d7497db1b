//! How a node's view travels in [`ConfigUpdate::payload`](crate::proto::ConfigUpdate): the
//! model's own serde encoding in MessagePack, with named fields so that a node one version
//! older or newer than the controller ignores fields it doesn't know instead of misreading
//! them, compressed with zstd (named-field MessagePack of 10,000 routes is ~3 MB and
//! compresses more than tenfold; it is compressed once per change, not once per node). Secrets
//! ([`SecretBytes`](crate::model::SecretBytes)) travel as bytes here and nowhere else: the
//! human-readable encodings redact them.
//!
//! Ignoring what a node does not know is only safe for fields that do not restrict: a sidecar
//! view also names the restricting features it uses and its inbound policy refuses unknown
//! fields, so a node NACKs a policy it cannot enforce instead of weakening it (see
//! [`model::features`](crate::model::features)).
//!
//! Encoding is deterministic for a given snapshot (clusters are in a `BTreeMap`, everything
//! else in compile order, zstd at a fixed level), so the controller can tell that a change
//! left a view as it was by comparing bytes.

use std::io::Read;

use crate::Snapshot;

/// [`ConfigUpdate::encoding`](crate::proto::ConfigUpdate) of an ingress view.
pub const SNAPSHOT_ENCODING: &str = "application/vnd.weir.snapshot.v1+msgpack+zstd";
/// [`ConfigUpdate::encoding`](crate::proto::ConfigUpdate) of a sidecar view
/// ([`SidecarView`](crate::model::SidecarView)).
pub const SIDECAR_ENCODING: &str = "application/vnd.weir.sidecar.v1+msgpack+zstd";

/// The largest decoded snapshot a node accepts (a guard against decompression bombs).
pub const MAX_DECODED: u64 = 1 << 30;

const LEVEL: i32 = 3;

/// Encodes a snapshot for the wire.
pub fn encode(snapshot: &Snapshot) -> Vec<u8> {
    encode_view(snapshot)
}

/// Encodes any view of the model (a snapshot, a sidecar view) for the wire.
pub fn encode_view<T: serde::Serialize + ?Sized>(view: &T) -> Vec<u8> {
    // Writing into a Vec cannot fail, and every model type serializes.
    let plain = rmp_serde::to_vec_named(view).expect("a view always encodes");
    zstd::bulk::compress(&plain, LEVEL).expect("compressing into memory cannot fail")
}

/// Decodes a snapshot, or says what was wrong with the payload.
pub fn decode(encoding: &str, payload: &[u8]) -> Result<Snapshot, String> {
    decode_view(SNAPSHOT_ENCODING, encoding, payload)
}

/// Decodes a view sent as `encoding`, which must be `expected`.
pub fn decode_view<T: serde::de::DeserializeOwned>(
    expected: &str,
    encoding: &str,
    payload: &[u8],
) -> Result<T, String> {
    if encoding != expected {
        return Err(format!(
            "unknown encoding {encoding:?} (this node reads {expected:?})"
        ));
    }
    let decoder = zstd::stream::read::Decoder::new(payload)
        .map_err(|e| format!("payload does not decompress: {e}"))?;
    let mut plain = Vec::new();
    decoder
        .take(MAX_DECODED + 1)
        .read_to_end(&mut plain)
        .map_err(|e| format!("payload does not decompress: {e}"))?;
    if plain.len() as u64 > MAX_DECODED {
        return Err(format!(
            "payload decompresses to more than {MAX_DECODED} bytes"
        ));
    }
    rmp_serde::from_slice(&plain).map_err(|e| format!("payload does not decode: {e}"))
}

// The tests encode the quickstart, which they compile.
#[cfg(all(test, feature = "compile"))]
mod tests {
    use super::*;

    fn quickstart() -> Snapshot {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart");
        let objects = crate::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
        crate::compile(&objects).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_snapshot_survives_the_wire_with_its_secrets() {
        let snapshot = quickstart();
        let decoded = decode(SNAPSHOT_ENCODING, &encode(&snapshot)).unwrap();
        assert_eq!(
            serde_json::to_value(&decoded).unwrap(),
            serde_json::to_value(&snapshot).unwrap()
        );
        let keys = |s: &Snapshot| {
            s.routes
                .iter()
                .filter_map(|r| r.auth.as_ref()?.api_keys.as_ref())
                .flat_map(|k| k.keys.iter().map(|(_, key)| key.0.clone()))
                .collect::<Vec<_>>()
        };
        assert!(!keys(&snapshot).is_empty(), "the quickstart has API keys");
        assert_eq!(keys(&decoded), keys(&snapshot), "secret bytes travel");
    }

    #[test]
    fn secrets_are_redacted_in_json_and_cannot_be_read_back_from_it() {
        let snapshot = quickstart();
        let json = serde_json::to_string(&snapshot).unwrap();
        for key in snapshot
            .routes
            .iter()
            .filter_map(|r| r.auth.as_ref()?.api_keys.as_ref())
            .flat_map(|k| &k.keys)
        {
            let key = std::str::from_utf8(&key.1 .0).unwrap();
            assert!(!json.contains(key), "{key} leaked into {json}");
        }
        assert!(json.contains("secret bytes>"));
        let err = serde_json::from_str::<Snapshot>(&json).unwrap_err();
        assert!(
            err.to_string().contains("only carried by binary encodings"),
            "{err}"
        );
    }

    #[test]
    fn the_same_objects_always_encode_to_the_same_bytes() {
        let first = encode(&quickstart());
        for _ in 0..5 {
            assert!(encode(&quickstart()) == first);
        }
    }

    #[test]
    fn a_foreign_encoding_or_bad_payload_is_named() {
        let err = decode("application/json", b"{}").unwrap_err();
        assert!(
            err.contains("unknown encoding \"application/json\""),
            "{err}"
        );
        let err = decode(SNAPSHOT_ENCODING, b"\xc1").unwrap_err();
        assert!(err.starts_with("payload does not decompress"), "{err}");
        let not_msgpack = zstd::bulk::compress(b"\xc1", 3).unwrap();
        let err = decode(SNAPSHOT_ENCODING, &not_msgpack).unwrap_err();
        assert!(err.starts_with("payload does not decode"), "{err}");
    }
}
