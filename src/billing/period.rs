//! Billing periods: calendar months (or quarters, years) or cycles anchored to a
//! subscription day, cut at local midnight in the tenant's time zone.
//!
//! An anchor on the 29th–31st falls on the last day of shorter months (anchor 31: Jan 31,
//! Feb 28, Mar 31, ...), so every period starts on the anchor day or its month's last day.

use chrono::{Datelike, NaiveDate};

use crate::rollup::Zone;

/// How a plan's periods are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cycle {
    /// Months per period (1 month, 3 quarter, 12 year).
    pub months: u32,
    /// The subscription start; `None` for calendar periods.
    pub anchor: Option<NaiveDate>,
    /// The tenant's time zone.
    pub zone: Zone,
}

/// One period, half-open [start, end) in UTC µs, with its local first day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First instant (UTC µs).
    pub start: i64,
    /// First instant after the period (UTC µs).
    pub end: i64,
    /// The local date the period starts on.
    pub first_day: NaiveDate,
}

impl Span {
    /// Length in µs.
    pub fn len(&self) -> i64 {
        self.end - self.start
    }

    /// Whether the span is empty (never for a real period).
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

fn month_index(d: NaiveDate) -> i64 {
    d.year() as i64 * 12 + d.month0() as i64
}

/// The date in month `idx` (year·12 + month0) on `day`, or the month's last day.
fn date_in_month(idx: i64, day: u32) -> NaiveDate {
    let (y, m0) = (idx.div_euclid(12) as i32, idx.rem_euclid(12) as u32);
    (1..=day.max(1))
        .rev()
        .find_map(|d| NaiveDate::from_ymd_opt(y, m0 + 1, d))
        .expect("day 1 exists")
}

impl Cycle {
    fn base_and_day(&self) -> (i64, u32) {
        match self.anchor {
            Some(a) => (month_index(a), a.day()),
            None => (0, 1),
        }
    }

    fn span_from(&self, start_idx: i64) -> Span {
        let (_, day) = self.base_and_day();
        let first = date_in_month(start_idx, day);
        let next = date_in_month(start_idx + self.months as i64, day);
        Span {
            start: self.zone.midnight_micros(first),
            end: self.zone.midnight_micros(next),
            first_day: first,
        }
    }

    /// The period containing instant `t` (UTC µs).
    pub fn containing(&self, t: i64) -> Span {
        let local = self.zone.local_date(t);
        let (base, _) = self.base_and_day();
        let m = self.months as i64;
        let mut idx = base + (month_index(local) - base).div_euclid(m) * m;
        let mut span = self.span_from(idx);
        while span.start > t {
            idx -= m;
            span = self.span_from(idx);
        }
        while span.end <= t {
            idx += m;
            span = self.span_from(idx);
        }
        span
    }

    /// The period that starts in the given month (for `invoice --period YYYY-MM`); for
    /// quarters and years, the one containing that month's anchor day.
    pub fn starting_in(&self, year: i32, month: u32) -> Span {
        let (_, day) = self.base_and_day();
        let idx = year as i64 * 12 + month as i64 - 1;
        self.containing(self.zone.midnight_micros(date_in_month(idx, day)))
    }

    /// The period before `span`.
    pub fn previous(&self, span: &Span) -> Span {
        self.containing(span.start - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_instant;

    fn at(s: &str) -> i64 {
        parse_instant("t", s).unwrap()
    }

    fn cycle(anchor: Option<&str>, zone: &str) -> Cycle {
        Cycle {
            months: 1,
            anchor: anchor.map(|a| NaiveDate::parse_from_str(a, "%Y-%m-%d").unwrap()),
            zone: zone.parse().unwrap(),
        }
    }

    #[test]
    fn calendar_months_of_28_to_31_days() {
        let c = cycle(None, "UTC");
        for (t, start, end, days) in [
            ("2026-02-14T12:00:00Z", "2026-02-01", "2026-03-01", 28),
            ("2028-02-29T23:59:59Z", "2028-02-01", "2028-03-01", 29),
            ("2026-04-30T00:00:00Z", "2026-04-01", "2026-05-01", 30),
            ("2026-12-31T23:59:59Z", "2026-12-01", "2027-01-01", 31),
            ("2026-10-01T00:00:00Z", "2026-10-01", "2026-11-01", 31),
        ] {
            let s = c.containing(at(t));
            assert_eq!((s.start, s.end), (at(start), at(end)), "{t}");
            assert_eq!(s.len(), days * 86_400_000_000, "{t}");
        }
    }

    #[test]
    fn anchored_to_the_31st_falls_on_month_ends() {
        let c = cycle(Some("2026-01-31"), "UTC");
        let s = c.containing(at("2026-02-15T00:00:00Z"));
        assert_eq!((s.start, s.end), (at("2026-01-31"), at("2026-02-28")));
        let s = c.containing(at("2026-03-01T00:00:00Z"));
        assert_eq!((s.start, s.end), (at("2026-02-28"), at("2026-03-31")));
        let s = c.starting_in(2026, 4);
        assert_eq!((s.start, s.end), (at("2026-04-30"), at("2026-05-31")));
        // Before the anchor the cycle extends backwards the same way.
        let s = c.containing(at("2025-12-01T00:00:00Z"));
        assert_eq!((s.start, s.end), (at("2025-11-30"), at("2025-12-31")));
    }

    #[test]
    fn periods_start_at_local_midnight() {
        // Istanbul is UTC+3 all year: October starts at 2026-09-30T21:00Z.
        let c = cycle(None, "Europe/Istanbul");
        let s = c.containing(at("2026-09-30T21:30:00Z"));
        assert_eq!(s.start, at("2026-09-30T21:00:00Z"));
        assert_eq!(s.end, at("2026-10-31T21:00:00Z"));
        // Half an hour earlier is still September there.
        let s = c.containing(at("2026-09-30T20:59:59Z"));
        assert_eq!(s.end, at("2026-09-30T21:00:00Z"));
        // New York changes to standard time on 2026-11-01: November is 30 days + 1 hour.
        let c = cycle(None, "America/New_York");
        let s = c.containing(at("2026-11-10T00:00:00Z"));
        assert_eq!(s.start, at("2026-11-01T04:00:00Z"));
        assert_eq!(s.end, at("2026-12-01T05:00:00Z"));
    }

    #[test]
    fn quarters_and_previous() {
        let c = Cycle {
            months: 3,
            ..cycle(None, "UTC")
        };
        let s = c.containing(at("2026-05-20T00:00:00Z"));
        assert_eq!((s.start, s.end), (at("2026-04-01"), at("2026-07-01")));
        let p = c.previous(&s);
        assert_eq!((p.start, p.end), (at("2026-01-01"), at("2026-04-01")));
    }
}
