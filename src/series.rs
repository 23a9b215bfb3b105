//! The `(series_id, ts, value)` shape every model consumes: reading it from CSV or Parquet,
//! inferring each series' step, and writing forecasts back.
//!
//! Input columns are `series_id, ts, value` (statsforecast's `unique_id, ds, y` are accepted
//! too). `ts` may be a date (`2026-10-01`, midnight UTC), an RFC 3339 instant, or
//! `YYYY-MM-DD HH:MM:SS` (UTC); in Parquet also a Date or Datetime column. Rows may come in
//! any order; each series is sorted by time. A duplicate timestamp within a series, a
//! missing field or a value that is not a finite number is an error naming the file, line
//! and field.
//!
//! The step of a series is its most common gap: a fixed duration, or calendar months (1, 3
//! or 12) when the points fall on the same day of the month. Missing steps inside a series
//! are filled ([`Fill`]: interpolated by default) so seasonal models keep their phase, and
//! the series' status says how many.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Datelike, Months, Utc};
use polars::prelude::*;
use rayon::prelude::*;

use crate::error::{Error, IoContext, Result};
use crate::time::{MICROS_PER_DAY, MICROS_PER_HOUR};

mod columns;

/// One series: consecutive observations and their UTC instants (µs).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its id.
    pub id: String,
    /// Instants, ascending.
    pub ts: Vec<i64>,
    /// Values.
    pub values: Vec<f64>,
}

/// How missing steps inside a series are filled before forecasting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fill {
    /// Linear interpolation between the neighbours.
    #[default]
    Interpolate,
    /// Zero (counts and sums: no event, no usage).
    Zero,
    /// The previous value (gauges).
    Previous,
    /// Not filled: the points are used as consecutive steps.
    None,
}

impl Fill {
    /// Every fill, in declaration order.
    pub const ALL: [Fill; 4] = [Fill::Interpolate, Fill::Zero, Fill::Previous, Fill::None];

    /// Its name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Fill::Interpolate => "interpolate",
            Fill::Zero => "zero",
            Fill::Previous => "previous",
            Fill::None => "none",
        }
    }
}

crate::error::named_enum!(Fill, "fill");

/// The gap between consecutive points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A fixed duration in µs.
    Fixed(i64),
    /// Calendar months.
    Months(u32),
}

impl Step {
    /// The instant `k` steps after `t`.
    pub fn after(self, t: i64, k: usize) -> i64 {
        match self {
            // Saturating: instants near i64's ends give no panic (nor a wrapped instant).
            Step::Fixed(d) => t.saturating_add(d.saturating_mul(k as i64)),
            Step::Months(m) => DateTime::<Utc>::from_timestamp_micros(t)
                .and_then(|d| d.checked_add_months(Months::new(m * k as u32)))
                .map(|d| d.timestamp_micros())
                .unwrap_or(t),
        }
    }

    /// The usual season length of this step: 24 for hours, 7 for days, 12 for months, else
    /// 1 (weekly data: a 52-week season needs years of history, so none by default).
    pub fn default_season(self) -> usize {
        match self {
            Step::Fixed(MICROS_PER_HOUR) => 24,
            Step::Fixed(MICROS_PER_DAY) => 7,
            Step::Months(1) => 12,
            Step::Months(3) => 4,
            _ => 1,
        }
    }
}

/// The most common positive gap between consecutive instants (ties: the smaller), or None
/// when there is none (fewer than two distinct instants).
pub fn usual_gap(ts: &[i64]) -> Option<i64> {
    // The usual case: every gap the same.
    let gap = |w: &[i64]| w[1].checked_sub(w[0]).filter(|g| *g > 0);
    if let Some(g) = ts.get(..2).and_then(gap)
        && every_gap_is(ts, g)
    {
        return Some(g);
    }
    let mut gaps: BTreeMap<i64, usize> = BTreeMap::new();
    for g in ts.windows(2).filter_map(gap) {
        *gaps.entry(g).or_default() += 1;
    }
    gaps.into_iter()
        .max_by_key(|&(g, n)| (n, std::cmp::Reverse(g)))
        .map(|(g, _)| g)
}

/// Whether every gap between consecutive instants is `g` (> 0): a fold without an early
/// exit, which the compiler vectorizes (this runs over every point of every series). For
/// `b > a` the wrapped difference is `g` exactly when the difference is.
fn every_gap_is(ts: &[i64], g: i64) -> bool {
    let after = ts.get(1..).unwrap_or(&[]);
    ts.iter().zip(after).fold(true, |same, (&a, &b)| {
        same & (b > a) & (b.wrapping_sub(a) == g)
    })
}

impl Series {
    /// The series' step (1 day for a single point).
    pub fn step(&self) -> Step {
        let Some(gap) = usual_gap(&self.ts) else {
            return Step::Fixed(MICROS_PER_DAY);
        };
        let same_day = || {
            let days: Vec<u32> = self
                .ts
                .iter()
                .filter_map(|&t| DateTime::<Utc>::from_timestamp_micros(t))
                .map(|d| d.day())
                .collect();
            days.windows(2).all(|w| w[0] == w[1])
        };
        for (months, lo, hi) in [(1, 28, 31), (3, 89, 92), (12, 365, 366)] {
            if gap >= lo * MICROS_PER_DAY && gap <= hi * MICROS_PER_DAY && same_day() {
                return Step::Months(months);
            }
        }
        Step::Fixed(gap)
    }

    /// The series on its regular grid (first to last point, by its step), missing steps
    /// filled as `fill` says; returns it and how many steps were missing. A grid of more
    /// than ten times the points (a step inferred from too few gaps) is not built: the
    /// points are returned as they are.
    pub fn regular(&self, fill: Fill) -> (Cow<'_, Series>, usize) {
        let step = self.step();
        let (Some(&first), Some(&last)) = (self.ts.first(), self.ts.last()) else {
            return (Cow::Borrowed(self), 0);
        };
        // Already regular: nothing to build.
        if let Step::Fixed(d) = step
            && self
                .ts
                .windows(2)
                .all(|w| w[1].checked_sub(w[0]) == Some(d))
        {
            return (Cow::Borrowed(self), 0);
        }
        let mut grid = vec![first];
        while let Some(&t) = grid.last() {
            if t >= last || grid.len() > 10 * self.ts.len() + 10 {
                break;
            }
            grid.push(step.after(first, grid.len()));
        }
        if grid.last() != Some(&last) || grid.len() == self.ts.len() || fill == Fill::None {
            let holes = grid.len().saturating_sub(self.ts.len());
            return (
                Cow::Borrowed(self),
                if grid.last() == Some(&last) { holes } else { 0 },
            );
        }
        let mut values = Vec::with_capacity(grid.len());
        let mut j = 0;
        for &t in &grid {
            while j < self.ts.len() && self.ts[j] < t {
                j += 1;
            }
            if j < self.ts.len() && self.ts[j] == t {
                values.push(self.values[j]);
                continue;
            }
            // Between points j-1 and j (both exist: t is inside the range).
            let (t0, t1) = (self.ts[j - 1], self.ts[j]);
            let (v0, v1) = (self.values[j - 1], self.values[j]);
            values.push(match fill {
                Fill::Zero => 0.0,
                Fill::Previous => v0,
                Fill::Interpolate | Fill::None => {
                    v0 + (v1 - v0) * (t - t0) as f64 / (t1 - t0) as f64
                }
            });
        }
        let missing = grid.len() - self.ts.len();
        (
            Cow::Owned(Series {
                id: self.id.clone(),
                ts: grid,
                values,
            }),
            missing,
        )
    }
}

/// Whether every instant is a UTC midnight (then dates are written back as dates).
pub fn all_dates(series: &[Series]) -> bool {
    series
        .par_iter()
        .all(|s| s.ts.iter().all(|t| t.rem_euclid(MICROS_PER_DAY) == 0))
}

/// Reads series from a CSV or Parquet file (by extension; `.parquet` or `.pq` is Parquet),
/// sorted by id.
pub fn read_series(path: &Path) -> Result<Vec<Series>> {
    read_series_with(path, false)
}

/// [`read_series`], optionally keeping repeated instants (in file order) instead of
/// refusing them: a detector judges every reading, a forecast needs one value per step.
pub fn read_series_with(path: &Path, keep_repeats: bool) -> Result<Vec<Series>> {
    read_series_from(path, keep_repeats, PARALLEL_CSV_BYTES)
}

/// [`read_series_with`], a CSV file in parallel byte ranges from `parallel_bytes` on.
fn read_series_from(path: &Path, keep_repeats: bool, parallel_bytes: u64) -> Result<Vec<Series>> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let parquet = ext == "parquet" || ext == "pq";
    let fast = if parquet {
        read_parquet_columns(path)?
    } else {
        read_csv_columns(path, parallel_bytes)?
    };
    let fast = fast.and_then(|parts| columns::assemble(parts, keep_repeats));
    if let Some(series) = fast {
        return Ok(series);
    }
    // The full reader: slower, and it names the line of what the fast path handed back.
    let mut groups = Grouper::default();
    if parquet {
        read_parquet_rows(path, &mut groups)?
    } else {
        read_csv_rows_from(path, &mut groups, parallel_bytes)?
    };
    groups.finish(path, keep_repeats)
}

/// (ts, value, line) of one series.
type Points = Vec<(i64, f64, u64)>;

/// Collects rows into series as they are read. Rows of one series usually follow each
/// other: they are appended to the current run, and a run is filed under its id when
/// another id starts (so no table of all rows is ever held).
#[derive(Default)]
struct Grouper {
    by: BTreeMap<String, Points>,
    run: Option<(String, Points)>,
}

impl Grouper {
    fn push(&mut self, id: &str, t: i64, v: f64, line: u64) {
        match &mut self.run {
            Some((cur, pts)) if cur == id => pts.push((t, v, line)),
            _ => {
                self.flush();
                self.run = Some((id.to_string(), vec![(t, v, line)]));
            }
        }
    }

    fn flush(&mut self) {
        if let Some((cur, pts)) = self.run.take() {
            self.file(cur, pts);
        }
    }

    /// Files points of `id` after those it holds (a run, or a whole range read apart).
    fn file(&mut self, id: String, pts: Points) {
        match self.by.get_mut(&id) {
            Some(have) => have.extend(pts),
            None => {
                self.by.insert(id, pts);
            }
        }
    }

    /// The series in id order, each sorted by time (stable: repeats keep file order); two
    /// values at one instant are an error unless `keep_repeats`.
    fn finish(mut self, path: &Path, keep_repeats: bool) -> Result<Vec<Series>> {
        self.flush();
        let mut out = Vec::with_capacity(self.by.len());
        for (id, mut pts) in self.by {
            pts.sort_by_key(|p| p.0);
            if let Some(w) = pts.windows(2).find(|w| w[0].0 == w[1].0 && !keep_repeats) {
                return Err(bad(
                    path,
                    format!(
                        "lines {} and {}: series `{id}` has two values at {}",
                        w[0].2,
                        w[1].2,
                        crate::time::format_ts(w[0].0, false)
                    ),
                ));
            }
            out.push(Series {
                id,
                ts: pts.iter().map(|p| p.0).collect(),
                values: pts.iter().map(|p| p.1).collect(),
            });
        }
        Ok(out)
    }
}

fn bad(path: &Path, reason: String) -> Error {
    Error::BadInput {
        path: path.to_path_buf(),
        reason,
    }
}

fn column_index(path: &Path, header: &csv::StringRecord, names: &[&str]) -> Result<usize> {
    header
        .iter()
        .position(|h| names.contains(&h.trim()))
        .ok_or_else(|| {
            bad(
                path,
                format!(
                    "no `{}` column (header: {})",
                    names[0],
                    header.iter().collect::<Vec<_>>().join(",")
                ),
            )
        })
}

/// Files smaller than this are parsed in one pass; larger ones in parallel byte ranges.
const PARALLEL_CSV_BYTES: u64 = 16 << 20;

/// The columns of a series file: id, time and value, by position.
type Cols = (usize, usize, usize);

/// A bad record: its line, counted from the start of what was parsed, and what is wrong.
type RowError = (u64, String);

/// A CSV reader; rows are checked against the header's width by [`parse_records`], so a
/// byte range without the header is checked the same way.
fn csv_reader<R: std::io::Read>(r: R, headers: bool) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(headers)
        .buffer_capacity(1 << 20)
        .from_reader(r)
}

/// The header of a series file: the id, time and value columns and the header's width.
fn csv_header<R: std::io::Read>(path: &Path, r: &mut csv::Reader<R>) -> Result<(Cols, usize)> {
    let header = r
        .headers()
        .map_err(|e| bad(path, format!("header: {e}")))?
        .clone();
    let cols = (
        column_index(path, &header, &["series_id", "unique_id"])?,
        column_index(path, &header, &["ts", "ds"])?,
        column_index(path, &header, &["value", "y"])?,
    );
    Ok((cols, header.len()))
}

/// `parts` byte ranges of a file's body (from `body`, past the header, to `len`), each
/// starting after a line end, so every range holds whole lines.
fn line_ranges(path: &Path, mut body: u64, len: u64, parts: u64) -> Result<Vec<(u64, u64)>> {
    use std::io::{BufRead, Read, Seek, SeekFrom};
    let mut f = std::io::BufReader::new(std::fs::File::open(path).at(path)?);
    // After a CRLF header the reader stops on its `\n`: the body starts past it.
    f.seek(SeekFrom::Start(body)).at(path)?;
    let mut first = [0u8; 1];
    if f.read(&mut first).at(path)? == 1 && first[0] == b'\n' {
        body += 1;
    }
    // Range k starts after the first line end at or past body + k·(len − body)/parts.
    let mut starts = vec![body];
    for k in 1..parts {
        let at = body + k * (len - body) / parts;
        if at <= *starts.last().unwrap_or(&body) {
            continue;
        }
        f.seek(SeekFrom::Start(at - 1)).at(path)?;
        let mut skipped = Vec::new();
        let n = f.read_until(b'\n', &mut skipped).at(path)? as u64;
        let start = at - 1 + n;
        if start < len && start > *starts.last().unwrap_or(&body) {
            starts.push(start);
        }
    }
    Ok(starts
        .iter()
        .zip(starts.iter().skip(1).chain(std::iter::once(&len)))
        .map(|(&a, &b)| (a, b))
        .collect())
}

/// The fast path of a CSV series file ([`columns`]): its rows column by column, a large
/// file in one byte range per thread; None when it needs the full reader (a pipe, a quote,
/// a row that is not well formed).
fn read_csv_columns(path: &Path, parallel_bytes: u64) -> Result<Option<Vec<columns::Columns>>> {
    let file = std::fs::File::open(path).at(path)?;
    let meta = file.metadata().at(path)?;
    // A pipe can be read only once: the full reader reads it.
    if !meta.is_file() {
        return Ok(None);
    }
    let len = meta.len();
    let mut r = csv_reader(file, true);
    let Ok((cols, width)) = csv_header(path, &mut r) else {
        return Ok(None);
    };
    let body = r.position().byte();
    if body == 0 || body >= len {
        return Ok(None);
    }
    let threads = rayon::current_num_threads() as u64;
    let parts = if len < parallel_bytes { 1 } else { threads };
    let ranges = line_ranges(path, body, len, parts)?;
    Ok(ranges
        .par_iter()
        .map(|&range| columns::csv_range(path, range, cols, width))
        .collect())
}

/// The full reader of a CSV series file (in parallel from `parallel_bytes` on). A large
/// one is cut into one byte range per thread, each ending
/// at a line end, and the ranges are parsed in parallel, then merged in file order (so a
/// series' repeated instants keep their order and errors name the file's line). A quote
/// anywhere sends the file back to one pass: a quoted field may hold a line end, so a cut
/// at a line end would not be a record boundary.
fn read_csv_rows_from(path: &Path, groups: &mut Grouper, parallel_bytes: u64) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let file = std::fs::File::open(path).at(path)?;
    let meta = file.metadata().at(path)?;
    let len = meta.len();
    let mut r = csv_reader(file, true);
    let (cols, width) = csv_header(path, &mut r)?;
    // The header is line 1: the records' lines count from there.
    let one_pass = |r: &mut csv::Reader<std::fs::File>, groups: &mut Grouper| {
        parse_records(r, cols, width, groups)
            .map_err(|(line, why)| bad(path, format!("line {line}: {why}")))
    };
    let threads = rayon::current_num_threads() as u64;
    let body = r.position().byte();
    // Only a regular file can be read again (a pipe is read once, in one pass).
    if threads < 2 || !meta.is_file() || len < parallel_bytes || body == 0 || body >= len {
        return one_pass(&mut r, groups);
    }
    let ranges = line_ranges(path, body, len, threads)?;
    let parsed: Vec<Chunk> = ranges
        .par_iter()
        .map(|&(a, b)| -> Result<Chunk> {
            let mut file = std::fs::File::open(path).at(path)?;
            file.seek(SeekFrom::Start(a)).at(path)?;
            let mut watch = Watch {
                inner: file.take(b - a),
                quote: false,
                lines: 0,
            };
            let mut g = Grouper::default();
            let outcome = parse_records(&mut csv_reader(&mut watch, false), cols, width, &mut g);
            g.flush();
            // The rest of the range, for its line count and quotes, if parsing stopped.
            if outcome.is_err() {
                std::io::copy(&mut watch, &mut std::io::sink()).at(path)?;
            }
            Ok(Chunk {
                by: outcome.map(|()| g.by),
                quote: watch.quote,
                lines: watch.lines,
            })
        })
        .collect::<Result<_>>()?;
    if parsed.iter().any(|c| c.quote) {
        let mut r = csv_reader(std::fs::File::open(path).at(path)?, true);
        r.headers().map_err(|e| bad(path, format!("header: {e}")))?;
        return one_pass(&mut r, groups);
    }
    let mut lines_before = 1; // the header
    for c in parsed {
        let by =
            c.by.map_err(|(line, why)| bad(path, format!("line {}: {why}", lines_before + line)))?;
        for (id, mut pts) in by {
            pts.iter_mut().for_each(|p| p.2 += lines_before);
            groups.file(id, pts);
        }
        lines_before += c.lines;
    }
    Ok(())
}

/// One byte range's series (or its first bad record), line ends and whether it quotes.
struct Chunk {
    by: std::result::Result<BTreeMap<String, Points>, RowError>,
    quote: bool,
    lines: u64,
}

/// A reader that notes the quotes and counts the line ends it passes on.
struct Watch<R> {
    inner: R,
    quote: bool,
    lines: u64,
}

impl<R: std::io::Read> std::io::Read for Watch<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.quote |= memchr::memchr(b'"', &buf[..n]).is_some();
        self.lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
        Ok(n)
    }
}

/// Parses the records of `r` into `groups`; each must have the header's `width` fields. A
/// bad record stops it, with its line as the reader counts it.
fn parse_records<R: std::io::Read>(
    r: &mut csv::Reader<R>,
    (ci, ct, cv): Cols,
    width: usize,
    groups: &mut Grouper,
) -> std::result::Result<(), RowError> {
    let mut rec = csv::ByteRecord::new();
    loop {
        match r.read_byte_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                return Err((line, format!("not valid CSV: {e}")));
            }
        }
        let line = rec.position().map_or(0, |p| p.line());
        if rec.len() != width {
            return Err((
                line,
                format!("{} fields where the header has {width}", rec.len()),
            ));
        }
        let field = |i: usize, name: &str| -> std::result::Result<&str, RowError> {
            rec.get(i)
                .and_then(|b| std::str::from_utf8(b).ok())
                .filter(|s| !s.trim().is_empty())
                .ok_or_else(|| (line, format!("field `{name}` is empty or not UTF-8")))
        };
        let id = field(ci, "series_id")?;
        let ts_s = field(ct, "ts")?;
        let ts = crate::time::parse_ts(ts_s).ok_or_else(|| {
            (
                line,
                format!("field `ts`: `{ts_s}` is not a date or an instant"),
            )
        })?;
        let v_s = field(cv, "value")?;
        let v: f64 = v_s
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| {
                (
                    line,
                    format!("field `value`: `{v_s}` is not a finite number"),
                )
            })?;
        groups.push(id, ts, v, line);
    }
    Ok(())
}

/// A Parquet series file's instants: day numbers of a Date column (converted as they are
/// copied), or µs.
enum Instants {
    Days(Int32Chunked),
    Micros(Int64Chunked),
}

impl Instants {
    /// The instants in µs.
    fn micros(self) -> Result<Int64Chunked> {
        Ok(match self {
            Instants::Micros(t) => t,
            Instants::Days(d) => (d.cast(&DataType::Int64)? * MICROS_PER_DAY).i64()?.clone(),
        })
    }

    fn null_count(&self) -> usize {
        match self {
            Instants::Days(d) => d.null_count(),
            Instants::Micros(t) => t.null_count(),
        }
    }
}

/// The names a Parquet series file's id, instant and value columns may have, in order of
/// preference.
const PARQUET_NAMES: [&[&str]; 3] = [&["series_id", "unique_id"], &["ts", "ds"], &["value", "y"]];

/// A Parquet series file's id, instant and value columns.
fn parquet_columns(path: &Path) -> Result<(StringChunked, Instants, Float64Chunked)> {
    let lf = crate::lake::scan_paths(&[path.to_path_buf()], false)?;
    let schema = lf
        .clone()
        .collect_schema()
        .map_err(|e| bad(path, format!("not a Parquet file: {e}")))?;
    let pick = |names: &[&str]| -> Result<String> {
        names
            .iter()
            .find(|n| schema.contains(n))
            .map(|n| n.to_string())
            .ok_or_else(|| bad(path, format!("no `{}` column", names[0])))
    };
    let [ci, ct, cv] = PARQUET_NAMES;
    let (ci, ct, cv) = (pick(ci)?, pick(ct)?, pick(cv)?);
    let df = lf
        .select([
            col(ci.as_str()).cast(DataType::String).alias("id"),
            col(ct.as_str()).alias("ts"),
            col(cv.as_str()).cast(DataType::Float64).alias("value"),
        ])
        .collect()?;
    // Instants as day numbers or one nullable Int64 column (µs), whatever the file's type.
    let tcol = df.column("ts")?;
    let ts = match tcol.dtype() {
        DataType::Date => Instants::Days(tcol.cast(&DataType::Int32)?.i32()?.clone()),
        DataType::Datetime(..) => Instants::Micros(
            tcol.cast(&crate::rollup::utc_datetime())?
                .cast(&DataType::Int64)?
                .i64()?
                .clone(),
        ),
        _ => Instants::Micros(
            tcol.cast(&DataType::String)?
                .str()?
                .iter()
                .map(|s| s.and_then(crate::time::parse_ts))
                .collect(),
        ),
    };
    let ids = df.column("id")?.str()?.clone();
    let vs = df.column("value")?.f64()?.clone();
    Ok((ids, ts, vs))
}

/// The fast path of a Parquet series file ([`columns`]); None when a row has a null or a
/// value that is not finite (the full reader names it).
fn read_parquet_columns(path: &Path) -> Result<Option<Vec<columns::Columns>>> {
    if let Some(parts) = columns::parquet_parts(path, PARQUET_NAMES) {
        return Ok(Some(parts));
    }
    let (ids, ts, vs) = parquet_columns(path)?;
    if ids.null_count() + ts.null_count() + vs.null_count() > 0
        || !vs.into_no_null_iter().all(f64::is_finite)
    {
        return Ok(None);
    }
    // Runs of one id: where the id differs from the row before, chunk by chunk.
    let mut starts: Vec<usize> = Vec::new();
    let mut offset = 0;
    let mut before: Option<&str> = None;
    for a in ids.downcast_iter() {
        // Equal views are equal ids; unequal ones may still be (a long id stored twice).
        let views = a.views();
        let new = |i: usize| match i {
            0 => before != Some(a.value(0)),
            _ => views[i] != views[i - 1] && a.value(i) != a.value(i - 1),
        };
        starts.extend((0..a.len()).filter(|&i| new(i)).map(|i| offset + i));
        offset += a.len();
        before = a.len().checked_sub(1).map(|i| a.value(i));
    }
    let n = ids.len();
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .copied()
        .chain(std::iter::once(n))
        .collect();
    // The runs in one part per thread, each part's rows copied from the chunks in parallel.
    let parts = rayon::current_num_threads().max(1);
    let per = starts.len().div_ceil(parts).max(1);
    let runs: Vec<(usize, usize)> = starts.into_iter().zip(ends).collect();
    let v = Pieces::of(&vs);
    Ok(match &ts {
        Instants::Days(d) => copy_runs(&runs, per, &ids, &Pieces::of(d), MICROS_PER_DAY, &v),
        Instants::Micros(m) => copy_runs(&runs, per, &ids, &Pieces::of(m), 1, &v),
    })
}

/// The rows of `runs` (each one id's `a..b`), `per` runs to a part, parts in parallel;
/// instants are `scale` times `t`'s numbers.
fn copy_runs<T: polars_arrow::types::NativeType + Into<i64>>(
    runs: &[(usize, usize)],
    per: usize,
    ids: &StringChunked,
    t: &Pieces<T>,
    scale: i64,
    v: &Pieces<f64>,
) -> Option<Vec<columns::Columns>> {
    runs.par_chunks(per)
        .map(|runs| {
            let mut c = columns::Columns::default();
            for &(a, b) in runs {
                // No nulls (checked by the caller).
                let id = ids.get(a).unwrap_or_default();
                c.push_run(id, &t.rows(a, b), scale, &v.rows(a, b))?;
            }
            Some(c)
        })
        .collect()
}

/// A numeric column without nulls as its chunks' value slices.
struct Pieces<'a, T> {
    chunks: Vec<&'a [T]>,
    /// Each chunk's first row.
    starts: Vec<usize>,
}

impl<'a, T: polars_arrow::types::NativeType> Pieces<'a, T> {
    fn of<P>(ca: &'a ChunkedArray<P>) -> Self
    where
        P: PolarsNumericType<Native = T>,
    {
        let chunks: Vec<&[T]> = ca.downcast_iter().map(|a| a.values().as_slice()).collect();
        let starts = chunks
            .iter()
            .scan(0, |at, c| {
                let s = *at;
                *at += c.len();
                Some(s)
            })
            .collect();
        Pieces { chunks, starts }
    }

    /// Rows `a..b`, as consecutive slices.
    fn rows(&self, a: usize, b: usize) -> Vec<&'a [T]> {
        let first = self.starts.partition_point(|&s| s <= a).saturating_sub(1);
        let mut out = Vec::new();
        for (c, &s) in self.chunks.iter().zip(&self.starts).skip(first) {
            if s >= b {
                break;
            }
            let (from, to) = (a.max(s) - s, b.min(s + c.len()) - s);
            if from < to {
                out.push(&c[from..to]);
            }
        }
        out
    }
}

/// The full reader of a Parquet series file: row by row, naming the first bad row.
fn read_parquet_rows(path: &Path, groups: &mut Grouper) -> Result<()> {
    let (ids, ts, vs) = parquet_columns(path)?;
    let ts = ts.micros()?;
    // Row ranges grouped in parallel, merged in row order (as the CSV byte ranges are).
    let n = ids.len();
    let parts = rayon::current_num_threads().max(1);
    let step = n.div_ceil(parts).max(1 << 16);
    let ranges: Vec<usize> = (0..n).step_by(step).collect();
    // Every range's outcome, so the first bad row in file order is the one named.
    let grouped: Vec<Result<BTreeMap<String, Points>>> = ranges
        .par_iter()
        .map(|&a| -> Result<BTreeMap<String, Points>> {
            let len = step.min(n - a);
            let (ids, ts, vs) = (
                ids.slice(a as i64, len),
                ts.slice(a as i64, len),
                vs.slice(a as i64, len),
            );
            let mut g = Grouper::default();
            for (k, ((id, t), v)) in ids.iter().zip(ts.iter()).zip(vs.iter()).enumerate() {
                let row = (a + k) as u64 + 1;
                let id = id.ok_or_else(|| bad(path, format!("row {row}: `series_id` is null")))?;
                let t =
                    t.ok_or_else(|| bad(path, format!("row {row}: `ts` is null or unreadable")))?;
                let v = v.filter(|v| v.is_finite()).ok_or_else(|| {
                    bad(path, format!("row {row}: `value` is not a finite number"))
                })?;
                g.push(id, t, v, row);
            }
            g.flush();
            Ok(g.by)
        })
        .collect();
    for by in grouped {
        for (id, pts) in by? {
            groups.file(id, pts);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of a column of several chunks are every row in between, whatever chunks they
    /// start and end in.
    #[test]
    fn pieces_cut_rows_across_chunks() {
        let mut ca = Int64Chunked::from_slice("x".into(), &[0, 1, 2]);
        ca.append(&Int64Chunked::from_slice("x".into(), &[3, 4]))
            .unwrap();
        ca.append(&Int64Chunked::from_slice("x".into(), &[5, 6, 7]))
            .unwrap();
        assert_eq!(ca.chunks().len(), 3);
        let p = Pieces::of(&ca);
        for a in 0..=8 {
            for b in a..=8 {
                let want: Vec<i64> = (a as i64..b as i64).collect();
                assert_eq!(p.rows(a, b).concat(), want, "{a}..{b}");
            }
        }
    }

    /// A Parquet series file read in parallel row ranges gives what one thread gives and
    /// what the same rows as CSV give (rows of one id interleaved or in long runs), with dates, datetimes or text instants; the first bad
    /// row in file order is the one named.
    #[test]
    fn parquet_in_parallel_ranges_reads_as_one_thread_and_csv_do() {
        let dir = tempfile::tempdir().unwrap();
        let n = 150_000usize;
        // Rows of 50 series interleaved, then 30 series of 2,500 rows each in turn.
        let half = n / 2;
        let ids: Vec<String> = (0..n)
            .map(|i| match i < half {
                true => format!("s{}", i % 50),
                false => format!("t{}", (i - half) / 2_500),
            })
            .collect();
        let days: Vec<i32> = (0..n)
            .map(|i| 20_000 + if i < half { i / 50 } else { (i - half) % 2_500 } as i32)
            .collect();
        let vals: Vec<f64> = (0..n).map(|i| (i % 97) as f64 * 0.5).collect();
        let mut csv = String::from("series_id,ts,value\n");
        for i in 0..n {
            let d = crate::time::date_of_day(days[i]);
            csv += &format!("{},{d},{}\n", ids[i], vals[i]);
        }
        let csv_path = dir.path().join("s.csv");
        std::fs::write(&csv_path, &csv).unwrap();
        let in_pool = |threads: usize, p: &Path| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| read_series(p))
        };
        let want = in_pool(1, &csv_path).unwrap();
        let write_as = |name: &str, ts: Column, vals: &[f64], codec: ParquetCompression| {
            let mut df = DataFrame::new_infer_height(vec![
                Column::new("series_id".into(), &ids),
                ts,
                Column::new("value".into(), vals),
            ])
            .unwrap();
            let p = dir.path().join(name);
            // Small row groups: the reader's chunks end inside runs of one id.
            ParquetWriter::new(std::fs::File::create(&p).unwrap())
                .with_row_group_size(Some(7_001))
                .with_compression(codec)
                .finish(&mut df)
                .unwrap();
            p
        };
        let write = |name: &str, ts: Column, vals: &[f64]| {
            write_as(name, ts, vals, ParquetCompression::Zstd(None))
        };
        let date = Column::new("ts".into(), &days)
            .cast(&DataType::Date)
            .unwrap();
        let micros: Vec<i64> = days.iter().map(|&d| d as i64 * MICROS_PER_DAY).collect();
        let datetime = Column::new("ts".into(), micros)
            .cast(&crate::rollup::utc_datetime())
            .unwrap();
        let text: Vec<String> = days
            .iter()
            .map(|&d| crate::time::date_of_day(d).to_string())
            .collect();
        let snappy = write_as(
            "snappy.parquet",
            date.clone(),
            &vals,
            ParquetCompression::Snappy,
        );
        for (name, ts) in [
            ("date.parquet", date.clone()),
            ("datetime.parquet", datetime),
            ("text.parquet", Column::new("ts".into(), text)),
        ] {
            let p = write(name, ts, &vals);
            // Clean rows: the fast path itself reads them, from several chunks; a Date or
            // µs column by row groups (columns::parquet_parts), text instants through polars.
            assert!(read_parquet_columns(&p).unwrap().is_some(), "{name}");
            assert!(parquet_columns(&p).unwrap().0.chunks().len() > 1, "{name}");
            let by_groups = columns::parquet_parts(&p, PARQUET_NAMES).map(|c| c.len());
            assert_eq!(by_groups.is_some(), name != "text.parquet", "{name}");
            assert!(by_groups.is_none_or(|n| n > 1), "{name}");
            for threads in [1, 3] {
                assert_eq!(
                    in_pool(threads, &p).unwrap(),
                    want,
                    "{name}, {threads} threads"
                );
            }
        }
        assert!(columns::parquet_parts(&snappy, PARQUET_NAMES).is_some());
        assert_eq!(in_pool(3, &snappy).unwrap(), want, "snappy");
        // Two bad values, in different ranges: the earlier row is named.
        let mut bad_vals = vals.clone();
        bad_vals[140_000] = f64::NAN;
        bad_vals[70_000] = f64::INFINITY;
        let p = write("bad.parquet", date.clone(), &bad_vals);
        for threads in [1, 3] {
            let e = in_pool(threads, &p).unwrap_err().to_string();
            assert!(e.contains("row 70001: `value`"), "{threads} threads: {e}");
        }
        // A null value, or a null id, is not the row-group path's to read: it hands the
        // file on, and the full reader names the row (one file each, so each is checked).
        let mut null_vals: Vec<Option<f64>> = vals.iter().copied().map(Some).collect();
        null_vals[120_000] = None;
        let mut null_ids: Vec<Option<String>> = ids.iter().cloned().map(Some).collect();
        null_ids[90_000] = None;
        let all_ids: Vec<Option<String>> = ids.iter().cloned().map(Some).collect();
        let all_vals: Vec<Option<f64>> = vals.iter().copied().map(Some).collect();
        for (name, ids, vals, row) in [
            (
                "null_value.parquet",
                &all_ids,
                &null_vals,
                "row 120001: `value`",
            ),
            (
                "null_id.parquet",
                &null_ids,
                &all_vals,
                "row 90001: `series_id`",
            ),
        ] {
            let mut df = DataFrame::new_infer_height(vec![
                Column::new("series_id".into(), ids),
                date.clone(),
                Column::new("value".into(), vals),
            ])
            .unwrap();
            let p = dir.path().join(name);
            ParquetWriter::new(std::fs::File::create(&p).unwrap())
                .with_row_group_size(Some(7_001))
                .finish(&mut df)
                .unwrap();
            assert!(
                columns::parquet_parts(&p, PARQUET_NAMES).is_none(),
                "{name}"
            );
            assert!(read_parquet_columns(&p).unwrap().is_none(), "{name}");
            for threads in [1, 3] {
                let e = in_pool(threads, &p).unwrap_err().to_string();
                assert!(e.contains(row), "{name}, {threads} threads: {e}");
            }
        }
    }

    /// A file parsed in parallel byte ranges gives what one pass gives: the same series in
    /// the same order (repeats keep file order), the same line in an error, and a quoted
    /// file goes back to one pass.
    #[test]
    fn csv_in_parallel_ranges_reads_as_one_pass_does() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::from("series_id,ts,value\n");
        for i in 0..3000 {
            // Series interleave, and `r` repeats instants in file order.
            text += &format!("s{},2026-01-{:02},{}\n", i % 7, 1 + (i / 7) % 28, i);
            if i % 500 == 0 {
                text += &format!("r,2026-02-01,{i}\n");
            }
        }
        let read = |text: &str, threads: usize, from: u64| {
            let p = dir.path().join(format!("s{threads}-{from}.csv"));
            std::fs::write(&p, text).unwrap();
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut g = Grouper::default();
                read_csv_rows_from(&p, &mut g, from)?;
                g.flush();
                Ok::<_, Error>(g.by)
            })
        };
        let one = read(&text, 1, u64::MAX).unwrap();
        for threads in [2, 3, 8] {
            assert_eq!(read(&text, threads, 0).unwrap(), one, "{threads} threads");
        }
        // A bad value near the end: the same line either way.
        let bad = text.clone() + "s1,2026-03-01,x\n";
        let e1 = read(&bad, 1, u64::MAX).unwrap_err().to_string();
        let e3 = read(&bad, 3, 0).unwrap_err().to_string();
        assert!(e1.contains("line 3008:"), "{e1}");
        let after = |e: &str| e.split_once(".csv: ").map(|(_, r)| r.to_string());
        assert_eq!(after(&e1), after(&e3));
        // A row with a field too many: refused the same way, whatever the file's size.
        let ragged = text.clone() + "s2,2026-03-02,1,extra\n";
        for (threads, from) in [(1, u64::MAX), (3, 0)] {
            let e = read(&ragged, threads, from).unwrap_err().to_string();
            assert!(
                e.contains("line 3008: 4 fields where the header has 3"),
                "{e}"
            );
        }
        // CRLF line ends: the same points either way (csv counts CRLF lines its own way).
        let crlf = text.replace('\n', "\r\n");
        let points = |m: BTreeMap<String, Points>| -> Vec<(String, Vec<(i64, f64)>)> {
            m.into_iter()
                .map(|(k, v)| (k, v.into_iter().map(|p| (p.0, p.1)).collect()))
                .collect()
        };
        assert_eq!(points(read(&crlf, 3, 0).unwrap()), points(one.clone()));
        assert_eq!(
            points(read(&crlf, 1, u64::MAX).unwrap()),
            points(one.clone())
        );
        // A quoted field holding a line end: one pass reads it whole.
        let quoted = text.replacen("s0,", "\"s\n0\",", 1);
        let q = read(&quoted, 3, 0).unwrap();
        assert!(q.contains_key("s\n0"), "{:?}", q.keys().collect::<Vec<_>>());
        assert_eq!(q, read(&quoted, 1, u64::MAX).unwrap());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// The fast path reads what the full reader reads, or hands the file back: the same
        /// series, or the same error, for files with interleaved and repeated series, CRLF
        /// and lone `\r` line ends, blank lines, quotes, bad fields and ragged rows, in one
        /// range or several, whether repeats are kept or refused.
        #[test]
        fn the_fast_path_reads_as_the_full_reader(
            rows in proptest::collection::vec((0u8..6, 0u32..40, -1000i32..1000, 0u8..40), 1..400),
            defects in proptest::bool::ANY,
            crlf in proptest::bool::ANY,
            keep in proptest::bool::ANY,
            threads in 1usize..4,
        ) {
            let mut text = String::from("ts,series_id,value\n");
            for (id, day, v, defect) in &rows {
                let d = crate::time::date_of_day(20_000 + *day as i32);
                let (id, d, v) = (format!("s{id}"), d.to_string(), format!("{}", *v as f64 / 8.0));
                // Without defects, only the odd rows both readers accept: a `\r\n` in a
                // `\n` file, a blank line, an RFC 3339 instant and a padded value, a padded
                // id, `-0`, a value of more than 15 digits.
                let kind = match (defects, *defect) {
                    (true, d) | (false, d @ (4 | 5 | 10 | 11 | 12)) => d,
                    (false, 3) if !crlf => 3,
                    _ => 99,
                };
                text += &match kind {
                    0 => format!("{d},{id},x"),
                    1 => format!("{d},{id},{v},extra"),
                    2 => format!("{d},\"{id}\",{v}"),
                    3 => format!("{d},{id},{v}\r"),
                    4 => String::new(),
                    5 => format!("{d}T00:00:00Z,{id}, {v} "),
                    10 => format!("{d}, {id} ,{v}"),
                    11 => format!("{d},{id},-0"),
                    12 => format!("{d},{id},{v}000000000000001"),
                    13 => format!("{d},{id},\u{feff}{v}"),
                    6 => format!("2026-02-30,{id},{v}"),
                    7 => format!("{d},{id},inf"),
                    8 => format!("{d},,{v}"),
                    _ => format!("{d},{id},{v}"),
                };
                text += if crlf { "\r\n" } else { "\n" };
            }
            // Sometimes no line end after the last line.
            if rows.len() % 3 == 0 {
                text.truncate(text.trim_end_matches(['\r', '\n']).len());
            }
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("s.csv");
            std::fs::write(&p, &text).unwrap();
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let full = pool.install(|| {
                let mut g = Grouper::default();
                read_csv_rows_from(&p, &mut g, 0)?;
                g.finish(&p, keep)
            });
            // Clean rows of distinct instants: the fast path itself reads them.
            if !defects && (keep || !rows.iter().enumerate().any(|(i, a)| {
                rows[..i].iter().any(|b| (a.0, a.1) == (b.0, b.1))
            })) {
                let parts = pool.install(|| read_csv_columns(&p, 0)).unwrap();
                proptest::prop_assert!(parts.and_then(|c| columns::assemble(c, keep)).is_some());
            }
            let fast = pool.install(|| read_series_from(&p, keep, 0));
            proptest::prop_assert_eq!(
                fast.map_err(|e| e.to_string()),
                full.map_err(|e| e.to_string())
            );
        }
    }

    fn series(ts: &[&str]) -> Series {
        Series {
            id: "s".into(),
            ts: ts
                .iter()
                .map(|t| crate::time::parse_ts(t).unwrap())
                .collect(),
            values: vec![0.0; ts.len()],
        }
    }

    #[test]
    fn holes_are_filled_on_the_grid() {
        let mut s = series(&["2026-01-01", "2026-01-02", "2026-01-05", "2026-01-06"]);
        s.values = vec![1.0, 2.0, 8.0, 9.0];
        for (fill, want) in [
            (Fill::Interpolate, vec![1.0, 2.0, 4.0, 6.0, 8.0, 9.0]),
            (Fill::Zero, vec![1.0, 2.0, 0.0, 0.0, 8.0, 9.0]),
            (Fill::Previous, vec![1.0, 2.0, 2.0, 2.0, 8.0, 9.0]),
        ] {
            let (r, missing) = s.regular(fill);
            assert_eq!((r.values.clone(), missing), (want, 2), "{fill:?}");
            assert_eq!(r.ts[2], crate::time::parse_ts("2026-01-03").unwrap());
        }
        let (r, missing) = s.regular(Fill::None);
        assert_eq!((r.values.len(), missing), (4, 2));
    }

    proptest::proptest! {
        /// The vectorized check of equal gaps answers as a checked difference per pair
        /// does, near i64's ends too (wrapped differences that equal `g` among them).
        #[test]
        fn every_gap_is_the_checked_differences(
            start in proptest::prelude::any::<i64>(),
            steps in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::prelude::Just(7i64),
                    proptest::prelude::any::<i64>(),
                    proptest::prelude::Just(7i64.wrapping_sub(i64::MIN)),
                ],
                0..6,
            ),
        ) {
            let mut ts = vec![start];
            for d in steps {
                ts.push(ts[ts.len() - 1].wrapping_add(d));
            }
            let checked = ts.windows(2).all(|w| w[1].checked_sub(w[0]) == Some(7));
            proptest::prop_assert_eq!(every_gap_is(&ts, 7), checked, "{:?}", ts);
        }
    }

    /// Instants whose gaps overflow an i64 give no gap rather than a panic.
    #[test]
    fn gaps_past_i64_are_no_gaps() {
        assert_eq!(usual_gap(&[i64::MIN, i64::MAX]), None);
        assert_eq!(usual_gap(&[i64::MIN, 0, 10, 20]), Some(10));
        let s = Series {
            id: "s".into(),
            ts: vec![i64::MIN, 0, i64::MAX],
            values: vec![1.0; 3],
        };
        assert_eq!(s.regular(Fill::Interpolate).1, 0);
    }

    #[test]
    fn steps_are_inferred() {
        assert_eq!(
            series(&["2026-01-01", "2026-01-02", "2026-01-04"]).step(),
            Step::Fixed(MICROS_PER_DAY)
        );
        assert_eq!(
            series(&["2026-01-01", "2026-01-02", "2026-01-04"])
                .regular(Fill::None)
                .1,
            1
        );
        assert_eq!(
            series(&["2026-01-31", "2026-02-28"]).step(),
            Step::Fixed(28 * MICROS_PER_DAY)
        );
        assert_eq!(
            series(&["2026-01-01", "2026-02-01", "2026-03-01"]).step(),
            Step::Months(1)
        );
        assert_eq!(
            series(&["2026-01-01T00:00:00Z", "2026-01-01 01:00:00"]).step(),
            Step::Fixed(MICROS_PER_HOUR)
        );
        assert_eq!(
            Step::Months(1).after(crate::time::parse_ts("2026-01-01").unwrap(), 2),
            crate::time::parse_ts("2026-03-01").unwrap()
        );
    }
}
