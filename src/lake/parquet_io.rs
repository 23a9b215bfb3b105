//! Event files: sorted, ZSTD-compressed Parquet with statistics, and reading them back.

use std::fs;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float64Array, StringArray, StringBuilder, TimestampMicrosecondArray,
};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::arrow_writer::{ArrowColumnChunk, compute_leaves};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use rayon::prelude::*;

use crate::error::{Error, IoContext, Result};
use crate::event::{UsageEvent, lake_schema};
use crate::lake::columns::{EventBuf, Part, Strs};
use std::collections::HashMap;

/// Rows per row group: large enough for good compression, small enough that a reader
/// filtering on tenant or time skips most of a big partition by statistics.
pub const ROW_GROUP_ROWS: usize = 256 * 1024;

/// Rows per Arrow batch handed to the writer (a divisor of [`ROW_GROUP_ROWS`]).
const BATCH_ROWS: usize = 32 * 1024;
/// Most text in one Arrow string array (its offsets are 32-bit).
const MAX_BATCH_BYTES: usize = 1 << 30;

/// What a written file holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WrittenFile {
    /// Rows written.
    pub rows: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// Sum of `value`.
    pub value_sum: f64,
    /// Sum of `|value|`.
    pub value_abs_sum: f64,
    /// Whether every `value` is a whole number.
    pub values_integral: bool,
}

/// Writes `events` to `path` (fsynced), sorted by (tenant_id, meter, ts, id).
pub fn write_events(path: &Path, events: &[UsageEvent]) -> Result<WrittenFile> {
    write_buf(path, &EventBuf::from_events(events))
}

/// Writes the events of `buf` to `path` (fsynced), sorted by (tenant_id, meter, ts, id).
pub fn write_buf(path: &Path, buf: &EventBuf) -> Result<WrittenFile> {
    write_parts(path, &[Part { buf, skip: &[] }])
}

/// A row of one of several parts: (part, row).
type RowRef = (u32, u32);

/// Writes the kept rows of `parts` to one file at `path` (fsynced), sorted by
/// (tenant_id, meter, ts, id).
///
/// The sort runs on a permutation, not on the events: (tenant, meter) pairs are ranked
/// once, rows are bucketed by that rank, and only rows of one bucket are compared, by
/// (ts, id) (see `sort_order`).
pub fn write_parts(path: &Path, parts: &[Part<'_>]) -> Result<WrittenFile> {
    let (written, file) = encode_parts(path, parts)?;
    file.sync_all().at(path)?;
    Ok(written)
}

/// [`write_parts`] without the fsync, for a writer that has its files synced elsewhere
/// ([`crate::lake::log::Syncer`]) before it commits them.
pub(crate) fn write_parts_unsynced(path: &Path, parts: &[Part<'_>]) -> Result<WrittenFile> {
    encode_parts(path, parts).map(|(written, _)| written)
}

fn encode_parts(path: &Path, parts: &[Part<'_>]) -> Result<(WrittenFile, fs::File)> {
    let order = sort_order(parts);
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).at(p)?;
    }
    let file = fs::File::create(path).at(path)?;
    // Encrypted (AES-GCM, encrypted footer) when a key is configured: lake::crypto.
    let props = super::crypto::encrypting(WriterProperties::builder())?
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).expect("level 1 is valid"),
        ))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_created_by(format!("meterlake {}", env!("CARGO_PKG_VERSION")))
        // Ids and properties are (nearly) unique per row: a dictionary only costs time,
        // and so do per-page min/max (no reader prunes pages on them; row groups keep them).
        .set_column_dictionary_enabled(ColumnPath::from("id"), false)
        .set_column_dictionary_enabled(ColumnPath::from("properties"), false)
        // Timestamps are nearly unique too, but ascend within a (tenant, meter) run: stored
        // as deltas they take a third of a dictionary's space (1 M events: the lake shrank
        // 15.2 -> 11.6 MB) and encode faster. Every reader named in the README decodes it.
        .set_column_dictionary_enabled(ColumnPath::from("ts"), false)
        .set_column_encoding(ColumnPath::from("ts"), Encoding::DELTA_BINARY_PACKED)
        .set_column_statistics_enabled(ColumnPath::from("id"), EnabledStatistics::Chunk)
        .set_column_statistics_enabled(ColumnPath::from("properties"), EnabledStatistics::Chunk)
        .build();
    let schema = lake_schema();
    let pq = |e| Error::parquet(path, e);
    // The ArrowWriter sets the file up (schema, Arrow metadata); its row groups are then
    // encoded column by column in parallel, which keeps both cores busy even when only
    // one file is being written (the end of an ingest, a flush of one big day).
    let (mut writer, factory) = ArrowWriter::try_new(file, schema.clone(), Some(props))
        .and_then(ArrowWriter::into_serialized_writer)
        .map_err(pq)?;
    let (mut value_sum, mut value_abs_sum, mut values_integral) = (0.0, 0.0, true);
    for (g, group) in order.chunks(ROW_GROUP_ROWS).enumerate() {
        for &(p, i) in group {
            let v = parts[p as usize].buf.value[i as usize];
            value_sum += v;
            value_abs_sum += v.abs();
            // NaN and infinities have no whole-number form either.
            values_integral &= v.fract() == 0.0;
        }
        let chunks: Vec<Result<ArrowColumnChunk>> = factory
            .create_column_writers(g)
            .map_err(pq)?
            .into_par_iter()
            .enumerate()
            .map(|(c, mut w)| {
                // Batches smaller than a row group: memory holds one small array per column.
                for rows in batches(parts, c, group, MAX_BATCH_BYTES) {
                    let array = column(parts, c, rows);
                    for leaf in compute_leaves(schema.field(c), &array).map_err(pq)? {
                        w.write(&leaf).map_err(pq)?;
                    }
                }
                w.close().map_err(pq)
            })
            .collect();
        let mut rg = writer.next_row_group().map_err(pq)?;
        for chunk in chunks {
            chunk?.append_to_row_group(&mut rg).map_err(pq)?;
        }
        rg.close().map_err(pq)?;
    }
    let file = writer.into_inner().map_err(pq)?;
    let bytes = file.metadata().at(path)?.len();
    let written = WrittenFile {
        rows: order.len() as u64,
        bytes,
        value_sum,
        value_abs_sum,
        values_integral,
    };
    Ok((written, file))
}

/// A small fast hasher for the rank lookup (std's SipHash costs more than the sort here;
/// keys are our own strings, so flooding resistance is not needed).
#[derive(Default)]
struct Fx(u64);

impl Hasher for Fx {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
}

/// Row order of a lake file: by (tenant_id, meter, ts, id).
///
/// Rows are bucketed by their (tenant, meter) pair's rank (a counting sort: two linear
/// passes), then each bucket is sorted by (ts, id). A stable sort keeps that cheap on the
/// usual input, whose events arrive nearly in time order, so a bucket is a few sorted runs.
fn sort_order(parts: &[Part<'_>]) -> Vec<RowRef> {
    // Distinct (tenant, meter) pairs, numbered as first seen, then ranked by sorting them.
    let mut seen: HashMap<(&str, &str), u32, BuildHasherDefault<Fx>> = HashMap::default();
    let mut keyed: Vec<(u32, i64, RowRef)> = Vec::new();
    for (p, part) in parts.iter().enumerate() {
        let buf = part.buf;
        keyed.extend(part.rows().map(|i| {
            let n = seen.len() as u32;
            let pair = *seen.entry((buf.tenant(i), buf.meter(i))).or_insert(n);
            (pair, buf.ts[i], (p as u32, i as u32))
        }));
    }
    let mut pairs: Vec<((&str, &str), u32)> = seen.into_iter().collect();
    pairs.sort_unstable();
    // start[r]: where the bucket of the pair ranked r begins, indexed by first-seen number.
    let mut start = vec![0usize; pairs.len()];
    let mut count = vec![0usize; pairs.len()];
    for k in &keyed {
        count[k.0 as usize] += 1;
    }
    let mut bounds = Vec::with_capacity(pairs.len() + 1);
    let mut at = 0;
    for (_, n) in &pairs {
        start[*n as usize] = at;
        bounds.push(at);
        at += count[*n as usize];
    }
    bounds.push(at);
    let mut bucketed: Vec<(i64, RowRef)> = vec![(0, (0, 0)); keyed.len()];
    for (pair, ts, row) in keyed {
        let s = &mut start[pair as usize];
        bucketed[*s] = (ts, row);
        *s += 1;
    }
    let id = |r: RowRef| parts[r.0 as usize].buf.id(r.1 as usize);
    for w in bounds.windows(2) {
        bucketed[w[0]..w[1]].sort_by(|a, b| a.0.cmp(&b.0).then_with(|| id(a.1).cmp(id(b.1))));
    }
    bucketed.into_iter().map(|k| k.1).collect()
}

/// A string column of the rows `rows`, in that order.
fn strings(parts: &[Part<'_>], col: usize, rows: &[RowRef]) -> ArrayRef {
    let cols: Vec<(&Strs, Option<&[bool]>)> = parts.iter().map(|p| p.buf.strings(col)).collect();
    // Capacity from the columns' average length: one pass over the (scattered) rows.
    let (bytes, n) = cols.iter().zip(parts).fold((0, 0), |(b, n), ((s, _), p)| {
        (b + s.data_len(), n + p.buf.len())
    });
    let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * bytes / n.max(1));
    for &(p, i) in rows {
        let (s, present) = cols[p as usize];
        match present {
            Some(v) if !v[i as usize] => b.append_null(),
            _ => b.append_value(s.get(i as usize)),
        }
    }
    Arc::new(b.finish())
}

/// The buffer's string column behind column `c` of the lake schema, if it is one.
fn string_col(c: usize) -> Option<usize> {
    match c {
        0 => Some(0),
        2 => Some(1),
        3 => Some(2),
        4 => Some(3),
        6 => Some(4),
        _ => None,
    }
}

/// Slices of `rows` to build one Arrow array each: at most [`BATCH_ROWS`] rows and, for a
/// string column, at most `max_bytes` of text (Arrow's string offsets are 32-bit; a value is
/// at most a record, 1 MiB). Only columns holding more than `max_bytes` in all are measured.
fn batches<'r>(
    parts: &[Part<'_>],
    c: usize,
    rows: &'r [RowRef],
    max_bytes: usize,
) -> Vec<&'r [RowRef]> {
    let strs = |s: usize, p: u32| parts[p as usize].buf.strings(s).0;
    let Some(s) = string_col(c).filter(|&s| {
        (0..parts.len() as u32)
            .map(|p| strs(s, p).data_len())
            .sum::<usize>()
            > max_bytes
    }) else {
        return rows.chunks(BATCH_ROWS).collect();
    };
    let (mut out, mut start, mut bytes) = (Vec::new(), 0, 0);
    for (k, &(p, i)) in rows.iter().enumerate() {
        let len = strs(s, p).get(i as usize).len();
        if k > start && (k - start == BATCH_ROWS || bytes + len > max_bytes) {
            out.push(&rows[start..k]);
            (start, bytes) = (k, 0);
        }
        bytes += len;
    }
    if start < rows.len() {
        out.push(&rows[start..]);
    }
    out
}

/// Column `c` of the lake schema for the rows `rows`, in that order.
fn column(parts: &[Part<'_>], c: usize, rows: &[RowRef]) -> ArrayRef {
    let buf = |p: u32| parts[p as usize].buf;
    match (c, string_col(c)) {
        (_, Some(s)) => strings(parts, s, rows),
        (1, None) => Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|&(p, i)| buf(p).ts[i as usize]),
            )
            .with_timezone("UTC"),
        ),
        _ => Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|&(p, i)| buf(p).value[i as usize]),
        )),
    }
}

/// Reads every event of a lake file (in file order).
pub fn read_events(path: &Path) -> Result<Vec<UsageEvent>> {
    let file = fs::File::open(path).at(path)?;
    let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(
        file,
        super::crypto::decrypting(parquet::arrow::arrow_reader::ArrowReaderOptions::new())?,
    )
    .and_then(|b| b.with_batch_size(64 * 1024).build())
    .map_err(|e| Error::parquet(path, e))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch?;
        let bad = |c: &str| Error::CorruptLake {
            path: path.to_path_buf(),
            reason: format!("column {c} missing or mistyped"),
        };
        let s = |name: &'static str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .ok_or_else(|| bad(name))
        };
        let (id, tenant, user, meter, props) = (
            s("id")?,
            s("tenant_id")?,
            s("user_id")?,
            s("meter")?,
            s("properties")?,
        );
        let ts = batch
            .column_by_name("ts")
            .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
            .ok_or_else(|| bad("ts"))?;
        let value = batch
            .column_by_name("value")
            .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
            .ok_or_else(|| bad("value"))?;
        for i in 0..batch.num_rows() {
            out.push(UsageEvent {
                id: id.value(i).to_string(),
                ts: ts.value(i),
                tenant_id: tenant.value(i).to_string(),
                user_id: user.is_valid(i).then(|| user.value(i).to_string()),
                meter: meter.value(i).to_string(),
                value: value.value(i),
                properties: props.value(i).to_string(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::Row;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The bucketed order is the plain sort by (tenant, meter, ts, id) of the kept rows
        /// of all parts; skipped rows are left out.
        #[test]
        fn sort_order_is_the_plain_sort_of_the_kept_rows(
            parts in proptest::collection::vec(
                proptest::collection::vec((0u8..4, 0u8..3, 0i64..6, 0u16..500, any::<bool>()), 0..60),
                1..5,
            )
        ) {
            let bufs: Vec<(EventBuf, Vec<u32>)> = parts
                .iter()
                .map(|rows| {
                    let mut buf = EventBuf::default();
                    let mut skip = Vec::new();
                    for (i, &(t, m, ts, id, skipped)) in rows.iter().enumerate() {
                        buf.push(Row {
                            id: &format!("e{id}"),
                            ts,
                            tenant: ["t1", "t10", "t2", "a"][t as usize],
                            user: None,
                            meter: ["m", "api", "m2"][m as usize],
                            value: 1.0,
                            props: "{}",
                            key: 0,
                        });
                        if skipped {
                            skip.push(i as u32);
                        }
                    }
                    (buf, skip)
                })
                .collect();
            let ps: Vec<Part<'_>> = bufs.iter().map(|(buf, skip)| Part { buf, skip }).collect();
            let key = |&(p, i): &RowRef| {
                let b = &bufs[p as usize].0;
                let i = i as usize;
                (b.tenant(i).to_string(), b.meter(i).to_string(), b.ts[i], b.id(i).to_string())
            };
            let mut want: Vec<RowRef> = bufs
                .iter()
                .enumerate()
                .flat_map(|(p, (b, skip))| {
                    (0..b.len() as u32)
                        .filter(|i| !skip.contains(i))
                        .map(move |i| (p as u32, i))
                })
                .collect();
            want.sort_by_key(key);
            let got = sort_order(&ps);
            // Rows equal in every key (a repeated id) may come in either order.
            let keys = |rows: &[RowRef]| rows.iter().map(key).collect::<Vec<_>>();
            prop_assert_eq!(keys(&got), keys(&want));
            let mut sorted = got.clone();
            sorted.sort_unstable();
            want.sort_unstable();
            prop_assert_eq!(sorted, want, "every kept row exactly once");
        }
    }

    #[test]
    fn string_batches_stay_under_the_byte_cap() {
        let mut buf = EventBuf::default();
        for (n, len) in [5, 30, 2, 60, 7, 7, 40].into_iter().enumerate() {
            let id = "x".repeat(len);
            buf.push(Row {
                id: &id,
                ts: n as i64,
                tenant: "t",
                user: None,
                meter: "m",
                value: 1.0,
                props: "{}",
                key: 0,
            });
        }
        let parts = [Part {
            buf: &buf,
            skip: &[],
        }];
        let rows: Vec<RowRef> = (0..buf.len() as u32).map(|i| (0, i)).collect();
        let got = batches(&parts, 0, &rows, 64);
        let lens: Vec<usize> = got
            .iter()
            .map(|b| b.iter().map(|&(_, i)| buf.id(i as usize).len()).sum())
            .collect();
        assert_eq!(lens, vec![37, 60, 54], "greedy cuts, each at most 64 bytes");
        assert_eq!(got.concat(), rows, "every row once, in order");
        // Under the cap in all, or a column of numbers: plain row batches.
        assert_eq!(batches(&parts, 0, &rows, 1 << 20).len(), 1);
        assert_eq!(batches(&parts, 1, &rows, 64).len(), 1);
    }
}
