//! The canonical usage event and its Arrow schema.
//!
//! Every input format is mapped onto [`UsageEvent`]; the lake stores exactly these
//! columns (see [`lake_schema`]). Timestamps are UTC microseconds since the Unix epoch.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

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
        crate::time::day_of(self.ts)
    }
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
