//! The lake on S3-compatible object storage (`s3://bucket/prefix`), through `object_store`.
//!
//! A command works on a **mirror**: a local copy of the lake under the cache folder
//! (`MLK_LAKE_CACHE`, else `$XDG_CACHE_HOME/meterlake/lakes`, else `~/.cache/...`), kept
//! with a manifest of what was fetched (size, ETag, local mtime).
//!
//! 1. [`Mirror::pull`] lists the bucket and fetches what changed since the last pull,
//!    deletes what is gone, and finishes any commit whose publication was cut short.
//! 2. The command runs on the mirror as on any local lake, with the same code.
//! 3. [`Mirror::push`] sends back what the command changed. Each new commit:
//!    1. its files go to `_staging/SSSSSSSS-TOKEN/` (a token of this push);
//!    2. `_log/SSSSSSSS.json` is put **only if absent** (`If-None-Match: *`). This put is
//!       the commit point on object storage, as the rename is on a local disk. The log
//!       object names the token in its metadata;
//!    3. the staged files are copied to their places, the files the commit removes are
//!       deleted, and the staging objects after them.
//!
//!    Files beside the events (rollups, tables, the access log) are put only if they are
//!    unchanged since the pull (`If-Match: ETAG`), or only if absent when new.
//!
//! A writer that loses a race (the log entry exists, or a file changed under it) gets
//! [`Pushed::Conflict`]: the caller pulls again, which brings the winner's commit and
//! its dedup keys, and runs the command again, so dedup is checked against what landed.
//! Nothing is lost (the loser commits after), nothing counts twice (its second run
//! dedups against the first), and a reader never sees a half-published commit: readers
//! list files from the log, and a pull finishes publication before the mirror is used.
//!
//! **Events read in place** (the default; `MLK_LAKE_EVENTS=fetch` mirrors them too): a
//! pull fetches everything but the event files, which stay in the bucket. meterlake's
//! scans read them there with polars' cloud scans ([`super::scan_files`]), next to the
//! event files this command wrote and has not sent; a command that needs a file whole
//! (compaction, `forget`, `export`, an archive) fetches it first ([`fetch_in_place`]), and
//! the mirror's manifest takes it in at the next pull or push. The mirror's lake folder
//! then holds [`IN_PLACE`], naming the bucket.
//!
//! A `kill -9` at any instant leaves staging objects (deleted by the next pull once their
//! sequence number is decided), a committed but unpublished commit (finished by the next
//! pull), or a mirror with unpushed changes (reset by the next pull: only what reached
//! the bucket counts). Commit files are never deleted from the bucket, so a sequence
//! number once taken stays taken.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjPath;
use object_store::{
    Attribute, Attributes, ObjectStore, ObjectStoreExt, PutMode, PutOptions, UpdateVersion,
};
use serde::{Deserialize, Serialize};

use super::checkpoint::HISTORY_DIR;
use super::log::{Commit, log_name, read_commit};
use super::{LOG_DIR, STAGING_DIR};
use crate::error::{Error, IoContext, Result};

/// In a mirror's lake folder: the lake moves the files a commit removes to
/// [`REMOVED_DIR`] instead of deleting them, so that a push can still send a file an
/// earlier commit of the same push added. Emptied by every pull and push.
pub(crate) const KEEP_REMOVED: &str = ".keep-removed";
/// Where a mirror's lake keeps removed files until the next push.
pub(crate) const REMOVED_DIR: &str = ".removed";

/// In a mirror's lake folder whose event files are read in place: the lake's URL.
pub(crate) const IN_PLACE: &str = ".in-place";
/// In such a folder: the event files a command fetched whole ([`fetch_in_place`]), one
/// `PATH<TAB>ETAG<TAB>SIZE<TAB>MTIME` line each (as fetched), for the mirror's manifest.
const FETCHED: &str = ".fetched";
/// How a command's mirror holds the event files: `scan` (read in place, the default) or
/// `fetch` (copied into the mirror, as every other file).
pub const EVENTS_ENV: &str = "MLK_LAKE_EVENTS";

/// Whether commands read the event files of an `s3://` lake in place ([`EVENTS_ENV`]).
pub fn events_in_place() -> Result<bool> {
    match std::env::var(EVENTS_ENV).ok().as_deref() {
        None | Some("" | "scan") => Ok(true),
        Some("fetch") => Ok(false),
        Some(other) => Err(Error::InvalidParameter {
            name: EVENTS_ENV,
            reason: format!(
                "`{other}`: expected `scan` (read in the bucket) or `fetch` (mirrored)"
            ),
        }),
    }
}

/// The bucket location of the lake whose mirror folder is `root`, when its event files
/// are read in place; `None` for any other lake.
pub fn in_place(root: &Path) -> Option<S3Url> {
    let text = fs::read_to_string(root.join(IN_PLACE)).ok()?;
    parse_location(Path::new(text.trim()), "lake")
        .ok()
        .flatten()
}

/// The object URL of `rel` (relative to the lake) in the bucket.
pub fn object_url(url: &S3Url, rel: &str) -> String {
    format!("{url}/{rel}")
}

/// An event file the mirror leaves in the bucket when it reads events in place.
fn read_in_place(rel: &str) -> bool {
    rel.starts_with(&format!("{}/", super::EVENTS_DIR)) && rel.ends_with(".parquet")
}

/// Fetches into the lake at `root` those of `rels` (relative paths) it does not hold,
/// when `root` is a mirror reading event files in place; nothing otherwise. For a
/// command that reads files whole rather than through a scan.
pub fn fetch_in_place(root: &Path, rels: &[&str]) -> Result<()> {
    let Some(url) = in_place(root) else {
        return Ok(());
    };
    let missing: Vec<String> = rels
        .iter()
        .filter(|r| !root.join(r).exists())
        .map(|r| r.to_string())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let store: Arc<dyn ObjectStore> = Arc::new(store_of(&url)?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .at(root)?;
    let got = download(&rt, &store, &url, root, missing)?;
    let mut lines = String::new();
    for (rel, e) in &got {
        let etag = e.etag.as_deref().unwrap_or("");
        lines.push_str(&format!("{rel}\t{etag}\t{}\t{}\n", e.size, e.mtime));
    }
    use std::io::Write;
    let path = root.join(FETCHED);
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(lines.as_bytes()))
        .at(&path)?;
    tracing::debug!(files = got.len(), "fetched event files to read whole");
    Ok(())
}

/// A client of `url`'s bucket, configured by the usual AWS environment variables.
fn store_of(url: &S3Url) -> Result<object_store::aws::AmazonS3> {
    AmazonS3Builder::from_env()
        .with_bucket_name(&url.bucket)
        .build()
        .map_err(|e| remote(url, "", e))
}

/// Where servers on an `s3://` lake say they run: `_servers/ID.json`, rewritten at each
/// flush, deleted when the server stops. Their logs are on their own machines, so
/// `forget` refuses while one is fresh ([`live_servers`]).
pub const SERVERS_DIR: &str = "_servers";
/// A server's note older than this (seconds) is taken as a server that is gone.
pub const SERVER_FRESH_SECS: i64 = 300;

/// Writes (or refreshes) server `id`'s note in the lake at `root`.
pub fn note_server(root: &Path, id: &str) -> Result<()> {
    let path = root.join(SERVERS_DIR).join(format!("{id}.json"));
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    let text = format!(
        "{{\"at\":{},\"pid\":{},\"host\":{}}}\n",
        crate::time::now() / crate::time::MICROS_PER_SECOND,
        std::process::id(),
        serde_json::to_string(&host).unwrap_or_else(|_| "\"\"".into())
    );
    write_local(&path, text.as_bytes())
}

/// Removes server `id`'s note (sent as a deletion by the next push).
pub fn unnote_server(root: &Path, id: &str) {
    let _ = fs::remove_file(root.join(SERVERS_DIR).join(format!("{id}.json")));
}

/// The servers whose note in the lake at `root` is fresh: `(id, seconds since)`.
pub fn live_servers(root: &Path) -> Result<Vec<(String, i64)>> {
    let dir = root.join(SERVERS_DIR);
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::Io {
                path: dir,
                source: e,
            });
        }
    };
    let now = crate::time::now() / crate::time::MICROS_PER_SECOND;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.at(&dir)?;
        let path = entry.path();
        let Some(id) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        let at = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["at"].as_i64());
        if let Some(at) = at
            && now - at <= SERVER_FRESH_SECS
        {
            out.push((id, now - at));
        }
    }
    out.sort();
    Ok(out)
}

/// Requests in flight at once while fetching or sending files.
const PARALLEL: usize = 16;

/// Tries of a request that is the same sent once or again ([`again`]).
const TRIES: u32 = 4;

/// Runs `op`, and again (up to `tries` in all, after 50, 100, 200 ms, ...) while it fails
/// with a transport error the store's client gave up on ([`Transient`]), and not after
/// [`AGAIN_WITHIN`]: for requests whose repeat does what one does, whoever else writes
/// the bucket (a put or bulk delete of this push's own staging objects, a copy, a read).
/// The client repeats a request that could not be sent, but not one whose answer was cut
/// midway (a multipart upload's creation, a bulk delete's result, a body being read): on
/// a flaky network one such cut failed the whole command, which then staged and sent every
/// file again. A conditional put (the log's commit point) is never repeated here: its
/// repeat could fail on its own success, and the command's rerun already handles that.
async fn again<T, E, F, Fut>(tries: u32, mut op: F) -> std::result::Result<T, E>
where
    E: Transient + std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, E>>,
{
    let start = std::time::Instant::now();
    let mut tried = 1;
    loop {
        match op().await {
            Err(e) if tried < tries && e.transient() && start.elapsed() < AGAIN_WITHIN => {
                tracing::debug!(error = %e, tried, "repeating a request whose answer was cut");
                tokio::time::sleep(std::time::Duration::from_millis(50 << (tried - 1))).await;
                tried += 1;
            }
            r => return r,
        }
    }
}

/// [`again`] starts no repeat this long after the first try: a store that stays
/// unreachable fails the command in about the client's own time, not four times it.
const AGAIN_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether an error may pass if the same request is sent again ([`again`]).
trait Transient {
    fn transient(&self) -> bool;
}

impl Transient for object_store::Error {
    /// A transport failure the client does not repeat itself: an answer cut or garbled
    /// midway, a request interrupted or timed out. Not a refusal (not found, a failed
    /// condition, no permission, a 4xx or 5xx status, a failed key of a bulk delete), not
    /// a connection that could not be made (the client's retries gave up on it already),
    /// not a local file's error.
    fn transient(&self) -> bool {
        use object_store::client::{HttpError, HttpErrorKind};
        let mut e: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(x) = e {
            if let Some(h) = x.downcast_ref::<HttpError>() {
                return !matches!(h.kind(), HttpErrorKind::Connect | HttpErrorKind::Request);
            }
            e = x.source();
        }
        false
    }
}

/// Whether `obj` is a staging object (`_staging/...`): only this push writes it.
fn is_staged(obj: &str) -> bool {
    obj.strip_prefix(STAGING_DIR)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// Tries of a put of `obj` with `mode` ([`again`]): an overwrite of a staging object may
/// be repeated; any other put once (a repeated overwrite of a shared object could undo
/// another writer's put made in between; a conditional put could fail on its own success).
fn put_tries(obj: &str, mode: &PutMode) -> u32 {
    match mode {
        PutMode::Overwrite if is_staged(obj) => TRIES,
        _ => 1,
    }
}

/// The log object's metadata key naming the staging token of its commit.
const TOKEN_KEY: &str = "meterlake-staging";

/// An `s3://bucket/prefix` lake location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    /// The bucket.
    pub bucket: String,
    /// The key prefix, without leading or trailing `/` (may be empty).
    pub prefix: String,
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// What a lake location names: `None` for a local path, the bucket and prefix for
/// `s3://` (or `s3a://`), and an error naming `name` for any other URL scheme.
pub fn parse_location(root: &Path, name: &'static str) -> Result<Option<S3Url>> {
    let text = root.to_string_lossy();
    let Some((scheme, rest)) = text.split_once("://") else {
        return Ok(None);
    };
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return Ok(None);
    }
    if !matches!(scheme, "s3" | "s3a") {
        return Err(Error::InvalidParameter {
            name,
            reason: format!(
                "`{text}`: `{scheme}://` is not supported; a lake is a local directory or s3://bucket/prefix"
            ),
        });
    }
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let prefix = prefix.trim_matches('/');
    if bucket.is_empty() || prefix.split('/').any(|p| p == "." || p == "..") {
        return Err(Error::InvalidParameter {
            name,
            reason: format!("`{text}`: expected s3://bucket/prefix"),
        });
    }
    Ok(Some(S3Url {
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
    }))
}

/// One file as the manifest remembers it: what the bucket held, and the local copy's
/// size and mtime when it was fetched or sent (a different local file was changed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    size: u64,
    #[serde(default)]
    etag: Option<String>,
    mtime: u128,
}

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushSummary {
    /// Commits made in the bucket.
    pub commits: u64,
    /// Files put (staged commit files counted once).
    pub files: u64,
    /// Files deleted.
    pub deleted: u64,
}

/// The outcome of [`Mirror::push`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// Everything the command changed is in the bucket.
    Done(PushSummary),
    /// Another writer got there first (the object named): pull and run again.
    Conflict(String),
}

/// A local mirror of an S3 lake, held exclusively by this process while it lives.
pub struct Mirror {
    url: S3Url,
    store: Arc<dyn ObjectStore>,
    dir: PathBuf,
    root: PathBuf,
    manifest: BTreeMap<String, Entry>,
    /// The bucket's last commit at the last pull: commits after it are this mirror's.
    last_seq: u64,
    /// Event files stay in the bucket ([`IN_PLACE`]).
    in_place: bool,
    rt: tokio::runtime::Runtime,
    _lock: fs::File,
}

impl Mirror {
    /// Opens the mirror of `url` (creating it), connecting with the usual AWS environment
    /// variables (`AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, `AWS_ACCESS_KEY_ID`, ...). Waits
    /// for another process on this machine using the same mirror.
    pub fn open(url: &S3Url) -> Result<Mirror> {
        let store = store_of(url)?;
        let endpoint = std::env::var("AWS_ENDPOINT_URL")
            .or_else(|_| std::env::var("AWS_ENDPOINT"))
            .unwrap_or_default();
        let dir = cache_root().join(format!(
            "{}-{:016x}",
            sanitize(&format!("{}_{}", url.bucket, url.prefix)),
            xxhash_rust::xxh3::xxh3_64(format!("{endpoint}\n{url}").as_bytes())
        ));
        fs::create_dir_all(&dir).at(&dir)?;
        let lock = match super::try_lock_exclusive(&dir.join("lock"))? {
            Some(l) => l,
            None => {
                // A server holds its mirror for its lifetime: say why this waits.
                eprintln!(
                    "{url}: another meterlake process on this machine uses the mirror {} \
                     (a server keeps it); waiting. Give this one its own MLK_LAKE_CACHE to run both.",
                    dir.display()
                );
                super::lock_exclusive(&dir.join("lock"))?
            }
        };
        let root = dir.join("lake");
        fs::create_dir_all(&root).at(&root)?;
        let keep = root.join(KEEP_REMOVED);
        fs::write(&keep, b"").at(&keep)?;
        let manifest_path = dir.join("manifest.json");
        let manifest = match fs::read(&manifest_path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
            Err(_) => BTreeMap::new(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .at(&dir)?;
        Ok(Mirror {
            url: url.clone(),
            store: Arc::new(store),
            dir,
            root,
            manifest,
            last_seq: 0,
            in_place: false,
            rt,
            _lock: lock,
        })
    }

    /// Leaves the event files in the bucket from the next pull on, for commands that read
    /// them with cloud scans (see the module's docs); a server mirrors them.
    pub fn read_events_in_place(&mut self, yes: bool) {
        self.in_place = yes;
    }

    /// Whether a command's failure may come from another writer: the mirror reads event
    /// files in the bucket, and a commit was made there since the pull (one that removed a
    /// file the command was reading, as a compaction or a `forget` does). The caller pulls
    /// and runs the command again.
    pub fn moved_under_a_read(&self) -> Result<bool> {
        Ok(self.in_place && self.exists(&format!("{LOG_DIR}/{}", log_name(self.last_seq + 1)))?)
    }

    /// The mirror's lake folder, which the command works on.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The lake's location in the bucket.
    pub fn url(&self) -> &S3Url {
        &self.url
    }

    fn key(&self, rel: &str) -> ObjPath {
        key_of(&self.url, rel)
    }

    fn err(&self, rel: &str, e: object_store::Error) -> Error {
        remote(&self.url, rel, e)
    }

    /// Brings the mirror to the bucket's state: finishes cut-short publications, fetches
    /// new and changed files, deletes local files the bucket does not hold (including
    /// anything an earlier command changed but did not push) and old staging objects.
    pub fn pull(&mut self) -> Result<()> {
        self.pull_with(false)
    }

    /// [`Mirror::pull`] for a process that keeps running on the mirror (`serve`): files
    /// beside the events that it wrote and has not sent yet are kept (the next
    /// [`Mirror::push_server`] sends them); the events, keys, quarantine and log are
    /// brought to the bucket's state all the same.
    pub fn pull_server(&mut self) -> Result<()> {
        self.pull_with(true)
    }

    fn pull_with(&mut self, keep_local: bool) -> Result<()> {
        self.pull_attempt(keep_local, 0)
    }

    fn pull_attempt(&mut self, keep_local: bool, attempt: u32) -> Result<()> {
        self.take_in_fetched()?;
        let mut listing = self.list("")?;
        let staging: BTreeMap<String, object_store::ObjectMeta> = listing
            .iter()
            .filter(|(rel, _)| rel.starts_with(&format!("{STAGING_DIR}/")))
            .map(|(r, m)| (r.clone(), m.clone()))
            .collect();
        listing.retain(|rel, _| !ignored(rel));
        // Commit files a checkpoint covers are read from `_history/` (where the checkpoint's
        // writer sent them); their `_log/` copies, kept so that a number stays taken, are
        // not fetched.
        let base = listing
            .keys()
            .filter_map(|r| checkpoint_seq(r))
            .max()
            .unwrap_or(0);
        // Fetch what is new or changed (by ETag), or whose local copy was touched.
        let mut wanted = Vec::new();
        let mut rebase_log = false;
        for (rel, meta) in &listing {
            if log_seq(rel).is_some_and(|s| s <= base) {
                continue;
            }
            let local = self.root.join(rel);
            let stamp = local_stamp(&local);
            let known = self.manifest.get(rel);
            let fresh = known.is_some_and(|e| {
                e.etag == meta.e_tag && e.size == meta.size && stamp == Some((e.size, e.mtime))
            });
            // A server's access log takes the bucket's lines under its own (below).
            if keep_local && rel.starts_with(&format!("{}/", super::access::DIR)) {
                if rel == &audit_files().0 && !fresh_etag(known, meta) {
                    rebase_log = true;
                }
                continue;
            }
            // Written here since and not sent yet.
            let mine = keep_local
                && !core(rel)
                && stamp.is_some()
                && known.is_none_or(|e| stamp != Some((e.size, e.mtime)));
            if !fresh && !mine {
                wanted.push(rel.clone());
            }
        }
        self.bring(&wanted)?;
        if rebase_log {
            self.rebase_access_log()?;
        }
        // Delete local files the bucket does not hold, and the local staging and locks' debris.
        let _ = fs::remove_dir_all(self.root.join(STAGING_DIR));
        let _ = fs::remove_dir_all(self.root.join(REMOVED_DIR));
        for rel in local_files(&self.root)? {
            let mine = keep_local && !core(&rel) && !self.manifest.contains_key(&rel);
            // A `_log/` copy a checkpoint covers stays only if it is the bucket's (a losing
            // commit of ours under that number must not reach `_history/` later).
            let stale_log = log_seq(&rel).is_some_and(|s| s <= base)
                && listing.contains_key(&rel)
                && !self.manifest_is_stale(&rel);
            let keep = (listing.contains_key(&rel) && log_seq(&rel).is_none_or(|s| s > base))
                || (keep_local && rel.starts_with(&format!("{}/", super::access::DIR)));
            if !keep && !mine && !stale_log {
                let p = self.root.join(&rel);
                fs::remove_file(&p).at(&p)?;
            }
        }
        self.manifest.retain(|rel, _| listing.contains_key(rel));
        // What stays here unsent keeps the ETag it was fetched with: if the bucket's copy
        // changed since, the push's condition fails and the server takes theirs.
        // Finish commits whose files are not all in place, then drop decided staging.
        let Some(last) = self.finish_publication(&listing, base)? else {
            if attempt >= 3 {
                return Err(Error::CorruptLake {
                    path: PathBuf::from(self.url.to_string()),
                    reason: "a commit's files are missing from the bucket, and not staged".into(),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(200 << attempt));
            return self.pull_attempt(keep_local, attempt + 1);
        };
        let old: Vec<String> = staging
            .keys()
            .filter(|rel| staged_seq(rel).is_some_and(|s| s <= last))
            .cloned()
            .collect();
        self.delete_all(&old)?;
        // Every commit the listing shows, wherever it saw it, is the bucket's.
        let listed = listing
            .keys()
            .filter_map(|r| {
                log_seq(r)
                    .or_else(|| history_seq(r))
                    .or_else(|| checkpoint_seq(r))
            })
            .max()
            .unwrap_or(0);
        self.last_seq = last.max(listed);
        let marker = self.root.join(IN_PLACE);
        if self.in_place {
            write_local(&marker, self.url.to_string().as_bytes())?;
        } else {
            let _ = fs::remove_file(&marker);
        }
        self.save_manifest()
    }

    /// Fetches `rels` into the mirror and records them, but for the event files of a
    /// mirror reading them in place: those stay in the bucket, and a local copy of one
    /// (written by a commit that lost its race) is deleted.
    fn bring(&mut self, rels: &[String]) -> Result<()> {
        let (stay, wanted): (Vec<String>, Vec<String>) = rels
            .iter()
            .cloned()
            .partition(|r| self.in_place && read_in_place(r));
        for rel in stay {
            let p = self.root.join(&rel);
            match fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(p, e)),
                _ => {}
            }
            self.manifest.remove(&rel);
        }
        for (rel, entry) in self.fetch(&wanted)? {
            self.manifest.insert(rel, entry);
        }
        Ok(())
    }

    /// Records the event files commands fetched whole ([`fetch_in_place`]) as the bucket's
    /// copies, so that they are neither sent back nor fetched again.
    fn take_in_fetched(&mut self) -> Result<()> {
        let path = self.root.join(FETCHED);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(path, e)),
        };
        for line in text.lines() {
            // A line cut by a kill names a file the next pull deletes (unknown here).
            let mut f = line.split('\t');
            let (Some(rel), Some(etag), Some(size), Some(mtime)) =
                (f.next(), f.next(), f.next(), f.next())
            else {
                continue;
            };
            let (Ok(size), Ok(mtime)) = (size.parse(), mtime.parse()) else {
                continue;
            };
            // The stamp it had when fetched: a command that rewrote it since (`lake
            // rekey`) leaves a changed file, which the push sends.
            if self.root.join(rel).is_file() {
                let etag = (!etag.is_empty()).then(|| etag.to_string());
                self.manifest
                    .insert(rel.to_string(), Entry { size, etag, mtime });
            }
        }
        fs::remove_file(&path).at(&path)
    }

    /// Every object under `dir` (relative to the lake; "" for all), by path relative to
    /// the lake.
    fn list(&self, dir: &str) -> Result<BTreeMap<String, object_store::ObjectMeta>> {
        use futures_util::TryStreamExt;
        let key = self.key(dir.trim_end_matches('/'));
        let prefix = if self.url.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.url.prefix)
        };
        let store = self.store.clone();
        let metas: Vec<object_store::ObjectMeta> = self
            .rt
            .block_on(again(TRIES, || {
                let p = (!key.as_ref().is_empty()).then_some(&key);
                store.list(p).try_collect()
            }))
            .map_err(|e| self.err(dir, e))?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let rel = m.location.as_ref().strip_prefix(&prefix)?.to_string();
                Some((rel, m))
            })
            .collect())
    }

    /// Downloads `rels` into the mirror (temp file, rename), returning their entries.
    fn fetch(&self, rels: &[String]) -> Result<Vec<(String, Entry)>> {
        // Commit files last, so that a reader of the mirror meanwhile sees no commit
        // before its files.
        let (logs, files): (Vec<String>, Vec<String>) = rels
            .iter()
            .cloned()
            .partition(|r| r.starts_with(&format!("{LOG_DIR}/")));
        let mut out = download(&self.rt, &self.store, &self.url, &self.root, files)?;
        out.extend(download(
            &self.rt,
            &self.store,
            &self.url,
            &self.root,
            logs,
        )?);
        Ok(out)
    }

    /// Checks the commits readers read (those after `base`, the newest checkpoint): a commit whose
    /// files are not all in the bucket was cut short after its commit point and is
    /// published from its staging objects; files a commit removes that are still there are
    /// deleted. Returns the last committed sequence number, or `None` when a commit's files
    /// are missing with nothing staged: the listing caught a publication midway (a listing
    /// is not a snapshot), and the caller lists again.
    fn finish_publication(
        &mut self,
        listing: &BTreeMap<String, object_store::ObjectMeta>,
        base: u64,
    ) -> Result<Option<u64>> {
        let log_dir = self.root.join(LOG_DIR);
        let last = listing.keys().filter_map(|r| log_seq(r)).max().unwrap_or(0);
        let mut commits = Vec::new();
        for seq in base + 1..=last {
            commits.push(read_commit(&log_dir.join(log_name(seq)))?);
        }
        // Files removed by a commit after each one.
        let mut removed_after: Vec<BTreeSet<&str>> = vec![BTreeSet::new(); commits.len()];
        for i in (0..commits.len().saturating_sub(1)).rev() {
            let mut later = removed_after[i + 1].clone();
            later.extend(commits[i + 1].removed.iter().map(String::as_str));
            removed_after[i] = later;
        }
        let mut work: Vec<(u64, Vec<String>, Vec<String>)> = Vec::new();
        for (c, later) in commits.iter().zip(&removed_after) {
            let missing: Vec<String> = c
                .published_files()
                .filter(|f| !listing.contains_key(*f) && !later.contains(f))
                .map(str::to_string)
                .collect();
            let left: Vec<String> = c
                .removed
                .iter()
                .filter(|f| listing.contains_key(*f))
                .cloned()
                .collect();
            if !missing.is_empty() || !left.is_empty() {
                work.push((c.seq, missing, left));
            }
        }
        for (seq, missing, left) in work {
            // A listing is not a snapshot: a file published while it ran may be missing
            // from it. Asked one by one (strongly consistent), those are there.
            let mut late = Vec::new();
            let mut absent = Vec::new();
            for f in missing {
                if self.exists(&f)? {
                    late.push(f);
                } else {
                    absent.push(f);
                }
            }
            self.bring(&late)?;
            let missing = absent;
            if !missing.is_empty() {
                let token = self.token_of(&format!("{LOG_DIR}/{}", log_name(seq)))?;
                let staged = match token.as_deref() {
                    Some(t) => {
                        let here = self.list(&format!("{STAGING_DIR}/{seq:08}-{t}/"))?;
                        missing
                            .iter()
                            .all(|f| here.contains_key(&staged_name(seq, t, f)))
                    }
                    None => false,
                };
                let Some(token) = token.filter(|_| staged) else {
                    tracing::info!(seq, "a commit's files are not in the bucket: listing again");
                    return Ok(None);
                };
                tracing::info!(
                    seq,
                    files = missing.len(),
                    "finishing a cut-short publication"
                );
                self.publish(seq, &token, &missing)?;
                self.bring(&missing)?;
            }
            if !left.is_empty() {
                self.delete_all(&left)?;
                for f in &left {
                    let _ = fs::remove_file(self.root.join(f));
                    self.manifest.remove(f);
                }
            }
        }
        Ok(Some(last))
    }

    /// Replaces the local copy of `rel` by the bucket's (deleting it if the bucket has
    /// none). For the access log, the records appended here since the last exchange are
    /// replayed on top of the bucket's ([`super::access::rebase`]).
    fn take_theirs(&mut self, rel: &str) -> Result<()> {
        if rel.starts_with(&format!("{}/", super::access::DIR)) {
            return self.rebase_access_log();
        }
        let fetched = self.fetch_present(&[rel.to_string()])?;
        if fetched.is_empty() {
            let _ = fs::remove_file(self.root.join(rel));
            self.manifest.remove(rel);
        }
        for (r, e) in fetched {
            self.manifest.insert(r, e);
        }
        Ok(())
    }

    /// Takes the bucket's access log, with this mirror's lines that it has not sent replayed
    /// on top ([`super::access::rebase`]; the lines after the bytes last exchanged are
    /// this mirror's). Both files are then sent by the next push.
    fn rebase_access_log(&mut self) -> Result<()> {
        let (log, head) = audit_files();
        let key = self.key(&log);
        let store = self.store.clone();
        let got = self.rt.block_on(again(TRIES, || async {
            match store.get(&key).await {
                Ok(g) => {
                    let etag = g.meta.e_tag.clone();
                    g.bytes().await.map(|b| Some((b.to_vec(), etag)))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        }));
        let (theirs, etag) = got.map_err(|e| self.err(&log, e))?.unwrap_or_default();
        let base = self.manifest.get(&log).map_or(0, |e| e.size);
        let replayed = super::access::rebase(&self.root, base, &theirs)?;
        tracing::info!(replayed, "access log rebased on the bucket's");
        // Stale stamps: both are sent next, the log only over the copy just taken.
        self.manifest.insert(
            log,
            Entry {
                size: theirs.len() as u64,
                etag,
                mtime: 0,
            },
        );
        self.manifest.remove(&head);
        Ok(())
    }

    /// [`Mirror::fetch`] of those of `rels` the bucket holds; a local copy of one it does
    /// not hold is deleted.
    fn fetch_present(&self, rels: &[String]) -> Result<Vec<(String, Entry)>> {
        let mut present = Vec::new();
        for rel in rels {
            let key = self.key(rel);
            let store = self.store.clone();
            match self.rt.block_on(again(TRIES, || store.head(&key))) {
                Ok(_) => present.push(rel.clone()),
                Err(object_store::Error::NotFound { .. }) => {
                    let _ = fs::remove_file(self.root.join(rel));
                }
                Err(e) => return Err(self.err(rel, e)),
            }
        }
        self.fetch(&present)
    }

    /// Whether the bucket holds `rel` now.
    fn exists(&self, rel: &str) -> Result<bool> {
        let key = self.key(rel);
        let store = self.store.clone();
        match self.rt.block_on(again(TRIES, || store.head(&key))) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err(rel, e)),
        }
    }

    /// The staging token a commit file in the bucket carries.
    fn token_of(&self, rel: &str) -> Result<Option<String>> {
        let key = self.key(rel);
        let store = self.store.clone();
        let attrs = self
            .rt
            .block_on(again(TRIES, || async {
                store.get(&key).await.map(|g| g.attributes)
            }))
            .map_err(|e| self.err(rel, e))?;
        Ok(attrs
            .get(&Attribute::Metadata(TOKEN_KEY.into()))
            .map(|t| t.to_string()))
    }

    /// Copies commit `seq`'s staged files (token `token`) to their places. A staged file
    /// already gone whose target exists was published by someone else meanwhile.
    fn publish(&self, seq: u64, token: &str, rels: &[String]) -> Result<()> {
        let jobs: Vec<(String, ObjPath, ObjPath)> = rels
            .iter()
            .map(|r| {
                (
                    r.clone(),
                    self.key(&staged_name(seq, token, r)),
                    self.key(r),
                )
            })
            .collect();
        let store = self.store.clone();
        let results = self.rt.block_on(run_parallel(jobs, move |(rel, from, to)| {
            let store = store.clone();
            async move {
                match again(TRIES, || store.copy(&from, &to)).await {
                    Ok(()) => Ok(()),
                    Err(object_store::Error::NotFound { .. }) if store.head(&to).await.is_ok() => {
                        Ok(())
                    }
                    Err(e) => Err((rel, e)),
                }
            }
        }));
        for r in results {
            r.map_err(|(rel, e)| self.err(&rel, e))?;
        }
        Ok(())
    }

    /// Deletes objects (relative paths), in batches of up to 1,000 per request where the
    /// store has a bulk delete; one already gone is not an error.
    fn delete_all(&self, rels: &[String]) -> Result<()> {
        use futures_util::StreamExt;
        if rels.is_empty() {
            return Ok(());
        }
        let keys: Vec<ObjPath> = rels.iter().map(|r| self.key(r)).collect();
        let store = self.store.clone();
        // A bulk delete of staging objects whose answer was cut is sent again whole
        // ([`again`]; deleting an object already gone is not an error). Shared objects
        // are deleted once: a repeat could delete what another writer put in between.
        let tries = if rels.iter().all(|r| is_staged(r)) {
            TRIES
        } else {
            1
        };
        self.rt
            .block_on(again(tries, || {
                let (store, keys) = (store.clone(), keys.clone());
                async move {
                    let results: Vec<object_store::Result<ObjPath>> = store
                        .delete_stream(futures_util::stream::iter(keys.into_iter().map(Ok)).boxed())
                        .collect()
                        .await;
                    for r in results {
                        match r {
                            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                            Err(e) => return Err(e),
                        }
                    }
                    Ok(())
                }
            }))
            .map_err(|e| self.err("", e))
    }

    /// Sends what the command changed in the mirror to the bucket (module docs): new
    /// commits through staging and a conditional put of their log entry, then the other
    /// changed files under conditions, then deletions.
    pub fn push(&mut self) -> Result<Pushed> {
        self.push_with(false)
    }

    /// [`Mirror::push`] for `serve`, which cannot run again: a file beside the events that
    /// another writer changed meanwhile is taken from the bucket (the server recomputes
    /// such files anyway), and the access log is rebased (its new records replayed on the
    /// bucket's), so only commits conflict.
    pub fn push_server(&mut self) -> Result<Pushed> {
        self.push_with(true)
    }

    fn push_with(&mut self, server: bool) -> Result<Pushed> {
        self.take_in_fetched()?;
        let now = local_files(&self.root)?;
        let mut changed: BTreeSet<String> = BTreeSet::new();
        for rel in &now {
            let stamp = local_stamp(&self.root.join(rel));
            // A commit file the bucket has is the same whatever its stamp (a checkpoint
            // renames `_log/` copies over `_history/` ones).
            let same = self
                .manifest
                .get(rel)
                .is_some_and(|e| stamp == Some((e.size, e.mtime)) || history_seq(rel).is_some());
            if !same {
                changed.insert(rel.clone());
            }
        }
        let now_set: BTreeSet<&String> = now.iter().collect();
        // Commit files are never deleted from the bucket (a number once taken stays taken).
        let mut gone: Vec<String> = self
            .manifest
            .keys()
            .filter(|rel| {
                !now_set.contains(rel) && log_seq(rel).is_none() && history_seq(rel).is_none()
            })
            .cloned()
            .collect();
        // New commits, in order: after the bucket's last, in `_log/` or, if a checkpoint
        // made here covers them, in `_log/_history/`.
        let mut new_commits: Vec<Commit> = Vec::new();
        let mut seen_seqs = BTreeSet::new();
        for rel in &now {
            let seq = log_seq(rel).or_else(|| history_seq(rel));
            if let Some(seq) = seq.filter(|s| *s > self.last_seq)
                && seen_seqs.insert(seq)
            {
                new_commits.push(read_commit(&self.root.join(rel))?);
            }
        }
        new_commits.sort_by_key(|c| c.seq);
        let mut summary = PushSummary::default();
        let token = super::random_hex(8)?;
        for c in &new_commits {
            // Every file it adds, also one a later commit of this push removed again (kept
            // aside in REMOVED_DIR): if that later commit loses a race, this one is whole.
            let mut files: Vec<String> = Vec::new();
            let mut staged: Vec<(String, String)> = Vec::new();
            for f in c.published_files() {
                let local = if now_set.contains(&f.to_string()) {
                    f.to_string()
                } else {
                    let aside = format!("{REMOVED_DIR}/{f}");
                    if !self.root.join(&aside).is_file() {
                        return Err(Error::CorruptLake {
                            path: self.root.join(f),
                            reason: format!(
                                "commit {} adds it, but it is gone before it was sent",
                                c.seq
                            ),
                        });
                    }
                    aside
                };
                if !changed.contains(f) && local == f {
                    continue;
                }
                files.push(f.to_string());
                staged.push((staged_name(c.seq, &token, f), local));
            }
            // 1. Stage.
            let (staged_tags, refused) = self.put_files(&staged, |_| PutMode::Overwrite)?;
            if let Some(rel) = refused {
                return Err(Error::Remote {
                    location: format!("{}/{rel}", self.url),
                    reason: "the store refused an unconditional put".into(),
                });
            }
            crate::fault::check("remote.staged").at(&self.root)?;
            // 2. The commit point.
            let rel = format!("{LOG_DIR}/{}", log_name(c.seq));
            let mut path = self.root.join(&rel);
            if !path.exists() {
                path = self
                    .root
                    .join(LOG_DIR)
                    .join(HISTORY_DIR)
                    .join(log_name(c.seq));
            }
            let body = fs::read(&path).at(&path)?;
            let mut attributes = Attributes::new();
            attributes.insert(Attribute::Metadata(TOKEN_KEY.into()), token.clone().into());
            let opts = PutOptions {
                mode: PutMode::Create,
                attributes,
                ..Default::default()
            };
            let key = self.key(&rel);
            let store = self.store.clone();
            let put = self
                .rt
                .block_on(async move { store.put_opts(&key, body.into(), opts).await });
            // A put the store took but answered with an error is retried by the client and
            // then refused as existing: the object is ours if it carries our token.
            let put = match put {
                Err(object_store::Error::AlreadyExists { .. })
                    if self.token_of(&rel)? == Some(token.clone()) =>
                {
                    Ok(None)
                }
                Ok(p) => Ok(p.e_tag),
                Err(e) => Err(e),
            };
            match put {
                Ok(etag) => {
                    if self.root.join(&rel).exists() {
                        self.record(&rel, etag)?;
                    }
                }
                Err(object_store::Error::AlreadyExists { .. }) => {
                    let names: Vec<String> = staged.iter().map(|(s, _)| s.clone()).collect();
                    self.delete_all(&names)?;
                    return Ok(Pushed::Conflict(format!("{}/{rel}", self.url)));
                }
                Err(e) => return Err(self.err(&rel, e)),
            }
            // 3. Publish.
            crate::fault::check("remote.committed").at(&self.root)?;
            self.publish(c.seq, &token, &files)?;
            crate::fault::check("remote.published").at(&self.root)?;
            let removed: Vec<String> = c
                .removed
                .iter()
                .filter(|f| !now_set.contains(f))
                .cloned()
                .collect();
            self.delete_all(&removed)?;
            let names: Vec<String> = staged.iter().map(|(s, _)| s.clone()).collect();
            self.delete_all(&names)?;
            // A copy of a single-part object keeps its ETag (an MD5 of the bytes); where a
            // store gives it another, the next pull fetches the file once more.
            for sent in staged_tags {
                if !sent.local.starts_with(REMOVED_DIR) {
                    self.record_sent(&sent);
                    changed.remove(&sent.local);
                }
            }
            gone.retain(|g| !removed.contains(g));
            changed.remove(&rel);
            self.last_seq = c.seq;
            summary.commits += 1;
            summary.files += files.len() as u64 + 1;
            summary.deleted += removed.len() as u64;
        }
        // Other files: data before the `_`-named state files that vouch for them. Commit
        // files go only through the commits above (a stale `_log/` copy is never sent).
        let rest: Vec<String> = changed
            .into_iter()
            .filter(|r| log_seq(r).is_none())
            .collect();
        // In order: the commit files a checkpoint covers, data, then the files that vouch
        // for others (`_`-named state, checkpoints), so none lands before what it names.
        let head = audit_files().1;
        let vouches = |r: &String| {
            r.rsplit('/').next().is_some_and(|n| n.starts_with('_'))
                || checkpoint_seq(r).is_some()
                || *r == head
        };
        let (history, rest): (Vec<String>, Vec<String>) =
            rest.into_iter().partition(|r| history_seq(r).is_some());
        let (state, data): (Vec<String>, Vec<String>) = rest.into_iter().partition(vouches);
        for mut group in [history, data, state] {
            let mut rounds = 0;
            while !group.is_empty() {
                let pairs: Vec<(String, String)> =
                    group.iter().map(|r| (r.clone(), r.clone())).collect();
                let manifest = self.manifest.clone();
                let (sent, conflict) = self.put_files(&pairs, |rel| match manifest.get(rel) {
                    _ if history_seq(rel).is_some() || rel == audit_files().1 => PutMode::Overwrite,
                    Some(e) if e.etag.is_some() => PutMode::Update(UpdateVersion {
                        e_tag: e.etag.clone(),
                        version: None,
                    }),
                    Some(_) => PutMode::Overwrite,
                    None => PutMode::Create,
                })?;
                for s in &sent {
                    self.record_sent(s);
                }
                summary.files += sent.len() as u64;
                let Some(rel) = conflict else { break };
                // A command reruns on the bucket's state; a server, which cannot, takes the
                // bucket's copy of what it recomputes anyway. Access records are replayed
                // on top of the bucket's by both: a command whose only conflict is the
                // access log (readers on several machines) does not run again for it.
                rounds += 1;
                let access = format!("{}/", super::access::DIR);
                let done: BTreeSet<&String> = sent.iter().map(|s| &s.local).collect();
                let only_access = group
                    .iter()
                    .filter(|r| !done.contains(r))
                    .all(|r| r.starts_with(&access));
                if !server && (!only_access || rounds > 5) {
                    self.save_manifest()?;
                    return Ok(Pushed::Conflict(format!("{}/{rel}", self.url)));
                }
                if rounds > 5 {
                    // The commits are in; these files stay here for the next push.
                    tracing::warn!(
                        "{}/{rel}: still changing under the server; sent next time",
                        self.url
                    );
                    break;
                }
                let left: Vec<String> = group
                    .iter()
                    .filter(|r| !done.contains(r))
                    .cloned()
                    .collect();
                for r in &left {
                    self.take_theirs(r)?;
                }
                group = left
                    .into_iter()
                    .filter(|r| {
                        self.root.join(r).exists()
                            && !self.manifest.get(r).is_some_and(|e| {
                                local_stamp(&self.root.join(r)) == Some((e.size, e.mtime))
                            })
                    })
                    .collect();
            }
        }
        let _ = fs::remove_dir_all(self.root.join(REMOVED_DIR));
        self.delete_all(&gone)?;
        summary.deleted += gone.len() as u64;
        for g in &gone {
            self.manifest.remove(g);
        }
        self.save_manifest()?;
        Ok(Pushed::Done(summary))
    }

    /// Puts local files (`(object, local)` relative paths) with the mode `mode` gives
    /// each local path; returns what was sent, and the first object whose condition
    /// failed (another writer changed it), if any.
    fn put_files(
        &self,
        pairs: &[(String, String)],
        mode: impl Fn(&str) -> PutMode,
    ) -> Result<(Vec<Sent>, Option<String>)> {
        let jobs: Vec<(String, String, ObjPath, PathBuf, PutMode)> = pairs
            .iter()
            .map(|(obj, local)| {
                (
                    obj.clone(),
                    local.clone(),
                    self.key(obj),
                    self.root.join(local),
                    mode(local),
                )
            })
            .collect();
        let store = self.store.clone();
        let url = self.url.clone();
        let part = part_bytes()?;
        // Each body is read as its put starts (memory: the puts in flight), after its
        // stamp: a file rewritten meanwhile differs from the stamp, and is sent again by
        // the next push.
        let results = self
            .rt
            .block_on(run_parallel(jobs, move |(obj, local, key, path, mode)| {
                let store = store.clone();
                let url = url.clone();
                async move {
                    // The access log is appended to while a server runs: its stamp and
                    // bytes are read under its lock, so they agree.
                    let lock = if local.starts_with(&format!("{}/", super::access::DIR)) {
                        let d = path.parent().unwrap_or(Path::new("."));
                        Some(super::lock_dir(d).map_err(PutError::Other)?)
                    } else {
                        None
                    };
                    let stamp = local_stamp(&path);
                    // A large file (staged for a commit) goes up part by part: memory is
                    // a few parts per file, whatever its size.
                    if lock.is_none()
                        && matches!(mode, PutMode::Overwrite)
                        && stamp.is_some_and(|(size, _)| size >= 2 * part as u64)
                    {
                        let tries = put_tries(&obj, &mode);
                        let etag = again(tries, || put_streamed(&store, &key, &path, part))
                            .await
                            .map_err(|e| PutError::Other(remote(&url, &obj, e)))?;
                        return Ok(Sent { local, etag, stamp });
                    }
                    let body = fs::read(&path).at(&path).map_err(PutError::Other)?;
                    drop(lock);
                    let tries = put_tries(&obj, &mode);
                    let opts = PutOptions {
                        mode,
                        ..Default::default()
                    };
                    let body = object_store::PutPayload::from(body);
                    let put =
                        again(tries, || store.put_opts(&key, body.clone(), opts.clone())).await;
                    match put {
                        Ok(put) => Ok(Sent {
                            local,
                            etag: put.e_tag,
                            stamp,
                        }),
                        Err(
                            object_store::Error::AlreadyExists { .. }
                            | object_store::Error::Precondition { .. },
                        ) => Err(PutError::Conflict(obj)),
                        Err(e) => Err(PutError::Other(remote(&url, &obj, e))),
                    }
                }
            }));
        let mut conflict = None;
        let mut sent = Vec::with_capacity(results.len());
        for r in results {
            match r {
                Ok(s) => sent.push(s),
                Err(PutError::Conflict(obj)) => conflict = conflict.or(Some(obj)),
                Err(PutError::Other(e)) => return Err(e),
            }
        }
        Ok((sent, conflict))
    }

    /// Whether the local copy of `rel` differs from what was last fetched or sent.
    fn manifest_is_stale(&self, rel: &str) -> bool {
        let stamp = local_stamp(&self.root.join(rel));
        match self.manifest.get(rel) {
            Some(e) => stamp != Some((e.size, e.mtime)),
            None => stamp.is_some(),
        }
    }

    /// Remembers what a put sent (as the local file was when read).
    fn record_sent(&mut self, sent: &Sent) {
        if let Some((size, mtime)) = sent.stamp {
            self.manifest.insert(
                sent.local.clone(),
                Entry {
                    size,
                    etag: sent.etag.clone(),
                    mtime,
                },
            );
        }
    }

    /// Remembers that the bucket holds the local file `rel` as it is now, with `etag`.
    fn record(&mut self, rel: &str, etag: Option<String>) -> Result<()> {
        let path = self.root.join(rel);
        let (size, mtime) = local_stamp(&path).ok_or_else(|| Error::Io {
            path: path.clone(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
        self.manifest
            .insert(rel.to_string(), Entry { size, etag, mtime });
        Ok(())
    }

    fn save_manifest(&self) -> Result<()> {
        let path = self.dir.join("manifest.json");
        let text = serde_json::to_vec(&self.manifest).map_err(|e| Error::Render(e.to_string()))?;
        write_local(&path, &text)
    }
}

/// One file put: from which local file, the ETag the store gave, and the local file's
/// stamp when it was read.
struct Sent {
    local: String,
    etag: Option<String>,
    stamp: Option<(u64, u128)>,
}

/// Why a batch of puts stopped.
enum PutError {
    /// A put's condition failed (the relative path named): another writer changed it.
    Conflict(String),
    Other(Error),
}

impl From<Error> for PutError {
    fn from(e: Error) -> PutError {
        PutError::Other(e)
    }
}

/// The part size of streamed uploads: `MLK_S3_PART_BYTES`, else 16 MiB. S3 takes parts of
/// 5 MiB and more (but for the last); smaller ones are for stores that take them.
fn part_bytes() -> Result<usize> {
    const NAME: &str = "MLK_S3_PART_BYTES";
    match std::env::var(NAME) {
        Err(_) => Ok(16 << 20),
        Ok(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| Error::InvalidParameter {
                name: NAME,
                reason: format!(
                    "`{v}`: expected a number of bytes above 0 (S3 takes parts of 5242880 and more)"
                ),
            }),
    }
}

/// Uploads the file at `path` to `key` (a staging key: this push's only) as a multipart
/// upload of `part`-byte parts, read from the file as they go (two in flight); an upload
/// that fails is aborted. Returns the object's ETag.
async fn put_streamed(
    store: &Arc<dyn ObjectStore>,
    key: &ObjPath,
    path: &Path,
    part: usize,
) -> std::result::Result<Option<String>, object_store::Error> {
    use std::io::Read;
    let io = |e: std::io::Error| object_store::Error::Generic {
        store: "local file",
        source: Box::new(Error::io(path.to_path_buf(), e)),
    };
    let upload = store.put_multipart(key).await?;
    let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, part);
    let sent = async {
        let mut file = fs::File::open(path).map_err(io)?;
        let mut buf = vec![0u8; part];
        loop {
            let mut n = 0;
            while n < buf.len() {
                match file.read(&mut buf[n..]).map_err(io)? {
                    0 => break,
                    k => n += k,
                }
            }
            if n == 0 {
                // Every part sent before completing: a failed one aborts the upload.
                return writer.wait_for_capacity(0).await;
            }
            writer.wait_for_capacity(2).await?;
            writer.write(&buf[..n]);
        }
    }
    .await;
    match sent {
        Ok(()) => match writer.finish().await {
            Ok(put) => Ok(put.e_tag),
            // A completion the store made but whose answer was cut is refused when the
            // client retries it (the upload is gone). The key is this push's staging key,
            // so an object there of the file's size is this upload's.
            Err(e) => match store.head(key).await {
                Ok(meta) if Some(meta.size) == fs::metadata(path).ok().map(|m| m.len()) => {
                    Ok(meta.e_tag)
                }
                _ => Err(e),
            },
        },
        Err(e) => {
            let _ = writer.abort().await;
            Err(e)
        }
    }
}

/// The object key of `rel` (relative to the lake) in `url`'s bucket.
fn key_of(url: &S3Url, rel: &str) -> ObjPath {
    if url.prefix.is_empty() {
        ObjPath::from(rel)
    } else {
        ObjPath::from(format!("{}/{rel}", url.prefix))
    }
}

/// Downloads `rels` (relative to the lake) of `url` into the lake folder `root`, each
/// through a temp file and a rename, written chunk by chunk as it arrives (memory: a
/// chunk per object in flight); returns their entries.
fn download(
    rt: &tokio::runtime::Runtime,
    store: &Arc<dyn ObjectStore>,
    url: &S3Url,
    root: &Path,
    rels: Vec<String>,
) -> Result<Vec<(String, Entry)>> {
    let jobs: Vec<(String, ObjPath, PathBuf)> = rels
        .into_iter()
        .map(|rel| {
            let (key, path) = (key_of(url, &rel), root.join(&rel));
            (rel, key, path)
        })
        .collect();
    let store = store.clone();
    let url = url.clone();
    let results = rt.block_on(run_parallel(jobs, move |(rel, key, path)| {
        let store = store.clone();
        let url = url.clone();
        async move {
            // A read cut short is read again ([`again`]); a local failure ends it.
            let (etag, size) = again(TRIES, || download_one(&store, &key, &path))
                .await
                .map_err(|e| match e {
                    Fetch::Store(e) => remote(&url, &rel, e),
                    Fetch::Local(e) => e,
                })?;
            let (size, mtime) = local_stamp(&path).unwrap_or((size, 0));
            Ok::<_, Error>((rel, Entry { size, etag, mtime }))
        }
    }));
    results.into_iter().collect()
}

/// Why one download failed: the store (which [`again`] may repeat), or the local disk.
enum Fetch {
    Store(object_store::Error),
    Local(Error),
}

impl Transient for Fetch {
    fn transient(&self) -> bool {
        matches!(self, Fetch::Store(e) if e.transient())
    }
}

impl std::fmt::Display for Fetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fetch::Store(e) => e.fmt(f),
            Fetch::Local(e) => e.fmt(f),
        }
    }
}

/// Downloads `key` to `path` through a temp file and a rename, written chunk by chunk as
/// it arrives; returns its ETag and size. A download cut short leaves nothing behind.
async fn download_one(
    store: &Arc<dyn ObjectStore>,
    key: &ObjPath,
    path: &Path,
) -> std::result::Result<(Option<String>, u64), Fetch> {
    use futures_util::StreamExt;
    use std::io::Write;
    let got = store.get(key).await.map_err(Fetch::Store)?;
    let etag = got.meta.e_tag.clone();
    let tmp = fetch_path(path).map_err(Fetch::Local)?;
    let mut body = got.into_stream();
    let mut size = 0u64;
    let written = async {
        let mut file = fs::File::create(&tmp).at(&tmp).map_err(Fetch::Local)?;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(Fetch::Store)?;
            file.write_all(&chunk).at(&tmp).map_err(Fetch::Local)?;
            size += chunk.len() as u64;
        }
        drop(file);
        fs::rename(&tmp, path).at(path).map_err(Fetch::Local)
    }
    .await;
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map(|()| (etag, size))
}

/// Runs `f` over `jobs` with at most [`PARALLEL`] in flight, results in any order.
async fn run_parallel<J, F, Fut, T>(jobs: Vec<J>, f: F) -> Vec<T>
where
    F: Fn(J) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    use futures_util::StreamExt;
    futures_util::stream::iter(jobs.into_iter().map(f))
        .buffer_unordered(PARALLEL)
        .collect()
        .await
}

fn remote(url: &S3Url, rel: &str, e: object_store::Error) -> Error {
    let at = if rel.is_empty() {
        url.to_string()
    } else {
        format!("{url}/{rel}")
    };
    Error::Remote {
        location: at,
        reason: e.to_string(),
    }
}

/// Files that are local to one machine and never sent: locks, temp files, the server's
/// write-ahead log and local staging.
fn ignored(rel: &str) -> bool {
    let first = rel.split('/').next().unwrap_or("");
    let name = rel.rsplit('/').next().unwrap_or("");
    first == STAGING_DIR
        || first == super::SERVER_LOG_DIR
        || name == "_lock"
        || name.ends_with(".lock")
        || rel.split('/').any(|part| part.starts_with('.'))
}

/// The access log and its head, relative to the lake root.
fn audit_files() -> (String, String) {
    let d = super::access::DIR;
    (
        format!("{d}/{}", super::access::LOG),
        format!("{d}/{}", super::access::HEAD),
    )
}

/// The lake's own files (events, dedup keys, quarantine, the commit log), which only
/// commits change; the rest (rollups, tables, logs beside them) are derived or appended.
fn core(rel: &str) -> bool {
    let first = rel.split('/').next().unwrap_or("");
    matches!(first, "events" | "_index" | "quarantine" | LOG_DIR)
}

/// Whether the bucket's object is the one the manifest remembers.
fn fresh_etag(known: Option<&Entry>, meta: &object_store::ObjectMeta) -> bool {
    known.is_some_and(|e| e.etag == meta.e_tag && e.size == meta.size)
}

/// The sequence number of a commit file `_log/SSSSSSSS.json`.
fn log_seq(rel: &str) -> Option<u64> {
    rel.strip_prefix(&format!("{LOG_DIR}/"))?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

/// The sequence number of a checkpoint `_log/SSSSSSSS.checkpoint.json`.
fn checkpoint_seq(rel: &str) -> Option<u64> {
    rel.strip_prefix(&format!("{LOG_DIR}/"))?
        .strip_suffix(".checkpoint.json")?
        .parse()
        .ok()
}

/// The sequence number of a commit file moved to `_log/_history/` by a checkpoint.
fn history_seq(rel: &str) -> Option<u64> {
    rel.strip_prefix(&format!("{LOG_DIR}/_history/"))?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

/// Where commit `seq`'s file `rel` is staged by the push with `token`.
fn staged_name(seq: u64, token: &str, rel: &str) -> String {
    format!("{STAGING_DIR}/{seq:08}-{token}/{rel}")
}

/// The sequence number a staging object belongs to.
fn staged_seq(rel: &str) -> Option<u64> {
    let dir = rel
        .strip_prefix(&format!("{STAGING_DIR}/"))?
        .split('/')
        .next()?;
    dir.split('-').next()?.parse().ok()
}

/// Every file under `root` that is sent (relative paths with `/`), sorted.
fn local_files(root: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(Error::Io {
                    path: dir,
                    source: e,
                });
            }
        };
        for entry in rd {
            let entry = entry.at(&dir)?;
            let path = entry.path();
            let ft = entry.file_type().at(&path)?;
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file()
                && let Ok(rel) = path.strip_prefix(root)
            {
                let rel = rel.to_string_lossy().replace('\\', "/");
                if !ignored(&rel) {
                    out.push(rel);
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Size and mtime (ns) of a local file.
fn local_stamp(path: &Path) -> Option<(u64, u128)> {
    let m = fs::metadata(path).ok()?;
    let mtime = m
        .modified()
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some((m.len(), mtime))
}

/// Writes `bytes` to `path` through a temp file and a rename.
fn write_local(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = fetch_path(path)?;
    fs::write(&tmp, bytes).at(&tmp)?;
    fs::rename(&tmp, path).at(path)
}

/// The temp file a download to `path` is written to before its rename (its folder made).
fn fetch_path(path: &Path) -> Result<PathBuf> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).at(parent)?;
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    Ok(path.with_file_name(format!(".{name}.{}.fetch", std::process::id())))
}

/// The folder holding every mirror.
fn cache_root() -> PathBuf {
    if let Some(d) = std::env::var_os("MLK_LAKE_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("meterlake/lakes");
    }
    if let Some(d) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join(".cache/meterlake/lakes");
    }
    std::env::temp_dir().join("meterlake-lakes")
}

/// A folder name made of `text`'s safe characters.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_refuse_other_schemes() {
        assert_eq!(parse_location(Path::new("lake"), "lake").unwrap(), None);
        assert_eq!(parse_location(Path::new("/a/b:c"), "lake").unwrap(), None);
        let u = parse_location(Path::new("s3://bkt/a/b/"), "lake")
            .unwrap()
            .unwrap();
        assert_eq!((u.bucket.as_str(), u.prefix.as_str()), ("bkt", "a/b"));
        assert_eq!(u.to_string(), "s3://bkt/a/b");
        let u = parse_location(Path::new("s3a://bkt"), "lake")
            .unwrap()
            .unwrap();
        assert_eq!(u.to_string(), "s3://bkt");
        for bad in ["gs://b/p", "file:///tmp/x", "s3:///p", "s3://b/../x"] {
            let e = parse_location(Path::new(bad), "--lake")
                .unwrap_err()
                .to_string();
            assert!(e.contains("--lake") && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn names_of_commits_and_staging_round_trip() {
        assert_eq!(log_seq("_log/00000012.json"), Some(12));
        assert_eq!(log_seq("_log/00000012.checkpoint.json"), None);
        assert_eq!(log_seq("_log/_history/00000012.json"), None);
        let s = staged_name(
            7,
            "ab12",
            "events/date=2026-01-01/part-00000007-0000.parquet",
        );
        assert_eq!(staged_seq(&s), Some(7));
        assert!(ignored("_staging/x") && ignored("_wal/1.wal") && ignored("rollups/_layout.lock"));
        assert!(ignored("_lock") && ignored("a/.part.tmp") && !ignored("rollups/x/_state.json"));
    }

    /// `again` repeats a request while it fails with a transport error the client gave up
    /// on, up to its tries, and gives back any other error at once; only overwrites and
    /// bulk deletes of staging objects get more than one try.
    #[test]
    fn again_repeats_cut_answers_only() {
        use object_store::client::{HttpError, HttpErrorKind};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let transport = |kind| object_store::Error::Generic {
            store: "S3",
            source: Box::new(HttpError::new(
                kind,
                std::io::Error::other("connection reset"),
            )),
        };
        let cut = || transport(HttpErrorKind::Interrupted);
        // (failures before success, the error, tries) -> (calls made, succeeded)
        let run = |fails: u32, err: &dyn Fn() -> object_store::Error, tries: u32| {
            let mut calls = 0;
            let r = rt.block_on(again(tries, || {
                calls += 1;
                let r = if calls <= fails {
                    Err(err())
                } else {
                    Ok(calls)
                };
                async move { r }
            }));
            (calls, r.is_ok())
        };
        assert_eq!(run(0, &cut, TRIES), (1, true));
        assert_eq!(
            run(3, &cut, TRIES),
            (4, true),
            "three cuts, then the answer"
        );
        assert_eq!(run(4, &cut, TRIES), (4, false), "no more than its tries");
        let decode = || transport(HttpErrorKind::Decode);
        assert_eq!(run(1, &decode, TRIES), (2, true), "a garbled answer");
        assert_eq!(run(1, &cut, 1), (1, false), "one try: once");
        // Not repeated: what the client retried already, a refusal, a local file's error.
        let unreachable = || transport(HttpErrorKind::Connect);
        let not_found = || object_store::Error::NotFound {
            path: "x".into(),
            source: "gone".into(),
        };
        let condition = || object_store::Error::Precondition {
            path: "x".into(),
            source: "etag".into(),
        };
        let local = || object_store::Error::Generic {
            store: "local file",
            source: Box::new(std::io::Error::other("disk")),
        };
        for err in [
            &unreachable as &dyn Fn() -> _,
            &not_found,
            &condition,
            &local,
        ] {
            assert_eq!(run(1, err, TRIES), (1, false), "{}", err());
        }
        assert!(
            !Fetch::Local(Error::InvalidParameter {
                name: "x",
                reason: "y".into()
            })
            .transient()
        );
        assert!(Fetch::Store(cut()).transient());
        // Which puts may be repeated.
        let staged = staged_name(
            7,
            "ab12",
            "events/date=2026-01-01/part-00000007-0000.parquet",
        );
        assert_eq!(put_tries(&staged, &PutMode::Overwrite), TRIES);
        assert_eq!(put_tries(&staged, &PutMode::Create), 1);
        assert_eq!(put_tries("_audit/head", &PutMode::Overwrite), 1);
        assert_eq!(
            put_tries("_log/_history/00000007.json", &PutMode::Overwrite),
            1
        );
        assert_eq!(put_tries("_log/00000007.json", &PutMode::Create), 1);
        assert!(!is_staged("_staging") && !is_staged("_stagingx/a") && is_staged("_staging/a"));
    }
}
