//! Usage for Stripe's meters: the lake's usage per tenant × meter × hour or day, as Stripe
//! meter events, written to a file (v2 meter-event-stream JSON or v1 form rows) or pushed to
//! the v1 endpoint with retries, recording what was sent so nothing is sent twice.
//!
//! **What is exported.** The hour or day rollup of each tenant × meter (the stored rollup
//! when it is current, else computed the same way) for the windows that start in
//! `[from, to)` and have ended by the clock (a window still filling would later need a
//! second value Stripe would drop as a duplicate). By default the additive meters (count,
//! sum, duration) are exported: their window values add up to the period, which is what a
//! Stripe meter with the `sum` formula does. A gauge or distinct count named with
//! `--meter` is exported too, as its window value, for a Stripe meter with the `last`
//! formula. Windows with a zero value are not sent. A tenant missing from the customers
//! file is left out, counted and named.
//!
//! **Whole numbers.** Stripe takes integer values. The rule: within each UTC calendar
//! month, the running total of a tenant × meter is rounded half away from zero, and each
//! window's value is the rounded running total minus the one before it. Every window is
//! then off by less than one unit, the month's exported total equals the rounded exact
//! total, and a window's value does not depend on the range exported.
//!
//! **Identifiers** are `mlk_` and a 128-bit hash of tenant, meter, granularity and window
//! start: the same window always gets the same identifier and value, whatever range is
//! exported. Stripe drops an identifier it has seen *within 24 hours*, so re-sending a file
//! within a day is harmless, but later it would bill again: `--push` keeps a ledger for
//! that. An hourly and a daily export of the same usage have different identifiers: send
//! one granularity per Stripe meter (a push refuses a tenant × meter its ledger holds at
//! the other one).
//!
//! **Push** (`--push URL`, v1 form fields, `Authorization: Bearer $STRIPE_API_KEY`):
//! - events outside Stripe's window (a timestamp older than 35 days, or more than 5 minutes
//!   ahead of the clock) are not sent; they are counted and named;
//! - 429 and 5xx answers are retried with exponential backoff (honouring `Retry-After`);
//!   another 4xx is a failure, recorded in the output and not retried in this run;
//! - every accepted event is appended (fsynced) to `LAKE/_exports/stripe/sent.ndjson`
//!   (window, identifier, value, time). A later push sends only what the ledger lacks, per
//!   tenant × meter × month ([`push`]): late data goes out as a correction event
//!   (`<identifier>_2`, `_3`, ...); usage that fell is reported, never sent (Stripe meter
//!   events cannot be negative). A crash between Stripe's answer and the ledger's append
//!   resends that one event with the same identifier, which Stripe drops within 24 hours.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::lake::Lake;
use crate::rollup::{Granularity, Meters, RollupSpec, current_series};
use crate::time::{MICROS_PER_DAY, MICROS_PER_MINUTE, rfc3339};

/// How far back Stripe accepts meter events.
pub const MAX_AGE: i64 = 35 * MICROS_PER_DAY;
/// How far ahead Stripe accepts meter events.
pub const MAX_AHEAD: i64 = 5 * MICROS_PER_MINUTE;
/// Events per v2 batch.
pub const BATCH: usize = 100;
/// The environment variable holding the Stripe API key for `--push`.
pub const KEY_ENV: &str = "STRIPE_API_KEY";

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportSpec {
    /// First window start (UTC µs, inclusive).
    pub from: i64,
    /// End (UTC µs, exclusive).
    pub to: i64,
    /// Hour or day.
    pub granularity: Granularity,
    /// Meters exported (empty: every additive meter).
    pub meters: Vec<String>,
    /// Stripe event names by meter (default: the meter's name).
    pub event_names: HashMap<String, String>,
    /// The clock: only windows ended by it are exported; Stripe's window is judged at it.
    pub at: i64,
}

/// One Stripe meter event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeterEvent {
    /// Deterministic identifier (Stripe's dedup key).
    pub identifier: String,
    /// The Stripe meter's event name.
    pub event_name: String,
    /// Window start (UTC µs).
    #[serde(skip)]
    pub timestamp: i64,
    /// The Stripe customer.
    pub stripe_customer_id: String,
    /// Whole units.
    pub value: i64,
    /// meterlake's tenant.
    pub tenant_id: String,
    /// meterlake's meter.
    pub meter: String,
    /// Whether the meter adds up over windows (a `sum` Stripe meter; else `last`).
    #[serde(skip)]
    pub additive: bool,
}

/// The export and what it left out.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Export {
    /// Events, by tenant, meter and window.
    #[serde(skip)]
    pub events: Vec<MeterEvent>,
    /// Their count.
    pub event_count: usize,
    /// Per meter: the exported total (whole units) and the exact total.
    pub totals: BTreeMap<String, MeterTotal>,
    /// Tenants with usage but no Stripe customer (left out).
    pub unmapped_tenants: Vec<String>,
    /// Meters not exported because they do not add up over windows (name them with
    /// `--meter` to export their window values for a `last` Stripe meter).
    pub skipped_meters: Vec<String>,
    /// Windows in range not yet ended by the clock (left out).
    pub incomplete_windows: usize,
    /// Events of the file outside Stripe's window at the clock (35 days back, 5 minutes
    /// ahead): `--push` would not send them.
    pub outside_push_window: usize,
}

/// A meter's totals.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MeterTotal {
    /// Stripe event name.
    pub event_name: String,
    /// Sum of the exported whole values.
    pub exported: i64,
    /// The exact sum of the window values.
    pub exact: f64,
}

/// Reads `tenant_id,stripe_customer_id` (a header row; errors name the file and line).
pub fn load_customers(path: &Path) -> Result<HashMap<String, String>> {
    let bad = |line: u64, reason: String| Error::BadInput {
        path: path.to_path_buf(),
        reason: format!("line {line}: {reason}"),
    };
    let (mut rdr, header) = super::plans::csv_table(path)?;
    let col = |n: &str| header.iter().position(|h| h == n);
    let (Some(ti), Some(ci)) = (col("tenant_id"), col("stripe_customer_id")) else {
        return Err(bad(
            1,
            "the header needs tenant_id and stripe_customer_id columns".into(),
        ));
    };
    let mut out = HashMap::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| bad(e.position().map_or(0, |p| p.line()), e.to_string()))?;
        let line = rec.position().map_or(0, |p| p.line());
        let (t, c) = (rec.get(ti).unwrap_or(""), rec.get(ci).unwrap_or(""));
        if t.is_empty() || c.is_empty() {
            return Err(bad(
                line,
                "tenant_id and stripe_customer_id must not be empty".into(),
            ));
        }
        if out.insert(t.to_string(), c.to_string()).is_some() {
            return Err(bad(line, format!("tenant `{t}` is listed twice")));
        }
    }
    Ok(out)
}

/// The identifier of a window's event.
pub fn identifier(tenant: &str, meter: &str, g: Granularity, window_start: i64) -> String {
    let key = format!(
        "{tenant}\u{1f}{meter}\u{1f}{}\u{1f}{window_start}",
        g.name()
    );
    format!("mlk_{:032x}", xxhash_rust::xxh3::xxh3_128(key.as_bytes()))
}

/// The UTC month start of an instant.
fn month_of(t: i64) -> (i32, u32) {
    use chrono::Datelike;
    let d = chrono::DateTime::from_timestamp_micros(t).unwrap_or_default();
    (d.year(), d.month())
}

/// Whole values of windows by the running-total rule (see the module docs): `values` in
/// time order with their window starts.
pub fn whole_values(ts: &[i64], values: &[f64]) -> Vec<i64> {
    let round = |d: Decimal| {
        d.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
            .to_i64()
            .unwrap_or(i64::MAX)
    };
    let mut out = Vec::with_capacity(values.len());
    let (mut month, mut total, mut sent) = ((0, 0), Decimal::ZERO, 0i64);
    for (&t, &v) in ts.iter().zip(values) {
        if month_of(t) != month {
            (month, total, sent) = (month_of(t), Decimal::ZERO, 0);
        }
        total += Decimal::from_f64(v).unwrap_or_default();
        let now = round(total);
        out.push(now - sent);
        sent = now;
    }
    out
}

/// Builds the export from the lake's rollups.
pub fn export(
    lake: &Lake,
    meters: &Meters,
    customers: &HashMap<String, String>,
    spec: &ExportSpec,
) -> Result<Export> {
    if !matches!(spec.granularity, Granularity::Hour | Granularity::Day) {
        return Err(Error::InvalidParameter {
            name: "--granularity",
            reason: "Stripe exports are hourly or daily".into(),
        });
    }
    let step = match spec.granularity {
        Granularity::Hour => crate::time::MICROS_PER_HOUR,
        _ => MICROS_PER_DAY,
    };
    for m in &spec.meters {
        if meters.get(m).is_none() {
            return Err(Error::InvalidParameter {
                name: "--meter",
                reason: format!(
                    "`{m}` is not a meter (meters: {})",
                    meters
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    }
    let series = current_series(lake, meters, &RollupSpec::new(spec.granularity))?;
    // A name for a meter that is not exported is a typo: its usage would go out under the
    // default name, to another Stripe meter or none.
    let exported: std::collections::BTreeSet<&str> = if spec.meters.is_empty() {
        meters
            .iter()
            .map(|d| d.name.as_str())
            .chain(series.iter().map(|s| s.meter.as_str()))
            .filter(|m| crate::rollup::aggregation_of(meters, m).additive())
            .collect()
    } else {
        spec.meters.iter().map(String::as_str).collect()
    };
    let mut named: Vec<&String> = spec.event_names.keys().collect();
    named.sort();
    if let Some(m) = named.into_iter().find(|m| !exported.contains(m.as_str())) {
        return Err(Error::InvalidParameter {
            name: "--event-name",
            reason: format!(
                "`{m}` is not an exported meter (exported: {})",
                exported.iter().copied().collect::<Vec<_>>().join(", ")
            ),
        });
    }
    let mut out = Export::default();
    let mut unmapped = std::collections::BTreeSet::new();
    let mut skipped = std::collections::BTreeSet::new();
    // Running totals start at the month of `from`.
    let month_start = {
        use chrono::{Datelike, NaiveDate};
        let d = chrono::DateTime::from_timestamp_micros(spec.from).unwrap_or_default();
        crate::time::date_start(NaiveDate::from_ymd_opt(d.year(), d.month(), 1).unwrap_or_default())
    };
    for s in &series {
        let additive = crate::rollup::aggregation_of(meters, &s.meter).additive();
        let chosen = if spec.meters.is_empty() {
            additive
        } else {
            spec.meters.contains(&s.meter)
        };
        if !chosen {
            if spec.meters.is_empty() {
                skipped.insert(s.meter.clone());
            }
            continue;
        }
        let keep: Vec<usize> = (0..s.ts.len())
            .filter(|&i| s.ts[i] >= month_start && s.ts[i] < spec.to)
            .collect();
        let ts: Vec<i64> = keep.iter().map(|&i| s.ts[i]).collect();
        let vals: Vec<f64> = keep.iter().map(|&i| s.values[i]).collect();
        let whole = if additive {
            whole_values(&ts, &vals)
        } else {
            vals.iter()
                .map(|v| {
                    Decimal::from_f64(*v)
                        .unwrap_or_default()
                        .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
                        .to_i64()
                        .unwrap_or(i64::MAX)
                })
                .collect()
        };
        let event_name = spec
            .event_names
            .get(&s.meter)
            .cloned()
            .unwrap_or_else(|| s.meter.clone());
        for (k, &t) in ts.iter().enumerate() {
            if t < spec.from {
                continue;
            }
            if t + step > spec.at {
                out.incomplete_windows += 1;
                continue;
            }
            let Some(customer) = customers.get(&s.tenant_id) else {
                if vals[k] != 0.0 {
                    unmapped.insert(s.tenant_id.clone());
                }
                continue;
            };
            let total = out.totals.entry(s.meter.clone()).or_default();
            total.event_name = event_name.clone();
            total.exact += vals[k];
            // Zero windows of additive meters are kept for the push's accounting (a window
            // sent before may have become 0) but never written or sent.
            total.exported += whole[k];
            out.events.push(MeterEvent {
                identifier: identifier(&s.tenant_id, &s.meter, spec.granularity, t),
                event_name: event_name.clone(),
                timestamp: t,
                stripe_customer_id: customer.clone(),
                value: whole[k],
                tenant_id: s.tenant_id.clone(),
                meter: s.meter.clone(),
                additive,
            });
        }
    }
    out.event_count = out.events.iter().filter(|e| e.sent_in_file()).count();
    out.outside_push_window = out
        .events
        .iter()
        .filter(|e| e.sent_in_file() && outside_window(e.timestamp, spec.at))
        .count();
    out.unmapped_tenants = unmapped.into_iter().collect();
    out.skipped_meters = skipped.into_iter().collect();
    Ok(out)
}

impl MeterEvent {
    /// Whether it is written (an additive meter's zero window is not).
    pub fn sent_in_file(&self) -> bool {
        self.value != 0 || !self.additive
    }
}

/// Whether Stripe refuses an event timestamped `t` at `at`.
fn outside_window(t: i64, at: i64) -> bool {
    t < at - MAX_AGE || t > at + MAX_AHEAD
}

/// Stripe's file shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// v2 meter-event-stream bodies: one `{"events":[...]}` of ≤ 100 events per line.
    V2,
    /// v1 form fields, one event per CSV row.
    V1,
}

/// The v2 JSON of one event.
fn v2_event(e: &MeterEvent) -> serde_json::Value {
    serde_json::json!({
        "identifier": e.identifier,
        "event_name": e.event_name,
        "timestamp": rfc3339(e.timestamp),
        "payload": {"stripe_customer_id": e.stripe_customer_id, "value": e.value.to_string()},
    })
}

/// The v1 form fields of one event, in order.
fn v1_fields(e: &MeterEvent) -> [(&'static str, String); 5] {
    [
        ("event_name", e.event_name.clone()),
        ("payload[stripe_customer_id]", e.stripe_customer_id.clone()),
        ("payload[value]", e.value.to_string()),
        ("identifier", e.identifier.clone()),
        ("timestamp", (e.timestamp.div_euclid(1_000_000)).to_string()),
    ]
}

/// The file's bytes: the events in `shape`.
pub fn render(events: &[MeterEvent], shape: Shape) -> Vec<u8> {
    let mut buf: Vec<u8> = Vec::new();
    match shape {
        Shape::V2 => {
            let events: Vec<&MeterEvent> = events.iter().filter(|e| e.sent_in_file()).collect();
            for batch in events.chunks(BATCH) {
                let body = serde_json::json!({"events": batch.iter().map(|e| v2_event(e)).collect::<Vec<_>>()});
                buf.extend_from_slice(body.to_string().as_bytes());
                buf.push(b'\n');
            }
        }
        Shape::V1 => {
            // Writing CSV into memory cannot fail.
            let mut w = csv::Writer::from_writer(&mut buf);
            let _ = w.write_record([
                "event_name",
                "payload[stripe_customer_id]",
                "payload[value]",
                "identifier",
                "timestamp",
            ]);
            for e in events.iter().filter(|e| e.sent_in_file()) {
                let _ = w.write_record(v1_fields(e).iter().map(|(_, v)| v.as_str()));
            }
            let _ = w.flush();
        }
    }
    buf
}

/// The push ledger of a lake.
pub fn ledger_path(lake_dir: &Path) -> PathBuf {
    lake_dir.join("_exports").join("stripe").join("sent.ndjson")
}

/// One ledger line.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
struct Sent {
    /// The window's identifier (a correction carries its window's identifier here).
    window: String,
    /// The identifier sent.
    identifier: String,
    value: i64,
    at: String,
    /// The tenant, meter and granularity of the window (absent from lines written before
    /// they were recorded): what lets a push refuse a second granularity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tenant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    meter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    granularity: Option<String>,
}

/// What the ledger holds: per window identifier, the value sent and the sends; per
/// tenant × meter, the granularities sent.
#[derive(Default)]
struct Ledger {
    windows: HashMap<String, (i64, usize)>,
    granularities: HashMap<(String, String), std::collections::BTreeSet<String>>,
}

/// What a push did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Pushed {
    /// Events accepted by Stripe in this push (corrections included).
    pub sent: usize,
    /// ... of which corrections of windows that grew after they were sent.
    pub corrections: usize,
    /// Windows already sent with their value (nothing to send).
    pub already_sent: usize,
    /// Events outside Stripe's window (not sent): identifier, tenant, meter, time.
    pub outside_window: Vec<String>,
    /// Usage that fell after it was sent (not sent back: Stripe meter events cannot be
    /// negative): what, sent, now.
    pub not_corrected: Vec<String>,
    /// Events refused or still failing after the retries (identifier: error).
    pub failed: Vec<String>,
    /// Requests made.
    pub requests: usize,
}

/// Reads the ledger (per window: the sum sent and the number of sends), after cutting a
/// torn last line (a crash mid-append: that send is not recorded, and its resend carries
/// the same identifier, which Stripe drops within 24 hours). Any other unreadable line is
/// an error naming the file and line.
fn read_ledger(path: &Path) -> Result<Ledger> {
    let mut out = Ledger::default();
    let Ok(bytes) = std::fs::read(path) else {
        return Ok(out);
    };
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if whole < bytes.len() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .at(path)?;
        f.set_len(whole as u64)
            .and_then(|()| f.sync_all())
            .at(path)?;
    }
    for (i, line) in bytes[..whole].split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let s: Sent = serde_json::from_slice(line).map_err(|e| Error::BadInput {
            path: path.to_path_buf(),
            reason: format!("line {}: {e}", i + 1),
        })?;
        if let (Some(t), Some(m), Some(g)) = (s.tenant_id, s.meter, s.granularity) {
            out.granularities.entry((t, m)).or_default().insert(g);
        }
        let e = out.windows.entry(s.window).or_default();
        e.0 += s.value;
        e.1 += 1;
    }
    Ok(out)
}

/// A tenant, a meter and a UTC month (year, month).
type SeriesMonth<'a> = (&'a str, &'a str, (i32, u32));

/// How one push sends: where, with which key, retries, the clock.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// The v1 endpoint.
    pub url: String,
    /// The API key (Bearer).
    pub api_key: String,
    /// The clock (Stripe's window is judged at it).
    pub at: i64,
    /// Tries per event on 429, 5xx and network errors.
    pub max_attempts: u32,
    /// First retry delay (doubling, or as `Retry-After` says).
    pub backoff: Duration,
    /// The export's granularity (`hour` or `day`): a tenant × meter sent at one is never
    /// sent at the other (Stripe would sum both).
    pub granularity: String,
}

/// Pushes the export's events to the v1 endpoint, recording each accepted one.
///
/// Per tenant × meter × month of additive meters, what Stripe should hold is the sum of
/// the windows' whole values; what it holds is the ledger's sum for those windows. The
/// difference (the *budget*) is what may go out: windows are walked in time order and
/// each sends what its running total still lacks, capped by the budget, so a late event
/// never makes the month's total overshoot (a unit of rounding that moved to another
/// window is not sent twice). A window sent before gets its difference as a correction
/// (`IDENTIFIER_2`, ...). A month whose total fell is reported, not sent. Gauges (`last`
/// meters) are sent once per window; a changed value after that is reported.
pub fn push(lake_dir: &Path, events: &[MeterEvent], opts: &PushOptions) -> Result<Pushed> {
    let path = ledger_path(lake_dir);
    let dir = path.parent().expect("ledger has a folder");
    std::fs::create_dir_all(dir).at(dir)?;
    let _lock = crate::lake::lock_exclusive(&dir.join("_lock"))?;
    let Ledger {
        windows: sent,
        granularities,
    } = read_ledger(&path)?;
    // A Stripe meter sums what it gets: the same usage sent hourly after daily (or the other
    // way) would be billed twice, and the two granularities' identifiers differ, so the
    // ledger's per-window budget cannot see it. Refused before anything is sent.
    for e in events {
        let key = (e.tenant_id.clone(), e.meter.clone());
        if let Some(other) = granularities
            .get(&key)
            .and_then(|gs| gs.iter().find(|g| **g != opts.granularity))
        {
            return Err(Error::InvalidParameter {
                name: "--granularity",
                reason: format!(
                    "{} {} was pushed by {other} to {}; a Stripe meter sums what it gets, so sending it by {} too would bill the same usage twice (push --granularity {other})",
                    e.tenant_id,
                    e.meter,
                    path.display(),
                    opts.granularity
                ),
            });
        }
    }
    let mut ledger = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .at(&path)?;
    let agent = crate::http::agent(Duration::from_secs(30));
    let mut out = Pushed::default();
    // Groups: tenant × meter × UTC month, windows in time order (the export's order).
    let mut groups: BTreeMap<SeriesMonth, Vec<&MeterEvent>> = BTreeMap::new();
    for e in events {
        groups
            .entry((&e.tenant_id, &e.meter, month_of(e.timestamp)))
            .or_default()
            .push(e);
    }
    let ledger_of = |e: &MeterEvent| sent.get(&e.identifier).copied().unwrap_or((0, 0));
    let mut send = |e: &MeterEvent, value: i64, sends: usize, out: &mut Pushed| -> Result<()> {
        if outside_window(e.timestamp, opts.at) {
            out.outside_window.push(format!(
                "{} ({} {} at {})",
                e.identifier,
                e.tenant_id,
                e.meter,
                rfc3339(e.timestamp)
            ));
            return Ok(());
        }
        let mut ev = e.clone();
        ev.value = value;
        if sends > 0 {
            ev.identifier = format!("{}_{}", e.identifier, sends + 1);
        }
        match post_form(&agent, opts, &ev, &mut out.requests) {
            Ok(()) => {
                let line = serde_json::to_string(&Sent {
                    window: e.identifier.clone(),
                    identifier: ev.identifier.clone(),
                    value,
                    at: crate::time::now_rfc3339(),
                    tenant_id: Some(e.tenant_id.clone()),
                    meter: Some(e.meter.clone()),
                    granularity: Some(opts.granularity.clone()),
                })
                .unwrap_or_default();
                ledger
                    .write_all(format!("{line}\n").as_bytes())
                    .and_then(|()| ledger.sync_data())
                    .at(&path)?;
                out.sent += 1;
                out.corrections += usize::from(sends > 0);
            }
            Err(err) => out.failed.push(format!("{}: {err}", ev.identifier)),
        }
        Ok(())
    };
    for ((tenant, meter, (y, m)), windows) in groups {
        if !windows[0].additive {
            for e in windows {
                let (done, sends) = ledger_of(e);
                if sends == 0 {
                    send(e, e.value, 0, &mut out)?;
                } else if done == e.value {
                    out.already_sent += 1;
                } else {
                    out.not_corrected.push(format!(
                        "{} ({tenant} {meter} at {}): sent {done}, now {} (a `last` meter keeps the value sent)",
                        e.identifier,
                        rfc3339(e.timestamp),
                        e.value
                    ));
                }
            }
            continue;
        }
        let target: i64 = windows.iter().map(|e| e.value).sum();
        let held: i64 = windows.iter().map(|e| ledger_of(e).0).sum();
        if target < held {
            out.not_corrected.push(format!(
                "{tenant} {meter} {y}-{m:02}: sent {held}, now {target}"
            ));
            continue;
        }
        let mut budget = target - held;
        let (mut cum, mut covered) = (0i64, 0i64);
        for e in windows {
            let (done, sends) = ledger_of(e);
            cum += e.value;
            covered += done;
            let amount = (cum - covered).min(budget).max(0);
            if amount > 0 {
                send(e, amount, sends, &mut out)?;
                // Sent, failed or outside Stripe's window: either way not owed by a later
                // window (a failure is retried by the next push, with this window).
                covered += amount;
                budget -= amount;
            } else if sends > 0 {
                out.already_sent += 1;
            }
        }
    }
    Ok(out)
}

/// POSTs one event as v1 form fields, retrying 429, 5xx and network errors
/// ([`crate::http`]).
fn post_form(
    agent: &ureq::Agent,
    opts: &PushOptions,
    ev: &MeterEvent,
    requests: &mut usize,
) -> std::result::Result<(), String> {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(v1_fields(ev).iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    let retry = crate::http::Retry {
        attempts: opts.max_attempts,
        backoff: opts.backoff,
    };
    let (res, tries) = crate::http::with_retries(retry, |_| {
        crate::http::outcome(
            agent
                .post(&opts.url)
                .header("Authorization", &format!("Bearer {}", opts.api_key))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .header("Idempotency-Key", &ev.identifier)
                .send(&body),
        )
    });
    *requests += tries as usize;
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> i64 {
        crate::time::parse_instant("t", s).unwrap()
    }

    #[test]
    fn whole_values_keep_the_month_total_and_restart_each_month() {
        let ts = [
            t("2026-10-30"),
            t("2026-10-31"),
            t("2026-11-01"),
            t("2026-11-02"),
        ];
        let v = [0.4, 0.4, 2.5, 0.5];
        // October: running 0.4 → 0, 0.8 → 1; November: 2.5 → 3, 3.0 → 3.
        assert_eq!(whole_values(&ts, &v), vec![0, 1, 3, 0]);
        // Integers pass through unchanged.
        assert_eq!(whole_values(&ts, &[3.0, 0.0, 7.0, 1.0]), vec![3, 0, 7, 1]);
    }

    #[test]
    fn identifiers_are_stable_and_distinct() {
        let a = identifier("t1", "api_calls", Granularity::Hour, 0);
        assert_eq!(a, identifier("t1", "api_calls", Granularity::Hour, 0));
        assert_ne!(a, identifier("t1", "api_calls", Granularity::Day, 0));
        assert_ne!(
            a,
            identifier("t1", "api_calls", Granularity::Hour, 3_600_000_000)
        );
        assert!(a.starts_with("mlk_") && a.len() == 36);
    }
}
