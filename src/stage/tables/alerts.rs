//! `LAKE/alerts/alerts.parquet`: the alert store's table, every alert raised with its
//! acknowledgement and delivery state. [`crate::stage::alerts`] owns the store (its lock,
//! raising, acknowledging, delivering); this module is the table's schema.

use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::Serialize;

use super::{Columns, write_frame};
use crate::error::Result;

/// Folder of the alert store under the lake.
pub const DIR: &str = "alerts";
/// The store's file.
pub const FILE: &str = "alerts.parquet";

/// The alert table of a lake.
pub fn file(lake_dir: &Path) -> PathBuf {
    lake_dir.join(DIR).join(FILE)
}

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

/// Writes the alerts at `path`, in the order given.
pub fn write(path: &Path, alerts: &[Alert]) -> Result<()> {
    let a = alerts;
    let s = |f: fn(&Alert) -> &String| -> Vec<String> { a.iter().map(|x| f(x).clone()).collect() };
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
    write_frame(path, &mut df)
}

/// Reads the alerts at `path`, in stored (raise) order.
pub fn read(path: &Path) -> Result<Vec<Alert>> {
    let c = Columns::read(path)?;
    let t = |n: &str| c.text(n);
    let o = |n: &str| c.opt_text(n);
    let (id, kind, tenant, meter, thr, sev, msg) = (
        t("id")?,
        t("kind")?,
        t("tenant_id")?,
        t("meter")?,
        t("threshold")?,
        t("severity")?,
        t("message")?,
    );
    let (val, lim, ps, pe, ra) = (
        t("value")?,
        t("limit")?,
        t("period_start")?,
        t("period_end")?,
        t("raised_at")?,
    );
    let (ack, ackby, del, err) = (
        o("acknowledged_at")?,
        o("acknowledged_by")?,
        o("delivered_at")?,
        o("last_error")?,
    );
    let attempts = c.u32("attempts")?;
    Ok((0..c.height())
        .map(|i| Alert {
            id: id[i].clone(),
            kind: kind[i].clone(),
            tenant_id: tenant[i].clone(),
            meter: meter[i].clone(),
            threshold: thr[i].clone(),
            severity: sev[i].clone(),
            message: msg[i].clone(),
            value: val[i].clone(),
            limit: lim[i].clone(),
            period_start: ps[i].clone(),
            period_end: pe[i].clone(),
            raised_at: ra[i].clone(),
            acknowledged_at: ack[i].clone(),
            acknowledged_by: ackby[i].clone(),
            delivered_at: del[i].clone(),
            attempts: attempts[i],
            last_error: err[i].clone(),
        })
        .collect())
}

/// The alerts of a lake, read without taking the store's lock (reports, the audit log):
/// none if the lake has no alert table yet.
pub fn read_lake(lake_dir: &Path) -> Result<Vec<Alert>> {
    let path = file(lake_dir);
    if path.exists() {
        read(&path)
    } else {
        Ok(Vec::new())
    }
}
