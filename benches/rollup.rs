//! Rollup throughput (events/s): full daily and hourly rollups of a generated lake with the
//! built-in meters, and a usage query over a week. `cargo bench --bench rollup`.
//! Side-by-side ratios against DuckDB on a 20M-event lake live in `benches/peers/rollup.sh`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use meterlake::generate::{GenConfig, generate};
use meterlake::ingest::{IngestOptions, ingest};
use meterlake::lake::Lake;
use meterlake::rollup::{Granularity, Meters, RollupOptions, RollupSpec, rollup};
use meterlake::usage::{Compare, UsageQuery, usage};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = GenConfig {
        tenants: 200,
        days: 30,
        start: chrono::NaiveDate::from_ymd_opt(2026, 1, 5).unwrap(),
        seed: 5,
        scale: 0.08,
        late_rate: 0.02,
        dup_rate: 0.01,
        bad_rate: 0.003,
    };
    let input = dir.path().join("events.ndjson");
    let mut f = std::fs::File::create(&input).unwrap();
    generate(&cfg, &mut f).unwrap();
    drop(f);
    let lake_dir = dir.path().join("lake");
    let s = ingest(&lake_dir, &[input], &IngestOptions::default()).unwrap();
    let lake = Lake::open(&lake_dir).unwrap();
    let meters = Meters::default();
    let mut g = c.benchmark_group(format!("rollup/{} events", s.accepted));
    g.sample_size(10)
        .throughput(Throughput::Elements(s.accepted));
    for gran in [Granularity::Day, Granularity::Hour] {
        let spec = RollupSpec::new(gran);
        let full = RollupOptions {
            full: true,
            ..Default::default()
        };
        g.bench_function(format!("full {gran}"), |b| {
            b.iter(|| rollup(&lake, &meters, &spec, &full).unwrap().rows_written)
        });
    }
    let q = UsageQuery {
        tenant: None,
        meter: None,
        from: meterlake::time::parse_instant("from", "2026-01-19").unwrap(),
        to: meterlake::time::parse_instant("to", "2026-01-26").unwrap(),
        by: Some("property:endpoint".parse().unwrap()),
        compare: Some(Compare::Previous),
        top: 10,
    };
    g.bench_function("usage week by endpoint vs previous", |b| {
        b.iter(|| usage(&lake, &meters, &q).unwrap().totals.len())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
