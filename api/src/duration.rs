//! Durations as Kubernetes APIs write them (`500ms`, `10s`, `1h30m`), following the Gateway API
//! duration format (GEP-2257), with Weir's own sizes (`64Ki`, `1Mi`) next to them.

use std::time::Duration;

/// Parses a Gateway API duration (`1h`, `10s`, `250ms`, `1h30m`); the message says why not.
///
/// GEP-2257 in full: one to four parts, each one to five digits and a unit `h`, `m`, `s` or
/// `ms` (`^([0-9]{1,5}(h|m|s|ms)){1,4}$`). Written here rather than borrowed from the
/// gateway-api crate, which a sidecar parsing its flags should not have to link.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("{text:?} is not a duration like 500ms, 10s or 1h30m: {why}");
    let (mut rest, mut total, mut parts) = (text, Duration::ZERO, 0);
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if !(1..=5).contains(&digits) {
            return Err(bad("each part is 1 to 5 digits and a unit"));
        }
        let (number, after) = rest.split_at(digits);
        // Digits only, at most five: always a u64.
        let n: u64 = number.parse().unwrap_or_default();
        let (unit, after) = [("ms", 1), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)]
            .into_iter()
            .find_map(|(unit, ms)| after.strip_prefix(unit).map(|after| (ms, after)))
            .ok_or_else(|| bad("the units are h, m, s and ms"))?;
        total += Duration::from_millis(n * unit);
        parts += 1;
        rest = after;
    }
    match parts {
        1..=4 => Ok(total),
        0 => Err(bad("it is empty")),
        _ => Err(bad("at most four parts")),
    }
}

/// Parses a byte size in Kubernetes quantity notation (`1048576`, `64Ki`, `10Mi`, `1Gi`, `1M`).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let units: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    let (digits, factor) = units
        .iter()
        .find_map(|(suffix, factor)| text.strip_suffix(suffix).map(|d| (d, *factor)))
        .unwrap_or((text, 1));
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| format!("{text:?} is not a size like 1048576, 64Ki or 10Mi"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("ten seconds").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(
            parse_duration("1m1ms").unwrap(),
            Duration::from_millis(60_001)
        );
        for bad in ["", "10", "1.5s", "123456s", "1h1m1s1ms1h", "1d", "1 s", "s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("64Ki").unwrap(), 65536);
        assert_eq!(parse_bytes("1M").unwrap(), 1_000_000);
        assert_eq!(parse_bytes("42").unwrap(), 42);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("99999999999Ti").is_err());
    }
}
