//! Forecast throughput (series/s): 1,000 daily series of one year (weekly season, trend,
//! noise; seeded) forecast 30 days ahead with single models and with `auto` (which also
//! backtests every candidate). `cargo bench --bench forecast`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use meterlake::forecast::{ModelKind, ModelOptions, forecast_many};
use rand::{Rng, SeedableRng};

fn series(n: usize, len: usize) -> Vec<Vec<f64>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    (0..n)
        .map(|i| {
            let level = 50.0 + (i % 17) as f64 * 20.0;
            let slope = ((i % 5) as f64 - 2.0) * 0.05;
            (0..len)
                .map(|t| {
                    let week = [0.0, 4.0, 6.0, 5.0, 3.0, -9.0, -12.0][t % 7];
                    level + slope * t as f64 + week + rng.random_range(-4.0..4.0)
                })
                .collect()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let data = series(1000, 365);
    let refs: Vec<&[f64]> = data.iter().map(Vec::as_slice).collect();
    let opts = ModelOptions::default();
    let mut g = c.benchmark_group("forecast/1000 series x 365 days, h=30");
    g.sample_size(10)
        .throughput(Throughput::Elements(refs.len() as u64));
    for kind in [
        ModelKind::SeasonalNaive,
        ModelKind::Ses,
        ModelKind::HoltWinters,
        ModelKind::HoltWintersMul,
        ModelKind::SesSeasonalMul,
        ModelKind::Linear,
        ModelKind::Auto,
    ] {
        g.bench_function(format!("{kind:?}"), |b| {
            b.iter(|| forecast_many(&refs, 30, 0.95, kind, &opts).len())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
