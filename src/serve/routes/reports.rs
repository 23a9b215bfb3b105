//! `POST /reports/generate` and `GET /reports`: reports built on request, for one tenant.
//!
//! A report is built as `meterlake report` builds it (`report::build`, restricted to the
//! scoped tenant, so a tenant key never sees another tenant's figures) and written under
//! `LAKE/_api/reports/TENANT/KIND.EXT` (CSV and Parquet: one more file per further table),
//! each file through a temporary name and a rename, a new report replacing the old; the
//! 201 lists the files written. `GET /reports` lists that folder (file, bytes, modified),
//! skipping files still being written. With an encryption key, the Parquet files are
//! encrypted and the others sealed whole ([`crate::lake::crypto::seal_file`]).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::{blocking, heavy, json_body, ok_json};
use crate::serve::App;
use crate::serve::error::ApiResult;
use crate::serve::scope::{Caller, Scope, WithBody};

#[derive(Deserialize)]
struct ReportBody {
    kind: crate::report::ReportKind,
    format: crate::report::Format,
    from: Option<String>,
    to: Option<String>,
    tenant: Option<String>,
}

/// Where the API keeps a tenant's generated reports.
fn reports_dir(app: &App, tenant: &str) -> std::path::PathBuf {
    app.opts
        .lake
        .join(crate::report::API_REPORTS_DIR)
        .join(tenant)
}

pub(super) async fn generate_report(
    State(app): State<Arc<App>>,
    WithBody(caller, body): WithBody<Caller>,
) -> ApiResult {
    let b: ReportBody = json_body(&body, "body")?;
    let t = caller.scope(b.tenant.as_deref())?;
    caller
        .read(&app, &t, "POST /api/v1/usage/reports/generate")
        .await?;
    let a = app.clone();
    heavy(&a, &t.clone(), move || {
        let opts = crate::report::ReportOptions {
            kind: b.kind,
            tenant: Some(t.clone()),
            from: b.from.as_deref().map(|s| crate::time::parse_instant("from", s)).transpose()?,
            to: b.to.as_deref().map(|s| crate::time::parse_instant("to", s)).transpose()?,
            meters: None,
            top: 10,
            at: None,
        };
        let r = crate::report::build(&app.opts.lake, Some(&app.opts.billing), &opts)?;
        let out = reports_dir(&app, &t).join(format!("{}.{}", b.kind.name(), b.format.extension()));
        let files = crate::report::write(&r, b.format, &out)?;
        // In an encrypted lake: Parquet files are encrypted as written; the others sealed.
        for f in files.iter().filter(|f| f.extension().is_none_or(|x| x != "parquet")) {
            crate::lake::crypto::seal_file(f)?;
        }
        let names: Vec<String> = files
            .iter()
            .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().to_string()))
            .collect();
        ok_json(StatusCode::CREATED, json!({ "tenant_id": t, "kind": b.kind, "format": b.format, "files": names, "insights": r.insights.len() }))
    })
    .await
}

pub(super) async fn list_reports(State(app): State<Arc<App>>, Scope(t): Scope) -> ApiResult {
    blocking(move || {
        let dir = reports_dir(&app, &t);
        let mut files = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let meta = e.metadata().ok();
                let name = e.file_name().to_string_lossy().to_string();
                if name.ends_with(crate::stage::tables::TEMP_SUFFIX) || name.starts_with('.') {
                    continue;
                }
                files.push(json!({
                    "file": name,
                    "bytes": meta.as_ref().map(|m| m.len()),
                    "modified": meta.and_then(|m| m.modified().ok()).map(|m| chrono::DateTime::<chrono::Utc>::from(m).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                }));
            }
        }
        files.sort_by(|a, b| a["file"].as_str().cmp(&b["file"].as_str()));
        ok_json(StatusCode::OK, json!({ "tenant_id": t, "reports": files }))
    })
    .await
}
