//! `meterlake retention`: drops (or archives) expired event partitions and rollup
//! partitions.
//!
//! The expired event files leave the lake in one commit that carries the audit record (who,
//! what, when, how many rows), so a reader sees the lake before or after, never half, and
//! nothing is removed without its record. The commit records the whole decision (events and
//! rollups) before any rollup directory goes; a re-run finishes an interrupted one.
//!
//! Event partitions that may hold events of a period not invoiced yet are kept, even when
//! expired, unless forced ([`RetentionOptions::keep_from`]): an invoice must be issued from
//! complete data.
//!
//! A retention of 0 days keeps everything, as `retention_days = 0` does in the
//! configuration (it never means "drop all before today").

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{IoContext, Result};
use crate::lake::{Audit, Commit, CommitKind, DataFile, Lake};
use crate::time::{MICROS_PER_DAY, date_str};

/// What `retention` keeps.
#[derive(Debug, Clone, Default)]
pub struct RetentionOptions {
    /// Keep event partitions of the last N days (none or 0: keep all).
    pub events_days: Option<u32>,
    /// Keep rollup partitions of the last N days (none or 0: keep all).
    pub rollups_days: Option<u32>,
    /// Copy expired event files here before dropping them.
    pub archive: Option<PathBuf>,
    /// Days are counted back from this instant (UTC µs).
    pub now: i64,
    /// Who asks.
    pub actor: String,
    /// Event partitions on or after this day (`YYYY-MM-DD`) may hold events of periods not
    /// invoiced yet ([`crate::stage::invoices::Register::unbilled_from`]; `""`: every
    /// day): they are kept even when expired, unless `force`.
    pub keep_from: Option<String>,
    /// Event partitions before this day may hold events of periods never invoiced (before
    /// the first issued month, [`crate::stage::invoices::Register::billed_from`]): kept as
    /// `keep_from`'s, unless `force`.
    pub keep_before: Option<String>,
    /// Drop expired partitions of periods not invoiced yet too (noted in the audit record).
    pub force: bool,
}

/// What `retention` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetentionSummary {
    /// Event partitions (dates) dropped.
    pub event_partitions: Vec<String>,
    /// Event rows dropped.
    pub event_rows: u64,
    /// Event files archived (paths in the archive).
    pub archived: Vec<String>,
    /// Rollup partitions dropped.
    pub rollup_partitions: u64,
    /// Expired event partitions kept because their periods are not invoiced yet.
    pub kept_unbilled: Vec<String>,
    /// Expired event partitions of periods not invoiced yet, dropped because forced.
    pub forced_unbilled: Vec<String>,
    /// The commit.
    pub commit: Option<u64>,
}

/// Drops (or archives) event partitions older than `events_days` and rollup partitions
/// older than `rollups_days` (0 or none: keep all). Event partitions go in one commit with its audit record;
/// rollup partitions are removed directory by directory (each a rename, then a delete).
pub fn retention(lake_dir: &Path, opts: &RetentionOptions) -> Result<RetentionSummary> {
    // 0 days keeps all, as in the configuration.
    let opts = &RetentionOptions {
        events_days: opts.events_days.filter(|d| *d > 0),
        rollups_days: opts.rollups_days.filter(|d| *d > 0),
        ..opts.clone()
    };
    let mut lake = Lake::open_for_write(lake_dir)?;
    let mut s = RetentionSummary::default();
    let today = opts.now.div_euclid(MICROS_PER_DAY);
    let cutoff = |days: u32| date_str((today - days as i64) * MICROS_PER_DAY);
    let mut expired: Vec<DataFile> = match opts.events_days {
        Some(d) => lake
            .data_files()
            .into_iter()
            .filter(|f| f.date < cutoff(d))
            .collect(),
        None => Vec::new(),
    };
    if opts.keep_from.is_some() || opts.keep_before.is_some() {
        let unbilled_day = |d: &str| {
            opts.keep_from.as_deref().is_some_and(|from| d >= from)
                || opts.keep_before.as_deref().is_some_and(|before| d < before)
        };
        let unbilled: BTreeSet<String> = expired
            .iter()
            .filter(|f| unbilled_day(&f.date))
            .map(|f| f.date.clone())
            .collect();
        if opts.force {
            s.forced_unbilled = unbilled.into_iter().collect();
        } else {
            expired.retain(|f| !unbilled_day(&f.date));
            s.kept_unbilled = unbilled.into_iter().collect();
        }
    }
    let rollups: Vec<PathBuf> = match opts.rollups_days {
        Some(d) => partition_dirs(&lake_dir.join(crate::rollup::ROLLUPS_DIR))?
            .into_iter()
            .filter(|p| rollup_partition_ends_by(p, &cutoff(d)))
            .collect(),
        None => Vec::new(),
    };
    if expired.is_empty() && rollups.is_empty() {
        return Ok(s);
    }
    if let Some(dir) = &opts.archive {
        archive_privacy(lake.root(), dir)?;
        lake.fetch(&expired)?;
        for f in &expired {
            let dst = dir.join(&f.path);
            let parent = dst.parent().expect("relative path has a parent");
            std::fs::create_dir_all(parent).at(parent)?;
            let tmp = crate::stage::tables::temp_path(&dst);
            std::fs::copy(lake.root().join(&f.path), &tmp).at(&tmp)?;
            std::fs::File::open(&tmp)
                .and_then(|h| h.sync_all())
                .at(&tmp)?;
            std::fs::rename(&tmp, &dst).at(&dst)?;
            s.archived.push(dst.display().to_string());
        }
    }
    let dates: BTreeSet<String> = expired.iter().map(|f| f.date.clone()).collect();
    s.event_rows = expired.iter().map(|f| f.rows).sum();
    s.event_partitions = dates.into_iter().collect();
    s.rollup_partitions = rollups.len() as u64;
    let mut target = Vec::new();
    if let Some(d) = opts.events_days {
        target.push(format!("events before {} ({d} days)", cutoff(d)));
    }
    if let Some(d) = opts.rollups_days {
        target.push(format!("rollups ending by {} ({d} days)", cutoff(d)));
    }
    // The commit records the whole decision (events and rollups) before any rollup
    // directory goes, so nothing is removed unrecorded; a re-run finishes an interrupted one.
    let seq = lake.next_seq();
    lake.stage_dir(seq)?;
    // Rollups keep their own history (their retention is separate), so the dropped dates
    // are not marked for recomputation (no `partitions`).
    lake.commit(Commit {
        removed: expired.iter().map(|f| f.path.clone()).collect(),
        audit: Some(Audit {
            actor: opts.actor.clone(),
            action: "retention".into(),
            target: target.join("; "),
            rows: s.event_rows,
            detail: format!(
                "{} event partitions ({} files){}; {} rollup partitions{}",
                s.event_partitions.len(),
                expired.len(),
                opts.archive
                    .as_ref()
                    .map(|a| format!(", archived to {}", a.display()))
                    .unwrap_or_default(),
                rollups.len(),
                if s.forced_unbilled.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; forced: {} partitions of periods not invoiced yet",
                        s.forced_unbilled.len()
                    )
                }
            ),
            subject: None,
        }),
        ..Commit::new(seq, CommitKind::Retention)
    })?;
    s.commit = Some(seq);
    for dir in rollups {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let trash = dir.with_file_name(format!(".expired-{name}"));
        std::fs::rename(&dir, &trash).at(&dir)?;
        std::fs::remove_dir_all(&trash).at(&trash)?;
    }
    Ok(s)
}

/// Whether a rollup partition (`.../granularity=G/.../period=YYYY-MM-DD`) holds only
/// windows that end by `cutoff` (a day or hour partition is one day; a week seven days; a
/// month one month).
fn rollup_partition_ends_by(dir: &Path, cutoff: &str) -> bool {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let Some(start) = name
        .strip_prefix("period=")
        .and_then(|p| chrono::NaiveDate::parse_from_str(p, "%Y-%m-%d").ok())
    else {
        return false;
    };
    let Ok(cut) = chrono::NaiveDate::parse_from_str(cutoff, "%Y-%m-%d") else {
        return false;
    };
    let path = dir.to_string_lossy();
    let end = if path.contains("granularity=month") {
        start.checked_add_months(chrono::Months::new(1))
    } else if path.contains("granularity=week") {
        start.checked_add_days(chrono::Days::new(7))
    } else {
        start.checked_add_days(chrono::Days::new(1))
    };
    end.is_some_and(|e| e <= cut)
}

/// Every `period=` directory under the rollups.
pub(super) fn partition_dirs(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !root.is_dir() {
        return Ok(out);
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).at(&d)? {
            let p = e.at(&d)?.path();
            if p.is_dir() {
                if p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("period="))
                {
                    out.push(p);
                } else {
                    stack.push(p);
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Copies the lake's pseudonymisation record into the archive (`_privacy.json`), so a
/// restore can tell whose pseudonyms it holds; refuses an archive that already holds
/// another lake's (pseudonyms of two keys, or raw ids and pseudonyms, in one archive).
fn archive_privacy(lake: &std::path::Path, archive: &std::path::Path) -> Result<()> {
    use crate::lake::privacy::{PRIVACY_FILE, lake_key_id};
    let (l, a) = (lake_key_id(lake)?, lake_key_id(archive)?);
    if l != a && (a.is_some() || archive.join(crate::lake::EVENTS_DIR).is_dir()) {
        return Err(crate::error::Error::InvalidParameter {
            name: "--archive",
            reason: format!(
                "{} holds events of another kind of user id ({}) than the lake's ({}): archive to another folder",
                archive.display(),
                a.as_deref()
                    .map_or("raw ids".to_string(), |k| format!("pseudonyms, key {k}")),
                l.as_deref()
                    .map_or("raw ids".to_string(), |k| format!("pseudonyms, key {k}")),
            ),
        });
    }
    if l.is_some() && a.is_none() {
        std::fs::create_dir_all(archive).at(archive)?;
        let src = lake.join(PRIVACY_FILE);
        let text = std::fs::read_to_string(&src).at(&src)?;
        crate::lake::write_whole(&archive.join(PRIVACY_FILE), text.as_bytes())?;
    }
    Ok(())
}
