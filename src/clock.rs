//! Time as fissile-oci writes it: `SOURCE_DATE_EPOCH` for everything that must be reproducible,
//! and UTC timestamps for logs, metrics and `created` annotations (no date crate for that).

/// `SOURCE_DATE_EPOCH` if set to a number, else 0: the mtime of every layer entry.
pub fn source_date_epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Now, as Unix milliseconds.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Now, as Unix seconds.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Now as RFC 3339 in UTC (`2026-12-05T22:40:45Z`).
pub fn now_rfc3339() -> String {
    format_utc(now_secs(), 'T') + "Z"
}

/// Now as `2006-01-02 15:04:05` in UTC, stampy's format (fissile's metrics).
pub fn utc_now() -> String {
    format_utc(now_secs(), ' ')
}

/// `YYYY-MM-DD<sep>HH:MM:SS` in UTC for a Unix time.
pub fn format_utc(secs: u64, separator: char) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm), to avoid a date crate for one timestamp.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}{separator}{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'));
        assert_eq!(format_utc(1_700_000_000, ' '), "2023-11-14 22:13:20");
    }
}
