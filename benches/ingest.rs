//! Ingest throughput (events/s) for NDJSON and CSV, with validation and dedup on, and the
//! generator's throughput.
//!
//! `cargo bench --bench ingest`. Inputs come from the generator (seeded), so every run
//! measures the same bytes. Side-by-side ratios against DuckDB and polars live in
//! `benches/peers/`.

use std::io::Write;
use std::path::{Path, PathBuf};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use meterlake::generate::{GenConfig, generate};
use meterlake::ingest::{IngestOptions, ingest};

/// Input shapes: ~250k events is large enough that per-run fixed costs (lake open, commit)
/// are a small share, small enough for criterion's repeated samples on 2 cores.
const SHAPES: [(&str, usize, u32, f64); 1] = [("200 tenants x 14 days", 200, 14, 0.18)];

fn inputs(dir: &Path, tenants: usize, days: u32, scale: f64) -> (PathBuf, PathBuf, u64) {
    let cfg = GenConfig {
        tenants,
        days,
        start: chrono::NaiveDate::from_ymd_opt(2026, 1, 5).unwrap(),
        seed: 1,
        scale,
        late_rate: 0.02,
        dup_rate: 0.01,
        bad_rate: 0.003,
    };
    let mut buf = Vec::new();
    let (summary, _, _) = generate(&cfg, &mut buf).unwrap();
    let nd = dir.join("events.ndjson");
    std::fs::write(&nd, &buf).unwrap();
    // The same events as CSV with a JSON properties column (malformed lines dropped).
    let csv_path = dir.join("events.csv");
    let mut w = csv::Writer::from_path(&csv_path).unwrap();
    let columns: Vec<String> = meterlake::event::lake_schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    w.write_record(&columns).unwrap();
    for line in buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        let s = |k: &str| {
            v.get(k)
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| x.to_string())
                })
                .unwrap_or_default()
        };
        w.write_record(columns.iter().map(|c| s(c))).unwrap();
    }
    w.flush().unwrap();
    (nd, csv_path, summary.lines)
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    for (name, tenants, days, scale) in SHAPES {
        let (nd, csv, lines) = inputs(dir.path(), tenants, days, scale);
        let mut g = c.benchmark_group(format!("ingest/{name}"));
        g.sample_size(10).throughput(Throughput::Elements(lines));
        for (fmt, path) in [("ndjson", &nd), ("csv", &csv)] {
            g.bench_function(fmt, |b| {
                b.iter_batched(
                    || tempfile::tempdir().unwrap(),
                    |lake| {
                        let s = ingest(
                            lake.path(),
                            std::slice::from_ref(path),
                            &IngestOptions::default(),
                        )
                        .unwrap();
                        assert!(s.accepted > 0);
                        lake
                    },
                    BatchSize::PerIteration,
                )
            });
        }
        g.finish();
    }
    std::io::stderr().flush().ok();
}

/// Generator throughput (events/s), the figure `generate` promises (>= 1 M events/s):
/// 100 tenants x 7 days written to a sink, so only generation is measured.
fn bench_generate(c: &mut Criterion) {
    let cfg = GenConfig {
        tenants: 100,
        days: 7,
        start: chrono::NaiveDate::from_ymd_opt(2026, 1, 5).unwrap(),
        seed: 3,
        scale: 1.0,
        late_rate: 0.02,
        dup_rate: 0.01,
        bad_rate: 0.003,
    };
    let (summary, _, _) = generate(&cfg, &mut std::io::sink()).unwrap();
    let mut g = c.benchmark_group("generate");
    g.sample_size(10)
        .throughput(Throughput::Elements(summary.lines));
    g.bench_function("100 tenants x 7 days", |b| {
        b.iter(|| generate(&cfg, &mut std::io::sink()).unwrap().0.lines)
    });
    g.finish();
}

criterion_group!(benches, bench, bench_generate);
criterion_main!(benches);
