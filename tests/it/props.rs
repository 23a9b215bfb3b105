//! Property: for any mix of good, bad and duplicate records, the accounting balances and
//! the lake holds exactly the first copy of every good event (checked by a fold here).

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::common::*;

#[derive(Debug, Clone)]
enum Rec {
    Good {
        tenant: u8,
        id: u8,
        day: u8,
        value: u16,
    },
    Bad(u8),
}

fn rec() -> impl Strategy<Value = Rec> {
    prop_oneof![
        4 => (0u8..3, 0u8..40, 1u8..28, 0u16..1000).prop_map(|(tenant, id, day, value)| Rec::Good { tenant, id, day, value }),
        1 => (0u8..5).prop_map(Rec::Bad),
    ]
}

fn line(r: &Rec) -> String {
    match r {
        Rec::Good {
            tenant,
            id,
            day,
            value,
        } => format!(
            r#"{{"id":"i{id}","ts":"2026-02-{day:02}T12:00:00Z","tenant_id":"t{tenant}","meter":"m","value":{value}}}"#
        ),
        Rec::Bad(0) => "{\"id\":".into(),
        Rec::Bad(1) => r#"{"id":"x","ts":"2026-02-01T00:00:00Z","meter":"m"}"#.into(),
        Rec::Bad(2) => {
            r#"{"id":"x","ts":"2026-02-01T00:00:00Z","tenant_id":"t","meter":"m","value":-1}"#
                .into()
        }
        Rec::Bad(3) => r#"{"id":"x","ts":"never","tenant_id":"t","meter":"m"}"#.into(),
        Rec::Bad(_) => {
            r#"{"id":"x/y","ts":"2026-02-01T00:00:00Z","tenant_id":"t","meter":"m"}"#.into()
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]
    #[test]
    fn accounting_balances_and_lake_sums_match_a_fold(recs in prop::collection::vec(rec(), 0..120), split in 0usize..120) {
        let dir = tempfile::tempdir().unwrap();
        let split = split.min(recs.len());
        let text = |rs: &[Rec]| rs.iter().map(|r| line(r) + "\n").collect::<String>();
        let f1 = write(dir.path(), "1.ndjson", &text(&recs[..split]));
        // A leading blank line (not a record) keeps the two files' bytes distinct, so the
        // second is never skipped as already ingested.
        let f2 = write(dir.path(), "2.ndjson", &format!("\n{}", text(&recs[split..])));
        // Independent fold: first copy of each (tenant, id) within 35 days wins (all days are
        // within one month, so every later copy is a duplicate).
        let mut first: BTreeMap<(u8, u8), u16> = BTreeMap::new();
        let mut bad = 0u64;
        for r in &recs {
            match r {
                Rec::Good { tenant, id, value, .. } => { first.entry((*tenant, *id)).or_insert(*value); }
                Rec::Bad(_) => bad += 1,
            }
        }
        let lake = dir.path().join("lake");
        let v1 = ingest(&lake, &[&f1], &[]);
        let v2 = ingest(&lake, &[&f2], &[]);
        let total = |k: &str| v1[k].as_u64().unwrap() + v2[k].as_u64().unwrap();
        prop_assert_eq!(total("read"), recs.len() as u64);
        prop_assert_eq!(total("rejected"), bad);
        prop_assert_eq!(total("accepted"), first.len() as u64);
        let rows = read_lake(&lake);
        prop_assert_eq!(rows.len(), first.len());
        let want: f64 = first.values().map(|v| *v as f64).sum();
        let got: f64 = rows.iter().map(|r| r.value).sum();
        prop_assert_eq!(got, want);
    }
}
