//! Completing a rollup's aggregated rows before they are stored: every zero-when-empty
//! series gets a row for each window of its range (value 0 where no event fell) in the
//! partitions recomputed now, each row gets its window end, and the rows are grouped by
//! partition for [`super::store`] to write.
//!
//! Rows are walked once in (series, window) order; output key columns are gathered from
//! the input by row index, so no key string is copied one by one.

use std::collections::{BTreeSet, HashMap};

use polars::prelude::*;

use crate::error::{Error, Result};

use super::plan::{Key, Ranges, Windows};
use super::{Calendar, RollupSpec, RollupSummary, utc_datetime};

/// Output rows per batch handed to `sink`: a batch is a run of consecutive partitions whose
/// windows, times the number of series, stay under this, so the rows being completed
/// (24 bytes each before they are gathered into frames) stay bounded whatever the lake's
/// size. `MLK_ROLLUP_BATCH_ROWS` in tests (1: one partition per batch).
fn batch_rows() -> usize {
    static ROWS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *ROWS.get_or_init(|| {
        std::env::var("MLK_ROLLUP_BATCH_ROWS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2_000_000)
    })
}

/// One series in the walk: its entries `start..end` of the (series, window) order, and its
/// first and last window index if it is zero when empty.
type SeriesRun = (usize, usize, Option<(usize, usize)>);

/// The rows to store, one frame per partition of `scope`: the aggregated rows, with zero
/// rows filling each zero-when-empty series over its range, and window ends. They are
/// handed to `sink` in batches of consecutive partitions ([`batch_rows`]), in partition
/// order, so a caller writes one batch before the next is built.
pub(super) fn complete(
    rows: DataFrame,
    spec: &RollupSpec,
    windows: &Windows,
    scope: &BTreeSet<i64>,
    ranges: &Ranges,
    summary: &mut RollupSummary,
    sink: &mut dyn FnMut(Completed) -> Result<()>,
) -> Result<()> {
    let keys = spec.key_columns();
    let cal = &windows.cal;
    let all = with_placeholders(rows, &keys, ranges)?;
    let kc: Vec<&StringChunked> = keys
        .iter()
        .map(|k| all.column(k).and_then(|c| c.str()))
        .collect::<PolarsResult<_>>()?;
    let cols = Cols::of(&all)?;
    let t0 = std::time::Instant::now();
    let order = series_order(&kc, cols.ws)?;
    tracing::debug!(elapsed = ?t0.elapsed(), "ordered");
    // Each series' run of `order` (rows by series, then window) and its range as window
    // indices if it is zero when empty.
    let key_at = |r: usize| kc.iter().map(move |c| c.get(r));
    let mut series: Vec<SeriesRun> = Vec::new();
    let mut i = 0;
    while i < order.len() {
        let (s, first) = (order[i].0, order[i].1 as usize);
        let mut j = i + 1;
        while j < order.len() && order[j].0 == s {
            j += 1;
        }
        let owned: Key = key_at(first).map(|k| k.map(str::to_string)).collect();
        let range = ranges
            .get(&owned)
            .and_then(|&(a, b)| Some((cal.index_of(a)?, cal.index_of(b)?)));
        series.push((i, j, range));
        i = j;
    }
    let key_frame = all.select(keys.iter().map(String::as_str))?;
    let mut parts = Parts::new(windows, scope);
    let mut wrote = vec![false; series.len()];
    for (wlo, whi) in parts.batches(series.len().max(1)) {
        // Rows come only from partitions in scope, and zero rows go only there: a batch
        // without one (an incremental run's untouched days) has nothing to write.
        if !parts.in_scope[wlo..whi].iter().any(|&s| s) {
            continue;
        }
        for (s, &(i, j, range)) in series.iter().enumerate() {
            let before = summary.rows_written;
            parts.complete_series(cal, &order[i..j], range, (wlo, whi), &cols, summary);
            wrote[s] |= summary.rows_written > before;
        }
        let done = parts.take(&key_frame);
        if !done.parts.is_empty() {
            sink(done)?;
        }
    }
    summary.series += wrote.iter().filter(|&&w| w).count() as u64;
    tracing::debug!(elapsed = ?t0.elapsed(), "completed");
    Ok(())
}

/// `rows`' key, window, value and count columns, followed by one placeholder row (window
/// `i64::MIN`) per series of `ranges`: series known only from stored files get one so
/// the walk visits them too, as they may need zero rows in the partitions recomputed now.
fn with_placeholders(rows: DataFrame, keys: &[String], ranges: &Ranges) -> Result<DataFrame> {
    let mut ex_keys: Vec<Vec<Option<&str>>> = vec![Vec::new(); keys.len()];
    for k in ranges.keys() {
        for (c, v) in ex_keys.iter_mut().zip(k) {
            c.push(v.as_deref());
        }
    }
    let n_ex = ranges.len();
    let mut ex_cols: Vec<Column> = keys
        .iter()
        .zip(ex_keys)
        .map(|(k, v)| Column::new(k.as_str().into(), v))
        .collect();
    ex_cols.push(Column::new("window_start".into(), vec![i64::MIN; n_ex]));
    ex_cols.push(Column::new("value".into(), vec![0.0f64; n_ex]));
    ex_cols.push(Column::new("event_count".into(), vec![0i64; n_ex]));
    let extras = DataFrame::new_infer_height(ex_cols)?;
    let mut all = rows.select(extras.get_column_names().into_iter().cloned())?;
    // `rows` goes here: only the rechunked copy stays.
    drop(rows);
    all.vstack_mut(&extras)?;
    all.rechunk_mut();
    Ok(all)
}

/// The window, value and count columns of the rows being completed, as slices.
struct Cols<'a> {
    ws: &'a [i64],
    vs: &'a [f64],
    ns: &'a [i64],
}

impl<'a> Cols<'a> {
    fn of(all: &'a DataFrame) -> Result<Cols<'a>> {
        let no_nulls = |name: &str| Error::InvalidParameter {
            name: "rollup",
            reason: format!("aggregated `{name}` has nulls"),
        };
        let ws = all.column("window_start")?.i64()?;
        let ws = ws.cont_slice().map_err(|_| no_nulls("window_start"))?;
        let vs = all.column("value")?.f64()?;
        let vs = vs.cont_slice().map_err(|_| no_nulls("value"))?;
        let ns = all.column("event_count")?.i64()?;
        let ns = ns.cont_slice().map_err(|_| no_nulls("event_count"))?;
        Ok(Cols { ws, vs, ns })
    }
}

/// The partitions being filled, one [`Out`] each, looked up by calendar window index.
struct Parts {
    /// Partition starts, in order: partitions are runs of consecutive windows.
    starts: Vec<i64>,
    /// Each window's partition, as an index into `starts` and `outs`.
    slot: Vec<usize>,
    /// Whether each window's partition is recomputed now (and so gets zero rows).
    in_scope: Vec<bool>,
    outs: Vec<Out>,
}

impl Parts {
    fn new(windows: &Windows, scope: &BTreeSet<i64>) -> Parts {
        // Each calendar window's partition, and the window's end, looked up by index.
        let win_part: Vec<i64> = windows
            .cal
            .starts()
            .iter()
            .map(|&w| windows.part_of(w))
            .collect();
        let in_scope: Vec<bool> = win_part.iter().map(|p| scope.contains(p)).collect();
        // Partitions are runs of consecutive windows: number them by window index.
        let mut starts: Vec<i64> = win_part.clone();
        starts.dedup();
        let slot: Vec<usize> = win_part
            .iter()
            .map(|p| starts.partition_point(|q| q < p))
            .collect();
        let outs: Vec<Out> = (0..starts.len()).map(|_| Out::default()).collect();
        Parts {
            starts,
            slot,
            in_scope,
            outs,
        }
    }

    fn emit(&mut self, src: usize, wi: usize, v: f64, n: i64) {
        let o = &mut self.outs[self.slot[wi]];
        o.src.push(src as IdxSize);
        o.wi.push(wi as u32);
        o.v.push(v);
        o.n.push(n);
    }

    /// Runs of consecutive partitions, as half-open ranges of window indices, holding at
    /// most [`batch_rows`] rows for `n_series` complete series (at least one partition each).
    fn batches(&self, n_series: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let (mut lo, mut wi) = (0, 0);
        let n = self.slot.len();
        while wi < n {
            // The end of this window's partition.
            let mut end = wi + 1;
            while end < n && self.slot[end] == self.slot[wi] {
                end += 1;
            }
            if wi > lo && (end - lo) * n_series > batch_rows() {
                out.push((lo, wi));
                lo = wi;
            }
            wi = end;
        }
        if lo < n {
            out.push((lo, n));
        }
        out
    }

    /// The rows of one series that fall in the windows `wlo..whi`: `rows` are its
    /// (series, row) entries in window order, placeholders first; `range` its first and
    /// last window index if it is zero when empty.
    fn complete_series(
        &mut self,
        cal: &Calendar,
        rows: &[(u32, IdxSize)],
        range: Option<(usize, usize)>,
        (wlo, whi): (usize, usize),
        c: &Cols<'_>,
        summary: &mut RollupSummary,
    ) {
        let (ws, vs, ns) = (c.ws, c.vs, c.ns);
        let starts = cal.starts();
        let first = rows[0].1 as usize;
        let j = rows.len();
        let w_at = |k: usize| ws[rows[k].1 as usize];
        // The first row at or after the batch's first window (placeholder rows sort first,
        // at window i64::MIN, and so are skipped too).
        let mut k = rows.partition_point(|&(_, r)| ws[r as usize] < starts[wlo]);
        match range {
            Some((ia, ib)) => {
                // Zero-when-empty series: every window of the range in scope.
                let (a, b) = (ia.max(wlo), (ib + 1).min(whi));
                for (wi, &w) in starts.iter().enumerate().take(b).skip(a) {
                    while k < j && w_at(k) < w {
                        k += 1;
                    }
                    if k < j && w_at(k) == w {
                        let r = rows[k].1 as usize;
                        self.emit(r, wi, vs[r], ns[r]);
                        summary.rows_written += 1;
                    } else if self.in_scope[wi] {
                        self.emit(first, wi, 0.0, 0);
                        summary.rows_written += 1;
                        summary.zero_rows += 1;
                    }
                }
            }
            None => {
                let end = starts.get(whi).copied().unwrap_or(i64::MAX);
                while k < j && w_at(k) < end {
                    let r = rows[k].1 as usize;
                    if let Some(wi) = cal.index_of(ws[r]) {
                        self.emit(r, wi, vs[r], ns[r]);
                        summary.rows_written += 1;
                    }
                    k += 1;
                }
            }
        }
    }

    /// The partitions that got rows since the last call, emptied.
    fn take(&mut self, key_frame: &DataFrame) -> Completed {
        Completed {
            key_frame: key_frame.clone(),
            parts: self
                .starts
                .iter()
                .zip(self.outs.iter_mut())
                .filter(|(_, o)| !o.src.is_empty())
                .map(|(&p, o)| (p, std::mem::take(o)))
                .collect(),
        }
    }
}

/// One partition's rows: where each row's keys come from, its window, value and count.
#[derive(Default)]
pub(super) struct Out {
    src: Vec<IdxSize>,
    wi: Vec<u32>,
    v: Vec<f64>,
    n: Vec<i64>,
}

/// The rows to store: key columns to gather from, and each partition's rows.
pub(super) struct Completed {
    pub(super) key_frame: DataFrame,
    pub(super) parts: Vec<(i64, Out)>,
}

impl Out {
    /// The partition's frame: keys gathered by row index, windows looked up by index.
    pub(super) fn frame(self, key_frame: &DataFrame, cal: &Calendar) -> Result<DataFrame> {
        let starts = cal.starts();
        let ws: Vec<i64> = self.wi.iter().map(|&i| starts[i as usize]).collect();
        let we: Vec<i64> = self
            .wi
            .iter()
            .map(|&i| starts.get(i as usize + 1).copied().unwrap_or(i64::MAX))
            .collect();
        let mut df = key_frame.take(&IdxCa::from_vec("idx".into(), self.src))?;
        df.with_column(Column::new("window_start".into(), ws).cast(&utc_datetime())?)?;
        df.with_column(Column::new("window_end".into(), we).cast(&utc_datetime())?)?;
        df.with_column(Column::new("value".into(), self.v))?;
        df.with_column(Column::new("event_count".into(), self.n))?;
        Ok(df)
    }
}

/// Rows ordered by (series key, window), each with its series' rank in key order: series
/// are numbered by a hash of their key and the few distinct keys sorted, so the many rows
/// are sorted on integers rather than on strings.
fn series_order(kc: &[&StringChunked], ws: &[i64]) -> Result<Vec<(u32, IdxSize)>> {
    use xxhash_rust::xxh3::xxh3_64_with_seed;
    let n = ws.len();
    let mut hashes = vec![0u64; n];
    for c in kc {
        for (h, v) in hashes.iter_mut().zip(c.iter()) {
            // The previous columns' hash seeds this one; a null hashes apart from "".
            *h = match v {
                Some(v) => xxh3_64_with_seed(v.as_bytes(), *h),
                None => h.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15,
            };
        }
    }
    // Distinct series: hash -> (first row, id); a hash collision between different keys
    // is detected by comparing with the first row.
    let mut ids: HashMap<u64, (usize, u32)> = HashMap::new();
    let mut firsts: Vec<usize> = Vec::new();
    let mut row_series: Vec<u32> = Vec::with_capacity(n);
    for (r, &h) in hashes.iter().enumerate() {
        let (first, id) = *ids.entry(h).or_insert_with(|| {
            firsts.push(r);
            (r, (firsts.len() - 1) as u32)
        });
        if first != r && !kc.iter().all(|c| c.get(first) == c.get(r)) {
            return Err(Error::InvalidParameter {
                name: "rollup",
                reason: "two series keys share a 64-bit hash; please report this".into(),
            });
        }
        row_series.push(id);
    }
    let mut by_key: Vec<u32> = (0..firsts.len() as u32).collect();
    by_key.sort_by(|&a, &b| {
        let (ra, rb) = (firsts[a as usize], firsts[b as usize]);
        kc.iter()
            .map(|c| c.get(ra).cmp(&c.get(rb)))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut rank = vec![0u32; firsts.len()];
    for (i, &id) in by_key.iter().enumerate() {
        rank[id as usize] = i as u32;
    }
    let mut order: Vec<(u32, i64, IdxSize)> = (0..n)
        .map(|r| (rank[row_series[r] as usize], ws[r], r as IdxSize))
        .collect();
    order.sort_unstable();
    Ok(order.into_iter().map(|(s, _, r)| (s, r)).collect())
}
