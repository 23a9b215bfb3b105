//! `meterlake alerts raise|list|ack|deliver`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Subcommand};
use rust_decimal::Decimal;

use super::billing::{Format, Source};
use super::table::{Left, Right, Table};
use super::write_csv;
use crate::billing::parse_at;
use crate::stage::alerts::{Alert, AlertStore, RaiseOptions, Webhook, deliver, raise};

pub use crate::stage::alerts::SECRET_ENV;

/// `alerts` subcommands.
#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Evaluate quotas and anomalies now and store the alerts not raised before (then
    /// deliver them if --webhook is given).
    Raise(RaiseArgs),
    /// List alerts (unacknowledged by default).
    List(ListArgs),
    /// Acknowledge an alert by id.
    Ack(AckArgs),
    /// Send alerts on the configured channels (e-mail, Slack, webhook) by the [notify]
    /// rules, escalate unacknowledged ones, retry failures; and to --webhook when given.
    Deliver(DeliverArgs),
}

/// Webhook settings.
#[derive(Debug, Args)]
pub struct HookArgs {
    /// POST alerts here (signed with HMAC-SHA256 of $MLK_WEBHOOK_SECRET).
    #[arg(long, env = "MLK_WEBHOOK_URL")]
    webhook: Option<String>,
    /// Attempts per alert in one run.
    #[arg(long, default_value_t = 5)]
    max_attempts: u32,
    /// First retry delay in milliseconds (doubling each retry).
    #[arg(long, default_value_t = 1000)]
    retry_base_ms: u64,
    /// Timeout of one request, seconds.
    #[arg(long, default_value_t = 10)]
    timeout_s: u64,
}

impl HookArgs {
    fn webhook(&self) -> anyhow::Result<Option<Webhook>> {
        let Some(url) = &self.webhook else {
            return Ok(None);
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            anyhow::bail!(crate::Error::InvalidParameter {
                name: "--webhook",
                reason: format!("`{url}` is not an http(s) URL"),
            });
        }
        if self.max_attempts == 0 {
            anyhow::bail!(crate::Error::InvalidParameter {
                name: "--max-attempts",
                reason: "must be at least 1".into(),
            });
        }
        let secret = std::env::var(SECRET_ENV)
            .ok()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| crate::Error::InvalidParameter {
                name: "--webhook",
                reason: format!("set the shared secret in ${SECRET_ENV} (deliveries are signed)"),
            })?;
        Ok(Some(Webhook {
            url: url.clone(),
            secret,
            max_attempts: self.max_attempts,
            backoff: Duration::from_millis(self.retry_base_ms),
            timeout: Duration::from_secs(self.timeout_s.max(1)),
        }))
    }
}

/// Arguments of `alerts raise`.
#[derive(Debug, Args)]
pub struct RaiseArgs {
    #[command(flatten)]
    source: Source,
    /// The instant: `latest` (just after the lake's last event: a lake whose data ends in
    /// the past is seen as of its data), `now` (the wall clock), a date or an RFC 3339
    /// instant.
    #[arg(long, default_value = "latest")]
    at: String,
    /// Overage cost (in the catalogue's currency) that raises a cost alert, for every plan
    /// (default: each plan's cost_alert).
    #[arg(long)]
    cost_over: Option<String>,
    /// Do not raise alerts for anomaly incidents.
    #[arg(long)]
    no_anomalies: bool,
    /// Anomaly incidents that started up to this many days before the instant are raised.
    #[arg(long, default_value_t = 7)]
    anomaly_days: i64,
    #[command(flatten)]
    hook: HookArgs,
    /// Table or JSON.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    output: Format,
}

/// Arguments of `alerts list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The lake directory.
    #[arg(long)]
    lake: PathBuf,
    /// Include acknowledged alerts.
    #[arg(long)]
    all: bool,
    /// Only this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Table, JSON or CSV.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    output: Format,
    #[command(flatten)]
    reader: super::Reader,
}

/// Arguments of `alerts ack`.
#[derive(Debug, Args)]
pub struct AckArgs {
    /// The alert's id (see `alerts list`).
    id: String,
    /// The lake directory.
    #[arg(long)]
    lake: PathBuf,
    /// Who acknowledges it (default $USER).
    #[arg(long)]
    by: Option<String>,
}

/// Arguments of `alerts deliver`.
#[derive(Debug, Args)]
pub struct DeliverArgs {
    /// The lake directory.
    #[arg(long)]
    lake: PathBuf,
    /// The configuration whose `[notify]` channels and rules send alerts (default
    /// data/meterlake.toml when it exists).
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// The plan catalogue (default: the configuration's paths.plans).
    #[arg(long)]
    plans: Option<PathBuf>,
    /// Tenants (CSV; its optional notify_email column adds a tenant's own recipients;
    /// default: the configuration's paths.tenants).
    #[arg(long)]
    tenants: Option<PathBuf>,
    /// The delivery clock: quiet hours and escalation delays are judged at this instant
    /// (`now`, a date or an RFC 3339 instant).
    #[arg(long, default_value = "now")]
    at: String,
    #[command(flatten)]
    hook: HookArgs,
    /// JSON (what was sent, and each delivery) or a table.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    output: Format,
}

fn table(alerts: &[Alert]) -> anyhow::Result<()> {
    let mut table = Table::new(&[
        ("id", Left),
        ("kind", Left),
        ("severity", Left),
        ("tenant", Left),
        ("meter", Left),
        ("thresh.", Right),
        ("message", Left),
    ]);
    for a in alerts {
        let ack = if a.acknowledged_at.is_some() {
            "  [acknowledged]"
        } else {
            ""
        };
        table.row(&[
            &a.id,
            &a.kind,
            &a.severity,
            &a.tenant_id,
            &a.meter,
            &a.threshold,
            &format!("{}{ack}", a.message),
        ]);
    }
    table.print()?;
    Ok(())
}

pub(crate) fn run(c: AlertsCommand) -> anyhow::Result<ExitCode> {
    match c {
        AlertsCommand::Raise(a) => raise_cmd(a),
        AlertsCommand::List(a) => list(a),
        AlertsCommand::Ack(a) => ack(a),
        AlertsCommand::Deliver(a) => deliver_cmd(a),
    }
}

/// `alerts raise`: evaluate, store the new alerts, deliver them if a webhook is set.
fn raise_cmd(a: RaiseArgs) -> anyhow::Result<ExitCode> {
    let hook = a.hook.webhook()?;
    let cost_over = a
        .cost_over
        .as_deref()
        .map(|s| {
            Decimal::from_str(s).map_err(|_| crate::Error::InvalidParameter {
                name: "--cost-over",
                reason: format!("`{s}` is not a decimal amount"),
            })
        })
        .transpose()?;
    if a.anomaly_days < 0 {
        anyhow::bail!(crate::Error::InvalidParameter {
            name: "--anomaly-days",
            reason: "must not be negative".into()
        });
    }
    let (lake, billing) = a.source.open()?;
    let at = parse_at(&lake, &a.at)?;
    let new = raise(
        &lake,
        &billing,
        &RaiseOptions {
            at,
            cost_over,
            anomalies: !a.no_anomalies,
            anomaly_lookback: a.anomaly_days * crate::time::MICROS_PER_DAY,
        },
    )?;
    let delivered = hook.map(|h| deliver(&a.source.lake, &h)).transpose()?;
    match a.output {
        Format::Json | Format::Csv => super::print_json(&serde_json::json!({
            "at": crate::time::rfc3339(at),
            "raised": new,
            "delivery": delivered,
        }))?,
        Format::Table => {
            eprintln!("{} new alert(s) at {}", new.len(), crate::time::rfc3339(at));
            table(&new)?;
            if let Some(d) = &delivered {
                eprintln!(
                    "webhook: {} delivered, {} still pending ({} requests)",
                    d.delivered, d.failed, d.requests
                );
            }
        }
    }
    if delivered.is_some_and(|d| d.failed > 0) {
        eprintln!("error: some alerts could not be delivered; `alerts deliver` retries them");
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

/// `alerts list`.
fn list(a: ListArgs) -> anyhow::Result<ExitCode> {
    a.reader
        .record(&a.lake, a.tenant.as_deref(), "alerts list")?;
    let store = AlertStore::open(&a.lake)?;
    let rows: Vec<Alert> = store
        .alerts
        .into_iter()
        .filter(|x| a.all || x.acknowledged_at.is_none())
        .filter(|x| a.tenant.as_deref().is_none_or(|t| t == x.tenant_id))
        .collect();
    match a.output {
        Format::Json => {
            // Each alert with its notifications (alerts/deliveries.parquet).
            let sent = crate::stage::tables::deliveries::read_lake(&a.lake)?;
            let mut by: std::collections::HashMap<
                &str,
                Vec<&crate::stage::tables::deliveries::Delivery>,
            > = std::collections::HashMap::new();
            for d in &sent {
                by.entry(d.alert_id.as_str()).or_default().push(d);
            }
            let out: Vec<serde_json::Value> = rows
                .iter()
                .map(|x| {
                    let mut v = serde_json::to_value(x).unwrap_or_default();
                    v["deliveries"] =
                        serde_json::to_value(by.get(x.id.as_str()).cloned().unwrap_or_default())
                            .unwrap_or_default();
                    v
                })
                .collect();
            super::print_json(&out)?
        }
        Format::Csv => write_csv(&rows)?,
        Format::Table => table(&rows)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `alerts ack`.
fn ack(a: AckArgs) -> anyhow::Result<ExitCode> {
    let mut store = AlertStore::open(&a.lake)?;
    let by =
        a.by.or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "unknown".into());
    let alert = store.ack(&a.id, &by, crate::time::now())?;
    super::print_json(&alert)?;
    Ok(ExitCode::SUCCESS)
}

/// `alerts deliver`: send what is due on the configured channels (first notices,
/// escalations, retries of failures), and to --webhook when given.
fn deliver_cmd(a: DeliverArgs) -> anyhow::Result<ExitCode> {
    let hook = a.hook.webhook()?;
    let config = crate::config::Config::load(a.config.as_deref())?;
    if hook.is_none() && !config.notify.enabled() {
        anyhow::bail!(crate::Error::InvalidParameter {
            name: "--config",
            reason: format!(
                "nothing to deliver to: configure [notify.channels.NAME] and [[notify.rules]] in {} (or give --webhook URL)",
                a.config
                    .as_deref()
                    .unwrap_or(std::path::Path::new(crate::config::DEFAULT_CONFIG_FILE))
                    .display()
            ),
        });
    }
    let webhook = hook.map(|h| deliver(&a.lake, &h)).transpose()?;
    let notified = if config.notify.enabled() {
        let lake = crate::lake::Lake::open(&a.lake)?;
        let at = parse_at(&lake, &a.at)?;
        let billing = crate::billing::Billing::load(
            a.plans.as_deref().unwrap_or(&config.paths.plans),
            a.tenants.as_deref().unwrap_or(&config.paths.tenants),
        )?;
        Some(crate::stage::notify::deliver(
            &a.lake,
            &billing,
            &config.notify,
            &crate::stage::notify::Secrets::from_env(),
            at,
        )?)
    } else {
        None
    };
    let failed = webhook.as_ref().is_some_and(|d| d.failed > 0)
        || notified.as_ref().is_some_and(|n| n.failed > 0);
    match a.output {
        Format::Json | Format::Csv => match (&webhook, &notified) {
            (Some(w), None) => super::print_json(w)?,
            (None, Some(n)) => super::print_json(n)?,
            _ => super::print_json(&serde_json::json!({"webhook": webhook, "notify": notified}))?,
        },
        Format::Table => {
            if let Some(d) = &webhook {
                eprintln!(
                    "webhook: {} delivered, {} still pending ({} requests)",
                    d.delivered, d.failed, d.requests
                );
            }
            if let Some(n) = &notified {
                eprintln!(
                    "notify at {}: {} sent in {} messages ({} escalations), {} failed, {} deferred by quiet hours",
                    n.at, n.sent, n.messages, n.escalated, n.failed, n.deferred
                );
                let mut t = Table::new(&[
                    ("alert", Left),
                    ("rule", Left),
                    ("level", Right),
                    ("channel", Left),
                    ("status", Left),
                    ("tries", Right),
                    ("error", Left),
                ]);
                for d in &n.deliveries {
                    t.row(&[
                        &d.alert_id,
                        &d.rule,
                        &d.level.to_string(),
                        &d.channel,
                        &d.status,
                        &d.attempts.to_string(),
                        &d.error.clone().unwrap_or_default(),
                    ]);
                }
                t.print()?;
            }
        }
    }
    if failed {
        eprintln!(
            "error: some alerts could not be delivered; the next `alerts deliver` retries them"
        );
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}
