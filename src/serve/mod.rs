//! `meterlake serve`: the HTTP API platforms call in their request path.
//!
//! JSON under `/api/v1/usage` (axum on tokio): `POST /track` writes events durably (a
//! write-ahead log, fsynced before the 202) and a background flush commits them to the
//! lake; `/check-quota` and `/quotas` answer from in-memory counters kept exact by the log
//! and the lake; the other endpoints read the lake and the outputs of the batch stages.
//! Every request carries an API key (`Authorization: Bearer KEY` or `X-Api-Key`), scoped
//! to one tenant or admin; a tenant key sees and writes only its own tenant. Hard-capped
//! meters at their limit answer 429, and so does a tenant over its rate (with
//! `Retry-After`). `/healthz`, `/readyz` and `/prometheus` are open.
//!
//! # Layout
//! - `mod.rs` (here): [`ServeOptions`], the shared state [`App`] (the log, the counters,
//!   the limiter, the metrics) with its flush and measure, and [`serve`], which recovers
//!   the log, measures the counters, then listens until a signal and flushes on the way out.
//! - `routes/`: the router and its layers, and the handlers, one file per resource
//!   (`track`, `quota`, `usage`, `analytics`, `alerts`, `reports`, `admin`); its `mod.rs`
//!   has the table of which file serves which endpoint.
//! - `scope.rs`: the extractors that say who calls and which tenant they may see
//!   (`Caller`, `Admin`, `Scope`, `WithBody`); the one place tenant isolation is decided
//!   for reads.
//! - `error.rs`: `ApiError`, the JSON error answer every refusal renders as.
//! - `auth.rs`: API keys (stored hashed) and the per-tenant token bucket.
//! - `wal.rs`: the write-ahead log `/track` fsyncs to, and its commit to the lake.
//! - `counters.rs`: the live per-tenant, per-period counters quotas are answered from.
//! - `heavy.rs`: the limit on heavy requests (one per tenant, `--heavy-concurrency` in all).
//! - `dashboard/`: the browser dashboard at `/` (sign-in, sessions, pages, live updates).

pub mod auth;
pub mod counters;
pub mod dashboard;
mod error;
pub(crate) mod heavy;
mod routes;
mod scope;
pub mod wal;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::billing::Billing;
use crate::error::{Error, Result};
use crate::rollup::Meters;
use auth::{KeysFile, Limiter};
use counters::Counters;
use wal::Ingress;

/// How to serve.
pub struct ServeOptions {
    /// The lake.
    pub lake: PathBuf,
    /// Address to listen on.
    pub bind: SocketAddr,
    /// Plans and tenants (quotas, enforcement).
    pub billing: Billing,
    /// Meter definitions (rollup endpoints).
    pub meters: Meters,
    /// Per-tenant feature overrides (`GET /entitlements/{feature}`).
    pub entitlements: Vec<crate::billing::entitlements::Override>,
    /// Hard caps answer 429 on `/track`.
    pub enforcement: bool,
    /// Detection on demand: the |z| threshold (`anomalies.threshold`)...
    pub anomaly_threshold: f64,
    /// ...and the default granularity (`anomalies.granularity`).
    pub anomaly_granularity: String,
    /// Refresh forecasts, anomalies, quotas and alerts this often (`analytics.interval`;
    /// none: never).
    pub refresh_every: Option<Duration>,
    /// The refresh's memory cap in bytes (`analytics.max_memory`; none: no cap).
    pub refresh_memory: Option<u64>,
    /// The forecasts a refresh fits (`[forecast]`).
    pub forecast: crate::stage::forecast::ForecastSpec,
    /// Raise alerts in a refresh (`limits.notification_enabled`)...
    pub alerts: bool,
    /// ...and send them by these rules.
    pub notify: crate::stage::notify::NotifyConf,
    /// Events a second per tenant on `/track` (0: unlimited).
    pub rate: f64,
    /// Bucket size.
    pub burst: f64,
    /// Flush the log to the lake this often...
    pub flush_interval: Duration,
    /// ...or when this many events are waiting.
    pub flush_events: usize,
    /// Request body limit, bytes.
    pub body_limit: usize,
    /// Records per `/track` request.
    pub max_batch: usize,
    /// Dedup lookback, days.
    pub lookback_days: u32,
    /// Memory for the in-memory part of the dedup index, bytes (beyond it, keys spill to
    /// disk with ~2 bytes each in memory).
    pub dedup_memory: usize,
    /// The dedup index drops days the traffic no longer needs at most this often.
    pub dedup_rebuild_interval: Duration,
    /// Heavy requests (scans, reports, forecasts) at once, in all.
    pub heavy_concurrency: usize,
    /// Compact in the background after this many flushes, merging a day's small files
    /// once it has this many (0: never).
    pub compact_files: usize,
    /// `/track` answers 503 while this many acknowledged events wait for their commit:
    /// what bounds the log's memory when tracking outruns the flushes.
    pub max_lag_events: usize,
    /// Replaces user ids by their pseudonyms before they are logged
    /// (`privacy.pseudonymise_users`).
    pub pseudonym: Option<&'static crate::lake::privacy::Pseudonymiser>,
    /// The local mirror of an `s3://` lake (`lake` is its folder): every commit is sent to
    /// the bucket before its log segment goes, and each flush first takes what other
    /// writers committed. None: the lake is local.
    pub remote: Option<Arc<std::sync::Mutex<crate::lake::remote::Mirror>>>,
}

impl ServeOptions {
    /// A user id from a request as the lake stores it: its pseudonym on a pseudonymised
    /// lake (clients filter by the ids they know).
    pub fn user_in_lake(&self, user: String) -> String {
        match self.pseudonym {
            Some(p) => p.pseudonym(&user),
            None => user,
        }
    }
}

/// Commits of one flush that may lose the race to other writers on an `s3://` lake before
/// the flush gives up (its segment waits for the next one).
const MAX_CONFLICTS: u32 = 30;

/// Files of at least this many rows (a flush under heavy load writes such) are left alone
/// by the background compaction...
const COMPACT_SMALL_ROWS: u64 = 100_000;
/// ...and one merge takes at most this many rows, so a compaction's memory and time stay
/// bounded (~150 MB, well under a second) whatever the partition's size.
const COMPACT_MAX_ROWS: u64 = 500_000;

/// Counters for `/prometheus` and `/admin/metrics`.
#[derive(Default)]
pub struct Metrics {
    accepted: AtomicU64,
    rejected: AtomicU64,
    duplicates: AtomicU64,
    flushes: AtomicU64,
    flushed_events: AtomicU64,
    flush_micros_total: AtomicU64,
    compactions: AtomicU64,
    /// Flushes since the last background compaction.
    since_compact: AtomicU64,
    last_flush_micros: AtomicU64,
    requests: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_sum_micros: AtomicU64,
    /// Events acknowledged but not yet committed to the lake.
    lag: AtomicU64,
    /// Analytics refreshes done, and failed.
    refreshes: AtomicU64,
    refresh_failures: AtomicU64,
    /// The last refresh's end (unix µs) and duration (µs).
    last_refresh_at: AtomicU64,
    last_refresh_micros: AtomicU64,
    /// The lake commit the derived tables reflect.
    refresh_seq: AtomicU64,
    /// The batches the last refresh took its work in (its memory budget).
    refresh_batches: AtomicU64,
}

/// Request latency histogram bounds, seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

impl Metrics {
    fn observe(&self, seconds: f64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| seconds <= *b) {
            self.latency[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The server's shared state.
pub struct App {
    opts: ServeOptions,
    keys: KeysFile,
    ingress: Mutex<Ingress>,
    /// Held by a flush from rotation to commit, and while counters are measured.
    flush_lock: Mutex<()>,
    /// The commits the dedup index may not know ([`wal::Others`]), for the flush.
    others: Mutex<wal::Others>,
    /// This server's name in an `s3://` lake's `_servers/` ([`server_id`]).
    server_id: String,
    counters: Mutex<Counters>,
    limiter: Mutex<Limiter>,
    /// Per-user buckets (plans' `[limits] user_rate`).
    user_limiter: Mutex<auth::UserLimiter>,
    metrics: Metrics,
    ready: AtomicBool,
    flush_wanted: tokio::sync::Notify,
    /// Slots for heavy requests.
    heavy: heavy::Heavy,
    /// When the dedup index was last rebuilt.
    last_rebuild: Mutex<Option<Instant>>,
    /// Batches parsed at once: one core fewer than the machine has (at least one), so a
    /// saturating `/track` load leaves a core for `/check-quota` and the flush.
    track_slots: tokio::sync::Semaphore,
    /// The browser dashboard's sessions and built pages.
    dashboard: dashboard::Dashboard,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking handler cannot leave these structures half-updated in a way later
    // requests could not use (each update is a single insert or push), so poisoning is
    // cleared rather than turning every later request into a 500.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The lake commit the last finished refresh reflected (0: none yet).
fn stage_refresh_seq(lake_dir: &std::path::Path) -> u64 {
    std::fs::read(crate::stage::refresh::state_path(lake_dir))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["seq"].as_u64())
        .unwrap_or(0)
}

impl App {
    /// One analytics refresh ([`crate::stage::refresh`]) on this thread at low priority,
    /// its forecasts and detection on one core; recorded in the metrics. A failure is
    /// logged and retried at the next interval.
    fn refresh_analytics(&self) {
        heavy::lower_this_thread();
        let o = &self.opts;
        let secrets = crate::stage::notify::Secrets::from_env();
        let spec = crate::stage::refresh::RefreshSpec {
            forecast: crate::stage::forecast::ForecastSpec {
                threads: Some(1),
                ..o.forecast.clone()
            },
            detect: crate::stage::anomalies::DetectSpec {
                config: crate::detect::DetectConfig {
                    threshold: o.anomaly_threshold,
                    ..crate::detect::DetectConfig::default()
                },
                since: None,
                threads: Some(1),
            },
            detect_granularity: if o.anomaly_granularity == "day" {
                crate::rollup::Granularity::Day
            } else {
                crate::rollup::Granularity::Hour
            },
            enforcement: o.enforcement,
            alerts: o.alerts,
            notify: (o.alerts && o.notify.enabled()).then_some((&o.notify, &secrets)),
            max_memory: o.refresh_memory,
            before_step: &heavy::lower_polars_threads,
        };
        let m = &self.metrics;
        match crate::stage::refresh::refresh(&o.lake, &o.meters, &o.billing, &spec) {
            Ok(Some(r)) => {
                m.refreshes.fetch_add(1, Ordering::Relaxed);
                m.last_refresh_micros
                    .store((r.seconds * 1e6) as u64, Ordering::Relaxed);
                m.refresh_seq.store(r.lake_seq, Ordering::Relaxed);
                m.refresh_batches.store(r.batches as u64, Ordering::Relaxed);
                tracing::info!(
                    "analytics refreshed to commit {} in {:.1} s ({} batch(es): {} series forecast, {} checked, {} alerts)",
                    r.lake_seq,
                    r.seconds,
                    r.batches,
                    r.forecast_series,
                    r.detect_series,
                    r.alerts_raised
                );
            }
            Ok(None) => {}
            Err(e) => {
                m.refresh_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!("analytics refresh failed (retried next interval): {e}");
            }
        }
        m.last_refresh_at
            .store(crate::time::now().max(0) as u64, Ordering::Relaxed);
    }

    /// Closes the open log segment and commits every closed segment to the lake, oldest
    /// first, each on its own; returns the events committed. A segment whose commit fails
    /// stays first in the queue and is retried, under the same checksum, by the next flush.
    ///
    /// Other writers' commits since the last flush are learnt first: their keys join the
    /// dedup index before the open segment closes, so what is tracked from then on is
    /// checked against them, and what was tracked before is checked as it commits.
    ///
    /// On an `s3://` lake, what the server wrote beside the events is sent and the others'
    /// commits are taken first; each commit is then sent before its segment is deleted. A
    /// commit that loses the race to another writer is taken back (the pull) and made again,
    /// checked against the winner's keys.
    pub fn flush(&self) -> Result<usize> {
        let _f = lock(&self.flush_lock);
        let mut remote = self.opts.remote.as_ref().map(|m| lock(m));
        if let Some(m) = remote.as_mut() {
            // Other machines' `forget` sees that a server (and its log) is here.
            crate::lake::remote::note_server(&self.opts.lake, &self.server_id)?;
            if let crate::lake::remote::Pushed::Conflict(what) = m.push_server()? {
                tracing::info!("{what}: another writer got there first");
            }
            m.pull_server()?;
        }
        let known = {
            let others = lock(&self.others).clone();
            let mut ing = lock(&self.ingress);
            let known = ing.learn(&others)?;
            ing.rotate()?;
            known
        };
        let lookback = lock(&self.ingress).lookback();
        let mut n = 0;
        let mut conflicts = 0;
        loop {
            let Some(closed) = lock(&self.ingress).oldest_closed() else {
                let mut others = lock(&self.others);
                others.since = others.since.max(known);
                others.own.retain(|s| *s > known);
                return Ok(n);
            };
            let t = Instant::now();
            let others = lock(&self.others).clone();
            let (done, seq) = wal::commit_segment(&self.opts.lake, &closed, &others, lookback)?;
            if let Some(m) = remote.as_mut()
                && let crate::lake::remote::Pushed::Conflict(what) = m.push_server()?
            {
                conflicts += 1;
                if conflicts >= MAX_CONFLICTS {
                    return Err(Error::Remote {
                        location: what,
                        reason: format!(
                            "other writers took {conflicts} commits in a row; the segment is retried by the next flush"
                        ),
                    });
                }
                tracing::info!("{what}: another writer got there first; committing again");
                m.pull_server()?;
                continue;
            }
            if let Some(seq) = seq {
                lock(&self.others).own.insert(seq);
            }
            lock(&self.ingress).committed(&closed.path);
            self.metrics
                .lag
                .fetch_sub(closed.events.len() as u64, Ordering::Relaxed);
            let us = t.elapsed().as_micros() as u64;
            let m = &self.metrics;
            m.flushes.fetch_add(1, Ordering::Relaxed);
            m.flushed_events.fetch_add(done as u64, Ordering::Relaxed);
            m.flush_micros_total.fetch_add(us, Ordering::Relaxed);
            m.last_flush_micros.store(us, Ordering::Relaxed);
            m.since_compact.fetch_add(1, Ordering::Relaxed);
            n += done;
        }
    }

    /// Compacts the lake's small files and key files (each flush adds one of each per day
    /// touched) once `--compact-files` flushes have happened since the last time. Holds
    /// the flush lock: no commit of the log runs meanwhile. Returns the commit, if any.
    pub fn compact(&self) -> Result<Option<u64>> {
        let every = self.opts.compact_files as u64;
        if every == 0 || self.metrics.since_compact.load(Ordering::Relaxed) < every {
            return Ok(None);
        }
        let _f = lock(&self.flush_lock);
        let mut remote = self.opts.remote.as_ref().map(|m| lock(m));
        let mut lake = crate::lake::Lake::open_for_write(&self.opts.lake)?;
        let s = crate::lake::compact_with(
            &mut lake,
            &crate::lake::Compaction {
                min_files: self.opts.compact_files,
                only: Vec::new(),
                small_rows: Some(COMPACT_SMALL_ROWS),
                max_rows: Some(COMPACT_MAX_ROWS),
            },
        )?;
        self.metrics.since_compact.store(0, Ordering::Relaxed);
        drop(lake);
        if let Some(m) = remote.as_mut()
            && s.commit.is_some()
            && let crate::lake::remote::Pushed::Conflict(what) = m.push_server()?
        {
            // Another writer's commit took the number: this compaction is dropped (the
            // pull takes it back) and done again later.
            tracing::info!("{what}: compaction lost to another writer's commit");
            m.pull_server()?;
            return Ok(None);
        }
        if s.commit.is_some() {
            self.metrics.compactions.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                commit = s.commit,
                files_before = s.files_before,
                files_after = s.files_after,
                key_files = s.key_files_merged,
                "compacted"
            );
        }
        Ok(s.commit)
    }

    /// Bounds the dedup index again to the days the traffic needs (see
    /// [`wal::Ingress::days_to_keep`]), at most once per `--dedup-rebuild-secs`: the
    /// lake's keys are loaded under the flush lock only, then swapped in under the log's
    /// lock with the keys of the events not yet committed. Returns whether it rebuilt.
    pub fn refresh_keys(&self) -> Result<bool> {
        let due = lock(&self.last_rebuild)
            .is_none_or(|t| t.elapsed() >= self.opts.dedup_rebuild_interval);
        if !due {
            return Ok(false);
        }
        let today = crate::time::day_of(crate::time::now());
        let _f = lock(&self.flush_lock);
        let (plan, days) = {
            let mut ing = lock(&self.ingress);
            let Some(days) = ing.days_to_keep(today) else {
                return Ok(false);
            };
            (ing.rebuild_plan(), days)
        };
        *lock(&self.last_rebuild) = Some(Instant::now());
        let rebuilt = wal::rebuild_keys(&self.opts.lake, plan, days)?;
        lock(&self.ingress).swap_keys(rebuilt)?;
        Ok(true)
    }

    /// Makes sure the counters of `tenants` cover `at` (measuring those that do not).
    pub fn ensure_counters(&self, tenants: &[&str], at: i64) -> Result<()> {
        let b = &self.opts.billing;
        let missing: Vec<&crate::billing::plans::Tenant> = {
            let c = lock(&self.counters);
            tenants
                .iter()
                .filter(|t| !c.covers(b, t, at))
                .filter_map(|t| b.tenants.iter().find(|x| x.id == *t))
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        self.measure(&missing, at)
    }

    /// Measures the counters of `tenants` afresh: the lake under the flush lock (so no
    /// commit moves events from the log into the lake meanwhile), then, under the log's
    /// lock only long enough to add the logged events, the swap. `/track` holds the log's
    /// lock only to append, so it never waits for the lake scan.
    fn measure(&self, tenants: &[&crate::billing::plans::Tenant], at: i64) -> Result<()> {
        let _f = lock(&self.flush_lock);
        let mut fresh = Counters::default();
        fresh.measure(&self.opts.lake, &self.opts.billing, tenants, at, &[])?;
        let ing = lock(&self.ingress);
        let logged: Vec<&wal::Logged> = ing
            .unflushed()
            .filter(|l| tenants.iter().any(|t| t.id == l.event.tenant_id))
            .collect();
        fresh.add_logged(&self.opts.billing, &logged);
        lock(&self.counters).replace(fresh, tenants);
        Ok(())
    }
}

/// Runs the server until SIGINT or SIGTERM; then flushes the log.
pub fn serve(opts: ServeOptions) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("tokio runtime", e))?;
    rt.block_on(run(opts))
}

async fn run(opts: ServeOptions) -> Result<()> {
    crate::lake::check_location(&opts.lake, "--lake")?;
    std::fs::create_dir_all(&opts.lake).map_err(|e| Error::io(&opts.lake, e))?;
    // Checks the encryption key and pseudonymisation against the lake's under the log's lock.
    let ingress = Ingress::open(
        &opts.lake,
        opts.lookback_days,
        opts.dedup_memory,
        opts.pseudonym,
    )?;
    let keys = KeysFile::load(&opts.lake)?;
    let server_id = server_id(&opts.lake)?;
    let limiter = Limiter::new(opts.rate, opts.burst);
    let heavy = heavy::Heavy::new(opts.heavy_concurrency);
    let bind = opts.bind;
    let dashboard = dashboard::Dashboard::new(opts.heavy_concurrency);
    let app = Arc::new(App {
        dashboard,
        opts,
        keys,
        server_id,
        others: Mutex::new(wal::Others {
            since: ingress.opened_at(),
            own: Default::default(),
        }),
        ingress: Mutex::new(ingress),
        flush_lock: Mutex::new(()),
        counters: Mutex::new(Counters::default()),
        limiter: Mutex::new(limiter),
        user_limiter: Mutex::new(auth::UserLimiter::default()),
        metrics: Metrics::default(),
        ready: AtomicBool::new(false),
        flush_wanted: tokio::sync::Notify::new(),
        heavy,
        last_rebuild: Mutex::new(None),
        track_slots: tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1)),
        ),
    });
    app.metrics
        .refresh_seq
        .store(stage_refresh_seq(&app.opts.lake), Ordering::Relaxed);
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| Error::io(format!("--bind {bind}"), e))?;
    let local = listener.local_addr().map_err(|e| Error::io("socket", e))?;
    // Segments left by an earlier process go into the lake first; if that fails (a full
    // disk), they stay queued, counted as unflushed, and the flusher retries them.
    {
        let a = app.clone();
        match tokio::task::spawn_blocking(move || a.flush()).await {
            Ok(Ok(n)) if n > 0 => eprintln!("meterlake serve: {n} logged events recovered"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!("recovering the log failed (retried by the flusher): {e}")
            }
            Err(e) => tracing::error!("recovering the log: {e}"),
        }
    }
    // Counters of every tenant with a plan, for the current period.
    {
        let a = app.clone();
        tokio::task::spawn_blocking(move || {
            let all: Vec<&crate::billing::plans::Tenant> = a.opts.billing.tenants.iter().collect();
            a.measure(&all, crate::time::now())
        })
        .await
        .map_err(|e| Error::Render(format!("startup: {e}")))??;
    }
    // Polars has started its pool by now (the counters above): it serves heavy requests.
    heavy::lower_polars_threads();
    let lag = lock(&app.ingress).lag() as u64;
    app.metrics.lag.store(lag, Ordering::Relaxed);
    app.ready.store(true, Ordering::SeqCst);
    dashboard::prewarm(app.clone());
    let signals = Signals::register()?;
    eprintln!("meterlake serve: listening on http://{local}");
    let flusher = {
        let a = app.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(a.opts.flush_interval) => {}
                    _ = a.flush_wanted.notified() => {}
                }
                let b = a.clone();
                match tokio::task::spawn_blocking(move || {
                    let n = b.flush()?;
                    b.compact()?;
                    b.refresh_keys()?;
                    Ok::<_, Error>(n)
                })
                .await
                {
                    Ok(Err(e)) => tracing::error!("flush failed (retried on the next tick): {e}"),
                    Err(e) => tracing::error!("flush task: {e}"),
                    Ok(Ok(_)) => {}
                }
            }
        })
    };
    let keys_watch = {
        let a = app.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if a.keys.refresh() {
                    tracing::info!("API keys reloaded");
                }
            }
        })
    };
    // The analytics refresh: at start (a refresh a kill -9 cut short resumes) and then
    // every interval, one at a time, on a thread of its own at the lowest CPU priority (not
    // a tokio thread: those answer requests at normal priority). It ends with the process;
    // a refresh cut off by the exit is redone at the next start.
    if let Some(every) = app.opts.refresh_every {
        let a = app.clone();
        std::thread::Builder::new()
            .name("mlk-refresh".into())
            .spawn(move || {
                loop {
                    a.refresh_analytics();
                    std::thread::sleep(every);
                }
            })
            .map_err(|e| Error::io("analytics refresh thread", e))?;
    }
    let router = routes::router(app.clone());
    axum::serve(listener, router)
        .with_graceful_shutdown(signals.received())
        .await
        .map_err(|e| Error::io("serve", e))?;
    flusher.abort();
    keys_watch.abort();
    let a = app.clone();
    let n = tokio::task::spawn_blocking(move || a.flush())
        .await
        .map_err(|e| Error::Render(format!("final flush: {e}")))??;
    if let Some(m) = app.opts.remote.clone() {
        let (a, id) = (app.clone(), app.server_id.clone());
        tokio::task::spawn_blocking(move || {
            crate::lake::remote::unnote_server(&a.opts.lake, &id);
            lock(&m).push_server().map(|_| ())
        })
        .await
        .map_err(|e| Error::Render(format!("final push: {e}")))??;
    }
    eprintln!("meterlake serve: stopped; {n} events flushed on the way out");
    Ok(())
}

/// The server's name, kept beside its log (`_wal/server-id`, never sent): random at the
/// first start, the same after a restart on the same log, so a restarted server takes over
/// its note in an `s3://` lake's `_servers/` instead of leaving a second one.
fn server_id(lake: &std::path::Path) -> Result<String> {
    let path = lake.join(wal::WAL_DIR).join("server-id");
    if let Ok(id) = std::fs::read_to_string(&path)
        && !id.trim().is_empty()
    {
        return Ok(id.trim().to_string());
    }
    let id = crate::lake::random_hex(8)?;
    std::fs::write(&path, &id).map_err(|e| Error::io(&path, e))?;
    Ok(id)
}

/// The signals that stop the server, registered before it says it listens: a SIGTERM sent
/// as soon as the address is printed then stops it gracefully (flushing the log), instead of
/// killing it by the signal's default action.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let io = |e| Error::io("signal handler", e);
            Ok(Signals {
                term: signal(SignalKind::terminate()).map_err(io)?,
                int: signal(SignalKind::interrupt()).map_err(io)?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Waits for SIGTERM or SIGINT (Ctrl-C elsewhere).
    async fn received(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {},
            _ = self.int.recv() => {},
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
