//! The spilled part of the dedup index: sorted runs of key entries on disk, one Bloom
//! filter over all of them in memory, and a sparse index of each run's blocks.
//!
//! When the in-memory set of [`KeySet`](super::KeySet) is full, its entries are sorted and
//! written as a run. Runs are merged like a binary counter (a run is merged into the one
//! before it while that one is not larger), so there are at most log₂(spills) + 1 of them
//! and every key is rewritten O(log n) times, not once per spill.
//!
//! A lookup asks the filter first (10 bits per key, ~1 % false positives); only a key it
//! may hold costs a read of one 768-byte block per run (`pread`, so the page cache is not
//! counted in the process's memory). Memory is 1.25 to 2.5 bytes per spilled key instead
//! of ~20: whenever the runs outgrow the filter, it is rebuilt from them for twice the keys.
//!
//! Runs live in the commit's staging directory and are deleted with it (or on drop).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::collections::binary_heap::PeekMut;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::Entry;
use crate::error::{IoContext, Result};

/// Entries per block of a run: one block is read per run for a lookup the filter lets
/// through.
const BLOCK: usize = 64;
const ENTRY: usize = 12;

/// Keys written to disk, and how to find them again.
pub(super) struct Spill {
    dir: PathBuf,
    next: u32,
    /// Oldest (largest) first.
    runs: Vec<Run>,
    bloom: Bloom,
}

struct Run {
    path: PathBuf,
    file: File,
    len: usize,
    /// Top 64 bits of the first entry of each block.
    fences: Vec<u64>,
}

impl Run {
    /// Writes `entries` (sorted) to `path` as a run.
    fn write(path: PathBuf, entries: impl Iterator<Item = Result<Entry>>) -> Result<Run> {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&path).at(&path)?);
        let (mut len, mut fences) = (0usize, Vec::new());
        for x in entries {
            let x = x?;
            if len.is_multiple_of(BLOCK) {
                fences.push(x.top64());
            }
            len += 1;
            out.write_all(&x.to_bytes()).at(&path)?;
        }
        out.into_inner()
            .map_err(|e| crate::Error::io(&path, e.into_error()))?;
        Ok(Run {
            file: File::open(&path).at(&path)?,
            path,
            len,
            fences,
        })
    }

    /// Its entries in order.
    fn entries(&self) -> Result<impl Iterator<Item = Result<Entry>> + '_> {
        let mut r = BufReader::with_capacity(1 << 20, File::open(&self.path).at(&self.path)?);
        let mut c = [0u8; ENTRY];
        Ok((0..self.len).map(move |_| {
            r.read_exact(&mut c).at(&self.path)?;
            Ok(Entry::from_bytes(&c))
        }))
    }

    /// True when it holds an entry with the key of `e` and a day within `lookback` of `day`.
    fn any_within(&self, e: Entry, day: i32, lookback: i32) -> Result<bool> {
        let k = e.top64();
        // Equal keys may straddle a block boundary: start at the block before the first
        // whose fence is not below the key, go on while fences equal it.
        let first = self.fences.partition_point(|&f| f < k).saturating_sub(1);
        let mut buf = [0u8; BLOCK * ENTRY];
        for b in first..self.fences.len() {
            if b > first && self.fences[b] > k {
                break;
            }
            let n = BLOCK.min(self.len - b * BLOCK);
            let bytes = &mut buf[..n * ENTRY];
            self.file
                .read_exact_at(bytes, (b * BLOCK * ENTRY) as u64)
                .at(&self.path)?;
            for c in bytes.chunks_exact(ENTRY) {
                let x = Entry::from_bytes(c);
                if x.order() > e.key_order_max() {
                    return Ok(false);
                }
                if x == e && (x.day() - day).abs() <= lookback {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}

/// Merges sorted entry streams (a heap of each stream's next entry).
fn merge<I: Iterator<Item = Result<Entry>>>(
    mut sources: Vec<I>,
) -> Result<impl Iterator<Item = Result<Entry>>> {
    let mut heap = BinaryHeap::with_capacity(sources.len());
    for (i, s) in sources.iter_mut().enumerate() {
        if let Some(e) = s.next().transpose()? {
            heap.push(Reverse((e.order(), i)));
        }
    }
    Ok(std::iter::from_fn(move || {
        // The smallest is replaced by its stream's next entry in place (one sift-down), or
        // popped when that stream is done.
        let mut top = heap.peek_mut()?;
        let Reverse((order, i)) = *top;
        match sources[i].next().transpose() {
            Ok(Some(e)) => *top = Reverse((e.order(), i)),
            Ok(None) => {
                PeekMut::pop(top);
            }
            Err(err) => {
                drop(top);
                heap.clear();
                return Some(Err(err));
            }
        }
        Some(Ok(Entry::from_order(order)))
    }))
}

impl Spill {
    pub(super) fn new(dir: PathBuf) -> Self {
        Spill {
            dir,
            next: 0,
            runs: Vec::new(),
            bloom: Bloom::with_capacity(0),
        }
    }

    /// Entries on disk.
    pub(super) fn len(&self) -> usize {
        self.runs.iter().map(|r| r.len).sum()
    }

    /// Lengths of the runs on disk, oldest first.
    #[cfg(test)]
    pub(super) fn run_lens(&self) -> Vec<usize> {
        self.runs.iter().map(|r| r.len).collect()
    }

    /// True when an entry with the key of `e` was spilled with a day within `lookback`
    /// days of `day`.
    pub(super) fn any_within(&self, e: Entry, day: i32, lookback: i32) -> Result<bool> {
        if self.runs.is_empty() || !self.bloom.may_contain(e.top64()) {
            return Ok(false);
        }
        for r in &self.runs {
            if r.any_within(e, day, lookback)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn next_path(&mut self) -> PathBuf {
        self.next += 1;
        self.dir.join(format!("run-{:06}.keys", self.next))
    }

    /// Writes `fresh` as a new run (see [`Spill::push_run`]).
    pub(super) fn spill(&mut self, mut fresh: Vec<Entry>) -> Result<()> {
        fresh.sort_unstable_by_key(|e| e.order());
        self.push_run(fresh.len(), fresh.into_iter().map(Ok))
    }

    /// Merges the lake's key files (each sorted, each of one day) straight into a new run:
    /// no hash set, no sort.
    pub(super) fn adopt(&mut self, files: &[(PathBuf, i32, usize)]) -> Result<()> {
        let n = files.iter().map(|f| f.2).sum();
        let mut sources = Vec::with_capacity(files.len());
        for (path, day, len) in files {
            sources.push(super::read_key_file(path, *day, *len)?);
        }
        let merged = merge(sources)?;
        self.push_run(n, merged)
    }

    /// Adds a run written from `entries` (sorted, `n` of them) to the filter and the runs,
    /// then merges runs while the one before the last is not larger than the last.
    fn push_run(&mut self, n: usize, entries: impl Iterator<Item = Result<Entry>>) -> Result<()> {
        fs::create_dir_all(&self.dir).at(&self.dir)?;
        let total = self.len() + n;
        if total > self.bloom.capacity() {
            // Rebuilt from every run: amortised over the doublings, each key is added a
            // constant number of times.
            self.bloom = Bloom::with_capacity(total * 2);
            for r in &self.runs {
                for x in r.entries()? {
                    self.bloom.insert(x?.top64());
                }
            }
        }
        let path = self.next_path();
        let bloom = &mut self.bloom;
        let run = Run::write(
            path,
            entries.inspect(|x| {
                if let Ok(x) = x {
                    bloom.insert(x.top64());
                }
            }),
        )?;
        self.runs.push(run);
        while self.runs.len() >= 2
            && self.runs[self.runs.len() - 2].len <= self.runs[self.runs.len() - 1].len
        {
            let b = self.runs.pop().expect("two runs");
            let a = self.runs.pop().expect("two runs");
            let path = self.next_path();
            let merged = Run::write(path, merge(vec![a.entries()?, b.entries()?])?)?;
            remove(&a.path)?;
            remove(&b.path)?;
            self.runs.push(merged);
        }
        Ok(())
    }
}

fn remove(p: &Path) -> Result<()> {
    fs::remove_file(p).at(p)
}

impl Drop for Spill {
    fn drop(&mut self) {
        for r in &self.runs {
            let _ = fs::remove_file(&r.path);
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

/// A blocked Bloom filter: each key sets 6 bits in one 512-bit block (one cache line).
struct Bloom {
    blocks: Vec<[u64; 8]>,
}

impl Bloom {
    /// ~10 bits per key: about 1 % false positives at `n` keys.
    fn with_capacity(n: usize) -> Self {
        Bloom {
            blocks: vec![[0; 8]; (n * 10).div_ceil(512).max(1)],
        }
    }

    /// Keys it holds at ~1 % false positives.
    fn capacity(&self) -> usize {
        self.blocks.len() * 512 / 10
    }

    /// The key's block (from its top 32 bits) and the 6 bits it sets there (from a mix of
    /// all 64).
    fn probe(&self, k: u64) -> (usize, [u64; 8]) {
        let block = (((k >> 32) * self.blocks.len() as u64) >> 32) as usize;
        let mut h = k ^ (k >> 31);
        h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 29;
        let mut mask = [0u64; 8];
        for _ in 0..6 {
            let bit = (h & 511) as usize;
            mask[bit >> 6] |= 1 << (bit & 63);
            h >>= 9;
        }
        (block, mask)
    }

    fn insert(&mut self, k: u64) {
        let (b, mask) = self.probe(k);
        for (w, m) in self.blocks[b].iter_mut().zip(mask) {
            *w |= m;
        }
    }

    fn may_contain(&self, k: u64) -> bool {
        let (b, mask) = self.probe(k);
        self.blocks[b].iter().zip(mask).all(|(w, m)| w & m == m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README (Dedup) promises at most 1 % false positives. The filter is fullest, and
    /// so worst, when it holds its whole capacity (10 bits per key): measured there, over a
    /// million keys it does not hold (0.96 % at this size).
    #[test]
    fn the_filter_has_no_false_negatives_and_at_most_one_percent_false_positives() {
        let key = |i: u64| (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
        let mut b = Bloom::with_capacity(100_000);
        let n = b.capacity() as u64;
        assert!(n >= 100_000);
        (0..n).for_each(|i| b.insert(key(i)));
        assert!((0..n).all(|i| b.may_contain(key(i))));
        let probes = 1_000_000;
        let fp = (n..n + probes).filter(|&i| b.may_contain(key(i))).count();
        let rate = fp as f64 / probes as f64;
        assert!(rate <= 0.01, "false-positive rate {rate} at capacity");
    }
}
