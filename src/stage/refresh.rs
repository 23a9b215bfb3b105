//! Keeping the derived tables current without a batch job: what `meterlake serve` runs
//! every `analytics.interval` ([`refresh`]).
//!
//! One refresh, when the lake has commits it has not seen:
//! 1. the series (tenant × meter) whose events changed: those in the files the new
//!    ingest commits added (a compaction changes no rows; a retention or forget commit, or
//!    commits folded into a checkpoint since, mean all series);
//! 2. their daily forecasts and their anomaly detection
//!    ([`super::forecast::forecast_lake_for`], [`super::anomalies::detect_lake_for`]:
//!    rollups brought up to date incrementally, only those series fitted, their rows
//!    replaced in the tables), so the tables equal what a whole `meterlake run` writes;
//! 3. quotas as of the lake's last event, the alerts they raise, and their notifications.
//!
//! Once a day ([`FULL_EVERY`]), and at the first refresh of a lake, every series is
//! recomputed instead.
//!
//! Its state is the last lake commit it finished (`LAKE/_serve/refresh.json`), written
//! last: a refresh killed midway leaves tables each whole (every write is atomic) and the
//! old state, so the next one redoes the same tenants, which gives the same rows (forecasts
//! and detection are deterministic; alerts are raised once by id): nothing is lost or
//! counted twice.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::alerts::{RaiseOptions, raise_from};
use super::anomalies::{DetectSpec, detect_lake_for};
use super::forecast::{ForecastSpec, forecast_lake_for};
use super::notify::{NotifyConf, Secrets};
use super::quotas;
use super::tables::SeriesKey;
use crate::billing::Billing;
use crate::error::{IoContext, Result};
use crate::lake::{CommitKind, Lake};
use crate::rollup::{Granularity, Meters, RollupOptions, RollupSpec, rollup};
use crate::time::MICROS_PER_DAY;

/// What a refresh runs.
pub struct RefreshSpec<'a> {
    /// Forecasts (daily series).
    pub forecast: ForecastSpec,
    /// Detection...
    pub detect: DetectSpec,
    /// ...on these rollups.
    pub detect_granularity: Granularity,
    /// Hard caps block (quota status).
    pub enforcement: bool,
    /// Raise alerts from the quotas and new incidents.
    pub alerts: bool,
    /// And send them by these rules.
    pub notify: Option<(&'a NotifyConf, &'a Secrets)>,
    /// The memory the forecasts and detection may hold at once, in bytes (none: no cap):
    /// a refresh over more series runs in batches of tenants ([`batches`]).
    pub max_memory: Option<u64>,
    /// Called before each step (`serve` lowers the priority of the polars threads the
    /// step before may have started).
    pub before_step: &'a (dyn Fn() + Sync),
}

/// What a refresh did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Refreshed {
    /// The lake commit the tables now reflect.
    pub lake_seq: u64,
    /// Series recomputed (none: all).
    pub changed_series: Option<usize>,
    /// Series forecast.
    pub forecast_series: usize,
    /// Series checked for anomalies.
    pub detect_series: usize,
    /// Batches of tenants the work was taken in (the more of the forecasts-and-detection
    /// and the quota batches; 1: all at once).
    pub batches: usize,
    /// Alerts raised.
    pub alerts_raised: usize,
    /// Notifications sent.
    pub notified: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    seq: u64,
    /// When the last whole refresh (every series) ended (UTC µs; 0: never).
    #[serde(default)]
    full_at: i64,
}

/// A whole refresh at least this often, as a safety net: every derived row depends only on
/// its own series' events (the user-level patterns compare a user with the other users of
/// the same tenant × meter), so an incremental refresh is exact, but a whole one a day
/// also repairs anything a failed or interrupted refresh left behind.
pub const FULL_EVERY: i64 = MICROS_PER_DAY;

/// What a refresh holds per rollup row of the detection's granularity (the series and the
/// detectors' state, the forecasts' daily series being 24 times smaller) and per event
/// (the user patterns' instants and user ids), in bytes: the budget's estimate. Measured
/// on the 1,000-tenant lake (12.1 M hourly rows, 4.9 M events): detection alone peaked
/// at 0.54 GB RSS, with the user patterns at 0.68 GB; rounded up.
const ROW_BYTES: u64 = 48;
const EVENT_BYTES: u64 = 32;
/// What the quotas hold per event of their windows (the period and its history, joined
/// to the tenants' windows): 0.84 GB RSS for the same lake's 4.9 M events.
const QUOTA_EVENT_BYTES: u64 = 176;

/// How a refresh takes its work within its memory budget.
struct Batches {
    /// The series of each forecast-and-detection step (none: all).
    series: Vec<Option<BTreeSet<SeriesKey>>>,
    /// The tenants of each quota step (none: all).
    tenants: Vec<Option<BTreeSet<String>>>,
}

/// Items with their estimated bytes, in order, cut into consecutive groups each within
/// `budget` (unless one item alone exceeds it: it then closes its group).
fn cut<T>(items: Vec<(u64, T)>, budget: u64) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = vec![Vec::new()];
    let mut held = 0;
    for (bytes, item) in items {
        if held > 0 && held + bytes > budget {
            out.push(Vec::new());
            held = 0;
        }
        held += bytes;
        out.last_mut().expect("one group").push(item);
    }
    out
}

/// The work of a refresh (`changed`; none: every series of the rollups, and those the
/// tables hold that the rollups no longer have, so they are removed) in batches of whole
/// tenants, each estimated ([`ROW_BYTES`], [`EVENT_BYTES`], [`QUOTA_EVENT_BYTES`]) within
/// `budget` bytes. One batch of everything when it all fits: the stages then run once, as
/// a batch job runs them.
fn batches(
    lake: &Lake,
    meters: &Meters,
    billing: &Billing,
    detect: Granularity,
    changed: Option<&BTreeSet<SeriesKey>>,
    budget: Option<u64>,
) -> Result<Batches> {
    let whole = || Batches {
        series: vec![changed.cloned()],
        tenants: vec![None],
    };
    let Some(budget) = budget else {
        return Ok(whole());
    };
    // Both rollups current first (the stages would bring them so anyway), then sized from
    // the day rollup alone, 24 times smaller than the hourly one: a series has at most 24
    // hourly rows per daily row (exactly that many when complete), and the same events.
    for g in [Granularity::Day, detect] {
        rollup(lake, meters, &RollupSpec::new(g), &RollupOptions::default())?;
    }
    let per_day: u64 = if detect == Granularity::Hour { 24 } else { 0 };
    let mut series_bytes: BTreeMap<SeriesKey, u64> = BTreeMap::new();
    let mut tenant_events: BTreeMap<String, u64> = BTreeMap::new();
    let day = RollupSpec::new(Granularity::Day);
    for (key, (rows, events)) in crate::rollup::series_sizes(lake, &day)? {
        *tenant_events.entry(key.0.clone()).or_default() += events;
        series_bytes.insert(key, rows * (1 + per_day) * ROW_BYTES + events * EVENT_BYTES);
    }
    let mut tenants: BTreeMap<String, (u64, Vec<SeriesKey>)> = BTreeMap::new();
    for (key, bytes) in series_bytes {
        if changed.is_none_or(|c| c.contains(&key)) {
            let t = tenants.entry(key.0.clone()).or_default();
            t.0 += bytes;
            t.1.push(key);
        }
    }
    let mut series: Vec<BTreeSet<SeriesKey>> = cut(tenants.into_values().collect(), budget)
        .into_iter()
        .map(|g| g.into_iter().flatten().collect())
        .collect();
    if series.len() > 1 && changed.is_none() {
        // Series the tables hold but the rollups lost (a forget, a retention) go with the
        // last batch, which then replaces their rows with none.
        let lake_dir = lake.root();
        let (f, a) = (
            super::tables::forecasts::dir(lake_dir, &Granularity::Day.to_string()),
            super::tables::incidents::dir(lake_dir, &detect.to_string()),
        );
        let mut held: BTreeSet<SeriesKey> = BTreeSet::new();
        for p in [
            f.join(super::tables::forecasts::FORECAST_FILE),
            f.join(super::tables::forecasts::METRICS_FILE),
            a.join(super::tables::incidents::FILE),
            a.join(super::tables::incidents::POINTS_FILE),
        ] {
            held.extend(super::tables::series_in(&p)?);
        }
        let batched: BTreeSet<SeriesKey> = series.iter().flatten().cloned().collect();
        let last = series.last_mut().expect("one batch");
        last.extend(held.into_iter().filter(|k| !batched.contains(k)));
    }
    // Quotas: every tenant of the tenants file, in its order (the rows' order).
    let tenants: Vec<Vec<String>> = cut(
        billing
            .tenants
            .iter()
            .map(|t| {
                let events = tenant_events.get(&t.id).copied().unwrap_or(0);
                (events * QUOTA_EVENT_BYTES, t.id.clone())
            })
            .collect(),
        budget,
    );
    Ok(Batches {
        series: if series.len() > 1 {
            series.into_iter().map(Some).collect()
        } else {
            vec![changed.cloned()]
        },
        tenants: if tenants.len() > 1 {
            tenants
                .into_iter()
                .map(|g| Some(g.into_iter().collect()))
                .collect()
        } else {
            vec![None]
        },
    })
}

/// The state file of a lake.
pub fn state_path(lake_dir: &Path) -> PathBuf {
    lake_dir.join("_serve").join("refresh.json")
}

fn read_state(lake_dir: &Path) -> State {
    std::fs::read(state_path(lake_dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_state(lake_dir: &Path, s: &State) -> Result<()> {
    let path = state_path(lake_dir);
    let dir = path.parent().expect("state has a folder");
    std::fs::create_dir_all(dir).at(dir)?;
    let tmp = super::tables::temp_path(&path);
    let bytes = serde_json::to_vec(s).unwrap_or_default();
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .at(&tmp)?;
    std::fs::rename(&tmp, &path).at(&path)
}

/// The tenant × meter series whose events changed after commit `seen` (none: all).
fn changed_series(lake: &Lake, seen: u64) -> Result<Option<BTreeSet<SeriesKey>>> {
    let commits = lake.recent_commits();
    // Commits folded into a checkpoint since: their files are no longer told apart.
    if commits.first().is_none_or(|c| c.seq > seen + 1) && lake.last_seq() > seen {
        return Ok(None);
    }
    let mut files = Vec::new();
    for c in commits.iter().filter(|c| c.seq > seen) {
        match c.kind {
            CommitKind::Compact => {}
            CommitKind::Ingest | CommitKind::Restore => files.extend(c.added.iter().cloned()),
            CommitKind::Retention | CommitKind::Forget => return Ok(None),
        }
    }
    if files.is_empty() {
        return Ok(Some(BTreeSet::new()));
    }
    let df = crate::lake::scan_files(lake, &files)?
        .select([col("tenant_id"), col("meter")])
        .unique(None, UniqueKeepStrategy::Any)
        .collect()?;
    let (t, m) = (df.column("tenant_id")?.str()?, df.column("meter")?.str()?);
    Ok(Some(
        t.iter()
            .zip(m.iter())
            .map(|(t, m)| {
                (
                    t.unwrap_or_default().to_string(),
                    m.unwrap_or_default().to_string(),
                )
            })
            .collect(),
    ))
}

/// Brings the derived tables up to date with the lake, for the series whose events
/// changed since the last refresh (their series); `None` when there was nothing new.
pub fn refresh(
    lake_dir: &Path,
    meters: &Meters,
    billing: &Billing,
    spec: &RefreshSpec,
) -> Result<Option<Refreshed>> {
    let clock = std::time::Instant::now();
    let lake = Lake::open(lake_dir)?;
    lake.check_writer()?;
    let state = read_state(lake_dir);
    let seq = lake.last_seq();
    if seq == state.seq || lake.data_files().is_empty() {
        return Ok(None);
    }
    let now = crate::time::now();
    let full = state.full_at == 0 || now - state.full_at >= FULL_EVERY;
    let changed = if full {
        None
    } else {
        changed_series(&lake, state.seq)?
    };
    let mut out = Refreshed {
        lake_seq: seq,
        changed_series: changed.as_ref().map(BTreeSet::len),
        ..Refreshed::default()
    };
    if changed.as_ref().is_none_or(|c| !c.is_empty()) {
        (spec.before_step)();
        let plan = batches(
            &lake,
            meters,
            billing,
            spec.detect_granularity,
            changed.as_ref(),
            spec.max_memory,
        )?;
        out.batches = plan.series.len().max(plan.tenants.len());
        for scope in &plan.series {
            (spec.before_step)();
            let part = super::tables::Part {
                only: scope.as_ref(),
                ..Default::default()
            };
            let f = forecast_lake_for(lake_dir, meters, Granularity::Day, &spec.forecast, part)?;
            out.forecast_series += f.series;
            // Fault point: a refresh cut off between its tables (tests kill it here).
            crate::fault::check("refresh.tables").at(lake_dir)?;
            (spec.before_step)();
            let d = detect_lake_for(
                lake_dir,
                meters,
                spec.detect_granularity,
                &spec.detect,
                part,
            )?;
            out.detect_series += d.series;
        }
        // Quotas as of the lake's last event, as the batch job evaluates them.
        (spec.before_step)();
        let at = crate::billing::parse_at(&lake, "latest")?;
        let mut rows = Vec::new();
        for among in plan.tenants {
            (spec.before_step)();
            rows.extend(quotas::evaluate_among(&lake, billing, at, None, among)?);
        }
        quotas::write(lake_dir, &rows, spec.enforcement)?;
        if spec.alerts {
            let new = raise_from(&lake, billing, &rows, &RaiseOptions::batch(at))?;
            out.alerts_raised = new.len();
            if let Some((conf, secrets)) = spec.notify {
                out.notified =
                    super::notify::deliver(lake_dir, billing, conf, secrets, crate::time::now())?
                        .sent;
            }
        }
    }
    crate::fault::check("refresh.state").at(lake_dir)?;
    let full_at = if changed.is_none() {
        now
    } else {
        state.full_at
    };
    write_state(lake_dir, &State { seq, full_at })?;
    out.seconds = clock.elapsed().as_secs_f64();
    Ok(Some(out))
}
