//! The line itself, written straight into the worker's buffer. serde_json escapes a string
//! byte by byte through a table (about 10 instructions a byte, two thirds of the log's cost per
//! request); here a string with nothing to escape — nearly every one — is checked in one pass
//! and copied whole, and only one that has something to escape goes through serde_json.
//! Integers go through serde_json (itoa); durations are written as fixed-point decimals. The result is the same JSON as serde's derive
//! gives for `Entry` (a test holds them together).

use super::{Addr, Entry, Millis};

impl Entry<'_> {
    /// Appends the line's JSON object (no newline) to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"time\":");
        ascii(out, self.time.as_bytes());
        out.extend_from_slice(b",\"client\":");
        addr(out, Some(self.client));
        out.extend_from_slice(b",\"protocol\":");
        text(out, self.protocol);
        out.extend_from_slice(b",\"method\":");
        text(out, self.method);
        out.extend_from_slice(b",\"host\":");
        text(out, self.host);
        out.extend_from_slice(b",\"path\":");
        text(out, self.path);
        out.extend_from_slice(b",\"status\":");
        number(out, self.status);
        out.extend_from_slice(b",\"route\":");
        maybe(out, self.route);
        out.extend_from_slice(b",\"backend\":");
        maybe(out, self.backend);
        out.extend_from_slice(b",\"endpoint\":");
        addr(out, self.endpoint);
        out.extend_from_slice(b",\"error\":");
        maybe(out, self.error);
        out.extend_from_slice(b",\"attempts\":");
        number(out, self.attempts);
        out.extend_from_slice(b",\"duration_ms\":");
        millis(out, Some(self.duration_ms));
        out.extend_from_slice(b",\"upstream_ms\":");
        millis(out, self.upstream_ms);
        out.extend_from_slice(b",\"bytes_in\":");
        number(out, self.bytes_in);
        out.extend_from_slice(b",\"bytes_out\":");
        number(out, self.bytes_out);
        out.extend_from_slice(b",\"request_id\":");
        text(out, self.request_id);
        out.extend_from_slice(b",\"trace_id\":");
        text(out, self.trace_id);
        out.extend_from_slice(b",\"user_agent\":");
        maybe(out, self.user_agent);
        out.extend_from_slice(b",\"user\":");
        maybe(out, self.user);
        out.push(b'}');
    }
}

/// A JSON string: copied whole when nothing in it needs escaping.
fn text(out: &mut Vec<u8>, s: &str) {
    if plain(s.as_bytes()) {
        ascii(out, s.as_bytes());
    } else {
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// True when no byte needs escaping in a JSON string (a control character, `"` or `\`):
/// eight bytes at a time.
fn plain(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A byte of `v` under `n` (n <= 128) sets its high bit here; exact as a whole.
    let under = |v: u64, n: u8| v.wrapping_sub(ONES * u64::from(n)) & !v & HIGHS != 0;
    let has = |v: u64, b: u8| under(v ^ (ONES * u64::from(b)), 1);
    let mut words = s.chunks_exact(8);
    for word in &mut words {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(word);
        let v = u64::from_le_bytes(bytes);
        if under(v, 0x20) || has(v, b'"') || has(v, b'\\') {
            return false;
        }
    }
    words
        .remainder()
        .iter()
        .all(|&b| b >= 0x20 && b != b'"' && b != b'\\')
}

fn maybe(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => text(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A string known to need no escaping (ASCII digits and punctuation of our own making).
fn ascii(out: &mut Vec<u8>, s: &[u8]) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s);
    out.push(b'"');
}

fn addr(out: &mut Vec<u8>, a: Option<Addr>) {
    match a {
        Some(a) => ascii(out, a.ascii(&mut [0; 64])),
        None => out.extend_from_slice(b"null"),
    }
}

fn millis(out: &mut Vec<u8>, m: Option<Millis>) {
    match m {
        Some(m) => out.extend_from_slice(m.text(&mut [0; 32])),
        None => out.extend_from_slice(b"null"),
    }
}

fn number(out: &mut Vec<u8>, n: impl serde::Serialize) {
    // Writing to a Vec cannot fail; a non-finite float is written as null, as serde_json does.
    let _ = serde_json::to_writer(&mut *out, &n);
}

#[cfg(test)]
mod tests {
    use super::plain;

    #[test]
    fn plain_finds_every_byte_that_needs_escaping_wherever_it_is() {
        for len in 0..20 {
            let clean: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            assert!(plain(&clean));
            for at in 0..len {
                for bad in (0u8..0x20).chain([b'"', b'\\']) {
                    let mut s = clean.clone();
                    s[at] = bad;
                    assert!(!plain(&s), "{bad:#x} at {at} of {len}");
                }
                for fine in [0x20u8, 0x7f, 0x80, 0xc3, 0xff, b'/', b']', b'!', b'#'] {
                    let mut s = clean.clone();
                    s[at] = fine;
                    assert!(plain(&s), "{fine:#x} at {at} of {len}");
                }
            }
        }
    }
}
