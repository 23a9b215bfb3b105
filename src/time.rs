//! Time, in one place: the units every layer counts in, and the few ways an instant is
//! parsed from or written to text.
//!
//! meterlake counts time as **UTC microseconds since the Unix epoch** (`i64`) everywhere: in
//! the lake's `ts` column, in rollup windows, in series, in billing periods. A calendar day
//! is a **day number** (`i32`, days since 1970-01-01), which is also the lake's partition
//! (`date=YYYY-MM-DD`). Time zones only enter where a person's calendar matters (rollups
//! with `--tz`, billing periods, reports), through `chrono-tz` in [`crate::rollup`].
//!
//! Text forms, and who uses which:
//!
//! | function | text | used by |
//! |---|---|---|
//! | [`rfc3339`] | `2026-10-01T13:04:05Z` (seconds) | billing periods, alerts, reports, API answers |
//! | [`rfc3339_micros`] | `2026-10-01T13:04:05.123456Z` | events rendered back (exact) |
//! | [`rfc3339_millis`] / [`now_rfc3339`] | `2026-10-01T13:04:05.123Z` | commit and audit records |
//! | [`date_str`] / [`day_to_string`] | `2026-10-01` | partitions, daily series and reports |
//! | [`parse_instant`] | a date (UTC midnight) or RFC 3339 | every `--from`/`--to`/`--at` flag |
//! | [`parse_ts`] | the above plus `YYYY-MM-DD HH:MM:SS[.f]` | series files written by other tools |
//!
//! This module sits at the bottom of the layers: it imports nothing of the crate but its
//! error type, so every other module (the pure models included) may use it.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, SecondsFormat, Timelike, Utc};

use crate::error::{Error, Result};

/// Microseconds per second.
pub const MICROS_PER_SECOND: i64 = 1_000_000;
/// Microseconds per minute.
pub const MICROS_PER_MINUTE: i64 = 60 * MICROS_PER_SECOND;
/// Microseconds per hour.
pub const MICROS_PER_HOUR: i64 = 60 * MICROS_PER_MINUTE;
/// Microseconds per (UTC) day: the lake's partition width.
pub const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;

/// The current instant; `MLK_NOW` (a date or RFC 3339 instant, read once per process)
/// pins it, for tests and for replaying a past period (a server's quotas as of then). An
/// `MLK_NOW` that is no instant is reported once and the clock is used.
pub fn now() -> i64 {
    static PINNED: std::sync::OnceLock<Option<i64>> = std::sync::OnceLock::new();
    let pinned = PINNED.get_or_init(|| {
        let s = std::env::var("MLK_NOW").ok()?;
        match parse_instant("MLK_NOW", &s) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("warning: {e}; using the clock");
                None
            }
        }
    });
    pinned.unwrap_or_else(|| Utc::now().timestamp_micros())
}

/// UTC day number (days since 1970-01-01) of an instant.
pub fn day_of(ts: i64) -> i32 {
    ts.div_euclid(MICROS_PER_DAY) as i32
}

/// The calendar date of a day number; out-of-range days saturate.
pub fn date_of_day(day: i32) -> NaiveDate {
    // 719_163 days from 0001-01-01 (CE day 1) to 1970-01-01.
    NaiveDate::from_num_days_from_ce_opt(day.saturating_add(719_163)).unwrap_or(if day < 0 {
        NaiveDate::MIN
    } else {
        NaiveDate::MAX
    })
}

/// Day number of a calendar date.
pub fn day_of_date(date: NaiveDate) -> i32 {
    (date - NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date")).num_days() as i32
}

/// The instant a UTC date starts.
pub fn date_start(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp_micros()
}

/// The instant a `YYYY-MM-DD` date (a lake partition's value) starts; none if it is not one.
pub fn date_str_start(d: &str) -> Option<i64> {
    NaiveDate::parse_from_str(d, "%Y-%m-%d")
        .ok()
        .map(date_start)
}

/// `YYYY-MM-DD` of a day number (a lake partition's value).
pub fn day_to_string(day: i32) -> String {
    date_of_day(day).format("%Y-%m-%d").to_string()
}

/// `YYYY-MM-DD` of the UTC day holding an instant (empty when out of range).
pub fn date_str(t: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(t)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

fn format(t: i64, precision: SecondsFormat) -> Option<String> {
    DateTime::<Utc>::from_timestamp_micros(t).map(|d| d.to_rfc3339_opts(precision, true))
}

/// RFC 3339 to the second, UTC (`2026-10-01T13:04:05Z`); empty when out of range.
pub fn rfc3339(t: i64) -> String {
    format(t, SecondsFormat::Secs).unwrap_or_default()
}

/// RFC 3339 to the millisecond, UTC (`2026-10-01T13:04:05.123Z`); empty when out of range.
pub fn rfc3339_millis(t: i64) -> String {
    format(t, SecondsFormat::Millis).unwrap_or_default()
}

/// RFC 3339 to the microsecond (`2026-10-01T13:04:05.123456Z`): exact, so an event's `ts`
/// reads back as it is stored. Out of range, the number itself.
pub fn rfc3339_micros(t: i64) -> String {
    format(t, SecondsFormat::Micros).unwrap_or_else(|| t.to_string())
}

/// The current instant in RFC 3339 to the millisecond: commit and audit records.
pub fn now_rfc3339() -> String {
    rfc3339_millis(now())
}

/// A date when `dates` (daily series), else RFC 3339 to the second.
pub fn format_ts(t: i64, dates: bool) -> String {
    let mut s = String::with_capacity(20);
    write_ts(&mut s, t, dates);
    s
}

/// [`format_ts`], appended to `out` (no allocation per instant).
pub fn write_ts(out: &mut String, t: i64, dates: bool) {
    let d = DateTime::<Utc>::from_timestamp_micros(t).unwrap_or_default();
    // Years 0-9999 written by hand: chrono's formatter parses its pattern on every call,
    // which dominated writing a forecast of 100k series. Same text (a unit test checks).
    if (0..=9999).contains(&d.year()) {
        let digits = |out: &mut String, sep: Option<char>, n: u32, width: u32| {
            out.extend(sep);
            for k in (0..width).rev() {
                out.push(char::from(b'0' + (n / 10u32.pow(k) % 10) as u8));
            }
        };
        digits(out, None, d.year() as u32, 4);
        digits(out, Some('-'), d.month(), 2);
        digits(out, Some('-'), d.day(), 2);
        if !dates {
            digits(out, Some('T'), d.hour(), 2);
            digits(out, Some(':'), d.minute(), 2);
            digits(out, Some(':'), d.second(), 2);
            out.push('Z');
        }
        return;
    }
    if dates {
        out.push_str(&d.format("%Y-%m-%d").to_string());
    } else {
        out.push_str(&d.to_rfc3339_opts(SecondsFormat::Secs, true));
    }
}

/// Parses a parameter that names an instant: a date (`2026-10-01`, UTC midnight) or an RFC
/// 3339 instant (offsets converted). The error names the parameter.
pub fn parse_instant(name: &'static str, s: &str) -> Result<i64> {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(date_start(d));
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc).timestamp_micros())
        .map_err(|_| Error::InvalidParameter {
            name,
            reason: format!("`{s}` is neither a date (YYYY-MM-DD) nor an RFC 3339 instant"),
        })
}

/// Parses a timestamp cell of a series file, leniently: a date, RFC 3339, or
/// `YYYY-MM-DD[ T]HH:MM:SS[.f]` read as UTC (what pandas and spreadsheets write).
pub fn parse_ts(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Some(date) = date_bytes(s.as_bytes()) {
        return date;
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros());
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc).timestamp_micros());
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc().timestamp_micros());
        }
    }
    None
}

/// The fast path for the common `YYYY-MM-DD`: None when `b` has another shape, Some(None)
/// when it has this shape but is no date.
fn date_bytes(b: &[u8]) -> Option<Option<i64>> {
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let day = (|| civil_day(i64::from(num(0..4)?), num(5..7)?, num(8..10)?))();
    Some(day.map(|d| d * MICROS_PER_DAY))
}

/// Day number (days since 1970-01-01) of a proleptic Gregorian date, or None when the month
/// or day does not exist: [`parse_ts`]'s fast path, without chrono's general date type
/// (Howard Hinnant's `days_from_civil`).
fn civil_day(year: i64, month: u32, day: u32) -> Option<i64> {
    if day == 0 || day > month_days(year, month)? {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((i64::from(month) + 9) % 12) + 2) / 5 + i64::from(day) - 1;
    Some(era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468)
}

/// Days in a month of the proleptic Gregorian calendar; None when `month` is not 1–12.
fn month_days(year: i64, month: u32) -> Option<u32> {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    Some(match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    })
}

/// [`parse_ts`] of a field's bytes (a series file's), for a column of instants that are
/// mostly dates in runs of one month (a daily series): it keeps the last date's month, so
/// the next date of that month costs its two day digits.
#[derive(Debug, Default)]
pub struct TsParser {
    /// `YYYY-MM-` of the kept month.
    month: [u8; 8],
    /// Its first day's number.
    first: i64,
    /// Its length in days (0: no month kept).
    days: u32,
}

impl TsParser {
    /// The instant of a field's bytes, as [`parse_ts`] gives it for their text (a
    /// `YYYY-MM-DD` is read without the UTF-8 check).
    pub fn parse(&mut self, b: &[u8]) -> Option<i64> {
        if let [head @ .., d1, d2] = b
            && head.len() == 8
            && self.days > 0
            && *head == self.month
            && d1.is_ascii_digit()
            && d2.is_ascii_digit()
        {
            let day = u32::from(d1 - b'0') * 10 + u32::from(d2 - b'0');
            return (day >= 1 && day <= self.days)
                .then(|| (self.first + i64::from(day) - 1) * MICROS_PER_DAY);
        }
        let Some(date) = date_bytes(b) else {
            return parse_ts(std::str::from_utf8(b).ok()?);
        };
        // A date: keep its month.
        let t = date?;
        let d = date_of_day(day_of(t));
        self.month.copy_from_slice(&b[..8]);
        self.first = i64::from(day_of(t)) - i64::from(d.day()) + 1;
        self.days = month_days(i64::from(d.year()), d.month()).unwrap_or(0);
        Some(t)
    }
}

/// `YYYY-MM` of the calendar month (UTC) before the one holding the instant just before `at`
/// (`at` is an exclusive end, as `latest` is): the last complete billing month of a job
/// whose data ends at `at`.
pub fn previous_month(at: i64) -> String {
    let d = DateTime::from_timestamp_micros(at - 1)
        .unwrap_or_default()
        .date_naive();
    let (y, m) = if d.month() == 1 {
        (d.year() - 1, 12)
    } else {
        (d.year(), d.month() - 1)
    };
    format!("{y:04}-{m:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast date path agrees with chrono on every `YYYY-MM-DD` text, real dates or not
    /// (months 0–13, days 0–32, years 0000–9999, leap years and centuries among them).
    #[test]
    fn civil_days_are_chronos() {
        for year in (0..=9999).step_by(7).chain([1900, 2000, 2024, 2100, 2400]) {
            for month in 0..=13 {
                for day in 0..=32 {
                    let text = format!("{year:04}-{month:02}-{day:02}");
                    let chrono = NaiveDate::from_ymd_opt(year, month, day)
                        .map(|d| d.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_micros());
                    assert_eq!(parse_ts(&text), chrono, "{text}");
                    // After a date of the same month, of the month before, and of none.
                    for before in [
                        format!("{year:04}-{month:02}-01"),
                        format!("{year:04}-{:02}-28", month.max(1) - 1),
                        "x".into(),
                    ] {
                        let mut p = TsParser::default();
                        p.parse(before.as_bytes());
                        assert_eq!(p.parse(text.as_bytes()), chrono, "{text} after {before}");
                    }
                }
            }
        }
    }

    /// The hand-written formats give chrono's text, across centuries, before 1970, at
    /// midnights and at the last microsecond of a day.
    #[test]
    fn format_ts_writes_what_chrono_writes() {
        let mut t: i64 = -62_135_596_800_000_000; // 0001-01-01
        let mut n = 0;
        while t < 253_402_300_799_000_000 {
            for x in [t, t - 1, t + 999_999] {
                let d = DateTime::<Utc>::from_timestamp_micros(x).unwrap();
                assert_eq!(format_ts(x, true), d.format("%Y-%m-%d").to_string());
                assert_eq!(
                    format_ts(x, false),
                    d.to_rfc3339_opts(SecondsFormat::Secs, true)
                );
            }
            // A prime step in microseconds: every hour, minute and second comes up.
            t += 7_919_000_003_777;
            n += 1;
        }
        assert!(n > 30_000, "{n} instants");
    }

    #[test]
    fn day_numbers_round_trip_including_before_epoch() {
        for (ts, want) in [
            (0, "1970-01-01"),
            (-1, "1969-12-31"),
            (MICROS_PER_DAY, "1970-01-02"),
            (1_790_000_000_000_000, "2026-09-21"),
        ] {
            let d = day_of(ts);
            assert_eq!(day_to_string(d), want, "ts {ts}");
            assert_eq!(date_str(ts), want, "ts {ts}");
            assert_eq!(date_str_start(want), Some(i64::from(d) * MICROS_PER_DAY));
            assert_eq!(day_of_date(date_of_day(d)), d);
            assert_eq!(date_start(date_of_day(d)), i64::from(d) * MICROS_PER_DAY);
        }
    }

    #[test]
    fn text_forms_round_trip_through_the_parsers() {
        // 2026-10-01T13:04:05.123456Z, computed independently: 20727 days + 13:04:05.123456.
        let t = 20_727 * MICROS_PER_DAY + (13 * 3600 + 4 * 60 + 5) * MICROS_PER_SECOND + 123_456;
        assert_eq!(rfc3339_micros(t), "2026-10-01T13:04:05.123456Z");
        assert_eq!(rfc3339_millis(t), "2026-10-01T13:04:05.123Z");
        assert_eq!(rfc3339(t), "2026-10-01T13:04:05Z");
        assert_eq!(format_ts(t, true), "2026-10-01");
        assert_eq!(format_ts(t, false), rfc3339(t));
        assert_eq!(parse_instant("x", &rfc3339_micros(t)).unwrap(), t);
        assert_eq!(parse_ts(&rfc3339_micros(t)), Some(t));
        assert_eq!(parse_ts("2026-10-01 13:04:05.123456"), Some(t));
        assert_eq!(
            parse_instant("x", "2026-10-01").unwrap(),
            20_727 * MICROS_PER_DAY
        );
        assert_eq!(
            parse_instant("x", "2026-10-01T15:04:05.123456+02:00").unwrap(),
            t
        );
    }

    #[test]
    fn bad_instants_name_the_parameter() {
        for bad in ["", "2026-13-01", "yesterday", "2026-10-01T25:00:00Z"] {
            let e = parse_instant("--from", bad).unwrap_err().to_string();
            assert!(e.contains("--from") && e.contains(bad), "{bad:?}: {e}");
            assert_eq!(parse_ts(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_previous_month_wraps_the_year() {
        for (at, want) in [
            ("2026-10-01T00:00:00Z", "2026-08"),
            ("2026-10-01T00:00:01Z", "2026-09"),
            ("2026-01-15", "2025-12"),
        ] {
            assert_eq!(
                previous_month(parse_instant("at", at).unwrap()),
                want,
                "{at}"
            );
        }
    }
}
