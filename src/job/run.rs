//! `meterlake run`: the batch job analytics teams schedule. Ingest the configured inputs,
//! apply retention, roll up, forecast, detect anomalies, evaluate quotas and raise (and
//! send) alerts, write the last complete month's invoices and the reports, and say what
//! each stage did and how long it took.
//!
//! Every stage is incremental: ingest skips inputs already in the lake (by checksum),
//! rollups recompute only the partitions new commits touched, and forecasts, anomalies and
//! reports are recomputed only when the lake (or their configuration) changed since the
//! last run (`LAKE/_run/state.json`); `force` recomputes them anyway. Quotas and alerts are
//! evaluated on every run (alerts are raised once each, whatever the number of runs).
//!
//! Outputs: the lake (with `forecasts/`, `anomalies/`, `alerts/` and `quotas/quotas.parquet`),
//! `OUT/invoices/YYYY-MM.json` and `OUT/reports/KIND/KIND.EXT`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::retention::{RetentionOptions, retention};
use crate::billing::quota::QuotaRow;
use crate::billing::{Billing, parse_at};
use crate::config::Config;
use crate::detect::DetectConfig;
use crate::error::{Error, IoContext, Result};
use crate::forecast::ModelOptions;
use crate::ingest::{IngestOptions, ingest};
use crate::lake::Lake;
use crate::report::{QuotaSnapshot, ReportOptions, write_kinds};
use crate::rollup::{Granularity, Meters, RollupOptions, RollupSpec, rollup};
use crate::series::Fill;
use crate::stage::alerts::{RaiseOptions, SECRET_ENV, Webhook, deliver, raise_from};
use crate::stage::anomalies::{DetectSpec, detect_lake};
use crate::stage::forecast::{ForecastSpec, forecast_lake};
use crate::stage::{quotas, tables};

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Progress on stderr.
    pub progress: bool,
    /// Recompute forecasts, anomalies and reports even when nothing changed.
    pub force: bool,
}

/// One stage's time and outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    /// Its name.
    pub stage: String,
    /// Seconds it took.
    pub seconds: f64,
    /// What it did.
    pub note: String,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunSummary {
    /// Records read by this run's ingest.
    pub read: u64,
    /// Events it accepted.
    pub accepted: u64,
    /// Records it rejected.
    pub rejected: u64,
    /// Duplicates it dropped.
    pub duplicates: u64,
    /// Events in the lake after the run.
    pub events: u64,
    /// Tenants in the lake.
    pub tenants: usize,
    /// Anomaly incidents found (last detection).
    pub anomalies: usize,
    /// Alerts raised by this run.
    pub alerts_raised: usize,
    /// Alert deliveries by this run (the webhook's, and the notify channels' alert ×
    /// channel deliveries).
    pub alerts_delivered: usize,
    /// Tenant × meter quotas over their allowance.
    pub quotas_exceeded: usize,
    /// The invoices file written.
    pub invoices: Option<PathBuf>,
    /// Report files written.
    pub reports: Vec<PathBuf>,
    /// Per stage.
    pub stages: Vec<Stage>,
    /// Whole run, seconds.
    pub seconds: f64,
}

/// What the last run computed from (`LAKE/_run/state.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct State {
    forecast: Option<String>,
    detect: Option<String>,
    reports: Option<String>,
}

const STATE: &str = "_run/state.json";

fn read_state(lake: &Path) -> State {
    std::fs::read(lake.join(STATE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_state(lake: &Path, s: &State) -> Result<()> {
    let p = lake.join(STATE);
    let dir = p.parent().expect("has a parent");
    std::fs::create_dir_all(dir).at(dir)?;
    crate::report::atomic_write(&p, &serde_json::to_vec_pretty(s).unwrap_or_default())
}

/// A stage's fingerprint: the lake's last commit and the settings it depends on.
fn fingerprint(lake: &Lake, parts: &impl Serialize) -> String {
    format!(
        "{}|{}",
        lake.last_seq(),
        serde_json::to_string(parts).unwrap_or_default()
    )
}

struct Clock {
    stages: Vec<Stage>,
    progress: bool,
}

impl Clock {
    fn time<T>(&mut self, name: &str, f: impl FnOnce() -> Result<(T, String)>) -> Result<T> {
        if self.progress {
            eprintln!("» {name} ...");
        }
        let t = Instant::now();
        let (v, note) = f().map_err(|e| stage_error(name, e))?;
        // What the stage freed goes back before the next one builds its working set.
        crate::memory::release();
        let seconds = t.elapsed().as_secs_f64();
        if self.progress {
            eprintln!("  {name}: {note} ({seconds:.2} s)");
        }
        self.stages.push(Stage {
            stage: name.into(),
            seconds,
            note,
        });
        Ok(v)
    }
}

fn stage_error(stage: &str, e: Error) -> Error {
    match e {
        Error::InvalidParameter { name, reason } => Error::InvalidParameter {
            name,
            reason: format!("{reason} (stage {stage})"),
        },
        other => other,
    }
}

/// Runs the batch job: each stage in turn, timed, its outcome noted in the summary.
pub fn run(c: &Config, opts: &RunOptions) -> Result<RunSummary> {
    c.validate()?;
    let start = Instant::now();
    let mut job = Job::new(c, opts)?;
    job.ingest()?;
    job.retention()?;
    let lake = job.open_lake()?;
    job.rollups(&lake)?;
    let mut state = read_state(job.lake_dir());
    job.forecasts(&lake, &mut state)?;
    job.anomalies(&lake, &mut state)?;
    let quotas = match job.billing.take() {
        None => {
            job.no_billing()?;
            None
        }
        Some(b) => {
            let at = parse_at(&lake, "latest")?;
            let rows = job.quotas(&lake, &b, at)?;
            job.alerts(&lake, &b, &rows, at)?;
            job.invoices(&lake, &b, at)?;
            job.billing = Some(b);
            Some(QuotaSnapshot { at, rows })
        }
    };
    job.reports(&lake, &mut state, quotas.as_ref())?;
    let mut s = job.summary;
    s.stages = job.clock.stages;
    s.seconds = start.elapsed().as_secs_f64();
    Ok(s)
}

/// One run in progress: its configuration, what it loaded, and what it has done so far.
struct Job<'a> {
    c: &'a Config,
    opts: &'a RunOptions,
    meters: Meters,
    billing: Option<Billing>,
    clock: Clock,
    summary: RunSummary,
}

impl<'a> Job<'a> {
    fn new(c: &'a Config, opts: &'a RunOptions) -> Result<Job<'a>> {
        // A path set away from its default that does not exist is a typo: without it the
        // job would silently skip quotas, alerts and invoicing (or use other meters).
        for (name, path, default) in [
            (
                "paths.plans",
                &c.paths.plans,
                crate::billing::DEFAULT_PLANS_FILE,
            ),
            (
                "paths.tenants",
                &c.paths.tenants,
                crate::billing::DEFAULT_TENANTS_FILE,
            ),
            (
                "paths.meters",
                &c.paths.meters,
                crate::rollup::DEFAULT_METERS_FILE,
            ),
        ] {
            if path != Path::new(default) && !path.is_file() {
                return Err(Error::InvalidParameter {
                    name,
                    reason: format!("{}: no such file", path.display()),
                });
            }
        }
        let meters = Meters::load_or_default(
            Some(&c.paths.meters)
                .filter(|p| p.is_file())
                .map(PathBuf::as_path),
        )?;
        let billing = if c.paths.plans.is_file() && c.paths.tenants.is_file() {
            Some(Billing::load(&c.paths.plans, &c.paths.tenants)?)
        } else {
            None
        };
        Ok(Job {
            c,
            opts,
            meters,
            billing,
            clock: Clock {
                stages: Vec::new(),
                progress: opts.progress,
            },
            summary: RunSummary::default(),
        })
    }

    fn lake_dir(&self) -> &'a Path {
        self.c.paths.lake.as_path()
    }

    /// The granularity anomaly detection runs on.
    fn detect_granularity(&self) -> Granularity {
        if self.c.anomalies.granularity == "day" {
            Granularity::Day
        } else {
            Granularity::Hour
        }
    }

    /// 1. Ingest the configured inputs (those already in the lake are skipped).
    fn ingest(&mut self) -> Result<()> {
        let (c, lake_dir, progress) = (self.c, self.lake_dir(), self.opts.progress);
        let s = &mut self.summary;
        self.clock.time("ingest", || {
            if !c.tracking.enabled {
                // Creates the lake (and refuses a URL) as it opens it.
                drop(Lake::open_for_write(lake_dir)?);
                return Ok(((), "tracking disabled: nothing ingested".into()));
            }
            let inputs: Vec<PathBuf> = c.paths.inputs.clone();
            if inputs.is_empty() {
                drop(Lake::open_for_write(lake_dir)?);
                return Ok(((), "no inputs configured".into()));
            }
            let r = ingest(
                lake_dir,
                &inputs,
                &IngestOptions {
                    progress,
                    limits: crate::ingest::Limits::relative_to(crate::time::now())
                        .pseudonymising(c.privacy.pseudonymiser()?),
                    ..IngestOptions::default()
                },
            )?;
            s.read = r.read;
            s.accepted = r.accepted;
            s.rejected = r.rejected;
            s.duplicates = r.duplicates;
            Ok((
                (),
                format!(
                    "read {} = accepted {} + rejected {} + duplicates {}; {} input(s) already in the lake",
                    r.read, r.accepted, r.rejected, r.duplicates, r.skipped.len()
                ),
            ))
        })
    }

    /// 2. Retention, when configured.
    fn retention(&mut self) -> Result<()> {
        let (c, lake_dir) = (self.c, self.lake_dir());
        if c.tracking.events_days().is_none() && c.tracking.metrics_days().is_none() {
            return Ok(());
        }
        // With billing, events of periods not invoiced yet stay (all of them before the
        // first invoice is issued; after it, those after the last issued month and those
        // before the first, never issued).
        let register = crate::stage::invoices::Register::of(lake_dir);
        let (unbilled, billed_from) = match self.billing {
            Some(_) => (
                Some(register.unbilled_from()?.unwrap_or_default()),
                register.billed_from()?,
            ),
            None => (None, None),
        };
        self.clock.time("retention", || {
            let r = retention(
                lake_dir,
                &RetentionOptions {
                    events_days: c.tracking.events_days(),
                    rollups_days: c.tracking.metrics_days(),
                    archive: None,
                    now: crate::time::now(),
                    actor: crate::lake::audit::current_actor(),
                    keep_from: unbilled,
                    keep_before: billed_from,
                    force: false,
                },
            )?;
            if !r.kept_unbilled.is_empty() {
                eprintln!(
                    "warning: retention kept {} expired event partitions ({}..{}) of periods not yet invoiced",
                    r.kept_unbilled.len(),
                    r.kept_unbilled[0],
                    r.kept_unbilled[r.kept_unbilled.len() - 1]
                );
            }
            Ok((
                (),
                format!(
                    "dropped {} event rows in {} partitions, {} rollup partitions",
                    r.event_rows,
                    r.event_partitions.len(),
                    r.rollup_partitions
                ),
            ))
        })
    }

    /// The lake the later stages read: it must hold events.
    fn open_lake(&mut self) -> Result<Lake> {
        let lake_dir = self.lake_dir();
        let lake = Lake::open(lake_dir)?;
        lake.check_writer()?;
        if lake.data_files().is_empty() {
            return Err(Error::InvalidParameter {
                name: "paths.inputs",
                reason: format!(
                    "the lake {} holds no events: configure inputs (or ingest some) first",
                    lake_dir.display()
                ),
            });
        }
        let stats = crate::lake::stats(&lake)?;
        self.summary.events = stats.rows;
        self.summary.tenants = stats.tenants as usize;
        Ok(lake)
    }

    /// 3. Day rollups (forecasts and reports) and the detection granularity's.
    fn rollups(&mut self, lake: &Lake) -> Result<()> {
        let (meters, detect_g) = (&self.meters, self.detect_granularity());
        self.clock.time("rollups", || {
            let mut notes = Vec::new();
            for g in [Granularity::Day, detect_g] {
                if notes.iter().any(|n: &String| n.starts_with(&g.to_string())) {
                    continue;
                }
                let r = rollup(lake, meters, &RollupSpec::new(g), &RollupOptions::default())?;
                notes.push(format!(
                    "{g}: {:?}, {} partitions written",
                    r.mode, r.partitions_written
                ));
            }
            Ok(((), notes.join("; ")))
        })
    }

    /// 4. Forecasts of every daily series, unless the lake and settings are unchanged.
    fn forecasts(&mut self, lake: &Lake, state: &mut State) -> Result<()> {
        let (c, lake_dir, meters) = (self.c, self.lake_dir(), &self.meters);
        let fp = fingerprint(lake, &(&c.forecast, &file_fingerprint(&c.paths.meters)));
        if !self.opts.force && state.forecast.as_deref() == Some(fp.as_str()) {
            return self
                .clock
                .time("forecast", || Ok(((), "up to date".into())));
        }
        self.clock.time("forecast", || {
            let spec = ForecastSpec {
                horizon: c.forecast.horizon,
                level: c.forecast.level / 100.0,
                model: c.forecast.kind()?,
                options: ModelOptions::default(),
                season_fixed: false,
                threads: None,
                fill: Fill::Interpolate,
            };
            let r = forecast_lake(lake_dir, meters, Granularity::Day, &spec)?;
            Ok((
                (),
                format!(
                    "{} series, {} days ahead, median backtest MASE {}, {} beat the seasonal naive",
                    r.forecast,
                    c.forecast.horizon,
                    r.median_mase.map_or("-".into(), |v| format!("{v:.3}")),
                    r.beat_naive_pct.map_or("-".into(), |v| format!("{v:.0} %"))
                ),
            ))
        })?;
        state.forecast = Some(fp);
        write_state(lake_dir, state)
    }

    /// 5. Anomaly detection, unless the lake and settings are unchanged.
    fn anomalies(&mut self, lake: &Lake, state: &mut State) -> Result<()> {
        let (c, lake_dir, meters) = (self.c, self.lake_dir(), &self.meters);
        let detect_g = self.detect_granularity();
        let fp = fingerprint(lake, &(&c.anomalies, &file_fingerprint(&c.paths.meters)));
        if !self.opts.force && state.detect.as_deref() == Some(fp.as_str()) {
            self.summary.anomalies = self.clock.time("anomalies", || {
                Ok((count_incidents(lake_dir, detect_g)?, "up to date".into()))
            })?;
            return Ok(());
        }
        self.summary.anomalies = self.clock.time("anomalies", || {
            let spec = DetectSpec {
                config: DetectConfig {
                    threshold: c.anomalies.threshold,
                    ..DetectConfig::default()
                },
                since: None,
                threads: None,
            };
            let r = detect_lake(lake_dir, meters, detect_g, &spec)?;
            Ok((
                r.incidents,
                format!(
                    "{} series, {} incidents ({} fraud suspects)",
                    r.series, r.incidents, r.fraud_suspects
                ),
            ))
        })?;
        state.detect = Some(fp);
        write_state(lake_dir, state)
    }

    /// Without plans or tenants, quotas, alerts and invoices are skipped (with a warning).
    fn no_billing(&mut self) -> Result<()> {
        let c = self.c;
        let missing: Vec<String> = [
            ("plan catalogue", &c.paths.plans),
            ("tenants file", &c.paths.tenants),
        ]
        .iter()
        .filter(|(_, p)| !p.is_file())
        .map(|(what, p)| format!("no {what} at {}", p.display()))
        .collect();
        let note = format!("skipped: {}", missing.join(" and "));
        eprintln!("warning: quotas, alerts and invoices {note}");
        self.clock.time("quotas", || Ok(((), note)))
    }

    /// 6. Quotas at the lake's latest instant, with projections, evaluated once: stored,
    ///    and handed to the alerts and the reports.
    fn quotas(&mut self, lake: &Lake, b: &Billing, at: i64) -> Result<Vec<QuotaRow>> {
        let (lake_dir, enforcement) = (self.lake_dir(), self.c.limits.enforcement_enabled);
        let mut evaluated = Vec::new();
        let rows = &mut evaluated;
        self.summary.quotas_exceeded = self.clock.time("quotas", || {
            *rows = quotas::evaluate(lake, b, at, None)?;
            // The alerts and reports get these rows: with enforcement off, none blocked.
            quotas::apply_enforcement(rows, enforcement);
            let w = quotas::write(lake_dir, rows, enforcement)?;
            Ok((
                w.over,
                format!(
                    "{} tenant × meter quotas, {} over their allowance{}",
                    w.rows,
                    w.over,
                    if enforcement {
                        ""
                    } else {
                        " (enforcement off: hard caps not blocking)"
                    }
                ),
            ))
        })?;
        Ok(evaluated)
    }

    /// Step 7: alerts raised from the quotas and recent incidents, delivered when a
    /// webhook or notify rules are set.
    fn alerts(&mut self, lake: &Lake, b: &Billing, rows: &[QuotaRow], at: i64) -> Result<()> {
        let (c, lake_dir) = (self.c, self.lake_dir());
        if !c.limits.notification_enabled {
            return self
                .clock
                .time("alerts", || Ok(((), "notifications disabled".into())));
        }
        let (raised, delivered) = self.clock.time("alerts", || {
            let new = raise_from(lake, b, rows, &RaiseOptions::batch(at))?;
            let mut delivered = 0;
            let mut note = format!("{} new", new.len());
            if !c.limits.webhook_url.is_empty() {
                let secret = std::env::var(SECRET_ENV).map_err(|_| Error::InvalidParameter {
                    name: "limits.webhook_url",
                    reason: format!(
                        "set the shared secret in ${SECRET_ENV} (deliveries are signed)"
                    ),
                })?;
                let d = deliver(
                    lake_dir,
                    &Webhook {
                        url: c.limits.webhook_url.clone(),
                        secret,
                        max_attempts: 3,
                        backoff: Duration::from_millis(500),
                        timeout: Duration::from_secs(10),
                    },
                )?;
                delivered = d.delivered;
                note.push_str(&format!(", {} delivered, {} failed", d.delivered, d.failed));
                if d.skipped > 0 {
                    note.push_str(&format!(
                        " ({} not tried: the webhook failed {} alerts in a row; the next run or `alerts deliver` sends them)",
                        d.skipped,
                        crate::stage::alerts::GIVE_UP_AFTER
                    ));
                }
            }
            if c.notify.enabled() {
                // Notifications run on the wall clock: quiet hours and escalation delays
                // are about when people read them, not the data's instant.
                // A channel that cannot send (a secret not set, a server down) must not
                // keep the invoices and reports from being written: it is noted, and
                // `alerts deliver` (or the next run) sends what is due.
                match crate::stage::notify::deliver(
                    lake_dir,
                    b,
                    &c.notify,
                    &crate::stage::notify::Secrets::from_env(),
                    crate::time::now(),
                ) {
                    Ok(n) => {
                        delivered += n.sent;
                        note.push_str(&format!(
                            ", notified {} ({} messages, {} escalated, {} deferred by quiet hours, {} failed: `meterlake alerts deliver` retries)",
                            n.sent, n.messages, n.escalated, n.deferred, n.failed
                        ));
                    }
                    Err(e) => {
                        tracing::warn!("notifications not sent: {e}");
                        note.push_str(&format!(", notifications not sent: {e}"));
                    }
                }
            }
            Ok(((new.len(), delivered), note))
        })?;
        self.summary.alerts_raised = raised;
        self.summary.alerts_delivered = delivered;
        Ok(())
    }

    /// 8. The last complete month's invoices, as `OUT/invoices/YYYY-MM.json`: issued once
    ///    into the lake's register and never rewritten after ([`crate::stage::invoices`]);
    ///    late events of issued months become adjustments billed in the next one.
    fn invoices(&mut self, lake: &Lake, b: &Billing, at: i64) -> Result<()> {
        let out = &self.c.paths.out;
        self.summary.invoices = self.clock.time("invoices", || {
            let month = crate::time::previous_month(at);
            let reg = crate::stage::invoices::Register::of(lake.root());
            let c = reg.close(lake, b, &month, &out.join("invoices"), at)?;
            let state = match (&c.open_until, c.issued_now) {
                (Some(end), _) => format!("(a draft: not issued before its last period ends, {end})"),
                (None, true) => "issued".to_string(),
                (None, false) => "(issued before, unchanged)".to_string(),
            };
            let mut note = format!(
                "{} invoices for {month} {state} → {}",
                c.invoices,
                c.path.display()
            );
            if c.adjustments_applied > 0 {
                note.push_str(&format!(", {} adjustments billed", c.adjustments_applied));
            }
            if c.adjustments_found > 0 {
                note.push_str(&format!(
                    "; late events: {} adjustments recorded for the next period",
                    c.adjustments_found
                ));
            }
            if !c.frozen.is_empty() {
                note.push_str(&format!(
                    "; not rechecked for late events (their events were removed): {} issued month(s)",
                    c.frozen.len()
                ));
            }
            Ok((Some(c.path.clone()), note))
        })?;
        Ok(())
    }

    /// 9. Every configured report in every configured format, unless nothing changed,
    ///    from the quotas the quota stage evaluated.
    fn reports(
        &mut self,
        lake: &Lake,
        state: &mut State,
        quotas: Option<&QuotaSnapshot>,
    ) -> Result<()> {
        let (c, lake_dir, billing) = (self.c, self.lake_dir(), self.billing.as_ref());
        // Everything the reports are built from: the lake, their settings, the alerts, the
        // access log, the forecasts and detection as last made (their own fingerprints),
        // the plans, tenants and meters, and whether hard caps block.
        let fp = fingerprint(
            lake,
            &(
                &c.reports,
                std::fs::metadata(tables::alerts::file(lake_dir))
                    .and_then(|m| m.modified())
                    .ok(),
                // The compliance report lists the access log: a read since changes it.
                std::fs::read_to_string(lake_dir.join(crate::lake::access::DIR).join("head")).ok(),
                (&state.forecast, &state.detect),
                [&c.paths.plans, &c.paths.tenants, &c.paths.meters].map(|p| file_fingerprint(p)),
                c.limits.enforcement_enabled,
            ),
        );
        let report_dir = c.paths.out.join("reports");
        // Temp files of a run killed while it wrote reports (nothing else removes them).
        tables::sweep_stale_temps(&report_dir);
        let rd = &report_dir;
        let planned: Vec<PathBuf> = c
            .reports
            .kinds
            .iter()
            .flat_map(|k| {
                c.reports
                    .formats
                    .iter()
                    .map(move |f| crate::report::path_in(rd, *k, *f))
            })
            .collect();
        if !self.opts.force
            && state.reports.as_deref() == Some(fp.as_str())
            && planned.iter().all(|p| p.exists())
        {
            return self.clock.time("reports", || Ok(((), "up to date".into())));
        }
        self.summary.reports = self.clock.time("reports", || {
            let Some(&first) = c.reports.kinds.first() else {
                return Ok((Vec::new(), "no report kinds configured".into()));
            };
            let mut ro = ReportOptions::new(first);
            ro.meters = Some(c.paths.meters.clone()).filter(|p| p.is_file());
            let files = write_kinds(
                lake_dir,
                billing,
                &ro,
                &c.reports.kinds,
                quotas,
                &c.reports.formats,
                &report_dir,
            )?;
            let n = files.len();
            Ok((files, format!("{n} files in {}", report_dir.display())))
        })?;
        state.reports = Some(fp);
        write_state(lake_dir, state)
    }
}

/// The meters file's content, so a changed definition recomputes forecasts and anomalies.
/// A file's content, hashed (empty when it cannot be read): a setting the stages' outputs
/// depend on.
fn file_fingerprint(p: &Path) -> String {
    std::fs::read(p)
        .map(|b| format!("{:x}", xxhash_rust::xxh3::xxh3_64(&b)))
        .unwrap_or_default()
}

fn count_incidents(lake: &Path, g: Granularity) -> Result<usize> {
    let p = tables::incidents::dir(lake, &g.to_string()).join(tables::incidents::FILE);
    if !p.exists() {
        return Ok(0);
    }
    Ok(tables::read_frame(&p)?.height())
}
