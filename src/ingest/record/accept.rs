//! `Valid` → [`Accepted`]: the id (given, or derived from the content), the dedup key
//! and the lake's `properties` text, built either as an owned event ([`Draft::finish`])
//! or as borrowed fields handed to a column buffer ([`Draft::finish_with`], the hot path).
//!
//! Last step of a record's way (see [`super`]).

use std::borrow::Cow;

use super::draft::{Draft, Prop, Rejection};
use super::validate::{Limits, Valid};
use crate::event::UsageEvent;
use crate::lake::Row;

/// A valid event with its dedup key.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The event to store.
    pub event: UsageEvent,
    /// 128-bit dedup key: hash of (scope, id), scope = CloudEvents `source` or the tenant.
    pub key: u128,
}

impl<'a> Draft<'a> {
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
                user_id: v.user_id().map(str::to_string),
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
            user: v.user_id(),
            meter: v.meter,
            value: v.value,
            props,
            key,
        });
        Ok(())
    }
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
                self.user_id(),
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
