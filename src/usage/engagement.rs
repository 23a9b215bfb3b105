//! Engagement per tenant, as of an instant: daily, weekly and monthly active users,
//! stickiness, inactive users, feature adoption, documents per user and storage growth.
//!
//! Definitions (windows end at `at`, exclusive):
//! - a user is *active* in a window when at least one event of any meter with their
//!   `user_id` falls in it; DAU, WAU and MAU use the last 1, 7 and 30 days;
//! - *inactive* users were seen before the last 30 days and not in them;
//! - *feature adoption*: for each value of the feature property (default `feature`) on
//!   events of the last 30 days, the users who used it, over MAU;
//! - *documents per user*: events of the documents meter in the last 30 days, per user;
//! - *storage growth*: the last storage reading before `at` minus the last one before
//!   `at - 30 days` (gauge readings are not summed), also per monthly active user.

use std::collections::HashMap;

use polars::prelude::*;
use serde::Serialize;

use crate::error::Result;
use crate::lake::Lake;
use crate::rollup::property_expr;
use crate::time::MICROS_PER_DAY;

/// Options of [`engagement`].
#[derive(Debug, Clone)]
pub struct EngagementOptions {
    /// Only this tenant.
    pub tenant: Option<String>,
    /// As of this instant (UTC µs, exclusive); default: just after the lake's last event.
    pub at: Option<i64>,
    /// The property naming a feature.
    pub feature_property: String,
    /// The meter counting documents.
    pub documents_meter: String,
    /// The storage gauge meter.
    pub storage_meter: String,
    /// Users listed per tenant (inactive users, top document users).
    pub list: usize,
}

impl Default for EngagementOptions {
    fn default() -> Self {
        EngagementOptions {
            tenant: None,
            at: None,
            feature_property: "feature".into(),
            documents_meter: "documents".into(),
            storage_meter: "storage_bytes".into(),
            list: 10,
        }
    }
}

/// Users of one feature.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureAdoption {
    /// The property value.
    pub feature: String,
    /// Distinct users who used it in the last 30 days.
    pub users: u64,
    /// `users / mau`.
    pub adoption: f64,
}

/// Active users of one UTC day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DailyActive {
    /// The day (`YYYY-MM-DD`, UTC).
    pub date: String,
    /// Distinct users with an event that day.
    pub users: u64,
}

/// A user and a number.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserCount {
    /// The user.
    pub user_id: String,
    /// Documents in the last 30 days.
    pub count: u64,
}

/// Engagement of one tenant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Engagement {
    /// Tenant.
    pub tenant_id: String,
    /// As of (RFC 3339).
    pub at: String,
    /// Distinct users in the last day.
    pub dau: u64,
    /// ... last 7 days.
    pub wau: u64,
    /// ... last 30 days.
    pub mau: u64,
    /// `dau / mau` (0 when no MAU).
    pub stickiness: f64,
    /// Distinct users of each of the 30 UTC days ending with the day of the last instant
    /// before `at` (oldest first; days without any active user are listed with 0; a
    /// partial last day counts events before `at` only).
    pub daily_active_users: Vec<DailyActive>,
    /// Distinct users ever seen before `at`.
    pub known_users: u64,
    /// Seen before, but not in the last 30 days.
    pub inactive_users: u64,
    /// The first of them by id (up to `list`).
    pub inactive_sample: Vec<String>,
    /// Per feature, most adopted first.
    pub feature_adoption: Vec<FeatureAdoption>,
    /// Documents in the last 30 days.
    pub documents: u64,
    /// `documents / mau`.
    pub documents_per_active_user: f64,
    /// The users with the most documents (up to `list`).
    pub top_document_users: Vec<UserCount>,
    /// Last storage reading before `at`.
    pub storage_now: Option<f64>,
    /// Last storage reading before `at - 30 days`.
    pub storage_30d_ago: Option<f64>,
    /// `storage_now - storage_30d_ago` (a tenant without an older reading grew from 0).
    pub storage_growth: Option<f64>,
    /// `storage_growth / mau`.
    pub storage_growth_per_active_user: Option<f64>,
}

/// Row indexes per tenant, in row order.
fn index_by_tenant(tenants: &[String]) -> HashMap<&str, Vec<usize>> {
    let mut m: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, t) in tenants.iter().enumerate() {
        m.entry(t.as_str()).or_default().push(i);
    }
    m
}

fn strs(df: &DataFrame, c: &str) -> Result<Vec<String>> {
    Ok(df
        .column(c)?
        .str()?
        .iter()
        .map(|s| s.unwrap_or_default().to_string())
        .collect())
}

fn u64s(df: &DataFrame, c: &str) -> Result<Vec<u64>> {
    Ok(df
        .column(c)?
        .cast(&DataType::UInt64)?
        .u64()?
        .iter()
        .map(|v| v.unwrap_or(0))
        .collect())
}

/// Engagement of every tenant (or one), sorted by tenant.
pub fn engagement(lake: &Lake, opts: &EngagementOptions) -> Result<Vec<Engagement>> {
    let files = lake.data_files();
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let mut lf = crate::lake::scan_files(lake, &files)?;
    if let Some(t) = &opts.tenant {
        lf = lf.filter(col("tenant_id").eq(lit(t.clone())));
    }
    let at = match opts.at {
        Some(a) => a,
        None => {
            let m = lf
                .clone()
                .select([col("ts").max().cast(DataType::Int64)])
                .collect()?;
            match m.column("ts")?.i64()?.get(0) {
                Some(t) => t + 1,
                None => return Ok(Vec::new()),
            }
        }
    };
    let ts = || col("ts").cast(DataType::Int64);
    let lf = lf.filter(ts().lt(lit(at)));
    let month = at - 30 * MICROS_PER_DAY;

    // Users: last time each was seen, then counts per tenant.
    let users = lf
        .clone()
        .filter(col("user_id").is_not_null())
        .group_by([col("tenant_id"), col("user_id")])
        .agg([ts().max().alias("last")]);
    let counts = users
        .clone()
        .group_by([col("tenant_id")])
        .agg([
            col("last")
                .gt_eq(lit(at - MICROS_PER_DAY))
                .sum()
                .alias("dau"),
            col("last")
                .gt_eq(lit(at - 7 * MICROS_PER_DAY))
                .sum()
                .alias("wau"),
            col("last").gt_eq(lit(month)).sum().alias("mau"),
            len().alias("known"),
            col("last").lt(lit(month)).sum().alias("inactive"),
        ])
        .sort(["tenant_id"], SortMultipleOptions::default())
        .collect()?;
    let inactive = users
        .filter(col("last").lt(lit(month)))
        .sort(["tenant_id", "user_id"], SortMultipleOptions::default())
        .collect()?;
    let recent = lf.clone().filter(ts().gt_eq(lit(month)));
    // Daily active users over the 30 UTC days ending with the day of the last instant
    // before `at`.
    let last_day = (at - 1).div_euclid(MICROS_PER_DAY);
    let first_day = last_day - 29;
    let daily = lf
        .clone()
        .filter(
            col("user_id")
                .is_not_null()
                .and(ts().gt_eq(lit(first_day * MICROS_PER_DAY))),
        )
        .group_by([col("tenant_id"), (ts() / lit(MICROS_PER_DAY)).alias("day")])
        .agg([col("user_id").n_unique().alias("users")])
        .collect()?;
    let features = recent
        .clone()
        .with_column(property_expr(&opts.feature_property).alias("_f"))
        .filter(col("_f").is_not_null().and(col("user_id").is_not_null()))
        .group_by([col("tenant_id"), col("_f")])
        .agg([col("user_id").n_unique().alias("users")])
        .sort_by_exprs(
            [col("tenant_id"), col("users"), col("_f")],
            SortMultipleOptions::default().with_order_descending_multi([false, true, false]),
        )
        .collect()?;
    let docs = recent
        .filter(col("meter").eq(lit(opts.documents_meter.clone())))
        .group_by([col("tenant_id"), col("user_id")])
        .agg([len().alias("n")])
        .sort_by_exprs(
            [col("tenant_id"), col("n"), col("user_id")],
            SortMultipleOptions::default()
                .with_order_descending_multi([false, true, false])
                .with_nulls_last(true),
        )
        .collect()?;
    let storage = |until: i64| -> Result<DataFrame> {
        Ok(lf
            .clone()
            .filter(
                col("meter")
                    .eq(lit(opts.storage_meter.clone()))
                    .and(ts().lt(lit(until))),
            )
            .group_by([col("tenant_id")])
            .agg([col("value")
                .filter(col("ts").eq(col("ts").max()))
                .max()
                .alias("v")])
            .collect()?)
    };
    let (s_now, s_then) = (storage(at)?, storage(month)?);
    let readings = |df: &DataFrame| -> Result<HashMap<String, f64>> {
        let ts = strs(df, "tenant_id")?;
        let vs = df.column("v")?.f64()?;
        Ok(ts
            .into_iter()
            .zip(vs.iter())
            .filter_map(|(t, v)| Some((t, v?)))
            .collect())
    };
    let (s_now, s_then) = (readings(&s_now)?, readings(&s_then)?);

    // Every tenant with an event before `at`, users or not.
    let all = lf
        .clone()
        .select([col("tenant_id").unique().sort(SortOptions::default())])
        .collect()?;
    let count_tenants = strs(&counts, "tenant_id")?;
    let (dau, wau, mau, known, inact) = (
        u64s(&counts, "dau")?,
        u64s(&counts, "wau")?,
        u64s(&counts, "mau")?,
        u64s(&counts, "known")?,
        u64s(&counts, "inactive")?,
    );
    let (in_t, in_u) = (strs(&inactive, "tenant_id")?, strs(&inactive, "user_id")?);
    let (f_t, f_v, f_n) = (
        strs(&features, "tenant_id")?,
        strs(&features, "_f")?,
        u64s(&features, "users")?,
    );
    let d_t = strs(&docs, "tenant_id")?;
    let d_u: Vec<Option<String>> = docs
        .column("user_id")?
        .str()?
        .iter()
        .map(|s| s.map(str::to_string))
        .collect();
    let d_n = u64s(&docs, "n")?;

    let (day_t, day_n) = (strs(&daily, "tenant_id")?, u64s(&daily, "users")?);
    let day_users: HashMap<(&str, i64), u64> = day_t
        .iter()
        .zip(daily.column("day")?.i64()?.iter())
        .zip(&day_n)
        .filter_map(|((t, d), n)| Some(((t.as_str(), d?), *n)))
        .collect();
    // Row indexes of each frame per tenant (the frames are sorted by tenant, then rank).
    let rows_of = index_by_tenant(&f_t);
    let (docs_of, inactive_of) = (index_by_tenant(&d_t), index_by_tenant(&in_t));
    let count_of: HashMap<&str, usize> = count_tenants
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let none: Vec<usize> = Vec::new();
    let mut out = Vec::new();
    for t in strs(&all, "tenant_id")? {
        let t = &t;
        let i = count_of.get(t.as_str()).copied();
        let at_i = |v: &[u64]| i.map_or(0, |i| v[i]);
        let (dau, wau, m, known, inact) = (
            at_i(&dau),
            at_i(&wau),
            at_i(&mau),
            at_i(&known),
            at_i(&inact),
        );
        let per_mau = |x: f64| if m > 0 { x / m as f64 } else { 0.0 };
        let feature_adoption = rows_of
            .get(t.as_str())
            .unwrap_or(&none)
            .iter()
            .map(|&j| FeatureAdoption {
                feature: f_v[j].clone(),
                users: f_n[j],
                adoption: per_mau(f_n[j] as f64),
            })
            .collect();
        let doc_rows = docs_of.get(t.as_str()).unwrap_or(&none);
        let documents: u64 = doc_rows.iter().map(|&j| d_n[j]).sum();
        let top_document_users = doc_rows
            .iter()
            .copied()
            .filter(|&j| d_u[j].is_some())
            .take(opts.list)
            .map(|j| UserCount {
                user_id: d_u[j].clone().unwrap_or_default(),
                count: d_n[j],
            })
            .collect();
        let (now, then) = (s_now.get(t).copied(), s_then.get(t).copied());
        let growth = now.map(|n| n - then.unwrap_or(0.0));
        out.push(Engagement {
            tenant_id: t.clone(),
            at: crate::time::rfc3339_micros(at),
            dau,
            wau,
            mau: m,
            stickiness: per_mau(dau as f64),
            daily_active_users: (first_day..=last_day)
                .map(|d| DailyActive {
                    date: crate::time::day_to_string(d as i32),
                    users: day_users.get(&(t.as_str(), d)).copied().unwrap_or(0),
                })
                .collect(),
            known_users: known,
            inactive_users: inact,
            inactive_sample: inactive_of
                .get(t.as_str())
                .unwrap_or(&none)
                .iter()
                .take(opts.list)
                .map(|&j| in_u[j].clone())
                .collect(),
            feature_adoption,
            documents,
            documents_per_active_user: per_mau(documents as f64),
            top_document_users,
            storage_now: now,
            storage_30d_ago: then,
            storage_growth: growth,
            storage_growth_per_active_user: growth.filter(|_| m > 0).map(per_mau),
        });
    }
    Ok(out)
}
