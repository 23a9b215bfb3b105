//! `meterlake export stripe`: the lake's usage as Stripe meter events (a file, and
//! optionally pushed to Stripe's v1 endpoint); `meterlake export data`: everything held
//! about a tenant or a user, for an access request.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use crate::billing::stripe::{self, ExportSpec, Shape};
use crate::error::Error;
use crate::rollup::{Granularity, Meters};

/// `export` subcommands.
#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Usage per tenant × meter × hour or day as Stripe meter events (v2 JSON batches or
    /// v1 form rows); --push sends them to Stripe's v1 endpoint, never twice.
    Stripe(StripeArgs),
    /// Everything the lake and its derived outputs hold about a tenant or one of its
    /// users (events, quarantined records, rollup and other derived rows, alerts,
    /// invoices, stored reports) with a manifest of counts and SHA-256s: an access
    /// request's answer, recorded in the access log.
    Data(DataArgs),
}

/// Table format of `export data`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DataFormat {
    /// One JSON object per line (`.ndjson`).
    Json,
    /// CSV with a header.
    Csv,
    /// Parquet (ZSTD).
    Parquet,
}

/// Arguments of `export data`.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// The lake directory.
    #[arg(long)]
    lake: PathBuf,
    /// The tenant.
    #[arg(long)]
    tenant: String,
    /// Only this user of the tenant (the raw id, also on a pseudonymised lake).
    #[arg(long)]
    user: Option<String>,
    /// A new (or empty) folder for the export.
    #[arg(long)]
    out: PathBuf,
    /// Format of the tables (invoices stay JSON).
    #[arg(long, value_enum, default_value_t = DataFormat::Json)]
    format: DataFormat,
    #[command(flatten)]
    reader: super::Reader,
    /// The configuration file whose `[privacy]` key hashes --user on a pseudonymised lake
    /// (default: data/meterlake.toml if present; `MLK_PSEUDONYM_KEY_FILE` overrides it).
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Print the summary as a table or one JSON object.
    #[arg(long, value_enum, default_value_t = super::Output::Table)]
    output: super::Output,
}

/// Hour or day windows.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StripeGranularity {
    /// One event per tenant × meter × UTC hour.
    Hour,
    /// One event per tenant × meter × UTC day.
    Day,
}

/// The file's shape.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StripeFormat {
    /// v2 meter-event-stream bodies, one `{"events":[...]}` of ≤ 100 events per line.
    V2,
    /// v1 form fields, one event per CSV row.
    V1,
}

/// Arguments of `export stripe`.
#[derive(Debug, Args)]
pub struct StripeArgs {
    /// The lake directory.
    #[arg(long)]
    lake: PathBuf,
    /// A calendar month, YYYY-MM (UTC).
    #[arg(long, conflicts_with_all = ["from", "to"])]
    period: Option<String>,
    /// First day (YYYY-MM-DD or RFC 3339, inclusive).
    #[arg(long, requires = "to")]
    from: Option<String>,
    /// End (exclusive).
    #[arg(long, requires = "from")]
    to: Option<String>,
    /// CSV mapping tenant_id to stripe_customer_id.
    #[arg(long)]
    customers: PathBuf,
    /// Window of each event.
    #[arg(long, value_enum, default_value_t = StripeGranularity::Day)]
    granularity: StripeGranularity,
    /// File shape.
    #[arg(long, value_enum, default_value_t = StripeFormat::V2)]
    format: StripeFormat,
    /// Where the events are written.
    #[arg(long)]
    out: PathBuf,
    /// Meter definitions (default data/meters.toml when present).
    #[arg(long)]
    meters: Option<PathBuf>,
    /// Export only these meters (default: every additive meter: count, sum, duration).
    #[arg(long = "meter")]
    meter: Vec<String>,
    /// A Stripe meter's event name for a meter, METER=EVENT_NAME (default: the meter's
    /// name).
    #[arg(long = "event-name")]
    event_name: Vec<String>,
    /// Also POST each event to this v1 endpoint (e.g.
    /// https://api.stripe.com/v1/billing/meter_events) with $STRIPE_API_KEY.
    #[arg(long)]
    push: Option<String>,
    /// The clock: windows not ended by it are left out, and Stripe's window (35 days back,
    /// 5 minutes ahead) is judged at it (`now`, a date or an RFC 3339 instant).
    #[arg(long, default_value = "now")]
    at: String,
    /// Tries per event on 429 and 5xx answers.
    #[arg(long, default_value_t = 6)]
    max_attempts: u32,
    /// First retry delay in milliseconds (doubling, or as Retry-After says).
    #[arg(long, default_value_t = 500)]
    retry_base_ms: u64,
}

pub(crate) fn run(c: ExportCommand) -> anyhow::Result<ExitCode> {
    match c {
        ExportCommand::Stripe(a) => stripe_cmd(a),
        ExportCommand::Data(a) => data_cmd(a),
    }
}

fn data_cmd(a: DataArgs) -> anyhow::Result<ExitCode> {
    use crate::job::export::{ExportFormat, ExportOptions, export_data};
    let user = match &a.user {
        Some(u) => Some(crate::lake::privacy::user_in_lake(
            &a.lake,
            super::privacy(a.config.as_deref())?.key()?,
            u,
        )?),
        None => None,
    };
    let s = export_data(
        &a.lake,
        &a.out,
        &ExportOptions {
            tenant: a.tenant,
            user,
            user_given: a.user,
            format: match a.format {
                DataFormat::Json => ExportFormat::Json,
                DataFormat::Csv => ExportFormat::Csv,
                DataFormat::Parquet => ExportFormat::Parquet,
            },
            actor: a
                .reader
                .actor
                .clone()
                .unwrap_or_else(crate::lake::audit::current_actor),
        },
    )?;
    match a.output {
        super::Output::Json => super::print_json(&s)?,
        super::Output::Table => outln!(
            "exported {} events ({} still in the server's log), {} quarantined records, {} derived rows ({} alerts), {} invoices, {} adjustments, {} stored reports to {} ({} files; manifest.json)",
            s.events + s.logged_events,
            s.logged_events,
            s.quarantined,
            s.derived_rows,
            s.alerts,
            s.invoices,
            s.adjustments,
            s.reports,
            a.out.display(),
            s.files.len()
        )?,
    }
    Ok(ExitCode::SUCCESS)
}

fn stripe_cmd(a: StripeArgs) -> anyhow::Result<ExitCode> {
    let (from, to) = match (&a.period, &a.from, &a.to) {
        (Some(p), _, _) => {
            let (y, m) = crate::billing::invoice::parse_month(p)?;
            let first = chrono::NaiveDate::from_ymd_opt(y, m, 1).expect("valid month");
            let next = first
                .checked_add_months(chrono::Months::new(1))
                .expect("a month after");
            (
                crate::time::date_start(first),
                crate::time::date_start(next),
            )
        }
        (None, Some(f), Some(t)) => (
            crate::time::parse_instant("--from", f)?,
            crate::time::parse_instant("--to", t)?,
        ),
        _ => anyhow::bail!(Error::InvalidParameter {
            name: "--period",
            reason: "give --period YYYY-MM or --from DATE --to DATE".into(),
        }),
    };
    if from >= to {
        anyhow::bail!(Error::InvalidParameter {
            name: "--to",
            reason: "must be after --from".into(),
        });
    }
    let mut event_names = HashMap::new();
    for e in &a.event_name {
        let Some((m, n)) = e
            .split_once('=')
            .filter(|(m, n)| !m.is_empty() && !n.is_empty())
        else {
            anyhow::bail!(Error::InvalidParameter {
                name: "--event-name",
                reason: format!("`{e}` is not METER=EVENT_NAME"),
            });
        };
        event_names.insert(m.to_string(), n.to_string());
    }
    let api_key = match &a.push {
        Some(url) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                anyhow::bail!(Error::InvalidParameter {
                    name: "--push",
                    reason: format!("`{url}` is not an http(s) URL"),
                });
            }
            Some(
                std::env::var(stripe::KEY_ENV)
                    .ok()
                    .filter(|k| !k.is_empty())
                    .ok_or_else(|| Error::InvalidParameter {
                        name: "--push",
                        reason: format!("set the Stripe API key in ${}", stripe::KEY_ENV),
                    })?,
            )
        }
        None => None,
    };
    let lake = crate::lake::Lake::open(&a.lake)?;
    let meters = Meters::load_or_default(a.meters.as_deref())?;
    let customers = stripe::load_customers(&a.customers)?;
    let at = crate::billing::parse_at(&lake, &a.at)?;
    let granularity = match a.granularity {
        StripeGranularity::Hour => Granularity::Hour,
        StripeGranularity::Day => Granularity::Day,
    };
    let export = stripe::export(
        &lake,
        &meters,
        &customers,
        &ExportSpec {
            from,
            to,
            granularity,
            meters: a.meter.clone(),
            event_names,
            at,
        },
    )?;
    let shape = match a.format {
        StripeFormat::V2 => Shape::V2,
        StripeFormat::V1 => Shape::V1,
    };
    crate::report::atomic_write(&a.out, &stripe::render(&export.events, shape))?;
    let pushed = match (&a.push, &api_key) {
        (Some(url), Some(key)) => Some(stripe::push(
            &a.lake,
            &export.events,
            &stripe::PushOptions {
                url: url.clone(),
                api_key: key.clone(),
                at,
                max_attempts: a.max_attempts,
                backoff: Duration::from_millis(a.retry_base_ms),
                granularity: granularity.name().to_string(),
            },
        )?),
        _ => None,
    };
    let left_out = !export.unmapped_tenants.is_empty()
        || pushed.as_ref().is_some_and(|p| {
            !p.outside_window.is_empty() || !p.failed.is_empty() || !p.not_corrected.is_empty()
        });
    super::print_json(&serde_json::json!({
        "from": crate::time::rfc3339(from),
        "to": crate::time::rfc3339(to),
        "granularity": granularity.name(),
        "format": format!("{:?}", a.format).to_lowercase(),
        "out": a.out,
        "rounding": "per tenant × meter and UTC month, the running total rounded half away from zero; each window gets the rounded total minus the one before",
        "export": export,
        "push": pushed,
    }))?;
    if left_out {
        eprintln!(
            "error: some usage was left out (unmapped tenants, events outside Stripe's window, refused events, or usage that fell after it was sent): see the output"
        );
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}
