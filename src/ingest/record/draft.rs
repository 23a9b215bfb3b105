//! The loosely typed [`Draft`] a reader fills from one raw record, the values it holds
//! ([`TsIn`], [`Prop`]) and the [`Rejection`] a record gets instead of an event.
//!
//! First step of a record's way (see [`super`]): readers only map fields here, they
//! decide nothing; the first problem they meet is noted on the draft, so that
//! [`Draft::validate`](super::validate) reports it in its fixed place in the order.

use std::borrow::Cow;
use std::fmt;

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

    pub(super) fn note(&mut self, r: Rejection) {
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
}

/// At most 64 characters of `s`, to quote an input value in a rejection reason.
pub(super) fn short(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
