//! The log's timestamp, addresses and durations, formatted without allocating or going
//! through `fmt`: each thread keeps the text of the current second and only writes the
//! milliseconds anew; an IPv4 address and port, and a duration, are written digit by digit.

use std::{
    cell::Cell,
    io::Write as _,
    net::SocketAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// `2026-12-07T04:44:30.123Z`.
#[derive(Debug, Clone, Copy)]
pub struct Stamp([u8; 24]);

thread_local! {
    /// The second last formatted, and its text up to the seconds.
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

impl Stamp {
    /// `time` in UTC, to the millisecond.
    pub fn of(time: SystemTime) -> Self {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let (cached, mut text) = SECOND.get();
        if cached != secs {
            text = to_second(secs);
            SECOND.set((secs, text));
        }
        let mut out = [0; 24];
        out[..19].copy_from_slice(&text);
        let ms = since.subsec_millis();
        out[19] = b'.';
        out[20] = b'0' + (ms / 100) as u8;
        out[21] = b'0' + (ms / 10 % 10) as u8;
        out[22] = b'0' + (ms % 10) as u8;
        out[23] = b'Z';
        Self(out)
    }

    /// The text, as bytes (ASCII).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and punctuation are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

#[cfg(test)]
impl serde::Serialize for Stamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix second (civil-from-days, Howard Hinnant's algorithm).
fn to_second(secs: u64) -> [u8; 19] {
    let secs = secs as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = [0; 19];
    let mut put = |at: usize, n: i64, width: usize| {
        let mut n = n;
        for i in (0..width).rev() {
            out[at + i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, year, 4);
    put(5, month, 2);
    put(8, d, 2);
    put(11, h, 2);
    put(14, m, 2);
    put(17, s, 2);
    out[4] = b'-';
    out[7] = b'-';
    out[10] = b'T';
    out[13] = b':';
    out[16] = b':';
    out
}

/// A socket address as the log writes it: `10.0.0.7:5555`, `[2001:db8::1]:443`.
#[derive(Debug, Clone, Copy)]
pub struct Addr(pub SocketAddr);

impl Addr {
    /// The address as text, written into `buf`.
    pub fn text<'b>(&self, buf: &'b mut [u8; 64]) -> &'b str {
        // Only ASCII is ever written.
        std::str::from_utf8(self.ascii(buf)).unwrap_or_default()
    }

    /// The same, as bytes.
    pub fn ascii<'b>(&self, buf: &'b mut [u8; 64]) -> &'b [u8] {
        // "[" + 39 + "%" + 10 (scope id) + "]:" + 5 fits.
        let len = match self.0 {
            SocketAddr::V4(v4) => {
                let mut at = 0;
                for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                    if i > 0 {
                        buf[at] = b'.';
                        at += 1;
                    }
                    at += decimal(&mut buf[at..], u32::from(octet));
                }
                buf[at] = b':';
                at + 1 + decimal(&mut buf[at + 1..], u32::from(v4.port()))
            }
            SocketAddr::V6(v6) => {
                let mut cursor = std::io::Cursor::new(&mut buf[..]);
                let _ = write!(cursor, "{v6}");
                cursor.position() as usize
            }
        };
        &buf[..len]
    }
}

#[cfg(test)]
impl serde::Serialize for Addr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.text(&mut [0; 64]))
    }
}

/// A duration in milliseconds to the microsecond, as JSON writes the number `micros / 1000`:
/// `1.234`, `0.05`, `12.0`.
#[derive(Debug, Clone, Copy)]
pub struct Millis(pub Duration);

impl Millis {
    /// The text, written into `buf` (ASCII).
    pub fn text<'b>(&self, buf: &'b mut [u8; 32]) -> &'b [u8] {
        let micros = u64::try_from(self.0.as_micros()).unwrap_or(u64::MAX);
        let (whole, fraction) = (micros / 1000, (micros % 1000) as u32);
        let mut at = if let Ok(whole) = u32::try_from(whole) {
            decimal(buf, whole)
        } else {
            let text = whole.to_string();
            buf[..text.len()].copy_from_slice(text.as_bytes());
            text.len()
        };
        buf[at] = b'.';
        at += 1;
        if fraction == 0 {
            buf[at] = b'0';
            return &buf[..=at];
        }
        let digits = [fraction / 100, fraction / 10 % 10, fraction % 10];
        let used = if digits[2] != 0 {
            3
        } else if digits[1] != 0 {
            2
        } else {
            1
        };
        for (i, d) in digits[..used].iter().enumerate() {
            buf[at + i] = b'0' + *d as u8;
        }
        &buf[..at + used]
    }
}

#[cfg(test)]
impl serde::Serialize for Millis {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let micros = u64::try_from(self.0.as_micros()).unwrap_or(u64::MAX);
        s.serialize_f64(micros as f64 / 1e3)
    }
}

/// Writes `n` in decimal at the start of `out`; returns the digits written.
fn decimal(out: &mut [u8], mut n: u32) -> usize {
    let mut digits = [0u8; 10];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        out[i] = digits[len - 1 - i];
    }
    len
}
