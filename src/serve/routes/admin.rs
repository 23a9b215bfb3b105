//! The operator's endpoints: `GET /admin/metrics`, `POST /admin/flush`,
//! `POST /admin/quotas/reset` (admin key), and the open `GET /prometheus`.
//!
//! - `/admin/metrics`: the server's counters as JSON (events accepted, rejected and
//!   duplicate, events in the log, flushes, request latency histogram).
//! - `/admin/flush`: commits the log to the lake now; answers how many events it committed.
//! - `/admin/quotas/reset`: re-measures one tenant's counters from the lake and the log
//!   (404 `tenant` without a plan).
//! - `/prometheus`: the same counters in the Prometheus text format (0.0.4).
//!
//! The two actions that change state (flush, reset) each append an entry to the API's
//! audit log (`LAKE/_api/audit.ndjson`, actor `api-admin:KEY`) before they answer; a failed
//! audit write fails the request.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::quota::planned;
use super::{blocking, json_body, now, ok_json};
use crate::serve::error::{ApiError, ApiResult};
use crate::serve::scope::{Admin, WithBody};
use crate::serve::{App, LATENCY_BUCKETS};

/// Records an admin action of the API in the audit log.
fn audit(
    app: &App,
    who: &str,
    action: &str,
    target: String,
    detail: String,
) -> std::result::Result<(), ApiError> {
    crate::lake::audit::append(
        &app.opts.lake,
        &crate::lake::audit::AuditEntry {
            at: crate::time::rfc3339(now()),
            actor: format!("api-admin:{who}"),
            action: action.into(),
            target,
            rows: 0,
            commit: None,
            detail,
        },
    )?;
    Ok(())
}

fn metrics_json(app: &App) -> Value {
    let m = &app.metrics;
    let lag = m.lag.load(Ordering::Relaxed);
    let buckets: BTreeMap<String, u64> = LATENCY_BUCKETS
        .iter()
        .zip(&m.latency)
        .map(|(b, c)| (format!("{b}"), c.load(Ordering::Relaxed)))
        .collect();
    json!({
        "events_accepted": m.accepted.load(Ordering::Relaxed),
        "events_rejected": m.rejected.load(Ordering::Relaxed),
        "events_duplicate": m.duplicates.load(Ordering::Relaxed),
        "log_pending_events": lag,
        "dedup_keys": crate::serve::lock(&app.ingress).keys_len(),
        "flushes": m.flushes.load(Ordering::Relaxed),
        "compactions": m.compactions.load(Ordering::Relaxed),
        "flushed_events": m.flushed_events.load(Ordering::Relaxed),
        "last_flush_seconds": m.last_flush_micros.load(Ordering::Relaxed) as f64 / 1e6,
        "requests": m.requests.load(Ordering::Relaxed),
        "request_latency_buckets": buckets,
    })
}

pub(super) async fn admin_metrics(State(app): State<Arc<App>>, _: Admin) -> ApiResult {
    ok_json(StatusCode::OK, metrics_json(&app))
}

/// The access log (who read which tenant's data, newest last), with whether its hash
/// chain is intact; `?tenant=` keeps one tenant's reads, `?limit=` the last N (default
/// 1,000).
pub(super) async fn admin_audit(
    State(app): State<Arc<App>>,
    axum::extract::Query(q): axum::extract::Query<AuditQ>,
    _: Admin,
) -> ApiResult {
    let limit = q.limit.unwrap_or(1000).min(100_000);
    let v = blocking(move || {
        let lake = &app.opts.lake;
        let verified = crate::lake::access::verify(lake)?;
        let mut all = crate::lake::access::read(lake)?;
        if let Some(t) = &q.tenant {
            all.retain(|l| l.access.tenant == *t);
        }
        let from = all.len().saturating_sub(limit);
        Ok(json!({
            "records": verified.lines,
            "chain_intact": verified.broken.is_none(),
            "broken": verified.broken.map(|(line, why)| json!({"line": line, "reason": why})),
            "access": all.split_off(from),
        }))
    })
    .await?;
    ok_json(StatusCode::OK, v)
}

/// Parameters of `/admin/audit`.
#[derive(Deserialize)]
pub(super) struct AuditQ {
    tenant: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn admin_flush(State(app): State<Arc<App>>, Admin(who): Admin) -> ApiResult {
    let n = blocking(move || {
        let n = app.flush()?;
        app.refresh_keys()?;
        audit(
            &app,
            &who,
            "flush",
            "log".into(),
            format!("{n} events committed"),
        )?;
        Ok(n)
    })
    .await?;
    ok_json(StatusCode::OK, json!({ "flushed": n }))
}

#[derive(Deserialize)]
struct ResetBody {
    tenant: String,
}

pub(super) async fn quotas_reset(
    State(app): State<Arc<App>>,
    WithBody(Admin(who), body): WithBody<Admin>,
) -> ApiResult {
    let b: ResetBody = json_body(&body, "tenant")?;
    blocking(move || {
        let tenant = planned(&app, &b.tenant)?;
        app.measure(&[tenant], now())?;
        audit(
            &app,
            &who,
            "quotas_reset",
            format!("tenant={}", b.tenant),
            "counters re-measured from the lake and the log".into(),
        )?;
        ok_json(
            StatusCode::OK,
            json!({ "tenant_id": b.tenant, "reset": true }),
        )
    })
    .await
}

pub(super) async fn prometheus(State(app): State<Arc<App>>) -> Response {
    let m = &app.metrics;
    let mut o = String::new();
    let mut counter = |name: &str, help: &str, v: f64| {
        o.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
        ));
    };
    counter(
        "meterlake_events_accepted_total",
        "Events accepted by /track.",
        m.accepted.load(Ordering::Relaxed) as f64,
    );
    counter(
        "meterlake_events_rejected_total",
        "Records rejected by /track.",
        m.rejected.load(Ordering::Relaxed) as f64,
    );
    counter(
        "meterlake_events_duplicate_total",
        "Duplicates dropped by /track.",
        m.duplicates.load(Ordering::Relaxed) as f64,
    );
    counter(
        "meterlake_flushes_total",
        "Log segments committed to the lake.",
        m.flushes.load(Ordering::Relaxed) as f64,
    );
    counter(
        "meterlake_flush_seconds_total",
        "Time spent committing the log.",
        m.flush_micros_total.load(Ordering::Relaxed) as f64 / 1e6,
    );
    // Atomics only: a scrape never waits on a lock the request path holds.
    let pending = m.lag.load(Ordering::Relaxed);
    o.push_str(&format!(
        "# HELP meterlake_heavy_requests Heavy requests running now.\n# TYPE meterlake_heavy_requests gauge\nmeterlake_heavy_requests {}\n",
        app.heavy.running()
    ));
    o.push_str(&format!(
        "# HELP meterlake_log_lag_events Events acknowledged but not yet in the lake.\n# TYPE meterlake_log_lag_events gauge\nmeterlake_log_lag_events {pending}\n"
    ));
    o.push_str(&format!(
        "# HELP meterlake_last_flush_seconds Duration of the last flush.\n# TYPE meterlake_last_flush_seconds gauge\nmeterlake_last_flush_seconds {}\n",
        m.last_flush_micros.load(Ordering::Relaxed) as f64 / 1e6
    ));
    // The analytics refresh (serve's own forecasts, anomalies, quotas and alerts).
    let at = m.last_refresh_at.load(Ordering::Relaxed);
    let since = if at == 0 {
        f64::NAN
    } else {
        (crate::time::now() as f64 - at as f64).max(0.0) / 1e6
    };
    for (name, kind, help, v) in [
        (
            "meterlake_analytics_refreshes_total",
            "counter",
            "Analytics refreshes that changed the derived tables.",
            m.refreshes.load(Ordering::Relaxed) as f64,
        ),
        (
            "meterlake_analytics_refresh_failures_total",
            "counter",
            "Analytics refreshes that failed (retried next interval).",
            m.refresh_failures.load(Ordering::Relaxed) as f64,
        ),
        (
            "meterlake_analytics_last_refresh_timestamp_seconds",
            "gauge",
            "When the last refresh ended (unix seconds; NaN: none yet).",
            if at == 0 { f64::NAN } else { at as f64 / 1e6 },
        ),
        (
            "meterlake_analytics_last_refresh_duration_seconds",
            "gauge",
            "How long the last refresh that changed the tables took.",
            m.last_refresh_micros.load(Ordering::Relaxed) as f64 / 1e6,
        ),
        (
            "meterlake_analytics_lag_seconds",
            "gauge",
            "Seconds since the last refresh ended.",
            since,
        ),
        (
            "meterlake_analytics_lake_commit",
            "gauge",
            "The lake commit the derived tables reflect.",
            m.refresh_seq.load(Ordering::Relaxed) as f64,
        ),
        (
            "meterlake_analytics_last_refresh_batches",
            "gauge",
            "Batches of tenants the last refresh took its work in (analytics.max_memory).",
            m.refresh_batches.load(Ordering::Relaxed) as f64,
        ),
    ] {
        o.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
        ));
    }
    o.push_str("# HELP meterlake_request_duration_seconds Request latency.\n# TYPE meterlake_request_duration_seconds histogram\n");
    let mut cum = 0;
    for (b, c) in LATENCY_BUCKETS.iter().zip(&m.latency) {
        cum += c.load(Ordering::Relaxed);
        o.push_str(&format!(
            "meterlake_request_duration_seconds_bucket{{le=\"{b}\"}} {cum}\n"
        ));
    }
    let n = m.requests.load(Ordering::Relaxed);
    o.push_str(&format!(
        "meterlake_request_duration_seconds_bucket{{le=\"+Inf\"}} {n}\nmeterlake_request_duration_seconds_sum {}\nmeterlake_request_duration_seconds_count {n}\n",
        m.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], o).into_response()
}
