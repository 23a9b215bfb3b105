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
//!   `at - 30 days` (gauge readings are not summed), also per monthly active user;
//! - *sessions* of the last 30 days, per tenant and user ([`super::sessions`]).

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
    /// Inactivity that ends a session (µs; see [`super::sessions`]).
    pub session_gap: i64,
    /// Tenants' time zones: the local days sessions are counted on (others: UTC).
    pub zones: HashMap<String, crate::rollup::Zone>,
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
            session_gap: 30 * crate::time::MICROS_PER_MINUTE,
            zones: HashMap::new(),
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
    /// Sessions of the last 30 days (none: no user events then).
    pub sessions: Option<super::sessions::TenantSessions>,
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

/// The event timestamp, in UTC µs.
fn ts() -> Expr {
    col("ts").cast(DataType::Int64)
}

/// `x` per monthly active user (0 when there are none).
fn per_mau(x: f64, mau: u64) -> f64 {
    if mau > 0 { x / mau as f64 } else { 0.0 }
}

/// Engagement of every tenant (or one), sorted by tenant.
pub fn engagement(lake: &Lake, opts: &EngagementOptions) -> Result<Vec<Engagement>> {
    let Some((lf, at)) = events_before(lake, opts)? else {
        return Ok(Vec::new());
    };
    let month = at - 30 * MICROS_PER_DAY;
    let recent = lf.clone().filter(ts().gt_eq(lit(month)));
    // Daily active users over the 30 UTC days ending with the day of the last instant
    // before `at`.
    let last_day = (at - 1).div_euclid(MICROS_PER_DAY);
    let first_day = last_day - 29;
    // Every tenant with an event before `at`, users or not.
    let all = lf
        .clone()
        .select([col("tenant_id").unique().sort(SortOptions::default())]);
    // All of them collected as one query, so polars scans the lake once for all (its
    // common subplans are shared) instead of once per query.
    let queries = [
        last_seen(&lf),
        daily_active(&lf, first_day),
        feature_users(&recent, &opts.feature_property),
        document_users(recent, &opts.documents_meter),
        storage_readings(&lf, &opts.storage_meter, at),
        storage_readings(&lf, &opts.storage_meter, month),
        all,
    ];
    let flags = lf.get_current_optimizations();
    let [users, daily, features, docs, s_now, s_then, all]: [DataFrame; 7] =
        LazyFrame::collect_all_with_engine(
            queries.into_iter().map(|q| q.logical_plan).collect(),
            Engine::InMemory,
            flags,
        )?
        .try_into()
        .map_err(|_| polars_err!(ComputeError: "collect_all returned another number of frames"))?;
    let (counts, inactive) = user_counts(users, at, month)?;
    let (s_now, s_then) = (readings_of(&s_now)?, readings_of(&s_then)?);

    let cols = Columns::read(&counts, &inactive, &features, &docs, &daily)?;
    let span = Span {
        at,
        first_day,
        last_day,
    };
    let mut out = assemble(
        &strs(&all, "tenant_id")?,
        &cols,
        &s_now,
        &s_then,
        span,
        opts,
    )?;
    // Sessions of the same 30 days.
    let sessions = super::sessions::sessions(
        lake,
        &super::sessions::SessionOptions {
            tenant: opts.tenant.clone(),
            user: None,
            from: Some(month),
            to: Some(at),
            gap: opts.session_gap,
            zones: opts.zones.clone(),
            list: opts.list,
        },
    )?;
    let mut by: HashMap<String, super::sessions::TenantSessions> = sessions
        .into_iter()
        .map(|s| (s.tenant_id.clone(), s))
        .collect();
    for e in &mut out {
        e.sessions = by.remove(&e.tenant_id);
    }
    Ok(out)
}

/// The events before `at` (of the chosen tenant) and `at` itself; none without events.
fn events_before(lake: &Lake, opts: &EngagementOptions) -> Result<Option<(LazyFrame, i64)>> {
    let files = lake.data_files();
    if files.is_empty() {
        return Ok(None);
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
                None => return Ok(None),
            }
        }
    };
    Ok(Some((lf.filter(ts().lt(lit(at))), at)))
}

/// Each user's last instant seen, per tenant.
fn last_seen(lf: &LazyFrame) -> LazyFrame {
    lf.clone()
        .filter(col("user_id").is_not_null())
        .group_by([col("tenant_id"), col("user_id")])
        .agg([ts().max().alias("last")])
}

/// Per tenant, DAU, WAU, MAU, known and inactive users; and the inactive users by id, from
/// [`last_seen`]'s frame.
fn user_counts(users: DataFrame, at: i64, month: i64) -> Result<(DataFrame, DataFrame)> {
    let users = users.lazy();
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
    Ok((counts, inactive))
}

/// Distinct users per tenant and UTC day, from `first_day` on.
fn daily_active(lf: &LazyFrame, first_day: i64) -> LazyFrame {
    lf.clone()
        .filter(
            col("user_id")
                .is_not_null()
                .and(ts().gt_eq(lit(first_day * MICROS_PER_DAY))),
        )
        .group_by([col("tenant_id"), (ts() / lit(MICROS_PER_DAY)).alias("day")])
        .agg([col("user_id").n_unique().alias("users")])
}

/// Distinct users per tenant and feature in the last 30 days, most adopted first.
fn feature_users(recent: &LazyFrame, feature_property: &str) -> LazyFrame {
    recent
        .clone()
        // A substring test first: the JSON path runs only on rows that name the property.
        .filter(
            col("properties")
                .str()
                .contains_literal(lit(format!("\"{feature_property}\""))),
        )
        .with_column(property_expr(feature_property).alias("_f"))
        .filter(col("_f").is_not_null().and(col("user_id").is_not_null()))
        .group_by([col("tenant_id"), col("_f")])
        .agg([col("user_id").n_unique().alias("users")])
        .sort_by_exprs(
            [col("tenant_id"), col("users"), col("_f")],
            SortMultipleOptions::default().with_order_descending_multi([false, true, false]),
        )
}

/// Documents per tenant and user in the last 30 days, most first.
fn document_users(recent: LazyFrame, documents_meter: &str) -> LazyFrame {
    recent
        .filter(col("meter").eq(lit(documents_meter.to_string())))
        .group_by([col("tenant_id"), col("user_id")])
        .agg([len().alias("n")])
        .sort_by_exprs(
            [col("tenant_id"), col("n"), col("user_id")],
            SortMultipleOptions::default()
                .with_order_descending_multi([false, true, false])
                .with_nulls_last(true),
        )
}

/// The last storage reading per tenant before `until` (read by [`readings_of`]).
fn storage_readings(lf: &LazyFrame, storage_meter: &str, until: i64) -> LazyFrame {
    lf.clone()
        .filter(
            col("meter")
                .eq(lit(storage_meter.to_string()))
                .and(ts().lt(lit(until))),
        )
        .group_by([col("tenant_id")])
        .agg([col("value")
            .filter(col("ts").eq(col("ts").max()))
            .max()
            .alias("v")])
}

/// [`storage_readings`]' frame by tenant.
fn readings_of(df: &DataFrame) -> Result<HashMap<String, f64>> {
    let ts = strs(df, "tenant_id")?;
    let vs = df.column("v")?.f64()?;
    Ok(ts
        .into_iter()
        .zip(vs.iter())
        .filter_map(|(t, v)| Some((t, v?)))
        .collect())
}

/// The instant and the UTC days of the daily active users.
#[derive(Clone, Copy)]
struct Span {
    at: i64,
    first_day: i64,
    last_day: i64,
}

/// The per-tenant frames, read into columns (each frame sorted by tenant, then rank).
struct Columns {
    count_tenants: Vec<String>,
    dau: Vec<u64>,
    wau: Vec<u64>,
    mau: Vec<u64>,
    known: Vec<u64>,
    inact: Vec<u64>,
    in_t: Vec<String>,
    in_u: Vec<String>,
    f_t: Vec<String>,
    f_v: Vec<String>,
    f_n: Vec<u64>,
    d_t: Vec<String>,
    d_u: Vec<Option<String>>,
    d_n: Vec<u64>,
    day_t: Vec<String>,
    day_d: Vec<Option<i64>>,
    day_n: Vec<u64>,
}

impl Columns {
    /// Reads the counts, inactive users, features, documents and daily frames.
    fn read(
        counts: &DataFrame,
        inactive: &DataFrame,
        features: &DataFrame,
        docs: &DataFrame,
        daily: &DataFrame,
    ) -> Result<Columns> {
        Ok(Columns {
            count_tenants: strs(counts, "tenant_id")?,
            dau: u64s(counts, "dau")?,
            wau: u64s(counts, "wau")?,
            mau: u64s(counts, "mau")?,
            known: u64s(counts, "known")?,
            inact: u64s(counts, "inactive")?,
            in_t: strs(inactive, "tenant_id")?,
            in_u: strs(inactive, "user_id")?,
            f_t: strs(features, "tenant_id")?,
            f_v: strs(features, "_f")?,
            f_n: u64s(features, "users")?,
            d_t: strs(docs, "tenant_id")?,
            d_u: docs
                .column("user_id")?
                .str()?
                .iter()
                .map(|s| s.map(str::to_string))
                .collect(),
            d_n: u64s(docs, "n")?,
            day_t: strs(daily, "tenant_id")?,
            day_d: daily.column("day")?.i64()?.iter().collect(),
            day_n: u64s(daily, "users")?,
        })
    }

    /// The features of the rows `rows`, with their adoption over `mau`.
    fn feature_adoption(&self, rows: &[usize], mau: u64) -> Vec<FeatureAdoption> {
        rows.iter()
            .map(|&j| FeatureAdoption {
                feature: self.f_v[j].clone(),
                users: self.f_n[j],
                adoption: per_mau(self.f_n[j] as f64, mau),
            })
            .collect()
    }

    /// The first `list` inactive users of the rows `rows`.
    fn inactive_sample(&self, rows: &[usize], list: usize) -> Vec<String> {
        rows.iter()
            .take(list)
            .map(|&j| self.in_u[j].clone())
            .collect()
    }

    /// The documents of the rows `rows`, and their first `list` users.
    fn documents(&self, rows: &[usize], list: usize) -> (u64, Vec<UserCount>) {
        let documents: u64 = rows.iter().map(|&j| self.d_n[j]).sum();
        let top = rows
            .iter()
            .copied()
            .filter(|&j| self.d_u[j].is_some())
            .take(list)
            .map(|j| UserCount {
                user_id: self.d_u[j].clone().unwrap_or_default(),
                count: self.d_n[j],
            })
            .collect();
        (documents, top)
    }
}

/// One [`Engagement`] per tenant of `tenants`, in that order.
fn assemble(
    tenants: &[String],
    c: &Columns,
    s_now: &HashMap<String, f64>,
    s_then: &HashMap<String, f64>,
    span: Span,
    opts: &EngagementOptions,
) -> Result<Vec<Engagement>> {
    let day_users: HashMap<(&str, i64), u64> = c
        .day_t
        .iter()
        .zip(&c.day_d)
        .zip(&c.day_n)
        .filter_map(|((t, d), n)| Some(((t.as_str(), (*d)?), *n)))
        .collect();
    // Row indexes of each frame per tenant (the frames are sorted by tenant, then rank).
    let rows_of = index_by_tenant(&c.f_t);
    let (docs_of, inactive_of) = (index_by_tenant(&c.d_t), index_by_tenant(&c.in_t));
    let count_of: HashMap<&str, usize> = c
        .count_tenants
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let none: Vec<usize> = Vec::new();
    let mut out = Vec::new();
    for t in tenants {
        let i = count_of.get(t.as_str()).copied();
        let at_i = |v: &[u64]| i.map_or(0, |i| v[i]);
        let (dau, m) = (at_i(&c.dau), at_i(&c.mau));
        let rows = rows_of.get(t.as_str()).unwrap_or(&none);
        let doc_rows = docs_of.get(t.as_str()).unwrap_or(&none);
        let (documents, top_document_users) = c.documents(doc_rows, opts.list);
        let (now, then) = (s_now.get(t).copied(), s_then.get(t).copied());
        let growth = now.map(|n| n - then.unwrap_or(0.0));
        out.push(Engagement {
            tenant_id: t.clone(),
            at: crate::time::rfc3339_micros(span.at),
            dau,
            wau: at_i(&c.wau),
            mau: m,
            stickiness: per_mau(dau as f64, m),
            daily_active_users: (span.first_day..=span.last_day)
                .map(|d| DailyActive {
                    date: crate::time::day_to_string(d as i32),
                    users: day_users.get(&(t.as_str(), d)).copied().unwrap_or(0),
                })
                .collect(),
            known_users: at_i(&c.known),
            inactive_users: at_i(&c.inact),
            inactive_sample: c
                .inactive_sample(inactive_of.get(t.as_str()).unwrap_or(&none), opts.list),
            feature_adoption: c.feature_adoption(rows, m),
            documents,
            documents_per_active_user: per_mau(documents as f64, m),
            top_document_users,
            storage_now: now,
            storage_30d_ago: then,
            storage_growth: growth,
            storage_growth_per_active_user: growth.filter(|_| m > 0).map(|g| per_mau(g, m)),
            sessions: None,
        });
    }
    Ok(out)
}
