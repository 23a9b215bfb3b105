//! The dedup index: 128-bit keys of the events in the lake, one file per commit and day.
//!
//! A key is the hash of (scope, id) (see `ingest`). In memory, [`KeySet`] keeps the top 80
//! bits of each key with the UTC day it was seen on, in one hash set: 13 bytes per event
//! (with the set's slack, ~20), so the keys of 10 M events would take ~220 MB. An ingest
//! therefore caps the set ([`KeySet::spilling`]): when it is full, its keys go to sorted
//! runs on disk with a Bloom filter in memory (`spill`), so beyond the cap the index grows
//! by ~2 bytes per key (a 100 M-key window: ~200 MB), not ~20.

mod spill;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

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
        Entry([
            (key >> 96) as u32,
            (key >> 64) as u32,
            ((key >> 48) as u32) << 16,
        ])
        .with_day(day)
    }
    fn day(self) -> i32 {
        (self.0[2] & 0xFFFF) as i32 + DAY_BASE
    }
    fn with_day(self, day: i32) -> Self {
        let d = (day - DAY_BASE).clamp(0, 0xFFFF) as u32;
        Entry([self.0[0], self.0[1], (self.0[2] & !0xFFFF) | d])
    }
    /// The top 64 key bits (uniform: what the spill's filter and block index use).
    fn top64(self) -> u64 {
        (u64::from(self.0[0]) << 32) | u64::from(self.0[1])
    }
    /// Sort order of a spilled run: key bits, then day.
    fn order(self) -> u128 {
        (u128::from(self.top64()) << 32) | u128::from(self.0[2])
    }
    /// The entry whose `order` this is.
    fn from_order(o: u128) -> Self {
        Entry([(o >> 64) as u32, (o >> 32) as u32, o as u32])
    }
    /// The largest `order` an entry with this key can have (whatever its day).
    fn key_order_max(self) -> u128 {
        self.order() | 0xFFFF
    }
    fn to_bytes(self) -> [u8; 12] {
        let mut b = [0u8; 12];
        for (i, w) in self.0.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        b
    }
    fn from_bytes(b: &[u8]) -> Self {
        let w = |i: usize| u32::from_le_bytes(b[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
        Entry([w(0), w(1), w(2)])
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
///
/// An event is a duplicate when its key was seen on any day within the lookback of its
/// own: a key seen on days further apart keeps each of them (`extra`), so the answer does
/// not depend on which entries happen to be in memory or spilled.
pub struct KeySet {
    set: HashSet<Entry, BuildHasherDefault<PassThrough>>,
    /// Earlier days of keys in `set` that were seen again outside the lookback (rare).
    extra: HashMap<Entry, Vec<i32>, BuildHasherDefault<PassThrough>>,
    extra_len: usize,
    /// Most entries held in memory before they spill (`usize::MAX`: never).
    cap: usize,
    spill: Option<spill::Spill>,
}

impl Default for KeySet {
    /// An unbounded in-memory set.
    fn default() -> Self {
        KeySet {
            set: HashSet::default(),
            extra: HashMap::default(),
            extra_len: 0,
            cap: usize::MAX,
            spill: None,
        }
    }
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeySet({} keys)", self.len())
    }
}

impl KeySet {
    /// A set that holds at most about `memory_bytes` in memory (its hash table plus the
    /// sort buffer of a spill) and spills the rest to sorted runs under `dir`.
    pub fn spilling(dir: PathBuf, memory_bytes: usize) -> Self {
        // A table of B buckets costs 13 B each and holds 7/8 B keys; a spill sorts those
        // keys in a 12-byte-per-key buffer: ~23.5 bytes per bucket in all.
        let buckets = (memory_bytes / 24).max(1024);
        let buckets = 1usize << (usize::BITS - 1 - buckets.leading_zeros());
        KeySet {
            cap: buckets / 8 * 7,
            spill: Some(spill::Spill::new(dir)),
            ..KeySet::default()
        }
    }

    /// Number of (key, day) entries held, in memory and spilled.
    pub fn len(&self) -> usize {
        self.set.len() + self.extra_len + self.spilled()
    }

    /// Number of entries spilled to disk.
    pub fn spilled(&self) -> usize {
        self.spill.as_ref().map_or(0, |s| s.len())
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records `key` on `day` unless the same key is already known within `lookback` days
    /// of it; returns true when it was new (the event is not a duplicate).
    ///
    /// Two events with the same id further apart than the lookback are treated as
    /// distinct. The error is a failed read or write of a spilled run.
    pub fn insert_if_new(&mut self, key: u128, day: i32, lookback: i32) -> Result<bool> {
        let e = Entry::new(key, day);
        // Nothing spilled and room in memory (the usual case): a key the set lacks is new,
        // and one probe both finds that out and stores it. Otherwise the set is unchanged.
        if self.set.len() + self.extra_len < self.cap && self.spilled() == 0 && self.set.insert(e) {
            return Ok(true);
        }
        let within = |d: i32| (d - day).abs() <= lookback;
        if let Some(old) = self.set.get(&e) {
            if within(old.day()) {
                return Ok(false);
            }
            if let Some(days) = self.extra.get(&e)
                && days.iter().any(|&d| within(d))
            {
                return Ok(false);
            }
        }
        if let Some(s) = &self.spill
            && s.any_within(e, day, lookback)?
        {
            return Ok(false);
        }
        self.put(e)?;
        Ok(true)
    }

    /// Whether `key` is known on a day within `lookback` days of `day` (what
    /// [`KeySet::insert_if_new`] would answer `false` to), without recording it.
    pub fn seen(&self, key: u128, day: i32, lookback: i32) -> Result<bool> {
        let e = Entry::new(key, day);
        let within = |d: i32| (d - day).abs() <= lookback;
        if let Some(old) = self.set.get(&e) {
            if within(old.day()) {
                return Ok(true);
            }
            if let Some(days) = self.extra.get(&e)
                && days.iter().any(|&d| within(d))
            {
                return Ok(true);
            }
        }
        match &self.spill {
            Some(s) => s.any_within(e, day, lookback),
            None => Ok(false),
        }
    }

    /// Stores `e` in memory, spilling everything held first if memory is full.
    fn put(&mut self, e: Entry) -> Result<()> {
        if self.set.len() + self.extra_len >= self.cap
            && let Some(s) = &mut self.spill
        {
            let mut all: Vec<Entry> = Vec::with_capacity(self.set.len() + self.extra_len);
            all.extend(self.set.drain());
            for (k, days) in self.extra.drain() {
                all.extend(days.into_iter().map(|d| k.with_day(d)));
            }
            self.extra_len = 0;
            s.spill(all)?;
        }
        if let Some(old) = self.set.replace(e)
            && old.day() != e.day()
        {
            let days = self.extra.entry(old).or_default();
            if !days.contains(&old.day()) {
                days.push(old.day());
                self.extra_len += 1;
            }
        }
        Ok(())
    }

    /// Makes room for `n` more keys (an ingest's estimate of its input), so the set is
    /// not rehashed again and again as it grows.
    pub fn reserve(&mut self, n: usize) {
        self.set
            .reserve(n.min(self.cap.saturating_sub(self.set.len())));
    }

    /// Adds keys read from a key file of `day`.
    pub(crate) fn load(&mut self, path: &Path, day: i32) -> Result<()> {
        self.load_files(&[(path.to_path_buf(), day)])
    }

    /// Adds the keys of the lake's key files (path, day). When they do not fit in memory
    /// beside what it holds, they are merged straight into a run on disk (each file is
    /// sorted already); otherwise they go into the in-memory set.
    pub(crate) fn load_files(&mut self, files: &[(PathBuf, i32)]) -> Result<()> {
        let mut sized = Vec::with_capacity(files.len());
        for (p, d) in files {
            let n = fs::metadata(p).at(p)?.len() / 16;
            sized.push((p.clone(), *d, n as usize));
        }
        let total: usize = sized.iter().map(|f| f.2).sum();
        if self.set.len() + self.extra_len + total > self.cap
            && let Some(s) = &mut self.spill
        {
            return s.adopt(&sized);
        }
        self.reserve(total);
        for (path, day, n) in &sized {
            for e in read_key_file(path, *day, *n)? {
                self.put(e?)?;
            }
        }
        Ok(())
    }
}

/// The first `n` keys of a key file of `day`, as entries, in the file's (sorted) order.
fn read_key_file(
    path: &Path,
    day: i32,
    n: usize,
) -> Result<impl Iterator<Item = Result<Entry>> + use<'_>> {
    let mut r = BufReader::with_capacity(1 << 16, fs::File::open(path).at(path)?);
    let mut chunk = [0u8; 16];
    Ok((0..n).map(move |_| {
        r.read_exact(&mut chunk).at(path)?;
        Ok(Entry::new(u128::from_le_bytes(chunk), day))
    }))
}

/// Writes the keys of one day of one commit (sorted, so the file is deterministic).
pub(crate) fn write_key_file(path: &Path, keys: &mut [u128]) -> Result<()> {
    write_key_file_unsynced(path, keys)?.sync_all().at(path)
}

/// [`write_key_file`] without the fsync, for a writer that has its files synced elsewhere
/// ([`crate::lake::log::Syncer`]) before it commits them; returns the file.
pub(crate) fn write_key_file_unsynced(path: &Path, keys: &mut [u128]) -> Result<fs::File> {
    keys.sort_unstable();
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).at(p)?;
    }
    let mut f = std::io::BufWriter::new(fs::File::create(path).at(path)?);
    for k in keys.iter() {
        f.write_all(&k.to_le_bytes()).at(path)?;
    }
    f.into_inner()
        .map_err(|e| crate::Error::io(path, e.into_error()))
}

/// Day number of `_index/date=YYYY-MM-DD/SSSSSSSS.keys`.
pub(crate) fn day_of_key_file(rel: &str) -> Option<i32> {
    let date = rel.split('/').nth(1)?.strip_prefix("date=")?;
    let d = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    Some(crate::time::day_of_date(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn duplicates_only_within_the_lookback() {
        let mut s = KeySet::default();
        let d0 = 20_000;
        let mut new = |k: u128, d: i32| s.insert_if_new(k << 60, d, 35).unwrap();
        assert!(new(42, d0));
        assert!(!new(42, d0 + 35), "35 days later is still a duplicate");
        assert!(!new(42, d0 - 35));
        assert!(new(42, d0 + 36), "outside the lookback it is new");
        assert!(!new(42, d0 + 40), "and now remembered on its new day");
        assert!(!new(42, d0 - 30), "as well as on its first day");
        assert!(new(43, d0));
        assert_eq!(s.len(), 3, "two entries of key 42, one of 43");
    }

    /// The answer a list of everything seen gives: a duplicate when the same key was
    /// seen (in the lake, or kept before) within the lookback of the event's day.
    fn model(lake: &[(u128, i32)], events: &[(u128, i32)], lookback: i32) -> Vec<bool> {
        let mut seen: Vec<(u128, i32)> = lake.to_vec();
        events
            .iter()
            .map(|&(k, d)| {
                let dup = seen
                    .iter()
                    .any(|&(sk, sd)| sk >> 48 == k >> 48 && (sd - d).abs() <= lookback);
                if !dup {
                    seen.push((k, d));
                }
                !dup
            })
            .collect()
    }

    /// Keys from a small pool: many repeats, and some sharing their top 64 bits (`low`
    /// varies bits 48..64 only) so that they fall in the same block of a run.
    fn key(k: u32, low: u8) -> u128 {
        let hi = u128::from(k).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
        (hi & !(0xFFFF_u128 << 48)) | (u128::from(low) << 48)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// A set that spills every ~900 keys answers exactly as the model, and as the
        /// unbounded in-memory set, on keys drawn from a small pool (many repeats, some
        /// sharing their top 64 bits so they fall in the same block of a run).
        #[test]
        fn spilling_set_matches_the_model(
            lake in proptest::collection::vec((0u32..3000, 0u8..4, 20_000i32..20_090), 0..3000),
            events in proptest::collection::vec((0u32..3000, 0u8..4, 20_000i32..20_090), 1..5000),
            lookback in 0i32..40,
        ) {
            let dir = tempfile::tempdir().unwrap();
            // The lake: one key file per day (sorted, each key once), as commits write them.
            let mut by_day: std::collections::BTreeMap<i32, Vec<u128>> = Default::default();
            for &(k, low, d) in &lake {
                by_day.entry(d).or_default().push(key(k, low));
            }
            let mut files = vec![];
            let mut lake = vec![];
            for (d, mut keys) in by_day {
                keys.sort_unstable();
                keys.dedup_by(|a, b| *a >> 48 == *b >> 48);
                lake.extend(keys.iter().map(|&k| (k, d)));
                let p = dir.path().join(format!("{d}.keys"));
                write_key_file(&p, &mut keys).unwrap();
                files.push((p, d));
            }
            let events: Vec<(u128, i32)> =
                events.into_iter().map(|(k, low, d)| (key(k, low), d)).collect();
            let want = model(&lake, &events, lookback);
            let runs_dir = dir.path().join("runs");
            let mut spilling = KeySet::spilling(runs_dir.clone(), 1024 * 24);
            let mut memory = KeySet::default();
            // Loaded all at once (merged into a run when they do not fit) and file by file.
            spilling.load_files(&files).unwrap();
            for (p, d) in &files {
                memory.load(p, *d).unwrap();
            }
            prop_assert_eq!(spilling.len(), lake.len());
            prop_assert_eq!(memory.len(), lake.len());
            for (i, &(k, d)) in events.iter().enumerate() {
                prop_assert_eq!(spilling.seen(k, d, lookback).unwrap(), !want[i], "seen, event {}", i);
                prop_assert_eq!(memory.seen(k, d, lookback).unwrap(), !want[i], "seen, event {}", i);
                prop_assert_eq!(spilling.insert_if_new(k, d, lookback).unwrap(), want[i], "event {}", i);
                prop_assert_eq!(memory.insert_if_new(k, d, lookback).unwrap(), want[i], "event {}", i);
            }
            let kept = lake.len() + want.iter().filter(|&&n| n).count();
            prop_assert_eq!(spilling.len(), kept);
            prop_assert_eq!(memory.len(), kept);
            prop_assert!(kept < 900 || spilling.spilled() > 0, "it spilled");
            // Runs stay few: they merge like a binary counter, each larger than the next.
            let lens = spilling.spill.as_ref().map_or(vec![], |s| s.run_lens());
            prop_assert!(lens.windows(2).all(|w| w[0] > w[1]), "{:?}", lens);
            let spills = spilling.spilled().div_ceil(spilling.cap) + 1;
            prop_assert!(lens.len() <= spills.ilog2() as usize + 2, "{:?}", lens);
            drop(spilling);
            prop_assert!(!runs_dir.exists(), "its runs are deleted with it");
        }
    }
}
