//! Instants and durations as the records write them and the CLI reads them,
//! on `jiff` (UTC only).

use std::time::{SystemTime, UNIX_EPOCH};

use jiff::{SpanRelativeTo, Timestamp, Unit};

/// Milliseconds since the Unix epoch, now (0 if the clock is before it).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `t` as RFC 3339 UTC with millisecond precision (`2026-11-23T12:00:00.123Z`),
/// the form every record's `started_at` has.
pub fn rfc3339(t: SystemTime) -> String {
    let ts = Timestamp::try_from(t).unwrap_or(Timestamp::UNIX_EPOCH);
    ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// `ms` (milliseconds since the epoch) as [`rfc3339`] writes instants.
pub fn rfc3339_ms(ms: i64) -> String {
    let ts = Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH);
    ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Parses a duration (`90s`, `30m`, `12h`, `7d`, `2w`, `1h30m`; a day is
/// 24 hours) into whole seconds.
pub fn parse_duration_s(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let bad = || format!("invalid duration {text:?}: give a number and a unit (90s, 30m, 12h, 7d, 2w)");
    let span: jiff::Span = text.parse().map_err(|_| bad())?;
    let seconds = span
        .total((Unit::Second, SpanRelativeTo::days_are_24_hours()))
        .map_err(|_| bad())?;
    if !(0.0..=u64::MAX as f64).contains(&seconds) || seconds.fract() != 0.0 {
        return Err(bad());
    }
    // Whole and in range: the conversion is exact.
    Ok(seconds as u64)
}

/// Parses `--since`/`--until`: a duration back from `now_ms` (`90s`, `30m`,
/// `12h`, `7d`, `2w`), a UTC date (`2026-11-01`, midnight) or an RFC 3339
/// instant (`2026-11-01T12:00:00Z`, any offset). Milliseconds since the epoch.
pub fn parse_since(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    let bad = || {
        format!(
            "invalid --since {text:?}: give a duration (90s, 30m, 12h, 7d, 2w) or a UTC date (2026-11-01 or 2026-11-01T12:00:00Z)"
        )
    };
    if let Ok(seconds) = parse_duration_s(text) {
        let ms = i64::try_from(seconds).map_err(|_| bad())?.saturating_mul(1000);
        return Ok(now_ms.saturating_sub(ms));
    }
    if let Ok(instant) = text.parse::<Timestamp>() {
        return Ok(instant.as_millisecond());
    }
    // A date alone: an instant without an offset (`2026-11-01T12:00:00`) is
    // ambiguous, and jiff would read its date and drop the rest.
    if text.contains(['T', 't', ' ']) {
        return Err(bad());
    }
    let date: jiff::civil::Date = text.parse().map_err(|_| bad())?;
    let midnight = jiff::tz::Offset::UTC
        .to_timestamp(date.to_datetime(jiff::civil::Time::midnight()))
        .map_err(|_| bad())?;
    Ok(midnight.as_millisecond())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_435_200_123);
        assert_eq!(rfc3339(t), "2026-11-23T12:00:00.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn durations_take_the_usual_units() {
        assert_eq!(parse_duration_s("90s"), Ok(90));
        assert_eq!(parse_duration_s("30m"), Ok(1800));
        assert_eq!(parse_duration_s("12h"), Ok(43_200));
        assert_eq!(parse_duration_s("7d"), Ok(604_800));
        assert_eq!(parse_duration_s("2w"), Ok(1_209_600));
        assert_eq!(parse_duration_s("1h30m"), Ok(5400));
        assert_eq!(parse_duration_s("1.5h"), Ok(5400));
        assert_eq!(parse_duration_s("0s"), Ok(0));
        for bad in [
            "",
            "7x",
            "d",
            "1",
            "-3d",
            "1.5s",
            "1y",
            "1mo",
            "soon",
            "99999999999999999999w",
        ] {
            assert!(parse_duration_s(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn since_takes_durations_dates_and_instants() {
        let now = 1_795_435_200_000; // 2026-11-23T12:00:00Z
        assert_eq!(parse_since("7d", now), Ok(now - 7 * 86_400_000));
        assert_eq!(parse_since("90s", now), Ok(now - 90_000));
        assert_eq!(parse_since("2026-11-23T12:00:00Z", 0), Ok(now));
        assert_eq!(parse_since("2026-11-23T13:00:00+01:00", 0), Ok(now));
        assert_eq!(parse_since("2026-11-23", 0), Ok(now - 12 * 3_600_000));
        assert_eq!(parse_since("1970-01-01", 0), Ok(0));
        assert_eq!(parse_since("2000-02-29", 0), Ok(951_782_400_000));
        for bad in [
            "",
            "7x",
            "d",
            "-3d",
            "2026-13-01",
            "2026-02-30",
            "2026-11-23T25:00:00Z",
            "2026-11-23T12:00:00",
            "yesterday",
        ] {
            let err = parse_since(bad, now).unwrap_err();
            assert!(err.contains("--since"), "{bad}: {err}");
        }
    }
}
