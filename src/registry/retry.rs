//! Which failures are worth another attempt, and how long to wait before it: a refused, reset
//! or timed-out connection and the registry's 429/500/502/503/504 are transient (a registry
//! restarting, a proxy in between, a rate limit); everything else is an answer.

use std::io::ErrorKind;
use std::time::Duration;

/// The longest single wait, whatever the attempt or `Retry-After` say.
const MAX_DELAY: Duration = Duration::from_secs(30);

/// Whether a transport error may go away on its own.
pub fn transient_transport(error: &ureq::Error) -> bool {
    match error {
        ureq::Error::Io(e) => transient_io(e),
        ureq::Error::Timeout(_) | ureq::Error::ConnectionFailed | ureq::Error::Protocol(_) => true,
        _ => false,
    }
}

pub fn transient_io(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof
            | ErrorKind::TimedOut
            | ErrorKind::NotConnected
            | ErrorKind::Interrupted
    )
}

/// Whether a status is the registry asking to be asked again later.
pub fn transient_status(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
}

/// The wait before attempt `attempt` (1 for the first retry): `first`, doubled each time, or
/// what `Retry-After` (in seconds) asks for, capped.
pub fn delay(first: Duration, attempt: u32, retry_after: Option<&str>) -> Duration {
    if let Some(secs) = retry_after.and_then(|v| v.trim().parse::<u64>().ok()) {
        return Duration::from_secs(secs).min(MAX_DELAY);
    }
    first
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let first = Duration::from_millis(500);
        assert_eq!(delay(first, 1, None), Duration::from_millis(500));
        assert_eq!(delay(first, 3, None), Duration::from_secs(2));
        assert_eq!(delay(first, 40, None), MAX_DELAY);
        assert_eq!(delay(first, 1, Some("3")), Duration::from_secs(3));
        assert_eq!(delay(first, 1, Some("3600")), MAX_DELAY);
        assert!(transient_status(503) && !transient_status(404));
    }
}
