//! Times given as milliseconds — the unit the bindings, the CLI and JSON options use — turned into
//! durations and deadlines, with one check and one error text for every caller.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// `ms` milliseconds as a duration; a negative, NaN, infinite or absurd value is a configuration
/// error naming `what`.
///
/// # Errors
///
/// `invalid_input` for a negative, non-finite or overlong duration.
pub fn duration_from_ms(what: &str, ms: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(ms / 1e3)
        .map_err(|_| Error::Config(format!("{what} {ms} is not a duration in milliseconds")))
}

/// The instant `ms` milliseconds from now, for a request's deadline; a value that is not a
/// duration is invalid input.
///
/// # Errors
///
/// `invalid_input` for a negative, non-finite or overlong duration.
pub fn deadline_after_ms(ms: f64) -> Result<Instant> {
    Duration::try_from_secs_f64(ms / 1e3)
        .ok()
        .and_then(|d| Instant::now().checked_add(d))
        .ok_or_else(|| Error::InvalidInput(format!("deadline_ms {ms} is not a duration in milliseconds")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_become_durations_and_bad_values_are_typed_errors() {
        assert_eq!(duration_from_ms("ttl", 1500.0).unwrap(), Duration::from_millis(1500));
        assert!(matches!(duration_from_ms("ttl", -1.0), Err(Error::Config(m)) if m.contains("ttl -1")));
        assert!(matches!(duration_from_ms("ttl", f64::NAN), Err(Error::Config(_))));
        assert!(deadline_after_ms(10.0).unwrap() > Instant::now());
        assert!(matches!(deadline_after_ms(f64::INFINITY), Err(Error::InvalidInput(_))));
    }
}
