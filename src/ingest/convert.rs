//! Chunks → outcomes: each raw record parsed, mapped and validated. Pure functions, run
//! on many chunks in parallel.

use std::borrow::Cow;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};

use super::record::fields::{aliases, field_of};
use super::record::{
    Draft, Limits, Prop, Rejection, TsIn, json_draft_into, parse_number, props_from_json_text,
};
use super::scan::is_json_number;
use super::source::{Chunk, CsvHeader};
use crate::lake::{EventBuf, Row};
use crate::time::day_of;

/// A rejected record, kept verbatim for the quarantine.
#[derive(Debug)]
pub(crate) struct Bad {
    pub line: u64,
    pub rejection: Rejection,
    pub raw: String,
    /// Whether the record's fields were read (it failed validation, not parsing), and its
    /// user id if it has one: what pseudonymisation needs to scrub it ([`Bad::scrubbed`]).
    pub mapped: Option<Option<String>>,
}

impl Bad {
    /// The record, the field and the reason as the quarantine keeps them when user ids are
    /// pseudonymised. The record is parsed as what it is (a JSON object, or one CSV line)
    /// and every key or value that is the user id, or names it as a whole id in longer
    /// text, is replaced by the pseudonym, so no other field is touched (`u1` in `acme-u1`
    /// or `u12` stays). The record is withheld (`None`) when it could not be read far
    /// enough to know its user id, when it cannot be re-parsed, or when it has a user field
    /// whose value could not be read as an id; the reason then names the field only (it
    /// could echo that value). Otherwise the field and reason are scrubbed as the record is.
    pub fn scrubbed(&self, p: &crate::lake::privacy::Pseudonymiser) -> Scrubbed {
        let field = self.rejection.field.clone();
        let reason = self.rejection.reason.clone();
        match &self.mapped {
            None => Scrubbed {
                record: None,
                field,
                reason,
            },
            Some(user) => {
                let user = user.as_deref().filter(|u| !u.is_empty());
                let alias = user.map(|u| p.pseudonym(u));
                let pair = user.zip(alias.as_deref());
                let record = scrub_record(&self.raw, pair);
                match (pair, &record) {
                    (_, None) => Scrubbed {
                        record,
                        reason: format!(
                            "rejected at {field}; the reason is withheld with the record, as it may name the user id"
                        ),
                        field,
                    },
                    (Some((u, a)), Some(_)) => Scrubbed {
                        record,
                        field: scrub_path(&scrub_text(&field, u, a), u, a),
                        reason: scrub_text(&reason, u, a),
                    },
                    (None, Some(_)) => Scrubbed {
                        record,
                        field,
                        reason,
                    },
                }
            }
        }
    }
}

/// A rejected record as a pseudonymised lake's quarantine keeps it ([`Bad::scrubbed`]).
#[derive(Debug)]
pub(crate) struct Scrubbed {
    /// The record with its user id replaced (none: withheld).
    pub record: Option<String>,
    /// The field it was rejected at.
    pub field: String,
    /// Why.
    pub reason: String,
}

/// A field path (`properties.KEY`) with every segment that is the user id replaced (the
/// id may itself hold dots: segments are matched as text bounded by dots or the ends).
fn scrub_path(path: &str, user: &str, alias: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    let mut at_start = true;
    while let Some(i) = rest.find(user) {
        let bounded_left = (at_start && i == 0) || rest[..i].ends_with('.');
        let after = &rest[i + user.len()..];
        if bounded_left && (after.is_empty() || after.starts_with('.')) {
            out.push_str(&rest[..i]);
            out.push_str(alias);
        } else {
            out.push_str(&rest[..i + user.len()]);
        }
        rest = after;
        at_start = false;
    }
    out.push_str(rest);
    out
}

/// `text` with the user id, as written or as JSON or Rust escape it, replaced wherever it
/// stands as a whole id.
fn scrub_text(text: &str, user: &str, alias: &str) -> String {
    let mut out = crate::lake::privacy::replace_whole_id(text, user, alias);
    let json = serde_json::to_string(user).unwrap_or_default();
    let debug = format!("{user:?}");
    for quoted in [json, debug] {
        if let Some(inner) = quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"'))
            && inner != user
        {
            out = crate::lake::privacy::replace_whole_id(&out, inner, alias);
        }
    }
    out
}

/// A rejected record with its user id replaced ([`Bad::scrubbed`]); `user` is (id, alias),
/// none when the record has no user id. `None` when the record must be withheld.
fn scrub_record(raw: &str, user: Option<(&str, &str)>) -> Option<String> {
    if raw.trim_start().starts_with('{') {
        let read: serde_json::Value = serde_json::from_str(raw).ok()?;
        let mut v = read.clone();
        if !scrub_json(&mut v, user) {
            return None;
        }
        // Untouched records are kept byte for byte.
        return if v == read {
            Some(raw.to_string())
        } else {
            serde_json::to_string(&v).ok()
        };
    }
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(raw.as_bytes());
    let mut rec = csv::StringRecord::new();
    if !r.read_record(&mut rec).ok()? {
        return Some(String::new());
    }
    let cells: Vec<String> = rec
        .iter()
        .map(|c| match user {
            Some((u, a)) if c == u => a.to_string(),
            Some((u, a)) => scrub_text(c, u, a),
            None => c.to_string(),
        })
        .collect();
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    w.write_record(&cells).ok()?;
    let mut out = String::from_utf8(w.into_inner().ok()?).ok()?;
    if out.ends_with('\n') && !raw.ends_with('\n') {
        out.pop();
    }
    Some(out)
}

/// Replaces the user id in every key and value of a JSON record (strings equal to it or
/// naming it; a number only as the `user_id` field); false when a user field holds
/// something that is not an id, so the record must be withheld.
fn scrub_json(v: &mut serde_json::Value, user: Option<(&str, &str)>) -> bool {
    use serde_json::Value;
    let text = |s: &str| match user {
        Some((u, a)) if s == u => a.to_string(),
        Some((u, a)) => scrub_text(s, u, a),
        None => s.to_string(),
    };
    match v {
        Value::String(s) => {
            *s = text(s);
            true
        }
        Value::Array(xs) => xs.iter_mut().all(|x| scrub_json(x, user)),
        Value::Object(m) => {
            let mut out = serde_json::Map::with_capacity(m.len());
            for (k, mut x) in std::mem::take(m) {
                if k == "user_id" {
                    // A user field must hold the id that was read (or nothing): anything
                    // else is a raw id the record would leak.
                    match (&x, user) {
                        (Value::Null, _) => {}
                        (Value::String(s), None) if s.is_empty() => {}
                        (Value::String(s), Some((u, a))) if s == u => x = Value::String(a.into()),
                        (Value::Number(n), Some((u, a))) if n.to_string() == u => {
                            x = Value::String(a.into())
                        }
                        _ => return false,
                    }
                } else if !scrub_json(&mut x, user) {
                    return false;
                }
                out.insert(text(&k), x);
            }
            *m = out;
            true
        }
        _ => true,
    }
}

/// Rows parsed before a chunk's first piece is sized for the rest of the chunk.
const SAMPLE_ROWS: usize = 64;

/// Accepted events of one chunk and one UTC day, with the rows dedup later drops.
pub(crate) struct Piece {
    pub day: i32,
    pub rows: EventBuf,
    /// Rows found to be duplicates, ascending.
    pub dropped: Vec<u32>,
}

/// What became of the records of one chunk: the accepted events, split by UTC day into
/// columnar pieces, with their input order; and the rejected records in order. Every
/// record read is in exactly one of the two.
#[derive(Default)]
pub(crate) struct Parsed {
    pub pieces: Vec<Piece>,
    /// Accepted events in input order, as (piece, row).
    pub order: Vec<(u32, u32)>,
    pub bad: Vec<Bad>,
    /// Reused for each record's properties text.
    scratch: String,
    /// The piece the previous event went to (inputs are mostly in time order).
    last: usize,
    /// Bytes of input text the chunk held (0 when not known: Parquet, JSON documents).
    pub text_bytes: usize,
}

impl Parsed {
    /// Records read.
    pub fn read(&self) -> u64 {
        (self.order.len() + self.bad.len()) as u64
    }

    /// A record rejected before its fields were read.
    fn bad(&mut self, line: u64, rejection: Rejection, raw: &[u8]) {
        self.bad.push(Bad {
            line,
            rejection,
            raw: String::from_utf8_lossy(raw).into_owned(),
            mapped: None,
        });
    }

    /// A record whose fields were read (`d`) but failed validation.
    fn invalid(&mut self, line: u64, rejection: Rejection, raw: &[u8], d: &Draft<'_>) {
        self.bad.push(Bad {
            line,
            rejection,
            raw: String::from_utf8_lossy(raw).into_owned(),
            mapped: Some(d.user_id.as_deref().map(str::to_string)),
        });
    }

    /// Validates a draft into the accepted events, or returns why it is rejected.
    fn finish(
        &mut self,
        d: &mut Draft<'_>,
        raw_len: usize,
        limits: &Limits,
    ) -> Result<(), Rejection> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let r = d.finish_with(raw_len, limits, &mut scratch, |row| self.store(row));
        self.scratch = scratch;
        r
    }

    /// After the first rows of a chunk, sizes its first piece for the rest of the chunk
    /// (`seen` of `total` bytes read), so its columns are not grown by repeated doubling.
    fn reserve_rest(&mut self, seen: usize, total: usize) {
        if let [only] = self.pieces.as_mut_slice()
            && seen > 0
        {
            only.rows
                .reserve_scaled(total.saturating_sub(seen) as f64 / seen as f64);
        }
    }

    fn store(&mut self, row: Row<'_>) {
        let day = day_of(row.ts);
        if self.pieces.get(self.last).is_none_or(|p| p.day != day) {
            self.last = match self.pieces.iter().position(|p| p.day == day) {
                Some(i) => i,
                None => {
                    self.pieces.push(Piece {
                        day,
                        rows: EventBuf::default(),
                        dropped: vec![],
                    });
                    self.pieces.len() - 1
                }
            };
        }
        let piece = &mut self.pieces[self.last];
        self.order.push((self.last as u32, piece.rows.len() as u32));
        piece.rows.push(row);
    }
}

/// Parses every record of a chunk, in order. `cloudevents_only` rejects plain records.
pub(crate) fn convert(chunk: Chunk, limits: &Limits, cloudevents_only: bool) -> Parsed {
    let json = |raw, text, line, d: &mut _, out: &mut Parsed| {
        json_record(raw, text, line, d, out, limits, cloudevents_only)
    };
    let mut out = Parsed::default();
    match chunk {
        Chunk::Lines { data, first_line } => {
            out.text_bytes = data.len();
            // memchr finds newlines a word at a time; `split` on a closure went byte by byte.
            let mut start = 0;
            let ends = memchr::memchr_iter(b'\n', &data).chain(std::iter::once(data.len()));
            let mut sized = false;
            let mut d = Draft::default();
            // UTF-8 is checked for the whole chunk at once (SIMD, ~10x faster than line by
            // line); a chunk that fails is checked line by line, so only bad lines are
            // rejected. A line cut at a newline byte is on a char boundary.
            let utf8 = simdutf8::basic::from_utf8(&data).ok();
            for (line, end) in (first_line..).zip(ends) {
                let (s, mut e) = (start, end);
                start = end + 1;
                if e > s && data[e - 1] == b'\r' {
                    e -= 1;
                }
                let raw = &data[s..e];
                if !raw.iter().all(u8::is_ascii_whitespace) {
                    json(raw, utf8.map(|t| &t[s..e]), line, &mut d, &mut out);
                }
                if !sized && out.order.len() == SAMPLE_ROWS {
                    sized = true;
                    out.reserve_rest(start, data.len());
                }
            }
        }
        Chunk::Elements { doc, items } => {
            let mut d = Draft::default();
            for (s, e, line) in items {
                json(&doc[s..e], None, line, &mut d, &mut out);
            }
        }
        Chunk::Oversized { line, head, len } => {
            let r = Rejection::new(
                "record",
                format!("{len} bytes is larger than the 1 MiB limit (first 64 KiB kept)"),
            );
            out.bad(line, r, &head);
        }
        Chunk::Csv {
            data,
            first_line,
            header,
        } => {
            out.text_bytes = data.len();
            csv_chunk(&data, first_line, &header, limits, &mut out)
        }
        Chunk::Rows { batch, first_row } => rows(&batch, first_row, limits, &mut out),
    }
    out
}

/// Parses and validates one JSON record into `out` (accepted or rejected), reusing `d`.
/// `cloudevents_only` rejects plain records.
fn json_record<'a>(
    raw: &'a [u8],
    text: Option<&'a str>,
    line: u64,
    d: &mut Draft<'a>,
    out: &mut Parsed,
    limits: &Limits,
    cloudevents_only: bool,
) {
    if cloudevents_only && memchr::memmem::find(raw, b"\"specversion\"").is_none() {
        out.bad(
            line,
            Rejection::new("specversion", "missing (--format cloudevents)"),
            raw,
        );
        return;
    }
    if let Err(r) = json_draft_into(raw, text, d) {
        out.bad(line, r, raw);
    } else if let Err(r) = out.finish(d, raw.len(), limits) {
        out.invalid(line, r, raw, d);
    }
}

/// A CSV cell as a property: number or bool when it reads as one, else text.
fn cell_prop(s: &str) -> Prop<'_> {
    match s {
        "true" => Prop::Bool(true),
        "false" => Prop::Bool(false),
        _ if is_json_number(s) => Prop::Num(Cow::Borrowed(s)),
        _ => Prop::Str(Cow::Borrowed(s)),
    }
}

fn csv_chunk(data: &[u8], first_line: u64, header: &CsvHeader, limits: &Limits, out: &mut Parsed) {
    let mapping: Vec<Option<&'static str>> = header.names.iter().map(|n| field_of(n)).collect();
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(data);
    let mut rec = csv::ByteRecord::new();
    loop {
        let start = rdr.position().clone();
        let more = match rdr.read_byte_record(&mut rec) {
            Ok(m) => m,
            Err(e) => {
                // Only I/O errors end a csv read of an in-memory slice; record the rest as bad.
                let line = first_line + start.line() - 1;
                out.bad(
                    line,
                    Rejection::new("record", format!("invalid CSV: {e}")),
                    &data[start.byte() as usize..],
                );
                return;
            }
        };
        if !more {
            return;
        }
        let (mut s, e) = (
            rec.position().map(|p| p.byte()).unwrap_or(start.byte()) as usize,
            (rdr.position().byte() as usize).min(data.len()),
        );
        let mut line = first_line + rec.position().map(|p| p.line()).unwrap_or(1) - 1;
        // After a CRLF record the reader stops at the `\n`: the next record's position is
        // that byte, on the line before its own. Skip it, and count the line it ends.
        while s < e && matches!(data[s], b'\r' | b'\n') {
            line += u64::from(data[s] == b'\n');
            s += 1;
        }
        let raw = trim_newline(&data[s..e]);
        if rec.len() == 1 && rec.get(0).is_some_and(|c| c.is_empty()) {
            continue;
        }
        if rec.len() != header.names.len() {
            let r = Rejection::new(
                "record",
                format!(
                    "has {} fields, the header has {}",
                    rec.len(),
                    header.names.len()
                ),
            );
            out.bad(line, r, raw);
            continue;
        }
        match csv_draft(&rec, header, &mapping) {
            Err(r) => out.bad(line, r, raw),
            Ok(mut d) => {
                if let Err(r) = out.finish(&mut d, raw.len(), limits) {
                    out.invalid(line, r, raw, &d);
                }
            }
        }
    }
}

fn trim_newline(b: &[u8]) -> &[u8] {
    let b = b.strip_suffix(b"\n").unwrap_or(b);
    b.strip_suffix(b"\r").unwrap_or(b)
}

fn csv_draft<'a>(
    rec: &'a csv::ByteRecord,
    header: &'a CsvHeader,
    mapping: &[Option<&'static str>],
) -> Result<Draft<'a>, Rejection> {
    let mut d = Draft::default();
    for (i, cell) in rec.iter().enumerate() {
        let name = &header.names[i];
        let cell = std::str::from_utf8(cell)
            .map_err(|_| Rejection::new(name.clone(), "is not valid UTF-8"))?;
        if cell.is_empty() {
            continue;
        }
        let c = Cow::Borrowed(cell);
        match mapping[i] {
            Some("id") => d.id = Some(c),
            Some("ts") => d.ts = Some(TsIn::Text(c)),
            Some("tenant_id") => d.tenant_id = Some(c),
            Some("user_id") => d.user_id = Some(c),
            Some("meter") => d.meter = Some(c),
            Some("value") => {
                d.value =
                    Some(parse_number(cell).ok_or_else(|| format!("{cell:?} is not a number")))
            }
            Some("properties") => props_from_json_text(&mut d, name, cell),
            _ => {
                d.default_prop(Cow::Borrowed(name.as_str()), cell_prop(cell));
            }
        }
    }
    Ok(d)
}

/// Typed Parquet columns, cast once per batch to the shapes the draft wants.
fn rows(batch: &RecordBatch, first_row: u64, limits: &Limits, out: &mut Parsed) {
    let schema = batch.schema();
    let find = |field: &str| {
        schema
            .fields()
            .iter()
            .position(|f| aliases(field).contains(&f.name().as_str()))
    };
    let as_utf8 = |i: Option<usize>| i.and_then(|i| cast(batch.column(i), &DataType::Utf8).ok());
    let (id, tenant, user, meter, props) = (
        as_utf8(find("id")),
        as_utf8(find("tenant_id")),
        as_utf8(find("user_id")),
        as_utf8(find("meter")),
        as_utf8(find("properties")),
    );
    let ts_col = find("ts").map(|i| batch.column(i).clone());
    // Typed timestamps: raw epoch values in their unit (cast to Int64 keeps them as is, in UTC).
    let ts_us = ts_col.as_ref().and_then(|c| {
        let per_unit = match c.data_type() {
            DataType::Timestamp(TimeUnit::Second, _) => 1_000_000,
            DataType::Timestamp(TimeUnit::Millisecond, _) | DataType::Date64 => 1_000,
            DataType::Timestamp(TimeUnit::Microsecond, _) => 1,
            DataType::Timestamp(TimeUnit::Nanosecond, _) => -1_000,
            DataType::Date32 => crate::time::MICROS_PER_DAY,
            _ => return None,
        };
        let raw = if *c.data_type() == DataType::Date32 {
            cast(c, &DataType::Int32).and_then(|a| cast(&a, &DataType::Int64))
        } else {
            cast(c, &DataType::Int64)
        };
        raw.ok().map(|a| (a, per_unit))
    });
    let ts_num = ts_col
        .as_ref()
        .filter(|c| c.data_type().is_numeric())
        .and_then(|c| cast(c, &DataType::Float64).ok());
    let ts_text = ts_col
        .as_ref()
        .filter(|c| {
            matches!(
                c.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            )
        })
        .and_then(|c| cast(c, &DataType::Utf8).ok());
    let value_col = find("value").map(|i| batch.column(i).clone());
    let value = value_col
        .as_ref()
        .and_then(|c| cast(c, &DataType::Float64).ok());
    let value_text = value_col
        .as_ref()
        .and_then(|c| cast(c, &DataType::Utf8).ok());
    // A column that is there but of a type it cannot be read as must not read as absent
    // (a list `value` became the default 1, a struct `user_id` no user): every row is
    // rejected, naming the column and its type.
    let want = |field: &str, got: bool, as_what: &str| {
        let i = find(field)?;
        (!got).then(|| {
            Rejection::new(
                field,
                format!(
                    "the Parquet column `{}` is of type {}, which cannot be read as {as_what}",
                    schema.field(i).name(),
                    schema.field(i).data_type()
                ),
            )
        })
    };
    let unreadable = [
        want("id", id.is_some(), "text"),
        want("tenant_id", tenant.is_some(), "text"),
        want("user_id", user.is_some(), "text"),
        want("meter", meter.is_some(), "text"),
        want("properties", props.is_some(), "a JSON text"),
        want("value", value.is_some(), "a number"),
        want(
            "ts",
            ts_us.is_some() || ts_num.is_some() || ts_text.is_some(),
            "a timestamp, a date, epoch milliseconds or RFC 3339 text",
        ),
    ]
    .into_iter()
    .flatten()
    .next();
    fn s(a: &Option<arrow::array::ArrayRef>, i: usize) -> Option<&str> {
        a.as_ref()
            .map(|a| a.as_string::<i32>())
            .filter(|a| a.is_valid(i))
            .map(|a| a.value(i))
    }
    for i in 0..batch.num_rows() {
        if let Some(r) = &unreadable {
            out.bad.push(Bad {
                line: first_row + i as u64,
                rejection: r.clone(),
                raw: row_json(batch, i),
                mapped: None,
            });
            continue;
        }
        let mut d = Draft {
            id: s(&id, i).map(Cow::Borrowed),
            tenant_id: s(&tenant, i).map(Cow::Borrowed),
            user_id: s(&user, i).map(Cow::Borrowed),
            meter: s(&meter, i).map(Cow::Borrowed),
            ..Draft::default()
        };
        if let Some((a, per_unit)) = &ts_us {
            let a = a.as_primitive::<arrow::datatypes::Int64Type>();
            d.ts = a.is_valid(i).then(|| {
                let v = a.value(i);
                TsIn::Micros(if *per_unit < 0 {
                    v.div_euclid(-per_unit)
                } else {
                    v.saturating_mul(*per_unit)
                })
            });
        } else if let Some(a) = &ts_num {
            let a = a.as_primitive::<arrow::datatypes::Float64Type>();
            d.ts = a.is_valid(i).then(|| TsIn::Millis(a.value(i)));
        } else if ts_text.is_some() {
            d.ts = s(&ts_text, i).map(|t| TsIn::Text(Cow::Borrowed(t)));
        }
        if let Some(a) = &value {
            let a = a.as_primitive::<arrow::datatypes::Float64Type>();
            if a.is_valid(i) {
                d.value = Some(Ok(a.value(i)));
            } else if let Some(t) = s(&value_text, i) {
                d.value = Some(Err(format!("{t:?} is not a number")));
            }
        }
        if let Some(p) = s(&props, i) {
            props_from_json_text(&mut d, "properties", p);
        }
        let row = first_row + i as u64;
        if let Err(r) = out.finish(&mut d, 0, limits) {
            out.bad.push(Bad {
                line: row,
                rejection: r,
                raw: row_json(batch, i),
                mapped: Some(d.user_id.as_deref().map(str::to_string)),
            });
        }
    }
}

/// A Parquet row rendered as JSON, for the quarantine.
fn row_json(batch: &RecordBatch, i: usize) -> String {
    let mut m = serde_json::Map::new();
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        let v = if c.is_null(i) {
            serde_json::Value::Null
        } else {
            match cast(&c.slice(i, 1), &DataType::Utf8) {
                Ok(a) => serde_json::Value::String(a.as_string::<i32>().value(0).to_string()),
                Err(_) => serde_json::Value::String(format!("<{}>", c.data_type())),
            }
        };
        m.insert(f.name().clone(), v);
    }
    serde_json::Value::Object(m).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::source::Pooled;
    use proptest::prelude::*;

    fn bad(raw: &str, user: Option<Option<&str>>, reason: &str) -> Bad {
        Bad {
            line: 1,
            rejection: Rejection {
                field: "meter".into(),
                reason: reason.into(),
            },
            raw: raw.into(),
            mapped: user.map(|u| u.map(str::to_string)),
        }
    }

    #[test]
    fn scrubbing_replaces_the_user_id_and_nothing_else() {
        let p = crate::lake::privacy::Pseudonymiser::new(&[7; 16]).unwrap();
        let a = p.pseudonym("u1");
        // JSON: the user field, keys and whole-id mentions; not the tenant or a longer id.
        let mut b = bad(
            r#"{"id":"e-u1x","tenant_id":"acme-u1","user_id":"u1","meter":"","properties":{"by":"u1","peer":"u12","note":"sent by u1.","u1":3}}"#,
            Some(Some("u1")),
            r#"meter "" is empty (user u1)"#,
        );
        b.rejection.field = "properties.u1".into();
        let s = b.scrubbed(&p);
        let v: serde_json::Value = serde_json::from_str(&s.record.unwrap()).unwrap();
        assert_eq!(v["user_id"], a.as_str());
        assert_eq!(v["tenant_id"], "acme-u1");
        assert_eq!(v["id"], "e-u1x");
        assert_eq!(v["properties"]["by"], a.as_str());
        assert_eq!(v["properties"]["peer"], "u12");
        assert_eq!(v["properties"]["note"], format!("sent by {a}."));
        assert_eq!(v["properties"][a.as_str()], 3);
        assert!(v["properties"].get("u1").is_none());
        assert_eq!(s.reason, format!(r#"meter "" is empty (user {a})"#));
        assert_eq!(s.field, format!("properties.{a}"));
        // A numeric id is replaced by the pseudonym of its text, in the user field only.
        let s = bad(
            r#"{"user_id":42,"value":42,"n":420}"#,
            Some(Some("42")),
            "x",
        )
        .scrubbed(&p);
        let v: serde_json::Value = serde_json::from_str(&s.record.unwrap()).unwrap();
        assert_eq!(v["user_id"], p.pseudonym("42").as_str());
        assert_eq!(
            (v["value"].as_u64(), v["n"].as_u64()),
            (Some(42), Some(420))
        );
        // CSV: the cell, with quoting kept valid.
        let s = bad(r#"e1,acme-u1,u1,"a, b",u12"#, Some(Some("u1")), "x").scrubbed(&p);
        assert_eq!(s.record.unwrap(), format!(r#"e1,acme-u1,{a},"a, b",u12"#));
        // A user field that was not read as an id: withheld, and its reason with it.
        let mut b = bad(
            r#"{"user_id":["u1"]}"#,
            Some(None),
            r#"user_id ["u1"] is not a string"#,
        );
        b.rejection.field = "user_id".into();
        let s = b.scrubbed(&p);
        assert_eq!(s.record, None);
        assert!(
            !s.reason.contains("u1") && s.reason.contains("user_id"),
            "{}",
            s.reason
        );
        // A record not read at all: withheld.
        assert_eq!(
            bad(r#"{"user_id":"u1","x":1"#, None, "x")
                .scrubbed(&p)
                .record,
            None
        );
        // No user at all: kept as is.
        let s = bad(r#"{"user_id":null,"meter":""}"#, Some(None), "x").scrubbed(&p);
        assert_eq!(s.record.unwrap(), r#"{"user_id":null,"meter":""}"#);
    }

    /// Each record's outcome, in input order: the event and key, or the line and reason.
    fn outcomes(p: &Parsed, first_line: u64, lines: usize) -> Vec<String> {
        let mut accepted = p.order.iter().map(|&(pc, r)| {
            let rows = &p.pieces[pc as usize].rows;
            format!("{:?} {:x}", rows.event(r as usize), rows.key[r as usize])
        });
        (first_line..first_line + lines as u64)
            .map(|line| match p.bad.iter().find(|b| b.line == line) {
                Some(b) => format!("{line}: {:?} {}", b.rejection, b.raw),
                None => accepted.next().expect("every line has an outcome"),
            })
            .collect()
    }

    fn lines_chunk(text: String, first_line: u64) -> Chunk {
        Chunk::Lines {
            data: Pooled::unpooled(text.into_bytes()),
            first_line,
        }
    }

    /// Records made of optional members, each in a few variants (valid, invalid, aliased).
    fn record() -> impl Strategy<Value = String> {
        let pick = |options: &'static [&'static str]| proptest::sample::select(options);
        (
            pick(&["", r#""id":"e1""#, r#""id":42"#, r#""id":"""#]),
            pick(&[
                r#""ts":"2026-03-01T10:00:00Z""#,
                r#""timestamp":1772359200000"#,
                "",
                r#""ts":"soon""#,
            ]),
            pick(&[r#""tenant_id":"t1""#, r#""tenant_id":"t2""#, ""]),
            pick(&["", r#""user_id":"u1""#, r#""user_id":null"#]),
            pick(&[r#""meter":"api_calls""#, r#""event_type":"docs""#, ""]),
            pick(&[
                "",
                r#""value":2.5"#,
                r#""quantity":"3""#,
                r#""value":-1"#,
                r#""value":"x""#,
            ]),
            pick(&[
                "",
                r#""properties":{"a":1,"b":"x"}"#,
                r#""properties":{"b":true,"a":1}"#,
                r#""metadata":{"n":{"deep":1}}"#,
            ]),
            pick(&[
                "",
                r#""source":"s1""#,
                r#""extra":7"#,
                r#""specversion":"1.0","type":"api_calls","subject":"t3","time":"2026-03-01T11:00:00Z","data":{"value":4,"user_id":"u9"}"#,
            ]),
        )
            .prop_map(|f| {
                let members: Vec<&str> = [f.0, f.1, f.2, f.3, f.4, f.5, f.6, f.7]
                    .into_iter()
                    .filter(|m| !m.is_empty())
                    .collect();
                format!("{{{}}}", members.join(","))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// A chunk's parser reuses one draft from record to record: nothing of a record
        /// may leak into the next, so each record decides as it would alone.
        #[test]
        fn records_of_a_chunk_decide_as_they_would_alone(
            records in proptest::collection::vec(record(), 1..12)
        ) {
            let limits = Limits::relative_to(1_790_000_000_000_000);
            let whole = convert(lines_chunk(records.join("\n"), 1), &limits, false);
            let alone: Vec<String> = records
                .iter()
                .enumerate()
                .flat_map(|(i, r)| {
                    let line = i as u64 + 1;
                    outcomes(&convert(lines_chunk(r.clone(), line), &limits, false), line, 1)
                })
                .collect();
            prop_assert_eq!(outcomes(&whole, 1, records.len()), alone);
        }
    }

    #[test]
    fn json_numbers_as_written() {
        for (s, ok) in [
            ("1", true),
            ("-2.5", true),
            ("1e9", true),
            ("007", false),
            ("1.", false),
            ("inf", false),
            ("", false),
            ("0", true),
            ("12ab", false),
        ] {
            assert_eq!(is_json_number(s), ok, "{s}");
        }
    }
}
