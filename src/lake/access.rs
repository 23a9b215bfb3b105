//! The access log: who read which tenant's data, what and when (`_audit/access.jsonl`).
//!
//! One JSON line per read, append-only, in a hash chain: each line carries the SHA-256 of
//! the line before it (`prev`) and its own (`hash`, over the line without it), and
//! `_audit/head` holds the last line's number and hash. So a line deleted, altered or
//! inserted anywhere, or lines cut off the end, break the chain ([`verify`]; `meterlake
//! lake verify-audit`).
//!
//! Writers from several processes (the server, CLI commands) take an exclusive lock on
//! `_audit/_lock` around each append, so the chain stays one line. Each append is synced
//! before the read it records is answered.
//!
//! Tracking and quota checks are not recorded one by one (they are counted in the
//! server's metrics): they are the hot path, and they write rather than read.

use std::io::{BufRead, BufReader, Read as _, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::error::{Error, IoContext, Result};

/// The folder of the access log, under the lake root.
pub const DIR: &str = "_audit";
/// The log file, in [`DIR`].
pub const LOG: &str = "access.jsonl";
/// The file holding the last line's number and hash, in [`DIR`].
pub const HEAD: &str = "head";
/// The `prev` of the first line.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a read was, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Access {
    /// Line number, from 1.
    pub seq: u64,
    /// When (RFC 3339, UTC, microseconds).
    pub at: String,
    /// Who: the OS user or `--actor` for the CLI; the key's principal for the API and the
    /// dashboard.
    pub actor: String,
    /// `cli`, `api` or `dashboard`.
    pub via: String,
    /// The API key's id (API and dashboard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The tenant read, or `*` for all tenants.
    pub tenant: String,
    /// What was read (`GET /api/v1/usage/events`, `invoice --period 2026-09`, ...).
    pub what: String,
    /// The previous line's hash.
    pub prev: String,
}

/// A line as stored: the record and its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    /// The record.
    #[serde(flatten)]
    pub access: Access,
    /// SHA-256 of the record's JSON (without this field).
    pub hash: String,
}

/// A read to record.
#[derive(Debug, Clone, Copy)]
pub struct Read<'a> {
    /// Who.
    pub actor: &'a str,
    /// `cli`, `api` or `dashboard`.
    pub via: &'a str,
    /// The API key's id, if any.
    pub key_id: Option<&'a str>,
    /// The tenant, or `*`.
    pub tenant: &'a str,
    /// What.
    pub what: &'a str,
}

fn hash_of(a: &Access) -> Result<String> {
    let body = serde_json::to_vec(a).map_err(|e| Error::Render(e.to_string()))?;
    Ok(sha2::Sha256::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn dir(lake: &Path) -> PathBuf {
    lake.join(DIR)
}

/// The longest `what` and `actor` kept (longer ones are cut, marked with `...`): a record
/// stays one short line whatever a query string holds.
const MAX_FIELD: usize = 1024;

fn capped(s: &str) -> String {
    if s.len() <= MAX_FIELD {
        return s.to_string();
    }
    let mut end = MAX_FIELD;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Appends one read to the lake's access log (creating it), synced.
pub fn record(lake: &Path, r: Read<'_>) -> Result<()> {
    let d = dir(lake);
    let _lock = super::lock_dir(&d)?;
    append(
        &d,
        Access {
            seq: 0,
            at: crate::time::rfc3339_micros(crate::time::now()),
            actor: capped(r.actor),
            via: r.via.to_string(),
            key_id: r.key_id.map(str::to_string),
            tenant: capped(r.tenant),
            what: capped(r.what),
            prev: String::new(),
        },
    )
}

/// The number of the log's last line (0: none yet).
pub fn head_seq(lake: &Path) -> Result<u64> {
    let d = dir(lake);
    if !d.join(LOG).exists() {
        return Ok(0);
    }
    let _lock = super::lock_dir(&d)?;
    Ok(last(&d)?.0)
}

/// Puts this log's lines after its first `base` bytes (what it last exchanged with the
/// other copy) on top of `theirs`, another copy of the log (on an `s3://` lake, the
/// bucket's, with another machine's appends): each of these lines keeps its time and
/// fields and gets the number, `prev` and hash of its new place. The result replaces the
/// log in one rename, under the log's lock, and `head` follows. Returns the lines
/// replayed.
pub fn rebase(lake: &Path, base: u64, theirs: &[u8]) -> Result<usize> {
    let d = dir(lake);
    let _lock = super::lock_dir(&d)?;
    let log = d.join(LOG);
    // A torn last line was never answered: cut first.
    last(&d)?;
    let mine = match std::fs::read(&log) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).at(&log),
    };
    let ours = mine.get(base as usize..).unwrap_or_default();
    let parse = |text: &[u8], what: &str| -> Result<Vec<Line>> {
        text.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_slice(l).map_err(|e| Error::CorruptLake {
                    path: log.clone(),
                    reason: format!("{what}: {e}"),
                })
            })
            .collect()
    };
    let ours = parse(ours, "a line to replay")?;
    let mut out = theirs.to_vec();
    if !out.is_empty() && out.last() != Some(&b'\n') {
        return Err(Error::CorruptLake {
            path: log.clone(),
            reason: "the other copy ends in a torn line".into(),
        });
    }
    let (mut seq, mut prev) = match parse(theirs, "the other copy")?.last() {
        Some(l) => (l.access.seq, l.hash.clone()),
        None => (0, GENESIS.to_string()),
    };
    for l in &ours {
        let mut access = l.access.clone();
        seq += 1;
        access.seq = seq;
        access.prev = prev;
        let hash = hash_of(&access)?;
        let line = Line {
            access,
            hash: hash.clone(),
        };
        out.extend(serde_json::to_vec(&line).map_err(|e| Error::Render(e.to_string()))?);
        out.push(b'\n');
        prev = hash;
    }
    super::write_whole(&log, &out)?;
    write_head(&d, seq, &prev)?;
    Ok(ours.len())
}

/// Writes `_audit/head` (the last line's number and hash) whole, synced.
fn write_head(d: &Path, seq: u64, hash: &str) -> Result<()> {
    super::write_whole(&d.join(HEAD), format!("{seq} {hash}\n").as_bytes())
}

/// Appends `access` (its `seq` and `prev` set here) to the log in `d`, synced; the
/// caller holds the log's lock.
fn append(d: &Path, mut access: Access) -> Result<()> {
    let (seq, prev) = last(d)?;
    access.seq = seq + 1;
    access.prev = prev;
    let hash = hash_of(&access)?;
    let line = Line { access, hash };
    let mut bytes = serde_json::to_vec(&line).map_err(|e| Error::Render(e.to_string()))?;
    bytes.push(b'\n');
    let log = d.join(LOG);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .at(&log)?;
    crate::fault::write_all("audit.write", &mut f, &bytes).at(&log)?;
    f.sync_data().at(&log)?;
    write_head(d, line.access.seq, &line.hash)
}

/// The last line's number and hash (0 and the genesis hash for an empty log). A torn last
/// line (a crash mid-append) is cut off first: it was never synced, so never answered.
fn last(d: &Path) -> Result<(u64, String)> {
    let log = d.join(LOG);
    let mut f = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&log)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, GENESIS.into())),
        Err(e) => return Err(e).at(&log),
    };
    let len = f.metadata().at(&log)?.len();
    if len == 0 {
        return Ok((0, GENESIS.into()));
    }
    // The tail: lines are short, 64 KiB holds the last whole one.
    let from = len.saturating_sub(64 * 1024);
    f.seek(SeekFrom::Start(from)).at(&log)?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).at(&log)?;
    let mut end = tail.len();
    if tail.last() != Some(&b'\n') {
        // Cut the torn line (records are capped far below the window, so the line before
        // it ends inside the window, unless the torn one is the log's first).
        let keep = match tail.iter().rposition(|b| *b == b'\n') {
            Some(i) => i + 1,
            None if from == 0 => 0,
            None => {
                return Err(Error::CorruptLake {
                    path: log,
                    reason: "the last line is longer than any record".into(),
                });
            }
        };
        f.set_len(from + keep as u64).at(&log)?;
        end = keep;
    }
    let body = &tail[..end];
    let Some(line) = body
        .strip_suffix(b"\n")
        .and_then(|b| b.rsplit(|c| *c == b'\n').next())
        .filter(|l| !l.is_empty())
    else {
        return Ok((0, GENESIS.into()));
    };
    let l: Line = serde_json::from_slice(line).map_err(|e| Error::CorruptLake {
        path: log.clone(),
        reason: format!("last line: {e}"),
    })?;
    Ok((l.access.seq, l.hash))
}

/// Every record of the lake's access log, oldest first.
pub fn read(lake: &Path) -> Result<Vec<Line>> {
    let d = dir(lake);
    let log = d.join(LOG);
    if !log.exists() {
        return Ok(Vec::new());
    }
    // No append half-seen.
    let _lock = super::lock_dir(&d)?;
    read_lines(&log)
}

/// The lines of the log file `log` (none if it does not exist).
fn read_lines(log: &Path) -> Result<Vec<Line>> {
    let log = log.to_path_buf();
    let f = match std::fs::File::open(&log) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).at(&log),
    };
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.at(&log)?;
        if line.is_empty() {
            continue;
        }
        out.push(serde_json::from_str(&line).map_err(|e| Error::CorruptLake {
            path: log.clone(),
            reason: format!("line {}: {e}", i + 1),
        })?);
    }
    Ok(out)
}

/// What [`verify`] found.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    /// Lines read.
    pub lines: u64,
    /// The first break of the chain (line number and what is wrong), if any.
    pub broken: Option<(u64, String)>,
}

/// Checks the chain line by line, and the last line against `_audit/head`.
pub fn verify(lake: &Path) -> Result<Verified> {
    let d = dir(lake);
    let log = d.join(LOG);
    // No append half-seen (an empty lake gets no folder).
    let _lock = if d.is_dir() {
        Some(super::lock_dir(&d)?)
    } else {
        None
    };
    let text = match std::fs::read_to_string(&log) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).at(&log),
    };
    let mut prev = GENESIS.to_string();
    let mut before_last = String::new();
    let mut n = 0u64;
    let broken = |n: u64, why: String| {
        Ok(Verified {
            lines: n,
            broken: Some((n, why)),
        })
    };
    for raw in text.lines() {
        n += 1;
        let l: Line = match serde_json::from_str(raw) {
            Ok(l) => l,
            Err(e) => return broken(n, format!("not a record: {e}")),
        };
        if l.access.seq != n {
            return broken(
                n,
                format!(
                    "numbered {} (a line before it was removed or added)",
                    l.access.seq
                ),
            );
        }
        if l.access.prev != prev {
            return broken(n, "does not follow the line before it".into());
        }
        if hash_of(&l.access)? != l.hash {
            return broken(n, "altered: its hash does not match its content".into());
        }
        before_last = std::mem::replace(&mut prev, l.hash);
    }
    let head = std::fs::read_to_string(d.join(HEAD)).unwrap_or_default();
    let want = if n == 0 {
        String::new()
    } else {
        format!("{n} {prev}")
    };
    // A crash between a line's append and the head's update leaves the head one line
    // behind, naming the line before: that is not a cut.
    let lagging = (n > 1 && head.trim() == format!("{} {before_last}", n - 1))
        || (n == 1 && head.trim().is_empty());
    if head.trim() != want && !lagging {
        return broken(
            n,
            format!(
                "the log ends at line {n} but its head records `{}` (lines cut off the end)",
                head.trim()
            ),
        );
    }
    Ok(Verified {
        lines: n,
        broken: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_by(lake: &Path, who: &str) {
        record(
            lake,
            Read {
                actor: who,
                via: "cli",
                key_id: None,
                tenant: "acme",
                what: "invoice --period 2026-09",
            },
        )
        .unwrap();
    }

    /// Two copies of a log that went apart after line 2 (two machines): rebasing one on
    /// the other keeps every record of both, the other's first, and the chain verifies.
    #[test]
    fn a_rebase_replays_our_lines_on_theirs_and_the_chain_holds() {
        let (ours, theirs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for who in ["ann", "bob"] {
            read_by(ours.path(), who);
        }
        std::fs::create_dir_all(theirs.path().join(DIR)).unwrap();
        for f in [LOG, HEAD] {
            std::fs::copy(
                ours.path().join(DIR).join(f),
                theirs.path().join(DIR).join(f),
            )
            .unwrap();
        }
        assert_eq!(head_seq(ours.path()).unwrap(), 2);
        let base = std::fs::metadata(ours.path().join(DIR).join(LOG))
            .unwrap()
            .len();
        for who in ["cy", "dee"] {
            read_by(ours.path(), who);
        }
        for who in ["eve", "fay", "gus"] {
            read_by(theirs.path(), who);
        }
        let theirs_log = std::fs::read(theirs.path().join(DIR).join(LOG)).unwrap();
        let replayed = rebase(ours.path(), base, &theirs_log).unwrap();
        assert_eq!(replayed, 2);
        let actors: Vec<String> = read(ours.path())
            .unwrap()
            .into_iter()
            .map(|l| l.access.actor)
            .collect();
        assert_eq!(actors, ["ann", "bob", "eve", "fay", "gus", "cy", "dee"]);
        let v = verify(ours.path()).unwrap();
        assert_eq!((v.lines, v.broken), (7, None));
        assert_eq!(head_seq(ours.path()).unwrap(), 7);
    }

    #[test]
    fn the_chain_detects_a_removed_an_altered_and_a_cut_line() {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path();
        assert_eq!(verify(lake).unwrap().lines, 0);
        for who in ["ann", "bob", "cy", "dee"] {
            read_by(lake, who);
        }
        let v = verify(lake).unwrap();
        assert_eq!((v.lines, v.broken.clone()), (4, None));
        assert_eq!(read(lake).unwrap()[2].access.actor, "cy");
        let log = lake.join(DIR).join(LOG);
        let good = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = good.lines().collect();
        let cases = [
            (
                "removed",
                format!("{}\n{}\n{}\n", lines[0], lines[2], lines[3]),
                2,
            ),
            (
                "altered",
                good.replacen("\"actor\":\"bob\"", "\"actor\":\"eve\"", 1),
                2,
            ),
            (
                "cut",
                format!("{}\n{}\n{}\n", lines[0], lines[1], lines[2]),
                3,
            ),
        ];
        for (what, text, at) in cases {
            std::fs::write(&log, text).unwrap();
            let v = verify(lake).unwrap();
            assert_eq!(v.broken.as_ref().map(|b| b.0), Some(at), "{what}: {v:?}");
        }
        std::fs::write(&log, &good).unwrap();
        assert!(verify(lake).unwrap().broken.is_none());
        // A torn last line (a crash mid-append) is cut, and the chain goes on.
        std::fs::write(&log, format!("{good}{{\"seq\":5,\"at")).unwrap();
        read_by(lake, "fay");
        let v = verify(lake).unwrap();
        assert_eq!((v.lines, v.broken), (5, None));
    }
}
