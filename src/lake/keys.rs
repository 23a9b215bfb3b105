//! The dedup index: 128-bit keys of the events in the lake, one file per commit and day.
//!
//! A key is the hash of (scope, id) (see `ingest`). In memory, [`KeySet`] keeps the top 80
//! bits of each key with the UTC day it was seen on, in one hash set: 13 bytes per event
//! (with the set's slack, ~20), so the keys of 10 M events take ~220 MB.

use std::collections::HashSet;
use std::fs;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, Result};

/// Day numbers are stored relative to 2000-01-01 (day 10957) in 16 bits: until year 2179.
const DAY_BASE: i32 = 10_957;

/// A key entry in 12 bytes: the top 80 bits of the 128-bit key, then 16 bits of day.
/// Equality and hashing look at the key bits only, so a lookup finds the entry whatever
/// day it was stored with. 80 bits keep accidental collisions negligible (≈ n²/2⁸¹: one
/// in 10⁸ for 100 M events in one window) while cutting the index by a quarter.
#[derive(Clone, Copy)]
struct Entry([u32; 3]);

impl Entry {
    fn new(key: u128, day: i32) -> Self {
        let d = (day - DAY_BASE).clamp(0, 0xFFFF) as u32;
        Entry([
            (key >> 96) as u32,
            (key >> 64) as u32,
            (((key >> 48) as u32) << 16) | d,
        ])
    }
    fn day(self) -> i32 {
        (self.0[2] & 0xFFFF) as i32 + DAY_BASE
    }
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        self.0[0] == o.0[0] && self.0[1] == o.0[1] && (self.0[2] >> 16) == (o.0[2] >> 16)
    }
}
impl Eq for Entry {}
impl Hash for Entry {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u64((u64::from(self.0[0]) << 32) | u64::from(self.0[1]));
    }
}

/// The keys are already uniform hashes: hashing them again is wasted time.
#[derive(Default)]
struct PassThrough(u64);
impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Keys seen, each with the day it was seen on.
#[derive(Default)]
pub struct KeySet {
    set: HashSet<Entry, BuildHasherDefault<PassThrough>>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeySet({} keys)", self.set.len())
    }
}

impl KeySet {
    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Records `key` on `day` unless the same key is already known within `lookback` days
    /// of it; returns true when it was new (the event is not a duplicate).
    ///
    /// A key seen on two days further apart than the lookback keeps the later insertion's
    /// day: two events with the same id months apart are treated as distinct.
    pub fn insert_if_new(&mut self, key: u128, day: i32, lookback: i32) -> bool {
        let e = Entry::new(key, day);
        match self.set.get(&e) {
            Some(old) if (old.day() - day).abs() <= lookback => false,
            Some(_) => {
                self.set.replace(e);
                true
            }
            None => {
                self.set.insert(e);
                true
            }
        }
    }

    /// Makes room for `n` more keys (an ingest's estimate of its input), so the set is
    /// not rehashed again and again as it grows.
    pub fn reserve(&mut self, n: usize) {
        self.set.reserve(n);
    }

    /// Adds keys read from a key file of `day`.
    pub(crate) fn load(&mut self, path: &Path, day: i32) -> Result<()> {
        let bytes = fs::read(path).at(path)?;
        self.set.reserve(bytes.len() / 16);
        for chunk in bytes.chunks_exact(16) {
            let k = u128::from_le_bytes(chunk.try_into().expect("16 bytes"));
            self.set.replace(Entry::new(k, day));
        }
        Ok(())
    }
}

/// Writes the keys of one day of one commit (sorted, so the file is deterministic).
pub(crate) fn write_key_file(path: &Path, keys: &mut [u128]) -> Result<()> {
    keys.sort_unstable();
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).at(p)?;
    }
    let mut f = std::io::BufWriter::new(fs::File::create(path).at(path)?);
    for k in keys.iter() {
        f.write_all(&k.to_le_bytes()).at(path)?;
    }
    let f = f
        .into_inner()
        .map_err(|e| crate::Error::io(path, e.into_error()))?;
    f.sync_all().at(path)
}

/// Day number of `_index/date=YYYY-MM-DD/SSSSSSSS.keys`.
pub(crate) fn day_of_key_file(rel: &str) -> Option<i32> {
    let date = rel.split('/').nth(1)?.strip_prefix("date=")?;
    let d = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    Some(crate::event::day_of_date(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_only_within_the_lookback() {
        let mut s = KeySet::default();
        let d0 = 20_000;
        assert!(s.insert_if_new(42 << 60, d0, 35));
        assert!(
            !s.insert_if_new(42 << 60, d0 + 35, 35),
            "35 days later is still a duplicate"
        );
        assert!(!s.insert_if_new(42 << 60, d0 - 35, 35));
        assert!(
            s.insert_if_new(42 << 60, d0 + 36, 35),
            "outside the lookback it is new"
        );
        assert!(
            !s.insert_if_new(42 << 60, d0 + 40, 35),
            "and now remembered on its new day"
        );
        assert!(s.insert_if_new(43 << 60, d0, 35));
        assert_eq!(s.len(), 2);
    }
}
