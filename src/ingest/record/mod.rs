//! One record → one [`Accepted`] event or one [`Rejection`]: field mapping, aliases,
//! CloudEvents envelopes and every validation rule.
//!
//! Every record takes the same way, in the same order, one file per step:
//!
//! ```text
//! raw record ──reader──▶ Draft ──Draft::validate──▶ Valid ──Draft::finish(_with)──▶ Accepted
//!                                  └──────────────── Rejection ◀─┘
//! ```
//!
//! - [`draft`]: the loosely typed [`Draft`] a reader fills, its values ([`TsIn`], [`Prop`])
//!   and [`Rejection`]. Readers only map fields; they decide nothing.
//! - [`fields`]: the canonical field names and their tracker aliases, as JSON keys and as
//!   CSV or Parquet column names.
//! - [`validate`]: the [`Limits`] and every rule, in a fixed order, so the same bad record
//!   always gets the same reason; also timestamp and number parsing.
//! - [`accept`]: a valid draft → [`Accepted`]: the id (given or derived from the content),
//!   the [`dedup_key`] and the `properties` text.
//! - [`json`]: the JSON reader (plain events and CloudEvents envelopes), through the fast
//!   scanner (`super::scan`) or serde_json. The CSV and Parquet readers are in
//!   `super::convert`.
//!
//! Imports run one way: `json` → scanner → `draft`, `fields`, `validate`; `accept` →
//! `validate` → `draft`. Only `json` calls the scanner; the other four import nothing of
//! the readers.

pub(super) mod accept;
pub(super) mod draft;
pub(super) mod fields;
pub(super) mod json;
pub(super) mod validate;

pub use accept::{Accepted, dedup_key};
pub use draft::Rejection;
pub use validate::{
    DEFAULT_MAX_FUTURE, DEFAULT_MIN_TS, Limits, MAX_ID_BYTES, MAX_RECORD_BYTES, check_id,
};

pub(crate) use draft::{Draft, Prop, TsIn};
pub(crate) use json::{json_draft_into, parse_cloudevent_json, parse_json, props_from_json_text};
pub(crate) use validate::parse_number;

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
    fn openmeter_events_flatten_nested_data_and_default_their_time() {
        let ce = r#"{"specversion":"1.0","id":"1","source":"s","type":"prompt","subject":"t1","datacontenttype":"application/json","data":{"usage":{"tokens":7,"cache":{"hit":true}},"model":"m1","tags":["a","b"],"value":{"x":1}}}"#;
        let at = 1_790_000_000_000_000;
        let limits = Limits::relative_to(at);
        let a = json::parse_cloudevent_json(ce.as_bytes(), &limits, at).unwrap();
        assert_eq!(a.event.ts, at, "no `time`: the instant it was received");
        assert_eq!(
            a.event.value, 1.0,
            "`value` nested is a property, not the value"
        );
        let props: serde_json::Value = serde_json::from_str(&a.event.properties).unwrap();
        assert_eq!(
            props,
            serde_json::json!({"usage.tokens": 7, "usage.cache.hit": true, "model": "m1",
                "tags": "[\"a\",\"b\"]", "value.x": 1})
        );
        // The batch path still wants a time, and names it.
        assert_eq!(parse(ce).unwrap_err().field, "time");
        for (bad, field) in [
            (ce.replace("application/json", "text/plain"), "datacontenttype"),
            (ce.replace(r#""specversion":"1.0""#, r#""specversion":"0.3""#), "specversion"),
            (ce.replace(r#""subject":"t1","#, ""), "subject"),
            (
                r#"{"specversion":"1.0","id":"1","source":"s","type":"p","subject":"t1","data":"text"}"#.to_string(),
                "data",
            ),
        ] {
            let e = json::parse_cloudevent_json(bad.as_bytes(), &limits, at).unwrap_err();
            assert_eq!(e.field, field, "{bad}: {e}");
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
