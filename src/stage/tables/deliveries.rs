//! `LAKE/alerts/deliveries.parquet`: every notification of an alert, one row per alert ×
//! rule × escalation level × channel, with its outcome. [`crate::stage::notify`] writes it
//! under the alert store's lock; `alerts list` shows it with each alert.
//!
//! A row's `status` is `sent` (the channel accepted it: never sent again), `covered`
//! (another rule sent the same alert on the same channel at the same level: not sent
//! twice) or `failed` (retried by the next delivery run, `attempts` counting every try). `first_at` is the
//! first try's instant: escalation levels count their delay from the first level-0 try.

use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::Serialize;

use super::{Columns, write_frame};
use crate::error::Result;

/// The table's file, beside the alert store's.
pub const FILE: &str = "deliveries.parquet";

/// The deliveries table of a lake.
pub fn file(lake_dir: &Path) -> PathBuf {
    lake_dir.join(super::alerts::DIR).join(FILE)
}

/// One notification of one alert.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Delivery {
    /// The alert.
    pub alert_id: String,
    /// Its tenant (so `forget` finds the row).
    pub tenant_id: String,
    /// The rule (`[[notify.rules]]` name) that sent it.
    pub rule: String,
    /// 0: the first notification; N: the rule's Nth escalation.
    pub level: u32,
    /// The channel (`[notify.channels.NAME]`).
    pub channel: String,
    /// `sent`, `covered` or `failed`.
    pub status: String,
    /// Tries so far.
    pub attempts: u32,
    /// The first try (RFC 3339, the delivery clock).
    pub first_at: String,
    /// The last try.
    pub at: String,
    /// The last error (none once sent).
    pub error: Option<String>,
    /// The message it went out in (a digest carries several alerts).
    pub message_id: String,
}

/// Writes the deliveries at `path`.
pub fn write(path: &Path, rows: &[Delivery]) -> Result<()> {
    let s = |f: fn(&Delivery) -> &String| -> Vec<String> {
        rows.iter().map(|x| f(x).clone()).collect()
    };
    let u = |f: fn(&Delivery) -> u32| -> Vec<u32> { rows.iter().map(f).collect() };
    let mut df = DataFrame::new_infer_height(vec![
        Column::new("alert_id".into(), s(|x| &x.alert_id)),
        Column::new("tenant_id".into(), s(|x| &x.tenant_id)),
        Column::new("rule".into(), s(|x| &x.rule)),
        Column::new("level".into(), u(|x| x.level)),
        Column::new("channel".into(), s(|x| &x.channel)),
        Column::new("status".into(), s(|x| &x.status)),
        Column::new("attempts".into(), u(|x| x.attempts)),
        Column::new("first_at".into(), s(|x| &x.first_at)),
        Column::new("at".into(), s(|x| &x.at)),
        Column::new(
            "error".into(),
            rows.iter().map(|x| x.error.clone()).collect::<Vec<_>>(),
        ),
        Column::new("message_id".into(), s(|x| &x.message_id)),
    ])?;
    write_frame(path, &mut df)
}

/// Reads the deliveries at `path`, in stored order.
pub fn read(path: &Path) -> Result<Vec<Delivery>> {
    let c = Columns::read(path)?;
    let tenant = c.text("tenant_id")?;
    let (alert, rule, channel, status, first, at, msg) = (
        c.text("alert_id")?,
        c.text("rule")?,
        c.text("channel")?,
        c.text("status")?,
        c.text("first_at")?,
        c.text("at")?,
        c.text("message_id")?,
    );
    let (level, attempts, error) = (c.u32("level")?, c.u32("attempts")?, c.opt_text("error")?);
    Ok((0..c.height())
        .map(|i| Delivery {
            alert_id: alert[i].clone(),
            tenant_id: tenant[i].clone(),
            rule: rule[i].clone(),
            level: level[i],
            channel: channel[i].clone(),
            status: status[i].clone(),
            attempts: attempts[i],
            first_at: first[i].clone(),
            at: at[i].clone(),
            error: error[i].clone(),
            message_id: msg[i].clone(),
        })
        .collect())
}

/// The deliveries of a lake (none before the first notification).
pub fn read_lake(lake_dir: &Path) -> Result<Vec<Delivery>> {
    let path = file(lake_dir);
    if path.exists() {
        read(&path)
    } else {
        Ok(Vec::new())
    }
}
