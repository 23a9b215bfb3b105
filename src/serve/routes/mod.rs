//! The router: every route of `meterlake serve`, the layers around them, and the open
//! operations endpoints; the handlers live in one file per resource.
//!
//! | file | endpoints (under `/api/v1/usage`) |
//! |---|---|
//! | `track.rs` | `POST /track` |
//! | `quota.rs` | `GET /quotas`, `GET /check-quota/{meter}` |
//! | `usage.rs` | `GET /summary`, `/events`, `/metrics`, `/trends/{meter}` |
//! | `analytics.rs` | `POST /forecast`, `GET /anomalies` |
//! | `alerts.rs` | `GET /alerts`, `PATCH /alerts/{id}/acknowledge` |
//! | `reports.rs` | `POST /reports/generate`, `GET /reports` |
//! | `admin.rs` | `GET /admin/metrics`, `POST /admin/flush`, `POST /admin/quotas/reset`; `GET /prometheus` (at the root) |
//! | `crate::serve::dashboard` | the browser dashboard, at the root: `/`, `/usage`, `/forecasts`, `/anomalies`, `/billing`, `POST /login`, `/logout`, `/anomalies/alerts/{id}/acknowledge`, `GET /live`, `/assets/live.js` |
//! | `openmeter.rs` | OpenMeter's API, at the root: `POST /api/v1/events`, `GET /api/v1/meters`, `/api/v1/meters/{id}`, `/api/v1/meters/{id}/query` (errors as problem+json) |
//!
//! Here, at the root: `GET /healthz` (the process answers), `GET /readyz` (200 `ready` once
//! the log is recovered and the counters measured, 503 `recovering` before), and
//! `GET /api/v1/openapi.json` (`openapi.json`, compiled in). Every request passes
//! [`latency`] (a declared `Content-Length` over `--body-limit-mib` is refused with 413 before
//! the body is read; the time taken feeds the latency histogram), the body limit, and a
//! panic catcher that answers 500 `{"error": "internal error"}` instead of dropping the
//! connection.
//!
//! Handlers do the lake's work (Parquet reads, fsync) in [`blocking`], off the async
//! threads; the answer to `/check-quota` when the counters are current never leaves them.

mod admin;
mod alerts;
mod analytics;
mod openmeter;
mod quota;
mod reports;
mod track;
mod usage;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use polars::prelude::*;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::App;
use super::error::{ApiError, ApiResult};

/// Every route.
pub fn router(app: Arc<App>) -> Router {
    let api = Router::new()
        .route("/track", post(track::track))
        .route("/summary", get(usage::summary))
        .route("/quotas", get(quota::quotas))
        .route("/limits", get(quota::limits))
        .route("/analytics", get(usage::analytics))
        .route("/check-quota/{meter}", get(quota::check_quota))
        .route("/entitlements/{feature}", get(quota::entitlement))
        .route("/events", get(usage::events))
        .route("/metrics", get(usage::metrics))
        .route("/trends/{meter}", get(usage::trends))
        .route("/sessions", get(usage::sessions))
        .route("/forecast", post(analytics::forecast))
        .route("/anomalies", get(analytics::anomalies))
        .route("/anomalies/detect", post(analytics::detect))
        .route("/alerts", get(alerts::alerts))
        .route("/alerts/{id}/acknowledge", patch(alerts::acknowledge))
        .route("/reports/generate", post(reports::generate_report))
        .route("/reports", get(reports::list_reports))
        .route("/admin/metrics", get(admin::admin_metrics))
        .route("/admin/quotas/reset", post(admin::quotas_reset))
        .route("/admin/flush", post(admin::admin_flush))
        .route("/admin/audit", get(admin::admin_audit));
    Router::new()
        .nest("/api/v1/usage", api)
        .route("/api/v1/events", post(openmeter::ingest))
        .route("/api/v1/meters", get(openmeter::list_meters))
        .route("/api/v1/meters/{id}", get(openmeter::get_meter))
        .route(
            "/api/v1/meters/{id}/query",
            get(openmeter::query_get).post(openmeter::query_post),
        )
        .route("/api/v1/openapi.json", get(openapi))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/prometheus", get(admin::prometheus))
        .merge(crate::serve::dashboard::routes())
        .layer(middleware::from_fn_with_state(app.clone(), latency))
        .layer(middleware::from_fn(openmeter::problem_json))
        .layer(DefaultBodyLimit::max(app.opts.body_limit))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, None, "internal error")
                    .into_response()
            },
        ))
        .with_state(app)
}

/// Refuses a declared body over the limit, and times every request.
async fn latency(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let t = Instant::now();
    // A declared length over the limit is refused before the body is read (bodies without
    // a length are cut by the body limit as they stream in).
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let r = match declared {
        Some(n) if n > app.opts.body_limit as u64 => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Some("body"),
            format!("{n} bytes; the limit is {} bytes", app.opts.body_limit),
        )
        .into_response(),
        _ => next.run(req).await,
    };
    app.metrics.observe(t.elapsed().as_secs_f64());
    r
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "recovering").into_response()
    }
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../openapi.json"),
    )
        .into_response()
}

fn ok_json(status: StatusCode, v: Value) -> ApiResult {
    Ok((status, axum::Json(v)).into_response())
}

fn now() -> i64 {
    crate::time::now()
}

/// Runs blocking work (the lake, fsync) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<T, ApiError> + Send + 'static,
) -> std::result::Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            format!("worker: {e}"),
        )
    })?
}

/// Runs a heavy request (a lake scan, a report, a forecast) for `tenant` on a blocking
/// thread, within the server's heavy-work limit: at most one at a time per tenant (429
/// with `Retry-After` when that tenant already has one running) and at most
/// `--heavy-concurrency` in all (503 with `Retry-After`). `/track` and `/check-quota` never
/// take a slot, so they do not wait behind heavy work.
async fn heavy<T: Send + 'static>(
    app: &Arc<App>,
    tenant: &str,
    f: impl FnOnce() -> std::result::Result<T, ApiError> + Send + 'static,
) -> std::result::Result<T, ApiError> {
    let _slot = app.heavy.enter(tenant)?;
    app.heavy
        .run(move || {
            crate::serve::heavy::lower_polars_threads();
            crate::fault::pause("serve.heavy")
                .map_err(|e| ApiError::from(crate::Error::io("serve.heavy", e)))?;
            f()
        })
        .await
}

/// A JSON request body; a body that does not parse is a 400 about `field`.
fn json_body<T: DeserializeOwned>(body: &[u8], field: &str) -> std::result::Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad(field, e.to_string()))
}

/// The query of the reads over a time range (each uses the parameters it needs). An
/// unknown parameter is refused (a typo such as `?user=` would otherwise return every
/// event, unfiltered).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeQ {
    // Read by the `Scope` extractor; here so that the struct describes the whole query.
    #[allow(dead_code)]
    tenant: Option<String>,
    from: Option<String>,
    to: Option<String>,
    meter: Option<String>,
    user_id: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
    granularity: Option<String>,
    days: Option<i64>,
    /// Sessions: minutes of inactivity that end one.
    gap_minutes: Option<f64>,
}

/// Rows of a frame as JSON objects (datetimes as RFC 3339).
fn rows_json(df: &DataFrame) -> Vec<Value> {
    let cols = df.columns();
    (0..df.height())
        .map(|i| {
            let mut o = serde_json::Map::new();
            for c in cols {
                let v = match c.get(i) {
                    Ok(AnyValue::Null) | Err(_) => Value::Null,
                    Ok(AnyValue::String(s)) => s.into(),
                    Ok(AnyValue::StringOwned(s)) => s.to_string().into(),
                    Ok(AnyValue::Float64(x)) => x.into(),
                    Ok(AnyValue::Int64(x)) => x.into(),
                    Ok(AnyValue::UInt32(x)) => x.into(),
                    Ok(AnyValue::UInt64(x)) => x.into(),
                    Ok(AnyValue::Boolean(b)) => b.into(),
                    Ok(AnyValue::Datetime(t, _, _)) | Ok(AnyValue::DatetimeOwned(t, _, _)) => {
                        crate::time::rfc3339(t).into()
                    }
                    Ok(v) => v.to_string().into(),
                };
                o.insert(c.name().to_string(), v);
            }
            Value::Object(o)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    /// A path with its parameters' names left out: `/a/{}/b`.
    fn shape(path: &str) -> String {
        let mut out = String::new();
        let mut inside = false;
        for c in path.chars() {
            match c {
                '{' => {
                    inside = true;
                    out.push_str("{}");
                }
                '}' => inside = false,
                c if !inside => out.push(c),
                _ => {}
            }
        }
        out
    }

    /// Every `/api/v1` route of [`super::router`] is in the OpenAPI document (read from
    /// this file's source, so a new route without its documentation fails here).
    #[test]
    fn every_api_route_is_documented() {
        let src = include_str!("mod.rs");
        let doc: serde_json::Value = serde_json::from_str(include_str!("../openapi.json")).unwrap();
        let documented: std::collections::HashSet<String> = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| shape(k))
            .collect();
        let start = src.find("let api = Router::new()").unwrap();
        let end = start + src[start..].find(';').unwrap();
        let mut missing = Vec::new();
        let mut seen = 0;
        for (i, _) in src.match_indices(".route(") {
            let rest = src[i + 7..].trim_start();
            let Some(rest) = rest.strip_prefix('"') else {
                continue;
            };
            let path = &rest[..rest.find('"').unwrap()];
            let full = if (start..end).contains(&i) {
                format!("/api/v1/usage{path}")
            } else if path.starts_with("/api/v1") && !path.ends_with("openapi.json") {
                path.to_string()
            } else {
                continue;
            };
            seen += 1;
            if !documented.contains(&shape(&full)) {
                missing.push(full);
            }
        }
        assert!(seen > 20, "routes found: {seen}");
        assert!(missing.is_empty(), "not in openapi.json: {missing:?}");
    }
}
