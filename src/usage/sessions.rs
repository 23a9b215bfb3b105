//! Sessions: how often users come back and how long they stay, derived from the events.
//!
//! **What a session is.** Each user's events (any meter, `user_id` set), in time order:
//! - an event of meter `session_start` or `login` opens a session. When an explicit
//!   `session_end` or `logout` follows before the next start, the session runs from the
//!   start to it, however idle the user was in between;
//! - otherwise (no markers, or a start whose end never came) sessions are cut by
//!   inactivity: a gap longer than `gap` (default 30 minutes) between two events ends one
//!   at its last event and opens the next. An end marker within the gap ends it there;
//! - a session's duration is its last instant minus its first, in real elapsed time (UTC
//!   µs, so a DST change does not stretch or shrink it); a lone event is a session of 0 s;
//! - a session belongs to the local day (the tenant's time zone) it starts on, and to the
//!   range when it starts in `[from, to)`. Events from a day before `from` and a day after
//!   `to` are read, so a session running into or out of the range is neither cut into a
//!   new one at `from` nor shortened at `to`: its length does not depend on the range.
//!
//! **Per tenant and user:** sessions, sessions per day (over the range's local days),
//! median and p95 duration (linear interpolation, as DuckDB's `quantile_cont`), and for
//! the tenant sessions per active user (users with a session in the range) and a daily
//! series.

use std::collections::{BTreeMap, HashMap};

use polars::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::rollup::Zone;
use crate::time::{MICROS_PER_DAY, MICROS_PER_MINUTE, rfc3339};

/// Meters that open a session.
pub const START_METERS: [&str; 2] = ["session_start", "login"];
/// Meters that end one.
pub const END_METERS: [&str; 2] = ["session_end", "logout"];

/// Options of [`sessions`].
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this user.
    pub user: Option<String>,
    /// Range start (UTC µs); default `to` − 30 days.
    pub from: Option<i64>,
    /// Range end (exclusive); default just after the lake's last event.
    pub to: Option<i64>,
    /// Inactivity that ends a session (µs).
    pub gap: i64,
    /// Tenants' time zones (others: UTC).
    pub zones: HashMap<String, Zone>,
    /// Users listed per tenant (most sessions first); 0: all.
    pub list: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            tenant: None,
            user: None,
            from: None,
            to: None,
            gap: 30 * MICROS_PER_MINUTE,
            zones: HashMap::new(),
            list: 10,
        }
    }
}

/// One session.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Session {
    /// First instant (UTC µs).
    pub start: i64,
    /// Last instant.
    pub end: i64,
}

/// Sessions of one user.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserSessions {
    /// The user.
    pub user_id: String,
    /// Sessions started in the range.
    pub sessions: u64,
    /// `sessions` over the range's days.
    pub sessions_per_day: f64,
    /// Median duration, seconds.
    pub median_duration_s: f64,
    /// 95th percentile duration, seconds.
    pub p95_duration_s: f64,
    /// Total time in sessions, seconds.
    pub total_duration_s: f64,
}

/// Sessions started on one local day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DaySessions {
    /// The tenant's local date.
    pub date: String,
    /// Sessions started that day.
    pub sessions: u64,
    /// Distinct users who started one.
    pub users: u64,
}

/// Sessions of one tenant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantSessions {
    /// The tenant.
    pub tenant_id: String,
    /// Range start (RFC 3339).
    pub from: String,
    /// Range end (exclusive).
    pub to: String,
    /// The inactivity gap, minutes.
    pub gap_minutes: f64,
    /// Local days in the range.
    pub days: u64,
    /// Sessions started in the range.
    pub sessions: u64,
    /// Of them, opened by an explicit start event.
    pub explicit_sessions: u64,
    /// Users with a session.
    pub active_users: u64,
    /// `sessions / days`.
    pub sessions_per_day: f64,
    /// `sessions / active_users`.
    pub sessions_per_active_user: f64,
    /// Median duration, seconds.
    pub median_duration_s: f64,
    /// 95th percentile duration, seconds.
    pub p95_duration_s: f64,
    /// Per local day with a session.
    pub daily: Vec<DaySessions>,
    /// Per user, most sessions first (up to `list`).
    pub users: Vec<UserSessions>,
}

/// Event kinds for sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Any other event.
    Activity,
    /// `session_start` / `login`.
    Start,
    /// `session_end` / `logout`.
    End,
}

/// Sessions of one user's events (sorted by time), with whether each was explicit.
pub fn split(events: &[(i64, Mark)], gap: i64) -> Vec<(Session, bool)> {
    let n = events.len();
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let (t0, m0) = events[i];
        if m0 == Mark::Start {
            // The next marker after this start.
            let mut j = i + 1;
            while j < n && events[j].1 == Mark::Activity {
                j += 1;
            }
            if j < n && events[j].1 == Mark::End {
                out.push((
                    Session {
                        start: t0,
                        end: events[j].0,
                    },
                    true,
                ));
                i = j + 1;
                continue;
            }
        }
        // By inactivity, from i: until a gap, an end marker (included) or a start.
        let explicit = m0 == Mark::Start;
        let mut last = t0;
        let mut k = i + 1;
        while k < n && events[k].1 != Mark::Start && events[k].0 - last <= gap {
            last = events[k].0;
            k += 1;
            if events[k - 1].1 == Mark::End {
                break;
            }
        }
        out.push((
            Session {
                start: t0,
                end: last,
            },
            explicit,
        ));
        i = k;
    }
    out
}

/// The `q` quantile (0..1) of sorted values, interpolated linearly.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn stats(mut d: Vec<f64>) -> (f64, f64, f64) {
    d.sort_by(f64::total_cmp);
    (quantile(&d, 0.5), quantile(&d, 0.95), d.iter().sum())
}

/// Sessions of every tenant (or one), sorted by tenant.
pub fn sessions(lake: &Lake, opts: &SessionOptions) -> Result<Vec<TenantSessions>> {
    if opts.gap <= 0 {
        return Err(Error::InvalidParameter {
            name: "session gap (--session-gap-minutes, gap_minutes)",
            reason: "must be positive".into(),
        });
    }
    let files = lake.data_files();
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let mut lf = crate::lake::scan_files(lake, &files)?.filter(col("user_id").is_not_null());
    if let Some(t) = &opts.tenant {
        lf = lf.filter(col("tenant_id").eq(lit(t.clone())));
    }
    if let Some(u) = &opts.user {
        lf = lf.filter(col("user_id").eq(lit(u.clone())));
    }
    let ts = || col("ts").cast(DataType::Int64);
    let to = match opts.to {
        Some(t) => t,
        None => {
            let m = lf.clone().select([ts().max()]).collect()?;
            match m.column("ts")?.i64()?.get(0) {
                Some(t) => t + 1,
                None => return Ok(Vec::new()),
            }
        }
    };
    let from = opts.from.unwrap_or(to - 30 * MICROS_PER_DAY);
    if from >= to {
        return Err(Error::InvalidParameter {
            name: "--from",
            reason: "must be before the range's end".into(),
        });
    }
    let df = lf
        .filter(
            ts().gt_eq(lit(from - MICROS_PER_DAY))
                .and(ts().lt(lit(to.saturating_add(MICROS_PER_DAY)))),
        )
        .select([
            col("tenant_id"),
            col("user_id"),
            ts().alias("t"),
            col("meter"),
        ])
        .collect()?;
    let (tn, us, tt, me) = (
        df.column("tenant_id")?.str()?,
        df.column("user_id")?.str()?,
        df.column("t")?.i64()?,
        df.column("meter")?.str()?,
    );
    let mark = |m: &str| {
        if START_METERS.contains(&m) {
            Mark::Start
        } else if END_METERS.contains(&m) {
            Mark::End
        } else {
            Mark::Activity
        }
    };
    // Each user's events, in the order read: grouped by hash rather than by sorting the
    // rows on two strings (which was most of the engagement report's time).
    let mut by_user: std::collections::HashMap<(&str, &str), Vec<(i64, Mark)>> =
        std::collections::HashMap::new();
    for (((t, u), at), m) in tn.iter().zip(us.iter()).zip(tt.iter()).zip(me.iter()) {
        by_user
            .entry((t.unwrap_or(""), u.unwrap_or("")))
            .or_default()
            .push((at.unwrap_or(0), mark(m.unwrap_or(""))));
    }
    // Per tenant, per user: the sessions started in range.
    let mut per: BTreeMap<String, BTreeMap<String, Vec<(Session, bool)>>> = BTreeMap::new();
    for ((t, u), mut evs) in by_user {
        // Stable: events at the same instant keep the order read, markers ordered start
        // before activity before end.
        evs.sort_by_key(|&(t, m)| {
            (
                t,
                match m {
                    Mark::Start => 0,
                    Mark::Activity => 1,
                    Mark::End => 2,
                },
            )
        });
        let kept: Vec<(Session, bool)> = split(&evs, opts.gap)
            .into_iter()
            .filter(|(s, _)| s.start >= from && s.start < to)
            .collect();
        if !kept.is_empty() {
            per.entry(t.to_string())
                .or_default()
                .insert(u.to_string(), kept);
        }
    }
    // The tenant asked for is answered even without a session (zeros, not nothing).
    if let Some(t) = &opts.tenant {
        per.entry(t.clone()).or_default();
    }
    let mut out = Vec::new();
    for (tenant, users) in per {
        let zone = opts.zones.get(&tenant).copied().unwrap_or(Zone::UTC);
        let days = {
            let (a, b) = (zone.local_date(from), zone.local_date(to - 1));
            ((b - a).num_days() + 1).max(1) as u64
        };
        let mut daily: BTreeMap<chrono::NaiveDate, (u64, std::collections::BTreeSet<&str>)> =
            BTreeMap::new();
        let mut all = Vec::new();
        let mut explicit = 0;
        let mut rows = Vec::new();
        for (user, ss) in &users {
            let durations: Vec<f64> = ss
                .iter()
                .map(|(s, _)| (s.end - s.start) as f64 / 1e6)
                .collect();
            for (s, e) in ss {
                let d = daily.entry(zone.local_date(s.start)).or_default();
                d.0 += 1;
                d.1.insert(user.as_str());
                explicit += u64::from(*e);
            }
            all.extend_from_slice(&durations);
            let (median, p95, total) = stats(durations);
            rows.push(UserSessions {
                user_id: user.clone(),
                sessions: ss.len() as u64,
                sessions_per_day: ss.len() as f64 / days as f64,
                median_duration_s: median,
                p95_duration_s: p95,
                total_duration_s: total,
            });
        }
        rows.sort_by(|a, b| b.sessions.cmp(&a.sessions).then(a.user_id.cmp(&b.user_id)));
        if opts.list > 0 {
            rows.truncate(opts.list);
        }
        let count = all.len() as u64;
        let (median, p95, _) = stats(all);
        out.push(TenantSessions {
            tenant_id: tenant,
            from: rfc3339(from),
            to: rfc3339(to),
            gap_minutes: opts.gap as f64 / MICROS_PER_MINUTE as f64,
            days,
            sessions: count,
            explicit_sessions: explicit,
            active_users: users.len() as u64,
            sessions_per_day: count as f64 / days as f64,
            sessions_per_active_user: count as f64 / users.len().max(1) as f64,
            median_duration_s: median,
            p95_duration_s: p95,
            daily: daily
                .into_iter()
                .map(|(d, (s, u))| DaySessions {
                    date: d.to_string(),
                    sessions: s,
                    users: u.len() as u64,
                })
                .collect(),
            users: rows,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Mark::*;

    const M: i64 = MICROS_PER_MINUTE;

    #[test]
    fn inactivity_splits_and_markers_bound() {
        // 0, 10, 35 min: one session (gaps ≤ 30); 70 min: a new one (gap 35).
        let e = [
            (0, Activity),
            (10 * M, Activity),
            (35 * M, Activity),
            (70 * M, Activity),
        ];
        let s = split(&e, 30 * M);
        assert_eq!(
            s,
            vec![
                (
                    Session {
                        start: 0,
                        end: 35 * M
                    },
                    false
                ),
                (
                    Session {
                        start: 70 * M,
                        end: 70 * M
                    },
                    false
                )
            ]
        );
        // An explicit start and end hold a 2 h idle stretch together.
        let e = [
            (0, Start),
            (5 * M, Activity),
            (125 * M, Activity),
            (130 * M, End),
        ];
        assert_eq!(
            split(&e, 30 * M),
            vec![(
                Session {
                    start: 0,
                    end: 130 * M
                },
                true
            )]
        );
        // A start whose end never comes falls back to inactivity.
        let e = [(0, Start), (5 * M, Activity), (125 * M, Activity)];
        assert_eq!(
            split(&e, 30 * M),
            vec![
                (
                    Session {
                        start: 0,
                        end: 5 * M
                    },
                    true
                ),
                (
                    Session {
                        start: 125 * M,
                        end: 125 * M
                    },
                    false
                )
            ]
        );
        // A logout within the gap ends an implicit session; the next event opens another.
        let e = [(0, Activity), (5 * M, End), (6 * M, Activity)];
        assert_eq!(
            split(&e, 30 * M),
            vec![
                (
                    Session {
                        start: 0,
                        end: 5 * M
                    },
                    false
                ),
                (
                    Session {
                        start: 6 * M,
                        end: 6 * M
                    },
                    false
                )
            ]
        );
        // A login while a session is open starts a new one.
        let e = [(0, Activity), (5 * M, Start), (9 * M, End)];
        assert_eq!(
            split(&e, 30 * M),
            vec![
                (Session { start: 0, end: 0 }, false),
                (
                    Session {
                        start: 5 * M,
                        end: 9 * M
                    },
                    true
                )
            ]
        );
    }

    #[test]
    fn quantiles_interpolate_like_duckdb() {
        // duckdb: select quantile_cont(x, 0.95) from (values (1),(2),(3),(10)) t(x) → 8.95
        assert!((quantile(&[1.0, 2.0, 3.0, 10.0], 0.95) - 8.95).abs() < 1e-12);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 10.0], 0.5), 2.5);
    }
}
