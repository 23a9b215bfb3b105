//! The audit log: who did what to the data, and when.
//!
//! Deletions are lake commits (`retention`, `forget`) that carry their own [`Audit`]
//! record, so the record and the change are one atomic step: there is no deletion without
//! its record, and no record of a deletion that did not happen. Actions that are not lake
//! commits (alert acknowledgements, the HTTP API's admin actions) [`append`] an entry to
//! `LAKE/_api/audit.ndjson` themselves, fsynced before they take effect. [`read`] gathers
//! both, oldest first. The lake knows nothing of what those actions are about.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::lake::{Audit, Lake};

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When (RFC 3339, UTC).
    pub at: String,
    /// Who.
    pub actor: String,
    /// `retention`, `forget`, `acknowledge`, or an API admin action.
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

/// Audit entries of actions that are not lake commits (acknowledgements, the API's admin
/// actions), appended and fsynced. (The folder's name is historical: the API wrote it first.)
pub const API_AUDIT_FILE: &str = "_api/audit.ndjson";

/// Appends an entry to the audit file of actions that are not lake commits.
pub fn append(lake_dir: &Path, e: &AuditEntry) -> Result<()> {
    use std::io::Write;
    let p = lake_dir.join(API_AUDIT_FILE);
    let dir = p.parent().expect("has a parent");
    std::fs::create_dir_all(dir).map_err(|x| crate::Error::io(dir, x))?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .map_err(|x| crate::Error::io(&p, x))?;
    let mut line = serde_json::to_vec(e).map_err(|x| crate::Error::Render(x.to_string()))?;
    line.push(b'\n');
    f.write_all(&line)
        .and_then(|_| f.sync_data())
        .map_err(|x| crate::Error::io(&p, x))
}

/// Every audit entry of a lake, oldest first.
pub fn read(lake_dir: &Path) -> Result<Vec<AuditEntry>> {
    let lake = Lake::open(lake_dir)?;
    let mut out: Vec<AuditEntry> = lake
        .audited_commits()
        .into_iter()
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
    let api = lake_dir.join(API_AUDIT_FILE);
    if api.exists() {
        let text = std::fs::read_to_string(&api).map_err(|x| crate::Error::io(&api, x))?;
        // A torn last line (a crash mid-append) is skipped.
        out.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<AuditEntry>(l).ok()),
        );
    }
    out.sort_by(|a, b| a.at.cmp(&b.at).then(a.commit.cmp(&b.commit)));
    Ok(out)
}
