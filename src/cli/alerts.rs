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
    /// Send undelivered alerts to a webhook.
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
    #[command(flatten)]
    hook: HookArgs,
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
    let store = AlertStore::open(&a.lake)?;
    let rows: Vec<Alert> = store
        .alerts
        .into_iter()
        .filter(|x| a.all || x.acknowledged_at.is_none())
        .filter(|x| a.tenant.as_deref().is_none_or(|t| t == x.tenant_id))
        .collect();
    match a.output {
        Format::Json => super::print_json(&rows)?,
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

/// `alerts deliver`: retry what is undelivered.
fn deliver_cmd(a: DeliverArgs) -> anyhow::Result<ExitCode> {
    let Some(hook) = a.hook.webhook()? else {
        anyhow::bail!(crate::Error::InvalidParameter {
            name: "--webhook",
            reason: "give the webhook URL (or set MLK_WEBHOOK_URL)".into(),
        });
    };
    let d = deliver(&a.lake, &hook)?;
    super::print_json(&d)?;
    Ok(if d.failed > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
