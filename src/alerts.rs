//! Alerts: threshold crossings, limits exceeded, overage cost over a set amount and
//! high-severity anomalies, each raised once, kept in `LAKE/alerts/alerts.parquet`,
//! acknowledged by id, and optionally delivered to a webhook.
//!
//! **Once.** An alert's id is a hash of what it is about: kind, tenant, meter, threshold
//! and the billing period's start (an anomaly: its series, granularity and window). Raising
//! again in the same period finds the id already stored and adds nothing, so a re-run of
//! the batch job raises nothing new; the next period raises afresh.
//!
//! **Store.** The whole table is rewritten on each change (temp file, fsync, rename) under
//! an exclusive lock (`LAKE/alerts/_lock`), so readers never see half a file and two
//! writers never interleave.
//!
//! **Webhook.** Each undelivered alert is POSTed as JSON with headers
//! `X-Meterlake-Delivery: <alert id>`, `X-Meterlake-Timestamp: <unix seconds>` and
//! `X-Meterlake-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
//! A 2xx answer marks it delivered; anything else is retried with exponential backoff, and
//! the attempt count, last error and delivery time are stored after every alert, so a
//! restart resumes where it stopped and never re-sends a recorded delivery. (If the process
//! dies between the receiver's 2xx and the store's rename, that one alert is sent again:
//! receivers dedup on `X-Meterlake-Delivery`.)

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use polars::prelude::*;
use rust_decimal::Decimal;
use serde::Serialize;
use sha2::Sha256;

use crate::billing::quota::{QuotaOptions, Status, quotas};
use crate::billing::{Billing, rfc3339};
use crate::error::{Error, IoContext, Result};
use crate::lake::Lake;

/// Directory of the store under the lake.
pub const ALERTS_DIR: &str = "alerts";
/// Environment variable holding the webhook's shared secret (kept off the command line).
pub const SECRET_ENV: &str = "MLK_WEBHOOK_SECRET";

/// The store's file.
pub const ALERTS_FILE: &str = "alerts.parquet";

/// One alert.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Alert {
    /// Stable id (16 hex digits).
    pub id: String,
    /// `threshold`, `limit_exceeded`, `cost_over` or `anomaly`.
    pub kind: String,
    /// The tenant.
    pub tenant_id: String,
    /// The meter (billed meter; for anomalies the lake meter).
    pub meter: String,
    /// The threshold crossed: a percent, an amount, or an anomaly's severity.
    pub threshold: String,
    /// `warning`, `critical` (or an anomaly's `high`/`critical`).
    pub severity: String,
    /// What happened, with the numbers.
    pub message: String,
    /// The observed value (usage, cost, anomaly value).
    pub value: String,
    /// The limit it is compared with.
    pub limit: String,
    /// The billing period (or the anomaly's window), RFC 3339.
    pub period_start: String,
    /// Its end.
    pub period_end: String,
    /// When it was raised (the evaluation instant).
    pub raised_at: String,
    /// When it was acknowledged.
    pub acknowledged_at: Option<String>,
    /// Who acknowledged it.
    pub acknowledged_by: Option<String>,
    /// When the webhook accepted it.
    pub delivered_at: Option<String>,
    /// Webhook attempts so far.
    pub attempts: u32,
    /// The last delivery error.
    pub last_error: Option<String>,
}

fn alert_id(parts: &[&str]) -> String {
    format!(
        "{:016x}",
        xxhash_rust::xxh3::xxh3_64(parts.join("\u{1f}").as_bytes())
    )
}

/// The alert table of a lake, held under its lock while open.
pub struct AlertStore {
    path: PathBuf,
    _lock: std::fs::File,
    /// Every alert, oldest first (by raise order).
    pub alerts: Vec<Alert>,
}

impl AlertStore {
    /// Opens (creating the directory if needed) and locks the store of `lake_dir`.
    pub fn open(lake_dir: &Path) -> Result<AlertStore> {
        if !lake_dir.join("_log").is_dir() {
            return Err(Error::InvalidParameter {
                name: "--lake",
                reason: format!("{} is not a meterlake lake (no _log)", lake_dir.display()),
            });
        }
        let dir = lake_dir.join(ALERTS_DIR);
        std::fs::create_dir_all(&dir).at(&dir)?;
        let lock = crate::lake::lock_exclusive(&dir.join("_lock"))?;
        let path = dir.join(ALERTS_FILE);
        let alerts = if path.exists() {
            read_alerts(&path)?
        } else {
            Vec::new()
        };
        Ok(AlertStore {
            path,
            _lock: lock,
            alerts,
        })
    }

    /// Writes the table atomically.
    pub fn save(&self) -> Result<()> {
        let a = &self.alerts;
        let s =
            |f: fn(&Alert) -> &String| -> Vec<String> { a.iter().map(|x| f(x).clone()).collect() };
        let o = |f: fn(&Alert) -> &Option<String>| -> Vec<Option<String>> {
            a.iter().map(|x| f(x).clone()).collect()
        };
        let mut df = DataFrame::new_infer_height(vec![
            Column::new("id".into(), s(|x| &x.id)),
            Column::new("kind".into(), s(|x| &x.kind)),
            Column::new("tenant_id".into(), s(|x| &x.tenant_id)),
            Column::new("meter".into(), s(|x| &x.meter)),
            Column::new("threshold".into(), s(|x| &x.threshold)),
            Column::new("severity".into(), s(|x| &x.severity)),
            Column::new("message".into(), s(|x| &x.message)),
            Column::new("value".into(), s(|x| &x.value)),
            Column::new("limit".into(), s(|x| &x.limit)),
            Column::new("period_start".into(), s(|x| &x.period_start)),
            Column::new("period_end".into(), s(|x| &x.period_end)),
            Column::new("raised_at".into(), s(|x| &x.raised_at)),
            Column::new("acknowledged_at".into(), o(|x| &x.acknowledged_at)),
            Column::new("acknowledged_by".into(), o(|x| &x.acknowledged_by)),
            Column::new("delivered_at".into(), o(|x| &x.delivered_at)),
            Column::new(
                "attempts".into(),
                a.iter().map(|x| x.attempts).collect::<Vec<u32>>(),
            ),
            Column::new("last_error".into(), o(|x| &x.last_error)),
        ])?;
        crate::predict::write_table(&self.path, &mut df)
    }

    /// Acknowledges alert `id` (again is a no-op); errors if there is none.
    pub fn ack(&mut self, id: &str, by: &str, at: i64) -> Result<Alert> {
        let Some(a) = self.alerts.iter_mut().find(|a| a.id == id) else {
            return Err(Error::InvalidParameter {
                name: "ID",
                reason: format!("no alert `{id}` in {}", self.path.display()),
            });
        };
        if a.acknowledged_at.is_none() {
            a.acknowledged_at = Some(rfc3339(at));
            a.acknowledged_by = Some(by.to_string());
        }
        let out = a.clone();
        self.save()?;
        Ok(out)
    }
}

/// A Parquet file of the lake, whole; a damaged one is a `CorruptLake` error naming it.
pub(crate) fn read_parquet(path: &Path) -> Result<DataFrame> {
    let f = std::fs::File::open(path).at(path)?;
    ParquetReader::new(f)
        .finish()
        .map_err(|e| Error::CorruptLake {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// The alerts of a lake, read without taking the store's lock (reports): none if the lake
/// has no alert table yet.
pub fn read_store(lake_dir: &Path) -> Result<Vec<Alert>> {
    let path = lake_dir.join(ALERTS_DIR).join(ALERTS_FILE);
    if path.exists() {
        read_alerts(&path)
    } else {
        Ok(Vec::new())
    }
}

fn read_alerts(path: &Path) -> Result<Vec<Alert>> {
    let df = read_parquet(path)?;
    let col = |n: &str| -> Result<StringChunked> { Ok(df.column(n)?.str()?.clone()) };
    let (id, kind, tenant, meter, thr, sev, msg, val, lim, ps, pe, ra, ack, ackby, del, err) = (
        col("id")?,
        col("kind")?,
        col("tenant_id")?,
        col("meter")?,
        col("threshold")?,
        col("severity")?,
        col("message")?,
        col("value")?,
        col("limit")?,
        col("period_start")?,
        col("period_end")?,
        col("raised_at")?,
        col("acknowledged_at")?,
        col("acknowledged_by")?,
        col("delivered_at")?,
        col("last_error")?,
    );
    let attempts = df.column("attempts")?.u32()?.clone();
    let g = |c: &StringChunked, i: usize| c.get(i).unwrap_or_default().to_string();
    let o = |c: &StringChunked, i: usize| c.get(i).map(str::to_string);
    Ok((0..df.height())
        .map(|i| Alert {
            id: g(&id, i),
            kind: g(&kind, i),
            tenant_id: g(&tenant, i),
            meter: g(&meter, i),
            threshold: g(&thr, i),
            severity: g(&sev, i),
            message: g(&msg, i),
            value: g(&val, i),
            limit: g(&lim, i),
            period_start: g(&ps, i),
            period_end: g(&pe, i),
            raised_at: g(&ra, i),
            acknowledged_at: o(&ack, i),
            acknowledged_by: o(&ackby, i),
            delivered_at: o(&del, i),
            attempts: attempts.get(i).unwrap_or(0),
            last_error: o(&err, i),
        })
        .collect())
}

/// What `raise` considers.
#[derive(Debug, Clone)]
pub struct RaiseOptions {
    /// The evaluation instant (UTC µs).
    pub at: i64,
    /// Overage cost that raises `cost_over` for every plan (overrides plans' `cost_alert`).
    pub cost_over: Option<Decimal>,
    /// Raise alerts for high and critical anomaly incidents.
    pub anomalies: bool,
    /// Incidents older than this before `at` are not raised (µs).
    pub anomaly_lookback: i64,
}

/// Evaluates quotas and anomaly incidents at `opts.at` and stores the alerts not raised
/// before. Returns the new ones.
pub fn raise(lake: &Lake, billing: &Billing, opts: &RaiseOptions) -> Result<Vec<Alert>> {
    let mut candidates: Vec<Alert> = Vec::new();
    let raised_at = rfc3339(opts.at);
    let rows = quotas(
        lake,
        billing,
        &QuotaOptions {
            at: opts.at,
            project: false,
            ..QuotaOptions::default()
        },
    )?;
    let cur = &billing.catalog.currency;
    for r in &rows {
        let mk = |kind: &str,
                  threshold: String,
                  severity: &str,
                  message: String,
                  value: String,
                  limit: String| Alert {
            id: alert_id(&[kind, &r.tenant_id, &r.meter, &threshold, &r.period_start]),
            kind: kind.into(),
            tenant_id: r.tenant_id.clone(),
            meter: r.meter.clone(),
            threshold,
            severity: severity.into(),
            message,
            value,
            limit,
            period_start: r.period_start.clone(),
            period_end: r.period_end.clone(),
            raised_at: raised_at.clone(),
            ..Alert::default()
        };
        let plan = billing.catalog.plan(&r.plan);
        if let (Some(inc), Some(pct)) = (r.included, r.percent) {
            let a = plan.map(|p| p.allowance(&r.meter));
            let (w, c) = a
                .map(|a| (a.warning, a.critical))
                .unwrap_or((Decimal::from(80), Decimal::from(90)));
            for (th, sev) in [
                (w, "warning"),
                (c, "critical"),
                (Decimal::from(100), "critical"),
            ] {
                if pct >= th {
                    candidates.push(mk(
                        "threshold",
                        th.normalize().to_string(),
                        sev,
                        format!(
                            "{} {}: {} of {} {} used ({pct}%), crossing {}%",
                            r.tenant_id,
                            r.meter,
                            r.used,
                            inc,
                            r.unit,
                            th.normalize()
                        ),
                        r.used.to_string(),
                        inc.to_string(),
                    ));
                }
            }
            if r.used > inc || r.status == Status::Blocked {
                let what = if r.hard_cap {
                    "hard cap reached: further use is blocked"
                } else {
                    "overage is billed"
                };
                candidates.push(mk(
                    "limit_exceeded",
                    "100".into(),
                    "critical",
                    format!(
                        "{} {}: {} {} used of {} included; {what}",
                        r.tenant_id, r.meter, r.used, r.unit, inc
                    ),
                    r.used.to_string(),
                    inc.to_string(),
                ));
            }
        }
    }
    // Overage cost per tenant and period, against the plan's (or the given) amount.
    let mut cost: BTreeMap<(&str, &str, &str, &str), Decimal> = BTreeMap::new();
    for r in &rows {
        *cost
            .entry((&r.tenant_id, &r.plan, &r.period_start, &r.period_end))
            .or_default() += r.overage_cost;
    }
    for ((tenant, plan, ps, pe), c) in cost {
        let limit = opts
            .cost_over
            .or_else(|| billing.catalog.plan(plan).and_then(|p| p.cost_alert));
        if let Some(l) = limit
            && c > l
        {
            let th = l.to_string();
            candidates.push(Alert {
                id: alert_id(&["cost_over", tenant, "", &th, ps]),
                kind: "cost_over".into(),
                tenant_id: tenant.into(),
                meter: String::new(),
                threshold: th.clone(),
                severity: "warning".into(),
                message: format!("{tenant}: overage cost so far {c} {cur} is over {l} {cur}"),
                value: c.to_string(),
                limit: th,
                period_start: ps.into(),
                period_end: pe.into(),
                raised_at: raised_at.clone(),
                ..Alert::default()
            });
        }
    }
    if opts.anomalies {
        candidates.extend(anomaly_alerts(lake, billing, opts, &raised_at)?);
    }
    let mut store = AlertStore::open(lake.root())?;
    let known: HashSet<String> = store.alerts.iter().map(|a| a.id.clone()).collect();
    let mut seen = HashSet::new();
    let new: Vec<Alert> = candidates
        .into_iter()
        .filter(|a| !known.contains(&a.id) && seen.insert(a.id.clone()))
        .collect();
    if !new.is_empty() {
        store.alerts.extend(new.iter().cloned());
        store.save()?;
    }
    Ok(new)
}

/// High and critical incidents of `LAKE/anomalies/granularity=*/incidents.parquet` that
/// started within the lookback before `at`.
fn anomaly_alerts(
    lake: &Lake,
    billing: &Billing,
    opts: &RaiseOptions,
    raised_at: &str,
) -> Result<Vec<Alert>> {
    let mut out = Vec::new();
    let dir = lake.root().join(crate::anomalies::ANOMALIES_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(out);
    };
    let mut files: Vec<(String, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let g = name.strip_prefix("granularity=")?.to_string();
            let p = e.path().join("incidents.parquet");
            p.exists().then_some((g, p))
        })
        .collect();
    files.sort();
    let tenants: HashSet<&str> = billing.tenants.iter().map(|t| t.id.as_str()).collect();
    for (g, path) in files {
        let df = read_parquet(&path)?
            .lazy()
            .with_columns([
                col("window_start").cast(DataType::Int64),
                col("window_end").cast(DataType::Int64),
            ])
            .filter(
                col("severity")
                    .eq(lit("high"))
                    .or(col("severity").eq(lit("critical")))
                    .and(col("window_start").gt_eq(lit(opts.at - opts.anomaly_lookback)))
                    .and(col("window_start").lt(lit(opts.at))),
            )
            .collect()?;
        let t = df.column("tenant_id")?.str()?;
        let m = df.column("meter")?.str()?;
        let ws = df.column("window_start")?.i64()?;
        let we = df.column("window_end")?.i64()?;
        let obs = df.column("observed")?.f64()?;
        let exp = df.column("expected")?.f64()?;
        let sev = df.column("severity")?.str()?;
        let det = df.column("detectors")?.str()?;
        let risk = df.column("risk")?.f64()?;
        for i in 0..df.height() {
            let tenant = t.get(i).unwrap_or_default();
            if !tenants.contains(tenant) {
                continue;
            }
            let meter = m.get(i).unwrap_or_default();
            let (s, e) = (
                rfc3339(ws.get(i).unwrap_or(0)),
                rfc3339(we.get(i).unwrap_or(0)),
            );
            let severity = sev.get(i).unwrap_or_default();
            let (o, x) = (
                obs.get(i).unwrap_or(f64::NAN),
                exp.get(i).unwrap_or(f64::NAN),
            );
            out.push(Alert {
                id: alert_id(&["anomaly", tenant, meter, &g, &s]),
                kind: "anomaly".into(),
                tenant_id: tenant.into(),
                meter: meter.into(),
                threshold: severity.into(),
                severity: severity.into(),
                message: format!(
                    "{tenant} {meter}: {severity} anomaly ({}) from {s}, observed {o:.4} vs expected {x:.4}, risk {:.0}",
                    det.get(i).unwrap_or_default(),
                    risk.get(i).unwrap_or(0.0)
                ),
                value: format!("{o}"),
                limit: format!("{x}"),
                period_start: s,
                period_end: e,
                raised_at: raised_at.into(),
                ..Alert::default()
            });
        }
    }
    Ok(out)
}

/// Where and how alerts are delivered.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// The endpoint (http or https).
    pub url: String,
    /// The shared secret the signature is keyed with.
    pub secret: String,
    /// Attempts per alert in one run.
    pub max_attempts: u32,
    /// First retry delay; each next one doubles (capped at 60 s).
    pub backoff: Duration,
    /// Timeout of one request.
    pub timeout: Duration,
}

/// The signature header's value for a body sent at `timestamp` (unix seconds).
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// What a delivery run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Delivered {
    /// Alerts accepted by the webhook in this run.
    pub delivered: usize,
    /// Alerts still undelivered after this run's attempts.
    pub failed: usize,
    /// Requests sent.
    pub requests: usize,
}

/// Sends every undelivered alert of the lake to the webhook, recording each outcome.
pub fn deliver(lake_dir: &Path, hook: &Webhook) -> Result<Delivered> {
    let mut store = AlertStore::open(lake_dir)?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(hook.timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let mut out = Delivered::default();
    let pending: Vec<usize> = (0..store.alerts.len())
        .filter(|&i| store.alerts[i].delivered_at.is_none())
        .collect();
    for i in pending {
        let body = {
            let a = &store.alerts[i];
            let mut v = serde_json::to_value(a).map_err(|e| Error::InvalidParameter {
                name: "alert",
                reason: e.to_string(),
            })?;
            if let Some(o) = v.as_object_mut() {
                for k in ["delivered_at", "attempts", "last_error"] {
                    o.remove(k);
                }
            }
            v.to_string()
        };
        let mut delay = hook.backoff;
        let mut ok = false;
        for attempt in 0..hook.max_attempts {
            if attempt > 0 {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(60));
            }
            let now = chrono::Utc::now();
            let ts = now.timestamp();
            out.requests += 1;
            let res = agent
                .post(&hook.url)
                .header("Content-Type", "application/json")
                .header(
                    "User-Agent",
                    concat!("meterlake/", env!("CARGO_PKG_VERSION")),
                )
                .header("X-Meterlake-Delivery", &store.alerts[i].id)
                .header("X-Meterlake-Timestamp", &ts.to_string())
                .header("X-Meterlake-Signature", &signature(&hook.secret, ts, &body))
                .send(&body);
            let a = &mut store.alerts[i];
            a.attempts += 1;
            match res {
                Ok(r) if r.status().is_success() => {
                    a.delivered_at = Some(rfc3339(now.timestamp_micros()));
                    a.last_error = None;
                    ok = true;
                    break;
                }
                Ok(r) => a.last_error = Some(format!("HTTP {}", r.status().as_u16())),
                Err(e) => a.last_error = Some(e.to_string()),
            }
        }
        // Recorded after every alert: a restart neither repeats nor loses it.
        store.save()?;
        if ok {
            out.delivered += 1;
        } else {
            out.failed += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_python_hmac() {
        // python3 -c "import hmac,hashlib; print(hmac.new(b's3cret',
        //   b'1700000000.{\"a\":1}', hashlib.sha256).hexdigest())"
        assert_eq!(
            signature("s3cret", 1_700_000_000, r#"{"a":1}"#),
            "sha256=1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940"
        );
    }
}
