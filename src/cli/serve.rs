//! `meterlake serve` and `meterlake serve-keys`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::config::Config;
use crate::rollup::Meters;
use crate::serve::auth::Keys;
use crate::serve::{ServeOptions, serve};

/// Arguments of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The lake.
    #[arg(long)]
    pub lake: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Configuration file (plans, tenants, meters, limits.enforcement_enabled); the
    /// environment overrides it as for `run`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Events a second each tenant may track (0: unlimited).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Burst of the rate limit (events).
    #[arg(long, default_value_t = 20_000.0)]
    pub burst: f64,
    /// Flush the log to the lake every this many milliseconds...
    #[arg(long, default_value_t = 1000)]
    pub flush_ms: u64,
    /// ...or when this many events wait.
    #[arg(long, default_value_t = 200_000)]
    pub flush_events: usize,
    /// Request body limit in MiB.
    #[arg(long, default_value_t = 16)]
    pub body_limit_mib: usize,
    /// Heavy requests (reports, forecasts, metrics, events, summaries, trends) at once, in
    /// all; one per tenant at a time [default: the number of cores].
    #[arg(long)]
    pub heavy_concurrency: Option<usize>,
    /// Memory for the dedup index in MiB; beyond it, keys spill to disk under
    /// `LAKE/_wal/_dedup` with ~2 bytes each left in memory.
    #[arg(long, default_value_t = 64)]
    pub dedup_memory_mib: usize,
    /// Dedup lookback in days: an event is a duplicate of one tracked or in the lake
    /// within this many days of it. The dedup index holds ~2.5 bytes per event of the
    /// window beyond its memory: a shorter window, a smaller index.
    #[arg(long, default_value_t = crate::ingest::DEFAULT_LOOKBACK_DAYS)]
    pub lookback_days: u32,
    /// The dedup index drops the days traffic no longer needs (after a day change, or a
    /// burst of long-past events) at most once per this many seconds.
    #[arg(long, default_value_t = 600)]
    pub dedup_rebuild_secs: u64,
    /// Compact in the background after this many flushes, merging each day's small
    /// files and key files once it has this many (0: never).
    #[arg(long, default_value_t = 16)]
    pub compact_files: usize,
    /// `/track` answers 503 with Retry-After while this many acknowledged events wait for
    /// their commit (tracking outruns the flushes): bounds the log's memory [default: 2 x
    /// --flush-events]
    #[arg(long)]
    pub max_lag_events: Option<usize>,
}

/// `serve-keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make an API key (printed once; only its hash is stored).
    Add(KeyAddArgs),
    /// List the keys: id, tenant or admin, created, revoked (never the key).
    List(KeyListArgs),
    /// Revoke a key by its id; a running server refuses it within a second.
    Revoke(KeyRevokeArgs),
}

/// Arguments of `serve-keys list`.
#[derive(Debug, Args)]
pub struct KeyListArgs {
    /// The lake.
    #[arg(long)]
    pub lake: PathBuf,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `serve-keys revoke`.
#[derive(Debug, Args)]
pub struct KeyRevokeArgs {
    /// The lake.
    #[arg(long)]
    pub lake: PathBuf,
    /// The key's id (the first 8 hex digits after `mlk_`, as `serve-keys list` shows).
    pub id: String,
}

/// Arguments of `serve-keys add`.
#[derive(Debug, Args)]
pub struct KeyAddArgs {
    /// The lake.
    #[arg(long)]
    pub lake: PathBuf,
    /// The tenant the key acts for.
    #[arg(long, required_unless_present = "admin", conflicts_with = "admin")]
    pub tenant: Option<String>,
    /// An admin key.
    #[arg(long)]
    pub admin: bool,
}

pub(crate) fn keys(c: KeysCommand) -> anyhow::Result<ExitCode> {
    match c {
        KeysCommand::Add(a) => {
            let (key, stored) = Keys::add(&a.lake, a.tenant.as_deref())?;
            outln!("{key}")?;
            eprintln!(
                "key {} for {} stored hashed in {}; this is the only time it is shown",
                stored.id,
                stored.tenant.as_deref().unwrap_or("admin"),
                a.lake.join(crate::serve::auth::KEYS_FILE).display()
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::List(a) => {
            let keys = Keys::list(&a.lake)?;
            if a.json {
                for k in &keys {
                    let v = serde_json::json!({
                        "id": k.id,
                        "tenant": k.tenant,
                        "admin": k.admin,
                        "created_at": k.created_at,
                        "revoked_at": k.revoked_at,
                    });
                    outln!("{v}")?;
                }
            } else {
                use super::table::{Left, Table};
                let mut t = Table::new(&[
                    ("id", Left),
                    ("scope", Left),
                    ("created", Left),
                    ("revoked", Left),
                ]);
                for k in &keys {
                    t.row(&[
                        &k.id,
                        &k.tenant.as_deref().unwrap_or("admin"),
                        &k.created_at,
                        &k.revoked_at.as_deref().unwrap_or("-"),
                    ]);
                }
                t.print()?;
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Revoke(a) => {
            let k = Keys::revoke(&a.lake, &a.id)?;
            eprintln!(
                "key {} for {} revoked at {}",
                k.id,
                k.tenant.as_deref().unwrap_or("admin"),
                k.revoked_at.as_deref().unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs the server on `a.lake`; `remote` is the mirror when that folder mirrors an
/// `s3://` lake ([`super::remote`]).
pub(crate) fn run(
    a: ServeArgs,
    remote: Option<std::sync::Arc<std::sync::Mutex<crate::lake::remote::Mirror>>>,
) -> anyhow::Result<ExitCode> {
    let mut c = Config::load(a.config.as_deref())?;
    c.apply_env(|k| std::env::var(k).ok())?;
    let billing = crate::billing::Billing::load(&c.paths.plans, &c.paths.tenants)?;
    let meters = Meters::load_or_default(
        Some(&c.paths.meters)
            .filter(|p| p.is_file())
            .map(PathBuf::as_path),
    )?;
    if !(a.rate >= 0.0 && a.rate.is_finite()) {
        anyhow::bail!("invalid --rate: {} is not a non-negative number", a.rate);
    }
    serve(ServeOptions {
        lake: a.lake,
        bind: a.bind,
        billing,
        meters,
        entitlements: crate::billing::entitlements::load_overrides_or_default(
            c.paths.entitlements.as_deref(),
        )?,
        enforcement: c.limits.enforcement_enabled,
        anomaly_threshold: c.anomalies.threshold,
        anomaly_granularity: c.anomalies.granularity.clone(),
        refresh_every: c.analytics.every()?,
        refresh_memory: c.analytics.max_memory()?,
        forecast: crate::stage::forecast::ForecastSpec {
            horizon: c.forecast.horizon,
            level: c.forecast.level / 100.0,
            model: c.forecast.kind()?,
            options: crate::forecast::ModelOptions::default(),
            season_fixed: false,
            threads: None,
            fill: crate::series::Fill::Interpolate,
        },
        alerts: c.limits.notification_enabled,
        pseudonym: c.privacy.pseudonymiser()?,
        notify: c.notify.clone(),
        rate: a.rate,
        burst: a.burst,
        flush_interval: Duration::from_millis(a.flush_ms.max(10)),
        flush_events: a.flush_events.max(1),
        body_limit: a.body_limit_mib.max(1) << 20,
        max_batch: 10_000,
        lookback_days: a.lookback_days,
        dedup_memory: a.dedup_memory_mib.max(1) << 20,
        dedup_rebuild_interval: Duration::from_secs(a.dedup_rebuild_secs),
        compact_files: a.compact_files,
        max_lag_events: a
            .max_lag_events
            .unwrap_or(a.flush_events.max(1).saturating_mul(2))
            .max(1),
        heavy_concurrency: match a.heavy_concurrency {
            Some(0) => anyhow::bail!("invalid --heavy-concurrency: 0; at least 1"),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(2, |n| n.get()),
        },
        remote,
    })?;
    Ok(ExitCode::SUCCESS)
}
