//! `meterlake forecast`: fixed-parameter models against statsmodels golden files, optimised
//! ones close to statsmodels' own optimisation, fallbacks, errors, determinism, lake input.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common::*;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/forecast")
}

/// (series, model, step) -> (yhat, lower, upper)
type Table = BTreeMap<(String, String, usize), (f64, Option<f64>, Option<f64>)>;

fn expected() -> Table {
    let mut r = csv::Reader::from_path(golden_dir().join("expected.csv")).unwrap();
    let mut t = Table::new();
    for rec in r.records() {
        let rec = rec.unwrap();
        let f = |i: usize| rec[i].parse::<f64>().ok();
        t.insert(
            (
                rec[0].to_string(),
                rec[1].to_string(),
                rec[2].parse().unwrap(),
            ),
            (f(3).unwrap(), f(4), f(5)),
        );
    }
    t
}

/// One forecast row: ts, yhat, lower, upper, model.
type Row = (String, f64, f64, f64, String);

/// Runs `forecast --series` and reads the CSV back: series -> rows (yhat, lower, upper).
fn run(dir: &Path, input: &Path, args: &[&str]) -> BTreeMap<String, Vec<Row>> {
    let out = dir.join("out.csv");
    let mut a = vec![
        "forecast",
        "--series",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    a.extend(args);
    ok(&a);
    let mut r = csv::Reader::from_path(&out).unwrap();
    assert_eq!(
        r.headers().unwrap().iter().collect::<Vec<_>>(),
        [
            "series_id",
            "ts",
            "model",
            "yhat",
            "yhat_lower",
            "yhat_upper"
        ]
    );
    let mut m: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for rec in r.records() {
        let rec = rec.unwrap();
        let f = |i: usize| rec[i].parse::<f64>().unwrap();
        m.entry(rec[0].to_string()).or_default().push((
            rec[1].to_string(),
            f(3),
            f(4),
            f(5),
            rec[2].to_string(),
        ));
    }
    m
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn fixed_parameter_models_match_statsmodels() {
    let dir = tempfile::tempdir().unwrap();
    let input = golden_dir().join("series.csv");
    let want = expected();
    let cases: [(&str, &str, &[&str]); 7] = [
        ("ses", "ses", &["--alpha", "0.3"]),
        ("holt", "holt", &["--alpha", "0.4", "--beta", "0.2"]),
        (
            "holt_damped",
            "holt_damped",
            &["--alpha", "0.4", "--beta", "0.2", "--phi", "0.9"],
        ),
        (
            "holt_winters",
            "holt_winters",
            &[
                "--alpha",
                "0.3",
                "--beta",
                "0.1",
                "--gamma",
                "0.2",
                "--season-length",
                "7",
            ],
        ),
        (
            "holt_winters_mul",
            "holt_winters_mul",
            &[
                "--alpha",
                "0.3",
                "--beta",
                "0.1",
                "--gamma",
                "0.2",
                "--phi",
                "0.9",
                "--season-length",
                "7",
            ],
        ),
        ("linear_trend", "linear", &["--no-calendar"]),
        ("linear_calendar", "linear", &["--season-length", "7"]),
    ];
    for (golden, model, extra) in cases {
        let mut args = vec!["--horizon", "14", "--model", model];
        args.extend(extra);
        let got = run(dir.path(), &input, &args);
        let mut compared = 0;
        for (sid, rows) in &got {
            for (i, (_, yhat, lo, hi, m)) in rows.iter().enumerate() {
                let Some(&(wy, wl, wu)) = want.get(&(sid.clone(), golden.to_string(), i + 1))
                else {
                    continue;
                };
                assert_eq!(m, model, "{golden} {sid}");
                // The multiplicative model's golden value is exp of the log-scale forecast,
                // the median: the geometric mean of its bounds (its point forecast is the
                // log-normal mean, checked in its own test).
                let yhat = if model == "holt_winters_mul" {
                    &(lo * hi).sqrt()
                } else {
                    yhat
                };
                assert!(
                    close(*yhat, wy, 1e-6),
                    "{golden} {sid} step {}: {yhat} vs statsmodels {wy}",
                    i + 1
                );
                if let (Some(wl), Some(wu)) = (wl, wu) {
                    assert!(
                        close(*lo, wl, 1e-6) && close(*hi, wu, 1e-6),
                        "{golden} {sid} interval: [{lo}, {hi}] vs [{wl}, {wu}]"
                    );
                }
                compared += 1;
            }
        }
        assert!(compared >= 14 * 2, "{golden}: {compared} points compared");
    }
}

/// In-sample SSE of Holt's recursions (SES when `beta` is None) from given states.
fn holt_sse(y: &[f64], alpha: f64, beta: Option<f64>, l0: f64, b0: f64) -> f64 {
    let (mut l, mut b, mut sse) = (l0, if beta.is_some() { b0 } else { 0.0 }, 0.0);
    for &v in y {
        let e = v - (l + b);
        sse += e * e;
        let nl = alpha * v + (1.0 - alpha) * (l + b);
        if let Some(beta) = beta {
            b = beta * (nl - l) + (1.0 - beta) * b;
        }
        l = nl;
    }
    sse
}

#[test]
fn optimised_models_fit_at_least_as_well_as_statsmodels() {
    let dir = tempfile::tempdir().unwrap();
    let input = golden_dir().join("series.csv");
    let want = expected();
    let mut sm_sse: BTreeMap<(String, String), f64> = BTreeMap::new();
    for rec in csv::Reader::from_path(golden_dir().join("expected_sse.csv"))
        .unwrap()
        .records()
    {
        let rec = rec.unwrap();
        sm_sse.insert(
            (rec[0].to_string(), rec[1].to_string()),
            rec[2].parse().unwrap(),
        );
    }
    let mut values: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for rec in csv::Reader::from_path(&input).unwrap().records() {
        let rec = rec.unwrap();
        values
            .entry(rec[0].to_string())
            .or_default()
            .push(rec[2].parse().unwrap());
    }
    for model in ["ses", "holt"] {
        let metrics = dir.path().join("m.csv");
        let got = run(
            dir.path(),
            &input,
            &[
                "--horizon",
                "14",
                "--model",
                model,
                "--metrics",
                metrics.to_str().unwrap(),
            ],
        );
        for rec in csv::Reader::from_path(&metrics).unwrap().records() {
            let rec = rec.unwrap();
            let sid = rec[0].to_string();
            // The fitted parameters and initial states, as printed: recompute the SSE here.
            let p: BTreeMap<&str, f64> = rec[9]
                .split(' ')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k, v.parse().unwrap()))
                .collect();
            let beta = (model == "holt").then(|| p["beta"]);
            let ours = holt_sse(&values[&sid], p["alpha"], beta, p["l0"], p["b0"]);
            let theirs = sm_sse[&(sid.clone(), model.to_string())];
            assert!(
                ours <= theirs * (1.0 + 1e-4),
                "{model} {sid}: SSE {ours} vs statsmodels {theirs}"
            );
            // Where both reach the same optimum, the forecasts agree.
            if ours >= theirs * (1.0 - 1e-4) {
                let golden = format!("{model}_opt");
                for (i, (_, yhat, ..)) in got[&sid].iter().enumerate() {
                    let w = want[&(sid.clone(), golden.clone(), i + 1)].0;
                    assert!(
                        close(*yhat, w, 1e-2),
                        "{golden} {sid} step {}: {yhat} vs statsmodels {w}",
                        i + 1
                    );
                }
            }
        }
    }
}

#[test]
fn auto_picks_seasonal_models_for_seasonal_series_and_reports_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let input = golden_dir().join("series.csv");
    let out = dir.path().join("f.parquet");
    let metrics = dir.path().join("m.csv");
    ok(&[
        "forecast",
        "--series",
        input.to_str().unwrap(),
        "--horizon",
        "7",
        "--out",
        out.to_str().unwrap(),
        "--metrics",
        metrics.to_str().unwrap(),
    ]);
    let mut r = csv::Reader::from_path(&metrics).unwrap();
    assert_eq!(
        r.headers().unwrap().iter().collect::<Vec<_>>(),
        [
            "series_id",
            "model",
            "mae",
            "rmse",
            "smape",
            "mase",
            "coverage",
            "naive_mase",
            "status",
            "params"
        ]
    );
    let rows: BTreeMap<String, csv::StringRecord> = r
        .records()
        .map(|x| {
            let x = x.unwrap();
            (x[0].to_string(), x)
        })
        .collect();
    let season = &rows["season"];
    assert!(
        [
            "holt_winters",
            "holt_winters_mul",
            "ses_seasonal_mul",
            "seasonal_naive",
            "seasonal_moving_average",
            "linear"
        ]
        .contains(&&season[1]),
        "a weekly-seasonal series got {}",
        &season[1]
    );
    // A seasonal series: chosen by AICc, then measured by the backtest.
    assert!(
        season[8].starts_with("auto: lowest AICc") && season[8].contains("backtest MASE"),
        "{}",
        &season[8]
    );
    for (id, x) in &rows {
        for i in 2..8 {
            let v: f64 = x[i].parse().unwrap();
            assert!(v.is_finite() && v >= 0.0, "{id} column {i}: {v}");
        }
    }
    assert!(out.is_file());
}

#[test]
fn short_series_fall_back_bad_input_is_named_and_threads_do_not_change_output() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("series_id,ts,value\n");
    for (id, n) in [("one", 1), ("three", 3), ("nine", 9)] {
        for d in 0..n {
            text += &format!("{id},2026-03-{:02},{}\n", d + 1, 10 + d * 2);
        }
    }
    // A series with a missing day (2026-03-05): filled, and the status says so.
    text += "gap,2026-03-01,10\ngap,2026-03-02,11\ngap,2026-03-03,12\ngap,2026-03-04,13\ngap,2026-03-06,15\n";
    let input = write(dir.path(), "short.csv", &text);
    let metrics = dir.path().join("m.csv");
    let got = run(
        dir.path(),
        &input,
        &[
            "--horizon",
            "5",
            "--model",
            "holt_winters",
            "--metrics",
            metrics.to_str().unwrap(),
        ],
    );
    assert_eq!(got.len(), 4);
    assert_eq!(got["gap"][0].0, "2026-03-07");
    for (id, rows) in &got {
        assert_eq!(rows.len(), 5, "{id}");
        for (ts, y, lo, hi, _) in rows {
            assert!(y.is_finite() && lo <= y && y <= hi, "{id} {ts}");
        }
    }
    assert_eq!(
        got["one"][0].0, "2026-03-02",
        "dates continue the series' step"
    );
    let m = std::fs::read_to_string(&metrics).unwrap();
    assert!(m.contains("holt_winters needs 16 points, got 3"), "{m}");
    assert!(
        m.contains("1 missing steps filled by linear interpolation"),
        "{m}"
    );

    // Same output whatever the thread count.
    let input = golden_dir().join("series.csv");
    let a = dir.path().join("a.csv");
    let b = dir.path().join("b.csv");
    for (out, t) in [(&a, "1"), (&b, "2")] {
        ok(&[
            "forecast",
            "--series",
            input.to_str().unwrap(),
            "--horizon",
            "10",
            "--threads",
            t,
            "--out",
            out.to_str().unwrap(),
        ]);
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());

    // A pipe is read once, whole: the same forecast as the file's.
    let piped = dir.path().join("piped.csv");
    let mut child = std::process::Command::new(BIN)
        .args(["forecast", "--series", "/dev/stdin", "--horizon", "10"])
        .args(["--out", piped.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let text = std::fs::read(&input).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feed = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &text));
    let o = child.wait_with_output().unwrap();
    feed.join().unwrap().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&piped).unwrap(), std::fs::read(&a).unwrap());

    // Errors name the file, line, field or parameter.
    let dup = write(
        dir.path(),
        "dup.csv",
        "series_id,ts,value\ns,2026-01-01,1\ns,2026-01-01,2\n",
    );
    let badv = write(
        dir.path(),
        "badv.csv",
        "series_id,ts,value\ns,2026-01-01,1\ns,2026-01-02,lots\n",
    );
    let nocol = write(dir.path(), "nocol.csv", "id,ts,value\ns,2026-01-01,1\n");
    let out = dir.path().join("x.csv");
    for (case, input, extra, want) in [
        ("two values at one instant", &dup, vec![], "two values at"),
        (
            "a value that is no number",
            &badv,
            vec![],
            "line 3: field `value`: `lots`",
        ),
        ("no series column", &nocol, vec![], "no `series_id` column"),
        (
            "a level over 100 %",
            &input,
            vec!["--level", "120"],
            "--level",
        ),
        ("an alpha over 1", &input, vec!["--alpha", "1.5"], "--alpha"),
        (
            "a horizon of 0",
            &input,
            vec!["--horizon", "0"],
            "--horizon",
        ),
        (
            "auto among the candidates (it left none: naive, said too short)",
            &input,
            vec!["--candidates", "auto"],
            "--candidates",
        ),
    ] {
        let mut a = vec![
            "forecast",
            "--series",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        if !extra.contains(&"--horizon") {
            a.extend(["--horizon", "3"]);
        }
        a.extend(&extra);
        assert_rejected(case, &a, &[want]);
    }
    // Candidates none of which can fit the series (multiplicative, a zero in it): naive, and
    // the status says why (it said the 60-point series was too short to backtest).
    let text: String = std::iter::once("series_id,ts,value\n".to_string())
        .chain((0..60).map(|i| {
            let day =
                chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + chrono::Duration::days(i);
            format!("s,{day},{}\n", i % 7)
        }))
        .collect();
    let zero = write(dir.path(), "zero.csv", &text);
    let metrics = dir.path().join("m.csv");
    ok(&[
        "forecast",
        "--series",
        zero.to_str().unwrap(),
        "--horizon",
        "7",
        "--candidates",
        "holt_winters_mul",
        "--out",
        out.to_str().unwrap(),
        "--metrics",
        metrics.to_str().unwrap(),
    ]);
    let m = std::fs::read_to_string(&metrics).unwrap();
    assert!(m.contains("s,naive,"), "{m}");
    assert!(m.contains("no candidate applies to this series"), "{m}");
}

#[test]
fn lake_forecasts_cover_every_tenant_meter_series() {
    let dir = tempfile::tempdir().unwrap();
    let lake = generated_lake(dir.path(), "2026-09-01", "28", "0.02");
    let s: serde_json::Value = serde_json::from_str(&ok(&[
        "forecast",
        "--lake",
        lake.to_str().unwrap(),
        "--granularity",
        "day",
        "--horizon",
        "7",
        "--output",
        "json",
    ]))
    .unwrap();
    let series = s["series"].as_u64().unwrap();
    assert!(series >= 10, "{s}");
    assert_eq!(s["rows"].as_u64().unwrap(), series * 7, "{s}");
    let f = lake.join("forecasts/granularity=day/forecast.parquet");
    let rows: usize = parquet_batches(&f).map(|b| b.num_rows()).sum();
    assert_eq!(rows as u64, series * 7);
    assert!(
        lake.join("forecasts/granularity=day/metrics.parquet")
            .is_file()
    );
}

/// A lake series of ~50 calls a day with one day of 4,500 (a flagged spike): its forecast
/// interval is that of the same series without the spike, give or take, not the spike's.
/// The same series forecast from a file (as given, no cleaning) shows what the spike alone
/// does to the interval.
#[test]
fn one_spike_does_not_widen_the_lake_forecast_interval() {
    let dir = tempfile::tempdir().unwrap();
    let day0 = chrono::NaiveDate::from_ymd_opt(2026, 8, 3).unwrap();
    let daily = |d: usize| -> usize {
        let base = if d % 7 >= 5 { 30 } else { 60 };
        base + (d * 7919) % 11 - 5
    };
    let (days, spike) = (63, 40);
    let mut events = String::new();
    let (mut with, mut without) = (String::from("series_id,ts,value\n"), String::new());
    without.push_str("series_id,ts,value\n");
    for d in 0..days {
        let date = day0 + chrono::Duration::days(d as i64);
        let n = if d == spike { 4500 } else { daily(d) };
        for i in 0..n {
            let secs = (i * 86_000 / n) as u32;
            events.push_str(&format!(
                "{{\"id\":\"e{d}-{i}\",\"tenant_id\":\"wayne\",\"user_id\":\"u1\",\"meter\":\"api_calls\",\"ts\":\"{date}T{:02}:{:02}:{:02}Z\"}}\n",
                secs / 3600,
                secs / 60 % 60,
                secs % 60
            ));
        }
        with.push_str(&format!("s,{date},{n}\n"));
        without.push_str(&format!("s,{date},{}\n", daily(d)));
    }
    let lake = dir.path().join("lake");
    ingest(&lake, &[&write(dir.path(), "e.ndjson", &events)], &[]);
    ok(&[
        "forecast",
        "--lake",
        lake.to_str().unwrap(),
        "--horizon",
        "14",
    ]);
    let f = lake.join("forecasts/granularity=day/forecast.parquet");
    let upper: f64 = parquet_batches(&f)
        .flat_map(|b| {
            use arrow::array::AsArray;
            let a = b.column_by_name("yhat_upper").unwrap().clone();
            a.as_primitive::<arrow::datatypes::Float64Type>()
                .values()
                .to_vec()
        })
        .fold(f64::MIN, f64::max);
    let widest = |input: &str, name: &str| -> f64 {
        let p = write(dir.path(), name, input);
        run(dir.path(), &p, &["--horizon", "14", "--season-length", "7"])["s"]
            .iter()
            .map(|r| r.3)
            .fold(f64::MIN, f64::max)
    };
    let clean = widest(&without, "without.csv");
    let spiky = widest(&with, "with.csv");
    assert!(
        upper < 1.5 * clean,
        "lake upper bound {upper:.0} against {clean:.0} without the spike"
    );
    // (By 2.5× here: auto fits a multiplicative model, on whose log scale one spike
    // weighs less than on the additive one's.)
    assert!(
        spiky > 2.0 * clean,
        "as given, the spike widens the interval: {spiky:.0} against {clean:.0}"
    );
    let m = lake.join("forecasts/granularity=day/metrics.parquet");
    let status = strings(&m, "status");
    assert!(
        status[0]
            .as_deref()
            .unwrap_or("")
            .contains("1 anomalous point replaced"),
        "{status:?}"
    );
}

#[test]
fn multiplicative_holt_winters_scales_the_season_with_the_level_and_needs_positive_values() {
    let dir = tempfile::tempdir().unwrap();
    // Weekday/weekend usage whose level doubles after eight weeks: the weekly pattern is a
    // ratio, so after the shift the weekend dip is twice as deep in units. A small
    // deterministic wobble keeps the fit away from a perfect zero-error corner.
    let factor = [1.1, 1.15, 1.12, 1.1, 1.05, 0.75, 0.73];
    let level = |t: usize| if t < 56 { 100.0 } else { 200.0 };
    let wobble = |t: usize| 1.0 + 0.01 * (((t * 7919) % 11) as f64 - 5.0) / 5.0;
    let mut text = String::from("series_id,ts,value\n");
    let day = |t: usize| {
        (chrono::NaiveDate::from_ymd_opt(2026, 1, 5).unwrap() + chrono::Days::new(t as u64))
            .format("%Y-%m-%d")
            .to_string()
    };
    for t in 0..84 {
        text += &format!(
            "shift,{},{}\n",
            day(t),
            level(t) * factor[t % 7] * wobble(t)
        );
    }
    // The same shape with one zero: the logarithm does not exist there.
    for t in 0..84 {
        let v = if t == 3 { 0.0 } else { 100.0 * factor[t % 7] };
        text += &format!("zero,{},{v}\n", day(t));
    }
    let input = write(dir.path(), "mul.csv", &text);
    let metrics = dir.path().join("m.csv");
    let fc = |model: &str| {
        run(
            dir.path(),
            &input,
            &[
                "--horizon",
                "7",
                "--season-length",
                "7",
                "--model",
                model,
                "--metrics",
                metrics.to_str().unwrap(),
            ],
        )
    };
    // Mean absolute percentage error against the pattern the series follows (hand-made
    // truth: the new level times the weekly factor).
    let mape = |rows: &[Row]| {
        rows.iter()
            .enumerate()
            .map(|(i, r)| {
                let truth = 200.0 * factor[(84 + i) % 7];
                (r.1 - truth).abs() / truth
            })
            .sum::<f64>()
            / rows.len() as f64
    };
    let mul = fc("holt_winters_mul");
    let status = std::fs::read_to_string(&metrics).unwrap();
    let add = fc("holt_winters");
    let (m, a) = (mape(&mul["shift"]), mape(&add["shift"]));
    assert!(m < 0.02, "multiplicative MAPE {m}");
    assert!(m < a, "multiplicative {m} against additive {a}");
    for (ts, y, lo, hi, model) in &mul["shift"] {
        assert_eq!(model, "holt_winters_mul");
        // The point forecast is the log-normal mean: inside the interval, above its
        // median (the geometric mean of the bounds), by exp(σ²/2) with σ = ln(hi/lo)/2z.
        let median = (lo * hi).sqrt();
        let sigma = (hi / lo).ln() / (2.0 * 1.959_963_984_540_054);
        assert!(lo < y && y < hi && median < *y, "{ts}: {lo} {y} {hi}");
        assert!(
            (y / median - (sigma * sigma / 2.0).exp()).abs() < 1e-9,
            "{ts}: {y} against median {median}, sigma {sigma}"
        );
    }
    // The zero: the model cannot fit, says why, and the additive one is used.
    assert!(mul["zero"].iter().all(|r| r.4 == "holt_winters"));
    assert!(
        status.contains("holt_winters_mul needs positive values, value 3 is 0")
            && status.contains("fell back to holt_winters"),
        "{status}"
    );
}

/// auto chooses a seasonal series' model by AICc (the likelihood of every one-step error)
/// and a non-seasonal one's by the backtest; `--criterion` overrides. On short weekly
/// series with a multiplicative season, level shifts and noise proportional to the level
/// (the shape of `benches/peers/seasonal_auto.py`'s panel, drawn here from a small
/// xorshift), the AICc choice forecasts the held-out two weeks better than the backtest's.
#[test]
fn auto_chooses_seasonal_models_by_aicc_and_non_seasonal_ones_by_backtest() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let h = 14;
    let (mut train, mut held) = (String::from("series_id,ts,value\n"), BTreeMap::new());
    for i in 0..60 {
        let len = (8 + (uniform() * 23.0) as usize) * 7 + h;
        let amp = 0.5 + uniform();
        let week = [0.1, 0.15, 0.12, 0.1, 0.05, -0.25, -0.27].map(|w| 1.0 + w * amp);
        let shift_at = len / 3 + (uniform() * (len - len / 3) as f64) as usize;
        let shift = 0.6 + uniform();
        let noise = 0.03 + 0.09 * uniform();
        let mut y = Vec::with_capacity(len);
        for t in 0..len {
            // A sum of 12 uniforms less 6: close to a standard normal.
            let z = (0..12).map(|_| uniform()).sum::<f64>() - 6.0;
            let level = 100.0 * if t > shift_at { shift } else { 1.0 };
            y.push(level * week[t % 7] * (1.0 + noise * z).max(0.05));
        }
        let day0 = chrono::NaiveDate::from_ymd_opt(2025, 1, 6).unwrap();
        for (t, v) in y[..len - h].iter().enumerate() {
            train += &format!("w{i},{},{v:.3}\n", day0 + chrono::Days::new(t as u64));
        }
        held.insert(format!("w{i}"), y[len - h..].to_vec());
    }
    let input = write(dir.path(), "panel.csv", &train);
    let metrics = dir.path().join("m.csv");
    let fc = |extra: &[&str]| {
        let mut args = vec!["--horizon", "14", "--metrics", metrics.to_str().unwrap()];
        args.extend(extra);
        let rows = run(dir.path(), &input, &args);
        let status: Vec<String> = csv::Reader::from_path(&metrics)
            .unwrap()
            .records()
            .map(|r| r.unwrap()[8].to_string())
            .collect();
        // Mean sMAPE over the held-out weeks, computed here.
        let smape = held
            .iter()
            .map(|(id, truth)| {
                rows[id]
                    .iter()
                    .zip(truth)
                    .map(|(r, y)| 200.0 * (r.1 - y).abs() / (r.1.abs() + y.abs()))
                    .sum::<f64>()
                    / h as f64
            })
            .sum::<f64>()
            / held.len() as f64;
        (smape, status)
    };
    let (aicc, status) = fc(&["--season-length", "7"]);
    assert!(
        status.iter().all(|s| s.starts_with("auto: lowest AICc")),
        "{status:?}"
    );
    let (backtest, status) = fc(&["--season-length", "7", "--criterion", "backtest"]);
    assert!(
        status
            .iter()
            .all(|s| s.starts_with("auto: lowest backtest MASE")),
        "{status:?}"
    );
    assert!(
        aicc < backtest,
        "sMAPE by AICc {aicc:.3} against by backtest {backtest:.3}"
    );
    // Without a season, the backtest decides (M4 Weekly's validation origins chose it).
    let (_, status) = fc(&["--season-length", "1"]);
    assert!(
        status
            .iter()
            .all(|s| s.starts_with("auto: lowest backtest MASE")),
        "{status:?}"
    );
}

/// Every counter of the sample's lake is forecast from the day after the lake's last day,
/// also one whose last event is older (umbrella-004's ingest_bytes, last on Oct 8: its
/// forecast started Oct 9, half of the "next 30 days" already past); gauges, which have no
/// reading since, start after their own last day.
#[test]
fn lake_counters_are_forecast_from_the_lakes_last_day() {
    use arrow::array::AsArray;
    let s = sample();
    let last = read_lake(&s.lake).iter().map(|r| r.ts).max().unwrap();
    let next = (last.div_euclid(86_400_000_000) + 1) * 86_400_000_000;
    let f = s.lake.join("forecasts/granularity=day/forecast.parquet");
    let mut first: BTreeMap<(String, String), i64> = BTreeMap::new();
    for b in parquet_batches(&f) {
        let (t, m) = (string_col(&b, "tenant_id"), string_col(&b, "meter"));
        let ts = b
            .column_by_name("ts")
            .unwrap()
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
            .clone();
        for i in 0..b.num_rows() {
            let e = first
                .entry((t[i].clone().unwrap(), m[i].clone().unwrap()))
                .or_insert(i64::MAX);
            *e = (*e).min(ts.value(i));
        }
    }
    let counters = [
        "api_calls",
        "documents",
        "ai_tokens",
        "ingest_bytes",
        "active_users",
    ];
    let mut checked = 0;
    for ((t, m), start) in &first {
        if counters.contains(&m.as_str()) {
            assert_eq!(*start, next, "{t} {m}");
            checked += 1;
        }
    }
    assert!(first.contains_key(&("umbrella-004".into(), "ingest_bytes".into())));
    assert!(checked > 60, "{checked}");
}
