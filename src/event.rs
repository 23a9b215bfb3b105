//! The canonical usage event and its Arrow schema.
//!
//! Every input format is mapped onto [`UsageEvent`]; the lake stores exactly these
//! columns (see [`lake_schema`]). Timestamps are UTC microseconds since the Unix epoch.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, NaiveDate, Utc};

/// Microseconds per day, for UTC date partitioning.
pub const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The meters the generator and the default configuration know; any other name is allowed.
pub const KNOWN_METERS: [&str; 6] = [
    "api_calls",
    "storage_bytes",
    "documents",
    "ai_tokens",
    "ingest_bytes",
    "active_users",
];

/// One usage event, as stored in the lake.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UsageEvent {
    /// Event id: the producer's, or one derived from the content (see `ingest`).
    pub id: String,
    /// When the usage happened, UTC microseconds since the epoch.
    pub ts: i64,
    /// The customer the usage is billed to.
    pub tenant_id: String,
    /// The end user inside the tenant, when known.
    pub user_id: Option<String>,
    /// What was used: `api_calls`, `storage_bytes`, ... or any other name.
    pub meter: String,
    /// How much: 1 for a call, bytes for storage, tokens for AI. Finite and >= 0.
    pub value: f64,
    /// Flat properties as a compact JSON object with sorted keys (`{}` when none).
    pub properties: String,
}

impl UsageEvent {
    /// The UTC day the event falls on, as days since 1970-01-01 (its lake partition).
    pub fn day(&self) -> i32 {
        day_of(self.ts)
    }
}

/// UTC day number (days since 1970-01-01) of a timestamp in microseconds.
pub fn day_of(ts_micros: i64) -> i32 {
    ts_micros.div_euclid(MICROS_PER_DAY) as i32
}

/// `YYYY-MM-DD` of a day number, the lake's partition value.
pub fn day_to_string(day: i32) -> String {
    date_of_day(day).format("%Y-%m-%d").to_string()
}

/// The calendar date of a day number.
pub fn date_of_day(day: i32) -> NaiveDate {
    // 719_163 days from 0001-01-01 (CE day 1) to 1970-01-01; out-of-range days saturate.
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

/// RFC 3339 rendering of a timestamp in microseconds (`2026-10-01T13:04:05.123456Z`).
pub fn ts_to_rfc3339(ts_micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(ts_micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_else(|| ts_micros.to_string())
}

/// The lake's column layout: `id, ts, tenant_id, user_id, meter, value, properties`.
///
/// `ts` is `Timestamp(µs, "UTC")`, so DuckDB reads it as TIMESTAMPTZ and pandas as a
/// tz-aware datetime; `properties` is a JSON object in a string column, which every reader
/// can query (`json_extract` in DuckDB, `str.json_decode` in polars).
pub fn lake_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("tenant_id", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, true),
        Field::new("meter", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
        Field::new("properties", DataType::Utf8, false),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            assert_eq!(day_of_date(date_of_day(d)), d);
        }
    }
}
