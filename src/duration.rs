//! Durations on the command line, read by `humantime`: `500ms`, `1.5s`,
//! `5m`, `2h`, `1h 30m`. Errors say what is wrong in a few words; the
//! caller names the flag and the value.

use std::time::Duration;

/// The shortest timeout honoured: the event loops wait in milliseconds.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(1);

/// Parses a duration: a number and a unit, e.g. `500ms` or `5s`.
pub fn parse(text: &str) -> Result<Duration, String> {
    use humantime::DurationError;
    humantime::parse_duration(text.trim()).map_err(|error| match error {
        DurationError::UnknownUnit { unit, .. } if unit.is_empty() => {
            "a duration needs a unit, e.g. 500ms or 5s".to_owned()
        }
        DurationError::UnknownUnit { unit, .. } => {
            format!("unknown unit '{unit}' (use ms, s, m or h)")
        }
        DurationError::NumberOverflow => "out of range".to_owned(),
        _ => "not a duration (e.g. 500ms, 5s, 1m)".to_owned(),
    })
}

/// Parses a duration that must be positive (a measurement, a wait):
/// at least [`MIN_TIMEOUT`].
pub fn parse_positive(text: &str) -> Result<Duration, String> {
    let duration = parse(text)?;
    if duration < MIN_TIMEOUT {
        return Err("must be at least 1ms".to_owned());
    }
    Ok(duration)
}

/// Parses a duration that is either zero ("at once") or at least
/// [`MIN_TIMEOUT`].
pub fn parse_zero_or_positive(text: &str) -> Result<Duration, String> {
    let duration = parse(text)?;
    if duration != Duration::ZERO && duration < MIN_TIMEOUT {
        return Err("must be 0 or at least 1ms".to_owned());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("1h 30m"), Ok(Duration::from_secs(5400)));
    }

    #[test]
    fn refuses_nonsense_with_a_reason() {
        assert!(parse("5").unwrap_err().contains("needs a unit"));
        assert!(parse("5 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse("fast").unwrap_err().contains("not a duration"));
        assert!(parse("").unwrap_err().contains("not a duration"));
        assert!(
            parse("99999999999999999999h")
                .unwrap_err()
                .contains("range")
        );
    }

    #[test]
    fn issue_8_timeouts_below_a_millisecond_are_refused() {
        assert!(parse_positive("0.0001ms").is_err());
        assert!(parse_positive("0s").is_err());
        assert_eq!(parse_positive("1ms"), Ok(MIN_TIMEOUT));
        assert!(parse_zero_or_positive("100ns").is_err());
        assert_eq!(parse_zero_or_positive("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_zero_or_positive("2ms"), Ok(Duration::from_millis(2)));
    }
}
