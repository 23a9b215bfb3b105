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

/// A usage event for the rollup property: tenant, meter (0 = api_calls, counted; 1 =
/// ai_tokens, summed), minute offset from 2026-10-20 (three weeks, across the US DST change
/// and a month boundary) and value.
fn usage_event() -> impl Strategy<Value = (u8, u8, u32, u16)> {
    (0u8..3, 0u8..2, 0u32..(21 * 24 * 60), 0u16..1000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]
    #[test]
    fn count_and_sum_rollups_keep_totals_across_granularities_and_zones(
        evs in prop::collection::vec(usage_event(), 1..80),
        split in 0usize..80,
        g in 0usize..4,
        zone in 0usize..4,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let tz = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"][zone];
        let g = ALL_G[g];
        let start = chrono::NaiveDate::from_ymd_opt(2026, 10, 20).unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc();
        let line = |i: usize, (t, m, min, v): &(u8, u8, u32, u16)| {
            let ts = (start + chrono::Duration::minutes(*min as i64)).to_rfc3339();
            let meter = ["api_calls", "ai_tokens"][*m as usize];
            format!("{{\"id\":\"e{i}\",\"ts\":\"{ts}\",\"tenant_id\":\"t{t}\",\"meter\":\"{meter}\",\"value\":{v}}}\n")
        };
        let split = split.min(evs.len());
        let text = |r: std::ops::Range<usize>| r.map(|i| line(i, &evs[i])).collect::<String>();
        let f1 = write(dir.path(), "1.ndjson", &text(0..split));
        let f2 = write(dir.path(), "2.ndjson", &format!("\n{}", text(split..evs.len())));
        let meters = write(dir.path(), "m.toml", "[[meter]]\nname = \"api_calls\"\naggregation = \"count\"\n[[meter]]\nname = \"ai_tokens\"\naggregation = \"sum\"\n");
        let lake = dir.path().join("lake");
        let args = ["--granularity", g.name(), "--tz", tz];
        // Roll up between the two ingests, so the second rollup is incremental.
        ingest(&lake, &[&f1], &[]);
        if split > 0 {
            rollup_json(&lake, &meters, &args);
        }
        ingest(&lake, &[&f2], &[]);
        let s = rollup_json(&lake, &meters, &args);
        let keys = vec!["tenant_id".to_string(), "meter".to_string()];
        let got = read_rollup(std::path::Path::new(s["dir"].as_str().unwrap()), &keys);
        let mut want: BTreeMap<(String, String), (f64, i64)> = BTreeMap::new();
        for (t, m, _, v) in &evs {
            let e = want.entry((format!("t{t}"), ["api_calls", "ai_tokens"][*m as usize].to_string())).or_default();
            e.0 += if *m == 0 { 1.0 } else { *v as f64 };
            e.1 += 1;
        }
        let mut have: BTreeMap<(String, String), (f64, i64)> = BTreeMap::new();
        let mut prev: BTreeMap<(String, String), i64> = BTreeMap::new();
        for ((k, w), (end, v, n)) in &got {
            let key = (k[0].clone().unwrap(), k[1].clone().unwrap());
            // Complete series: each window starts where the previous one ended.
            if let Some(p) = prev.insert(key.clone(), *end) {
                prop_assert_eq!(p, *w, "gap before {:?} {}", key, w);
            }
            prop_assert!(end > w);
            let e = have.entry(key).or_default();
            e.0 += v;
            e.1 += n;
        }
        prop_assert_eq!(have.len(), want.len());
        for (k, (v, n)) in &want {
            let (hv, hn) = have[k];
            prop_assert!((hv - v).abs() < 1e-6, "{:?}: {} vs {}", k, hv, v);
            prop_assert_eq!(hn, *n, "{:?}", k);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// No look-ahead: every detector judges a point on the points up to it, so the flags of
    /// a prefix of a series are exactly the full series' flags within that prefix, after the
    /// volume guard, and the reported points too.
    #[test]
    fn detectors_never_look_ahead(
        ys in proptest::collection::vec(0u16..200, 200..700),
        spikes in proptest::collection::vec((0usize..700, 300u16..3000), 0..6),
        cut in 50usize..700,
        hourly in any::<bool>(),
        plain in any::<bool>(),
    ) {
        use meterlake::stage::anomalies::{DetectSpec, detect_series};
        use meterlake::detect::DetectConfig;
        use meterlake::series::Series;
        let mut y: Vec<f64> = ys.iter().map(|&v| v as f64).collect();
        for (i, v) in spikes {
            if i < y.len() {
                y[i] = v as f64;
            }
        }
        let step = if hourly { 3_600_000_000 } else { 300_000_000 };
        let ts: Vec<i64> = (0..y.len() as i64).map(|i| 1_788_220_800_000_000 + i * step).collect();
        let spec = DetectSpec {
            // The lake's detectors, or a plain series' defaults with every detector added
            // (likelihood, "seen before" and level shifts: all causal too).
            config: if plain {
                DetectConfig { seen_before: Some(0.0), ..DetectConfig::series() }
                    .with_detectors("zscore,robust,seasonal,velocity").unwrap()
            } else {
                DetectConfig::default().with_detectors("zscore,robust,seasonal,velocity,pattern").unwrap()
            },
            since: None,
            threads: Some(1),
        };
        // Through the whole per-series path: detectors, the lake's event-count guard (the
        // values as counts), incidents and reporting.
        let run = |n: usize| {
            let s = vec![Series { id: "s".into(), ts: ts[..n].to_vec(), values: y[..n].to_vec() }];
            let counts = vec![y[..n].to_vec()];
            detect_series(&s, &spec, &|_| Vec::new(), Some(&counts), Some(step))
                .unwrap()
                .into_iter()
                .flat_map(|f| f.points)
                .collect::<Vec<_>>()
        };
        let cut = cut.min(y.len());
        let full: Vec<_> = run(y.len()).into_iter().filter(|p| p.index < cut).collect();
        prop_assert_eq!(run(cut), full);
    }
}

// Pricing: graduated tiers price each whole unit by the tier it falls in, volume tiers
// price all units by the tier of the total, a package is billed per started package;
// checked unit by unit with a fold, in exact decimals.
fn tiers() -> impl Strategy<Value = Vec<meterlake::billing::Tier>> {
    proptest::collection::vec((1u32..40, 0u32..300, 0u32..3), 1..5).prop_map(|raw| {
        let mut bound = 0u32;
        let n = raw.len();
        raw.into_iter()
            .enumerate()
            .map(|(i, (width, cents, flat))| {
                bound += width;
                meterlake::billing::Tier {
                    up_to: (i + 1 < n).then(|| rust_decimal::Decimal::from(bound)),
                    price: rust_decimal::Decimal::new(cents as i64, 2),
                    flat: rust_decimal::Decimal::from(flat),
                }
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn tiered_prices_match_a_unit_by_unit_fold(t in tiers(), q in 0u32..200, size in 1u32..25) {
        use meterlake::billing::Pricing;
        use rust_decimal::Decimal;
        let tier_of = |unit: u32| {
            t.iter()
                .position(|x| x.up_to.is_none_or(|u| Decimal::from(unit) <= u))
                .unwrap()
        };
        // Graduated: unit k (1-based) costs its tier's price; each tier touched adds its flat.
        let mut want = Decimal::ZERO;
        let mut touched = std::collections::BTreeSet::new();
        for k in 1..=q {
            want += t[tier_of(k)].price;
            touched.insert(tier_of(k));
        }
        want += touched.iter().map(|&i| t[i].flat).sum::<Decimal>();
        let g = Pricing::Graduated(t.clone());
        prop_assert!(g.validate().is_ok());
        prop_assert_eq!(g.cost(Decimal::from(q)), want);
        // Volume: all q units at the tier q falls in, plus its flat.
        let v = Pricing::Volume(t.clone());
        let want = if q == 0 { Decimal::ZERO } else { Decimal::from(q) * t[tier_of(q)].price + t[tier_of(q)].flat };
        prop_assert_eq!(v.cost(Decimal::from(q)), want);
        // Package: count the packages started while adding units one by one.
        let p = Pricing::Package { size: Decimal::from(size), price: Decimal::new(1, 2) };
        let started = (0..q).filter(|k| k % size == 0).count();
        prop_assert_eq!(p.cost(Decimal::from(q)), Decimal::new(started as i64, 2));
    }
}
