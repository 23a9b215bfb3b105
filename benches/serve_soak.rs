//! Soak test of `meterlake serve` (loopback only, bounded in time): what changes with
//! uptime, and what heavy requests do to quota checks.
//!
//! 1. **Sustained `/track`** for `MLK_SOAK_SECONDS` (default 600) from two client threads
//!    (batches of 5,000 distinct events over ten tenants, at full speed; with
//!    `MLK_SOAK_DAYS=30` the batches' timestamps go round the last 30 days), with the server's
//!    own flushes (every second), background compactions and log checkpoints running. Every
//!    `MLK_SOAK_EVERY` seconds (default 60) it prints the events/s of the interval, the
//!    server's RSS (`/proc/PID/status` VmRSS), the time to open the lake (what every flush,
//!    read endpoint and CLI command pays: checkpoint plus the commits after it), the commit
//!    files in `_log/` and the live data files.
//! 2. **`/check-quota` while heavy work runs**: p50/p99/max of sequential checks for one
//!    tenant while one client generates HTML reports and another forecasts, back to back,
//!    for two other tenants (`MLK_SOAK_HEAVY_SECONDS`, default 30), against the same checks
//!    idle. The two heavy clients are processes of their own (this binary, run with
//!    `--heavy-client`), as clients on other machines would be.
//!
//! `cargo build --release && cargo bench --bench serve_soak` (MLK_BIN overrides the binary).
//! Client and server share the machine's two cores: the figures are a floor.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const TENANTS: [&str; 10] = [
    "acme-001",
    "globex-002",
    "initech-003",
    "umbrella-004",
    "hooli-005",
    "stark-006",
    "wayne-007",
    "wonka-008",
    "tyrell-009",
    "cyberdyne-010",
];

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// Batch `n` of a client thread; its events are `days_back` days before now (0: now).
fn batch(thread: usize, n: u64, size: usize, days_back: i64) -> String {
    let ts =
        (chrono::Utc::now() - chrono::Duration::days(days_back) - chrono::Duration::seconds(30))
            .to_rfc3339();
    let mut s = String::with_capacity(size * 170);
    s.push('[');
    for i in 0..size {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            r#"{{"id":"t{thread}-b{n}-{i}","tenant_id":"{}","user_id":"u{}","meter":"api_calls","ts":"{ts}","properties":{{"endpoint":"/v1/documents"}}}}"#,
            TENANTS[i % TENANTS.len()],
            i % 50
        ));
    }
    s.push(']');
    s
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse::<f64>().ok())
            })
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Time to open the lake (median of 5), its commit files in `_log/` and live data files.
fn lake_open(lake: &Path) -> (f64, usize, usize) {
    let mut times = Vec::new();
    let mut files = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let l = meterlake::lake::Lake::open(lake).expect("open the lake");
        times.push(t.elapsed().as_secs_f64() * 1e3);
        files = l.data_files().len();
    }
    times.sort_by(f64::total_cmp);
    let logs = std::fs::read_dir(lake.join("_log"))
        .map(|d| {
            d.filter(|e| e.as_ref().is_ok_and(|e| e.path().is_file()))
                .count()
        })
        .unwrap_or(0);
    (times[2], logs, files)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Sequential checks until `stop`; latencies in ms, sorted.
fn checks(base: &str, key: &str, stop: &AtomicBool) -> Vec<f64> {
    let a = agent();
    let url = format!("{base}/api/v1/usage/check-quota/api_calls?quantity=1");
    let auth = format!("Bearer {key}");
    let mut lat = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let mut r = a
            .get(&url)
            .header("Authorization", &auth)
            .call()
            .expect("check");
        let _ = r.body_mut().read_to_string();
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);
    lat
}

fn show(what: &str, lat: &[f64]) {
    println!(
        "check-quota {what}: {} requests, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        lat.len(),
        percentile(lat, 0.5),
        percentile(lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );
}

fn key(bin: &str, lake: &Path, tenant: Option<&str>) -> String {
    let mut c = Command::new(bin);
    c.args(["serve-keys", "add", "--lake", lake.to_str().unwrap()]);
    match tenant {
        Some(t) => c.args(["--tenant", t]),
        None => c.arg("--admin"),
    };
    String::from_utf8(c.output().expect("run the release binary").stdout)
        .unwrap()
        .trim()
        .to_string()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--heavy-client") {
        return heavy_client(&args[i + 1..]);
    }
    let bin = std::env::var("MLK_BIN").unwrap_or_else(|_| "target/release/meterlake".into());
    let seconds = env_num("MLK_SOAK_SECONDS", 600);
    let every = env_num("MLK_SOAK_EVERY", 60);
    let heavy_seconds = env_num("MLK_SOAK_HEAVY_SECONDS", 30);
    let spread = env_num("MLK_SOAK_DAYS", 1).max(1);
    let dir = tempfile::tempdir_in(".").unwrap();
    let lake = dir.path().join("lake");
    let tenant_key = key(&bin, &lake, Some(TENANTS[0]));
    let admin = key(&bin, &lake, None);
    let mut server = Server(
        Command::new(&bin)
            .args([
                "serve",
                "--lake",
                lake.to_str().unwrap(),
                "--bind",
                "127.0.0.1:0",
            ])
            .args(["--config", "data/meterlake.toml"])
            // The sample plans' hard caps would refuse most of this load.
            .env("LIMITS_ENFORCEMENT_ENABLED", "false")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let pid = server.0.id();
    let mut lines = BufReader::new(server.0.stderr.take().unwrap()).lines();
    let base = loop {
        let l = lines.next().expect("server exited").unwrap();
        if let Some(a) = l.split("listening on ").nth(1) {
            break a.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});

    // 1. Sustained tracking.
    let accepted = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let backoffs = Arc::new(AtomicU64::new(0));
    let size = 5_000;
    let workers: Vec<_> = (0..2)
        .map(|t| {
            let (base, key, accepted, stop, backoffs) = (
                base.clone(),
                admin.clone(),
                accepted.clone(),
                stop.clone(),
                backoffs.clone(),
            );
            std::thread::spawn(move || {
                let a = agent();
                let url = format!("{base}/api/v1/usage/track");
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    // A month of traffic: batch after batch, the days of the last
                    // MLK_SOAK_DAYS days in turn (each day's keys in the dedup window).
                    let body = batch(t, n, size, (n % spread) as i64);
                    n += 1;
                    let (mut r, text) = loop {
                        let mut r = a
                            .post(&url)
                            .header("Authorization", &format!("Bearer {key}"))
                            .header("Content-Type", "application/json")
                            .send(&body)
                            .expect("track");
                        let text = r.body_mut().read_to_string().unwrap();
                        // 503: the log is --max-lag-events ahead of the lake; back off.
                        if r.status().as_u16() != 503 {
                            break (r, text);
                        }
                        backoffs.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(20));
                    };
                    let _ = &mut r;
                    assert_eq!(r.status().as_u16(), 202, "{text}");
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                    accepted.fetch_add(v["accepted"].as_u64().unwrap(), Ordering::Relaxed);
                }
            })
        })
        .collect();
    println!(
        "{:>6} {:>12} {:>10} {:>10} {:>9} {:>10} {:>12}",
        "t (s)", "events/s", "total (M)", "RSS (MiB)", "open (ms)", "log files", "data files"
    );
    let start = Instant::now();
    let (mut last_n, mut last_t) = (0u64, 0.0f64);
    let mut rows = Vec::new();
    loop {
        let t = start.elapsed().as_secs_f64();
        let n = accepted.load(Ordering::Relaxed);
        let (open, logs, files) = lake_open(&lake);
        let rate = if t > last_t {
            (n - last_n) as f64 / (t - last_t)
        } else {
            0.0
        };
        let row = (t, rate, n, rss_mib(pid), open, logs, files);
        println!(
            "{:>6.0} {:>12.0} {:>10.2} {:>10.1} {:>9.2} {:>10} {:>12}",
            row.0,
            row.1,
            row.2 as f64 / 1e6,
            row.3,
            row.4,
            row.5,
            row.6
        );
        rows.push(row);
        (last_n, last_t) = (n, t);
        if t >= seconds as f64 {
            break;
        }
        std::thread::sleep(
            Duration::from_secs(every).min(Duration::from_secs_f64((seconds as f64 - t).max(0.1))),
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let n = accepted.load(Ordering::Relaxed);
    let (first, last) = (rows[1.min(rows.len() - 1)], rows[rows.len() - 1]);
    println!(
        "track: {n} events in {secs:.0} s = {:.0} events/s ({} batches backed off on 503); RSS {:.0} -> {:.0} MiB; lake open {:.2} -> {:.2} ms",
        n as f64 / secs,
        backoffs.load(Ordering::Relaxed),
        first.3,
        last.3,
        first.4,
        last.4
    );

    // 2. Quota checks while reports and forecasts run for other tenants.
    let idle_stop = Arc::new(AtomicBool::new(false));
    let idle = {
        let (b, k, s) = (base.clone(), tenant_key.clone(), idle_stop.clone());
        std::thread::spawn(move || checks(&b, &k, &s))
    };
    std::thread::sleep(Duration::from_secs(heavy_seconds.min(10)));
    idle_stop.store(true, Ordering::Relaxed);
    show("idle", &idle.join().unwrap());
    // The heavy clients are processes of their own, as other machines' clients would be:
    // this one only checks.
    let exe = std::env::current_exe().expect("the bench's own path");
    let heavy: Vec<_> = [
        (
            "/api/v1/usage/reports/generate",
            format!(
                r#"{{"kind":"detailed","format":"html","tenant":"{}"}}"#,
                TENANTS[1]
            ),
        ),
        (
            "/api/v1/usage/forecast",
            format!(
                r#"{{"meter":"api_calls","tenant":"{}","horizon":30}}"#,
                TENANTS[2]
            ),
        ),
    ]
    .into_iter()
    .map(|(path, body)| {
        Command::new(&exe)
            .args(["--heavy-client", &base, &admin, path, &body])
            .arg(heavy_seconds.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a heavy client")
    })
    .collect();
    std::thread::sleep(Duration::from_millis(500));
    let check_stop = Arc::new(AtomicBool::new(false));
    let checker = {
        let (b, k, s) = (base.clone(), tenant_key.clone(), check_stop.clone());
        std::thread::spawn(move || checks(&b, &k, &s))
    };
    std::thread::sleep(Duration::from_secs(heavy_seconds).saturating_sub(Duration::from_secs(1)));
    check_stop.store(true, Ordering::Relaxed);
    let under = checker.join().unwrap();
    let mut done = 0u64;
    for h in heavy {
        let out = h.wait_with_output().expect("heavy client");
        assert!(out.status.success(), "a heavy client failed");
        done += String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u64>()
            .unwrap_or(0);
    }
    show(
        &format!("while {done} reports and forecasts ran for two other tenants"),
        &under,
    );
}

/// `--heavy-client BASE KEY PATH BODY SECONDS`: posts BODY to PATH back to back for
/// SECONDS; prints how many requests it made.
fn heavy_client(args: &[String]) {
    let [base, key, path, body, secs] = args else {
        panic!("--heavy-client BASE KEY PATH BODY SECONDS");
    };
    let until = Instant::now() + Duration::from_secs(secs.parse().expect("seconds"));
    let a = agent();
    let mut n = 0u64;
    while Instant::now() < until {
        let mut r = a
            .post(format!("{base}{path}"))
            .header("Authorization", &format!("Bearer {key}"))
            .header("Content-Type", "application/json")
            .send(body.as_str())
            .expect("heavy request");
        let text = r.body_mut().read_to_string().unwrap_or_default();
        assert!(r.status().is_success(), "{path}: {text}");
        n += 1;
    }
    println!("{n}");
}

/// The server process, killed however the bench ends.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
