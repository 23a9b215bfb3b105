//! The spilled part of the dedup index: one sorted run of key entries on disk, a Bloom
//! filter over it in memory, and a sparse index of the run's blocks.
//!
//! When the in-memory set of [`KeySet`](super::KeySet) is full, its entries are sorted and
//! merged with the run into a new run, so there is never more than one. A lookup asks the
//! filter first (10 bits per key, ~1 % false positives); only a key it may hold costs a
//! read of one 3 KiB block of the run (`pread`, so the page cache is not counted in the
//! process's memory). Memory is ~1.3 bytes per spilled key instead of ~20.
//!
//! A run lives in the commit's staging directory and is deleted with it (or on drop).

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::Entry;
use crate::error::{IoContext, Result};

/// Entries per block of a run: one block is read per lookup the filter lets through.
const BLOCK: usize = 256;
const ENTRY: usize = 12;

/// Keys written to disk, and how to find them again.
pub(super) struct Spill {
    dir: PathBuf,
    next: u32,
    run: Option<Run>,
    bloom: Bloom,
}

struct Run {
    path: PathBuf,
    file: File,
    len: usize,
    /// Top 64 bits of the first entry of each block.
    fences: Vec<u64>,
}

impl Spill {
    pub(super) fn new(dir: PathBuf) -> Self {
        Spill {
            dir,
            next: 0,
            run: None,
            bloom: Bloom::with_capacity(0),
        }
    }

    /// Entries on disk.
    pub(super) fn len(&self) -> usize {
        self.run.as_ref().map_or(0, |r| r.len)
    }

    /// True when an entry with the key of `e` was spilled with a day within `lookback`
    /// days of `day`.
    pub(super) fn any_within(&self, e: Entry, day: i32, lookback: i32) -> Result<bool> {
        let Some(run) = &self.run else {
            return Ok(false);
        };
        let k = e.top64();
        if !self.bloom.may_contain(k) {
            return Ok(false);
        }
        // Equal keys may straddle a block boundary: start at the block before the first
        // whose fence is not below the key, go on while fences equal it.
        let first = run.fences.partition_point(|&f| f < k).saturating_sub(1);
        let mut buf = [0u8; BLOCK * ENTRY];
        for b in first..run.fences.len() {
            if b > first && run.fences[b] > k {
                break;
            }
            let n = BLOCK.min(run.len - b * BLOCK);
            let bytes = &mut buf[..n * ENTRY];
            run.file
                .read_exact_at(bytes, (b * BLOCK * ENTRY) as u64)
                .at(&run.path)?;
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

    /// Sorts `fresh` and merges it with the current run into a new one.
    pub(super) fn spill(&mut self, mut fresh: Vec<Entry>) -> Result<()> {
        fresh.sort_unstable_by_key(|e| e.order());
        fs::create_dir_all(&self.dir).at(&self.dir)?;
        let path = self.dir.join(format!("run-{:04}.keys", self.next));
        self.next += 1;
        let total = self.len() + fresh.len();
        let mut bloom = Bloom::with_capacity(total);
        let mut fences = Vec::with_capacity(total.div_ceil(BLOCK));
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&path).at(&path)?);
        let mut written = 0usize;
        let mut put = |x: Entry| -> std::io::Result<()> {
            if written.is_multiple_of(BLOCK) {
                fences.push(x.top64());
            }
            bloom.insert(x.top64());
            written += 1;
            out.write_all(&x.to_bytes())
        };
        let mut fresh = fresh.into_iter().peekable();
        if let Some(old) = &self.run {
            let mut r = BufReader::with_capacity(1 << 20, File::open(&old.path).at(&old.path)?);
            let mut c = [0u8; ENTRY];
            for _ in 0..old.len {
                r.read_exact(&mut c).at(&old.path)?;
                let x = Entry::from_bytes(&c);
                while let Some(f) = fresh.next_if(|f| f.order() < x.order()) {
                    put(f).at(&path)?;
                }
                put(x).at(&path)?;
            }
        }
        for f in fresh {
            put(f).at(&path)?;
        }
        let file = out
            .into_inner()
            .map_err(|e| crate::Error::io(&path, e.into_error()))?;
        drop(file);
        if let Some(old) = self.run.take() {
            fs::remove_file(&old.path).at(&old.path)?;
        }
        self.run = Some(Run {
            file: File::open(&path).at(&path)?,
            path,
            len: total,
            fences,
        });
        self.bloom = bloom;
        Ok(())
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        if let Some(r) = &self.run {
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

    /// Block from the key's top 32 bits, bit positions from a mix of all 64.
    fn probe(&self, k: u64) -> (usize, u64) {
        let block = (((k >> 32) * self.blocks.len() as u64) >> 32) as usize;
        let mut h = k ^ (k >> 31);
        h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 29;
        (block, h)
    }

    fn insert(&mut self, k: u64) {
        let (b, mut h) = self.probe(k);
        let block = &mut self.blocks[b];
        for _ in 0..6 {
            let bit = (h & 511) as usize;
            block[bit >> 6] |= 1 << (bit & 63);
            h >>= 9;
        }
    }

    fn may_contain(&self, k: u64) -> bool {
        let (b, mut h) = self.probe(k);
        let block = &self.blocks[b];
        for _ in 0..6 {
            let bit = (h & 511) as usize;
            if block[bit >> 6] & (1 << (bit & 63)) == 0 {
                return false;
            }
            h >>= 9;
        }
        true
    }
}
