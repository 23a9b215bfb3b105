//! The endpoints.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use polars::prelude::*;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Principal;
use super::{App, LATENCY_BUCKETS, lock};
use crate::billing::quota::Status;
use crate::error::Error;
use crate::ingest::record::{Limits, parse_json};
use crate::rollup::{Granularity, RollupOptions, RollupSpec, rollup, scan_rollup};

const DAY: i64 = 86_400_000_000;

/// An error answer: `{"error": ..., "field": ...}`.
pub struct ApiError {
    status: StatusCode,
    field: Option<String>,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, field: Option<&str>, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            field: field.map(str::to_string),
            message: message.into(),
            retry_after: None,
        }
    }

    fn bad(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, Some(field), message)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        match &e {
            Error::InvalidParameter { name, .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, Some(name), e.to_string())
            }
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, None, e.to_string()),
        }
    }
}

impl From<PolarsError> for ApiError {
    fn from(e: PolarsError) -> ApiError {
        ApiError::from(Error::from(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let Some(f) = self.field {
            body["field"] = f.into();
        }
        let mut r = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r
    }
}

type ApiResult = std::result::Result<Response, ApiError>;

fn ok_json(status: StatusCode, v: Value) -> ApiResult {
    Ok((status, axum::Json(v)).into_response())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp_micros()
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

fn principal(app: &App, h: &HeaderMap) -> std::result::Result<Principal, ApiError> {
    let token = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| h.get("x-api-key").and_then(|v| v.to_str().ok()))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                Some("authorization"),
                "an API key is required (Authorization: Bearer KEY)",
            )
        })?;
    app.keys.principal(token.trim()).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            Some("authorization"),
            "unknown API key",
        )
    })
}

/// The tenant a request is about: the key's, or (admin) the `tenant` parameter.
fn tenant_of(p: &Principal, asked: Option<&str>) -> std::result::Result<String, ApiError> {
    match (p, asked) {
        (Principal::Tenant(t), None) => Ok(t.clone()),
        (Principal::Tenant(t), Some(a)) if a == t => Ok(t.clone()),
        (Principal::Tenant(_), Some(_)) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            Some("tenant"),
            "this key belongs to another tenant",
        )),
        (Principal::Admin(_), Some(a)) => Ok(a.to_string()),
        (Principal::Admin(_), None) => Err(ApiError::bad(
            "tenant",
            "required with an admin key (?tenant=ID)",
        )),
    }
}

fn admin(p: &Principal) -> std::result::Result<String, ApiError> {
    match p {
        Principal::Admin(id) => Ok(id.clone()),
        Principal::Tenant(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            Some("authorization"),
            "admin key required",
        )),
    }
}

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

/// Every route.
pub fn router(app: Arc<App>) -> Router {
    let api = Router::new()
        .route("/track", post(track))
        .route("/summary", get(summary))
        .route("/quotas", get(quotas))
        .route("/check-quota/{meter}", get(check_quota))
        .route("/events", get(events))
        .route("/metrics", get(metrics))
        .route("/trends/{meter}", get(trends))
        .route("/forecast", post(forecast))
        .route("/anomalies", get(anomalies))
        .route("/alerts", get(alerts))
        .route("/alerts/{id}/acknowledge", patch(acknowledge))
        .route("/reports/generate", post(generate_report))
        .route("/reports", get(list_reports))
        .route("/admin/metrics", get(admin_metrics))
        .route("/admin/quotas/reset", post(quotas_reset))
        .route("/admin/flush", post(admin_flush));
    Router::new()
        .nest("/api/v1/usage", api)
        .route("/api/v1/openapi.json", get(openapi))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/prometheus", get(prometheus))
        .layer(middleware::from_fn_with_state(app.clone(), latency))
        .layer(DefaultBodyLimit::max(app.opts.body_limit))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, None, "internal error")
                    .into_response()
            },
        ))
        .with_state(app)
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
        include_str!("openapi.json"),
    )
        .into_response()
}

/// Splits a body into raw records: a JSON array, one JSON object, or NDJSON.
fn records(h: &HeaderMap, body: &[u8]) -> std::result::Result<Vec<Vec<u8>>, ApiError> {
    let ctype = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if ctype.starts_with("application/x-ndjson") || ctype.starts_with("application/jsonl") {
        return Ok(body
            .split(|b| *b == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .map(<[u8]>::to_vec)
            .collect());
    }
    match first {
        Some(b'[') => {
            let items: Vec<&serde_json::value::RawValue> = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad("body", format!("not a JSON array of events: {e}")))?;
            Ok(items.iter().map(|r| r.get().as_bytes().to_vec()).collect())
        }
        Some(b'{') => Ok(vec![body.to_vec()]),
        _ => Err(ApiError::bad(
            "body",
            "expected a JSON event, a JSON array of events (or a CloudEvents batch) or NDJSON",
        )),
    }
}

async fn track(State(app): State<Arc<App>>, h: HeaderMap, body: Bytes) -> ApiResult {
    let p = principal(&app, &h)?;
    let _slot = app.track_slots.acquire().await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            format!("shutting down: {e}"),
        )
    })?;
    let a = app.clone();
    blocking(move || track_blocking(&a, &p, &h, &body)).await
}

fn track_blocking(app: &App, p: &Principal, h: &HeaderMap, body: &[u8]) -> ApiResult {
    let raws = records(h, body)?;
    if raws.len() > app.opts.max_batch {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Some("body"),
            format!(
                "{} records; at most {} per request",
                raws.len(),
                app.opts.max_batch
            ),
        ));
    }
    if let Principal::Tenant(t) = p
        && let Err(wait) = lock(&app.limiter).take(t, raws.len() as f64, Instant::now())
    {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            Some("rate"),
            format!("tenant {t} is over its rate of {} events/s", app.opts.rate),
        );
        e.retry_after = Some(if wait.is_finite() {
            wait.ceil().max(1.0) as u64
        } else {
            60
        });
        return Err(e);
    }
    let limits = Limits::relative_to(now());
    let mut good = Vec::with_capacity(raws.len());
    let mut errors = Vec::new();
    for (i, raw) in raws.iter().enumerate() {
        match parse_json(raw, &limits) {
            Ok(a) => good.push((a.event, a.key)),
            Err(r) => errors.push(json!({ "index": i, "field": r.field, "reason": r.reason })),
        }
    }
    // Tenant isolation: a tenant key writes only its own tenant's events.
    if let Principal::Tenant(t) = p
        && let Some((e, _)) = good.iter().find(|(e, _)| &e.tenant_id != t)
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            Some("tenant_id"),
            format!(
                "event for tenant {} sent with a key of tenant {t}",
                e.tenant_id
            ),
        ));
    }
    let at = now();
    let mut tenants: Vec<&str> = good.iter().map(|(e, _)| e.tenant_id.as_str()).collect();
    tenants.sort_unstable();
    tenants.dedup();
    app.ensure_counters(&tenants, at)?;
    if app.opts.enforcement {
        let b = &app.opts.billing;
        let c = lock(&app.counters);
        for t in &tenants {
            let Some(tenant) = b.tenants.iter().find(|x| x.id == *t) else {
                continue;
            };
            for q in c.quotas(b, tenant, at)? {
                if q.status != Status::Blocked {
                    continue;
                }
                let event = &b.catalog.meters[&q.meter].event;
                if good
                    .iter()
                    .any(|(e, _)| e.tenant_id == *t && &e.meter == event)
                {
                    let mut err = ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        Some("meter"),
                        format!(
                            "tenant {t} is at its hard cap on {} ({} of {} {}) until {}",
                            q.meter,
                            q.used,
                            q.included.unwrap_or_default(),
                            q.unit,
                            q.period_end
                        ),
                    );
                    err.retry_after = Some(
                        chrono::DateTime::parse_from_rfc3339(&q.period_end)
                            .map(|d| ((d.timestamp_micros() - at) / 1_000_000).max(1) as u64)
                            .unwrap_or(3600),
                    );
                    return Err(err);
                }
            }
        }
    }
    let offered = good.len();
    let fresh = {
        let mut ing = lock(&app.ingress);
        let fresh = ing.append(good)?;
        // Counters are updated under the log's lock: a measurement (which holds it too)
        // sees an event either in the log or in the counters, never both.
        lock(&app.counters).add(&app.opts.billing, &fresh);
        if ing.pending.len() >= app.opts.flush_events {
            app.flush_wanted.notify_one();
        }
        fresh
    };
    let m = &app.metrics;
    let duplicates = offered - fresh.len();
    m.accepted.fetch_add(fresh.len() as u64, Ordering::Relaxed);
    m.rejected.fetch_add(errors.len() as u64, Ordering::Relaxed);
    m.duplicates.fetch_add(duplicates as u64, Ordering::Relaxed);
    ok_json(
        StatusCode::ACCEPTED,
        json!({
            "accepted": fresh.len(),
            "rejected": errors.len(),
            "duplicates": duplicates,
            "errors": errors,
        }),
    )
}

#[derive(Deserialize)]
struct TenantQ {
    tenant: Option<String>,
}

fn planned<'a>(
    app: &'a App,
    t: &str,
) -> std::result::Result<&'a crate::billing::plans::Tenant, ApiError> {
    app.opts
        .billing
        .tenants
        .iter()
        .find(|x| x.id == t)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                Some("tenant"),
                format!("tenant {t} has no plan"),
            )
        })
}

async fn quotas(State(app): State<Arc<App>>, h: HeaderMap, Query(q): Query<TenantQ>) -> ApiResult {
    let p = principal(&app, &h)?;
    let t = tenant_of(&p, q.tenant.as_deref())?;
    blocking(move || {
        let at = now();
        app.ensure_counters(&[&t], at)?;
        let tenant = planned(&app, &t)?;
        let lines = lock(&app.counters).quotas(&app.opts.billing, tenant, at)?;
        ok_json(
            StatusCode::OK,
            json!({ "tenant_id": t, "plan": tenant.plan_at(at), "quotas": lines }),
        )
    })
    .await
}

#[derive(Deserialize)]
struct CheckQ {
    quantity: Option<String>,
    tenant: Option<String>,
}

async fn check_quota(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path(meter): Path<String>,
    Query(q): Query<CheckQ>,
) -> ApiResult {
    let p = principal(&app, &h)?;
    let t = tenant_of(&p, q.tenant.as_deref())?;
    let quantity: Decimal = match q.quantity.as_deref() {
        None => Decimal::ONE,
        Some(s) => s
            .trim()
            .parse::<Decimal>()
            .ok()
            .filter(|d| !d.is_sign_negative())
            .ok_or_else(|| {
                ApiError::bad("quantity", format!("`{s}` is not a non-negative number"))
            })?,
    };
    if !app.opts.billing.catalog.meters.contains_key(&meter) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            Some("meter"),
            format!(
                "`{meter}` is not a billed meter (meters: {})",
                app.opts
                    .billing
                    .catalog
                    .meters
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let at = now();
    let tenant = planned(&app, &t)?;
    // The hot path: counters already cover the period (no lake, no blocking thread).
    if !lock(&app.counters).covers(&app.opts.billing, &t, at) {
        let (a, t2) = (app.clone(), t.clone());
        blocking(move || Ok(a.ensure_counters(&[&t2], at)?)).await?;
    }
    let answer = lock(&app.counters).check(&app.opts.billing, tenant, &meter, quantity, at)?;
    let status = if answer.allowed() {
        StatusCode::OK
    } else {
        StatusCode::TOO_MANY_REQUESTS
    };
    ok_json(status, serde_json::to_value(&answer).unwrap_or_default())
}

#[derive(Deserialize)]
struct RangeQ {
    tenant: Option<String>,
    from: Option<String>,
    to: Option<String>,
    meter: Option<String>,
    user_id: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
    granularity: Option<String>,
    days: Option<i64>,
}

fn instant(
    name: &'static str,
    s: Option<&str>,
    default: i64,
) -> std::result::Result<i64, ApiError> {
    match s {
        None => Ok(default),
        Some(s) => Ok(crate::rollup::parse_instant(name, s)?),
    }
}

async fn summary(State(app): State<Arc<App>>, h: HeaderMap, Query(q): Query<RangeQ>) -> ApiResult {
    let p = principal(&app, &h)?;
    let t = tenant_of(&p, q.tenant.as_deref())?;
    blocking(move || {
        let to = instant("to", q.to.as_deref(), now())?;
        let from = instant("from", q.from.as_deref(), to - 30 * DAY)?;
        if from >= to {
            return Err(ApiError::bad("from", "must be before to"));
        }
        let lake = crate::lake::Lake::open(&app.opts.lake)?;
        let r = crate::usage::usage(
            &lake,
            &app.opts.meters,
            &crate::usage::UsageQuery {
                tenant: Some(t),
                meter: q.meter,
                from,
                to,
                by: None,
                compare: Some(crate::usage::Compare::Previous),
                top: 0,
            },
        )?;
        ok_json(StatusCode::OK, serde_json::to_value(&r).unwrap_or_default())
    })
    .await
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
                        crate::billing::rfc3339(t).into()
                    }
                    Ok(v) => v.to_string().into(),
                };
                o.insert(c.name().to_string(), v);
            }
            Value::Object(o)
        })
        .collect()
}

async fn events(State(app): State<Arc<App>>, h: HeaderMap, Query(q): Query<RangeQ>) -> ApiResult {
    let p = principal(&app, &h)?;
    let t = tenant_of(&p, q.tenant.as_deref())?;
    blocking(move || {
        let to = instant("to", q.to.as_deref(), now() + DAY)?;
        let from = instant("from", q.from.as_deref(), to - 31 * DAY)?;
        let limit = q.limit.unwrap_or(100);
        if limit == 0 || limit > 1000 {
            return Err(ApiError::bad("limit", "between 1 and 1000"));
        }
        let offset = q.offset.unwrap_or(0);
        let lake = crate::lake::Lake::open(&app.opts.lake)?;
        let Some(mut lf) = crate::usage::events_between(&lake, Some(&t), from, to)? else {
            return ok_json(StatusCode::OK, json!({ "events": [], "next_offset": null }));
        };
        if let Some(m) = q.meter {
            lf = lf.filter(col("meter").eq(lit(m)));
        }
        if let Some(u) = q.user_id {
            lf = lf.filter(col("user_id").eq(lit(u)));
        }
        let df = lf
            .sort(["ts", "id"], SortMultipleOptions::default())
            .slice(offset as i64, (limit + 1) as IdxSize)
            .select([col("id"), col("ts"), col("tenant_id"), col("user_id"), col("meter"), col("value"), col("properties")])
            .collect()?;
        let more = df.height() > limit;
        let rows = rows_json(&df.head(Some(limit)));
        ok_json(
            StatusCode::OK,
            json!({ "events": rows, "next_offset": if more { Some(offset + limit) } else { None } }),
        )
    })
    .await
}

fn granularity(s: Option<&str>) -> std::result::Result<Granularity, ApiError> {
    match s.unwrap_or("day") {
        "hour" => Ok(Granularity::Hour),
        "day" => Ok(Granularity::Day),
        "week" => Ok(Granularity::Week),
        "month" => Ok(Granularity::Month),
        other => Err(ApiError::bad(
            "granularity",
            format!("`{other}` is not hour, day, week or month"),
        )),
    }
}

/// A tenant's rollup rows in `[from, to)`, brought up to date first.
fn rollup_rows(
    app: &App,
    t: &str,
    g: Granularity,
    meter: Option<&str>,
    from: i64,
    to: i64,
) -> std::result::Result<DataFrame, ApiError> {
    let lake = crate::lake::Lake::open(&app.opts.lake)?;
    let spec = RollupSpec::new(g);
    rollup(&lake, &app.opts.meters, &spec, &RollupOptions::default())?;
    let ws = col("window_start").cast(DataType::Int64);
    let mut lf = scan_rollup(&lake, &spec)?.filter(
        col("tenant_id")
            .eq(lit(t.to_string()))
            .and(ws.clone().gt_eq(lit(from)))
            .and(ws.lt(lit(to))),
    );
    if let Some(m) = meter {
        lf = lf.filter(col("meter").eq(lit(m.to_string())));
    }
    Ok(lf
        .select([
            col("meter"),
            col("window_start"),
            col("window_end"),
            col("value"),
            col("event_count"),
        ])
        .sort(["meter", "window_start"], SortMultipleOptions::default())
        .collect()?)
}

async fn metrics(State(app): State<Arc<App>>, h: HeaderMap, Query(q): Query<RangeQ>) -> ApiResult {
    let p = principal(&app, &h)?;
    let t = tenant_of(&p, q.tenant.as_deref())?;
    blocking(move || {
        let g = granularity(q.granularity.as_deref())?;
        let to = instant("to", q.to.as_deref(), now() + DAY)?;
        let from = instant("from", q.from.as_deref(), to - 31 * DAY)?;
        let df = rollup_rows(&app, &t, g, q.meter.as_deref(), from, to)?;
        ok_json(
            StatusCode::OK,
            json!({ "tenant_id": t, "granularity": g.to_string(), "rows": rows_json(&df) }),
        )
    })
    .await
}

async fn trends(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path(meter): Path<String>,
    Query(q): Query<RangeQ>,
) -> ApiResult {
    let p = principal(&app, &h)?;
    let t = tenant_of(&p, q.tenant.as_deref())?;
    blocking(move || {
        let days = q.days.unwrap_or(30);
        if !(1..=366).contains(&days) {
            return Err(ApiError::bad("days", "between 1 and 366"));
        }
        let to = instant("to", q.to.as_deref(), (now() / DAY + 1) * DAY)?;
        let from = to - days * DAY;
        let df = rollup_rows(
            &app,
            &t,
            Granularity::Day,
            Some(&meter),
            from - days * DAY,
            to,
        )?;
        let ts = df.column("window_start")?.cast(&DataType::Int64)?;
        let ts = ts.i64()?;
        let v = df.column("value")?.f64()?;
        let (mut cur, mut prev, mut daily) = (0.0, 0.0, Vec::new());
        for i in 0..df.height() {
            let (t0, x) = (ts.get(i).unwrap_or(0), v.get(i).unwrap_or(0.0));
            if t0 >= from {
                cur += x;
                daily.push(
                    json!({ "date": crate::billing::rfc3339(t0)[..10].to_string(), "value": x }),
                );
            } else {
                prev += x;
            }
        }
        let change = (prev > 0.0).then(|| (cur / prev - 1.0) * 100.0);
        let direction = match change {
            Some(c) if c >= 10.0 => "up",
            Some(c) if c <= -10.0 => "down",
            _ => "flat",
        };
        ok_json(
            StatusCode::OK,
            json!({
                "tenant_id": t, "meter": meter, "days": days, "total": cur, "previous_total": prev,
                "change_pct": change, "trend": direction, "daily": daily,
            }),
        )
    })
    .await
}

#[derive(Deserialize)]
struct ForecastBody {
    meter: String,
    horizon: Option<usize>,
    model: Option<String>,
    level: Option<f64>,
    tenant: Option<String>,
}

async fn forecast(State(app): State<Arc<App>>, h: HeaderMap, body: Bytes) -> ApiResult {
    let p = principal(&app, &h)?;
    let b: ForecastBody =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad("body", e.to_string()))?;
    let t = tenant_of(&p, b.tenant.as_deref())?;
    blocking(move || {
        let horizon = b.horizon.unwrap_or(14);
        if !(1..=366).contains(&horizon) {
            return Err(ApiError::bad("horizon", "between 1 and 366"));
        }
        let level = b.level.unwrap_or(95.0);
        if !(level > 0.0 && level < 100.0) {
            return Err(ApiError::bad("level", "a percent in (0, 100)"));
        }
        let kind = b.model.as_deref().unwrap_or("auto").parse::<crate::forecast::ModelKind>()
            .map_err(|_| ApiError::bad("model", "not a model (auto, ses, holt, holt_winters, ...)"))?;
        let df = rollup_rows(&app, &t, Granularity::Day, Some(&b.meter), i64::MIN / 4, i64::MAX / 4)?;
        let ts = df.column("window_start")?.cast(&DataType::Int64)?;
        let ts: Vec<i64> = ts.i64()?.into_no_null_iter().collect();
        let y: Vec<f64> = df.column("value")?.f64()?.into_no_null_iter().collect();
        if y.is_empty() {
            return Err(ApiError::new(StatusCode::NOT_FOUND, Some("meter"), format!("no {} usage for {t}", b.meter)));
        }
        let opts = crate::forecast::ModelOptions::default();
        let r = crate::forecast::forecast_one(&y, horizon, level / 100.0, kind, &opts);
        let last = *ts.last().unwrap_or(&0);
        let points: Vec<Value> = (0..r.forecast.mean.len())
            .map(|i| json!({
                "date": crate::billing::rfc3339(last + (i as i64 + 1) * DAY)[..10].to_string(),
                "yhat": r.forecast.mean[i], "yhat_lower": r.forecast.lower[i], "yhat_upper": r.forecast.upper[i],
            }))
            .collect();
        ok_json(StatusCode::OK, json!({
            "tenant_id": t, "meter": b.meter, "model": r.model.map(|m| m.to_string()),
            "status": r.status, "history_days": y.len(), "forecast": points,
        }))
    })
    .await
}

async fn anomalies(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Query(q): Query<RangeQ>,
) -> ApiResult {
    let p = principal(&app, &h)?;
    let t = tenant_of(&p, q.tenant.as_deref())?;
    blocking(move || {
        let Some(path) = crate::anomalies::incidents_file(&app.opts.lake) else {
            return ok_json(StatusCode::OK, json!({ "tenant_id": t, "incidents": [] }));
        };
        let df = crate::alerts::read_parquet(&path)?
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

async fn alerts(State(app): State<Arc<App>>, h: HeaderMap, Query(q): Query<TenantQ>) -> ApiResult {
    let p = principal(&app, &h)?;
    let t = tenant_of(&p, q.tenant.as_deref())?;
    blocking(move || {
        let list: Vec<_> = crate::alerts::read_store(&app.opts.lake)?
            .into_iter()
            .filter(|a| a.tenant_id == t)
            .collect();
        ok_json(StatusCode::OK, json!({ "tenant_id": t, "alerts": list }))
    })
    .await
}

async fn acknowledge(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let p = principal(&app, &h)?;
    blocking(move || {
        let mut store = crate::alerts::AlertStore::open(&app.opts.lake)?;
        let owner = store
            .alerts
            .iter()
            .find(|a| a.id == id)
            .map(|a| a.tenant_id.clone());
        // Another tenant's alert is reported as missing: its existence is not disclosed.
        let visible = match (&p, &owner) {
            (_, None) => false,
            (Principal::Tenant(t), Some(o)) => t == o,
            (Principal::Admin(_), Some(_)) => true,
        };
        if !visible {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                Some("id"),
                format!("no alert {id}"),
            ));
        }
        let by = match &p {
            Principal::Tenant(t) => format!("api:{t}"),
            Principal::Admin(k) => format!("api-admin:{k}"),
        };
        // The alert store records who acknowledged it; the audit log reads it from there.
        let a = store.ack(&id, &by, now())?;
        ok_json(StatusCode::OK, serde_json::to_value(&a).unwrap_or_default())
    })
    .await
}

fn metrics_json(app: &App) -> Value {
    let m = &app.metrics;
    let (pending, flushing) = {
        let ing = lock(&app.ingress);
        (ing.pending.len(), ing.flushing.len())
    };
    let buckets: BTreeMap<String, u64> = LATENCY_BUCKETS
        .iter()
        .zip(&m.latency)
        .map(|(b, c)| (format!("{b}"), c.load(Ordering::Relaxed)))
        .collect();
    json!({
        "events_accepted": m.accepted.load(Ordering::Relaxed),
        "events_rejected": m.rejected.load(Ordering::Relaxed),
        "events_duplicate": m.duplicates.load(Ordering::Relaxed),
        "log_pending_events": pending + flushing,
        "flushes": m.flushes.load(Ordering::Relaxed),
        "flushed_events": m.flushed_events.load(Ordering::Relaxed),
        "last_flush_seconds": m.last_flush_micros.load(Ordering::Relaxed) as f64 / 1e6,
        "requests": m.requests.load(Ordering::Relaxed),
        "request_latency_buckets": buckets,
    })
}

#[derive(Deserialize)]
struct ReportBody {
    kind: crate::report::Kind,
    format: crate::report::Format,
    from: Option<String>,
    to: Option<String>,
    tenant: Option<String>,
}

/// Where the API keeps a tenant's generated reports.
fn reports_dir(app: &App, tenant: &str) -> std::path::PathBuf {
    app.opts.lake.join("_api/reports").join(tenant)
}

async fn generate_report(State(app): State<Arc<App>>, h: HeaderMap, body: Bytes) -> ApiResult {
    let p = principal(&app, &h)?;
    let b: ReportBody =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad("body", e.to_string()))?;
    let t = tenant_of(&p, b.tenant.as_deref())?;
    blocking(move || {
        let opts = crate::report::ReportOptions {
            kind: b.kind,
            tenant: Some(t.clone()),
            from: b.from.as_deref().map(|s| crate::rollup::parse_instant("from", s)).transpose()?,
            to: b.to.as_deref().map(|s| crate::rollup::parse_instant("to", s)).transpose()?,
            meters: None,
            top: 10,
        };
        let r = crate::report::build(&app.opts.lake, Some(&app.opts.billing), &opts)?;
        let out = reports_dir(&app, &t).join(format!("{}.{}", b.kind.name(), b.format.extension()));
        let files = crate::report::write(&r, b.format, &out)?;
        let names: Vec<String> = files
            .iter()
            .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().to_string()))
            .collect();
        ok_json(StatusCode::CREATED, json!({ "tenant_id": t, "kind": b.kind, "format": b.format, "files": names, "insights": r.insights.len() }))
    })
    .await
}

async fn list_reports(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Query(q): Query<TenantQ>,
) -> ApiResult {
    let p = principal(&app, &h)?;
    let t = tenant_of(&p, q.tenant.as_deref())?;
    blocking(move || {
        let dir = reports_dir(&app, &t);
        let mut files = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let meta = e.metadata().ok();
                let name = e.file_name().to_string_lossy().to_string();
                if name.ends_with(".tmp-meterlake") {
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

/// Records an admin action of the API in the audit log.
fn audit(
    app: &App,
    who: &str,
    action: &str,
    target: String,
    detail: String,
) -> std::result::Result<(), ApiError> {
    crate::lake::audit::append_api(
        &app.opts.lake,
        &crate::lake::audit::AuditEntry {
            at: crate::billing::rfc3339(now()),
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

async fn admin_metrics(State(app): State<Arc<App>>, h: HeaderMap) -> ApiResult {
    admin(&principal(&app, &h)?)?;
    ok_json(StatusCode::OK, metrics_json(&app))
}

async fn admin_flush(State(app): State<Arc<App>>, h: HeaderMap) -> ApiResult {
    let who = admin(&principal(&app, &h)?)?;
    let n = blocking(move || {
        let n = app.flush()?;
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

async fn quotas_reset(State(app): State<Arc<App>>, h: HeaderMap, body: Bytes) -> ApiResult {
    let who = admin(&principal(&app, &h)?)?;
    let b: ResetBody =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad("tenant", e.to_string()))?;
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

async fn prometheus(State(app): State<Arc<App>>) -> Response {
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
    let pending = {
        let ing = lock(&app.ingress);
        ing.pending.len() + ing.flushing.len()
    };
    o.push_str(&format!(
        "# HELP meterlake_log_lag_events Events acknowledged but not yet in the lake.\n# TYPE meterlake_log_lag_events gauge\nmeterlake_log_lag_events {pending}\n"
    ));
    o.push_str(&format!(
        "# HELP meterlake_last_flush_seconds Duration of the last flush.\n# TYPE meterlake_last_flush_seconds gauge\nmeterlake_last_flush_seconds {}\n",
        m.last_flush_micros.load(Ordering::Relaxed) as f64 / 1e6
    ));
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
