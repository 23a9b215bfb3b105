//! JSON text → [`Draft`]: plain events (canonical names or tracker aliases) and
//! CloudEvents 1.0 envelopes, from NDJSON lines, JSON arrays, the HTTP API and CSV or
//! Parquet `properties` cells.
//!
//! The reader's step of a record's way (see [`super`]) for JSON: the fast scanner
//! ([`super::super::scan`]) takes the common shape; every record it declines goes through
//! serde_json here ([`general_draft`]), which decides every message. This is the only
//! file of `record/` that uses the scanner.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::accept::Accepted;
use super::draft::{Draft, Prop, Rejection, TsIn, short};
use super::fields::{Canon, canonical};
use super::validate::{Limits, MAX_RECORD_BYTES, parse_number};

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

/// Parses one JSON record (a plain event or a CloudEvents envelope) and validates it.
pub(crate) fn parse_json(raw: &[u8], limits: &Limits) -> Result<Accepted, Rejection> {
    json_draft(raw)?.finish(raw.len(), limits)
}

/// A CloudEvent as OpenMeter's API takes it: like [`parse_json`], except that `time` is
/// optional and defaults to `received` (µs), the instant the server got the event.
pub(crate) fn parse_cloudevent_json(
    raw: &[u8],
    limits: &Limits,
    received: i64,
) -> Result<Accepted, Rejection> {
    if raw.len() > MAX_RECORD_BYTES {
        return Draft::default().finish(raw.len(), limits);
    }
    let text = std::str::from_utf8(raw)
        .map_err(|e| Rejection::new("record", format!("invalid JSON: not UTF-8 ({e})")))?;
    let members: Members = serde_json::from_str(text)
        .map_err(|e| Rejection::new("record", format!("invalid JSON: {e}")))?;
    if !members.0.iter().any(|(k, _)| k == "specversion") {
        return Err(Rejection::new(
            "specversion",
            "missing (required by CloudEvents)",
        ));
    }
    let mut d = cloudevent_draft(members);
    // `time` is noted as missing only when nothing else is wrong (see cloudevent_draft).
    if d.ts.is_none() && d.problem.as_ref().is_some_and(|p| p.field == "time") {
        d.problem = None;
        d.ts = Some(TsIn::Micros(received));
    }
    d.finish(raw.len(), limits)
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
    if super::super::scan::plain_into(text, d).is_none() {
        *d = general_draft(text)?;
    }
    Ok(())
}

/// Any JSON record (plain or CloudEvents) through serde_json: the general path, which
/// decides every record the fast scanner ([`super::super::scan`]) declines.
pub(crate) fn general_draft(text: &str) -> Result<Draft<'_>, Rejection> {
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
/// `time` → ts, `data.value` → value, `data.user_id` → user, the rest of `data` (nested
/// objects flattened to dotted keys, see [`flat_prop`]) and any extension attributes →
/// properties; dedup on (`source`, `id`). `datacontenttype`, when given, must be
/// `application/json`.
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
            "datacontenttype" => {
                let t = json_string(&mut d, "datacontenttype", v);
                // `data` is always read as JSON (as OpenMeter does): another declared type
                // would be misread, so it is refused.
                if let Some(t) = t
                    && !t.eq_ignore_ascii_case("application/json")
                {
                    d.note(Rejection::new(
                        "datacontenttype",
                        format!("`{}` is not application/json", short(&t)),
                    ));
                }
            }
            "dataschema" => {}
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
                    let nested = v.get().starts_with('{');
                    match k.as_ref() {
                        "value" if !nested => d.value = json_value(v),
                        "user_id" if !nested => d.user_id = json_id(&mut d, "data.user_id", v),
                        _ => flat_prop(&mut d, k, v, 1),
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

/// Most levels of objects in CloudEvents `data` that are flattened: deeper is refused. Each
/// level is a recursion (20,000 of them overflowed the stack and aborted the process, a
/// server too) and a re-read of the text below it.
pub(crate) const MAX_DATA_DEPTH: usize = 32;

/// A member of CloudEvents `data`, flattened: a nested object's members become dotted
/// keys (`{"usage": {"tokens": 5}}` → `usage.tokens = 5`), as a meter's JSONPath
/// (`value_property = "$.usage.tokens"`) names them; an array is kept as its JSON text.
/// So no event is refused for its nesting up to [`MAX_DATA_DEPTH`] levels, and every leaf
/// stays queryable. `depth` is the level `v` is at (1: a member of `data`).
fn flat_prop<'a>(d: &mut Draft<'a>, key: Cow<'a, str>, v: &'a RawValue, depth: usize) {
    match v.get().as_bytes().first() {
        Some(b'{') if depth >= MAX_DATA_DEPTH => d.note(Rejection::new(
            format!("data.{}", short(&key)),
            format!("objects nested deeper than {MAX_DATA_DEPTH} levels"),
        )),
        Some(b'{') => match serde_json::from_str::<Members<'a>>(v.get()) {
            Ok(m) => {
                for (k, inner) in m.0 {
                    flat_prop(d, Cow::Owned(format!("{key}.{k}")), inner, depth + 1);
                }
            }
            Err(e) => d.note(Rejection::new(
                format!("data.{key}"),
                format!("bad object: {e}"),
            )),
        },
        Some(b'[') => {
            if key.is_empty() {
                d.note(Rejection::new("data", "empty property name"));
            } else {
                d.set_prop(key, Prop::Str(Cow::Borrowed(v.get())));
            }
        }
        _ => json_prop(d, Some("data"), key, v),
    }
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
