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
//! A 2xx answer marks it delivered; a 429, 5xx or network error is retried with
//! exponential backoff ([`crate::http`]; another answer is not retried in this run), and
//! the attempt count, last error and delivery time are stored after every alert, so a
//! restart resumes where it stopped and never re-sends a recorded delivery. (If the process
//! dies between the receiver's 2xx and the store's rename, that one alert is sent again:
//! receivers dedup on `X-Meterlake-Delivery`.)

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use rust_decimal::Decimal;
use serde::Serialize;
use sha2::Sha256;

pub use super::tables::alerts::Alert;
use super::tables::{self, incidents::IncidentRecord};
use crate::billing::Billing;
use crate::billing::quota::{QuotaOptions, QuotaRow, Status, quotas};
use crate::error::{Error, IoContext, Result};
use crate::lake::Lake;
use crate::time::rfc3339;

/// Environment variable holding the webhook's shared secret (kept off the command line).
pub const SECRET_ENV: &str = "MLK_WEBHOOK_SECRET";

fn alert_id(parts: &[&str]) -> String {
    format!(
        "{:016x}",
        xxhash_rust::xxh3::xxh3_64(parts.join("\u{1f}").as_bytes())
    )
}

/// The alert table of a lake, held under its lock while open.
pub struct AlertStore {
    lake_dir: PathBuf,
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
        let dir = lake_dir.join(tables::ALERTS_DIR);
        std::fs::create_dir_all(&dir).at(&dir)?;
        let lock = crate::lake::lock_exclusive(&dir.join("_lock"))?;
        let path = dir.join(tables::alerts::FILE);
        let alerts = if path.exists() {
            tables::alerts::read(&path)?
        } else {
            Vec::new()
        };
        Ok(AlertStore {
            lake_dir: lake_dir.to_path_buf(),
            path,
            _lock: lock,
            alerts,
        })
    }

    /// Writes the table atomically.
    pub fn save(&self) -> Result<()> {
        tables::alerts::write(&self.path, &self.alerts)
    }

    /// Acknowledges alert `id` (again is a no-op); errors if there is none.
    ///
    /// The acknowledgement appends its own entry to the lake's audit log first (fsynced),
    /// then the table is saved: a crash in between leaves an audit entry for an
    /// acknowledgement the store does not hold yet, and acknowledging again completes it
    /// (with a second entry). The audit log never misses an acknowledgement.
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
            crate::lake::audit::append(
                &self.lake_dir,
                &crate::lake::audit::AuditEntry {
                    at: rfc3339(at),
                    actor: by.to_string(),
                    action: "acknowledge".into(),
                    target: format!("alert {} ({} {} {})", a.id, a.kind, a.tenant_id, a.meter),
                    rows: 0,
                    commit: None,
                    detail: a.message.clone(),
                },
            )?;
        }
        let out = a.clone();
        self.save()?;
        Ok(out)
    }
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

impl RaiseOptions {
    /// What the batch job and serve's refresh raise at `at`: each plan's own cost alert,
    /// and high and critical incidents of the last 7 days.
    pub fn batch(at: i64) -> RaiseOptions {
        RaiseOptions {
            at,
            cost_over: None,
            anomalies: true,
            anomaly_lookback: 7 * crate::time::MICROS_PER_DAY,
        }
    }
}

/// Evaluates quotas and anomaly incidents at `opts.at` and stores the alerts not raised
/// before. Returns the new ones.
pub fn raise(lake: &Lake, billing: &Billing, opts: &RaiseOptions) -> Result<Vec<Alert>> {
    let rows = quotas(
        lake,
        billing,
        &QuotaOptions {
            at: opts.at,
            project: false,
            ..QuotaOptions::default()
        },
    )?;
    raise_from(lake, billing, &rows, opts)
}

/// [`raise`] from quota rows already evaluated at `opts.at` (the job's quota stage), so a
/// run evaluates its quotas once.
pub fn raise_from(
    lake: &Lake,
    billing: &Billing,
    rows: &[QuotaRow],
    opts: &RaiseOptions,
) -> Result<Vec<Alert>> {
    let mut candidates: Vec<Alert> = Vec::new();
    let raised_at = rfc3339(opts.at);
    let cur = &billing.catalog.currency;
    for r in rows {
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
    for r in rows {
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
    let tenants: HashSet<&str> = billing.tenants.iter().map(|t| t.id.as_str()).collect();
    for (g, path) in tables::incidents::files(lake.root()) {
        let recent = |r: &IncidentRecord| {
            matches!(r.severity.as_str(), "high" | "critical")
                && r.window_start >= opts.at - opts.anomaly_lookback
                && r.window_start < opts.at
        };
        for r in tables::incidents::read(&path)?.iter().filter(|r| recent(r)) {
            let (tenant, meter, severity) = (&r.tenant_id, &r.meter, &r.severity);
            if !tenants.contains(tenant.as_str()) {
                continue;
            }
            let (s, e) = (rfc3339(r.window_start), rfc3339(r.window_end));
            let (o, x) = (r.observed, r.expected);
            out.push(Alert {
                id: alert_id(&["anomaly", tenant, meter, &g, &s]),
                kind: "anomaly".into(),
                tenant_id: tenant.clone(),
                meter: meter.clone(),
                threshold: severity.clone(),
                severity: severity.clone(),
                message: format!(
                    "{tenant} {meter}: {severity} anomaly ({}) from {s}, observed {o:.4} vs expected {x:.4}, risk {:.0}",
                    r.detectors, r.risk
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

/// POSTs a JSON `body` to `url` signed with `secret` (the headers of the module docs),
/// once; `delivery` is the `X-Meterlake-Delivery` id receivers dedup on.
pub(crate) fn post_signed(
    agent: &ureq::Agent,
    url: &str,
    secret: &str,
    delivery: &str,
    body: &str,
) -> std::result::Result<(), crate::http::Failure> {
    let ts = chrono::Utc::now().timestamp();
    crate::http::outcome(
        agent
            .post(url)
            .header("Content-Type", "application/json")
            .header(
                "User-Agent",
                concat!("meterlake/", env!("CARGO_PKG_VERSION")),
            )
            .header("X-Meterlake-Delivery", delivery)
            .header("X-Meterlake-Timestamp", &ts.to_string())
            .header("X-Meterlake-Signature", &signature(secret, ts, body))
            .send(body),
    )
}

/// What a delivery run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Delivered {
    /// Alerts accepted by the webhook in this run.
    pub delivered: usize,
    /// Alerts still undelivered after this run's attempts (the skipped ones included).
    pub failed: usize,
    /// Of those, alerts not tried: the webhook had failed [`GIVE_UP_AFTER`] alerts in a
    /// row (down or refusing), so the rest wait for the next delivery.
    pub skipped: usize,
    /// Requests sent.
    pub requests: usize,
}

/// Alerts in a row whose every try failed, after which a delivery run stops trying the
/// webhook: a receiver that is down would otherwise cost every pending alert its retries
/// (116 alerts took a `run` three minutes).
pub const GIVE_UP_AFTER: usize = 2;

/// Sends every undelivered alert of the lake to the webhook, recording each outcome.
pub fn deliver(lake_dir: &Path, hook: &Webhook) -> Result<Delivered> {
    let mut store = AlertStore::open(lake_dir)?;
    let agent = crate::http::agent(hook.timeout);
    let mut out = Delivered::default();
    let mut pending: Vec<usize> = (0..store.alerts.len())
        .filter(|&i| store.alerts[i].delivered_at.is_none())
        .collect();
    // Alerts tried before go last: two that the receiver always refuses must not keep the
    // others from being tried (stable: the order otherwise).
    pending.sort_by_key(|&i| store.alerts[i].attempts > 0);
    let mut failed_in_a_row = 0;
    for (k, &i) in pending.iter().enumerate() {
        if failed_in_a_row >= GIVE_UP_AFTER {
            out.skipped = pending.len() - k;
            out.failed += out.skipped;
            break;
        }
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
        let retry = crate::http::Retry {
            attempts: hook.max_attempts,
            backoff: hook.backoff,
        };
        let (res, tries) = crate::http::with_retries(retry, |_| {
            let now = chrono::Utc::now();
            out.requests += 1;
            let outcome = post_signed(&agent, &hook.url, &hook.secret, &store.alerts[i].id, &body);
            // Every try is recorded on the alert.
            let a = &mut store.alerts[i];
            a.attempts += 1;
            match &outcome {
                Ok(()) => {
                    a.delivered_at = Some(rfc3339(now.timestamp_micros()));
                    a.last_error = None;
                }
                Err(f) => a.last_error = Some(f.message().to_string()),
            }
            outcome
        });
        let ok = res.is_ok();
        // Recorded after every alert: a restart neither repeats nor loses it.
        store.save()?;
        if ok {
            out.delivered += 1;
            failed_in_a_row = 0;
        } else {
            out.failed += 1;
            // A refusal of this alert alone (a 4xx, not retried) says nothing of the rest.
            if tries >= retry.attempts.max(1) {
                failed_in_a_row += 1;
            }
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
