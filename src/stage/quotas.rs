//! The quota stage: every tenant × billed meter evaluated once at the job's instant, with
//! its projection of the period's end, written to [`tables::quotas`].
//!
//! One evaluation serves the whole job: the table, the alerts raised from it and every
//! report of the run read the same rows (a projection forecasts each series, so computing
//! it once per run, not once per consumer, matters). The evaluation itself is billing's
//! ([`crate::billing::quota::quotas`]); this stage decides the instant, applies the job's
//! enforcement switch to what it stores, and writes the table.

use std::path::Path;

use super::tables;
use crate::billing::Billing;
use crate::billing::quota::{QuotaOptions, QuotaRow, Status, quotas};
use crate::error::Result;
use crate::lake::Lake;

/// Every tenant's (or one tenant's) quotas at `at`, each with its projected period end.
/// A tenant the tenants file does not list has no plan, hence no rows.
pub fn evaluate(
    lake: &Lake,
    billing: &Billing,
    at: i64,
    tenant: Option<&str>,
) -> Result<Vec<QuotaRow>> {
    evaluate_among(lake, billing, at, tenant, None)
}

/// [`evaluate`] limited to the tenants `among` (none: no further limit).
pub fn evaluate_among(
    lake: &Lake,
    billing: &Billing,
    at: i64,
    tenant: Option<&str>,
    among: Option<std::collections::BTreeSet<String>>,
) -> Result<Vec<QuotaRow>> {
    if let Some(t) = tenant
        && billing.tenants.iter().all(|x| x.id != t)
    {
        return Ok(Vec::new());
    }
    quotas(
        lake,
        billing,
        &QuotaOptions {
            at,
            tenant: tenant.map(str::to_string),
            among,
            project: true,
            ..QuotaOptions::default()
        },
    )
}

/// What the quota stage stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Tenant × meter rows.
    pub rows: usize,
    /// Rows over their allowance (exceeded or blocked).
    pub over: usize,
}

/// With enforcement off, hard caps do not block: a blocked row is exceeded (what the stored
/// table, the alerts and the reports all say).
pub fn apply_enforcement(rows: &mut [QuotaRow], enforcement: bool) {
    if !enforcement {
        for r in rows.iter_mut().filter(|r| r.status == Status::Blocked) {
            r.status = Status::Exceeded;
        }
    }
}

/// Writes `LAKE/quotas/quotas.parquet` from evaluated rows. With enforcement off, hard caps
/// do not block: a blocked row is stored as exceeded ([`apply_enforcement`]), and no cap
/// is marked enforced.
pub fn write(lake_dir: &Path, rows: &[QuotaRow], enforcement: bool) -> Result<Written> {
    let mut stored = rows.to_vec();
    apply_enforcement(&mut stored, enforcement);
    let over = stored
        .iter()
        .filter(|r| matches!(r.status, Status::Exceeded | Status::Blocked))
        .count();
    let enforced: Vec<bool> = stored.iter().map(|r| r.hard_cap && enforcement).collect();
    tables::quotas::write(lake_dir, &stored, &enforced)?;
    Ok(Written {
        rows: stored.len(),
        over,
    })
}
