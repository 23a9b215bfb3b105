//! `meterlake export data`: everything the lake and its derived outputs hold about one
//! tenant or one of its users, for an access request. The counterpart of
//! [`super::forget`]: it finds the same rows `forget` would remove, by the same rules, and
//! removes nothing.
//!
//! ```text
//! OUT/
//!   manifest.json                    who, from which lake commit, each file's rows and SHA-256
//!   events.{ndjson|csv|parquet}      the events, committed and still in the server's log
//!   quarantine.{...}                 rejected records naming them (file, line, reason, record)
//!   derived/<lake path>.{...}        their rows of rollups, forecasts, anomalies, alerts, quotas
//!   invoices/YYYY-MM.json            the tenant's issued invoices (tenant exports only)
//!   invoices/adjustments.json        its adjustments
//!   reports/...                      reports the server stored for the tenant
//! ```
//!
//! The export is a read of tenant data, so it is recorded in the lake's access log before
//! anything is read. On a pseudonymised lake the user is given by raw id and found by its
//! pseudonym (the caller maps it, [`crate::lake::privacy::user_in_lake`]). The same lake
//! gives the same bytes: rows are sorted and nothing depends on the clock.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use rayon::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::forget::{derived_files, mentions_id, quarantined_match, read_log, uncommitted};
use crate::error::{Error, IoContext, Result};
use crate::event::UsageEvent;
use crate::lake::{Lake, read_events};
use crate::stage::tables;

/// The file format of the exported tables (invoices stay JSON documents).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// One JSON object per line (`.ndjson`).
    Json,
    /// CSV with a header (`.csv`).
    Csv,
    /// Parquet, ZSTD (`.parquet`).
    Parquet,
}

impl ExportFormat {
    fn ext(self) -> &'static str {
        match self {
            ExportFormat::Json => "ndjson",
            ExportFormat::Csv => "csv",
            ExportFormat::Parquet => "parquet",
        }
    }
}

/// Whose data to export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The tenant.
    pub tenant: String,
    /// Only this user of the tenant, as the lake stores it (its pseudonym on a
    /// pseudonymised lake).
    pub user: Option<String>,
    /// The user id as the requester gave it (recorded in the manifest, never in the lake).
    pub user_given: Option<String>,
    /// Table format.
    pub format: ExportFormat,
    /// Who asks (recorded in the access log).
    pub actor: String,
}

/// One file of the export.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExportedFile {
    /// Relative to the export folder.
    pub path: String,
    /// Rows (records, for invoices: invoices or adjustments).
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
}

/// What `export data` wrote: also `manifest.json`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ExportSummary {
    /// The tenant.
    pub tenant: String,
    /// The user as given, if the export is a user's.
    pub user: Option<String>,
    /// The user as the lake stores it (differs on a pseudonymised lake).
    pub user_in_lake: Option<String>,
    /// The lake commit the export reflects.
    pub lake_commit: u64,
    /// Events committed to the lake.
    pub events: u64,
    /// Events acknowledged by the server but not yet committed (its log).
    pub logged_events: u64,
    /// Quarantined records naming them.
    pub quarantined: u64,
    /// Rows of derived tables (alerts included).
    pub derived_rows: u64,
    /// Of which alerts.
    pub alerts: u64,
    /// Issued invoices.
    pub invoices: u64,
    /// Invoice adjustments.
    pub adjustments: u64,
    /// Stored reports copied.
    pub reports: u64,
    /// Every file but the manifest, in the order written.
    pub files: Vec<ExportedFile>,
}

/// Writes the tenant's (or user's) data under `out`, which must be missing or empty.
pub fn export_data(lake_dir: &Path, out: &Path, opts: &ExportOptions) -> Result<ExportSummary> {
    if opts.tenant.is_empty() || opts.user.as_deref() == Some("") {
        return Err(Error::InvalidParameter {
            name: "--tenant",
            reason: "tenant and user ids must not be empty".into(),
        });
    }
    if out.exists() && fs::read_dir(out).at(out)?.next().is_some() {
        return Err(Error::InvalidParameter {
            name: "--out",
            reason: format!(
                "{} is not empty; an export goes to a new folder",
                out.display()
            ),
        });
    }
    // The server's log first, then the lake: an event it commits meanwhile is in one or
    // the other (and counted once), never missed.
    let log = read_log(lake_dir)?;
    let lake = Lake::open(lake_dir)?;
    let what = match &opts.user {
        Some(u) => format!("export data user={u}"),
        None => "export data".to_string(),
    };
    crate::lake::access::record(
        lake_dir,
        crate::lake::access::Read {
            actor: &opts.actor,
            via: "cli",
            key_id: None,
            tenant: &opts.tenant,
            what: &what,
        },
    )?;
    fs::create_dir_all(out).at(out)?;
    let mut s = ExportSummary {
        tenant: opts.tenant.clone(),
        user: opts.user_given.clone().or(opts.user.clone()),
        user_in_lake: opts.user.clone(),
        lake_commit: lake.last_seq(),
        ..ExportSummary::default()
    };
    let matches = |e: &UsageEvent| {
        e.tenant_id == opts.tenant
            && opts
                .user
                .as_ref()
                .is_none_or(|u| e.user_id.as_ref() == Some(u))
    };

    // Events: the lake's files in parallel, then the server's uncommitted log.
    let root = lake.root().to_path_buf();
    let files = lake.data_files();
    lake.fetch(&files)?;
    let mut events: Vec<UsageEvent> = files
        .par_iter()
        .map(|f| -> Result<Vec<UsageEvent>> {
            Ok(read_events(&root.join(&f.path))?
                .into_iter()
                .filter(&matches)
                .collect())
        })
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect();
    s.events = events.len() as u64;
    let seen: HashSet<(String, String)> = events
        .iter()
        .map(|e| (e.tenant_id.clone(), e.id.clone()))
        .collect();
    let logged: Vec<UsageEvent> = uncommitted(&lake, log)
        .into_iter()
        .filter(|e| matches(e) && !seen.contains(&(e.tenant_id.clone(), e.id.clone())))
        .collect();
    s.logged_events = logged.len() as u64;
    events.extend(logged);
    events.sort_by(|a, b| (a.ts, &a.meter, &a.id).cmp(&(b.ts, &b.meter, &b.id)));
    let mut df = events_frame(&events)?;
    let f = write_table(out, "events", &mut df, opts.format)?;
    s.files.push(f);

    // Quarantined records naming them.
    let mut q = QuarantineRows::default();
    for rel in lake.quarantine_files() {
        let path = root.join(rel);
        if !path.is_file() {
            continue;
        }
        let text = fs::read_to_string(&path).at(&path)?;
        for line in text.lines() {
            // Sealed when a key is configured (lake::crypto::seal_line).
            let opened = crate::lake::crypto::open_line(&path, line.as_bytes())?;
            let line = opened
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            let record = v
                .get("record")
                .and_then(|r| r.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| line.to_string());
            if quarantined_match(&record, &opts.tenant, opts.user.as_deref()) {
                q.push(&v, record);
            }
        }
    }
    s.quarantined = q.file.len() as u64;
    let mut df = q.frame()?;
    s.files
        .push(write_table(out, "quarantine", &mut df, opts.format)?);

    // Derived tables: the rows `forget` would remove.
    for path in derived_files(lake_dir)? {
        let df = tables::read_frame(&path)?;
        let Some(mut rows) = derived_rows(df, &opts.tenant, opts.user.as_deref())? else {
            continue;
        };
        if rows.height() == 0 {
            continue;
        }
        let rel = path
            .strip_prefix(lake_dir)
            .unwrap_or(&path)
            .with_extension("");
        let rel = Path::new("derived").join(rel);
        let n = rows.height() as u64;
        s.derived_rows += n;
        // The alerts table only: its directory also holds the deliveries of those alerts.
        if path.strip_prefix(lake_dir).ok()
            == Some(&Path::new(tables::ALERTS_DIR).join(crate::stage::tables::alerts::FILE))
        {
            s.alerts += n;
        }
        s.files.push(write_table(
            out,
            &rel.to_string_lossy(),
            &mut rows,
            opts.format,
        )?);
    }

    // The tenant's issued invoices and adjustments (a user has none of their own).
    if opts.user.is_none() {
        let reg = crate::stage::invoices::Register::of(lake_dir);
        for period in reg.periods()? {
            let Some(mut inv) = reg.issued(&period)? else {
                continue;
            };
            inv.invoices.retain(|i| i.tenant_id == opts.tenant);
            if inv.invoices.is_empty() {
                continue;
            }
            s.invoices += 1;
            let bytes = pretty(&inv)?;
            s.files.push(write_file(
                out,
                &format!("invoices/{period}.json"),
                &bytes,
                1,
            )?);
        }
        let adj: Vec<_> = reg
            .adjustments()?
            .into_iter()
            .filter(|a| a.tenant_id == opts.tenant)
            .collect();
        if !adj.is_empty() {
            s.adjustments = adj.len() as u64;
            let bytes = pretty(&adj)?;
            s.files.push(write_file(
                out,
                "invoices/adjustments.json",
                &bytes,
                s.adjustments,
            )?);
        }
    }

    // Reports the server stored for the tenant (for a user: those that name them).
    let dir = lake_dir
        .join(crate::report::API_REPORTS_DIR)
        .join(&opts.tenant);
    if dir.is_dir() {
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .at(&dir)?
            .map(|e| e.map(|e| e.path()).at(&dir))
            .collect::<Result<_>>()?;
        files.retain(|p| p.is_file());
        files.sort();
        for f in files {
            // Sealed in an encrypted lake: the export holds the report itself.
            let bytes = crate::lake::crypto::read_sealed(&f)?;
            let keep = match &opts.user {
                None => true,
                Some(u) => std::str::from_utf8(&bytes).is_ok_and(|t| mentions_id(t, u)),
            };
            if keep {
                let name = f.file_name().expect("a file").to_string_lossy();
                s.reports += 1;
                s.files
                    .push(write_file(out, &format!("reports/{name}"), &bytes, 1)?);
            }
        }
    }
    let manifest = pretty(&s)?;
    tables::atomic_write(&out.join("manifest.json"), &manifest)?;
    Ok(s)
}

fn pretty<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    let mut b = serde_json::to_vec_pretty(v).map_err(|e| Error::Render(e.to_string()))?;
    b.push(b'\n');
    Ok(b)
}

/// Writes `bytes` at `rel` under `out` and describes it.
fn write_file(out: &Path, rel: &str, bytes: &[u8], rows: u64) -> Result<ExportedFile> {
    let path = out.join(rel);
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).at(d)?;
    }
    tables::atomic_write(&path, bytes)?;
    describe(out, &path, rows)
}

fn describe(out: &Path, path: &Path, rows: u64) -> Result<ExportedFile> {
    let bytes = fs::read(path).at(path)?;
    let sha = Sha256::digest(&bytes);
    Ok(ExportedFile {
        path: path
            .strip_prefix(out)
            .unwrap_or(path)
            .to_string_lossy()
            .replace('\\', "/"),
        rows,
        bytes: bytes.len() as u64,
        sha256: sha.iter().map(|b| format!("{b:02x}")).collect(),
    })
}

/// Writes a table at `rel` (no extension) under `out` in `format`.
fn write_table(
    out: &Path,
    rel: &str,
    df: &mut DataFrame,
    format: ExportFormat,
) -> Result<ExportedFile> {
    let path = out.join(format!("{rel}.{}", format.ext()));
    match format {
        ExportFormat::Parquet => tables::write_frame(&path, df)?,
        ExportFormat::Csv => tables::write_frame(&path, &mut exact_instants(df)?)?,
        ExportFormat::Json => {
            if let Some(d) = path.parent() {
                fs::create_dir_all(d).at(d)?;
            }
            tables::atomic_write(&path, &ndjson(&exact_instants(df)?)?)?;
        }
    }
    describe(out, &path, df.height() as u64)
}

/// The frame with its instants as RFC 3339 text to the microsecond (text formats would
/// otherwise round them to the second).
fn exact_instants(df: &DataFrame) -> Result<DataFrame> {
    let mut out = df.clone();
    for c in df.columns() {
        if let DataType::Datetime(unit, _) = c.dtype() {
            let per_us = match unit {
                TimeUnit::Nanoseconds => 1_000,
                TimeUnit::Microseconds => 1,
                TimeUnit::Milliseconds => -1_000,
            };
            let text: Vec<Option<String>> = c
                .as_materialized_series()
                .to_physical_repr()
                .i64()?
                .iter()
                .map(|v| {
                    v.map(|t| {
                        let us = if per_us > 0 { t / per_us } else { t * -per_us };
                        crate::time::rfc3339_micros(us)
                    })
                })
                .collect();
            out.with_column(Column::new(c.name().clone(), text))?;
        }
    }
    Ok(out)
}

/// One JSON object per row: text, numbers and booleans as themselves, instants in RFC 3339
/// (UTC, µs), nulls as null.
fn ndjson(df: &DataFrame) -> Result<Vec<u8>> {
    let names: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    let mut out = Vec::new();
    for i in 0..df.height() {
        let mut m = serde_json::Map::new();
        for (name, c) in names.iter().zip(df.columns()) {
            let v = match c.get(i)? {
                AnyValue::Null => serde_json::Value::Null,
                AnyValue::String(s) => s.into(),
                AnyValue::StringOwned(s) => s.as_str().into(),
                AnyValue::Boolean(b) => b.into(),
                AnyValue::Float64(x) => x.into(),
                AnyValue::Float32(x) => f64::from(x).into(),
                AnyValue::Int64(x) => x.into(),
                AnyValue::Int32(x) => x.into(),
                AnyValue::UInt64(x) => x.into(),
                AnyValue::UInt32(x) => x.into(),
                AnyValue::Datetime(t, _, _) | AnyValue::DatetimeOwned(t, _, _) => {
                    crate::time::format_ts(t, false).into()
                }
                v => v.to_string().into(),
            };
            m.insert(name.clone(), v);
        }
        serde_json::to_writer(&mut out, &m).map_err(|e| Error::Render(e.to_string()))?;
        out.push(b'\n');
    }
    Ok(out)
}

/// The lake's columns as a frame (`ts` as a UTC instant).
fn events_frame(events: &[UsageEvent]) -> Result<DataFrame> {
    let s = |f: fn(&UsageEvent) -> Option<&str>| -> Vec<Option<&str>> {
        events.iter().map(f).collect()
    };
    Ok(DataFrame::new(
        events.len(),
        vec![
            Column::new("id".into(), s(|e| Some(&e.id))),
            tables::instants("ts", events.iter().map(|e| e.ts).collect())?,
            Column::new("tenant_id".into(), s(|e| Some(&e.tenant_id))),
            Column::new("user_id".into(), s(|e| e.user_id.as_deref())),
            Column::new("meter".into(), s(|e| Some(&e.meter))),
            Column::new(
                "value".into(),
                events.iter().map(|e| e.value).collect::<Vec<f64>>(),
            ),
            Column::new("properties".into(), s(|e| Some(&e.properties))),
        ],
    )?)
}

/// Quarantined records as columns.
#[derive(Default)]
struct QuarantineRows {
    file: Vec<Option<String>>,
    line: Vec<Option<u64>>,
    field: Vec<Option<String>>,
    reason: Vec<Option<String>>,
    record: Vec<String>,
}

impl QuarantineRows {
    fn push(&mut self, v: &serde_json::Value, record: String) {
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        self.file.push(s("file"));
        self.line.push(v.get("line").and_then(|x| x.as_u64()));
        self.field.push(s("field"));
        self.reason.push(s("reason"));
        self.record.push(record);
    }

    fn frame(self) -> Result<DataFrame> {
        Ok(DataFrame::new(
            self.record.len(),
            vec![
                Column::new("file".into(), self.file),
                Column::new("line".into(), self.line),
                Column::new("field".into(), self.field),
                Column::new("reason".into(), self.reason),
                Column::new("record".into(), self.record),
            ],
        )?)
    }
}

/// The rows of a derived table about the tenant (or user); none when the table has no
/// such rows by construction (no tenant column; for a user, no user column, user list or
/// message).
fn derived_rows(df: DataFrame, tenant: &str, user: Option<&str>) -> Result<Option<DataFrame>> {
    if df.column("tenant_id").is_err() {
        return Ok(None);
    }
    let tenant_is = col("tenant_id").eq(lit(tenant.to_string()));
    let Some(u) = user else {
        return Ok(Some(df.lazy().filter(tenant_is).collect()?));
    };
    if df.column("user_id").is_ok() {
        let is_user = col("user_id").eq(lit(u.to_string()));
        return Ok(Some(df.lazy().filter(tenant_is.and(is_user)).collect()?));
    }
    // User lists (`users`, comma-separated) and alert messages naming the user.
    let tenants = df.column("tenant_id")?.str()?.clone();
    let mut keep = vec![false; df.height()];
    let mut any_column = false;
    for name in ["users", "message"] {
        let Ok(ca) = df.column(name).and_then(|c| c.str().cloned()) else {
            continue;
        };
        any_column = true;
        for (i, (t, v)) in tenants.iter().zip(ca.iter()).enumerate() {
            if t == Some(tenant)
                && v.is_some_and(|v| match name {
                    "users" => v.split(',').any(|x| x == u),
                    _ => mentions_id(v, u),
                })
            {
                keep[i] = true;
            }
        }
    }
    if !any_column {
        return Ok(None);
    }
    let mask = BooleanChunked::from_slice("keep".into(), &keep);
    Ok(Some(df.filter(&mask)?))
}
