//! The executive report: how the platform is doing, on one page. For leadership: usage
//! per meter with growth, active tenants, revenue this period (base fees, overage so far,
//! projected), the top tenants by projected revenue, the top features, active and
//! inactive users, the next 30 days from the forecasts, and the most severe insights.
//!
//! Revenue is summed in exact decimals ([`Revenue`]) and becomes a number only where it is
//! shown. Reads day rollups (brought up to date), quotas with projections, engagement, the
//! period's events (for features), the forecast stage's tables, and what the insights need.

use std::collections::BTreeMap;

use polars::prelude::*;
use rust_decimal::Decimal;

use super::super::insights::Total;
use super::super::table::decimal_f64;
use super::super::{Bar, BarChart, Chart, Figure, Insight, Report, ReportKind, Table, TimeChart};
use super::context::{Ctx, f64_col, str_col};
use super::figures::{day_str, figure, grouped, growth, money, pct_str};
use crate::billing::quota::QuotaRow;
use crate::billing::saturating_sum;
use crate::error::Result;
use crate::rollup::RollupSeries;
use crate::time::MICROS_PER_DAY;
use crate::usage::Engagement;

/// A tenant's revenue in its current period (currency, exact).
#[derive(Default)]
pub(super) struct Revenue {
    pub plan: String,
    pub base: Decimal,
    pub overage: Decimal,
    /// Overage projected to the period's end.
    pub projected: Decimal,
}

impl Revenue {
    /// Base fee and projected overage.
    pub fn total(&self) -> Decimal {
        self.base.saturating_add(self.projected)
    }
}

/// A top tenant: its id, events in the period, and revenue (with a plan).
type TopTenant<'a> = (&'a str, f64, Option<&'a Revenue>);

/// Users summed over tenants: daily active, monthly active, known, inactive 30 days.
struct Users {
    dau: u64,
    mau: u64,
    known: u64,
    inactive: u64,
}

pub(super) fn executive(ctx: &Ctx) -> Result<Report> {
    let series = ctx.day_series()?;
    let totals = ctx.totals(&series);
    let (quotas, eng) = ctx.quotas_and_engagement()?;
    let insights = ctx.all_insights(&totals, &quotas, &eng)?;
    let kpis = kpi_table(ctx, &series, &totals);
    let rev = revenue(ctx, &quotas);
    let events: BTreeMap<&str, f64> = totals.iter().fold(BTreeMap::new(), |mut m, t| {
        *m.entry(t.tenant_id.as_str()).or_default() += t.events;
        m
    });
    let top = top_tenants(ctx, &events, &rev);
    let top_table = top_tenant_table(&top);
    let top_features = feature_table(ctx)?;
    let users = users(&eng);
    let users_table = users_table(&users);
    // The tenants with the most sessions.
    let mut by_sessions = ctx.sessions()?;
    by_sessions.sort_by(|a, b| {
        b.sessions
            .cmp(&a.sessions)
            .then(a.tenant_id.cmp(&b.tenant_id))
    });
    by_sessions.truncate(ctx.top);
    let sessions = super::tables::sessions_table(&by_sessions);
    let next = next_period_table(ctx)?;
    let figures = figures(ctx, &totals, &rev, &events, &users);
    let mut charts = vec![events_chart(ctx, &series)];
    if !top.is_empty() && ctx.billing.is_some() {
        charts.push(revenue_chart(ctx, &top));
    }
    let top_insights: Vec<Insight> = insights.into_iter().take(ctx.top).collect();
    Ok(Report {
        kind: ReportKind::Executive,
        title: "Executive summary".into(),
        scope: String::new(),
        figures,
        insights: top_insights,
        charts,
        tables: vec![kpis, top_table, top_features, users_table, sessions, next],
    })
}

/// Platform usage per meter: this period, the previous one, growth, tenants using it (with
/// events in the period). Tenants combine by the meter's rule
/// ([`crate::rollup::Aggregation::combine_tenants`]); a distinct count is the busiest day
/// of the tenants' daily counts added up.
pub(super) fn kpi_table(ctx: &Ctx, series: &[RollupSeries], totals: &[Total]) -> Table {
    let mut by_meter: BTreeMap<&str, Vec<&Total>> = BTreeMap::new();
    for t in totals {
        by_meter.entry(&t.meter).or_default().push(t);
    }
    let platform =
        |meter: &str, ts: &[&Total], from: i64, to: i64, pick: fn(&Total) -> Option<f64>| {
            let agg = ctx.aggregation(meter);
            if agg == crate::rollup::Aggregation::UniqueCount {
                let mut days: BTreeMap<i64, f64> = BTreeMap::new();
                for s in series.iter().filter(|s| s.meter == meter) {
                    for (t, v) in s.ts.iter().zip(&s.values) {
                        if (from..to).contains(t) {
                            *days.entry(*t).or_default() += v;
                        }
                    }
                }
                agg.combine_days(&days.into_values().collect::<Vec<_>>())
            } else {
                agg.combine_tenants(&ts.iter().filter_map(|t| pick(t)).collect::<Vec<_>>())
            }
        };
    let kpi: BTreeMap<&str, (Option<f64>, Option<f64>, usize)> = by_meter
        .iter()
        .map(|(m, ts)| {
            let cur = platform(m, ts, ctx.from, ctx.to, |t| t.current);
            let prev = platform(m, ts, ctx.prev_from, ctx.from, |t| t.previous);
            (
                *m,
                (cur, prev, ts.iter().filter(|t| t.events > 0.0).count()),
            )
        })
        .collect();
    let krows: Vec<_> = kpi.iter().collect();
    Table::new("kpis", "Platform usage per meter")
        .text("meter", krows.iter().map(|r| *r.0))
        .text("unit", krows.iter().map(|r| ctx.unit(r.0)))
        .text(
            "rule",
            krows.iter().map(|r| ctx.aggregation(r.0).combine_rule()),
        )
        .opt_num("total", 2, krows.iter().map(|r| r.1.0).collect())
        .opt_num("previous", 2, krows.iter().map(|r| r.1.1).collect())
        .opt_num(
            "growth_pct",
            1,
            krows.iter().map(|r| growth(r.1.0?, r.1.1?)).collect(),
        )
        .int("tenants", krows.iter().map(|r| r.1.2 as i64))
        .in_unit(&["total", "previous"])
}

/// Revenue per tenant this period: base fee + overage so far, and projected.
pub(super) fn revenue<'a>(ctx: &Ctx, quotas: &'a [QuotaRow]) -> BTreeMap<&'a str, Revenue> {
    let mut rev: BTreeMap<&str, Revenue> = BTreeMap::new();
    let Some(b) = ctx.billing else {
        return rev;
    };
    for q in quotas {
        let e = rev.entry(&q.tenant_id).or_default();
        if e.plan.is_empty() {
            e.plan = q.plan.clone();
            e.base = b
                .catalog
                .plan(&q.plan)
                .map_or(Decimal::ZERO, |p| p.base_fee);
        }
        e.overage = e.overage.saturating_add(q.overage_cost);
        e.projected = e
            .projected
            .saturating_add(q.projected.as_ref().map_or(q.overage_cost, |p| p.cost));
    }
    rev
}

/// Tenants by projected revenue, then events, at most `top`.
fn top_tenants<'a>(
    ctx: &Ctx,
    events: &'a BTreeMap<&'a str, f64>,
    rev: &'a BTreeMap<&'a str, Revenue>,
) -> Vec<TopTenant<'a>> {
    let mut top: Vec<TopTenant> = events.iter().map(|(t, e)| (*t, *e, rev.get(t))).collect();
    top.sort_by(|a, b| {
        let r = |x: &TopTenant| x.2.map_or(Decimal::ZERO, Revenue::total);
        r(b).cmp(&r(a)).then(b.1.total_cmp(&a.1)).then(a.0.cmp(b.0))
    });
    top.truncate(ctx.top);
    top
}

fn top_tenant_table(top: &[TopTenant]) -> Table {
    let money = |g: fn(&Revenue) -> Decimal| top.iter().map(|r| r.2.map(g)).collect();
    Table::new(
        "top_tenants",
        "Top tenants by projected revenue this period",
    )
    .text("tenant_id", top.iter().map(|r| r.0))
    .opt_text(
        "plan",
        top.iter().map(|r| r.2.map(|v| v.plan.clone())).collect(),
    )
    .num("events", 0, top.iter().map(|r| r.1))
    .opt_dec("base_fee", 2, money(|v| v.base))
    .opt_dec("overage_so_far", 2, money(|v| v.overage))
    .opt_dec("projected_revenue", 2, money(Revenue::total))
}

/// Events, tenants and users per `feature` property value in the period, top first.
pub(super) fn feature_table(ctx: &Ctx) -> Result<Table> {
    let features =
        match crate::lake::events_between(&ctx.lake, ctx.tenant.as_deref(), ctx.from, ctx.to)? {
            // A substring test first: the JSON path runs only on rows that name a feature.
            Some(lf) => lf
                .filter(col("properties").str().contains_literal(lit("\"feature\"")))
                .with_column(crate::rollup::property_expr("feature").alias("feature"))
                .filter(col("feature").is_not_null())
                // User ids are the tenant's own (u-1 of two tenants is two users): distinct
                // (tenant, user) pairs first.
                .group_by([col("feature"), col("tenant_id"), col("user_id")])
                .agg([len().cast(DataType::UInt64).alias("n")])
                .group_by([col("feature")])
                .agg([
                    col("n").sum().alias("events"),
                    col("tenant_id").n_unique().alias("tenants"),
                    col("user_id").is_not_null().sum().alias("users"),
                ])
                .sort_by_exprs(
                    [col("events"), col("feature")],
                    SortMultipleOptions::default().with_order_descending_multi([true, false]),
                )
                .limit(ctx.top as IdxSize)
                .collect()?,
            None => DataFrame::empty(),
        };
    if features.height() == 0 {
        return Ok(Table::new("top_features", "Top features").text("feature", Vec::<String>::new()));
    }
    let count = |n: &str| -> Result<Vec<f64>> {
        Ok(f64_col(&features, n)?
            .into_iter()
            .map(|v| v.unwrap_or(0.0))
            .collect())
    };
    Ok(Table::new("top_features", "Top features")
        .text("feature", str_col(&features, "feature")?)
        .num("events", 0, count("events")?)
        .num("tenants", 0, count("tenants")?)
        .num("users", 0, count("users")?))
}

fn users(eng: &[Engagement]) -> Users {
    eng.iter().fold(
        Users {
            dau: 0,
            mau: 0,
            known: 0,
            inactive: 0,
        },
        |a, e| Users {
            dau: a.dau + e.dau,
            mau: a.mau + e.mau,
            known: a.known + e.known_users,
            inactive: a.inactive + e.inactive_users,
        },
    )
}

fn users_table(u: &Users) -> Table {
    Table::new("users", "Users")
        .text(
            "measure",
            [
                "daily active",
                "monthly active",
                "known",
                "inactive 30 days",
            ],
        )
        .int(
            "users",
            [
                u.dau as i64,
                u.mau as i64,
                u.known as i64,
                u.inactive as i64,
            ],
        )
}

/// Next 30 days from the forecasts (additive meters: the sum of daily means; a band's
/// bounds are added too, which overstates its width: it is labelled as such).
fn next_period_table(ctx: &Ctx) -> Result<Table> {
    let Ok(fc) = ctx.forecasts() else {
        return Ok(Table::new(
            "next_period",
            "Forecast of the next 30 days (no forecasts in the lake yet)",
        )
        .text("meter", Vec::<String>::new()));
    };
    let finite = |v: f64| v.is_finite().then_some(v);
    let m: Vec<&str> = fc.points.iter().map(|p| p.meter.as_str()).collect();
    let ts: Vec<i64> = fc.points.iter().map(|p| p.ts).collect();
    let y: Vec<Option<f64>> = fc.points.iter().map(|p| finite(p.yhat)).collect();
    let lo: Vec<Option<f64>> = fc.points.iter().map(|p| finite(p.yhat_lower)).collect();
    let hi: Vec<Option<f64>> = fc.points.iter().map(|p| finite(p.yhat_upper)).collect();
    let mut acc: BTreeMap<&str, (f64, f64, f64, i64, i64)> = BTreeMap::new();
    for i in 0..m.len() {
        if !ctx.aggregation(m[i]).additive()
            || ts[i] < ctx.to
            || ts[i] >= ctx.to + 30 * MICROS_PER_DAY
        {
            continue;
        }
        let e = acc
            .entry(m[i])
            .or_insert((0.0, 0.0, 0.0, i64::MAX, i64::MIN));
        e.0 += y[i].unwrap_or(0.0).max(0.0);
        e.1 += lo[i].unwrap_or(0.0).max(0.0);
        e.2 += hi[i].unwrap_or(0.0).max(0.0);
        e.3 = e.3.min(ts[i]);
        e.4 = e.4.max(ts[i]);
    }
    let rows: Vec<_> = acc.into_iter().collect();
    Ok(Table::new(
        "next_period",
        "Forecast of the next 30 days (sum of daily forecasts)",
    )
    .text("meter", rows.iter().map(|r| r.0))
    .text("from", rows.iter().map(|r| day_str(r.1.3)))
    .text("to", rows.iter().map(|r| day_str(r.1.4)))
    .num("forecast", 2, rows.iter().map(|r| r.1.0))
    .num("sum_of_lower_bounds", 2, rows.iter().map(|r| r.1.1))
    .num("sum_of_upper_bounds", 2, rows.iter().map(|r| r.1.2)))
}

fn figures(
    ctx: &Ctx,
    totals: &[Total],
    rev: &BTreeMap<&str, Revenue>,
    events: &BTreeMap<&str, f64>,
    users: &Users,
) -> Vec<Figure> {
    let total_events: f64 = totals.iter().map(|t| t.events).sum();
    let prev_events: f64 = totals.iter().map(|t| t.previous_events).sum();
    let currency = ctx.currency();
    let overage = saturating_sum(rev.values().map(|v| v.overage));
    let projected = saturating_sum(rev.values().map(Revenue::total));
    let active_tenants = events.values().filter(|e| **e > 0.0).count();
    vec![
        figure(
            "Events",
            grouped(total_events, 0),
            Some(format!(
                "{} against the previous period",
                pct_str(growth(total_events, prev_events))
            )),
        ),
        figure("Active tenants", active_tenants.to_string(), None),
        figure(
            "Overage revenue so far",
            money(overage, currency),
            Some("current billing periods".into()),
        ),
        figure(
            "Projected revenue",
            money(projected, currency),
            Some("base fees + projected overage".into()),
        ),
        figure(
            "Monthly active users",
            grouped(users.mau as f64, 0),
            Some(format!(
                "{} inactive for 30 days",
                grouped(users.inactive as f64, 0)
            )),
        ),
    ]
}

/// Daily events, this period and the previous one shifted onto it.
pub(super) fn events_chart(ctx: &Ctx, series: &[RollupSeries]) -> Chart {
    let mut cur: BTreeMap<i64, f64> = BTreeMap::new();
    let mut prev: BTreeMap<i64, f64> = BTreeMap::new();
    for s in series {
        for i in 0..s.ts.len() {
            if s.ts[i] >= ctx.from && s.ts[i] < ctx.to {
                *cur.entry(s.ts[i]).or_default() += s.counts[i];
            } else if s.ts[i] >= ctx.prev_from && s.ts[i] < ctx.from {
                *prev.entry(s.ts[i] + (ctx.to - ctx.from)).or_default() += s.counts[i];
            }
        }
    }
    Chart::Time(TimeChart::two_periods(
        "Events per day".into(),
        "events".into(),
        cur,
        prev,
    ))
}

/// The top tenants' projected revenue as bars (the decimal becomes a bar length here).
fn revenue_chart(ctx: &Ctx, top: &[TopTenant]) -> Chart {
    Chart::Bars(BarChart {
        title: "Top tenants by projected revenue".into(),
        unit: ctx.currency().to_string(),
        bars: top
            .iter()
            .map(|r| Bar {
                label: r.0.to_string(),
                value: r.2.map_or(0.0, |v| decimal_f64(v.total())),
                status: "ok".into(),
            })
            .collect(),
        reference: None,
    })
}
