//! The compliance report: what entered and left the lake, and when. For auditors and data
//! protection officers: every commit (ingest, compaction, deletion) with its inputs and
//! record counts (read = accepted + rejected + duplicates), rejected records by field and
//! reason, the audit log of retention, deletions and acknowledgements, and who read which
//! tenant's data (the access log, with whether its hash chain is intact).
//!
//! Reads the lake's commit log, its quarantine files, its audit log and its access log. Without an
//! explicit `--from/--to` it covers the whole history.

use std::collections::BTreeMap;

use super::super::{Figure, Report, ReportKind, Table};
use super::context::Ctx;
use super::figures::{figure, grouped};
use crate::error::Result;
use crate::lake::audit::AuditEntry;
use crate::lake::{Commit, Counts};

pub(super) fn compliance(ctx: &Ctx) -> Result<Report> {
    let history = ctx.lake.history()?;
    let commits: Vec<&Commit> = history
        .iter()
        .filter(|c| in_period(ctx, &c.committed_at))
        .collect();
    let ingests = commit_table(&commits);
    let audit: Vec<AuditEntry> = audit_log(ctx)?
        .into_iter()
        .filter(|a| in_period(ctx, &a.at))
        .collect();
    let audit_table = audit_table(&audit);
    let rejects = rejection_table(ctx, &commits);
    let (access, chain) = access_table(ctx)?;
    let mut figures = figures(&commits, &audit);
    figures.push(chain);
    Ok(Report {
        kind: ReportKind::Compliance,
        title: "Compliance: ingestion, rejects, retention and deletion".into(),
        scope: String::new(),
        figures,
        insights: Vec::new(),
        charts: Vec::new(),
        tables: vec![ingests, rejects, audit_table, access],
    })
}

/// Whether an RFC 3339 instant falls in the period (always, when none was given).
fn in_period(ctx: &Ctx, at: &str) -> bool {
    !ctx.explicit || {
        let t = chrono::DateTime::parse_from_rfc3339(at)
            .map(|d| d.timestamp_micros())
            .unwrap_or(0);
        t >= ctx.from && t < ctx.to
    }
}

fn commit_table(commits: &[&Commit]) -> Table {
    Table::new(
        "commits",
        "Commits: what was ingested, compacted or deleted, and when",
    )
    .int("seq", commits.iter().map(|c| c.seq as i64))
    .text(
        "kind",
        commits.iter().map(|c| {
            serde_json::to_value(c.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        }),
    )
    .text(
        "committed_at",
        commits.iter().map(|c| c.committed_at.as_str()),
    )
    .text(
        "inputs",
        commits.iter().map(|c| {
            c.inputs
                .iter()
                .map(|i| i.path.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }),
    )
    .int("read", commits.iter().map(|c| c.counts.read as i64))
    .int("accepted", commits.iter().map(|c| c.counts.accepted as i64))
    .int("rejected", commits.iter().map(|c| c.counts.rejected as i64))
    .int(
        "duplicates",
        commits.iter().map(|c| c.counts.duplicates as i64),
    )
    .int(
        "partitions",
        commits.iter().map(|c| c.partitions.len() as i64),
    )
    .int("files_added", commits.iter().map(|c| c.added.len() as i64))
    .int(
        "files_removed",
        commits.iter().map(|c| c.removed.len() as i64),
    )
    .opt_text(
        "quarantine",
        commits.iter().map(|c| c.quarantine.clone()).collect(),
    )
}

/// The lake's audit log, with the acknowledgements of lakes written before
/// acknowledgements recorded themselves: an acknowledged alert without its own
/// `acknowledge` entry is listed from the alert store (who, when), as it always was.
fn audit_log(ctx: &Ctx) -> Result<Vec<AuditEntry>> {
    let mut log = crate::lake::audit::read(&ctx.dir)?;
    let target = |a: &crate::stage::alerts::Alert| {
        format!("alert {} ({} {} {})", a.id, a.kind, a.tenant_id, a.meter)
    };
    let recorded: std::collections::HashSet<String> = log
        .iter()
        .filter(|e| e.action == "acknowledge")
        .map(|e| e.target.clone())
        .collect();
    for a in crate::stage::tables::alerts::read_lake(&ctx.dir)? {
        let Some(at) = &a.acknowledged_at else {
            continue;
        };
        if recorded.contains(&target(&a)) {
            continue;
        }
        log.push(AuditEntry {
            at: at.clone(),
            actor: a.acknowledged_by.clone().unwrap_or_default(),
            action: "acknowledge".into(),
            target: target(&a),
            rows: 0,
            commit: None,
            detail: a.message.clone(),
        });
    }
    log.sort_by(|a, b| a.at.cmp(&b.at).then(a.commit.cmp(&b.commit)));
    Ok(log)
}

fn audit_table(audit: &[AuditEntry]) -> Table {
    Table::new(
        "audit",
        "Audit log: retention, deletions and acknowledgements",
    )
    .text("at", audit.iter().map(|a| a.at.as_str()))
    .text("actor", audit.iter().map(|a| a.actor.as_str()))
    .text("action", audit.iter().map(|a| a.action.as_str()))
    .text("target", audit.iter().map(|a| a.target.as_str()))
    .int("rows", audit.iter().map(|a| a.rows as i64))
    .opt_num(
        "commit",
        0,
        audit.iter().map(|a| a.commit.map(|c| c as f64)).collect(),
    )
    .text("detail", audit.iter().map(|a| a.detail.as_str()))
}

/// The access log ([`crate::lake::access`]) in the period (and for the report's tenant, if
/// any), one row per tenant × actor × channel with its reads and the first and last, and a
/// figure saying whether the whole chain is intact.
fn access_table(ctx: &Ctx) -> Result<(Table, Figure)> {
    let verified = crate::lake::access::verify(&ctx.dir)?;
    // (tenant, actor, via) -> (reads, first, last)
    let mut rows: BTreeMap<(String, String, String), (i64, String, String)> = BTreeMap::new();
    for l in crate::lake::access::read(&ctx.dir)? {
        let a = l.access;
        if !in_period(ctx, &a.at) || ctx.tenant.as_ref().is_some_and(|t| *t != a.tenant) {
            continue;
        }
        let e = rows
            .entry((a.tenant, a.actor, a.via))
            .or_insert_with(|| (0, a.at.clone(), a.at.clone()));
        e.0 += 1;
        e.2 = a.at;
    }
    let table = Table::new(
        "access",
        "Access log: who read which tenant's data, how often, first and last",
    )
    .text("tenant", rows.keys().map(|k| k.0.as_str()))
    .text("actor", rows.keys().map(|k| k.1.as_str()))
    .text("via", rows.keys().map(|k| k.2.as_str()))
    .int("reads", rows.values().map(|v| v.0))
    .text("first", rows.values().map(|v| v.1.as_str()))
    .text("last", rows.values().map(|v| v.2.as_str()));
    let chain = match &verified.broken {
        None => figure(
            "Access log",
            format!(
                "{} records, chain intact",
                grouped(verified.lines as f64, 0)
            ),
            None,
        ),
        Some((line, why)) => figure(
            "Access log",
            format!("BROKEN at line {line}"),
            Some(why.clone()),
        ),
    };
    Ok((table, chain))
}

/// Rejected records of the commits' quarantine files, counted by field and the shape of
/// the reason.
fn rejection_table(ctx: &Ctx, commits: &[&Commit]) -> Table {
    let mut reasons: BTreeMap<(String, String), u64> = BTreeMap::new();
    for c in commits {
        if let Some(q) = &c.quarantine {
            let path = ctx.dir.join(q);
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            for line in text.lines() {
                // Sealed when the lake is encrypted; a line whose key is not loaded is
                // counted as such, a torn one not at all.
                let v: serde_json::Value =
                    match crate::lake::crypto::open_line(&path, line.as_bytes()) {
                        Ok(Some(plain)) => serde_json::from_slice(&plain).unwrap_or_default(),
                        Ok(None) => continue,
                        Err(_) => serde_json::json!({"reason": "sealed with a key not loaded"}),
                    };
                let field = v.get("field").and_then(|x| x.as_str()).unwrap_or("record");
                let reason = v
                    .get("reason")
                    .and_then(|x| x.as_str())
                    .unwrap_or("unreadable");
                *reasons
                    .entry((field.to_string(), reason_shape(reason)))
                    .or_default() += 1;
            }
        }
    }
    let rrows: Vec<_> = reasons.into_iter().collect();
    Table::new("rejections", "Rejected records by field and reason")
        .text("field", rrows.iter().map(|r| r.0.0.as_str()))
        .text("reason", rrows.iter().map(|r| r.0.1.as_str()))
        .int("records", rrows.iter().map(|r| r.1 as i64))
}

/// Reasons quote values (`"-1" is negative`, `at line 3 column 7`): keep their shape, not
/// the value, so that one kind of fault is one row: a quoted value becomes `<value>`, a
/// number `N`, while the digits of a name stay (`RFC 3339`, `ISO 4217`).
fn reason_shape(reason: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut in_quote: Option<char> = None;
    let mut prev = "";
    for w in reason.split_whitespace() {
        if let Some(q) = in_quote {
            if w.trim_end_matches(|c: char| c.is_ascii_punctuation() && c != q)
                .ends_with(q)
            {
                in_quote = None;
            }
            continue;
        }
        let first = w.chars().next().unwrap_or(' ');
        let core = w.trim_end_matches([',', '.', ';', ':', ')']);
        let tail = &w[core.len()..];
        let shaped = if first == '"' || first == '`' || first == '\'' {
            let closed = core.len() > 1 && core.ends_with(first);
            if !closed {
                in_quote = Some(first);
            }
            format!("<value>{tail}")
        } else if is_number(core.trim_start_matches('(')) && !matches!(prev, "RFC" | "ISO") {
            format!("N{tail}")
        } else {
            w.to_string()
        };
        out.push(shaped);
        prev = w.trim_start_matches('(');
    }
    out.join(" ")
}

/// A number as reasons quote them (`-1`, `3.5`, `1e9`): names with digits (`UTF-8`,
/// `base64`, `i64`) are not.
fn is_number(w: &str) -> bool {
    let w = w.trim_start_matches(['-', '+']);
    w.starts_with(|c: char| c.is_ascii_digit()) && w.parse::<f64>().is_ok()
}

fn figures(commits: &[&Commit], audit: &[AuditEntry]) -> Vec<Figure> {
    let mut sum = Counts::default();
    for c in commits {
        sum.add(&c.counts);
    }
    let deleted: u64 = audit
        .iter()
        .filter(|a| a.action != "acknowledge")
        .map(|a| a.rows)
        .sum();
    vec![
        figure("Commits", commits.len().to_string(), None),
        figure(
            "Records read",
            grouped(sum.read as f64, 0),
            Some(format!(
                "{} accepted + {} rejected + {} duplicates{}",
                grouped(sum.accepted as f64, 0),
                grouped(sum.rejected as f64, 0),
                grouped(sum.duplicates as f64, 0),
                if sum.read == sum.accepted + sum.rejected + sum.duplicates {
                    " (balanced)"
                } else {
                    " (NOT balanced)"
                }
            )),
        ),
        figure("Audit entries", audit.len().to_string(), None),
        figure(
            "Rows removed by retention and deletion",
            grouped(deleted as f64, 0),
            None,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::reason_shape;

    #[test]
    fn reason_shapes_keep_names_and_drop_values() {
        let cases = [
            (
                "\"2026-13-01\" is neither RFC 3339 nor epoch milliseconds",
                "<value> is neither RFC 3339 nor epoch milliseconds",
            ),
            (
                "expected value at line 1 column 5",
                "expected value at line N column N",
            ),
            ("-1 is negative", "N is negative"),
            (
                "\"a b c\" is not a number, got 3.",
                "<value> is not a number, got N.",
            ),
            (
                "currency `eur` is not ISO 4217",
                "currency <value> is not ISO 4217",
            ),
            (
                "not UTF-8 at byte 12 (RFC 3339)",
                "not UTF-8 at byte N (RFC 3339)",
            ),
            ("value 1e9 is not an i64", "value N is not an i64"),
        ];
        for (reason, want) in cases {
            assert_eq!(reason_shape(reason), want, "{reason}");
        }
    }
}
