//! `POST /track`: events in, durable before the answer.
//!
//! A body is a JSON event, a JSON array of events (CloudEvents batches included) or NDJSON
//! (`Content-Type: application/x-ndjson`, or any body of several JSON lines whatever its
//! content type), at most `--max-batch` records. Each record is
//! validated as `ingest` validates a file's; bad records are reported by index and the
//! good ones accepted. The 202 is sent only once the accepted events are **fsynced in the
//! write-ahead log** (`serve::wal`) and counted in the live counters; the background flush
//! commits them to the lake later, exactly once (an event already in the log or the lake,
//! within the dedup lookback, is dropped and counted as a duplicate).
//!
//! Refusals, in the order they are checked: 503 (with `Retry-After`) while the log holds
//! `--max-lag-events` events not yet committed (tracking outruns the flushes); 413 for too
//! many records; 429 `rate` (with
//! `Retry-After`) when a tenant key is over its rate; 429 `user_id` (with `Retry-After`)
//! when a user is over its plan's per-user rate (`[plans.NAME.limits] user_rate`,
//! `user_burst`; a request is taken whole or not at all); 403 `tenant_id` when a tenant key
//! sends another tenant's event; 429 `meter` (with `Retry-After`: the period's end) when
//! enforcement is on and an event is for a hard-capped meter at its limit. A refused
//! request writes nothing.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::json;

use super::{blocking, now, ok_json};
use crate::billing::quota::Status;
use crate::event::UsageEvent;
use crate::ingest::record::{Limits, parse_cloudevent_json, parse_json};
use crate::serve::auth::Principal;
use crate::serve::error::{ApiError, ApiResult};
use crate::serve::scope::{Caller, WithBody};
use crate::serve::{App, lock};

pub(super) async fn track(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    WithBody(Caller(p, _), body): WithBody<Caller>,
) -> ApiResult {
    let _slot = slot(&app).await?;
    let a = app.clone();
    blocking(move || track_blocking(&a, &p, &h, &body)).await
}

/// One of the slots that bound how many ingest requests parse at once (so checks keep a
/// core), for the request's lifetime.
pub(super) async fn slot(
    app: &App,
) -> std::result::Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
    app.track_slots.acquire().await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            format!("shutting down: {e}"),
        )
    })
}

/// Splits a body into raw records: a JSON array, one JSON object, or NDJSON.
fn records(h: &HeaderMap, body: &[u8]) -> std::result::Result<Vec<Vec<u8>>, ApiError> {
    let ctype = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let lines = || {
        body.split(|b| *b == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
    };
    // Several JSON lines are NDJSON whatever the content type says: an object that does
    // not parse as one value but spans lines is one record per line.
    let ndjson = ctype.starts_with("application/x-ndjson")
        || ctype.starts_with("application/jsonl")
        || (first == Some(b'{')
            && lines().nth(1).is_some()
            && serde_json::from_slice::<&serde_json::value::RawValue>(body).is_err());
    if ndjson {
        return Ok(lines().map(<[u8]>::to_vec).collect());
    }
    match first {
        Some(b'[') => json_array(body),
        Some(b'{') => Ok(vec![body.to_vec()]),
        _ => Err(ApiError::bad(
            "body",
            "expected a JSON event, a JSON array of events (or a CloudEvents batch) or NDJSON",
        )),
    }
}

/// The raw records of a JSON array body (each element as its own bytes, not re-serialised).
pub(super) fn json_array(body: &[u8]) -> std::result::Result<Vec<Vec<u8>>, ApiError> {
    let items: Vec<&serde_json::value::RawValue> = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad("body", format!("not a JSON array of events: {e}")))?;
    Ok(items.iter().map(|r| r.get().as_bytes().to_vec()).collect())
}

/// The whole request once the caller is known: check, log, count, answer.
fn track_blocking(app: &App, p: &Principal, h: &HeaderMap, body: &[u8]) -> ApiResult {
    let raws = records(h, body)?;
    let o = take(app, p, &raws, Intake::Each)?;
    ok_json(
        StatusCode::ACCEPTED,
        json!({
            "accepted": o.fresh,
            "rejected": o.errors.len(),
            "duplicates": o.duplicates,
            "errors": o.errors,
        }),
    )
}

/// How a request's records are taken.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Intake {
    /// `/track`: each record on its own; bad ones are reported by index, the good ones
    /// accepted.
    Each,
    /// OpenMeter's `POST /api/v1/events`: CloudEvents only, `time` defaulting to the
    /// receipt, all or nothing: one bad event refuses the request (400 naming its field)
    /// and nothing is stored.
    AllCloudEvents,
}

/// What [`take`] did with a request's records.
pub(super) struct Outcome {
    /// Events newly logged.
    pub fresh: usize,
    /// Events already logged or in the lake (dropped).
    pub duplicates: usize,
    /// The refused records (`Intake::Each` only): `{index, field, reason}`.
    pub errors: Vec<serde_json::Value>,
}

/// Checks a request's raw records and logs the good ones durably: the one way events
/// enter the server, whichever route they come by, so every guarantee (the log's fsync
/// before the answer, dedup, the lag bound, rate limits, tenant isolation, hard caps)
/// holds on each.
pub(super) fn take(
    app: &App,
    p: &Principal,
    raws: &[Vec<u8>],
    intake: Intake,
) -> std::result::Result<Outcome, ApiError> {
    let lag = app.metrics.lag.load(Ordering::Relaxed);
    if lag >= app.opts.max_lag_events as u64 {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            format!("{lag} acknowledged events are waiting for their commit to the lake (--max-lag-events); retry shortly"),
        )
        .retry_after(1));
    }
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
    if let Principal::Tenant(t) = p {
        within_rate(app, t, raws.len())?;
    }
    let received = now();
    let limits = Limits::relative_to(received).pseudonymising(app.opts.pseudonym);
    let mut good = Vec::with_capacity(raws.len());
    let mut errors = Vec::new();
    for (i, raw) in raws.iter().enumerate() {
        let parsed = match intake {
            Intake::Each => parse_json(raw, &limits),
            Intake::AllCloudEvents => parse_cloudevent_json(raw, &limits, received),
        };
        match parsed {
            Ok(a) => good.push((a.event, a.key)),
            Err(r) if intake == Intake::AllCloudEvents => {
                let which = if raws.len() > 1 {
                    format!("event {i}: ")
                } else {
                    String::new()
                };
                return Err(ApiError::bad(
                    &r.field,
                    format!("{which}{}: {}; nothing was stored", r.field, r.reason),
                ));
            }
            Err(r) => errors.push(json!({ "index": i, "field": r.field, "reason": r.reason })),
        }
    }
    // Tenant isolation: a tenant key writes only its own tenant's events.
    if let Principal::Tenant(t) = p
        && let Some((e, _)) = good.iter().find(|(e, _)| &e.tenant_id != t)
    {
        let field = match intake {
            Intake::Each => "tenant_id",
            Intake::AllCloudEvents => "subject",
        };
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            Some(field),
            format!(
                "event for tenant {} sent with a key of tenant {t}",
                e.tenant_id
            ),
        ));
    }
    let at = now();
    within_user_rates(
        app,
        good.iter()
            .map(|(e, _)| (e.tenant_id.as_str(), e.user_id.as_deref())),
        at,
    )?;
    let mut tenants: Vec<&str> = good.iter().map(|(e, _)| e.tenant_id.as_str()).collect();
    tenants.sort_unstable();
    tenants.dedup();
    app.ensure_counters(&tenants, at)?;
    if app.opts.enforcement {
        under_hard_caps(app, &tenants, &good, at)?;
    }
    let offered = good.len();
    let fresh = {
        let mut ing = lock(&app.ingress);
        let fresh = ing.append(good)?;
        // Counters are updated under the log's lock: a measurement (which holds it too)
        // sees an event either in the log or in the counters, never both.
        let new = &ing.pending[ing.pending.len() - fresh..];
        lock(&app.counters).add(&app.opts.billing, new);
        app.metrics.lag.fetch_add(fresh as u64, Ordering::Relaxed);
        if ing.pending.len() >= app.opts.flush_events {
            app.flush_wanted.notify_one();
        }
        fresh
    };
    let m = &app.metrics;
    let duplicates = offered - fresh;
    m.accepted.fetch_add(fresh as u64, Ordering::Relaxed);
    m.rejected.fetch_add(errors.len() as u64, Ordering::Relaxed);
    m.duplicates.fetch_add(duplicates as u64, Ordering::Relaxed);
    Ok(Outcome {
        fresh,
        duplicates,
        errors,
    })
}

/// Takes each user's events from their (tenant, user) bucket when the tenant's plan sets a
/// per-user rate (`[plans.NAME.limits] user_rate`), all or none: else 429 `user_id` with
/// the wait, and nothing of the request is stored.
fn within_user_rates<'a>(
    app: &App,
    events: impl Iterator<Item = (&'a str, Option<&'a str>)>,
    at: i64,
) -> std::result::Result<(), ApiError> {
    let mut counts: std::collections::BTreeMap<(&str, &str), f64> = Default::default();
    for (t, user) in events {
        if let Some(u) = user {
            *counts.entry((t, u)).or_default() += 1.0;
        }
    }
    let b = &app.opts.billing;
    let wants: Vec<(&str, &str, f64, f64, f64)> = counts
        .into_iter()
        .filter_map(|((t, u), n)| {
            // Tenants are sorted by id (`load_tenants`).
            let i = b.tenants.binary_search_by(|x| x.id.as_str().cmp(t)).ok()?;
            let tenant = &b.tenants[i];
            let (rate, burst) = b.catalog.plan(tenant.plan_at(at))?.user_limit?;
            Some((t, u, n, rate, burst))
        })
        .collect();
    if wants.is_empty() {
        return Ok(());
    }
    lock(&app.user_limiter)
        .take_all(&wants, Instant::now())
        .map_err(|(user, wait)| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                Some("user_id"),
                format!("user {user} is over its plan's per-user rate; nothing of this request was stored"),
            )
            .retry_after(if wait.is_finite() {
                wait.ceil().max(1.0) as u64
            } else {
                60
            })
        })
}

/// Takes `n` events from tenant `t`'s bucket, or 429 `rate` with the wait.
fn within_rate(app: &App, t: &str, n: usize) -> std::result::Result<(), ApiError> {
    match lock(&app.limiter).take(t, n as f64, Instant::now()) {
        Ok(()) => Ok(()),
        Err(wait) => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            Some("rate"),
            format!("tenant {t} is over its rate of {} events/s", app.opts.rate),
        )
        .retry_after(if wait.is_finite() {
            wait.ceil().max(1.0) as u64
        } else {
            60
        })),
    }
}

/// 429 `meter` when an event of `good` is for a hard-capped meter its tenant has used up.
fn under_hard_caps(
    app: &App,
    tenants: &[&str],
    good: &[(UsageEvent, u128)],
    at: i64,
) -> std::result::Result<(), ApiError> {
    let b = &app.opts.billing;
    let c = lock(&app.counters);
    for t in tenants {
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
                return Err(ApiError::new(
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
                )
                .retry_after(
                    chrono::DateTime::parse_from_rfc3339(&q.period_end)
                        .map(|d| ((d.timestamp_micros() - at) / 1_000_000).max(1) as u64)
                        .unwrap_or(3600),
                ));
            }
        }
    }
    Ok(())
}
