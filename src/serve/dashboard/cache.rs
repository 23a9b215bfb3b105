//! Built pages, kept until the data changes.
//!
//! The data's [`Version`] is the lake's last commit and the newest modification time of the
//! derived tables (forecasts, anomalies, quotas, alerts): a commit of the log (a flush of
//! `/track`), a `meterlake run`, or an acknowledgement changes it. A page is rebuilt when
//! the version moved or the page is older than [`MAX_AGE`] (its "now" moves on too);
//! otherwise the kept HTML is served. `/live` answers with the version, so an open page
//! fetches new content only when there is some.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::error::Result;

/// A kept page is rebuilt after this long even when the data did not change.
pub const MAX_AGE: Duration = Duration::from_secs(300);
/// Pages kept at most (each scope × period × page is one).
const MAX_PAGES: usize = 512;

/// What the data is, as of now.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    /// Changes whenever the data does.
    pub key: String,
    /// The lake's latest event (UTC µs), if it has any.
    pub latest: Option<i64>,
}

struct Entry {
    version: String,
    built: Instant,
    html: Arc<String>,
}

/// The kept pages and the version they were built at.
pub struct Cache {
    pages: Mutex<HashMap<String, Entry>>,
    /// The last version computed, by the stamp it was computed from.
    version: Mutex<Option<(String, Version)>>,
    /// Builds running, and the most allowed at once.
    running: Mutex<usize>,
    freed: Condvar,
    max_builds: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cache {
    /// Empty; at most `max_builds` pages are built at once (others wait their turn).
    pub fn new(max_builds: usize) -> Cache {
        Cache {
            pages: Mutex::new(HashMap::new()),
            version: Mutex::new(None),
            running: Mutex::new(0),
            freed: Condvar::new(),
            max_builds: max_builds.max(1),
        }
    }

    /// The data's version now. The latest event is read from the lake only when the stamp
    /// (last commit, derived tables' times) changed.
    pub fn version(&self, lake: &Path) -> Version {
        let stamp = stamp(lake);
        if let Some((s, v)) = lock(&self.version).as_ref()
            && *s == stamp
        {
            return v.clone();
        }
        let latest = crate::lake::Lake::open(lake).ok().and_then(|l| {
            if l.data_files().is_empty() {
                None
            } else {
                crate::billing::parse_at(&l, "latest").ok().map(|t| t - 1)
            }
        });
        let v = Version {
            key: stamp.clone(),
            latest,
        };
        *lock(&self.version) = Some((stamp, v.clone()));
        v
    }

    /// The page of `key` at `version`: the kept one when it is current, else `build`'s
    /// (kept for the next request).
    pub fn get_or_build(
        &self,
        key: &str,
        version: &str,
        build: impl FnOnce() -> Result<String>,
    ) -> Result<Arc<String>> {
        if let Some(e) = lock(&self.pages).get(key)
            && e.version == version
            && e.built.elapsed() < MAX_AGE
        {
            return Ok(e.html.clone());
        }
        let html = {
            let _slot = self.slot();
            Arc::new(build()?)
        };
        let mut pages = lock(&self.pages);
        if pages.len() >= MAX_PAGES {
            pages.retain(|_, e| e.version == version && e.built.elapsed() < MAX_AGE);
            if pages.len() >= MAX_PAGES {
                pages.clear();
            }
        }
        pages.insert(
            key.to_string(),
            Entry {
                version: version.to_string(),
                built: Instant::now(),
                html: html.clone(),
            },
        );
        Ok(html)
    }

    /// Waits for a build slot; it is freed when the guard drops.
    fn slot(&self) -> Slot<'_> {
        let mut n = lock(&self.running);
        while *n >= self.max_builds {
            n = self.freed.wait(n).unwrap_or_else(|p| p.into_inner());
        }
        *n += 1;
        Slot(self)
    }
}

struct Slot<'a>(&'a Cache);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *lock(&self.0.running) -= 1;
        self.0.freed.notify_one();
    }
}

/// The lake's last commit and the newest modification time under the derived tables.
fn stamp(lake: &Path) -> String {
    let seq = crate::lake::Lake::open(lake).map_or(0, |l| l.last_seq());
    let newest = crate::stage::tables::DIRS
        .iter()
        .map(|d| newest_under(&lake.join(d), 3))
        .max()
        .flatten()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("{seq}-{newest}")
}

/// The newest modification time of the files under `dir`, `depth` levels down.
fn newest_under(dir: &Path, depth: usize) -> Option<SystemTime> {
    let mut newest = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let Ok(m) = e.metadata() else { continue };
        let t = if m.is_dir() {
            if depth == 0 {
                continue;
            }
            newest_under(&e.path(), depth - 1)
        } else {
            m.modified().ok()
        };
        newest = newest.max(t);
    }
    newest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_kept_until_the_version_moves() {
        let c = Cache::new(1);
        let mut builds = 0;
        let mut get = |v: &str| {
            c.get_or_build("p", v, || {
                builds += 1;
                Ok(format!("built at {v}"))
            })
            .unwrap()
        };
        assert_eq!(*get("1"), "built at 1");
        assert_eq!(*get("1"), "built at 1");
        assert_eq!(*get("2"), "built at 2");
        assert_eq!(builds, 2);
    }

    #[test]
    fn the_version_follows_the_derived_tables() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::new(1);
        let before = c.version(dir.path());
        assert_eq!(before.latest, None);
        let f = dir
            .path()
            .join(crate::stage::tables::ALERTS_DIR)
            .join("alerts.parquet");
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, b"x").unwrap();
        assert_ne!(c.version(dir.path()).key, before.key);
    }
}
