//! `/check-quota` latency while `serve` refreshes its analytics (forecasts, anomalies,
//! quotas, alerts) on a large lake: the refresh runs at low priority on one core, and the
//! quota check must stay fast meanwhile.
//!
//! Starts the release binary on a copy of `MLK_REFRESH_LAKE` (a lake; its tenants file
//! and plans come from `MLK_REFRESH_CONFIG`, a meterlake.toml), with the refresh state
//! removed so the refresh at start recomputes everything (the heaviest case), then times
//! `GET /check-quota` from one keep-alive client while that refresh runs and for as many
//! requests after it; prints p50, p99 and max of each, the refresh's duration and the
//! server's peak RSS.
//!
//! `cargo build --release && MLK_REFRESH_LAKE=... MLK_REFRESH_CONFIG=... MLK_TENANT=...
//! cargo bench --bench serve_refresh` (MLK_BIN overrides the binary). The 1,000-tenant
//! lake: `meterlake generate --tenants 1000 --days 90 --start 2026-07-01 --seed 3
//! --scale 0.02 --out E --tenants-out tenants.csv`, then `meterlake ingest E --lake L`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn metric(agent: &ureq::Agent, base: &str, name: &str) -> f64 {
    let text = agent
        .get(&format!("{base}/prometheus"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

fn main() {
    let (Ok(src), Ok(config), Ok(tenant)) = (
        std::env::var("MLK_REFRESH_LAKE"),
        std::env::var("MLK_REFRESH_CONFIG"),
        std::env::var("MLK_TENANT"),
    ) else {
        eprintln!(
            "serve_refresh: set MLK_REFRESH_LAKE, MLK_REFRESH_CONFIG and MLK_TENANT (see the file's docs); skipped"
        );
        return;
    };
    let bin = std::env::var("MLK_BIN").unwrap_or_else(|_| "target/release/meterlake".into());
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    copy_dir(std::path::Path::new(&src), &lake);
    let _ = std::fs::remove_file(lake.join("_serve/refresh.json"));
    let _ = std::fs::remove_dir_all(lake.join("_wal"));
    let out = Command::new(&bin)
        .args([
            "serve-keys",
            "add",
            "--lake",
            lake.to_str().unwrap(),
            "--tenant",
            &tenant,
        ])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let key = text
        .split_whitespace()
        .find(|w| w.starts_with("mlk_"))
        .expect("a key")
        .to_string();
    let mut child = Command::new(&bin)
        .args([
            "serve",
            "--lake",
            lake.to_str().unwrap(),
            "--bind",
            "127.0.0.1:0",
            "--config",
            &config,
        ])
        .env("USAGE_ANALYTICS_INTERVAL", "1h")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("server exited").unwrap();
        if let Some(a) = line.split("listening on ").nth(1) {
            break a.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{base}/api/v1/usage/check-quota/api_calls?quantity=1");
    let check = || {
        let t = Instant::now();
        let r = agent
            .get(&url)
            .header("Authorization", &format!("Bearer {key}"))
            .call()
            .unwrap();
        assert!(r.status().as_u16() == 200 || r.status().as_u16() == 429);
        t.elapsed().as_secs_f64() * 1e3
    };
    let started = Instant::now();
    let mut during = Vec::new();
    let mut polls = 0;
    loop {
        during.push(check());
        polls += 1;
        if polls % 200 == 0 && metric(&agent, &base, "meterlake_analytics_refreshes_total") >= 1.0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(900) {
            panic!("the refresh did not finish in 15 minutes");
        }
    }
    let refresh_s = metric(
        &agent,
        &base,
        "meterlake_analytics_last_refresh_duration_seconds",
    );
    let mut after: Vec<f64> = (0..during.len().min(20_000)).map(|_| check()).collect();
    let rss = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_string()))
        .unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    let n = during.len();
    println!(
        "serve_refresh: refresh of the whole lake took {refresh_s:.1} s; server peak RSS {rss}"
    );
    println!(
        "check-quota during the refresh: {n} requests, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        quantile(&mut during, 0.5),
        quantile(&mut during, 0.99),
        quantile(&mut during, 1.0)
    );
    println!(
        "check-quota after it:           {} requests, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        after.len(),
        quantile(&mut after, 0.5),
        quantile(&mut after, 0.99),
        quantile(&mut after, 1.0)
    );
}
