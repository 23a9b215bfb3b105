//! Draft → `Valid`: every rule a record must pass, checked in a fixed order so the same
//! bad record always gets the same reason, and the [`Limits`] they check against.
//!
//! Second step of a record's way (see [`super`]). The order: record size, a problem the
//! reader noted, `tenant_id`, `meter`, `ts` (present, parsed, in range), the id-like fields
//! (`tenant_id`, `meter`, `user_id`, `id`), `value` (finite, not negative; 1 if absent);
//! then the properties are sorted. Also here: parsing a timestamp ([`parse_ts`], with a
//! fast RFC 3339 path) and a number ([`parse_number`]) from the text a reader found.

use super::draft::{Draft, Props, Rejection, TsIn, short};

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
    /// Replaces every user id by its keyed pseudonym (`privacy.pseudonymise_users`).
    pub pseudonym: Option<&'static crate::lake::privacy::Pseudonymiser>,
}

impl Limits {
    /// The defaults: from 2000-01-01 to 24 hours after `now` (µs).
    pub fn relative_to(now_micros: i64) -> Self {
        Limits {
            min_ts: DEFAULT_MIN_TS,
            max_ts: now_micros.saturating_add(DEFAULT_MAX_FUTURE),
            pseudonym: None,
        }
    }

    /// The same limits, pseudonymising user ids with `p` (if any).
    pub fn pseudonymising(self, p: Option<&'static crate::lake::privacy::Pseudonymiser>) -> Self {
        Limits {
            pseudonym: p,
            ..self
        }
    }
}

impl<'a> Draft<'a> {
    /// Checks every rule in a fixed order (sorting the properties in place).
    pub(super) fn validate(
        &mut self,
        raw_len: usize,
        limits: &Limits,
    ) -> Result<Valid<'_, 'a>, Rejection> {
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
                    crate::time::rfc3339_micros(ts),
                    crate::time::rfc3339_micros(limits.min_ts),
                    crate::time::rfc3339_micros(limits.max_ts)
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
            pseudonym: limits
                .pseudonym
                .zip(self.user_id.as_deref())
                .map(|(p, u)| p.pseudonym(u)),
            meter,
            value,
            props: &self.props,
            props_raw: self.props_raw,
        })
    }
}

/// A draft that passed every rule, borrowed from it; properties sorted.
pub(super) struct Valid<'d, 'a> {
    pub(super) id: Option<&'d str>,
    pub(super) source: Option<&'d str>,
    pub(super) ts: i64,
    pub(super) tenant_id: &'d str,
    user_id: Option<&'d str>,
    /// The user id's pseudonym, when the limits pseudonymise.
    pseudonym: Option<String>,
    pub(super) meter: &'d str,
    pub(super) value: f64,
    pub(super) props: &'d Props<'a>,
    pub(super) props_raw: Option<&'a str>,
}

impl Valid<'_, '_> {
    /// The user id as stored: its pseudonym when pseudonymising, else as given.
    pub(super) fn user_id(&self) -> Option<&str> {
        self.pseudonym.as_deref().or(self.user_id)
    }
}

fn required<'d>(v: Option<&'d str>, field: &'static str) -> Result<&'d str, Rejection> {
    v.ok_or_else(|| Rejection::new(field, "missing"))
}

/// Id-like fields end up in file names, URLs and SQL: keep them short and printable, with
/// no path separator, and not `.` or `..`. The rule for every tenant id meterlake takes,
/// from an event, a key or a request.
pub fn check_id(field: &'static str, v: &str) -> Result<(), Rejection> {
    if v == "." || v == ".." {
        return Err(Rejection::new(
            field,
            format!("{v:?} is a path component, not an id"),
        ));
    }
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

/// A number as text: JSON numbers plus `NaN`/`inf` spelled out (rejected later as not finite).
pub(crate) fn parse_number(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    s.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
