//! One meter queried straight from events, the way OpenMeter's meter query answers: its
//! aggregation per window (minute, hour, day or month, cut in a time zone, or the whole
//! range), per subject (tenant) when asked, and per the meter's `group_by` values.
//!
//! The events are the lake's (and, in `serve`, those still in the write-ahead log); the
//! values come from the same [`aggregate`] the rollups use, so a query and a rollup of the
//! same meter agree. Minute windows have no rollup to read from, which is why this works
//! on events; [`MAX_MINUTE_SPAN`] bounds what one minute query may scan.

use std::collections::BTreeMap;

use polars::prelude::*;

use super::aggregate::{Dim, aggregate};
use super::meters::{Meter, Meters, json_path_key};
use super::window::{Calendar, Granularity, Zone, window_start_expr};
use crate::error::{Error, Result};
use crate::time::{MICROS_PER_DAY, MICROS_PER_MINUTE};

/// The event columns a query reads.
pub const EVENT_COLUMNS: [&str; 6] = ["ts", "tenant_id", "user_id", "meter", "value", "properties"];

/// The longest range a minute-window query may span (1,440 windows).
pub const MAX_MINUTE_SPAN: i64 = MICROS_PER_DAY;

/// Window length of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSize {
    /// One minute.
    Minute,
    /// One hour (local hour in the zone).
    Hour,
    /// One day, local midnight to local midnight.
    Day,
    /// One calendar month.
    Month,
}

impl WindowSize {
    /// OpenMeter's name: `MINUTE`, `HOUR`, `DAY`, `MONTH`.
    pub fn name(self) -> &'static str {
        match self {
            WindowSize::Minute => "MINUTE",
            WindowSize::Hour => "HOUR",
            WindowSize::Day => "DAY",
            WindowSize::Month => "MONTH",
        }
    }

    /// From OpenMeter's name (case-insensitive).
    pub fn parse(s: &str) -> Option<WindowSize> {
        match s.to_ascii_uppercase().as_str() {
            "MINUTE" => Some(WindowSize::Minute),
            "HOUR" => Some(WindowSize::Hour),
            "DAY" => Some(WindowSize::Day),
            "MONTH" => Some(WindowSize::Month),
            _ => None,
        }
    }
}

/// What to query.
#[derive(Debug, Clone)]
pub struct MeterQuery {
    /// Events at or after this instant (UTC µs)...
    pub from: Option<i64>,
    /// ...and before this one.
    pub to: Option<i64>,
    /// Windows, or `None` for one value over the whole range.
    pub window: Option<WindowSize>,
    /// The zone windows are cut in.
    pub zone: Zone,
    /// Only these subjects (tenants), when given.
    pub subjects: Option<Vec<String>>,
    /// One row per subject (else the subjects are aggregated together).
    pub by_subject: bool,
    /// Names of the meter's `group_by` entries to break the values down by.
    pub group_by: Vec<String>,
}

/// One value of a query's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryRow {
    /// Window start, UTC µs.
    pub window_start: i64,
    /// Window end (exclusive), UTC µs.
    pub window_end: i64,
    /// The subject, when the query is by subject.
    pub subject: Option<String>,
    /// The group values, by group name (null when an event lacks it).
    pub group: BTreeMap<String, Option<String>>,
    /// The aggregated value.
    pub value: f64,
}

/// Checks a query against its meter: the group names exist, and a minute query names a
/// range of at most [`MAX_MINUTE_SPAN`]. Errors name the parameter.
pub fn check(meter: &Meter, q: &MeterQuery) -> Result<()> {
    let bad = |name: &'static str, reason: String| Err(Error::InvalidParameter { name, reason });
    for g in &q.group_by {
        if !meter.group_by.contains_key(g) {
            let known: Vec<&str> = meter.group_by.keys().map(String::as_str).collect();
            return bad(
                "groupBy",
                format!(
                    "meter `{}` has no group `{g}` (its group_by: {}; `subject` is always allowed)",
                    meter.name,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
    }
    if let (Some(f), Some(t)) = (q.from, q.to)
        && f >= t
    {
        return bad("to", "must be after `from`".into());
    }
    if q.window == Some(WindowSize::Minute) {
        match (q.from, q.to) {
            (Some(f), Some(t)) if t - f <= MAX_MINUTE_SPAN => {}
            _ => {
                return bad(
                    "windowSize",
                    "MINUTE windows are computed from the events: give `from` and `to` at most 24 hours apart"
                        .into(),
                );
            }
        }
    }
    Ok(())
}

/// A query runs in two steps, so that a caller reading under a lock can release it between
/// them. First this: the meter's events in the query's range and subjects, collected from
/// `events` (lazy, with the lake's columns: `ts` as a UTC datetime, `tenant_id`, `user_id`,
/// `meter`, `value`, `properties`).
pub fn select_events(events: LazyFrame, meter: &Meter, q: &MeterQuery) -> Result<DataFrame> {
    check(meter, q)?;
    let ts = col("ts").cast(DataType::Int64);
    let mut keep = col("meter").eq(lit(meter.event().to_string()));
    if let Some(f) = q.from {
        keep = keep.and(ts.clone().gt_eq(lit(f)));
    }
    if let Some(t) = q.to {
        keep = keep.and(ts.clone().lt(lit(t)));
    }
    if let Some(s) = &q.subjects {
        let s = Series::new("s".into(), s.clone());
        keep = keep.and(col("tenant_id").is_in(lit(s).implode(true), false));
    }
    let mut lf = events.filter(keep).select(EVENT_COLUMNS.map(col));
    if !q.by_subject {
        lf = lf.with_column(lit("").alias("tenant_id"));
    }
    super::aggregate::collect(lf)
}

/// Then this: the [`select_events`] aggregated per window, subject and group. Rows come
/// sorted by window, subject and group values; windows without events have no row. `now`
/// ends an open range in the answer of a query without windows.
pub fn aggregate_events(
    df: DataFrame,
    meter: &Meter,
    q: &MeterQuery,
    now: i64,
) -> Result<Vec<QueryRow>> {
    if df.height() == 0 {
        return Ok(Vec::new());
    }
    // Groups → dimensions (a group of `$.user_id` is the event's user).
    let mut dims: Vec<Dim> = Vec::new();
    let mut columns: Vec<(String, String)> = Vec::new();
    for g in &q.group_by {
        let key = json_path_key(&meter.group_by[g]).map_err(|reason| Error::InvalidParameter {
            name: "groupBy",
            reason,
        })?;
        let d = if key == "user_id" {
            Dim::User
        } else {
            Dim::Property(key)
        };
        columns.push((g.clone(), d.column()));
        if !dims.contains(&d) {
            dims.push(d);
        }
    }
    let window = match q.window {
        None => lit(0i64).cast(DataType::Int64),
        Some(WindowSize::Minute) => {
            (col("ts").cast(DataType::Int64) / lit(MICROS_PER_MINUTE)) * lit(MICROS_PER_MINUTE)
        }
        Some(w) => window_start_expr(col("ts"), granularity(w), q.zone)?,
    };
    let whole = match q.window {
        None => {
            let first = df.column("ts")?.cast(&DataType::Int64)?.i64()?.min();
            Some((q.from.or(first).unwrap_or(0), q.to.unwrap_or(now)))
        }
        Some(_) => None,
    };
    let meters = Meters::new(vec![meter.clone()])?;
    let (rows, _) = aggregate(df.lazy(), &meters, window, &dims)?;
    let mut sort_by: Vec<String> = vec!["window_start".into(), "tenant_id".into()];
    sort_by.extend(dims.iter().map(Dim::column));
    let rows = rows.sort(
        sort_by,
        SortMultipleOptions::default().with_nulls_last(true),
    )?;
    let starts = rows.column("window_start")?.i64()?.clone();
    let values = rows.column("value")?.f64()?.clone();
    let tenants = rows.column("tenant_id")?.str()?.clone();
    let calendar = match (q.window, starts.min(), starts.max()) {
        (Some(w), Some(lo), Some(hi)) if w != WindowSize::Minute => {
            Some(Calendar::new(granularity(w), q.zone, lo, hi + 1)?)
        }
        _ => None,
    };
    let mut group_cols = Vec::new();
    for (g, c) in &columns {
        let text = rows.column(c)?.cast(&DataType::String)?;
        group_cols.push((g.clone(), text.str()?.clone()));
    }
    let mut out = Vec::with_capacity(rows.height());
    for i in 0..rows.height() {
        let start = starts.get(i).unwrap_or(0);
        let (window_start, window_end) = match (whole, &calendar) {
            (Some(r), _) => r,
            (None, Some(c)) => (start, c.end_of(start).unwrap_or(start)),
            (None, None) => (start, start + MICROS_PER_MINUTE),
        };
        let mut group = BTreeMap::new();
        for (g, c) in &group_cols {
            group.insert(g.clone(), c.get(i).map(str::to_string));
        }
        out.push(QueryRow {
            window_start,
            window_end,
            subject: q
                .by_subject
                .then(|| tenants.get(i).unwrap_or_default().to_string()),
            group,
            value: values.get(i).unwrap_or(0.0),
        });
    }
    Ok(out)
}

fn granularity(w: WindowSize) -> Granularity {
    match w {
        WindowSize::Hour => Granularity::Hour,
        WindowSize::Month => Granularity::Month,
        // Minutes never reach here (they are cut by integer arithmetic).
        WindowSize::Day | WindowSize::Minute => Granularity::Day,
    }
}
