//! The fast path of [`super::read_series`]: a series file read column by column.
//!
//! Rows are grouped per id as they are read, each id's instants and values in columns of
//! their own instead of one tuple per point with its line, so a series is moved, not
//! copied, into its [`Series`] (the parts a parallel read cut apart are appended); a CSV
//! run of one id's rows is gathered in reused buffers and copied once into columns of its
//! exact length (growing them row by row reallocated and left memory unused). An
//! unquoted CSV block is split by hand, each line found with memchr and its fields in a
//! plain loop (the csv crate's state machine was the largest cost of a 1 GB file). A
//! Parquet file is decoded by arrow-rs in runs of row groups, in parallel, and its runs of
//! one id copied as they are decoded ([`parquet_parts`]); a file of other types or codecs
//! goes to polars, whose frame's runs of one id are copied from its column chunks. What
//! this path does not handle it hands back
//! (`None`), and the full reader, which names the file's line or row of every error, reads
//! the file instead: a quote, a lone `\r`, a row that is not well formed, a null, two
//! values at one instant. So both paths give the same series, and a bad file the same
//! error (a proptest checks both).

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use rayon::prelude::*;

use super::Series;
use crate::time::MICROS_PER_DAY;

/// Rows read in file order, grouped by id as they come: each id's instants and values in
/// its own columns (so a series is moved, not copied again, into its [`Series`]).
#[derive(Default)]
pub(super) struct Columns {
    /// (id, instants, values), in order of first appearance.
    series: Vec<(String, Vec<i64>, Vec<f64>)>,
    /// Position of each id in `series`.
    index: std::collections::HashMap<String, usize>,
    /// The current run of CSV rows of one id (rows of one id usually follow each other),
    /// not filed yet: its id, instants and values. When another id starts, the run of a
    /// new id is copied into columns of its exact length (one of a known id is appended
    /// to its columns) and these buffers, which stay in cache, are reused. Growing each
    /// series' columns row by row instead reallocated and copied them, and left memory
    /// unused: 1.18 -> 0.85 GB peak on a 970 MB file of 100k series.
    run: (String, Vec<i64>, Vec<f64>),
    /// The text instants' parser (it keeps the last date's month).
    dates: crate::time::TsParser,
}

impl Columns {
    /// Appends a row whose id is `id` (its bytes, checked as UTF-8 when a run starts);
    /// None when the id is not UTF-8 or blank.
    fn push(&mut self, id: &[u8], t: i64, v: f64) -> Option<()> {
        if self.run.0.as_bytes() != id || self.run.1.is_empty() {
            let id = std::str::from_utf8(id).ok()?;
            if id.trim().is_empty() {
                return None;
            }
            self.file_run();
            self.run.0.clear();
            self.run.0.push_str(id);
        }
        self.run.1.push(t);
        self.run.2.push(v);
        Some(())
    }

    /// Files the current run under its id and empties it.
    fn file_run(&mut self) {
        let (id, ts, values) = &mut self.run;
        if ts.is_empty() {
            return;
        }
        let (_, have_ts, have_values) = Self::find(&mut self.series, &mut self.index, id, ts.len());
        have_ts.extend_from_slice(ts);
        have_values.extend_from_slice(values);
        ts.clear();
        values.clear();
    }

    /// The columns of `id`: its series', or new ones with room for `rows` (so a run copied
    /// into them takes its exact length) added in order of first appearance.
    fn find<'s>(
        series: &'s mut Vec<(String, Vec<i64>, Vec<f64>)>,
        index: &mut std::collections::HashMap<String, usize>,
        id: &str,
        rows: usize,
    ) -> &'s mut (String, Vec<i64>, Vec<f64>) {
        let at = match index.get(id) {
            Some(&i) => i,
            None => {
                index.insert(id.to_string(), series.len());
                series.push((
                    id.to_string(),
                    Vec::with_capacity(rows),
                    Vec::with_capacity(rows),
                ));
                series.len() - 1
            }
        };
        &mut series[at]
    }

    /// Appends rows of one id, already checked, given as consecutive pieces: instants as
    /// `scale` times the pieces' numbers (1 for µs, a day's µs for day numbers); None when
    /// one does not fit in an i64.
    pub fn push_run<T: Copy + Into<i64>>(
        &mut self,
        id: &str,
        t: &[&[T]],
        scale: i64,
        v: &[&[f64]],
    ) -> Option<()> {
        self.file_run();
        let rows = v.iter().map(|v| v.len()).sum();
        let (_, ts, values) = Self::find(&mut self.series, &mut self.index, id, rows);
        ts.reserve(rows);
        values.reserve(rows);
        for t in t {
            for &x in t.iter() {
                // An instant past i64's µs range: the full reader takes the file.
                ts.push(x.into().checked_mul(scale)?);
            }
        }
        v.iter().for_each(|v| values.extend_from_slice(v));
        Some(())
    }
}

/// Bytes read from a range at a time (tiny in tests, so lines and CRLFs straddle blocks).
const BLOCK: usize = if cfg!(test) { 61 } else { 8 << 20 };

/// The rows of bytes `a..b` of a CSV file (whole lines, no header), or None when a line
/// needs the full reader. `cols` are the id, time and value columns, `width` the header's.
pub(super) fn csv_range(
    path: &Path,
    (a, b): (u64, u64),
    cols: (usize, usize, usize),
    width: usize,
) -> Option<Columns> {
    let mut file = std::fs::File::open(path).ok()?;
    file.seek(SeekFrom::Start(a)).ok()?;
    let mut input = file.take(b - a);
    let mut out = Columns::default();
    let mut buf: Vec<u8> = Vec::with_capacity(BLOCK + 4096);
    let mut first = true;
    loop {
        let have = buf.len();
        buf.resize(have + BLOCK, 0);
        let n = crate::ingest::read_up_to(&mut input, &mut buf[have..]).ok()?;
        buf.truncate(have + n);
        // csv drops a byte-order mark where a reader starts (the full reader starts one per
        // range): such a range is the full reader's.
        if first && buf.starts_with(b"\xEF\xBB\xBF") {
            return None;
        }
        first = false;
        let end = n == 0;
        // Whole lines of the block; at the end, the last line even without its `\n`.
        let cut = if end {
            buf.len()
        } else {
            match memchr::memrchr(b'\n', &buf) {
                Some(i) => i + 1,
                None => continue,
            }
        };
        if memchr::memchr(b'"', &buf[..cut]).is_some() {
            return None;
        }
        parse_block(&buf[..cut], cols, width, &mut out)?;
        if end {
            out.file_run();
            return Some(out);
        }
        buf.drain(..cut);
    }
}

/// The unquoted lines of `block` (the last one may lack its `\n`) into `out`, line by line
/// (each found with memchr, its fields split in a plain loop: a row is a few dozen bytes,
/// shorter than memchr's SIMD step); None when a line is not a well-formed row or a `\r`
/// is not part of a `\r\n` (csv reads a lone one as a line end).
fn parse_block(
    block: &[u8],
    cols: (usize, usize, usize),
    width: usize,
    out: &mut Columns,
) -> Option<()> {
    let mut crs = memchr::memchr_iter(b'\r', block).count();
    let mut kept: [&[u8]; 3] = [&[]; 3];
    let mut rest = block;
    while !rest.is_empty() {
        let (mut line, next) = match memchr::memchr(b'\n', rest) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        if let Some((b'\r', r)) = line.split_last() {
            crs -= 1;
            line = r;
        }
        // csv skips empty lines.
        if line.is_empty() {
            continue;
        }
        let mut k = 0;
        for field in line.split(|&b| b == b',') {
            keep(&mut kept, k, cols, field);
            k += 1;
        }
        if k != width {
            return None;
        }
        let t = out.dates.parse(kept[1])?;
        let v = parse_value(kept[2]).filter(|v| v.is_finite())?;
        out.push(kept[0], t, v)?;
    }
    (crs == 0).then_some(())
}

/// Keeps field `k` when it is the id, time or value column.
fn keep<'a>(
    kept: &mut [&'a [u8]; 3],
    k: usize,
    (ci, ct, cv): (usize, usize, usize),
    field: &'a [u8],
) {
    if k == ci {
        kept[0] = field;
    }
    if k == ct {
        kept[1] = field;
    }
    if k == cv {
        kept[2] = field;
    }
}

/// Powers of ten exact in an f64.
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// A field's number, as `str::parse` reads its trimmed text. A plain decimal (`-123.456`:
/// at most 15 digits, no exponent) is its digits as an integer divided by a power of ten:
/// both are exact in an f64, and one IEEE division rounds correctly (Clinger's fast path),
/// so the result is the same bits. Anything else goes to `str::parse`.
fn parse_value(b: &[u8]) -> Option<f64> {
    let (neg, digits) = match b {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, b),
    };
    let (mut m, mut n, mut point) = (0u64, 0, None);
    for (i, &c) in digits.iter().enumerate() {
        match c {
            b'0'..=b'9' if n < 15 => {
                m = m * 10 + u64::from(c - b'0');
                n += 1;
            }
            b'.' if point.is_none() => point = Some(i),
            _ => return std::str::from_utf8(b).ok()?.trim().parse().ok(),
        }
    }
    if n == 0 {
        return std::str::from_utf8(b).ok()?.trim().parse().ok();
    }
    let v = m as f64 / POW10[point.map_or(0, |i| digits.len() - i - 1)];
    Some(if neg { -v } else { v })
}

/// The rows of a Parquet series file read row group by row group, in parallel, each
/// group's rows copied into a part as it is decoded (so the file is never held whole:
/// reading it as one polars frame took 1.75 GB for 38 M rows of 100k series, most of it
/// the ids). `names` are the id, time and value columns' accepted names, in order of
/// preference. None when the file is not one this path reads: a column of another type
/// (ids not text, instants neither a Date nor a µs timestamp, values not doubles), a
/// codec this build of the parquet crate lacks (it has zstd and snappy), a null, a value
/// that is not finite, or an instant past i64's µs; the polars reader takes it then.
pub(super) fn parquet_parts(path: &Path, names: [&[&'static str]; 3]) -> Option<Vec<Columns>> {
    use arrow::array::AsArray;
    use arrow::datatypes::{DataType, Date32Type, TimeUnit, TimestampMicrosecondType};
    use parquet::arrow::ProjectionMask;
    use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};
    let file = std::fs::File::open(path).ok()?;
    let meta = ArrowReaderMetadata::load(&file, Default::default()).ok()?;
    let schema = meta.schema().clone();
    let pick = |names: &[&'static str]| names.iter().find(|n| schema.index_of(n).is_ok()).copied();
    let [id, t, v] = names.map(pick);
    let (id, t, v) = (id?, t?, v?);
    let is = |name: &str, ok: &dyn Fn(&DataType) -> bool| {
        schema
            .field_with_name(name)
            .is_ok_and(|f| ok(f.data_type()))
    };
    let text =
        |d: &DataType| matches!(d, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    let instant = |d: &DataType| {
        matches!(
            d,
            DataType::Date32 | DataType::Timestamp(TimeUnit::Microsecond, _)
        )
    };
    if !is(id, &text) || !is(t, &instant) || !is(v, &|d| *d == DataType::Float64) {
        return None;
    }
    // Ids decoded as string views: a short id is held in its view, not copied to a buffer.
    let viewed: arrow::datatypes::Fields = schema
        .fields()
        .iter()
        .map(|f| match f.name() == id {
            true => std::sync::Arc::new(f.as_ref().clone().with_data_type(DataType::Utf8View)),
            false => f.clone(),
        })
        .collect();
    let options =
        parquet::arrow::arrow_reader::ArrowReaderOptions::new().with_schema(std::sync::Arc::new(
            arrow::datatypes::Schema::new_with_metadata(viewed, schema.metadata().clone()),
        ));
    let meta = ArrowReaderMetadata::try_new(meta.metadata().clone(), options).ok()?;
    let roots: Vec<usize> = [id, t, v]
        .iter()
        .filter_map(|n| schema.index_of(n).ok())
        .collect();
    // Runs of consecutive row groups, a few per thread (a part per group would repeat
    // each id's entry, and cut its series, once per group of a file of many small ones).
    let groups: Vec<usize> = (0..meta.metadata().num_row_groups()).collect();
    let per = groups
        .len()
        .div_ceil(4 * rayon::current_num_threads())
        .max(1);
    groups
        .par_chunks(per)
        .map(|gs| {
            let file = std::fs::File::open(path).ok()?;
            let mask = ProjectionMask::roots(meta.parquet_schema(), roots.iter().copied());
            let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta.clone())
                .with_row_groups(gs.to_vec())
                .with_projection(mask)
                .with_batch_size(1 << 16)
                .build()
                .ok()?;
            let mut out = Columns::default();
            for batch in reader {
                let batch = batch.ok()?;
                let (ids, ts, vs) = (
                    batch.column_by_name(id)?,
                    batch.column_by_name(t)?,
                    batch.column_by_name(v)?,
                );
                if ids.null_count() + ts.null_count() + vs.null_count() > 0 {
                    return None;
                }
                let vs = vs.as_primitive_opt::<arrow::datatypes::Float64Type>()?;
                let vs = vs.values().as_ref();
                if !vs.iter().all(|x| x.is_finite()) {
                    return None;
                }
                let n = vs.len();
                // Ids are read as string views (the schema given to the reader); the
                // other text types are kept should that ever change.
                let runs = if let Some(a) = ids.as_string_view_opt() {
                    runs(n, |i| a.value(i))
                } else if let Some(a) = ids.as_string_opt::<i32>() {
                    runs(n, |i| a.value(i))
                } else {
                    let a = ids.as_string_opt::<i64>()?;
                    runs(n, |i| a.value(i))
                };
                // Each run of one id copied with its instants and values.
                for (first, a, b) in runs {
                    let value = [&vs[a..b]];
                    if let Some(days) = ts.as_primitive_opt::<Date32Type>() {
                        let days = days.values().as_ref();
                        out.push_run(first, &[&days[a..b]], MICROS_PER_DAY, &value)?;
                    } else {
                        let us = ts.as_primitive_opt::<TimestampMicrosecondType>()?;
                        out.push_run(first, &[&us.values().as_ref()[a..b]], 1, &value)?;
                    }
                }
            }
            Some(out)
        })
        .collect()
}

/// The runs of equal ids among rows `0..n` (`id` gives a row's): (id, first row, end).
fn runs<'a>(n: usize, id: impl Fn(usize) -> &'a str) -> Vec<(&'a str, usize, usize)> {
    let mut out = Vec::new();
    let mut a = 0;
    while a < n {
        let first = id(a);
        let b = (a + 1..n).find(|&i| id(i) != first).unwrap_or(n);
        out.push((first, a, b));
        a = b;
    }
    out
}

/// The series of `parts` (each holding consecutive rows of the file, in file order), in id
/// order, each sorted by time (stable, so repeated instants keep file order); None when a
/// series has two values at one instant and `keep_repeats` is off (the full reader names
/// their lines).
pub(super) fn assemble(parts: Vec<Columns>, keep_repeats: bool) -> Option<Vec<Series>> {
    type Pieces = Vec<(Vec<i64>, Vec<f64>)>;
    let mut by: BTreeMap<String, Pieces> = BTreeMap::new();
    for mut part in parts {
        part.file_run();
        for (id, ts, values) in part.series {
            by.entry(id).or_default().push((ts, values));
        }
    }
    let groups: Vec<(String, Pieces)> = by.into_iter().collect();
    groups
        .into_par_iter()
        .map(|(id, mut pieces)| {
            let (mut ts, mut values) = pieces.remove(0);
            for (t, v) in pieces {
                ts.extend(t);
                values.extend(v);
            }
            if !sorted(&ts) {
                let mut order: Vec<usize> = (0..ts.len()).collect();
                order.sort_by_key(|&i| ts[i]);
                (ts, values) = order.iter().map(|&i| (ts[i], values[i])).unzip();
            }
            if !keep_repeats && ts.windows(2).any(|w| w[0] == w[1]) {
                return None;
            }
            Some(Series { id, ts, values })
        })
        .collect()
}

/// `ts.is_sorted()`, as a fold without an early exit, which the compiler vectorizes
/// (every point of the file passes through it).
fn sorted(ts: &[i64]) -> bool {
    let after = ts.get(1..).unwrap_or(&[]);
    ts.iter().zip(after).fold(true, |ok, (a, b)| ok & (a <= b))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        /// A field's number is `str::parse`'s, bit for bit, or refused as it refuses it.
        #[test]
        fn values_parse_as_std_parses(
            text in "[ +-]?[0-9]{0,18}(\\.[0-9]{0,18})?(e-?[0-9]{1,3})? ?|.{0,6}"
        ) {
            let std: Option<f64> = text.trim().parse().ok();
            prop_assert_eq!(
                super::parse_value(text.as_bytes()).map(f64::to_bits),
                std.map(f64::to_bits),
                "{}", text
            );
        }
    }
}
