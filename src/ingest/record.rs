//! One record → one [`Accepted`] event or one [`Rejection`]: field mapping, aliases,
//! CloudEvents envelopes and every validation rule.
//!
//! Readers (NDJSON, CSV, Parquet) turn their raw records into a [`Draft`] of loosely typed
//! fields; [`Draft::finish`] validates it in a fixed order, so the same bad record always
//! gets the same reason.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::event::UsageEvent;
use crate::lake::Row;

/// Default earliest accepted timestamp: 2000-01-01T00:00:00Z, in µs.
pub const DEFAULT_MIN_TS: i64 = 946_684_800_000_000;
/// Default tolerance for clocks running ahead: 24 hours, in µs.
pub const DEFAULT_MAX_FUTURE: i64 = 24 * 3_600_000_000;
/// Largest accepted record, in bytes (1 MiB).
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// Longest accepted id, tenant, user or meter, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// Validation limits of one ingest.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Earliest accepted `ts` (µs, UTC).
    pub min_ts: i64,
    /// Latest accepted `ts` (µs, UTC): "now + 24 h" by default.
    pub max_ts: i64,
}

impl Limits {
    /// The defaults: from 2000-01-01 to 24 hours after `now` (µs).
    pub fn relative_to(now_micros: i64) -> Self {
        Limits {
            min_ts: DEFAULT_MIN_TS,
            max_ts: now_micros.saturating_add(DEFAULT_MAX_FUTURE),
        }
    }
}

/// Why a record was rejected: the field at fault (or `record` / `line`) and the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// `ts`, `tenant_id`, `properties.model`, `record`, ...
    pub field: String,
    /// Human-readable reason, naming the offending value where short.
    pub reason: String,
}

impl Rejection {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Rejection {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// A valid event with its dedup key.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The event to store.
    pub event: UsageEvent,
    /// 128-bit dedup key: hash of (scope, id), scope = CloudEvents `source` or the tenant.
    pub key: u128,
}

/// A timestamp as found in the input, before parsing.
#[derive(Debug, Clone)]
pub(crate) enum TsIn<'a> {
    Text(Cow<'a, str>),
    /// Epoch milliseconds.
    Millis(f64),
    /// Already µs (typed Parquet timestamps).
    Micros(i64),
}

/// A property value: string, number (kept as its JSON text) or bool.
#[derive(Debug, Clone)]
pub(crate) enum Prop<'a> {
    Str(Cow<'a, str>),
    Num(Cow<'a, str>),
    Bool(bool),
}

/// Properties of one record, in input order: inline up to 8, so a typical record's
/// properties cost no allocation.
pub(crate) type Props<'a> = smallvec::SmallVec<[(Cow<'a, str>, Prop<'a>); 8]>;

/// Loosely typed fields of one record, as a reader found them.
#[derive(Debug, Default)]
pub(crate) struct Draft<'a> {
    pub id: Option<Cow<'a, str>>,
    /// CloudEvents `source`: scopes the dedup key instead of the tenant.
    pub source: Option<Cow<'a, str>>,
    pub ts: Option<TsIn<'a>>,
    pub tenant_id: Option<Cow<'a, str>>,
    pub user_id: Option<Cow<'a, str>>,
    pub meter: Option<Cow<'a, str>>,
    /// `Err` holds the reason the value did not parse.
    pub value: Option<Result<f64, String>>,
    /// Properties in input order; a later value for the same key replaces an earlier one.
    pub props: Props<'a>,
    /// The properties object exactly as the lake stores it (compact, keys strictly
    /// ascending, no nulls), when a reader saw it is: it is then kept as is, and `props`
    /// only serves lookups.
    pub props_raw: Option<&'a str>,
    /// First problem found while mapping fields (kept so validation order stays fixed).
    pub problem: Option<Rejection>,
}

impl<'a> Draft<'a> {
    /// Sets a property (replacing an earlier value of the same key).
    pub(crate) fn set_prop(&mut self, key: Cow<'a, str>, value: Prop<'a>) {
        match self.props.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.props.push((key, value)),
        }
    }

    /// Sets a property unless the key is already there.
    pub(crate) fn default_prop(&mut self, key: Cow<'a, str>, value: Prop<'a>) {
        if !self.props.iter().any(|(k, _)| *k == key) {
            self.props.push((key, value));
        }
    }

    fn note(&mut self, r: Rejection) {
        if self.problem.is_none() {
            self.problem = Some(r);
        }
    }

    /// Empties the draft for the next record, keeping nothing of the last.
    pub(crate) fn clear(&mut self) {
        self.id = None;
        self.source = None;
        self.ts = None;
        self.tenant_id = None;
        self.user_id = None;
        self.meter = None;
        self.value = None;
        self.props.clear();
        self.props_raw = None;
        self.problem = None;
    }

    /// Validates the draft and builds the event. `raw_len` is the record's size in bytes.
    pub(crate) fn finish(mut self, raw_len: usize, limits: &Limits) -> Result<Accepted, Rejection> {
        let v = self.validate(raw_len, limits)?;
        let mut properties = String::new();
        v.render_props(&mut properties);
        let (id, key) = v.id_and_key(&properties);
        Ok(Accepted {
            event: UsageEvent {
                id: id.into_owned(),
                ts: v.ts,
                tenant_id: v.tenant_id.to_string(),
                user_id: v.user_id.map(str::to_string),
                meter: v.meter.to_string(),
                value: v.value,
                properties,
            },
            key,
        })
    }

    /// Validates the draft and hands the event to `store` as borrowed fields, allocating
    /// nothing per event (`scratch` is reused for the properties text). The draft is
    /// borrowed, not consumed, so a reader reuses one for every record of a chunk instead
    /// of moving a large struct around per record.
    pub(crate) fn finish_with(
        &mut self,
        raw_len: usize,
        limits: &Limits,
        scratch: &mut String,
        store: impl FnOnce(Row<'_>),
    ) -> Result<(), Rejection> {
        let v = self.validate(raw_len, limits)?;
        let props = match v.props_raw {
            Some(raw) => raw,
            None => {
                scratch.clear();
                render_props(v.props, scratch);
                scratch.as_str()
            }
        };
        let (id, key) = v.id_and_key(props);
        store(Row {
            id: &id,
            ts: v.ts,
            tenant: v.tenant_id,
            user: v.user_id,
            meter: v.meter,
            value: v.value,
            props,
            key,
        });
        Ok(())
    }

    /// Checks every rule in a fixed order (sorting the properties in place).
    fn validate(&mut self, raw_len: usize, limits: &Limits) -> Result<Valid<'_, 'a>, Rejection> {
        if raw_len > MAX_RECORD_BYTES {
            return Err(Rejection::new(
                "record",
                format!("{raw_len} bytes is larger than the 1 MiB limit"),
            ));
        }
        if let Some(p) = self.problem.take() {
            return Err(p);
        }
        let tenant_id = required(self.tenant_id.as_deref(), "tenant_id")?;
        let meter = required(self.meter.as_deref(), "meter")?;
        let ts = match &self.ts {
            None => return Err(Rejection::new("ts", "missing")),
            Some(t) => parse_ts(t)?,
        };
        if ts < limits.min_ts || ts > limits.max_ts {
            return Err(Rejection::new(
                "ts",
                format!(
                    "{} is out of range [{}, {}]",
                    crate::event::ts_to_rfc3339(ts),
                    crate::event::ts_to_rfc3339(limits.min_ts),
                    crate::event::ts_to_rfc3339(limits.max_ts)
                ),
            ));
        }
        check_id("tenant_id", tenant_id)?;
        check_id("meter", meter)?;
        if let Some(u) = &self.user_id {
            check_id("user_id", u)?;
        }
        if let Some(id) = &self.id {
            check_id("id", id)?;
        }
        let value = match &mut self.value {
            None => 1.0,
            Some(Err(reason)) => return Err(Rejection::new("value", std::mem::take(reason))),
            Some(Ok(v)) if !v.is_finite() => {
                return Err(Rejection::new(
                    "value",
                    format!("{v} is not a finite number"),
                ));
            }
            Some(Ok(v)) if *v < 0.0 => {
                return Err(Rejection::new("value", format!("{v} is negative")));
            }
            Some(Ok(v)) => *v + 0.0, // normalises -0.0
        };
        // Producers usually write keys in a fixed, often sorted, order.
        if self.props_raw.is_none() && !self.props.is_sorted_by(|a, b| a.0 <= b.0) {
            self.props.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        Ok(Valid {
            id: self.id.as_deref(),
            source: self.source.as_deref(),
            ts,
            tenant_id,
            user_id: self.user_id.as_deref(),
            meter,
            value,
            props: &self.props,
            props_raw: self.props_raw,
        })
    }
}

/// A draft that passed every rule, borrowed from it; properties sorted.
struct Valid<'d, 'a> {
    id: Option<&'d str>,
    source: Option<&'d str>,
    ts: i64,
    tenant_id: &'d str,
    user_id: Option<&'d str>,
    meter: &'d str,
    value: f64,
    props: &'d Props<'a>,
    props_raw: Option<&'a str>,
}

impl<'d> Valid<'d, '_> {
    /// The lake's `properties` text, appended to `out`.
    fn render_props(&self, out: &mut String) {
        match self.props_raw {
            Some(raw) => out.push_str(raw),
            None => render_props(self.props, out),
        }
    }

    /// The id (given, or derived from the content) and the dedup key.
    fn id_and_key(&self, properties: &str) -> (Cow<'d, str>, u128) {
        let id = match self.id {
            Some(id) => Cow::Borrowed(id),
            None => Cow::Owned(derived_id(
                self.ts,
                self.tenant_id,
                self.user_id,
                self.meter,
                self.value,
                properties,
            )),
        };
        let scope = self.source.unwrap_or(self.tenant_id);
        let key = dedup_key(scope, &id);
        (id, key)
    }
}

fn required<'d>(v: Option<&'d str>, field: &'static str) -> Result<&'d str, Rejection> {
    v.ok_or_else(|| Rejection::new(field, "missing"))
}

/// Id-like fields end up in file names, URLs and SQL: keep them short and printable.
fn check_id(field: &'static str, v: &str) -> Result<(), Rejection> {
    // Fast path: printable ASCII without separators (nearly every real id).
    if !v.is_empty()
        && v.len() <= MAX_ID_BYTES
        && v.bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'/' && b != b'\\')
    {
        return Ok(());
    }
    if v.is_empty() {
        return Err(Rejection::new(field, "is empty"));
    }
    if v.len() > MAX_ID_BYTES {
        return Err(Rejection::new(
            field,
            format!("{} bytes is longer than {MAX_ID_BYTES}", v.len()),
        ));
    }
    if let Some(c) = v.chars().find(|c| c.is_control()) {
        return Err(Rejection::new(
            field,
            format!("holds control character U+{:04X}", c as u32),
        ));
    }
    if v.contains(['/', '\\']) {
        return Err(Rejection::new(
            field,
            format!("holds a path separator: {v:?}"),
        ));
    }
    Ok(())
}

/// Hash of (scope, id): what "the same event" means for dedup.
pub fn dedup_key(scope: &str, id: &str) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3Default::new();
    h.update(scope.as_bytes());
    h.update(&[0]);
    h.update(id.as_bytes());
    h.digest128()
}

/// A deterministic id for a record that has none: the hash of its content. Re-ingesting
/// the same file is idempotent; the price is that two genuinely distinct events with
/// identical content (same µs, tenant, user, meter, value and properties) count once.
fn derived_id(
    ts: i64,
    tenant: &str,
    user: Option<&str>,
    meter: &str,
    value: f64,
    props: &str,
) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3Default::new();
    h.update(&ts.to_le_bytes());
    for part in [tenant, user.unwrap_or("\u{0}none"), meter, props] {
        h.update(part.as_bytes());
        h.update(&[0]);
    }
    h.update(&value.to_bits().to_le_bytes());
    format!("h-{:032x}", h.digest128())
}

/// Parses RFC 3339 text, or digits as epoch milliseconds.
pub(crate) fn parse_ts(t: &TsIn<'_>) -> Result<i64, Rejection> {
    match t {
        TsIn::Micros(us) => Ok(*us),
        TsIn::Millis(ms) => millis_to_micros(*ms),
        TsIn::Text(s) => {
            let s = s.trim();
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                return match s.parse::<f64>() {
                    Ok(ms) => millis_to_micros(ms),
                    Err(_) => Err(Rejection::new(
                        "ts",
                        format!("{s:?} is not epoch milliseconds"),
                    )),
                };
            }
            if let Some(us) = fast_rfc3339(s.as_bytes()) {
                return Ok(us);
            }
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.timestamp_micros())
                .map_err(|e| {
                    Rejection::new(
                        "ts",
                        format!(
                            "{:?} is neither RFC 3339 nor epoch milliseconds ({e})",
                            short(s)
                        ),
                    )
                })
        }
    }
}

/// The common shape `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` without chrono's general
/// parser (a third of the per-record cost). `None` means "let chrono decide", which also
/// covers leap seconds and every error message; the two agree on everything else (tested).
fn fast_rfc3339(b: &[u8]) -> Option<i64> {
    fn num(b: &[u8]) -> Option<i64> {
        b.iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    }
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?);
    let (h, mi, se) = (num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo)
        || d < 1
        || d > month_days[mo as usize - 1]
        || h > 23
        || mi > 59
        || se > 59
    {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 6 {
                micros = micros * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n..6 {
            micros *= 10;
        }
    }
    let offset_s = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (oh, om) = (num(&[*h1, *h2])?, num(&[*m1, *m2])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'-' { -o } else { o }
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm), proleptic Gregorian.
    let (yy, m) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset_s;
    Some(secs * 1_000_000 + micros)
}

fn millis_to_micros(ms: f64) -> Result<i64, Rejection> {
    let us = (ms * 1000.0).round();
    if !us.is_finite() || us.abs() > 9.0e18 {
        return Err(Rejection::new(
            "ts",
            format!("{ms} epoch milliseconds is out of range"),
        ));
    }
    Ok(us as i64)
}

fn short(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Compact JSON object with sorted keys (the lake's `properties` column), appended to `out`.
fn render_props(props: &[(Cow<'_, str>, Prop<'_>)], out: &mut String) {
    out.push('{');
    for (i, (k, v)) in props.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(out, k);
        out.push(':');
        match v {
            Prop::Str(s) => push_json_str(out, s),
            Prop::Num(n) => out.push_str(n),
            Prop::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        }
    }
    out.push('}');
}

fn push_json_str(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).expect("strings serialise"));
    }
}

// ---------------------------------------------------------------------------------------
// JSON records (NDJSON lines, CloudEvents envelopes, array elements)
// ---------------------------------------------------------------------------------------

/// A borrowed-when-possible string, for keys and values of a JSON record.
struct Str<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// The top-level members of a JSON object, values left raw.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(m.size_hint().unwrap_or(8));
                while let Some(Str(k)) = m.next_key::<Str<'de>>()? {
                    let v: &'de RawValue = m.next_value()?;
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Canonical field of a plain (non-CloudEvents) record, with the tracker aliases.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Canon {
    Id,
    Ts,
    Tenant,
    User,
    Meter,
    Value,
    Props,
}

pub(super) fn canonical(key: &str) -> Option<Canon> {
    Some(match key {
        "id" => Canon::Id,
        "ts" | "timestamp" => Canon::Ts,
        "tenant_id" => Canon::Tenant,
        "user_id" => Canon::User,
        "meter" | "event_type" | "event_name" | "metric_type" => Canon::Meter,
        "value" | "quantity" | "metric_value" => Canon::Value,
        "properties" | "metadata" => Canon::Props,
        _ => return None,
    })
}

/// Parses one JSON record (a plain event or a CloudEvents envelope) and validates it.
pub(crate) fn parse_json(raw: &[u8], limits: &Limits) -> Result<Accepted, Rejection> {
    json_draft(raw)?.finish(raw.len(), limits)
}

/// The draft of a JSON record: the fast scanner's when it takes the record, else serde's.
/// An oversized record gets an empty draft, which `finish` rejects on its size.
pub(crate) fn json_draft(raw: &[u8]) -> Result<Draft<'_>, Rejection> {
    let mut d = Draft::default();
    json_draft_into(raw, None, &mut d).map(|()| d)
}

/// [`json_draft`] into a draft the caller reuses from record to record. `text` is `raw`
/// when the caller has already checked it is UTF-8 (a whole chunk at once is much faster
/// than line by line), else it is checked here.
pub(crate) fn json_draft_into<'a>(
    raw: &'a [u8],
    text: Option<&'a str>,
    d: &mut Draft<'a>,
) -> Result<(), Rejection> {
    d.clear();
    if raw.len() > MAX_RECORD_BYTES {
        return Ok(());
    }
    // Validate UTF-8 once for the whole line: parsing from a &str then skips the per-value
    // validation serde_json does for raw values read from bytes.
    let text = match text {
        Some(t) => t,
        None => std::str::from_utf8(raw)
            .map_err(|e| Rejection::new("record", format!("invalid JSON: not UTF-8 ({e})")))?,
    };
    if super::scan::plain_into(text, d).is_none() {
        *d = general_draft(text)?;
    }
    Ok(())
}

/// Any JSON record (plain or CloudEvents) through serde_json: the general path, which
/// decides every record the fast scanner ([`super::scan`]) declines.
pub(super) fn general_draft(text: &str) -> Result<Draft<'_>, Rejection> {
    let members: Members = serde_json::from_str(text)
        .map_err(|e| Rejection::new("record", format!("invalid JSON: {e}")))?;
    Ok(if members.0.iter().any(|(k, _)| k == "specversion") {
        cloudevent_draft(members)
    } else {
        plain_draft(members)
    })
}

fn plain_draft(members: Members<'_>) -> Draft<'_> {
    let mut d = Draft::default();
    let mut seen: [Option<Cow<str>>; 7] = Default::default();
    let mut extras = Vec::new();
    for (k, v) in members.0 {
        let Some(c) = canonical(&k) else {
            extras.push((k, v));
            continue;
        };
        if let Some(first) = &seen[c as usize] {
            d.note(Rejection::new(
                k.to_string(),
                format!("given twice (also as {first:?})"),
            ));
            continue;
        }
        match c {
            Canon::Id => d.id = json_id(&mut d, "id", v),
            Canon::Ts => d.ts = json_ts(&mut d, v),
            Canon::Tenant => d.tenant_id = json_id(&mut d, "tenant_id", v),
            Canon::User => d.user_id = json_id(&mut d, "user_id", v),
            Canon::Meter => d.meter = json_id(&mut d, "meter", v),
            Canon::Value => d.value = json_value(v),
            Canon::Props => json_props(&mut d, &k, v),
        }
        seen[c as usize] = Some(k);
    }
    // Unknown top-level scalars are kept as properties rather than dropped silently.
    for (k, v) in extras {
        if !d.props.iter().any(|(pk, _)| *pk == k) {
            json_prop(&mut d, None, k.clone(), v);
        }
    }
    d
}

/// CloudEvents 1.0 as OpenMeter ingests them: `type` → meter, `subject` → tenant,
/// `time` → ts, `data.value` → value, `data.user_id` → user, the rest of `data` and any
/// extension attributes → properties; dedup on (`source`, `id`).
fn cloudevent_draft(members: Members<'_>) -> Draft<'_> {
    let mut d = Draft::default();
    let mut data = None;
    for (k, v) in members.0 {
        match k.as_ref() {
            "id" => d.id = json_id(&mut d, "id", v),
            "source" => d.source = json_string(&mut d, "source", v),
            "type" => d.meter = json_id(&mut d, "type", v),
            "subject" => d.tenant_id = json_id(&mut d, "subject", v),
            "time" => d.ts = json_ts(&mut d, v),
            "data" => data = Some(v),
            "specversion" => {
                if !matches!(
                    json_string(&mut d, "specversion", v).as_deref(),
                    Some("1.0")
                ) {
                    d.note(Rejection::new(
                        "specversion",
                        format!("{} is not \"1.0\"", v.get()),
                    ));
                }
            }
            "datacontenttype" | "dataschema" => {}
            _ => json_prop(&mut d, None, k.clone(), v),
        }
    }
    if d.source.is_none() {
        d.note(Rejection::new(
            "source",
            "missing (required by CloudEvents)",
        ));
    }
    if d.id.is_none() {
        d.note(Rejection::new("id", "missing (required by CloudEvents)"));
    }
    if let Some(data) = data {
        match serde_json::from_str::<Members>(data.get()) {
            Ok(m) => {
                for (k, v) in m.0 {
                    match k.as_ref() {
                        "value" => d.value = json_value(v),
                        "user_id" => d.user_id = json_id(&mut d, "data.user_id", v),
                        _ => json_prop(&mut d, None, k.clone(), v),
                    }
                }
            }
            Err(_) if data.get() == "null" => {}
            Err(_) => d.note(Rejection::new("data", "is not a JSON object")),
        }
    }
    // Name the CloudEvents attribute in "missing" reasons, not our canonical name.
    if d.problem.is_none() {
        if d.tenant_id.is_none() {
            d.note(Rejection::new(
                "subject",
                "missing (it carries the tenant id)",
            ));
        } else if d.meter.is_none() {
            d.note(Rejection::new("type", "missing (it carries the meter)"));
        } else if d.ts.is_none() {
            d.note(Rejection::new("time", "missing"));
        }
    }
    d
}

/// The text of a JSON string without escapes, borrowed straight from the raw value.
fn plain_str(raw: &str) -> Option<&str> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.bytes().any(|c| c == b'\\')).then_some(inner)
}

fn json_string<'a>(d: &mut Draft<'a>, field: &str, v: &'a RawValue) -> Option<Cow<'a, str>> {
    if let Some(s) = plain_str(v.get()) {
        return Some(Cow::Borrowed(s));
    }
    match serde_json::from_str::<Str<'a>>(v.get()) {
        Ok(Str(s)) => Some(s),
        Err(_) if v.get() == "null" => None,
        Err(_) => {
            d.note(Rejection::new(
                field,
                format!("{} is not a string", short(v.get())),
            ));
            None
        }
    }
}

/// Ids may be strings or integers (many trackers use numeric ids).
fn json_id<'a>(d: &mut Draft<'a>, field: &str, v: &'a RawValue) -> Option<Cow<'a, str>> {
    let text = v.get();
    if text
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'-')
        && text.bytes().all(|b| b.is_ascii_digit() || b == b'-')
    {
        return Some(Cow::Borrowed(text));
    }
    json_string(d, field, v)
}

fn json_ts<'a>(d: &mut Draft<'a>, v: &'a RawValue) -> Option<TsIn<'a>> {
    let text = v.get();
    if text.starts_with('"') {
        return json_string(d, "ts", v).map(TsIn::Text);
    }
    if text == "null" {
        return None;
    }
    match text.parse::<f64>() {
        Ok(ms) => Some(TsIn::Millis(ms)),
        Err(_) => {
            d.note(Rejection::new(
                "ts",
                format!("{} is neither a string nor a number", short(text)),
            ));
            None
        }
    }
}

/// `value`: a JSON number, or a string holding one; `null` means absent (default 1).
fn json_value(v: &RawValue) -> Option<Result<f64, String>> {
    let text = v.get();
    if text == "null" {
        return None;
    }
    let parsed = if text.starts_with('"') {
        match serde_json::from_str::<Str>(text) {
            Ok(Str(s)) => parse_number(&s),
            Err(_) => None,
        }
    } else {
        parse_number(text)
    };
    Some(parsed.ok_or_else(|| format!("{} is not a number", short(text))))
}

/// A number as text: JSON numbers plus `NaN`/`inf` spelled out (rejected later as not finite).
pub(crate) fn parse_number(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    s.parse::<f64>().ok()
}

/// Properties given as JSON text (a CSV `properties` column, a Parquet string column).
pub(crate) fn props_from_json_text<'a>(d: &mut Draft<'a>, field: &str, text: &'a str) {
    match serde_json::from_str::<&'a RawValue>(text) {
        Ok(v) => json_props(d, field, v),
        Err(e) => d.note(Rejection::new(field, format!("is not valid JSON: {e}"))),
    }
}

fn json_props<'a>(d: &mut Draft<'a>, field: &str, v: &'a RawValue) {
    match serde_json::from_str::<Members<'a>>(v.get()) {
        Ok(m) => {
            for (k, pv) in m.0 {
                json_prop(d, Some(field), k, pv);
            }
        }
        Err(_) if v.get() == "null" => {}
        Err(_) => d.note(Rejection::new(field, "is not a JSON object")),
    }
}

/// One flat property: strings, numbers and bools are kept; null is dropped; nested
/// objects and arrays are rejected (properties are a flat map).
fn json_prop<'a>(d: &mut Draft<'a>, parent: Option<&str>, key: Cow<'a, str>, v: &'a RawValue) {
    // The field name is only built when there is something to report.
    let field = |key: &str| match parent {
        Some(p) => format!("{p}.{key}"),
        None => key.to_string(),
    };
    let text = v.get();
    let prop = match text.as_bytes().first() {
        Some(b'"') => match plain_str(text) {
            Some(s) => Prop::Str(Cow::Borrowed(s)),
            None => match serde_json::from_str::<Str<'a>>(text) {
                Ok(Str(s)) => Prop::Str(s),
                Err(e) => {
                    d.note(Rejection::new(field(&key), format!("bad string: {e}")));
                    return;
                }
            },
        },
        Some(b't') => Prop::Bool(true),
        Some(b'f') => Prop::Bool(false),
        Some(b'n') => return,
        Some(b'{') | Some(b'[') => {
            d.note(Rejection::new(
                field(&key),
                "nested objects and arrays are not allowed (flat map)",
            ));
            return;
        }
        _ => Prop::Num(Cow::Borrowed(text)),
    };
    if key.is_empty() {
        d.note(Rejection::new(field(&key), "empty property name"));
        return;
    }
    d.set_prop(key, prop);
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_790_000_000_000_000; // 2026-09-21

    fn parse(s: &str) -> Result<Accepted, Rejection> {
        parse_json(s.as_bytes(), &Limits::relative_to(NOW))
    }

    #[test]
    fn canonical_and_aliases_map_to_the_same_event() {
        let a = parse(r#"{"id":"e1","ts":"2026-09-01T10:00:00Z","tenant_id":"t1","user_id":"u1","meter":"api_calls","value":2,"properties":{"endpoint":"/v1/x","status_code":200,"ok":true}}"#).unwrap();
        let b = parse(r#"{"id":"e1","timestamp":1788256800000,"tenant_id":"t1","user_id":"u1","event_type":"api_calls","quantity":"2","metadata":{"status_code":200,"endpoint":"/v1/x","ok":true}}"#).unwrap();
        assert_eq!(a.event, b.event);
        assert_eq!(a.key, b.key);
        assert_eq!(
            a.event.properties,
            r#"{"endpoint":"/v1/x","ok":true,"status_code":200}"#
        );
        assert_eq!(a.event.ts, 1_788_256_800_000_000);
    }

    #[test]
    fn each_rule_names_its_field() {
        let cases = [
            ("not json", r#"{"id":"#, "record"),
            (
                "no tenant",
                r#"{"ts":"2026-09-01T10:00:00Z","meter":"m"}"#,
                "tenant_id",
            ),
            (
                "no meter",
                r#"{"ts":"2026-09-01T10:00:00Z","tenant_id":"t"}"#,
                "meter",
            ),
            ("no ts", r#"{"tenant_id":"t","meter":"m"}"#, "ts"),
            (
                "bad ts",
                r#"{"ts":"yesterday","tenant_id":"t","meter":"m"}"#,
                "ts",
            ),
            (
                "old ts",
                r#"{"ts":"1999-12-31T23:59:59Z","tenant_id":"t","meter":"m"}"#,
                "ts",
            ),
            (
                "future ts",
                r#"{"ts":"2026-09-23T10:00:00Z","tenant_id":"t","meter":"m"}"#,
                "ts",
            ),
            (
                "negative",
                r#"{"ts":"2026-09-01T10:00:00Z","tenant_id":"t","meter":"m","value":-1}"#,
                "value",
            ),
            (
                "nan",
                r#"{"ts":"2026-09-01T10:00:00Z","tenant_id":"t","meter":"m","value":"NaN"}"#,
                "value",
            ),
            (
                "text value",
                r#"{"ts":"2026-09-01T10:00:00Z","tenant_id":"t","meter":"m","value":"lots"}"#,
                "value",
            ),
            (
                "empty id",
                r#"{"id":"","ts":"2026-09-01T10:00:00Z","tenant_id":"t","meter":"m"}"#,
                "id",
            ),
            (
                "slash id",
                r#"{"id":"a/b","ts":"2026-09-01T10:00:00Z","tenant_id":"t","meter":"m"}"#,
                "id",
            ),
            (
                "ctl tenant",
                r#"{"ts":"2026-09-01T10:00:00Z","tenant_id":"t\u0001","meter":"m"}"#,
                "tenant_id",
            ),
            (
                "nested prop",
                r#"{"ts":"2026-09-01T10:00:00Z","tenant_id":"t","meter":"m","properties":{"a":{"b":1}}}"#,
                "properties.a",
            ),
            (
                "twice",
                r#"{"ts":"2026-09-01T10:00:00Z","timestamp":"2026-09-01T10:00:00Z","tenant_id":"t","meter":"m"}"#,
                "timestamp",
            ),
        ];
        for (name, line, field) in cases {
            let r = parse(line).expect_err(name);
            assert_eq!(r.field, field, "{name}: {r}");
        }
        let long = format!(
            r#"{{"id":"{}","ts":"2026-09-01T10:00:00Z","tenant_id":"t","meter":"m"}}"#,
            "x".repeat(257)
        );
        assert_eq!(parse(&long).unwrap_err().field, "id");
    }

    #[test]
    fn cloudevents_map_and_dedup_on_source_and_id() {
        let ce = r#"{"specversion":"1.0","id":"1","source":"svc-a","type":"ai_tokens","subject":"t1","time":"2026-09-01T10:00:00Z","data":{"value":512,"user_id":"u9","model":"gpt"},"region":"eu"}"#;
        let a = parse(ce).unwrap();
        assert_eq!(a.event.meter, "ai_tokens");
        assert_eq!(a.event.tenant_id, "t1");
        assert_eq!(a.event.user_id.as_deref(), Some("u9"));
        assert_eq!(a.event.value, 512.0);
        assert_eq!(a.event.properties, r#"{"model":"gpt","region":"eu"}"#);
        let b = parse(&ce.replace("svc-a", "svc-b")).unwrap();
        assert_ne!(a.key, b.key, "same id from another source is another event");
        assert_eq!(
            parse(&ce.replace(r#""subject":"t1","#, ""))
                .unwrap_err()
                .field,
            "subject"
        );
    }

    #[test]
    fn fast_rfc3339_agrees_with_chrono() {
        let fixed = [
            "2026-09-01T10:00:00Z",
            "2026-09-01t10:00:00z",
            "2026-09-01 10:00:00Z",
            "2024-02-29T23:59:59.999999999+14:00",
            "1969-12-31T23:59:59.5Z",
            "2000-01-01T00:00:00.1-05:30",
            "2023-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-09-01T10:00:60Z",
            "2026-09-01T10:00:00",
            "2026-09-01T10:00:00.Z",
            "2026-09-01T10:00:00+5:00",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.123456789Z",
            "2026-09-01T10:00:00Zjunk",
        ];
        for s in fixed {
            let want = chrono::DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| t.timestamp_micros());
            match fast_rfc3339(s.as_bytes()) {
                Some(got) => assert_eq!(Some(got), want, "{s}"),
                None => assert!(
                    want.is_none() || s.contains(":60"),
                    "{s}: fast path declined a common shape"
                ),
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn fast_rfc3339_matches_chrono_on_random_instants(
            y in 1i32..9999, mo in 1u32..=12, d in 1u32..=31, h in 0u32..24, mi in 0u32..60, se in 0u32..60,
            frac in proptest::option::of("[0-9]{1,9}"), off in proptest::option::of((0u32..24, 0u32..60, proptest::bool::ANY)),
        ) {
            let mut s = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{se:02}");
            if let Some(f) = frac { s.push('.'); s.push_str(&f); }
            match off { None => s.push('Z'), Some((oh, om, neg)) => s.push_str(&format!("{}{oh:02}:{om:02}", if neg { '-' } else { '+' })) }
            let want = chrono::DateTime::parse_from_rfc3339(&s).ok().map(|t| t.timestamp_micros());
            proptest::prop_assert_eq!(fast_rfc3339(s.as_bytes()), want, "{}", s);
        }
    }

    #[test]
    fn records_without_id_get_a_stable_content_id() {
        let line = r#"{"ts":"2026-09-01T10:00:00Z","tenant_id":"t","meter":"m"}"#;
        let a = parse(line).unwrap();
        assert!(a.event.id.starts_with("h-"));
        assert_eq!(a.event.id, parse(line).unwrap().event.id);
        assert_ne!(
            a.event.id,
            parse(&line.replace("10:00", "10:01")).unwrap().event.id
        );
    }
}
