//! `POST /forecast` and `GET /anomalies`: a tenant's forecast, computed on request, and its
//! anomaly incidents, as the last batch detection wrote them.
//!
//! - `/forecast` fits `forecast::forecast_one` (as the batch forecast stage does for each
//!   series) to the tenant's whole daily history of `meter` (the day rollup, brought up
//!   to date first) and returns `horizon` days (1 to 366, default 14) with the `level`
//!   percent interval (default 95). Nothing is written. 404 `meter` when the tenant has
//!   no usage of it.
//! - `/anomalies` filters the incidents the last batch detection wrote (hourly, else
//!   daily) to the tenant; an empty list when there are none yet.
//! - `POST /anomalies/detect` runs detection now (`stage::anomalies::detect_lake` over the
//!   whole lake, as the batch job does, so the stored tables stay whole) and answers with
//!   the incidents of the caller's tenant (an admin: the body's `tenant`, or all) that
//!   were not there before. It takes a heavy slot, as reports and forecasts do.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use polars::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

use super::usage::rollup_rows;
use super::{RangeQ, blocking, heavy, json_body, ok_json, rows_json};
use crate::rollup::Granularity;
use crate::serve::App;
use crate::serve::error::{ApiError, ApiResult};
use crate::serve::scope::{Caller, Params, Scope, WithBody};

#[derive(Deserialize)]
struct ForecastBody {
    meter: String,
    horizon: Option<usize>,
    model: Option<String>,
    level: Option<f64>,
    tenant: Option<String>,
}

pub(super) async fn forecast(
    State(app): State<Arc<App>>,
    WithBody(caller, body): WithBody<Caller>,
) -> ApiResult {
    let b: ForecastBody = json_body(&body, "body")?;
    let t = caller.scope(b.tenant.as_deref())?;
    caller.read(&app, &t, "POST /api/v1/usage/forecast").await?;
    let a = app.clone();
    heavy(&a, &t.clone(), move || {
        let horizon = b.horizon.unwrap_or(14);
        if !(1..=366).contains(&horizon) {
            return Err(ApiError::bad("horizon", "between 1 and 366"));
        }
        let level = b.level.unwrap_or(95.0);
        if !(level > 0.0 && level < 100.0) {
            return Err(ApiError::bad("level", "a percent in (0, 100)"));
        }
        let kind = b.model.as_deref().unwrap_or("auto").parse::<crate::forecast::ModelKind>()
            .map_err(|_| {
                let all = crate::forecast::ModelKind::ALL.map(crate::forecast::ModelKind::name);
                ApiError::bad("model", format!("not a model ({})", all.join(", ")))
            })?;
        let df = rollup_rows(&app, &t, Granularity::Day, Some(&b.meter), i64::MIN / 4, i64::MAX / 4)?;
        let ts = df.column("window_start")?.cast(&DataType::Int64)?;
        let ts: Vec<i64> = ts.i64()?.into_no_null_iter().collect();
        let y: Vec<f64> = df.column("value")?.f64()?.into_no_null_iter().collect();
        if y.is_empty() {
            return Err(ApiError::new(StatusCode::NOT_FOUND, Some("meter"), format!("no {} usage for {t}", b.meter)));
        }
        // The lake pipeline's forecast (`forecast --lake`, `run`): anomalies cleaned, never
        // below zero for usage that never was.
        let spec = crate::stage::forecast::ForecastSpec {
            horizon,
            level: level / 100.0,
            model: kind,
            threads: Some(1),
            ..app.opts.forecast.clone()
        };
        let days = y.len();
        let series = crate::series::Series { id: t.clone(), ts, values: y };
        let sr = crate::stage::forecast::forecast_usage(vec![series], &spec)?
            .pop()
            .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, None, "no forecast"))?;
        let r = &sr.result;
        let points: Vec<Value> = (0..r.forecast.mean.len())
            .map(|i| json!({
                "date": crate::time::date_str(sr.ts[i]),
                "yhat": r.forecast.mean[i], "yhat_lower": r.forecast.lower[i], "yhat_upper": r.forecast.upper[i],
            }))
            .collect();
        ok_json(StatusCode::OK, json!({
            "tenant_id": t, "meter": b.meter, "model": r.model.map(|m| m.to_string()),
            "status": r.status, "history_days": days, "forecast": points,
        }))
    })
    .await
}

/// The range query is parsed though unused: a malformed one (`?limit=x`) has always been
/// refused here, before the key is checked.
pub(super) async fn anomalies(
    State(app): State<Arc<App>>,
    Params(_): Params<RangeQ>,
    Scope(t): Scope,
) -> ApiResult {
    blocking(move || {
        let Some(path) = crate::stage::tables::incidents::latest_file(&app.opts.lake) else {
            return ok_json(StatusCode::OK, json!({ "tenant_id": t, "incidents": [] }));
        };
        let df = crate::stage::tables::read_frame(&path)?
            .lazy()
            .filter(col("tenant_id").eq(lit(t.clone())))
            .collect()?;
        ok_json(
            StatusCode::OK,
            json!({ "tenant_id": t, "incidents": rows_json(&df) }),
        )
    })
    .await
}

#[derive(Deserialize, Default)]
struct DetectBody {
    tenant: Option<String>,
    granularity: Option<String>,
}

/// An incident's identity across detection runs.
fn incident_key(r: &crate::stage::tables::incidents::IncidentRecord) -> (String, String, i64) {
    (r.tenant_id.clone(), r.meter.clone(), r.window_start)
}

pub(super) async fn detect(
    State(app): State<Arc<App>>,
    WithBody(caller, body): WithBody<Caller>,
) -> ApiResult {
    let b: DetectBody = if body.iter().all(u8::is_ascii_whitespace) {
        DetectBody::default()
    } else {
        json_body(&body, "body")?
    };
    // An admin without a tenant asks for all of them.
    let scope = match (&caller.0, b.tenant.as_deref()) {
        (crate::serve::auth::Principal::Admin(_), None) => None,
        (_, asked) => Some(caller.scope(asked)?),
    };
    caller
        .read(
            &app,
            scope.as_deref().unwrap_or("*"),
            "POST /api/v1/usage/anomalies/detect",
        )
        .await?;
    let g = match b
        .granularity
        .as_deref()
        .unwrap_or(&app.opts.anomaly_granularity)
    {
        "hour" => Granularity::Hour,
        "day" => Granularity::Day,
        other => {
            return Err(ApiError::bad(
                "granularity",
                format!("`{other}` is not hour or day"),
            ));
        }
    };
    let a = app.clone();
    let slot = scope.clone().unwrap_or_else(|| "*".into());
    heavy(&a, &slot, move || {
        use crate::stage::tables::incidents;
        let path = incidents::dir(&app.opts.lake, g.name()).join(incidents::FILE);
        let before: std::collections::HashSet<(String, String, i64)> = if path.exists() {
            incidents::read(&path)?.iter().map(incident_key).collect()
        } else {
            Default::default()
        };
        let spec = crate::stage::anomalies::DetectSpec {
            config: crate::detect::DetectConfig {
                threshold: app.opts.anomaly_threshold,
                ..crate::detect::DetectConfig::default()
            },
            since: None,
            threads: None,
        };
        let summary =
            crate::stage::anomalies::detect_lake(&app.opts.lake, &app.opts.meters, g, &spec)?;
        // The new incidents as `GET /anomalies` shows incidents.
        let df = crate::stage::tables::read_frame(&path)?;
        let mask: BooleanChunked = incidents::read(&path)?
            .iter()
            .map(|r| {
                scope.as_ref().is_none_or(|t| &r.tenant_id == t)
                    && !before.contains(&incident_key(r))
            })
            .collect();
        let new = rows_json(&df.filter(&mask)?);
        ok_json(
            StatusCode::OK,
            json!({
                "tenant_id": scope,
                "granularity": g.name(),
                "series": summary.series,
                "incidents_total": summary.incidents,
                "new_incidents": new,
            }),
        )
    })
    .await
}
