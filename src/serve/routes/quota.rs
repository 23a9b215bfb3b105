//! `GET /quotas` and `GET /check-quota/{meter}`: a tenant's allowances, from the live
//! counters.
//!
//! Both answer from the in-memory counters (`serve::counters`), which cover the current
//! billing period exactly: the lake as measured at startup (or when the period turned)
//! plus every event acknowledged by `/track` since. `/check-quota` is the hot path of a
//! platform's request: when the counters are current it never touches the lake nor leaves
//! the async thread. It answers 200 when the quantity fits and 429 when it does not (same
//! body, `decision` says which); `quantity` defaults to 1. A tenant without a plan is 404
//! `tenant`, a meter that is not billed 404 `meter`, a quantity that is negative or that
//! usage plus it would take beyond the largest decimal (~7.9e28) 400 `quantity`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;

use super::{blocking, now, ok_json};
use crate::billing::plans::Tenant;
use crate::serve::error::{ApiError, ApiResult};
use crate::serve::scope::{Params, Scope};
use crate::serve::{App, lock};

/// The plan entry of tenant `t`, or 404 `tenant`.
pub(super) fn planned<'a>(app: &'a App, t: &str) -> std::result::Result<&'a Tenant, ApiError> {
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

pub(super) async fn quotas(State(app): State<Arc<App>>, Scope(t): Scope) -> ApiResult {
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

/// `GET /limits`: the quotas of the current period (as `/quotas`), each with the kind of
/// its limit: `hard` (usage stops at the allowance), `soft` (usage past it is billed as
/// overage) or `none` (unlimited).
pub(super) async fn limits(State(app): State<Arc<App>>, Scope(t): Scope) -> ApiResult {
    blocking(move || {
        let at = now();
        app.ensure_counters(&[&t], at)?;
        let tenant = planned(&app, &t)?;
        let plan_id = tenant.plan_at(at);
        let plan = app.opts.billing.catalog.plan(plan_id);
        let lines = lock(&app.counters).quotas(&app.opts.billing, tenant, at)?;
        let mut lines = serde_json::to_value(&lines).unwrap_or_default();
        for l in lines.as_array_mut().into_iter().flatten() {
            let meter = l["meter"].as_str().unwrap_or_default().to_string();
            let kind = match plan.map(|p| p.allowance(&meter)) {
                Some(a) if a.included.is_none() => "none",
                Some(a) if a.limit == crate::billing::plans::Limit::HardCap => "hard",
                _ => "soft",
            };
            l["limit_kind"] = kind.into();
        }
        ok_json(
            StatusCode::OK,
            json!({ "tenant_id": t, "plan": plan_id, "limits": lines }),
        )
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CheckQ {
    /// `required_quantity` is accepted too (clients of other usage services send it).
    #[serde(alias = "required_quantity")]
    quantity: Option<String>,
    // Read by the `Scope` extractor; here so that the struct describes the whole query.
    #[allow(dead_code)]
    tenant: Option<String>,
}

pub(super) async fn check_quota(
    State(app): State<Arc<App>>,
    Path(meter): Path<String>,
    Params(q): Params<CheckQ>,
    Scope(t): Scope,
) -> ApiResult {
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
    let answer = lock(&app.counters)
        .check(&app.opts.billing, tenant, &meter, quantity, at)
        .map_err(|e| match e {
            // A quantity beyond what usage can count (see `billing::quota::decide`).
            crate::error::Error::InvalidParameter {
                name: "--quantity",
                reason,
            } => ApiError::bad("quantity", reason),
            e => e.into(),
        })?;
    let status = if answer.allowed() {
        StatusCode::OK
    } else {
        StatusCode::TOO_MANY_REQUESTS
    };
    ok_json(status, serde_json::to_value(&answer).unwrap_or_default())
}

/// `GET /entitlements/{feature}`: may the caller's tenant (an admin names it with
/// `?tenant=`) use `feature` now: an override, the plan's features, or a billed meter's
/// allowance left by the live counters (`billing::entitlements`).
pub(super) async fn entitlement(
    State(app): State<Arc<App>>,
    Path(feature): Path<String>,
    Params(_q): Params<CheckQ>,
    Scope(t): Scope,
) -> ApiResult {
    let at = now();
    let tenant = planned(&app, &t)?;
    let billing = &app.opts.billing;
    if billing.catalog.meters.contains_key(&feature) && !lock(&app.counters).covers(billing, &t, at)
    {
        let (a, t2) = (app.clone(), t.clone());
        blocking(move || Ok(a.ensure_counters(&[&t2], at)?)).await?;
    }
    let e = crate::billing::entitlements::entitlement(
        billing,
        &app.opts.entitlements,
        &t,
        &feature,
        at,
        || lock(&app.counters).check(billing, tenant, &feature, Decimal::ZERO, at),
    )?;
    ok_json(StatusCode::OK, serde_json::to_value(&e).unwrap_or_default())
}
