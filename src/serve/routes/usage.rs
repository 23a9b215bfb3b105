//! `GET /summary`, `/events`, `/metrics`, `/trends/{meter}`: a tenant's usage, read from the
//! lake.
//!
//! They see what the lake holds: events still in the write-ahead log (acknowledged by
//! `/track`, not yet flushed) appear after the next flush. `from`/`to` are RFC 3339
//! instants or days (UTC), the window half-open `[from, to)`.
//! - `/summary`: `usage::usage` over `[from, to)` (default: the last 30 days), compared
//!   with the period before (the function `meterlake usage` calls).
//! - `/events`: the raw events in `(ts, id)` order, paged by `limit` (1 to 1000, default
//!   100) and `offset`; `next_offset` is null on the last page.
//! - `/metrics` and `/trends`: rows of the rollup of `granularity` (hour, day, week,
//!   month; trends: day), brought up to date with the lake first (the incremental rollup
//!   `meterlake rollup` runs). Trends compares the last `days` days (1 to 366, default
//!   30) with the `days` before.
//! - `/analytics`: `/summary`, every meter's `/trends` and the tenant's engagement
//!   (sessions included) over the last `days`, in one answer.
//! - `/sessions`: sessions per tenant and user over `[from, to)` (default: the last 30
//!   days), cut by `session_start`/`session_end` (or `login`/`logout`) events, else by
//!   `gap_minutes` of inactivity (default 30), counted on the tenant's local days
//!   (`crate::usage::sessions`); `user_id` narrows it to one user; `limit` users are
//!   listed (default 100).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use polars::prelude::*;
use serde_json::json;

use super::{RangeQ, heavy, now, ok_json, rows_json};
use crate::rollup::{Granularity, RollupOptions, RollupSpec, rollup, with_rollup_scan};
use crate::serve::App;
use crate::serve::error::{ApiError, ApiResult};
use crate::serve::scope::{Params, Scope};
use crate::time::MICROS_PER_DAY;

/// The instant of parameter `name`, or `default` when it is absent.
fn instant(
    name: &'static str,
    s: Option<&str>,
    default: i64,
) -> std::result::Result<i64, ApiError> {
    match s {
        None => Ok(default),
        Some(s) => Ok(crate::time::parse_instant(name, s)?),
    }
}

/// `[from, to)` of a query: `to` defaults to now, `from` to 30 days before it.
fn last_30_days(q: &RangeQ) -> std::result::Result<(i64, i64), ApiError> {
    let to = instant("to", q.to.as_deref(), now())?;
    let from = instant("from", q.from.as_deref(), to - 30 * MICROS_PER_DAY)?;
    if from >= to {
        return Err(ApiError::bad("from", "must be before to"));
    }
    Ok((from, to))
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
pub(super) fn rollup_rows(
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
    Ok(with_rollup_scan(&lake, &spec, |lf| {
        let mut lf = lf.filter(
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
    })?)
}

pub(super) async fn summary(
    State(app): State<Arc<App>>,
    Params(q): Params<RangeQ>,
    Scope(t): Scope,
) -> ApiResult {
    let a = app.clone();
    heavy(&a, &t.clone(), move || {
        let (from, to) = last_30_days(&q)?;
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

pub(super) async fn events(
    State(app): State<Arc<App>>,
    Params(q): Params<RangeQ>,
    Scope(t): Scope,
) -> ApiResult {
    let a = app.clone();
    heavy(&a, &t.clone(), move || {
        let to = instant("to", q.to.as_deref(), now() + MICROS_PER_DAY)?;
        let from = instant("from", q.from.as_deref(), to - 31 * MICROS_PER_DAY)?;
        let limit = q.limit.unwrap_or(100);
        if limit == 0 || limit > 1000 {
            return Err(ApiError::bad("limit", "between 1 and 1000"));
        }
        let offset = q.offset.unwrap_or(0);
        // polars slices by a signed offset: a larger one would wrap and count from the end.
        if i64::try_from(offset).is_err() {
            return Err(ApiError::bad("offset", "at most 9223372036854775807"));
        }
        let lake = crate::lake::Lake::open(&app.opts.lake)?;
        let Some(mut lf) = crate::lake::events_between(&lake, Some(&t), from, to)? else {
            return ok_json(StatusCode::OK, json!({ "events": [], "next_offset": null }));
        };
        if let Some(m) = q.meter {
            lf = lf.filter(col("meter").eq(lit(m)));
        }
        if let Some(u) = q.user_id {
            lf = lf.filter(col("user_id").eq(lit(app.opts.user_in_lake(u))));
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

pub(super) async fn metrics(
    State(app): State<Arc<App>>,
    Params(q): Params<RangeQ>,
    Scope(t): Scope,
) -> ApiResult {
    let a = app.clone();
    heavy(&a, &t.clone(), move || {
        let g = granularity(q.granularity.as_deref())?;
        let to = instant("to", q.to.as_deref(), now() + MICROS_PER_DAY)?;
        let from = instant("from", q.from.as_deref(), to - 31 * MICROS_PER_DAY)?;
        let df = rollup_rows(&app, &t, g, q.meter.as_deref(), from, to)?;
        ok_json(
            StatusCode::OK,
            json!({ "tenant_id": t, "granularity": g.to_string(), "rows": rows_json(&df) }),
        )
    })
    .await
}

pub(super) async fn trends(
    State(app): State<Arc<App>>,
    Path(meter): Path<String>,
    Params(q): Params<RangeQ>,
    Scope(t): Scope,
) -> ApiResult {
    let a = app.clone();
    heavy(&a, &t.clone(), move || {
        let (days, from, to) = trend_range(&q)?;
        let df = rollup_rows(
            &app,
            &t,
            Granularity::Day,
            Some(&meter),
            from - days * MICROS_PER_DAY,
            to,
        )?;
        // No definition and no usage: not a meter (a typo), not a flat trend of zeros.
        if df.height() == 0 && app.opts.meters.get(&meter).is_none() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                Some("meter"),
                format!("no meter `{meter}`: not defined and no usage of it for {t}"),
            ));
        }
        ok_json(StatusCode::OK, trend_json(&df, &t, &meter, days, from)?)
    })
    .await
}

/// `days` (1 to 366, default 30) and the window `[from, to)` they end at (`to`: default the
/// end of today).
fn trend_range(q: &RangeQ) -> std::result::Result<(i64, i64, i64), ApiError> {
    let days = q.days.unwrap_or(30);
    if !(1..=366).contains(&days) {
        return Err(ApiError::bad("days", "between 1 and 366"));
    }
    let to = instant(
        "to",
        q.to.as_deref(),
        (now() / MICROS_PER_DAY + 1) * MICROS_PER_DAY,
    )?;
    Ok((days, to - days * MICROS_PER_DAY, to))
}

/// One meter's trend from day rollup rows (of `[from - days, to)`): the total of the last
/// `days` against the `days` before, the direction (±10 %), and the daily values.
fn trend_json(
    df: &DataFrame,
    t: &str,
    meter: &str,
    days: i64,
    from: i64,
) -> std::result::Result<serde_json::Value, ApiError> {
    let ts = df.column("window_start")?.cast(&DataType::Int64)?;
    let ts = ts.i64()?;
    let v = df.column("value")?.f64()?;
    let m = df.column("meter")?.str()?;
    let (mut cur, mut prev, mut daily) = (0.0, 0.0, Vec::new());
    for i in 0..df.height() {
        if m.get(i) != Some(meter) {
            continue;
        }
        let (t0, x) = (ts.get(i).unwrap_or(0), v.get(i).unwrap_or(0.0));
        if t0 >= from {
            cur += x;
            daily.push(json!({ "date": crate::time::date_str(t0), "value": x }));
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
    Ok(json!({
        "tenant_id": t, "meter": meter, "days": days, "total": cur, "previous_total": prev,
        "change_pct": change, "trend": direction, "daily": daily,
    }))
}

/// `GET /analytics`: the tenant's usage over the last `days` against the period before
/// (as `/summary`), every meter's trend (as `/trends/{meter}`) and its engagement as of
/// `to` (as `meterlake engagement`, sessions included), in one answer.
pub(super) async fn analytics(
    State(app): State<Arc<App>>,
    Params(q): Params<RangeQ>,
    Scope(t): Scope,
) -> ApiResult {
    let a = app.clone();
    heavy(&a, &t.clone(), move || {
        let (days, from, to) = trend_range(&q)?;
        let lake = crate::lake::Lake::open(&app.opts.lake)?;
        let usage = crate::usage::usage(
            &lake,
            &app.opts.meters,
            &crate::usage::UsageQuery {
                tenant: Some(t.clone()),
                meter: None,
                from,
                to,
                by: None,
                compare: Some(crate::usage::Compare::Previous),
                top: 0,
            },
        )?;
        let df = rollup_rows(
            &app,
            &t,
            Granularity::Day,
            None,
            from - days * MICROS_PER_DAY,
            to,
        )?;
        let meters: std::collections::BTreeSet<String> = df
            .column("meter")?
            .str()?
            .iter()
            .flatten()
            .map(str::to_string)
            .collect();
        let trends = meters
            .iter()
            .map(|m| trend_json(&df, &t, m, days, from))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let zones = app
            .opts
            .billing
            .tenants
            .iter()
            .map(|x| (x.id.clone(), x.zone))
            .collect();
        let engagement = crate::usage::engagement(
            &lake,
            &crate::usage::EngagementOptions {
                tenant: Some(t.clone()),
                at: Some(to),
                zones,
                ..Default::default()
            },
        )?;
        ok_json(
            StatusCode::OK,
            json!({
                "tenant_id": t,
                "from": crate::time::rfc3339(from),
                "to": crate::time::rfc3339(to),
                "usage": usage,
                "trends": trends,
                "engagement": engagement.into_iter().next(),
            }),
        )
    })
    .await
}

pub(super) async fn sessions(
    State(app): State<Arc<App>>,
    Params(q): Params<RangeQ>,
    Scope(t): Scope,
) -> ApiResult {
    let a = app.clone();
    heavy(&a, &t.clone(), move || {
        let (from, to) = last_30_days(&q)?;
        let gap = q.gap_minutes.unwrap_or(30.0);
        if !(gap.is_finite() && gap > 0.0) {
            return Err(ApiError::bad("gap_minutes", "must be a positive number"));
        }
        let lake = crate::lake::Lake::open(&app.opts.lake)?;
        let zones = app
            .opts
            .billing
            .tenants
            .iter()
            .map(|x| (x.id.clone(), x.zone))
            .collect();
        let r = crate::usage::sessions::sessions(
            &lake,
            &crate::usage::sessions::SessionOptions {
                tenant: Some(t.clone()),
                user: q.user_id.map(|u| app.opts.user_in_lake(u)),
                from: Some(from),
                to: Some(to),
                gap: (gap * crate::time::MICROS_PER_MINUTE as f64).round() as i64,
                zones,
                list: q.limit.unwrap_or(100).clamp(1, 10_000),
            },
        )?;
        // An empty lake has no range to count days over: zeros.
        let body = match r.first() {
            Some(s) => serde_json::to_value(s).unwrap_or_default(),
            None => {
                json!({"tenant_id": t, "sessions": 0, "active_users": 0, "daily": [], "users": []})
            }
        };
        ok_json(StatusCode::OK, body)
    })
    .await
}
