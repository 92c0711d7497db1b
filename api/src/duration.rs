//! Durations as Kubernetes APIs write them (`500ms`, `10s`, `1h30m`), following the Gateway API
//! duration format (GEP-2257), with Weir's own sizes (`64Ki`, `1Mi`) next to them.

use std::time::Duration;

/// Parses a Gateway API duration (`1h`, `10s`, `250ms`, `1h30m`); the message says why not.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let parsed: gateway_api::Duration = text
        .parse()
        .map_err(|e| format!("{text:?} is not a duration like 500ms, 10s or 1h30m: {e}"))?;
    Ok(Duration::from_nanos(parsed.as_nanos() as u64))
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
