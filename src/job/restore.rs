//! `meterlake restore`: brings archived event partitions (what `retention --archive` wrote)
//! back into the lake.
//!
//! The archive holds the lake's own files (`ARCHIVE/events/date=D/part-*.parquet`). Every
//! archived event of the chosen days is read back; one that the lake already holds (same
//! tenant and id on that day), or that appears twice in the archive, is skipped, so a
//! restore run twice restores nothing the second time. What is left is written as new
//! files of one commit, which carries the audit record and marks the restored days, so a
//! reader sees all of it or none, and every later stage recomputes exactly those days; the
//! rollups already in the lake are brought up to date before `restore` returns.
//!
//! What `forget` erased stays erased: an archived event of a tenant, or of a user, that a
//! `forget` commit names, from before that commit, is not restored (counted as
//! `forgotten`). On a pseudonymised lake
//! the archive holds pseudonyms already (it holds the lake's own files); an archive with
//! raw user ids in a pseudonymised lake is refused rather than mixed in.
//!
//! The restored events' dedup keys are added to the index (keyed by tenant and id, as an
//! ingest keys an event with no CloudEvents `source`), so re-ingesting the same events
//! afterwards finds them. The archive itself is only read.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::event::UsageEvent;
use crate::lake::keys::write_key_file;
use crate::lake::{
    Audit, Commit, CommitKind, DataFile, EVENTS_DIR, Lake, read_events, write_events,
};
use crate::rollup::{Meters, RollupOptions, RollupSpec, rollup};

/// What to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The archive folder (`retention --archive DIR`).
    pub archive: PathBuf,
    /// First day to restore (`YYYY-MM-DD`, inclusive; none: the archive's first).
    pub from: Option<String>,
    /// Last day to restore (inclusive; none: the archive's last).
    pub to: Option<String>,
    /// Who asks.
    pub actor: String,
    /// Meter definitions used to bring rollups up to date afterwards.
    pub meters: Option<PathBuf>,
}

/// What `restore` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreSummary {
    /// Archived files read.
    pub archived_files: u64,
    /// Archived events read.
    pub read: u64,
    /// Events brought back.
    pub restored: u64,
    /// Events skipped because the lake (or the archive, earlier) already held them.
    pub duplicates: u64,
    /// Events skipped because `forget` erased their tenant or user after they were archived.
    pub forgotten: u64,
    /// Days restored into.
    pub partitions: Vec<String>,
    /// Rollups brought up to date.
    pub rollups_refreshed: u64,
    /// The commit (none when nothing was new).
    pub commit: Option<u64>,
}

fn check_day(name: &'static str, d: &Option<String>) -> Result<()> {
    if let Some(d) = d
        && chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_err()
    {
        return Err(Error::InvalidParameter {
            name,
            reason: format!("`{d}` is not a day YYYY-MM-DD"),
        });
    }
    Ok(())
}

/// The archive's event files by day (`events/date=D/*.parquet`), within [from, to].
fn archived_files(opts: &RestoreOptions) -> Result<BTreeMap<String, Vec<PathBuf>>> {
    let root = opts.archive.join(EVENTS_DIR);
    if !root.is_dir() {
        return Err(Error::InvalidParameter {
            name: "--archive",
            reason: format!(
                "{} holds no archived events (no {EVENTS_DIR}/ folder; `retention --archive` writes one)",
                opts.archive.display()
            ),
        });
    }
    let mut out: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for e in fs::read_dir(&root).at(&root)? {
        let p = e.at(&root)?.path();
        let Some(day) = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("date="))
            .filter(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok())
            .map(str::to_string)
        else {
            continue;
        };
        if opts.from.as_ref().is_some_and(|f| day < *f)
            || opts.to.as_ref().is_some_and(|t| day > *t)
        {
            continue;
        }
        let mut files = Vec::new();
        for f in fs::read_dir(&p).at(&p)? {
            let f = f.at(&p)?.path();
            if f.extension().is_some_and(|x| x == "parquet") {
                files.push(f);
            }
        }
        files.sort();
        if !files.is_empty() {
            out.insert(day, files);
        }
    }
    Ok(out)
}

/// Brings the archived events of the chosen days back into the lake, in one commit.
pub fn restore(lake_dir: &Path, opts: &RestoreOptions) -> Result<RestoreSummary> {
    check_day("--from", &opts.from)?;
    check_day("--to", &opts.to)?;
    let days = archived_files(opts)?;
    let mut lake = Lake::open_for_write(lake_dir)?;
    let mut s = RestoreSummary {
        archived_files: days.values().map(|f| f.len() as u64).sum(),
        ..RestoreSummary::default()
    };
    let seq = lake.next_seq();
    let stage = lake.stage_dir(seq)?;
    let root = lake.root().to_path_buf();
    let lake_files: Vec<_> = lake
        .data_files()
        .into_iter()
        .filter(|f| days.contains_key(&f.date))
        .collect();
    lake.fetch(&lake_files)?;
    check_archive_privacy(lake_dir, &opts.archive)?;
    let erased = lake.forgotten_after(0)?;
    let pseudonymised = crate::lake::privacy::lake_key_id(lake_dir)?.is_some();
    // Per day: read the archive and the lake's files of that day, keep what is new.
    let per_day: Vec<(String, u64, u64, Vec<UsageEvent>)> = days
        .par_iter()
        .map(|(day, files)| -> Result<(String, u64, u64, Vec<UsageEvent>)> {
            let mut held: HashSet<(String, String)> = HashSet::new();
            for f in lake_files.iter().filter(|f| f.date == *day) {
                for e in read_events(&root.join(&f.path))? {
                    held.insert((e.tenant_id, e.id));
                }
            }
            let (mut read, mut gone) = (0u64, 0u64);
            let mut new = Vec::new();
            for f in files {
                for e in read_events(f)? {
                    read += 1;
                    if crate::time::date_str(e.ts) != *day {
                        return Err(Error::BadInput {
                            path: f.clone(),
                            reason: format!(
                                "event {} of tenant {} falls on {}, not on the file's day {day}",
                                e.id,
                                e.tenant_id,
                                crate::time::date_str(e.ts)
                            ),
                        });
                    }
                    if pseudonymised
                        && e.user_id.as_deref().is_some_and(|u| !crate::lake::privacy::is_pseudonym(u))
                    {
                        return Err(Error::BadInput {
                            path: f.clone(),
                            reason: format!(
                                "event {} of tenant {} has a raw user id, and the lake keeps pseudonyms only; \
                                 this archive predates pseudonymisation (restore it into a lake without [privacy], \
                                 or re-ingest its events through `ingest`, which pseudonymises them)",
                                e.id, e.tenant_id
                            ),
                        });
                    }
                    if erased
                        .iter()
                        .any(|(s, at)| e.ts < *at && s.covers(&e.tenant_id, e.user_id.as_deref()))
                    {
                        gone += 1;
                        continue;
                    }
                    if held.insert((e.tenant_id.clone(), e.id.clone())) {
                        new.push(e);
                    }
                }
            }
            Ok((day.clone(), read, gone, new))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut added = Vec::new();
    let mut keys = Vec::new();
    let mut partitions = BTreeSet::new();
    for (n, (day, read, gone, events)) in per_day.into_iter().enumerate() {
        s.read += read;
        s.forgotten += gone;
        s.duplicates += read - gone - events.len() as u64;
        if events.is_empty() {
            continue;
        }
        s.restored += events.len() as u64;
        let rel = Lake::data_file_path(&day, seq, n as u32);
        let w = write_events(&stage.join(&rel), &events)?;
        added.push(DataFile {
            path: rel,
            date: day.clone(),
            rows: w.rows,
            bytes: w.bytes,
            value_sum: w.value_sum,
            exact: Some(crate::lake::ExactSum::of(&w)),
        });
        let mut k: Vec<u128> = events
            .iter()
            .map(|e| crate::ingest::record::dedup_key(&e.tenant_id, &e.id))
            .collect();
        let krel = Lake::key_file_path(&day, seq);
        let kpath = stage.join(&krel);
        fs::create_dir_all(kpath.parent().expect("has parent")).at(&kpath)?;
        write_key_file(&kpath, &mut k)?;
        keys.push(krel);
        partitions.insert(day);
    }
    s.partitions = partitions.into_iter().collect();
    if s.restored == 0 {
        // Nothing new: no commit (the staging directory is an aborted commit, cleaned up).
        fs::remove_dir_all(&stage).at(&stage)?;
        return Ok(s);
    }
    let span = match (s.partitions.first(), s.partitions.last()) {
        (Some(a), Some(b)) => format!("{a} .. {b}"),
        _ => String::new(),
    };
    lake.commit(Commit {
        added,
        keys,
        partitions: s.partitions.clone(),
        audit: Some(Audit {
            actor: opts.actor.clone(),
            action: "restore".into(),
            target: format!("events {span} from {}", opts.archive.display()),
            rows: s.restored,
            detail: format!(
                "{} archived files read, {} events; {} restored into {} partitions, {} already in the lake, {} of forgotten tenants or users left out",
                s.archived_files,
                s.read,
                s.restored,
                s.partitions.len(),
                s.duplicates,
                s.forgotten
            ),
            subject: None,
        }),
        ..Commit::new(seq, CommitKind::Restore)
    })?;
    s.commit = Some(seq);
    // Aggregates of those days are recomputed now (the commit marked them).
    let meters = Meters::load_or_default(opts.meters.as_deref())?;
    for dir in super::forget::rollup_dirs(lake_dir)? {
        if let Some(spec) = RollupSpec::from_relative_dir(&dir) {
            // Every shard in turn when the rollup is sharded: it stays sharded.
            rollup(&lake, &meters, &spec, &RollupOptions::default())?;
            s.rollups_refreshed += 1;
        }
    }
    Ok(s)
}

/// Checks that the archive's user ids are the lake's kind: pseudonyms under the same key
/// (the archive's `_privacy.json`, written by `retention --archive`), or raw ids in both.
/// Archives written before the marker was copied are checked event by event instead.
fn check_archive_privacy(lake_dir: &Path, archive: &Path) -> Result<()> {
    use crate::lake::privacy::lake_key_id;
    match (lake_key_id(lake_dir)?, lake_key_id(archive)?) {
        (Some(l), Some(a)) if l != a => Err(Error::InvalidParameter {
            name: "--archive",
            reason: format!(
                "{} holds user ids pseudonymised with key {a}, the lake {} uses key {l}: \
                 they would never match the lake's users",
                archive.display(),
                lake_dir.display()
            ),
        }),
        (None, Some(a)) => Err(Error::InvalidParameter {
            name: "--archive",
            reason: format!(
                "{} holds pseudonymised user ids (key {a}) and the lake {} keeps raw ids: \
                 restore it into a lake pseudonymised with that key",
                archive.display(),
                lake_dir.display()
            ),
        }),
        _ => Ok(()),
    }
}
