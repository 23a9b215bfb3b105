//! The derived tables: what the stages over the lake write, in one place.
//!
//! ```text
//! LAKE/
//!   forecasts/granularity=G/forecast.parquet   one row per tenant × meter × future step
//!   forecasts/granularity=G/metrics.parquet    one row per series: model, backtest errors
//!   anomalies/granularity=G/points.parquet     flagged points, per detector
//!   anomalies/granularity=G/incidents.parquet  flagged points merged into incidents
//!   quotas/quotas.parquet                      one row per tenant × billed meter, at the run's instant
//!   alerts/alerts.parquet                      every alert raised, with acks and webhook deliveries
//!   alerts/deliveries.parquet                  every notification of an alert (notify channels)
//! ```
//!
//! Each table has a module here with its folder and file names, its typed row, and the
//! function that writes it and the one that reads it back, so the stage that writes a
//! table and the report, job or endpoint that reads it agree on one schema, by type, not
//! by column-name strings. Every file is written whole and atomically ([`write_frame`]:
//! temp file, fsync, rename), so a reader sees the old table or the new one. The temp
//! file's name ([`temp_path`]) derives from the whole file name and is unique per process
//! and call, so two files of one stem (`summary.json`, `summary.html`) or two writers of
//! one file never share a temp file; every atomic writer of the crate names its temp files
//! through it.
//!
//! Layer: above [`crate::billing`] (a quota row is billing's [`QuotaRow`]) and below the
//! stages that write the tables ([`crate::stage`]), the reports, the jobs (`retention`,
//! `forget`) and `serve`, which read them. The lake itself knows nothing of these tables.
//!
//! [`QuotaRow`]: crate::billing::quota::QuotaRow

pub mod alerts;
pub mod deliveries;
pub mod forecasts;
pub mod incidents;
pub mod quotas;

use std::path::Path;

use polars::prelude::*;

use crate::error::{Error, IoContext, Result};

/// Folder of the forecast tables under the lake.
pub const FORECASTS_DIR: &str = forecasts::DIR;
/// Folder of the anomaly tables under the lake.
pub const ANOMALIES_DIR: &str = incidents::DIR;
/// Folder of the quota table under the lake.
pub const QUOTAS_DIR: &str = quotas::DIR;
/// Folder of the alert store under the lake.
pub const ALERTS_DIR: &str = alerts::DIR;

/// Every derived table's folder (rollups are the rollup stage's own: `crate::rollup`).
pub const DIRS: [&str; 4] = [FORECASTS_DIR, ANOMALIES_DIR, ALERTS_DIR, QUOTAS_DIR];

/// Writes a table as Parquet (`.parquet`/`.pq`, ZSTD) or CSV (anything else), atomically:
/// a temp file beside it, fsynced, then renamed over it.
pub fn write_frame(path: &Path, df: &mut DataFrame) -> Result<()> {
    let parquet = is_parquet(path);
    write_file(path, |f| {
        if parquet {
            // Encrypted when a key is configured (lake::crypto).
            crate::lake::crypto::write_frame(f, path, df)
        } else {
            write_csv(f, df).map_err(|e| Error::BadInput {
                path: path.to_path_buf(),
                reason: format!("writing: {e}"),
            })
        }
    })
}

/// Whether a table at `path` is written as Parquet (`.parquet`/`.pq`) rather than CSV.
pub fn is_parquet(path: &Path) -> bool {
    matches!(
        path.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("parquet" | "pq")
    )
}

/// Writes a file with `write`, atomically as [`write_frame`] does: its folder made, a temp
/// file beside it, fsynced, then renamed over it (removed if anything fails).
pub fn write_file(path: &Path, write: impl FnOnce(&std::fs::File) -> Result<()>) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).at(dir)?;
    }
    // Inside a lake: not while a rekey runs, and only with the lake's key.
    let _guard = crate::lake::derived_write(path)?;
    let tmp = temp_path(path);
    let written = (|| {
        let f = std::fs::File::create(&tmp).at(&tmp)?;
        write(&f)?;
        f.sync_all().at(&tmp)?;
        std::fs::rename(&tmp, path).at(path)
    })();
    if written.is_err() {
        // Temp names are unique, so a failed write would otherwise leave its file behind.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The suffix of every temp file an atomic write leaves while it runs (readers listing a
/// folder skip names ending in it).
pub const TEMP_SUFFIX: &str = ".tmp-meterlake";

/// The temp file an atomic write of `path` goes through before its rename: beside it (same
/// file system, so the rename is atomic), named `.NAME.PID-N.tmp-meterlake` after the whole
/// file name `NAME` (extension included), the process id and a per-process counter, so no
/// two writes in flight share one.
pub fn temp_path(path: &Path) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}-{n}{TEMP_SUFFIX}", std::process::id()))
}

/// Removes the temp files ([`temp_path`]) under `dir` (two levels down, as `out/reports/KIND/`)
/// left by processes that no longer run: a write killed before its rename leaves one, and
/// no later write has its name. A running process's (another run writing now) is kept. Only
/// where `/proc` tells which processes run (Linux); elsewhere nothing is removed.
pub fn sweep_stale_temps(dir: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let me = std::process::id().to_string();
    let mut dirs = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                if depth < 2 {
                    dirs.push((path, depth + 1));
                }
                continue;
            }
            let name = e.file_name().to_string_lossy().to_string();
            // `.NAME.PID-N.tmp-meterlake`
            let pid = name
                .strip_suffix(TEMP_SUFFIX)
                .and_then(|s| s.rsplit_once('.'))
                .and_then(|(_, pid_n)| pid_n.split_once('-'))
                .map(|(pid, _)| pid)
                .filter(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
            if let Some(pid) = pid
                && pid != me
                && !Path::new("/proc").join(pid).exists()
            {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// Writes bytes to a temporary file ([`temp_path`]: named after the
/// whole file name, unique per process and call), syncs it and renames it over `path`.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = crate::stage::tables::temp_path(path);
    let written = (|| {
        let mut f = std::fs::File::create(&tmp).at(&tmp)?;
        f.write_all(bytes).at(&tmp)?;
        f.sync_all().at(&tmp)?;
        std::fs::rename(&tmp, path).at(path)
    })();
    if written.is_err() {
        // Temp names are unique, so a failed write would otherwise leave its file behind.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// CSV of a frame: text as is, numbers in their shortest round-trip form, datetimes in
/// RFC 3339, nulls empty.
fn write_csv(
    f: &std::fs::File,
    df: &DataFrame,
) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, f);
    let mut head = csv::Writer::from_writer(Vec::new());
    head.write_record(df.get_column_names().iter().map(|n| n.as_str()))?;
    out.write_all(&head.into_inner()?)?;
    let mut df = df.clone();
    df.rechunk_mut();
    let views: Vec<View> = df
        .columns()
        .iter()
        .map(|c| -> PolarsResult<View> {
            Ok(match c.dtype() {
                DataType::String => View::Str(c.str()?),
                DataType::Float64 => View::F64(c.f64()?),
                DataType::Datetime(..) => View::Micros(c.cast(&DataType::Int64)?.i64()?.clone()),
                _ => View::Other(c),
            })
        })
        .collect::<PolarsResult<_>>()?;
    // Blocks of rows, 64 formatted at a time.
    const BLOCK_ROWS: usize = 1 << 15;
    let rows =
        |k: usize| -> std::result::Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
            let a = k * BLOCK_ROWS;
            let mut w = csv::Writer::from_writer(Vec::new());
            csv_rows(&mut w, &views, a..(a + BLOCK_ROWS).min(df.height()))?;
            Ok(w.into_inner()?)
        };
    write_blocks(
        &mut out,
        df.height().div_ceil(BLOCK_ROWS),
        64,
        rows,
        Into::into,
    )?;
    out.flush()?;
    Ok(())
}

/// Writes text formatted in parallel, in order: `block(k)` is the text of block `k` of
/// `blocks`, and `round` blocks are formatted at a time on the pool (what bounds memory);
/// `io` turns a failed write into the caller's error.
pub(crate) fn write_blocks<E: Send>(
    out: &mut impl std::io::Write,
    blocks: usize,
    round: usize,
    block: impl Fn(usize) -> std::result::Result<Vec<u8>, E> + Sync,
    io: impl Fn(std::io::Error) -> E,
) -> std::result::Result<(), E> {
    use rayon::prelude::*;
    let round = round.max(1);
    for a in (0..blocks).step_by(round) {
        let texts: Vec<_> = (a..(a + round).min(blocks))
            .into_par_iter()
            .map(&block)
            .collect();
        for t in texts {
            out.write_all(&t?).map_err(&io)?;
        }
    }
    Ok(())
}

/// A float cell's text, `{x}` (the shortest that reads back as the same number), kept
/// for the last value: a column that repeats a value (a flat forecast) formats it once.
#[derive(Default)]
pub(crate) struct FloatText {
    bits: Option<u64>,
    text: String,
}

impl FloatText {
    /// The text of `x`.
    pub fn of(&mut self, x: f64) -> &str {
        use std::fmt::Write as _;
        if self.bits != Some(x.to_bits()) {
            self.bits = Some(x.to_bits());
            self.text.clear();
            let _ = write!(self.text, "{x}");
        }
        &self.text
    }
}

/// A column of [`write_csv`], typed once, so each cell is read without an `AnyValue`.
enum View<'a> {
    Str(&'a StringChunked),
    F64(&'a Float64Chunked),
    /// A datetime's physical microseconds.
    Micros(Int64Chunked),
    Other(&'a Column),
}

/// Rows `rows` of `views` as CSV records.
fn csv_rows(
    w: &mut csv::Writer<Vec<u8>>,
    views: &[View],
    rows: std::ops::Range<usize>,
) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use std::fmt::Write as _;
    // One buffer per column, reused row after row; a null is an empty field.
    let mut rec: Vec<String> = vec![String::new(); views.len()];
    let mut floats: Vec<FloatText> = views.iter().map(|_| FloatText::default()).collect();
    for i in rows {
        for ((b, v), float) in rec.iter_mut().zip(views).zip(&mut floats) {
            b.clear();
            match v {
                View::Str(c) => b.push_str(c.get(i).unwrap_or_default()),
                View::F64(c) => {
                    if let Some(x) = c.get(i) {
                        b.push_str(float.of(x));
                    }
                }
                View::Micros(c) => {
                    if let Some(t) = c.get(i) {
                        b.push_str(&crate::time::format_ts(t, false));
                    }
                }
                View::Other(c) => match c.get(i)? {
                    AnyValue::Null => {}
                    x => write!(b, "{x}")?,
                },
            }
        }
        w.write_record(&rec)?;
    }
    Ok(())
}

/// A Parquet file of the lake, whole; a damaged one is a `CorruptLake` error naming it.
pub fn read_frame(path: &Path) -> Result<DataFrame> {
    // Decrypted when encrypted (lake::crypto).
    crate::lake::crypto::read_frame(path)
}

/// A tenant × meter series.
pub type SeriesKey = (String, String);

/// The part of a derived table one stage run recomputes: the series `only` lists (none:
/// all), of the tenants `shard` holds. The rest of the table is kept as it is
/// ([`replace_rows`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Part<'a> {
    /// These tenant × meter series only (none: every series).
    pub only: Option<&'a std::collections::BTreeSet<SeriesKey>>,
    /// The tenants of this shard only (`--shard`).
    pub shard: crate::lake::Shard,
}

impl Part<'_> {
    /// The whole table.
    pub fn is_whole(&self) -> bool {
        self.only.is_none() && self.shard.is_all()
    }

    /// Whether the run recomputes the series (tenant, meter).
    pub fn covers(&self, tenant: &str, meter: &str) -> bool {
        self.shard.holds(tenant)
            && self
                .only
                .is_none_or(|o| o.contains(&(tenant.to_string(), meter.to_string())))
    }
}

/// The tenant × meter series with rows in the table at `path` (none without one).
pub fn series_in(path: &Path) -> Result<std::collections::BTreeSet<SeriesKey>> {
    if !path.exists() {
        return Ok(Default::default());
    }
    let df = read_frame(path)?;
    let (t, m) = (df.column("tenant_id")?.str()?, df.column("meter")?.str()?);
    Ok(t.iter()
        .zip(m.iter())
        .map(|(t, m)| {
            (
                t.unwrap_or_default().to_string(),
                m.unwrap_or_default().to_string(),
            )
        })
        .collect())
}

/// Replaces the rows of the series (tenant × meter) `part` covers in the table at `path`
/// by `new`, keeping the other series' rows as they are, sorted by `order` (stable): how
/// an incremental or sharded stage updates a table, so the result equals a whole
/// recomputation's when `new` is what that recomputation gives for those series. Without
/// a table at `path`: `new`. The caller holds the table's lock ([`crate::lake::lock_dir`])
/// when other writers may update it at the same time (shards).
pub fn replace_rows(path: &Path, new: DataFrame, part: &Part, order: &[&str]) -> Result<DataFrame> {
    if !path.exists() {
        return Ok(new);
    }
    let old = read_frame(path)?;
    let (t, m) = (old.column("tenant_id")?.str()?, old.column("meter")?.str()?);
    let keep: BooleanChunked = t
        .iter()
        .zip(m.iter())
        .map(|(t, m)| !part.covers(t.unwrap_or_default(), m.unwrap_or_default()))
        .collect();
    let mut out = old.filter(&keep)?;
    // A table an older version wrote may lack a column the new rows have: the kept rows
    // get it empty (until they are recomputed), and the new rows' columns win.
    for c in new.columns() {
        if out.column(c.name()).is_err() {
            out.with_column(Column::full_null(c.name().clone(), out.height(), c.dtype()))?;
        }
    }
    let mut out = out.select(new.get_column_names_owned())?;
    out.vstack_mut(&new)?;
    Ok(out.sort(
        order.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
        SortMultipleOptions::default().with_maintain_order(true),
    )?)
}

/// Typed columns of a table read back, each error naming the file and the column.
pub(crate) struct Columns<'a> {
    path: &'a Path,
    df: DataFrame,
}

impl<'a> Columns<'a> {
    /// Reads the file at `path`.
    pub(crate) fn read(path: &'a Path) -> Result<Columns<'a>> {
        Ok(Columns {
            path,
            df: read_frame(path)?,
        })
    }

    /// Rows.
    pub(crate) fn height(&self) -> usize {
        self.df.height()
    }

    fn column(&self, name: &str, dtype: &DataType) -> Result<Column> {
        self.df
            .column(name)
            .and_then(|c| c.cast(dtype))
            .map_err(|e| Error::CorruptLake {
                path: self.path.to_path_buf(),
                reason: format!("column `{name}`: {e}"),
            })
    }

    /// A text column (nulls kept).
    pub(crate) fn opt_text(&self, name: &str) -> Result<Vec<Option<String>>> {
        let c = self.column(name, &DataType::String)?;
        Ok(c.str()?.iter().map(|v| v.map(str::to_string)).collect())
    }

    /// A text column, nulls as empty text.
    pub(crate) fn text(&self, name: &str) -> Result<Vec<String>> {
        Ok(self
            .opt_text(name)?
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect())
    }

    /// A real column (nulls kept).
    pub(crate) fn opt_f64(&self, name: &str) -> Result<Vec<Option<f64>>> {
        let c = self.column(name, &DataType::Float64)?;
        Ok(c.f64()?.iter().collect())
    }

    /// A real column added after tables were first written: all nulls in a table written
    /// before it existed (the next run rewrites the table with it).
    pub(crate) fn added_f64(&self, name: &str) -> Result<Vec<Option<f64>>> {
        if self.df.column(name).is_err() {
            return Ok(vec![None; self.height()]);
        }
        self.opt_f64(name)
    }

    /// A real column, nulls as NaN.
    pub(crate) fn f64(&self, name: &str) -> Result<Vec<f64>> {
        Ok(self
            .opt_f64(name)?
            .into_iter()
            .map(|v| v.unwrap_or(f64::NAN))
            .collect())
    }

    /// An instant (datetime) or integer column as UTC µs, nulls as 0.
    pub(crate) fn micros(&self, name: &str) -> Result<Vec<i64>> {
        let c = self.column(name, &DataType::Int64)?;
        Ok(c.i64()?.iter().map(Option::unwrap_or_default).collect())
    }

    /// A whole-number column, nulls as 0.
    pub(crate) fn u32(&self, name: &str) -> Result<Vec<u32>> {
        let c = self.column(name, &DataType::UInt32)?;
        Ok(c.u32()?.iter().map(Option::unwrap_or_default).collect())
    }

    /// A yes/no column, nulls as no.
    pub(crate) fn bool(&self, name: &str) -> Result<Vec<bool>> {
        let c = self.column(name, &DataType::Boolean)?;
        Ok(c.bool()?.iter().map(Option::unwrap_or_default).collect())
    }
}

/// A UTC datetime column from µs instants (what every table stores instants as).
pub(crate) fn instants(name: &str, v: Vec<i64>) -> Result<Column> {
    Ok(Column::new(name.into(), v).cast(&crate::rollup::utc_datetime())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows of the series asked for are replaced, the others kept; a column the old
    /// table (an older version's) lacks is kept too, empty on the rows not recomputed.
    #[test]
    fn replace_series_keeps_the_others_and_the_new_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let mut old = df!(
            "tenant_id" => ["a", "b", "c"],
            "meter" => ["m", "m", "m"],
            "x" => [1.0, 2.0, 3.0],
        )
        .unwrap();
        write_frame(&path, &mut old).unwrap();
        let new = df!(
            "tenant_id" => ["b"],
            "meter" => ["m"],
            "x" => [20.0],
            "y" => [7i64],
        )
        .unwrap();
        let only: std::collections::BTreeSet<SeriesKey> =
            [("b".to_string(), "m".to_string())].into();
        let part = Part {
            only: Some(&only),
            ..Part::default()
        };
        let out = replace_rows(&path, new, &part, &["tenant_id", "meter"]).unwrap();
        let x: Vec<Option<f64>> = out.column("x").unwrap().f64().unwrap().iter().collect();
        let y: Vec<Option<i64>> = out.column("y").unwrap().i64().unwrap().iter().collect();
        assert_eq!(x, [Some(1.0), Some(20.0), Some(3.0)]);
        assert_eq!(y, [None, Some(7), None]);
    }

    #[test]
    fn temp_names_follow_the_whole_file_name_and_never_repeat() {
        let dir = Path::new("/lake/_api/reports/acme");
        let json = temp_path(&dir.join("summary.json"));
        let html = temp_path(&dir.join("summary.html"));
        let again = temp_path(&dir.join("summary.json"));
        assert_ne!(json, html);
        assert_ne!(json, again, "two writes of one file in flight");
        for t in [&json, &html, &again] {
            assert_eq!(
                t.parent(),
                Some(dir),
                "beside the file: the rename stays atomic"
            );
            assert!(t.to_string_lossy().ends_with(TEMP_SUFFIX));
        }
        let name = |p: &Path| p.file_name().unwrap().to_string_lossy().to_string();
        assert!(name(&json).starts_with(".summary.json."), "{}", name(&json));
        assert!(name(&html).starts_with(".summary.html."), "{}", name(&html));
    }

    /// Temp files of processes that are gone are removed (also a level down); those of a
    /// running process (this one, pid 1) and every other file stay.
    #[test]
    fn stale_temp_files_of_dead_processes_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let kind = dir.path().join("summary");
        std::fs::create_dir(&kind).unwrap();
        let me = std::process::id();
        // pid_max is at most 2^22 on Linux: 999999999 never runs.
        let dead = [
            kind.join(".summary.html.999999999-12.tmp-meterlake"),
            dir.path().join(".x.json.999999998-0.tmp-meterlake"),
        ];
        let kept = [
            kind.join(format!(".summary.json.{me}-3.tmp-meterlake")),
            kind.join(".summary.csv.1-0.tmp-meterlake"),
            kind.join("summary.html"),
            kind.join(".hidden"),
            dir.path().join("notes.999999999-1.txt"),
        ];
        for f in dead.iter().chain(&kept) {
            std::fs::write(f, b"x").unwrap();
        }
        sweep_stale_temps(dir.path());
        for f in &dead {
            assert!(!f.exists(), "{}", f.display());
        }
        for f in &kept {
            assert!(f.exists(), "{}", f.display());
        }
    }
}
