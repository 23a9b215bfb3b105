//! Built pages, kept until the data changes.
//!
//! The data's [`Version`] is the lake's last commit and the newest modification time of the
//! derived tables (forecasts, anomalies, quotas, alerts): a commit of the log (a flush of
//! `/track`), a `meterlake run`, or an acknowledgement changes it. `/live` answers with it,
//! so an open page fetches new content only when there is some.
//!
//! A kept page is served while it is of the current version and younger than [`MAX_AGE`]
//! (its "now" moves on too). When the data moved on, a page that builds quickly (under
//! [`SLOW`]: one tenant's pages, typically) is rebuilt at once, so an acknowledgement shows
//! on the next view; a slow one (all tenants of a large lake) is served as it was for up to
//! [`STALE_FOR`] while one background build brings it up to date, so a busy `/track`
//! cannot make every view wait for a rebuild, nor rebuild more than one page at a time per
//! key. Each answer says which version it shows, and the page's script keeps asking until
//! it has the current one.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::error::Result;
use crate::report::QuotaSnapshot;

/// A kept page is rebuilt after this long even when the data did not change.
pub const MAX_AGE: Duration = Duration::from_secs(300);
/// A page whose last build took this long is rebuilt in the background...
pub const SLOW: Duration = Duration::from_millis(500);
/// ...and served as it was meanwhile, while it is at most this old.
pub const STALE_FOR: Duration = Duration::from_secs(60);
/// Pages kept at most (each scope × period × page is one).
const MAX_PAGES: usize = 512;

/// What the data is, as of now.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    /// Changes whenever the data does (the lake's last commit and the derived tables'
    /// newest time): what kept pages are checked against. Never shown to a tenant: it
    /// moves with every tenant's commits.
    pub key: String,
    /// The derived tables' newest time alone (a run, an acknowledgement).
    pub derived: String,
    /// The lake's latest event (UTC µs), if it has any.
    pub latest: Option<i64>,
}

struct Entry {
    version: String,
    built: Instant,
    /// How long its build took.
    took: Duration,
    html: Arc<String>,
    /// A background build of this key is running.
    refreshing: bool,
}

/// What a tenant may see of the lake's state: its events and its latest one.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TenantState {
    /// Its events in the lake.
    pub events: u64,
    /// Its latest event (UTC µs).
    pub latest: Option<i64>,
}

/// A page's builder: called again for each rebuild, possibly on another thread.
pub type Build = Arc<dyn Fn() -> Result<String> + Send + Sync>;

/// A page and the version of the data it shows.
#[derive(Debug, Clone)]
pub struct Built {
    /// The HTML.
    pub html: Arc<String>,
    /// The data version it was built at.
    pub version: String,
}

/// The kept pages and the version they were built at.
pub struct Cache {
    pages: Mutex<HashMap<String, Entry>>,
    /// The last version computed, by the stamp it was computed from; held while one is
    /// computed, so concurrent callers scan the lake once.
    version: Mutex<Option<(String, Version)>>,
    /// Each tenant's event count and latest event, for the version they were read at.
    tenant_latest: Mutex<HashMap<String, (String, TenantState)>>,
    /// Builds running, and the most allowed at once.
    running: Mutex<usize>,
    freed: Condvar,
    max_builds: usize,
    /// Bumped by [`Cache::clear`]: a build that started before it does not keep its page.
    generation: std::sync::atomic::AtomicU64,
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
            tenant_latest: Mutex::new(HashMap::new()),
            running: Mutex::new(0),
            freed: Condvar::new(),
            max_builds: max_builds.max(1),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The data's version now. The latest event is read from the lake only when the stamp
    /// (last commit, derived tables' times) changed, by one caller at a time.
    pub fn version(&self, lake: &Path) -> Version {
        let (seq, derived) = stamp(lake);
        let key = format!("{seq}-{derived}");
        let mut kept = lock(&self.version);
        if let Some((s, v)) = kept.as_ref()
            && *s == key
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
            key: key.clone(),
            derived,
            latest,
        };
        *kept = Some((key, v.clone()));
        v
    }

    /// `tenant`'s events and latest event at `version` (a scan of its events when the
    /// version moved).
    pub fn tenant_state(&self, lake: &Path, tenant: &str, version: &Version) -> TenantState {
        if let Some((k, t)) = lock(&self.tenant_latest).get(tenant)
            && *k == version.key
        {
            return *t;
        }
        let state = (|| -> Result<TenantState> {
            let l = crate::lake::Lake::open(lake)?;
            let Some(lf) =
                crate::lake::events_between(&l, Some(tenant), i64::MIN / 4, i64::MAX / 4)?
            else {
                return Ok(TenantState::default());
            };
            use polars::prelude::*;
            let m = lf
                .select([
                    len().cast(DataType::UInt64).alias("n"),
                    col("ts").max().cast(DataType::Int64).alias("ts"),
                ])
                .collect()?;
            Ok(TenantState {
                events: m.column("n")?.u64()?.get(0).unwrap_or(0),
                latest: m.column("ts")?.i64()?.get(0),
            })
        })()
        .unwrap_or_default();
        let mut all = lock(&self.tenant_latest);
        if all.len() >= MAX_PAGES {
            all.clear();
        }
        all.insert(tenant.to_string(), (version.key.clone(), state));
        state
    }

    /// The version a page or `/live` shows for `scope` (a tenant, or all), and the latest
    /// event it shows: for all tenants the data's; for one tenant only what is its own to
    /// see (its events' count and latest, and the derived tables' time), so another
    /// tenant's commits never show through.
    pub fn shown_version(
        &self,
        lake: &Path,
        scope: Option<&str>,
        version: &Version,
    ) -> (String, Option<i64>) {
        match scope {
            None => (version.key.clone(), version.latest),
            Some(t) => {
                let s = self.tenant_state(lake, t, version);
                (
                    format!(
                        "t{}-{}-{}",
                        s.events,
                        s.latest.map_or("none".into(), |x| x.to_string()),
                        version.derived
                    ),
                    s.latest,
                )
            }
        }
    }

    /// The page of `key` for data at `version` (see the module docs for when it is kept,
    /// rebuilt, or served while a background build runs).
    pub fn get_or_build(self: &Arc<Self>, key: &str, version: &str, build: Build) -> Result<Built> {
        {
            let mut pages = lock(&self.pages);
            if let Some(e) = pages.get_mut(key) {
                let age = e.built.elapsed();
                let kept = Built {
                    html: e.html.clone(),
                    version: e.version.clone(),
                };
                if e.version == version && age < MAX_AGE {
                    return Ok(kept);
                }
                if e.took >= SLOW && age < STALE_FOR {
                    if !e.refreshing {
                        e.refreshing = true;
                        let (me, key, version) =
                            (self.clone(), key.to_string(), version.to_string());
                        std::thread::spawn(move || {
                            if let Err(err) = me.build_and_keep(&key, &version, &build) {
                                tracing::error!("dashboard: rebuilding {key}: {err}");
                                if let Some(e) = lock(&me.pages).get_mut(&key) {
                                    e.refreshing = false;
                                }
                            }
                        });
                    }
                    return Ok(kept);
                }
            }
        }
        self.build_and_keep(key, version, &build)
    }

    /// Builds the page (in a build slot) and keeps it.
    fn build_and_keep(&self, key: &str, version: &str, build: &Build) -> Result<Built> {
        use std::sync::atomic::Ordering::SeqCst;
        let generation = self.generation.load(SeqCst);
        let t = Instant::now();
        let html = {
            let _slot = self.slot();
            Arc::new(build()?)
        };
        let took = t.elapsed();
        let mut pages = lock(&self.pages);
        if self.generation.load(SeqCst) != generation {
            pages.remove(key);
            return Ok(Built {
                html,
                version: version.to_string(),
            });
        }
        if pages.len() >= MAX_PAGES {
            pages.retain(|_, e| e.version == version && e.built.elapsed() < MAX_AGE);
            // Still full: the oldest quarter goes (never all: one caller asking for many
            // periods must not evict everyone's pages at once).
            if pages.len() >= MAX_PAGES {
                let mut ages: Vec<(Instant, String)> =
                    pages.iter().map(|(k, e)| (e.built, k.clone())).collect();
                ages.sort();
                for (_, k) in ages.into_iter().take(MAX_PAGES / 4) {
                    pages.remove(&k);
                }
            }
        }
        // A slower, older build does not replace a newer page.
        if let Some(e) = pages.get(key)
            && e.version != version
            && e.built > t
        {
            return Ok(Built {
                html,
                version: version.to_string(),
            });
        }
        pages.insert(
            key.to_string(),
            Entry {
                version: version.to_string(),
                built: Instant::now(),
                took,
                html: html.clone(),
                refreshing: false,
            },
        );
        Ok(Built {
            html,
            version: version.to_string(),
        })
    }

    /// Forgets every kept page: after a person's own change (an acknowledgement), the next
    /// view is built afresh, however slow, rather than served as it was.
    pub fn clear(&self) {
        let mut pages = lock(&self.pages);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        pages.clear();
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

/// Quotas evaluated for a scope at an instant, kept for the data version they were
/// evaluated at: the overview, forecasts and billing pages of one scope and instant share
/// one evaluation (with projections, the slowest read of a page).
#[derive(Default)]
pub struct Quotas {
    kept: Mutex<HashMap<QuotaKey, (String, Arc<QuotaSnapshot>)>>,
}

/// A scope (one tenant, or all) and an instant.
type QuotaKey = (Option<String>, i64);

impl Quotas {
    /// The quotas of `tenant` (or all) at `at` for data at `version`, evaluated by
    /// `evaluate` when not kept.
    pub fn get_or_eval(
        &self,
        tenant: Option<&str>,
        at: i64,
        version: &str,
        evaluate: impl FnOnce() -> Result<Vec<crate::billing::quota::QuotaRow>>,
    ) -> Result<Arc<QuotaSnapshot>> {
        let key = (tenant.map(str::to_string), at);
        if let Some((v, q)) = lock(&self.kept).get(&key)
            && v == version
        {
            return Ok(q.clone());
        }
        let q = Arc::new(QuotaSnapshot {
            at,
            rows: evaluate()?,
        });
        let mut kept = lock(&self.kept);
        kept.retain(|_, (v, _)| v == version);
        if kept.len() >= MAX_PAGES {
            kept.clear();
        }
        kept.insert(key, (version.to_string(), q.clone()));
        Ok(q)
    }
}

/// The lake's last commit and the newest modification time under the derived tables.
fn stamp(lake: &Path) -> (u64, String) {
    let seq = crate::lake::Lake::open(lake).map_or(0, |l| l.last_seq());
    let newest = crate::stage::tables::DIRS
        .iter()
        .map(|d| newest_under(&lake.join(d), 3))
        .max()
        .flatten()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    (seq, newest.to_string())
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
        let c = Arc::new(Cache::new(1));
        let builds = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let get = |v: &str| {
            let (b, v2) = (builds.clone(), v.to_string());
            let build: Build = Arc::new(move || {
                b.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(format!("built at {v2}"))
            });
            c.get_or_build("p", v, build).unwrap()
        };
        assert_eq!(*get("1").html, "built at 1");
        assert_eq!(*get("1").html, "built at 1");
        let fresh = get("2");
        assert_eq!(
            (fresh.html.as_str(), fresh.version.as_str()),
            ("built at 2", "2")
        );
        assert_eq!(builds.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn a_slow_page_is_served_stale_while_one_background_build_runs() {
        let c = Arc::new(Cache::new(1));
        let slow: Build = Arc::new(|| {
            std::thread::sleep(SLOW + Duration::from_millis(50));
            Ok("v1".into())
        });
        assert_eq!(*c.get_or_build("p", "1", slow).unwrap().html, "v1");
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let rx = Arc::new(Mutex::new(rx));
        let next: Build = Arc::new(move || {
            let _ = lock(&rx).recv();
            Ok("v2".into())
        });
        // The data moved on: the old page now, a rebuild behind it, only one.
        for _ in 0..3 {
            let b = c.get_or_build("p", "2", next.clone()).unwrap();
            assert_eq!((b.html.as_str(), b.version.as_str()), ("v1", "1"));
        }
        tx.send(()).unwrap();
        let t0 = Instant::now();
        loop {
            let b = c.get_or_build("p", "2", next.clone()).unwrap();
            if b.version == "2" {
                assert_eq!(*b.html, "v2");
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(5), "the rebuild lands");
            std::thread::sleep(Duration::from_millis(10));
        }
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
