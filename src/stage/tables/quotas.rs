//! `LAKE/quotas/quotas.parquet`: the quota stage's table, one row per tenant × billed meter
//! at the run's instant: usage, allowance, status and overage so far, and whether a hard
//! cap is enforced. Amounts are billing's exact decimals written as Parquet doubles (the
//! table is for people, notebooks and dashboards; invoices never read it back).

use std::path::{Path, PathBuf};

use polars::prelude::*;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use super::write_frame;
use crate::billing::quota::QuotaRow;
use crate::error::Result;

/// Folder of the quota table under the lake.
pub const DIR: &str = "quotas";
/// The table's file.
pub const FILE: &str = "quotas.parquet";

/// The quota table of a lake.
pub fn file(lake_dir: &Path) -> PathBuf {
    lake_dir.join(DIR).join(FILE)
}

/// Writes the quota table of `lake_dir`: `rows`, each with whether its cap is `enforced`.
pub fn write(lake_dir: &Path, rows: &[QuotaRow], enforced: &[bool]) -> Result<()> {
    let text = |f: fn(&QuotaRow) -> &str| -> Vec<Option<String>> {
        rows.iter().map(|q| Some(f(q).to_string())).collect()
    };
    let num = |d: Decimal| d.to_f64();
    let amount = |f: fn(&QuotaRow) -> Decimal| -> Vec<Option<f64>> {
        rows.iter().map(|q| num(f(q))).collect()
    };
    let opt = |f: fn(&QuotaRow) -> Option<Decimal>| -> Vec<Option<f64>> {
        rows.iter().map(|q| f(q).and_then(num)).collect()
    };
    let mut df = DataFrame::new_infer_height(vec![
        Column::new("tenant_id".into(), text(|q| &q.tenant_id)),
        Column::new("plan".into(), text(|q| &q.plan)),
        Column::new("meter".into(), text(|q| &q.meter)),
        Column::new("unit".into(), text(|q| &q.unit)),
        Column::new("used".into(), amount(|q| q.used)),
        Column::new("included".into(), opt(|q| q.included)),
        Column::new("percent".into(), opt(|q| q.percent)),
        Column::new("status".into(), text(|q| q.status.name())),
        Column::new("overage_units".into(), amount(|q| q.overage_units)),
        Column::new("overage_cost".into(), amount(|q| q.overage_cost)),
        Column::new("period_start".into(), text(|q| &q.period_start)),
        Column::new("period_end".into(), text(|q| &q.period_end)),
        Column::new(
            "enforced".into(),
            enforced.iter().map(|&b| Some(b)).collect::<Vec<_>>(),
        ),
    ])?;
    write_frame(&file(lake_dir), &mut df)
}
