//! `meterlake lake rekey --new-key-file F`: every Parquet file of the lake (events,
//! rollups, derived tables, stored reports) rewritten under a new encryption key, or
//! encrypted for the first time when the lake was plain.
//!
//! Each file is rewritten on its own, through a synced temporary file renamed over it, so
//! at every instant it is whole under the old key or under the new one; the footer of
//! each names its key ([`crate::lake::crypto`]). A rekey killed midway is finished by
//! running it again with the same keys: files already under the new key are skipped. No
//! writer may run meanwhile: `rekey` holds the lake's write lock and the server's log lock
//! (a running server would go on writing files under the old key).
//!
//! The commit log is not rewritten: it keeps the sizes files had when they were committed,
//! so `lake stats` reports sizes that differ from the rewritten files' by the encryption's
//! overhead (a few dozen bytes per column chunk).
//!
//! Stored API reports in formats other than Parquet are sealed whole under the new key.
//!
//! The quarantine and the server's log segments (sealed line by line, see
//! [`crypto::seal_line`]) are resealed under the new key too, each file atomically; a
//! segment the lake already committed is removed instead. Archives written by
//! `retention --archive` and exports outside the lake keep the key they were written with.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{IoContext, Result};
use crate::lake::Lake;
use crate::lake::crypto::{self, Key};

/// The suffix of a rekey's temporary files (`part-1.parquet.rekey-tmp`).
const REKEY_TEMP: &str = ".rekey-tmp";

/// What `rekey` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RekeySummary {
    /// The key files are now encrypted with.
    pub key_id: String,
    /// The keys files were found under before (`plain`: not encrypted).
    pub previous: Vec<String>,
    /// Parquet files of the lake.
    pub files: u64,
    /// Rewritten now.
    pub rewritten: u64,
    /// Already under the new key (an earlier, interrupted rekey).
    pub already: u64,
    /// Rows rewritten.
    pub rows: u64,
    /// Quarantined records and logged events (line-sealed files) rewritten.
    pub lines: u64,
    /// Stored API reports (not Parquet) resealed whole.
    pub reports: u64,
    /// Server log segments already committed to the lake, removed rather than rewritten
    /// (a rewritten copy would not be recognised as committed).
    pub committed_segments_removed: u64,
}

/// Every Parquet file under the lake, but staged commits and temporary files.
fn parquet_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).at(&d)? {
            let p = e.at(&d)?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if p.is_dir() {
                if name != "_staging" {
                    stack.push(p);
                }
            } else if name.ends_with(REKEY_TEMP) {
                // A temporary file of an interrupted rekey (never the file itself; another
                // writer's temporary files are left to it).
                std::fs::remove_file(&p).at(&p)?;
            } else if name.ends_with(".parquet") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Rewrites every Parquet file of the lake under `new` (reading them with `new` or any of
/// `old`).
pub fn rekey(lake_dir: &Path, new: Key, old: Vec<Key>) -> Result<RekeySummary> {
    let _log = super::forget::lock_log(lake_dir)?;
    let lake = Lake::open_for_write_any_key(lake_dir)?;
    // The lake's marker must name a key this rekey reads with; it names the new key from
    // now on, so a writer still configured with the old key is refused rather than adding
    // files the rekey has already passed.
    if let Some(want) = crypto::lake_key_id(lake_dir)?
        && want != new.id()
        && !old.iter().any(|k| k.id() == want)
    {
        return Err(crate::error::Error::InvalidParameter {
            name: "security.encryption_key_file",
            reason: format!(
                "the lake {} is encrypted with key {want} ({}), which is neither the configured key ({}) \
                 nor the new one ({}): configure the lake's current key to rekey it",
                lake_dir.display(),
                crypto::MARKER_FILE,
                old.first().map_or("none", |k| k.id()),
                new.id()
            ),
        });
    }
    // Every writer of rollups, derived tables and stored reports waits while the rekey
    // runs (and is refused after it if it still has the old key).
    let _derived = crate::lake::lock_exclusive(&lake_dir.join(crate::lake::DERIVED_LOCK))?;
    crypto::use_keys(Some(new.clone()), old);
    crypto::mark_lake(lake_dir, new.id())?;
    // Every event file is rewritten: a mirror that reads them in the bucket fetches them.
    lake.fetch(&lake.data_files())?;
    let files = parquet_files(lake.root())?;
    let mut s = RekeySummary {
        key_id: new.id().to_string(),
        files: files.len() as u64,
        ..RekeySummary::default()
    };
    let ids: Vec<Option<String>> = files
        .iter()
        .map(|f| crypto::key_id_of(f))
        .collect::<Result<_>>()?;
    let mut previous: Vec<String> = ids
        .iter()
        .map(|i| i.clone().unwrap_or_else(|| "plain".into()))
        .filter(|i| i != new.id())
        .collect();
    previous.sort();
    previous.dedup();
    s.previous = previous;
    let todo: Vec<&PathBuf> = files
        .iter()
        .zip(&ids)
        .filter(|(_, id)| id.as_deref() != Some(new.id()))
        .map(|(f, _)| f)
        .collect();
    s.already = s.files - todo.len() as u64;
    let rows: Vec<u64> = todo
        .par_iter()
        .map(|f| -> Result<u64> {
            let mut tmp = f.as_os_str().to_owned();
            tmp.push(REKEY_TEMP);
            let rows = crypto::rewrite(f, Path::new(&tmp))?;
            // Test hook: a crash between two files (`MLK_FAULTS`, `rekey.file=abort`).
            crate::fault::check("rekey.file").at(f)?;
            Ok(rows)
        })
        .collect::<Result<_>>()?;
    let mut dirs: Vec<PathBuf> = todo
        .iter()
        .filter_map(|f| f.parent().map(Path::to_path_buf))
        .collect();
    dirs.sort();
    dirs.dedup();
    for d in &dirs {
        crate::lake::sync_dir(d)?;
    }
    s.rewritten = rows.len() as u64;
    s.rows = rows.iter().sum();
    // The line-sealed files: the quarantine, and the server's log segments not committed.
    let mut qdirs = std::collections::BTreeSet::new();
    for q in lake.quarantine_files() {
        let p = lake.root().join(q);
        if p.is_file() {
            s.lines += reseal(&p)?;
            qdirs.extend(p.parent().map(Path::to_path_buf));
        }
    }
    for d in &qdirs {
        crate::lake::sync_dir(d)?;
    }
    // Stored API reports in other formats than Parquet, sealed whole.
    let reports = lake.root().join(crate::report::API_REPORTS_DIR);
    if reports.is_dir() {
        for t in std::fs::read_dir(&reports).at(&reports)? {
            let t = t.at(&reports)?.path();
            if !t.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(&t).at(&t)? {
                let f = f.at(&t)?.path();
                let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                if f.is_file() && !name.starts_with('.') && !name.ends_with(".parquet") {
                    crypto::seal_file(&f)?;
                    s.reports += 1;
                }
            }
            crate::lake::sync_dir(&t)?;
        }
    }
    let committed: std::collections::HashSet<&str> = lake.ingested_inputs().into_keys().collect();
    let wal = lake.root().join(super::forget::LOG_DIR);
    for seg in super::forget::log_segments(&wal)? {
        let bytes = std::fs::read(&seg).at(&seg)?;
        let sum = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&bytes));
        if committed.contains(sum.as_str()) {
            std::fs::remove_file(&seg).at(&seg)?;
            s.committed_segments_removed += 1;
        } else {
            s.lines += reseal(&seg)?;
        }
    }
    crate::lake::sync_dir(&wal).or_else(|e| if wal.is_dir() { Err(e) } else { Ok(()) })?;
    Ok(s)
}

/// Rewrites a file of sealed (or plain) lines under the write key, atomically; a line
/// that does not open (a torn append, never acknowledged) is dropped. Returns the lines.
fn reseal(path: &Path) -> Result<u64> {
    let bytes = std::fs::read(path).at(path)?;
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 3);
    let mut n = 0;
    for line in bytes.split(|b| *b == b'\n') {
        if line.is_empty() {
            continue;
        }
        if let Some(plain) = crypto::open_line(path, line)? {
            out.extend_from_slice(&crypto::seal_line(&plain)?);
            out.push(b'\n');
            n += 1;
        }
    }
    crate::stage::tables::atomic_write(path, &out)?;
    Ok(n)
}

/// Points the configuration file at the new key file: the `encryption_key_file` line of
/// its `[security]` section replaced (or added). Other lines are kept as they are.
pub fn point_config_at(config: &Path, key_file: &Path) -> Result<()> {
    let text = std::fs::read_to_string(config).at(config)?;
    let line = format!(
        "encryption_key_file = {}",
        toml::Value::String(key_file.display().to_string())
    );
    let mut out = Vec::new();
    let (mut section, mut done) = (String::new(), false);
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        let t = l.trim();
        if t.starts_with('[') {
            if section == "[security]" && !done {
                out.push(line.clone());
                done = true;
            }
            section = t.to_string();
        }
        if section == "[security]" && !done && t.starts_with("encryption_key_file") {
            out.push(line.clone());
            done = true;
            continue;
        }
        out.push(l.to_string());
        if lines.peek().is_none() && section == "[security]" && !done {
            out.push(line.clone());
            done = true;
        }
    }
    if !done {
        out.push(String::new());
        out.push("[security]".into());
        out.push(line);
    }
    let mut new = out.join("\n");
    new.push('\n');
    // Still a valid configuration, or nothing is written.
    toml::from_str::<crate::config::Config>(&new).map_err(|e| crate::error::Error::BadInput {
        path: config.to_path_buf(),
        reason: format!("pointing it at the new key would break it: {e}"),
    })?;
    crate::stage::tables::atomic_write(config, new.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_points_at_the_new_key() {
        let d = tempfile::tempdir().unwrap();
        let c = d.path().join("m.toml");
        let k = Path::new("/keys/new.key");
        for (before, want) in [
            (
                "[security]\nencryption_key_file = \"/keys/old.key\"\n\n[privacy]\npseudonymise_users = false\n",
                "[security]\nencryption_key_file = \"/keys/new.key\"\n\n[privacy]\npseudonymise_users = false\n",
            ),
            (
                "[security]\n# a comment\n[privacy]\n",
                "[security]\n# a comment\nencryption_key_file = \"/keys/new.key\"\n[privacy]\n",
            ),
            (
                "[forecast]\nhorizon = 7\n",
                "[forecast]\nhorizon = 7\n\n[security]\nencryption_key_file = \"/keys/new.key\"\n",
            ),
            (
                "[security]\n",
                "[security]\nencryption_key_file = \"/keys/new.key\"\n",
            ),
        ] {
            std::fs::write(&c, before).unwrap();
            point_config_at(&c, k).unwrap();
            assert_eq!(
                std::fs::read_to_string(&c).unwrap(),
                want,
                "from {before:?}"
            );
        }
    }
}
