//! `generate`: realistic synthetic SaaS usage, with labelled anomalies, for demos, tests
//! and benchmarks.
//!
//! Tenants of four sizes (free, basic, professional, enterprise) with their own users, time
//! zone, growth or decline, and daily and weekly seasonality in local time. Meters:
//! `api_calls` (one event per call, with endpoint, method, status and latency),
//! `documents`, `ai_tokens`, `ingest_bytes`, `active_users` (logins) and the gauge
//! `storage_bytes` (one reading per hour). Some tenants carry injected anomalies (spike,
//! night burst, bot traffic, drop, storage leak), listed in the labels file. A share of
//! events arrives late, some are sent twice, some are malformed, as in real pipelines.
//!
//! Every tenant has its own seeded RNG stream, so the output is the same bytes for the
//! same seed whatever the thread count. Tenants are generated in parallel hour by hour;
//! memory stays bounded by one hour of output plus the late-event queue.
//!
//! ```text
//! generate/
//!   mod.rs       GenConfig, GenSummary, Label, TenantInfo; `generate`: the hour loop that
//!                writes each hour's lines, then the late ones that fell due
//!   tenants.rs   the tenant population (tier, zone, trend, anomaly) and activity shape
//!   meters.rs    what one tenant emits in one hour, meter by meter
//!   delivery.rs  on time, late, twice or malformed: how an event reaches the output
//!   render.rs    one event as an NDJSON line, byte by byte
//! ```

use std::collections::BTreeMap;
use std::io::Write;

use chrono::NaiveDate;
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::time::MICROS_PER_DAY;
use crate::time::day_of_date;

mod delivery;
mod meters;
mod render;
mod tenants;

use delivery::HourOut;
use tenants::{AnomalyKind, TenantGen, ZONES, make_tenants, shape_norm};

/// Default share of events that arrive 1 to 72 hours late.
pub const DEFAULT_LATE_RATE: f64 = 0.02;
/// Default share of events sent twice.
pub const DEFAULT_DUP_RATE: f64 = 0.01;
/// Default share of records that are malformed.
pub const DEFAULT_BAD_RATE: f64 = 0.003;

const MICROS_PER_HOUR: i64 = 3_600_000_000;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenConfig {
    /// Number of tenants.
    pub tenants: usize,
    /// Days of history.
    pub days: u32,
    /// First day (UTC).
    pub start: NaiveDate,
    /// RNG seed.
    pub seed: u64,
    /// Multiplies every tenant's volume.
    pub scale: f64,
    /// Share of late events.
    pub late_rate: f64,
    /// Share of duplicated events.
    pub dup_rate: f64,
    /// Share of malformed records.
    pub bad_rate: f64,
}

/// What was generated: the ground truth an ingest of the file must reproduce.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct GenSummary {
    /// Lines written.
    pub lines: u64,
    /// Distinct valid events (what an ingest must accept).
    pub events: u64,
    /// Extra copies of valid events (what an ingest must count as duplicates).
    pub duplicates: u64,
    /// Malformed records (what an ingest must reject).
    pub malformed: u64,
    /// Valid events written after later ones (out of order).
    pub late: u64,
    /// Sum of `value` over distinct valid events, per meter.
    pub value_sums: BTreeMap<String, f64>,
    /// Injected anomalies.
    pub anomalies: u64,
}

/// One injected anomaly (the labels file's rows).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Label {
    /// Tenant.
    pub tenant_id: String,
    /// Meter affected.
    pub meter: String,
    /// Start (RFC 3339, inclusive).
    pub start: String,
    /// End (RFC 3339, exclusive).
    pub end: String,
    /// `spike`, `night_burst`, `bot`, `drop` or `leak`.
    pub kind: String,
}

/// A tenant as generated (for plans and time zones downstream).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TenantInfo {
    /// Tenant id.
    pub tenant_id: String,
    /// Plan its volume is typical of: `free`, `basic`, `professional`, `enterprise`.
    pub plan: String,
    /// IANA time zone (one without daylight saving, so local hours are a fixed offset).
    pub time_zone: String,
}

impl GenConfig {
    /// Checks every parameter, naming the one out of range.
    pub fn validate(&self) -> Result<()> {
        let bad = |name, reason: &str| {
            Err(Error::InvalidParameter {
                name,
                reason: reason.into(),
            })
        };
        if self.tenants == 0 || self.tenants > 1_000_000 {
            return bad("--tenants", "must be between 1 and 1000000");
        }
        if self.days == 0 || self.days > 3_660 {
            return bad("--days", "must be between 1 and 3660");
        }
        if !(self.scale > 0.0 && self.scale.is_finite()) {
            return bad("--scale", "must be a positive number");
        }
        for (name, r) in [
            ("--late-rate", self.late_rate),
            ("--dup-rate", self.dup_rate),
            ("--bad-rate", self.bad_rate),
        ] {
            if !(0.0..=0.5).contains(&r) {
                return bad(name, "must be between 0 and 0.5");
            }
        }
        Ok(())
    }
}

/// Generates `cfg` into `out` (NDJSON); returns the ground truth, the labels and the tenants.
pub fn generate(
    cfg: &GenConfig,
    out: &mut dyn Write,
) -> Result<(GenSummary, Vec<Label>, Vec<TenantInfo>)> {
    cfg.validate()?;
    let mut tenants = make_tenants(cfg);
    let t0 = day_of_date(cfg.start) as i64 * MICROS_PER_DAY;
    let mut total = write_hours(cfg, &mut tenants, t0, out)?;
    let labels = labels(&tenants, t0);
    total.anomalies = labels.len() as u64;
    Ok((total, labels, tenant_infos(&tenants)))
}

/// Generates every hour, tenants in parallel, and writes each hour's lines in tenant
/// order, then the deferred lines due at the next hour, then those due after the last.
fn write_hours(
    cfg: &GenConfig,
    tenants: &mut [TenantGen],
    t0: i64,
    out: &mut dyn Write,
) -> Result<GenSummary> {
    let io = |e: std::io::Error| Error::io("<output>", e);
    let hours = cfg.days as i64 * 24;
    let norm = shape_norm();
    let mut total = GenSummary::default();
    let mut deferred: BTreeMap<i64, Vec<Vec<u8>>> = BTreeMap::new();
    for hour in 0..hours {
        let outs: Vec<HourOut> = tenants
            .par_iter_mut()
            .map(|t| t.hour(cfg, hour, t0, norm))
            .collect();
        for o in outs {
            out.write_all(&o.lines).map_err(io)?;
            total.lines += memchr::memchr_iter(b'\n', &o.lines).count() as u64;
            for d in o.deferred {
                deferred
                    .entry(d.hour.max(hour + 1))
                    .or_default()
                    .push(d.line);
            }
            merge(&mut total, &o.stats);
        }
        // Late events and retries due now, in the order they were produced.
        if let Some(due) = deferred.remove(&(hour + 1)) {
            for line in due {
                out.write_all(&line).map_err(io)?;
                total.lines += 1;
            }
        }
    }
    for (_, lines) in std::mem::take(&mut deferred) {
        for line in lines {
            out.write_all(&line).map_err(io)?;
            total.lines += 1;
        }
    }
    Ok(total)
}

/// The injected anomalies, tenant by tenant.
fn labels(tenants: &[TenantGen], t0: i64) -> Vec<Label> {
    let mut labels = Vec::new();
    for t in tenants {
        for a in &t.anomalies {
            let meter = if a.kind == AnomalyKind::Leak {
                "storage_bytes"
            } else {
                "api_calls"
            };
            labels.push(Label {
                tenant_id: t.id.clone(),
                meter: meter.into(),
                start: crate::time::rfc3339_micros(t0 + a.start * MICROS_PER_HOUR),
                end: crate::time::rfc3339_micros(t0 + a.end * MICROS_PER_HOUR),
                kind: a.kind.name().into(),
            });
        }
    }
    labels
}

fn tenant_infos(tenants: &[TenantGen]) -> Vec<TenantInfo> {
    tenants
        .iter()
        .map(|t| TenantInfo {
            tenant_id: t.id.clone(),
            plan: t.tier.name().into(),
            time_zone: ZONES
                .iter()
                .find(|z| z.1 == t.tz_min)
                .map(|z| z.0)
                .unwrap_or("UTC")
                .into(),
        })
        .collect()
}

fn merge(total: &mut GenSummary, s: &GenSummary) {
    total.events += s.events;
    total.duplicates += s.duplicates;
    total.malformed += s.malformed;
    total.late += s.late;
    for (k, v) in &s.value_sums {
        *total.value_sums.entry(k.clone()).or_default() += v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GenConfig {
        GenConfig {
            tenants: 6,
            days: 3,
            start: NaiveDate::from_ymd_opt(2026, 1, 5).unwrap(),
            seed: 7,
            scale: 0.2,
            late_rate: DEFAULT_LATE_RATE,
            dup_rate: DEFAULT_DUP_RATE,
            bad_rate: DEFAULT_BAD_RATE,
        }
    }

    #[test]
    fn same_seed_same_bytes_and_lines_add_up() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let (sa, _, _) = generate(&cfg(), &mut a).unwrap();
        let (sb, _, _) = generate(&cfg(), &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(sa, sb);
        assert_eq!(sa.lines, a.iter().filter(|&&c| c == b'\n').count() as u64);
        assert_eq!(sa.lines, sa.events + sa.duplicates + sa.malformed);
        let mut c = Vec::new();
        generate(&GenConfig { seed: 8, ..cfg() }, &mut c).unwrap();
        assert_ne!(a, c);
    }
}
