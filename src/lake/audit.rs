//! The audit log: who did what to the data, and when.
//!
//! Deletions are lake commits (`retention`, `forget`) that carry their own [`Audit`]
//! record, so the record and the change are one atomic step: there is no deletion without
//! its record, and no record of a deletion that did not happen. Alert acknowledgements are
//! recorded in the alert store (who, when). [`read`] gathers both, oldest first.

use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::lake::{Audit, Lake};

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    /// When (RFC 3339, UTC).
    pub at: String,
    /// Who.
    pub actor: String,
    /// `retention`, `forget` or `acknowledge`.
    pub action: String,
    /// What it applied to.
    pub target: String,
    /// Event rows removed (0 for acknowledgements).
    pub rows: u64,
    /// The lake commit that made the change.
    pub commit: Option<u64>,
    /// Details.
    pub detail: String,
}

/// Who is acting: `MLK_ACTOR`, else `USER`, else `unknown`.
pub fn current_actor() -> String {
    ["MLK_ACTOR", "USER", "USERNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

/// Every audit entry of a lake, oldest first.
pub fn read(lake_dir: &Path) -> Result<Vec<AuditEntry>> {
    let lake = Lake::open(lake_dir)?;
    let mut out: Vec<AuditEntry> = lake
        .commits()
        .iter()
        .filter_map(|c| {
            let a: &Audit = c.audit.as_ref()?;
            Some(AuditEntry {
                at: c.committed_at.clone(),
                actor: a.actor.clone(),
                action: a.action.clone(),
                target: a.target.clone(),
                rows: a.rows,
                commit: Some(c.seq),
                detail: a.detail.clone(),
            })
        })
        .collect();
    for a in crate::alerts::read_store(lake_dir)? {
        if let Some(at) = &a.acknowledged_at {
            out.push(AuditEntry {
                at: at.clone(),
                actor: a.acknowledged_by.clone().unwrap_or_default(),
                action: "acknowledge".into(),
                target: format!("alert {} ({} {} {})", a.id, a.kind, a.tenant_id, a.meter),
                rows: 0,
                commit: None,
                detail: a.message.clone(),
            });
        }
    }
    out.sort_by(|a, b| a.at.cmp(&b.at).then(a.commit.cmp(&b.commit)));
    Ok(out)
}
