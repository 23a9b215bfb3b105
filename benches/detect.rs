//! Detector throughput (points/s): 10,000 hourly series of 2,000 points (daily and weekly
//! cycle, noise, a few spikes; seeded), each detector alone and z-score plus velocity
//! together, in parallel over series on all cores (rayon). `cargo bench --bench detect`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use meterlake::detect::{
    Detector, Flag, SeriesView, pattern::OffHours, velocity::Velocity, zscore,
};
use meterlake::time::MICROS_PER_HOUR as HOUR;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

const SERIES: usize = 10_000;
const POINTS: usize = 2_000;

fn series() -> (Vec<i64>, Vec<Vec<f64>>) {
    let ts: Vec<i64> = (0..POINTS as i64)
        .map(|i| 1_767_225_600_000_000 + i * HOUR)
        .collect();
    let data = (0..SERIES)
        .map(|i| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(i as u64);
            let level = 20.0 + (i % 50) as f64 * 10.0;
            (0..POINTS)
                .map(|t| {
                    let hour = (t % 24) as f64;
                    let day = 1.0 + 0.8 * (std::f64::consts::PI * (hour - 6.0) / 12.0).sin();
                    let week = if (t / 24) % 7 >= 5 { 0.4 } else { 1.0 };
                    let spike = if rng.random::<f64>() < 0.001 {
                        10.0
                    } else {
                        1.0
                    };
                    (level * day * week * spike * rng.random_range(0.8..1.2)).round()
                })
                .collect()
        })
        .collect();
    (ts, data)
}

fn run(ts: &[i64], data: &[Vec<f64>], detectors: &[&dyn Detector]) -> usize {
    data.par_iter()
        .map(|y| {
            let s = SeriesView {
                ts,
                values: y,
                step: HOUR,
            };
            let mut out: Vec<Flag> = Vec::new();
            for d in detectors {
                d.detect(&s, &mut out);
            }
            out.len()
        })
        .sum()
}

fn bench(c: &mut Criterion) {
    let (ts, data) = series();
    let rolling = zscore::Rolling {
        window: None,
        threshold: 3.0,
    };
    let robust = zscore::Robust {
        window: None,
        threshold: 3.0,
    };
    let seasonal = zscore::Seasonal {
        threshold: 3.0,
        likelihood: None,
        level_shift: 0,
        seen_before: None,
    };
    let velocity = Velocity {
        spike_ratio: 5.0,
        drop_ratio: 0.1,
        min_volume: 20.0,
        threshold: 3.0,
        seen_before: None,
    };
    let off_hours = OffHours {
        threshold: 3.0,
        min_volume: 20.0,
    };
    let mut g = c.benchmark_group(format!("detect/{SERIES} series x {POINTS} hourly points"));
    g.sample_size(10)
        .throughput(Throughput::Elements((SERIES * POINTS) as u64));
    let sets: [(&str, Vec<&dyn Detector>); 6] = [
        ("zscore", vec![&rolling]),
        ("velocity", vec![&velocity]),
        ("zscore+velocity", vec![&rolling, &velocity]),
        ("robust", vec![&robust]),
        ("seasonal", vec![&seasonal]),
        ("off_hours", vec![&off_hours]),
    ];
    for (name, set) in &sets {
        g.bench_function(*name, |b| b.iter(|| run(&ts, &data, set)));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
