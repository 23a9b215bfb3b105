//! Windows: granularities, time zones, and the calendar of window boundaries.
//!
//! A window is half-open `[start, end)`. Hours, days, ISO weeks (starting on Monday) and
//! calendar months are cut in the rollup's time zone (default UTC), like OpenMeter's
//! `windowTimeZone`: with `--tz Europe/Berlin` a day window runs from local midnight to
//! local midnight, 23 or 25 hours long across a DST change. Boundaries are stored as UTC
//! instants (microseconds).
//!
//! Events are put in windows by one polars expression ([`window_start_expr`]); the
//! [`Calendar`] applies the same expression to every whole UTC hour of a range, so gap
//! filling and window ends agree with the event assignment by construction (every window
//! is at least an hour long, so it contains at least one whole UTC hour).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use polars::prelude::*;

use crate::error::{Error, Result};
use crate::time::{MICROS_PER_DAY, MICROS_PER_HOUR};

/// Window length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Granularity {
    /// One hour.
    Hour,
    /// One calendar day.
    Day,
    /// One ISO week, Monday to Monday.
    Week,
    /// One calendar month.
    Month,
}

impl Granularity {
    /// Every granularity, finest first.
    pub const ALL: [Granularity; 4] = [
        Granularity::Hour,
        Granularity::Day,
        Granularity::Week,
        Granularity::Month,
    ];

    /// The polars duration string.
    fn every(self) -> &'static str {
        match self {
            Granularity::Hour => "1h",
            Granularity::Day => "1d",
            Granularity::Week => "1w",
            Granularity::Month => "1mo",
        }
    }

    /// Name as on the command line and in paths.
    pub fn name(self) -> &'static str {
        match self {
            Granularity::Hour => "hour",
            Granularity::Day => "day",
            Granularity::Week => "week",
            Granularity::Month => "month",
        }
    }

    /// The granularity of the stored partitions: a day of hours, else one window each.
    pub fn partition(self) -> Granularity {
        match self {
            Granularity::Hour => Granularity::Day,
            g => g,
        }
    }
}

crate::error::named_enum!(Granularity, "granularity");

/// The time zone windows are cut in: UTC or an IANA zone (`Europe/Berlin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Zone(Option<Tz>);

impl Zone {
    /// UTC.
    pub const UTC: Zone = Zone(None);

    /// The zone's IANA name.
    pub fn name(&self) -> &'static str {
        self.0.map(|t| t.name()).unwrap_or("UTC")
    }

    /// Whether this is UTC.
    pub fn is_utc(&self) -> bool {
        self.0.is_none()
    }

    /// The UTC instant (µs) of local midnight starting `date` (the first instant of the
    /// date where a DST change skips midnight).
    pub fn midnight_micros(&self, date: NaiveDate) -> i64 {
        let naive = date.and_hms_opt(0, 0, 0).expect("midnight exists");
        match self.0 {
            None => naive.and_utc().timestamp_micros(),
            Some(tz) => {
                use chrono::TimeZone;
                // A gap at midnight: step forward by minutes until the local time exists.
                (0..=24 * 60)
                    .find_map(|m| {
                        tz.from_local_datetime(&(naive + chrono::Duration::minutes(m)))
                            .earliest()
                    })
                    .map(|t| t.with_timezone(&Utc).timestamp_micros())
                    .unwrap_or_else(|| naive.and_utc().timestamp_micros())
            }
        }
    }

    /// Local hour of day (0-23) and weekday (0 = Monday) of a UTC instant (µs).
    pub fn local_hour_weekday(&self, ts_micros: i64) -> (u32, u32) {
        use chrono::{Datelike, Timelike};
        let t = DateTime::<Utc>::from_timestamp_micros(ts_micros).unwrap_or_default();
        match self.0 {
            Some(tz) => {
                let l = t.with_timezone(&tz);
                (l.hour(), l.weekday().num_days_from_monday())
            }
            None => (t.hour(), t.weekday().num_days_from_monday()),
        }
    }

    /// Local minutes after midnight (0-1439) of a UTC instant (µs).
    pub fn local_minute_of_day(&self, ts_micros: i64) -> u32 {
        use chrono::Timelike;
        let t = DateTime::<Utc>::from_timestamp_micros(ts_micros).unwrap_or_default();
        match self.0 {
            Some(tz) => {
                let l = t.with_timezone(&tz);
                l.hour() * 60 + l.minute()
            }
            None => t.hour() * 60 + t.minute(),
        }
    }

    /// The local calendar date of a UTC instant (µs).
    pub fn local_date(&self, ts_micros: i64) -> NaiveDate {
        let t = DateTime::<Utc>::from_timestamp_micros(ts_micros).unwrap_or_default();
        match self.0 {
            Some(tz) => t.with_timezone(&tz).date_naive(),
            None => t.date_naive(),
        }
    }
}

impl FromStr for Zone {
    type Err = Error;
    fn from_str(s: &str) -> Result<Zone> {
        if s.eq_ignore_ascii_case("utc") || s == "Etc/UTC" || s == "Z" {
            return Ok(Zone::UTC);
        }
        s.parse::<Tz>()
            .map(|t| Zone(Some(t)))
            .map_err(|_| Error::InvalidParameter {
                name: "--tz",
                reason: format!(
                    "`{s}` is not an IANA time zone (for example Europe/Berlin or UTC)"
                ),
            })
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The polars type of UTC timestamps in microseconds (the lake's `ts`).
pub fn utc_datetime() -> DataType {
    DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
}

/// Start of the window holding each instant of `ts` (a UTC datetime column), as UTC
/// microseconds (Int64).
pub fn window_start_expr(ts: Expr, g: Granularity, zone: Zone) -> Result<Expr> {
    let fixed = match g {
        Granularity::Hour => Some(MICROS_PER_HOUR),
        Granularity::Day => Some(MICROS_PER_DAY),
        _ => None,
    };
    Ok(match (zone.0, fixed) {
        // UTC hours and days: integer arithmetic (timestamps are after 2000, so positive).
        (None, Some(unit)) => (ts.cast(DataType::Int64) / lit(unit)) * lit(unit),
        (None, None) => ts.dt().truncate(lit(g.every())).cast(DataType::Int64),
        (Some(tz), _) => {
            let tz = TimeZone::opt_try_new(Some(tz.name()))?.expect("a named zone");
            ts.dt()
                .convert_time_zone(tz)
                .dt()
                .truncate(lit(g.every()))
                .cast(DataType::Int64)
        }
    })
}

/// Sorted window starts covering a range, each window's end being the next start.
#[derive(Debug, Clone)]
pub struct Calendar {
    granularity: Granularity,
    zone: Zone,
    starts: Vec<i64>,
}

impl Calendar {
    /// Every window that overlaps `[from, to)` (UTC µs), and the one after the last (so
    /// every covered window has an end).
    pub fn new(g: Granularity, zone: Zone, from: i64, to: i64) -> Result<Calendar> {
        let first = from.div_euclid(MICROS_PER_HOUR) * MICROS_PER_HOUR - 32 * MICROS_PER_DAY;
        let last = to + 64 * MICROS_PER_DAY;
        let hours: Vec<i64> = (0..)
            .map(|i| first + i * MICROS_PER_HOUR)
            .take_while(|&t| t <= last)
            .collect();
        let starts = truncate_all(hours, g, zone)?;
        // Keep one window before `from` and one after `to` at most.
        let lo = starts.partition_point(|&s| s <= from).saturating_sub(1);
        let hi = (starts.partition_point(|&s| s < to) + 1).min(starts.len());
        Ok(Calendar {
            granularity: g,
            zone,
            starts: starts[lo..hi].to_vec(),
        })
    }

    /// The granularity.
    pub fn granularity(&self) -> Granularity {
        self.granularity
    }

    /// The zone.
    pub fn zone(&self) -> Zone {
        self.zone
    }

    /// Window starts (the last one is only there to end the one before it).
    pub fn starts(&self) -> &[i64] {
        &self.starts
    }

    /// Index of the window starting at `start`.
    pub fn index_of(&self, start: i64) -> Option<usize> {
        self.starts.binary_search(&start).ok()
    }

    /// End of the window starting at `start`.
    pub fn end_of(&self, start: i64) -> Option<i64> {
        self.index_of(start)
            .and_then(|i| self.starts.get(i + 1))
            .copied()
    }

    /// Indexes of the windows overlapping `[from, to)` that have an end in this calendar.
    pub fn overlapping(&self, from: i64, to: i64) -> std::ops::Range<usize> {
        let n = self.starts.len().saturating_sub(1);
        let lo = self.starts[..n]
            .partition_point(|&s| s <= from)
            .saturating_sub(1);
        let lo = if self.starts.get(lo + 1).is_some_and(|&e| e <= from) {
            lo + 1
        } else {
            lo
        };
        let hi = self.starts[..n].partition_point(|&s| s < to);
        lo..hi.max(lo)
    }
}

/// Applies [`window_start_expr`] to instants, returning the distinct starts, sorted.
pub fn truncate_all(instants: Vec<i64>, g: Granularity, zone: Zone) -> Result<Vec<i64>> {
    let df = DataFrame::new_infer_height(vec![Column::new("t".into(), instants)])?;
    let out = df
        .lazy()
        .select([window_start_expr(col("t").cast(utc_datetime()), g, zone)?.alias("s")])
        .unique_stable(None, UniqueKeepStrategy::First)
        .sort(["s"], SortMultipleOptions::default())
        .collect()?;
    Ok(out.column("s")?.i64()?.into_no_null_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_instant;

    fn at(s: &str) -> i64 {
        parse_instant("t", s).unwrap()
    }

    #[test]
    fn windows_in_utc_and_in_a_zone() {
        let cases = [
            (
                "hour utc",
                Granularity::Hour,
                "UTC",
                "2026-10-01T13:59:59Z",
                "2026-10-01T13:00:00Z",
                "2026-10-01T14:00:00Z",
            ),
            (
                "day utc",
                Granularity::Day,
                "UTC",
                "2026-10-01T23:59:59Z",
                "2026-10-01T00:00:00Z",
                "2026-10-02T00:00:00Z",
            ),
            // 2026-10-01 is a Thursday.
            (
                "week utc",
                Granularity::Week,
                "UTC",
                "2026-10-01T10:00:00Z",
                "2026-09-28T00:00:00Z",
                "2026-10-05T00:00:00Z",
            ),
            (
                "month utc",
                Granularity::Month,
                "UTC",
                "2026-02-15T10:00:00Z",
                "2026-02-01T00:00:00Z",
                "2026-03-01T00:00:00Z",
            ),
            (
                "day berlin",
                Granularity::Day,
                "Europe/Berlin",
                "2026-10-01T22:30:00Z",
                "2026-10-01T22:00:00Z",
                "2026-10-02T22:00:00Z",
            ),
            // Berlin leaves DST on 2026-10-25: that local day is 25 hours long.
            (
                "dst day",
                Granularity::Day,
                "Europe/Berlin",
                "2026-10-25T12:00:00Z",
                "2026-10-24T22:00:00Z",
                "2026-10-25T23:00:00Z",
            ),
            (
                "hour kolkata",
                Granularity::Hour,
                "Asia/Kolkata",
                "2026-10-01T10:10:00Z",
                "2026-10-01T09:30:00Z",
                "2026-10-01T10:30:00Z",
            ),
            (
                "month new york",
                Granularity::Month,
                "America/New_York",
                "2026-11-01T03:00:00Z",
                "2026-10-01T04:00:00Z",
                "2026-11-01T04:00:00Z",
            ),
        ];
        for (name, g, tz, t, start, end) in cases {
            let zone: Zone = tz.parse().unwrap();
            let s = truncate_all(vec![at(t)], g, zone).unwrap()[0];
            assert_eq!(s, at(start), "{name}: start");
            let cal = Calendar::new(g, zone, at(t), at(t) + 1).unwrap();
            assert_eq!(cal.end_of(s), Some(at(end)), "{name}: end");
            assert_eq!(
                cal.overlapping(at(t), at(t) + 1).len(),
                1,
                "{name}: overlap"
            );
        }
    }

    #[test]
    fn calendar_windows_tile_the_range() {
        for g in Granularity::ALL {
            for tz in ["UTC", "Europe/Berlin", "Asia/Kolkata"] {
                let zone: Zone = tz.parse().unwrap();
                let (from, to) = (at("2026-01-01T00:00:00Z"), at("2026-12-31T00:00:00Z"));
                let cal = Calendar::new(g, zone, from, to).unwrap();
                let r = cal.overlapping(from, to);
                assert!(cal.starts()[r.start] <= from, "{g} {tz}");
                assert!(cal.starts()[r.end] >= to, "{g} {tz}");
                for w in cal.starts().windows(2) {
                    assert!(w[1] - w[0] >= MICROS_PER_HOUR, "{g} {tz}: {w:?}");
                }
            }
        }
    }

    #[test]
    fn bad_zone_is_named() {
        let e = "Mars/Olympus".parse::<Zone>().unwrap_err().to_string();
        assert!(e.contains("--tz") && e.contains("Mars/Olympus"), "{e}");
    }
}
