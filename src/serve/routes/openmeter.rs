//! OpenMeter's API, so its official SDKs ingest into and query meterlake unchanged:
//! `POST /api/v1/events`, `GET /api/v1/meters`, `GET /api/v1/meters/{idOrSlug}` and
//! `GET /api/v1/meters/{idOrSlug}/query`.
//!
//! - **Ingest** takes one CloudEvent (`application/cloudevents+json`), a batch
//!   (`application/cloudevents-batch+json`) or either as `application/json`, and answers
//!   204 with no body once every event is fsynced in the write-ahead log: the same
//!   [`track::take`] as `/track`, so dedup on (`source`, `id`), the lag bound, rate limits,
//!   tenant isolation (a tenant key sends only its own `subject`, else 403) and hard caps
//!   hold here too. Unlike `/track` a batch is all or nothing, as OpenMeter's: one bad
//!   event is a 400 naming its field, and nothing is stored. `time` defaults to the
//!   receipt; nested `data` is flattened to dotted property keys.
//! - **Meters** are `meters.toml`'s, in OpenMeter's shape: the meter's name is its `id`
//!   and `slug`, `event` its `eventType`, plus `valueProperty` and `groupBy`.
//! - **Query** computes the meter from the events, the lake's and those still in the log
//!   (see [`crate::rollup::query`]): `from`, `to`, `windowSize` (MINUTE, HOUR, DAY,
//!   MONTH), `windowTimeZone`, `subject` (repeatable), `groupBy` (repeatable; a group of
//!   the meter, or `subject`) and `filterGroupBy[NAME]=VALUE`. A tenant key only ever sees
//!   its own subject.
//!
//! Every refusal on these routes is `application/problem+json` (RFC 9457: `type`, `title`,
//! `status`, `detail`, and a `field` member naming what is at fault): [`problem_json`]
//! rewrites the API's usual error answers.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use polars::prelude::*;
use serde_json::{Value, json};

use super::track::{self, Intake};
use super::{blocking, heavy, now, ok_json};
use crate::rollup::query::{MeterQuery, QueryRow, WindowSize, aggregate_events, select_events};
use crate::rollup::{Aggregation, Meter, Zone, utc_datetime};
use crate::serve::auth::Principal;
use crate::serve::error::{ApiError, ApiResult};
use crate::serve::scope::{Caller, WithBody, named_field};
use crate::serve::{App, lock};

/// `POST /api/v1/events`.
pub(super) async fn ingest(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    WithBody(Caller(p, _), body): WithBody<Caller>,
) -> ApiResult {
    let _slot = track::slot(&app).await?;
    let a = app.clone();
    blocking(move || {
        let raws = events(&h, &body)?;
        track::take(&a, &p, &raws, Intake::AllCloudEvents)?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

/// The raw events of an ingest body, by its content type.
fn events(h: &HeaderMap, body: &[u8]) -> std::result::Result<Vec<Vec<u8>>, ApiError> {
    let ctype = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let mime = ctype
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let (one, many) = match mime.as_str() {
        "application/cloudevents+json" => (true, false),
        "application/cloudevents-batch+json" => (false, true),
        "application/json" => (true, true),
        other => {
            return Err(ApiError::bad(
                "Content-Type",
                format!(
                    "`{other}` is not application/cloudevents+json, application/cloudevents-batch+json or application/json"
                ),
            ));
        }
    };
    match first {
        Some(b'[') if many => {
            let items = track::json_array(body)?;
            if items.is_empty() {
                return Err(ApiError::bad("body", "an empty batch"));
            }
            Ok(items)
        }
        Some(b'{') if one => Ok(vec![body.to_vec()]),
        _ => Err(ApiError::bad(
            "body",
            format!(
                "expected {} for {mime}",
                match (one, many) {
                    (true, false) => "one CloudEvent (a JSON object)",
                    (false, true) => "a JSON array of CloudEvents",
                    _ => "a CloudEvent or a JSON array of them",
                }
            ),
        )),
    }
}

/// `GET /api/v1/meters`.
pub(super) async fn list_meters(State(app): State<Arc<App>>, Caller(..): Caller) -> ApiResult {
    let meters: Vec<Value> = app.opts.meters.iter().map(meter_json).collect();
    ok_json(StatusCode::OK, Value::Array(meters))
}

/// `GET /api/v1/meters/{idOrSlug}`.
pub(super) async fn get_meter(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Caller(..): Caller,
) -> ApiResult {
    ok_json(StatusCode::OK, meter_json(find(&app, &id)?))
}

fn find<'a>(app: &'a App, id: &str) -> std::result::Result<&'a Meter, ApiError> {
    app.opts.meters.get(id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            Some("meterIdOrSlug"),
            format!("no meter `{id}` (meters.toml names the meters)"),
        )
    })
}

/// A meter in OpenMeter's shape.
fn meter_json(m: &Meter) -> Value {
    let aggregation = match m.aggregation {
        Aggregation::Count => "COUNT",
        Aggregation::Sum | Aggregation::Duration => "SUM",
        Aggregation::Max => "MAX",
        Aggregation::Min => "MIN",
        Aggregation::Avg => "AVG",
        Aggregation::UniqueCount => "UNIQUE_COUNT",
        Aggregation::Latest => "LATEST",
        Aggregation::P50 => "P50",
        Aggregation::P95 => "P95",
        Aggregation::P99 => "P99",
    };
    let value_property = match (&m.value_property, &m.property, m.aggregation) {
        (Some(p), _, _) => Some(p.clone()),
        (None, Some(p), _) => Some(format!("$['{p}']")),
        (None, None, Aggregation::Count) => None,
        (None, None, Aggregation::UniqueCount) => Some("$.user_id".to_string()),
        (None, None, _) => Some("$.value".to_string()),
    };
    // meters.toml has no history: the epoch stands for "defined by configuration".
    let epoch = "1970-01-01T00:00:00Z";
    json!({
        "id": m.name,
        "slug": m.name,
        "name": m.label(),
        "description": m.unit.as_deref().map(|u| format!("unit: {u}")),
        "aggregation": aggregation,
        "eventType": m.event(),
        "valueProperty": value_property,
        "groupBy": m.group_by,
        "createdAt": epoch,
        "updatedAt": epoch,
    })
}

/// The parameters of a meter query, as OpenMeter names them.
#[derive(Default)]
struct QueryParams {
    from: Option<i64>,
    to: Option<i64>,
    window: Option<WindowSize>,
    zone: Zone,
    subjects: Vec<String>,
    group_by: Vec<String>,
    /// Group name → the values kept (any of them).
    filters: Vec<(String, Vec<String>)>,
}

fn query_params(q: &str) -> std::result::Result<QueryParams, ApiError> {
    let mut p = QueryParams::default();
    for (k, v) in form_urlencoded::parse(q.as_bytes()) {
        match k.as_ref() {
            "from" => p.from = Some(crate::time::parse_instant("from", &v)?),
            "to" => p.to = Some(crate::time::parse_instant("to", &v)?),
            "windowSize" => p.window = Some(window_size(&v)?),
            "windowTimeZone" => p.zone = zone(&v)?,
            "subject" => p.subjects.push(v.into_owned()),
            "groupBy" => p.group_by.push(v.into_owned()),
            // OpenMeter's client id (for its own progress tracking): nothing to do.
            "clientId" => {}
            k if k.starts_with("filterGroupBy[") && k.ends_with(']') => {
                let name = &k["filterGroupBy[".len()..k.len() - 1];
                p.filters.push((name.to_string(), vec![v.into_owned()]));
            }
            other => {
                return Err(ApiError::bad(
                    other,
                    format!(
                        "unknown or unsupported parameter `{other}` (from, to, windowSize, windowTimeZone, subject, groupBy, filterGroupBy[NAME])"
                    ),
                ));
            }
        }
    }
    Ok(p)
}

/// The body of `POST /api/v1/meters/{idOrSlug}/query` (what the SDKs' `meters.query`
/// sends): the GET's parameters as JSON, `filterGroupBy` mapping a group to its values.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct QueryBody {
    #[allow(dead_code)]
    client_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    window_size: Option<String>,
    window_time_zone: Option<String>,
    subject: Option<Vec<String>>,
    filter_group_by: Option<BTreeMap<String, Vec<String>>>,
    group_by: Option<Vec<String>>,
}

fn body_params(body: &[u8]) -> std::result::Result<QueryParams, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let b: QueryBody = serde_path_to_error::deserialize(de).map_err(|e| {
        // A body that is no JSON (cut short, a syntax error) is about the body, not the
        // field being read when it broke off.
        if !e.inner().is_data() {
            return ApiError::bad("body", format!("the body is not JSON: {}", e.inner()));
        }
        let (field, msg) = named_field(&e, "body");
        ApiError::bad(&field, format!("{field}: {msg}"))
    })?;
    let mut p = QueryParams {
        subjects: b.subject.unwrap_or_default(),
        group_by: b.group_by.unwrap_or_default(),
        filters: b.filter_group_by.unwrap_or_default().into_iter().collect(),
        ..QueryParams::default()
    };
    if let Some(v) = &b.from {
        p.from = Some(crate::time::parse_instant("from", v)?);
    }
    if let Some(v) = &b.to {
        p.to = Some(crate::time::parse_instant("to", v)?);
    }
    if let Some(v) = &b.window_size {
        p.window = Some(window_size(v)?);
    }
    if let Some(v) = &b.window_time_zone {
        p.zone = zone(v)?;
    }
    Ok(p)
}

fn window_size(v: &str) -> std::result::Result<WindowSize, ApiError> {
    WindowSize::parse(v).ok_or_else(|| {
        ApiError::bad(
            "windowSize",
            format!("`{v}` is not MINUTE, HOUR, DAY or MONTH"),
        )
    })
}

fn zone(v: &str) -> std::result::Result<Zone, ApiError> {
    v.parse().map_err(|_| {
        ApiError::bad(
            "windowTimeZone",
            format!("`{v}` is not an IANA time zone (for example Europe/Berlin)"),
        )
    })
}

/// `GET /api/v1/meters/{idOrSlug}/query`.
pub(super) async fn query_get(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    caller: Caller,
) -> ApiResult {
    let params = query_params(q.as_deref().unwrap_or(""))?;
    answer(app, caller, &id, params).await
}

/// `POST /api/v1/meters/{idOrSlug}/query`.
pub(super) async fn query_post(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    WithBody(caller, body): WithBody<Caller>,
) -> ApiResult {
    let params = body_params(&body)?;
    answer(app, caller, &id, params).await
}

async fn answer(app: Arc<App>, caller: Caller, id: &str, params: QueryParams) -> ApiResult {
    let meter = find(&app, id)?.clone();
    let p = caller.0.clone();
    // A tenant key sees its own subject only; an admin key any or all.
    let subjects = match &p {
        Principal::Tenant(t) => {
            if let Some(other) = params.subjects.iter().find(|s| *s != t) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    Some("subject"),
                    format!("subject {other} is another tenant's"),
                ));
            }
            Some(vec![t.clone()])
        }
        Principal::Admin(_) => (!params.subjects.is_empty()).then(|| params.subjects.clone()),
    };
    let read = match &subjects {
        Some(s) if s.len() == 1 => s[0].clone(),
        Some(s) => s.join(","),
        None => "*".to_string(),
    };
    caller
        .read(&app, &read, &format!("query meter {id}"))
        .await?;
    let by_subject = matches!(p, Principal::Tenant(_))
        || !params.subjects.is_empty()
        || params.group_by.iter().any(|g| g == "subject");
    let mut q = MeterQuery {
        from: params.from,
        to: params.to,
        window: params.window,
        zone: params.zone,
        subjects,
        by_subject,
        group_by: params
            .group_by
            .iter()
            .filter(|g| *g != "subject")
            .cloned()
            .collect(),
    };
    // A filter on a group the meter does not have is about that filter (the caller may
    // not have sent any groupBy).
    if let Some((g, _)) = params
        .filters
        .iter()
        .find(|(g, _)| !meter.group_by.contains_key(g))
    {
        let field = format!("filterGroupBy[{g}]");
        return Err(ApiError::bad(
            &field,
            format!("meter `{}` has no group `{g}` to filter on", meter.name),
        ));
    }
    // Filtered groups are grouped by too, then kept to the asked value.
    for (g, _) in &params.filters {
        if !q.group_by.contains(g) {
            q.group_by.push(g.clone());
        }
    }
    crate::rollup::query::check(&meter, &q)?;
    let slot = match &p {
        Principal::Tenant(t) => t.clone(),
        Principal::Admin(_) => "*".to_string(),
    };
    let a = app.clone();
    let filters = params.filters;
    let asked: Vec<String> = params
        .group_by
        .into_iter()
        .filter(|g| g != "subject")
        .collect();
    let rows = heavy(&app, &slot, move || run_query(&a, &meter, &q)).await?;
    let data: Vec<Value> = rows
        .into_iter()
        .filter(|r| {
            filters.iter().all(|(g, vs)| {
                r.group
                    .get(g)
                    .and_then(|x| x.as_deref())
                    .is_some_and(|x| vs.iter().any(|v| v == x))
            })
        })
        .map(|r| row_json(r, &asked))
        .collect();
    ok_json(
        StatusCode::OK,
        json!({
            "from": params.from.map(crate::time::rfc3339),
            "to": params.to.map(crate::time::rfc3339),
            "windowSize": params.window.map(WindowSize::name),
            "data": data,
        }),
    )
}

fn row_json(r: QueryRow, asked: &[String]) -> Value {
    let group: BTreeMap<&String, Option<String>> = r
        .group
        .iter()
        .filter(|(g, _)| asked.contains(g))
        .map(|(g, v)| (g, v.clone()))
        .collect();
    json!({
        "value": r.value,
        "windowStart": crate::time::rfc3339(r.window_start),
        "windowEnd": crate::time::rfc3339(r.window_end),
        "subject": r.subject,
        "groupBy": group,
    })
}

/// The query over the lake and the log, consistently: the events are selected under the
/// flush lock (no commit moves events from the log into the lake meanwhile, so each is read
/// exactly once), then aggregated without it.
fn run_query(
    app: &App,
    meter: &Meter,
    q: &MeterQuery,
) -> std::result::Result<Vec<QueryRow>, ApiError> {
    let selected = {
        let _f = lock(&app.flush_lock);
        select_events(events_of(app, meter, q)?, meter, q)?
    };
    Ok(aggregate_events(selected, meter, q, now())?)
}

/// The lake's events of the query's days and the log's of the meter, as one lazy frame
/// (call under the flush lock).
fn events_of(app: &App, meter: &Meter, q: &MeterQuery) -> std::result::Result<LazyFrame, ApiError> {
    let lake = crate::lake::Lake::open(&app.opts.lake)?;
    let files =
        crate::lake::files_between(&lake, q.from.unwrap_or(0), q.to.unwrap_or(i64::MAX / 2));
    let logged = logged_frame(app, meter, q)?;
    let events = if files.is_empty() {
        logged.lazy()
    } else {
        let cols = || crate::rollup::query::EVENT_COLUMNS.map(col);
        let lake_events = crate::lake::scan_files(&lake, &files)?.select(cols());
        concat(
            [lake_events, logged.lazy().select(cols())],
            UnionArgs::default(),
        )?
    };
    Ok(events)
}

/// The meter's events still in the write-ahead log, as a frame with the lake's columns.
fn logged_frame(
    app: &App,
    meter: &Meter,
    q: &MeterQuery,
) -> std::result::Result<DataFrame, ApiError> {
    let (mut ts, mut tenant, mut user, mut value, mut props) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    {
        let ing = lock(&app.ingress);
        for l in ing.unflushed() {
            let e = &l.event;
            if e.meter != meter.event()
                || q.from.is_some_and(|f| e.ts < f)
                || q.to.is_some_and(|t| e.ts >= t)
                || q.subjects
                    .as_ref()
                    .is_some_and(|s| !s.contains(&e.tenant_id))
            {
                continue;
            }
            ts.push(e.ts);
            tenant.push(e.tenant_id.clone());
            user.push(e.user_id.clone());
            value.push(e.value);
            props.push(e.properties.clone());
        }
    }
    let n = ts.len();
    let df = DataFrame::new(
        n,
        vec![
            Column::new("ts".into(), ts).cast(&utc_datetime())?,
            Column::new("tenant_id".into(), tenant),
            Column::new("user_id".into(), user),
            Column::new("meter".into(), vec![meter.event().to_string(); n]),
            Column::new("value".into(), value),
            Column::new("properties".into(), props),
        ],
    )?;
    Ok(df)
}

/// Rewrites every refusal of these routes as `application/problem+json` (RFC 9457), the
/// error shape OpenMeter's SDKs read: `type`, `title`, `status`, `detail`, and `field`
/// naming what is at fault (the API's usual `{"error", "field"}`, or a plain-text answer
/// of the framework, becomes `detail`).
/// Only OpenMeter's paths: the rest of the API keeps its own error shape.
pub(super) async fn problem_json(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let ours = path == "/api/v1/events" || path.starts_with("/api/v1/meters");
    let r = next.run(req).await;
    if !ours {
        return r;
    }
    let status = r.status();
    if status.is_success() || status.is_redirection() {
        return r;
    }
    let (mut parts, body) = r.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let (detail, field) = match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) if v.get("error").is_some() => (
            v["error"].as_str().unwrap_or_default().to_string(),
            v.get("field").cloned(),
        ),
        _ => (String::from_utf8_lossy(&bytes).trim().to_string(), None),
    };
    let mut p = json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    if let Some(f) = field {
        p["field"] = f;
    }
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(p.to_string()))
}
