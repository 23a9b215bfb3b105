//! Load test of `meterlake serve` on loopback (bounded in count and time, 127.0.0.1 only).
//!
//! Starts the release binary on a fresh lake, then measures
//! 1. sustained events/s through batched `POST /track` (batches of 10,000 events, several
//!    client threads, the log fsynced on every request and flushed to the lake as it runs);
//! 2. `GET /check-quota` latency (p50, p99, max) from one keep-alive client, idle and while
//!    the tracking load runs;
//! 3. side by side in one run, alternating for `MLK_ROUTE_ROUNDS` rounds (default 3): the
//!    same CloudEvents batches through OpenMeter's `POST /api/v1/events` and through
//!    `POST /track`, and plain events through `/track` (`MLK_ROUTE_EVENTS` events each,
//!    default 1,000,000); medians and the ratios.
//!
//! `cargo build --release && cargo bench --bench serve_load` (MLK_BIN overrides the binary;
//! MLK_LOAD_EVENTS the events tracked, default 2,000,000; MLK_LOAD_CHECKS the checks,
//! default 20,000). Client and server share the machine's cores: the figures are a floor.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn batch(thread: usize, n: usize, size: usize, ts: &str) -> String {
    let mut s = String::with_capacity(size * 150);
    s.push('[');
    for i in 0..size {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            r#"{{"id":"t{thread}-b{n}-{i}","tenant_id":"acme-001","user_id":"u{}","meter":"api_calls","ts":"{ts}","properties":{{"endpoint":"/v1/documents","status_code":200}}}}"#,
            i % 50
        ));
    }
    s.push(']');
    s
}

/// A batch of `size` CloudEvents as OpenMeter's SDKs send them (the same usage as [`batch`]).
fn ce_batch(tag: &str, thread: usize, n: usize, size: usize, ts: &str) -> String {
    let mut s = String::with_capacity(size * 220);
    s.push('[');
    for i in 0..size {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            r#"{{"specversion":"1.0","id":"{tag}-t{thread}-b{n}-{i}","source":"bench","type":"api_calls","subject":"acme-001","time":"{ts}","data":{{"user_id":"u{}","endpoint":"/v1/documents","status_code":200}}}}"#,
            i % 50
        ));
    }
    s.push(']');
    s
}

/// Sends every thread's batches to `path` at full speed (one client thread each; a 503
/// while commits lag is waited out and the batch resent); events/s.
fn blast(base: &str, key: &str, path: &str, ctype: &str, bodies: Vec<Vec<String>>) -> f64 {
    let events: usize = bodies
        .iter()
        .flatten()
        .map(|b| b.matches(r#""id":"#).count())
        .sum();
    let start = Instant::now();
    let workers: Vec<_> = bodies
        .into_iter()
        .map(|bs| {
            let url = format!("{base}{path}");
            let (auth, ctype) = (format!("Bearer {key}"), ctype.to_string());
            std::thread::spawn(move || {
                let a = agent();
                for b in bs {
                    loop {
                        let mut r = a
                            .post(&url)
                            .header("Authorization", &auth)
                            .header("Content-Type", &ctype)
                            .send(&b)
                            .expect("ingest");
                        let st = r.status().as_u16();
                        let text = r.body_mut().read_to_string().unwrap_or_default();
                        if st == 503 {
                            std::thread::sleep(Duration::from_millis(50));
                            continue;
                        }
                        assert!(st == 202 || st == 204, "{st} {text}");
                        break;
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    events as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Part 3: OpenMeter's ingest route against `/track`, alternating, in one run.
fn routes_side_by_side(base: &str, key: &str, threads: usize, ts: &str) {
    let total = env_num("MLK_ROUTE_EVENTS", 1_000_000);
    let rounds = env_num("MLK_ROUTE_ROUNDS", 3);
    let size = 10_000;
    let per_thread = (total / threads / size).max(1);
    let mut rates: [Vec<f64>; 3] = Default::default();
    for r in 0..rounds {
        let names = [
            "/api/v1/events (CloudEvents)",
            "/track (CloudEvents)",
            "/track (plain)",
        ];
        for (k, name) in names.iter().enumerate() {
            let tag = format!("r{r}k{k}");
            let bodies: Vec<Vec<String>> = (0..threads)
                .map(|t| {
                    (0..per_thread)
                        .map(|n| match k {
                            2 => batch(1000 + r * 10 + t, n, size, ts),
                            _ => ce_batch(&tag, t, n, size, ts),
                        })
                        .collect()
                })
                .collect();
            let (path, ctype) = match k {
                0 => ("/api/v1/events", "application/cloudevents-batch+json"),
                _ => ("/api/v1/usage/track", "application/json"),
            };
            let rate = blast(base, key, path, ctype, bodies);
            println!("round {r}: {name}: {rate:.0} events/s");
            rates[k].push(rate);
        }
    }
    let [events, track_ce, track_plain] = rates.map(median);
    println!(
        "median events/s over {rounds} rounds of {} events: /api/v1/events {events:.0}, /track CloudEvents {track_ce:.0} (ratio {:.2}), /track plain {track_plain:.0} (ratio {:.2})",
        per_thread * threads * size,
        events / track_ce,
        events / track_plain
    );
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// `n` sequential checks; their latencies in ms.
fn check_latencies(base: &str, key: &str, n: usize, stop: Option<&AtomicBool>) -> Vec<f64> {
    let a = agent();
    let url = format!("{base}/api/v1/usage/check-quota/api_calls?quantity=1");
    let auth = format!("Bearer {key}");
    let mut lat = Vec::with_capacity(n.min(1 << 20));
    for _ in 0..n {
        if stop.is_some_and(|s| !s.load(Ordering::Relaxed)) {
            break;
        }
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

fn report(what: &str, lat: &[f64]) {
    println!(
        "check-quota {what}: {} requests, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        lat.len(),
        percentile(lat, 0.5),
        percentile(lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );
}

/// Tracks `batches` at a steady `per_second` events/s while one client checks quotas.
fn paced(base: &str, key: &str, batches: Vec<String>, size: usize, per_second: f64) -> Vec<f64> {
    let running = Arc::new(AtomicBool::new(true));
    let checker = {
        let (base, key, running) = (base.to_string(), key.to_string(), running.clone());
        std::thread::spawn(move || check_latencies(&base, &key, usize::MAX, Some(&running)))
    };
    let a = agent();
    let url = format!("{base}/api/v1/usage/track");
    let every = Duration::from_secs_f64(size as f64 / per_second);
    let start = Instant::now();
    for (i, b) in batches.iter().enumerate() {
        let due = start + every * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let r = a
            .post(&url)
            .header("Authorization", &format!("Bearer {key}"))
            .header("Content-Type", "application/json")
            .send(b)
            .expect("track");
        assert_eq!(r.status().as_u16(), 202);
    }
    running.store(false, Ordering::Relaxed);
    checker.join().unwrap()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let bin = std::env::var("MLK_BIN").unwrap_or_else(|_| "target/release/meterlake".into());
    let total = env_num("MLK_LOAD_EVENTS", 2_000_000);
    let n_checks = env_num("MLK_LOAD_CHECKS", 20_000);
    let threads = env_num("MLK_LOAD_THREADS", 3);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let key = String::from_utf8(
        Command::new(&bin)
            .args([
                "serve-keys",
                "add",
                "--lake",
                lake.to_str().unwrap(),
                "--tenant",
                "acme-001",
            ])
            .output()
            .expect("run the release binary (cargo build --release first)")
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let mut server = Server(
        Command::new(&bin)
            .args([
                "serve",
                "--lake",
                lake.to_str().unwrap(),
                "--bind",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(server.0.stderr.take().unwrap()).lines();
    let base = loop {
        let l = lines.next().expect("server exited").unwrap();
        if let Some(a) = l.split("listening on ").nth(1) {
            break a.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});

    report("idle", &check_latencies(&base, &key, n_checks, None));

    let ts = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
    let size = 10_000;
    let per_thread = total / threads / size;
    let bodies: Vec<Vec<String>> = (0..threads)
        .map(|t| (0..per_thread).map(|n| batch(t, n, size, &ts)).collect())
        .collect();
    let accepted = Arc::new(AtomicU64::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(120);
    let workers: Vec<_> = bodies
        .into_iter()
        .map(|bs| {
            let (base, key, accepted) = (base.clone(), key.clone(), accepted.clone());
            std::thread::spawn(move || {
                let a = agent();
                let url = format!("{base}/api/v1/usage/track");
                for b in bs {
                    if Instant::now() > deadline {
                        break;
                    }
                    let mut r = a
                        .post(&url)
                        .header("Authorization", &format!("Bearer {key}"))
                        .header("Content-Type", "application/json")
                        .send(&b)
                        .expect("track");
                    let v: serde_json::Value =
                        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
                    assert_eq!(r.status().as_u16(), 202, "{v}");
                    accepted.fetch_add(v["accepted"].as_u64().unwrap(), Ordering::Relaxed);
                }
            })
        })
        .collect();
    let checker = {
        let (base, key, running) = (base.clone(), key.clone(), running.clone());
        std::thread::spawn(move || check_latencies(&base, &key, usize::MAX, Some(&running)))
    };
    for w in workers {
        w.join().unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    running.store(false, Ordering::Relaxed);
    let under = checker.join().unwrap();
    let n = accepted.load(Ordering::Relaxed);
    println!(
        "track: {n} events in {secs:.2} s = {:.0} events/s ({threads} client threads, batches of {size})",
        n as f64 / secs
    );
    report("while tracking at full speed", &under);
    // A steady 100,000 events/s (a batch of 10,000 every 100 ms) for 5 s.
    let steady: Vec<String> = (0..50).map(|n| batch(99, n, size, &ts)).collect();
    report(
        "while tracking 100,000 events/s",
        &paced(&base, &key, steady, size, 100_000.0),
    );
    routes_side_by_side(&base, &key, threads, &ts);
}

/// The server process, killed however the bench ends.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
