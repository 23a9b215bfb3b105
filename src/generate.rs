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

use std::collections::BTreeMap;
use std::io::Write;

use chrono::NaiveDate;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Poisson};
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::event::{MICROS_PER_DAY, day_of_date};

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

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tier {
    Free,
    Basic,
    Pro,
    Enterprise,
}

impl Tier {
    fn name(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Basic => "basic",
            Tier::Pro => "professional",
            Tier::Enterprise => "enterprise",
        }
    }
    /// Mean daily volumes: (api calls, documents, ai requests, ingests, users range).
    fn volumes(self) -> (f64, f64, f64, f64, (u32, u32)) {
        match self {
            Tier::Free => (25.0, 3.0, 2.0, 2.0, (1, 3)),
            Tier::Basic => (220.0, 14.0, 18.0, 10.0, (3, 10)),
            Tier::Pro => (1_300.0, 75.0, 90.0, 40.0, (10, 40)),
            Tier::Enterprise => (6_500.0, 320.0, 420.0, 160.0, (40, 160)),
        }
    }
}

const ZONES: [(&str, i64); 12] = [
    ("UTC", 0),
    ("America/Bogota", -300),
    ("America/Phoenix", -420),
    ("America/Sao_Paulo", -180),
    ("Africa/Lagos", 60),
    ("Africa/Johannesburg", 120),
    ("Europe/Istanbul", 180),
    ("Asia/Karachi", 300),
    ("Asia/Kolkata", 330),
    ("Asia/Singapore", 480),
    ("Asia/Tokyo", 540),
    ("Australia/Brisbane", 600),
];

const NAMES: [&str; 24] = [
    "acme",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "stark",
    "wayne",
    "wonka",
    "tyrell",
    "cyberdyne",
    "soylent",
    "oscorp",
    "vandelay",
    "dunder",
    "pied",
    "aperture",
    "gringotts",
    "monarch",
    "nakatomi",
    "octan",
    "prestige",
    "rekall",
    "sirius",
    "zorg",
];
const ENDPOINTS: [(&str, &str, f64); 8] = [
    ("/v1/documents", "GET", 0.30),
    ("/v1/documents", "POST", 0.12),
    ("/v1/search", "GET", 0.20),
    ("/v1/users", "GET", 0.08),
    ("/v1/ai/complete", "POST", 0.10),
    ("/v1/exports", "POST", 0.05),
    ("/v1/webhooks", "POST", 0.10),
    ("/v1/auth/token", "POST", 0.05),
];
const FILE_TYPES: [&str; 5] = ["pdf", "docx", "xlsx", "png", "csv"];
const FEATURES: [&str; 5] = ["upload", "ocr", "summarize", "translate", "extract"];
const MODELS: [&str; 3] = ["gpt-4o-mini", "claude-haiku", "llama-3-70b"];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Spike,
    NightBurst,
    Bot,
    Drop,
    Leak,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Spike => "spike",
            Kind::NightBurst => "night_burst",
            Kind::Bot => "bot",
            Kind::Drop => "drop",
            Kind::Leak => "leak",
        }
    }
}

#[derive(Debug, Clone)]
struct Anomaly {
    kind: Kind,
    /// Hour index range [start, end) since the first hour.
    start: i64,
    end: i64,
    factor: f64,
}

struct TenantGen {
    id: String,
    tier: Tier,
    tz_min: i64,
    users: u32,
    /// Daily multiplicative trend (e.g. 1.01 = +1 %/day).
    trend: f64,
    uses_ai: bool,
    level: f64,
    storage: f64,
    anomalies: Vec<Anomaly>,
    rng: ChaCha8Rng,
    next_id: u64,
    /// `{seed:x}-{tenant number}`: the stable part of this tenant's event ids.
    id_prefix: String,
}

/// A line waiting for a later hour (late events and retries), in generation order.
struct Deferred {
    hour: i64,
    line: Vec<u8>,
}

/// Hourly shape of activity in local time (working hours peak, nights quiet).
fn diurnal(local_hour: i64) -> f64 {
    let h = local_hour as f64 + 0.5;
    0.12 + 1.9 * (-(h - 13.5).powi(2) / (2.0 * 3.2f64.powi(2))).exp()
}

fn weekly(local_dow: i64) -> f64 {
    if local_dow >= 5 { 0.35 } else { 1.0 }
}

/// Mean of diurnal × weekly over a week, so tier volumes are daily means.
fn shape_norm() -> f64 {
    let mut s = 0.0;
    for d in 0..7 {
        for h in 0..24 {
            s += diurnal(h) * weekly(d);
        }
    }
    s / (7.0 * 24.0)
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

fn make_tenants(cfg: &GenConfig) -> Vec<TenantGen> {
    let hours = cfg.days as i64 * 24;
    (0..cfg.tenants)
        .map(|i| {
            let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
            rng.set_stream(i as u64 + 1);
            // The first four tenants cover every tier; the rest follow a realistic mix.
            let tier = match i {
                0 => Tier::Enterprise,
                1 => Tier::Pro,
                2 => Tier::Basic,
                3 => Tier::Free,
                _ => match rng.random::<f64>() {
                    x if x < 0.45 => Tier::Free,
                    x if x < 0.75 => Tier::Basic,
                    x if x < 0.93 => Tier::Pro,
                    _ => Tier::Enterprise,
                },
            };
            let zone = ZONES[rng.random_range(0..ZONES.len())];
            let trend = match rng.random::<f64>() {
                x if x < 0.15 => 1.0 - rng.random_range(0.005..0.02), // declining: churn risk
                x if x < 0.45 => 1.0 + rng.random_range(0.005..0.025), // growing fast
                _ => 1.0 + rng.random_range(-0.002..0.004),
            };
            let mut anomalies = Vec::new();
            // Roughly a third of tenants carry one anomaly; the first five one of each kind.
            let kind = if (4..9).contains(&i) {
                Some(
                    [
                        Kind::Spike,
                        Kind::NightBurst,
                        Kind::Bot,
                        Kind::Drop,
                        Kind::Leak,
                    ][i - 4],
                )
            } else if i >= 9 && rng.random::<f64>() < 0.33 {
                Some(
                    [
                        Kind::Spike,
                        Kind::NightBurst,
                        Kind::Bot,
                        Kind::Drop,
                        Kind::Leak,
                    ][rng.random_range(0..5)],
                )
            } else {
                None
            };
            // A drop needs traffic to drop from: a free tenant with one is a basic one.
            let tier = if kind == Some(Kind::Drop) && tier == Tier::Free {
                Tier::Basic
            } else {
                tier
            };
            if let Some(kind) = kind
                && hours >= 96
            {
                // Not in the first week (detectors need history) when there is room.
                let lo = if hours > 24 * 10 { 24 * 7 } else { 24 };
                let start = rng.random_range(lo..hours - 48);
                let (len, factor) = match kind {
                    Kind::Spike => (rng.random_range(1..4), rng.random_range(8.0..15.0)),
                    Kind::NightBurst => (2, rng.random_range(20.0..40.0)),
                    Kind::Bot => (rng.random_range(6..24), 0.0),
                    Kind::Drop => (rng.random_range(6..48), 0.02),
                    Kind::Leak => (rng.random_range(72..120).min(hours - start), 0.02),
                };
                let start = if kind == Kind::NightBurst {
                    // 02:00 local time on that day.
                    let day_start = (start / 24) * 24;
                    let local_two = 2 - zone.1.div_euclid(60);
                    (day_start + local_two.rem_euclid(24)).min(hours - 2)
                } else {
                    start
                };
                anomalies.push(Anomaly {
                    kind,
                    start,
                    end: (start + len).min(hours),
                    factor,
                });
            }
            let name = NAMES[i % NAMES.len()];
            TenantGen {
                id: format!("{name}-{:03}", i + 1),
                tier,
                tz_min: zone.1,
                users: {
                    let (lo, hi) = tier.volumes().4;
                    rng.random_range(lo..=hi)
                },
                trend,
                uses_ai: tier == Tier::Enterprise || rng.random::<f64>() < 0.6,
                level: rng.random_range(0.6..1.4),
                storage: rng.random_range(0.5e9..5e9) * (1.0 + tier as u8 as f64 * 3.0),
                anomalies,
                rng,
                next_id: 0,
                id_prefix: format!("{:x}-{}", cfg.seed, i + 1),
            }
        })
        .collect()
}

/// Fast RFC 3339 (`YYYY-MM-DDTHH:MM:SS.ffffffZ`) of µs since the epoch, digit by digit
/// (chrono's formatter was a third of the generator's time).
fn push_ts(out: &mut Vec<u8>, ts: i64) {
    fn digits(out: &mut Vec<u8>, v: i64, n: usize) {
        let start = out.len();
        out.resize(start + n, b'0');
        let mut v = v;
        for i in (0..n).rev() {
            out[start + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    let days = ts.div_euclid(MICROS_PER_DAY);
    let rem = ts.rem_euclid(MICROS_PER_DAY);
    // Civil from days (Howard Hinnant), proleptic Gregorian.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    digits(out, y, 4);
    out.push(b'-');
    digits(out, m, 2);
    out.push(b'-');
    digits(out, d, 2);
    out.push(b'T');
    digits(out, rem / 3_600_000_000, 2);
    out.push(b':');
    digits(out, rem / 60_000_000 % 60, 2);
    out.push(b':');
    digits(out, rem / 1_000_000 % 60, 2);
    out.push(b'.');
    digits(out, rem % 1_000_000, 6);
    out.push(b'Z');
}

fn push_num(out: &mut Vec<u8>, v: f64) {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        out.extend_from_slice(itoa::Buffer::new().format(v as i64).as_bytes());
    } else {
        out.extend_from_slice(ryu::Buffer::new().format(v).as_bytes());
    }
}

/// One event's fields before rendering.
struct Ev<'a> {
    ts: i64,
    user: Option<u32>,
    meter: &'a str,
    value: f64,
    props: &'a [(&'a str, PropV<'a>)],
}

impl<'a> Ev<'a> {
    fn new(
        ts: i64,
        user: Option<u32>,
        meter: &'a str,
        value: f64,
        props: &'a [(&'a str, PropV<'a>)],
    ) -> Self {
        Ev {
            ts,
            user,
            meter,
            value,
            props,
        }
    }
}

enum PropV<'a> {
    S(&'a str),
    N(f64),
}

/// Per-hour output of one tenant.
#[derive(Default)]
struct HourOut {
    lines: Vec<u8>,
    deferred: Vec<Deferred>,
    stats: GenSummary,
}

impl TenantGen {
    fn render(&mut self, e: &Ev<'_>, out: &mut Vec<u8>) {
        self.next_id += 1;
        // Ids carry the seed, so two data sets generated with different seeds never collide.
        out.extend_from_slice(b"{\"id\":\"evt-");
        out.extend_from_slice(self.id_prefix.as_bytes());
        out.push(b'-');
        out.extend_from_slice(itoa::Buffer::new().format(self.next_id).as_bytes());
        out.extend_from_slice(b"\",\"ts\":\"");
        push_ts(out, e.ts);
        out.extend_from_slice(b"\",\"tenant_id\":\"");
        out.extend_from_slice(self.id.as_bytes());
        if let Some(u) = e.user {
            out.extend_from_slice(b"\",\"user_id\":\"u-");
            out.extend_from_slice(itoa::Buffer::new().format(u).as_bytes());
        }
        out.extend_from_slice(b"\",\"meter\":\"");
        out.extend_from_slice(e.meter.as_bytes());
        out.extend_from_slice(b"\",\"value\":");
        push_num(out, e.value);
        out.extend_from_slice(b",\"properties\":{");
        for (i, (k, v)) in e.props.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b"\":");
            match v {
                PropV::S(s) => {
                    out.push(b'"');
                    out.extend_from_slice(s.as_bytes());
                    out.push(b'"');
                }
                PropV::N(n) => push_num(out, *n),
            }
        }
        out.extend_from_slice(b"}}\n");
    }

    /// Writes one event, possibly late, duplicated or malformed. The line is rendered in
    /// place at the end of the hour's output and moved out only when it is deferred.
    fn emit(&mut self, cfg: &GenConfig, hour: i64, e: &Ev<'_>, o: &mut HourOut) {
        let start = o.lines.len();
        self.render(e, &mut o.lines);
        let r: f64 = self.rng.random();
        if r < cfg.bad_rate {
            o.stats.malformed += 1;
            let bad = corrupt(&o.lines[start..], self.rng.random_range(0..6));
            o.lines.truncate(start);
            o.lines.extend_from_slice(&bad);
            return;
        }
        o.stats.events += 1;
        match o
            .stats
            .value_sums
            .iter_mut()
            .find(|(k, _)| k.as_str() == e.meter)
        {
            Some((_, v)) => *v += e.value,
            None => {
                o.stats.value_sums.insert(e.meter.to_string(), e.value);
            }
        }
        if r < cfg.bad_rate + cfg.dup_rate {
            o.stats.duplicates += 1;
            let later = hour + self.rng.random_range(0..2);
            o.deferred.push(Deferred {
                hour: later,
                line: o.lines[start..].to_vec(),
            });
        }
        if self.rng.random::<f64>() < cfg.late_rate {
            o.stats.late += 1;
            let later = hour + self.rng.random_range(1..=72);
            o.deferred.push(Deferred {
                hour: later,
                line: o.lines[start..].to_vec(),
            });
            o.lines.truncate(start);
        }
    }

    fn anomaly_at(&self, hour: i64) -> Option<&Anomaly> {
        self.anomalies
            .iter()
            .find(|a| a.start <= hour && hour < a.end)
    }

    fn pick_user(&mut self) -> u32 {
        // Skewed: a few power users do most of the work.
        let u: f64 = self.rng.random();
        1 + ((u * u) * self.users as f64) as u32
    }

    fn hour(&mut self, cfg: &GenConfig, hour: i64, t0: i64, norm: f64) -> HourOut {
        let mut o = HourOut::default();
        let hour_ts = t0 + hour * MICROS_PER_HOUR;
        let local = hour_ts.div_euclid(60_000_000) + self.tz_min; // local minutes
        let local_hour = (local.div_euclid(60)).rem_euclid(24);
        let local_dow = (local.div_euclid(60 * 24) + 3).rem_euclid(7); // 1970-01-01 was a Thursday
        let day = hour / 24;
        let trend = self.trend.powi(day as i32);
        let a =
            self.level * trend * diurnal(local_hour) * weekly(local_dow) / norm / 24.0 * cfg.scale;
        let (calls, docs, ai, ingests, _) = self.tier.volumes();
        let anomaly = self.anomaly_at(hour).cloned();
        let mut call_rate = calls * a;
        match &anomaly {
            // Floors keep spikes and bursts of small tenants well above noise.
            Some(an) if an.kind == Kind::Spike => {
                call_rate = (call_rate * an.factor).max(100.0 * cfg.scale)
            }
            Some(an) if an.kind == Kind::Drop => call_rate *= an.factor,
            Some(an) if an.kind == Kind::NightBurst => {
                call_rate = (call_rate * an.factor).max(150.0 * cfg.scale)
            }
            _ => {}
        }
        let lat = LogNormal::new(80f64.ln(), 0.6).expect("valid");
        // api_calls
        let n = poisson(&mut self.rng, call_rate);
        let mut times = self.times(hour_ts, n);
        let burst_user = self.users + 1; // a user id no one else has: the burst's culprit
        for ts in times.drain(..) {
            let user = if anomaly.as_ref().is_some_and(|a| a.kind == Kind::NightBurst)
                && self.rng.random::<f64>() < 0.9
            {
                burst_user
            } else {
                self.pick_user()
            };
            let (ep, method) = weighted_endpoint(self.rng.random());
            let status = match self.rng.random::<f64>() {
                x if x < 0.93 => 200.0,
                x if x < 0.96 => 201.0,
                x if x < 0.975 => 400.0,
                x if x < 0.985 => 404.0,
                x if x < 0.993 => 429.0,
                _ => 500.0,
            };
            let rt = (lat.sample(&mut self.rng) * 10.0).round() / 10.0;
            let props = [
                ("endpoint", PropV::S(ep)),
                ("method", PropV::S(method)),
                ("response_time_ms", PropV::N(rt)),
                ("status_code", PropV::N(status)),
            ];
            self.emit(
                cfg,
                hour,
                &Ev::new(ts, Some(user), "api_calls", 1.0, &props),
                &mut o,
            );
        }
        // Bot: one user, one endpoint, a call every 4 seconds exactly, near-constant latency.
        if let Some(an) = anomaly.as_ref().filter(|a| a.kind == Kind::Bot) {
            let bot_user = self.users + 2;
            let offset = (an.start * 7919) % 4_000_000;
            for k in 0..900 {
                let ts = hour_ts + offset + k * 4_000_000;
                let rt = 50.0 + (self.rng.random::<f64>() * 2.0).round() / 10.0;
                let props = [
                    ("endpoint", PropV::S("/v1/search")),
                    ("method", PropV::S("GET")),
                    ("response_time_ms", PropV::N(rt)),
                    ("status_code", PropV::N(200.0)),
                ];
                self.emit(
                    cfg,
                    hour,
                    &Ev::new(ts, Some(bot_user), "api_calls", 1.0, &props),
                    &mut o,
                );
            }
        }
        // documents
        let n = poisson(&mut self.rng, docs * a);
        for ts in self.times(hour_ts, n) {
            let user = self.pick_user();
            let ft = FILE_TYPES[self.rng.random_range(0..FILE_TYPES.len())];
            let feat =
                FEATURES[(self.rng.random::<f64>().powi(2) * FEATURES.len() as f64) as usize];
            let pages = 1.0 + (self.rng.random::<f64>().powi(3) * 60.0).floor();
            let props = [
                ("feature", PropV::S(feat)),
                ("file_type", PropV::S(ft)),
                ("pages", PropV::N(pages)),
            ];
            self.emit(
                cfg,
                hour,
                &Ev::new(ts, Some(user), "documents", 1.0, &props),
                &mut o,
            );
        }
        // ai_tokens
        if self.uses_ai {
            let n = poisson(&mut self.rng, ai * a);
            let tok = LogNormal::new(700f64.ln(), 0.8).expect("valid");
            for ts in self.times(hour_ts, n) {
                let user = self.pick_user();
                let model =
                    MODELS[(self.rng.random::<f64>().powi(2) * MODELS.len() as f64) as usize];
                let tokens = tok.sample(&mut self.rng).round().max(1.0);
                let props = [
                    ("feature", PropV::S("assistant")),
                    ("model", PropV::S(model)),
                ];
                self.emit(
                    cfg,
                    hour,
                    &Ev::new(ts, Some(user), "ai_tokens", tokens, &props),
                    &mut o,
                );
            }
        }
        // ingest_bytes (and storage grows with it)
        let n = poisson(&mut self.rng, ingests * a);
        let size = LogNormal::new(250_000f64.ln(), 1.0).expect("valid");
        let mut ingested = 0.0;
        for ts in self.times(hour_ts, n) {
            let user = self.pick_user();
            let bytes = size.sample(&mut self.rng).round().max(1.0);
            ingested += bytes;
            let props = [(
                "source",
                PropV::S(if self.rng.random::<f64>() < 0.7 {
                    "api"
                } else {
                    "upload"
                }),
            )];
            self.emit(
                cfg,
                hour,
                &Ev::new(ts, Some(user), "ingest_bytes", bytes, &props),
                &mut o,
            );
        }
        // active_users: logins
        let n = poisson(
            &mut self.rng,
            (self.users as f64 * 0.8 * a * 24.0 / 8.0).min(self.users as f64 * 2.0),
        );
        for ts in self.times(hour_ts, n) {
            let user = self.pick_user();
            let props = [("feature", PropV::S("login"))];
            self.emit(
                cfg,
                hour,
                &Ev::new(ts, Some(user), "active_users", 1.0, &props),
                &mut o,
            );
        }
        // storage_bytes: a gauge reading at minute 0 of every hour
        self.storage = self.storage * 0.9995 + ingested * 0.8;
        if let Some(an) = anomaly.as_ref().filter(|a| a.kind == Kind::Leak) {
            self.storage *= 1.0 + an.factor;
        }
        let reading = self.storage.round();
        self.emit(
            cfg,
            hour,
            &Ev::new(hour_ts, None, "storage_bytes", reading, &[]),
            &mut o,
        );
        o
    }

    /// `n` sorted instants uniformly inside the hour.
    fn times(&mut self, hour_ts: i64, n: u64) -> Vec<i64> {
        let mut t: Vec<i64> = (0..n)
            .map(|_| hour_ts + self.rng.random_range(0..MICROS_PER_HOUR))
            .collect();
        t.sort_unstable();
        t
    }
}

fn poisson(rng: &mut ChaCha8Rng, lambda: f64) -> u64 {
    if lambda <= 0.0 {
        return 0;
    }
    Poisson::new(lambda)
        .map(|p| p.sample(rng) as u64)
        .unwrap_or(0)
}

fn weighted_endpoint(u: f64) -> (&'static str, &'static str) {
    let mut acc = 0.0;
    for (ep, m, w) in ENDPOINTS {
        acc += w;
        if u < acc {
            return (ep, m);
        }
    }
    (ENDPOINTS[0].0, ENDPOINTS[0].1)
}

/// Breaks a valid line in one of the ways real pipelines do.
fn corrupt(line: &[u8], how: u32) -> Vec<u8> {
    let s = String::from_utf8_lossy(line);
    let s = s.trim_end();
    let out = match how {
        0 => s[..s.len() / 2].to_string(), // truncated write
        1 => s.replacen("\"tenant_id\"", "\"tenant\"", 1), // missing tenant_id
        2 => s.replacen("\"value\":", "\"value\":-", 1), // negative value
        3 => s.replacen("\"ts\":\"", "\"ts\":\"not-a-time ", 1), // bad timestamp
        4 => s.replacen("\"id\":\"evt-", "\"id\":\"evt/", 1), // path separator in id
        _ => s.replacen("\"meter\":\"", "\"meter\":\"\",\"x\":\"", 1), // empty meter
    };
    let mut v = out.into_bytes();
    v.push(b'\n');
    v
}

/// Generates `cfg` into `out` (NDJSON); returns the ground truth, the labels and the tenants.
pub fn generate(
    cfg: &GenConfig,
    out: &mut dyn Write,
) -> Result<(GenSummary, Vec<Label>, Vec<TenantInfo>)> {
    cfg.validate()?;
    let io = |e: std::io::Error| Error::io("<output>", e);
    let mut tenants = make_tenants(cfg);
    let t0 = day_of_date(cfg.start) as i64 * MICROS_PER_DAY;
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
    let mut labels = Vec::new();
    for t in &tenants {
        for a in &t.anomalies {
            let meter = if a.kind == Kind::Leak {
                "storage_bytes"
            } else {
                "api_calls"
            };
            labels.push(Label {
                tenant_id: t.id.clone(),
                meter: meter.into(),
                start: crate::event::ts_to_rfc3339(t0 + a.start * MICROS_PER_HOUR),
                end: crate::event::ts_to_rfc3339(t0 + a.end * MICROS_PER_HOUR),
                kind: a.kind.name().into(),
            });
        }
    }
    total.anomalies = labels.len() as u64;
    let infos = tenants
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
        .collect();
    Ok((total, labels, infos))
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
    fn timestamps_render_like_chrono() {
        for ts in [
            0i64,
            1,
            86_399_999_999,
            951_782_400_000_000,
            1_790_000_123_456_789,
            4_102_444_799_999_999,
        ] {
            let mut out = Vec::new();
            push_ts(&mut out, ts);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                crate::event::ts_to_rfc3339(ts),
                "{ts}"
            );
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
