//! `meterlake serve` under faults: a WAL append or its fsync that fails (whole or torn), a
//! flush whose commit fails before, at or after its commit point, a real full disk (a
//! small tmpfs), and kill -9 at random moments and at each step of a flush, with several
//! segments left behind. The client retries every batch until it gets a 2xx, as a billing
//! client does; after each test the lake (read straight from its Parquet files) holds every
//! event the client sent exactly once, and the answers' `accepted` add up to the events
//! stored when no request was cut off.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::common::read_lake;
use crate::serve::{Server, agent, key};

/// A client tracking numbered batches of distinct events.
struct Client {
    key: String,
    /// Answers per batch: (status, accepted, duplicates), a `None` status for a request
    /// that got no answer (the server died).
    answers: Vec<Vec<(Option<u16>, u64, u64)>>,
}

fn batch(b: usize, n: usize) -> String {
    let ts = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let items: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"id":"b{b}-{i}","tenant_id":"acme","user_id":"u{}","meter":"api_calls","ts":"{ts}","value":{}}}"#,
                i % 13,
                i % 5 + 1
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

/// One POST; `None` when no answer came (connection refused or reset).
fn post(base: &str, path: &str, key: &str, body: &str) -> Option<(u16, serde_json::Value)> {
    let mut res = agent()
        .post(format!("{base}{path}"))
        .header("Authorization", format!("Bearer {key}"))
        .header("Content-Type", "application/json")
        .send(body)
        .ok()?;
    let status = res.status().as_u16();
    let text = res.body_mut().read_to_string().unwrap_or_default();
    Some((status, serde_json::from_str(&text).unwrap_or_default()))
}

impl Client {
    fn new(key: String) -> Client {
        Client {
            key,
            answers: Vec::new(),
        }
    }

    /// Sends batch `b` once; true on a 2xx.
    fn send_once(&mut self, base: &str, b: usize, n: usize) -> bool {
        while self.answers.len() <= b {
            self.answers.push(Vec::new());
        }
        let ans = post(base, "/api/v1/usage/track", &self.key, &batch(b, n));
        let (st, v) = match &ans {
            Some((st, v)) => (Some(*st), v),
            None => (None, &serde_json::Value::Null),
        };
        let n = |f: &str| v[f].as_u64().unwrap_or(0);
        self.answers[b].push((st, n("accepted"), n("duplicates")));
        st.is_some_and(|s| (200..300).contains(&s))
    }

    /// Sends batch `b` until a 2xx (at most 200 tries).
    fn send(&mut self, base: &str, b: usize, n: usize) {
        for _ in 0..200 {
            if self.send_once(base, b, n) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("batch {b} never acknowledged: {:?}", self.answers[b]);
    }

    /// Requests that failed (no 2xx).
    fn failures(&self) -> usize {
        self.answers
            .iter()
            .flatten()
            .filter(|a| !a.0.is_some_and(|s| (200..300).contains(&s)))
            .count()
    }

    /// Sum of `accepted` over every 2xx.
    fn accepted(&self) -> u64 {
        self.answers.iter().flatten().map(|a| a.1).sum()
    }
}

/// Flushes through the admin endpoint until it answers 200.
fn flush(base: &str, admin: &str) {
    for _ in 0..200 {
        if post(base, "/api/v1/usage/admin/flush", admin, "").is_some_and(|(s, _)| s == 200) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the flush never succeeded");
}

/// Every event of batches `0..batches` (of `n` each) is in the lake exactly once, and
/// nothing else is; the commit log names each WAL segment (by checksum) at most once.
fn assert_exactly_once(lake: &Path, batches: usize, n: usize) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for r in read_lake(lake) {
        *seen.entry(r.id).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).take(5).collect();
    assert!(twice.is_empty(), "stored twice: {twice:?}");
    let missing: Vec<String> = (0..batches)
        .flat_map(|b| (0..n).map(move |i| format!("b{b}-{i}")))
        .filter(|id| !seen.contains_key(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(seen.len(), batches * n, "nothing else is stored");
    let mut sums: BTreeMap<String, usize> = BTreeMap::new();
    for p in log_files(lake) {
        let text = std::fs::read_to_string(p).unwrap();
        let c: serde_json::Value = serde_json::from_str(&text).unwrap();
        for i in c["inputs"].as_array().unwrap() {
            if i["format"] == "wal" {
                *sums
                    .entry(i["checksum"].as_str().unwrap().into())
                    .or_default() += 1;
            }
        }
    }
    assert!(
        sums.values().all(|&c| c == 1),
        "a segment committed twice: {sums:?}"
    );
}

/// Every commit file of a lake, in the log and in its history (checkpoints excluded).
fn log_files(lake: &Path) -> Vec<PathBuf> {
    crate::common::files_under(&lake.join("_log"))
        .into_iter()
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.ends_with(".json") && !n.contains("checkpoint") && !n.starts_with('.')
        })
        .collect()
}

struct Faults(PathBuf);

impl Faults {
    fn arm(&self, lines: &str) {
        std::fs::write(&self.0, lines).unwrap();
    }
    fn clear(&self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn failed_appends_and_failed_flushes_lose_nothing_and_store_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let faults = Faults(dir.path().join("faults"));
    let env = [("MLK_FAULTS", faults.0.to_str().unwrap())];
    let admin = key(&lake, None);
    let mut c = Client::new(admin.clone());
    let n = 200;
    let mut s = Server::start_env(&lake, &["--flush-ms", "600000"], &env);
    let mut b = 0;
    // WAL appends that fail: the request gets an error, the retry is not a duplicate.
    for armed in [
        "wal.write",
        "wal.write=partial",
        "wal.sync",
        "wal.write=partial\nwal.cut",
    ] {
        faults.arm(armed);
        assert!(!c.send_once(&s.base, b, n), "{armed}: the append fails");
        faults.clear();
        c.send(&s.base, b, n);
        let last = *c.answers[b].last().unwrap();
        assert_eq!(
            (last.1, last.2),
            (n as u64, 0),
            "{armed}: the retry is all new"
        );
        b += 1;
        c.send(&s.base, b, n);
        b += 1;
    }
    // Flushes that fail before, at and after the commit point; tracking goes on meanwhile
    // and the next flushes commit every segment once.
    for armed in ["lake.stage", "lake.log", "lake.publish"] {
        faults.arm(armed);
        c.send(&s.base, b, n);
        let failed = post(&s.base, "/api/v1/usage/admin/flush", &admin, "").unwrap();
        assert_eq!(failed.0, 500, "{armed}: the flush fails: {}", failed.1);
        b += 1;
        c.send(&s.base, b, n);
        assert_eq!(
            post(&s.base, "/api/v1/usage/admin/flush", &admin, "")
                .unwrap()
                .0,
            500
        );
        b += 1;
        faults.clear();
        flush(&s.base, &admin);
        assert_exactly_once(&lake, b, n);
    }
    // Several segments left behind by failed flushes, then kill -9: the restart commits
    // each once, in order.
    faults.arm("lake.stage");
    for _ in 0..3 {
        c.send(&s.base, b, n);
        b += 1;
        let _ = post(&s.base, "/api/v1/usage/admin/flush", &admin, "");
    }
    let segments = std::fs::read_dir(lake.join("_wal"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("wal".as_ref()))
        .count();
    assert!(segments >= 4, "{segments} segments on disk");
    s.kill9();
    faults.clear();
    s = Server::start_env(&lake, &["--flush-ms", "600000"], &env);
    assert_exactly_once(&lake, b, n);
    // Retrying a stored batch after the restart is all duplicates.
    c.send(&s.base, b - 1, n);
    assert_eq!(c.answers[b - 1].last().unwrap().2, n as u64);
    flush(&s.base, &admin);
    s.kill9();
    assert_exactly_once(&lake, b, n);
    assert_eq!(
        c.accepted(),
        (b * n) as u64,
        "each event acknowledged as accepted once"
    );
}

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `mb` MiB; `None` when this process may not mount (not root), and
    /// the test is then skipped, unless `MLK_REQUIRE_TMPFS` is set (as in CI): it fails.
    fn mount(dir: &Path, mb: u32) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var_os("MLK_REQUIRE_TMPFS").is_none(),
                "cannot mount a tmpfs"
            );
            eprintln!("skipped: cannot mount a tmpfs here (not root)");
        }
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` with a file until it is full; returns the file.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    let chunk = vec![7u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let small = vec![7u8; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
    p
}

#[test]
fn a_full_disk_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let Some(fs) = Tmpfs::mount(&mnt, 32) else {
        return;
    };
    let lake = fs.0.join("lake");
    let admin = key(&lake, None);
    let mut c = Client::new(admin.clone());
    let n = 500;
    let s = Server::start(&lake, &["--flush-ms", "100"]);
    let mut filler: Option<PathBuf> = None;
    let mut full_failures = 0;
    let batches = 40;
    for b in 0..batches {
        if b == 10 {
            filler = Some(fill(&fs.0));
        }
        let start = Instant::now();
        while !c.send_once(&s.base, b, n) {
            full_failures += 1;
            // The disk stays full for a while: the client keeps retrying, then space is
            // freed and the retries go through.
            if full_failures >= 8
                && let Some(f) = filler.take()
            {
                std::fs::remove_file(f).unwrap();
            }
            assert!(start.elapsed() < Duration::from_secs(60), "stuck at {b}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(
        full_failures >= 8,
        "the disk filled: {full_failures} failures"
    );
    assert!(filler.is_none(), "space was freed");
    flush(&s.base, &admin);
    s.kill9();
    assert_exactly_once(&lake, batches, n);
    assert_eq!(c.accepted(), (batches * n) as u64);
    assert_eq!(c.failures(), full_failures);
}

#[test]
fn kill_9_at_random_moments_and_at_each_flush_step_stores_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let faults = Faults(dir.path().join("faults"));
    let env = [("MLK_FAULTS", faults.0.to_str().unwrap())];
    let admin = key(&lake, None);
    let mut c = Client::new(admin.clone());
    let n = 100;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20);
    let mut b = 0;
    // Aborts at each step of a flush and of an append, then kills at random moments while
    // flushes run every 5 ms.
    let steps = [
        "wal.sync=abort",
        "lake.stage=abort",
        "lake.log=abort",
        "lake.publish=abort",
        "compact.write=abort",
    ];
    // Background compaction after every 2 flushes: kills land in compactions too.
    let args = ["--flush-ms", "5", "--compact-files", "2"];
    for round in 0..12 {
        let s = Server::start_env(&lake, &args, &env);
        if let Some(step) = steps.get(round) {
            faults.arm(step);
            // Batches go on until the append, a flush or a compaction aborts the server;
            // the batch without an answer is retried after the restart.
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(5) {
                match post(&s.base, "/api/v1/usage/track", &admin, &batch(b, n)) {
                    Some((202, _)) => {
                        c.answers.resize(b + 1, Vec::new());
                        c.answers[b].push((Some(202), n as u64, 0));
                        b += 1;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    _ => break,
                }
            }
            assert!(t.elapsed() < Duration::from_secs(5), "{step} never fired");
            faults.clear();
            s.kill9();
            continue;
        }
        let die_at = Instant::now() + Duration::from_millis(rng.random_range(20..400));
        let base = s.base.clone();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(die_at.saturating_duration_since(Instant::now()));
            s.kill9();
        });
        // Batch b is resent after every restart until acknowledged (its first tries may
        // have been stored without an answer).
        while Instant::now() < die_at + Duration::from_millis(50) {
            if c.send_once(&base, b, n) {
                b += 1;
            }
        }
        killer.join().unwrap();
    }
    let s = Server::start(&lake, &["--flush-ms", "600000"]);
    c.send(&s.base, b, n);
    b += 1;
    flush(&s.base, &admin);
    s.kill9();
    assert!(b >= 5, "{b} batches acknowledged");
    assert_exactly_once(&lake, b, n);
    let compactions = log_files(&lake)
        .iter()
        .filter(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .contains("\"kind\": \"compact\"")
        })
        .count();
    assert!(compactions > 0, "compactions ran in the background");
}

/// Batch `b` of `n` events on a given day (RFC 3339 of its noon, UTC).
fn batch_on(b: usize, n: usize, day: &str) -> String {
    batch(b, n).replace(
        &(chrono::Utc::now() - chrono::Duration::hours(1))
            .to_rfc3339()
            .split('T')
            .next()
            .unwrap()
            .to_string(),
        day,
    )
}

#[test]
fn the_dedup_index_drops_days_it_no_longer_needs_and_stays_exact() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let admin = key(&lake, None);
    let mut c = Client::new(admin.clone());
    let n = 300;
    // A small memory budget (spilling itself is checked by the index's own proptest).
    let s = Server::start(
        &lake,
        &[
            "--flush-ms",
            "600000",
            "--dedup-memory-mib",
            "1",
            "--dedup-rebuild-secs",
            "0",
        ],
    );
    let keys = |s: &Server| -> u64 {
        let (st, v, _) = crate::serve::call(
            "GET",
            &format!("{}/api/v1/usage/admin/metrics", s.base),
            Some(&admin),
            None,
        );
        assert_eq!(st, 200);
        v["dedup_keys"].as_u64().unwrap()
    };
    c.send(&s.base, 0, n);
    flush(&s.base, &admin);
    c.send(&s.base, 1, n);
    assert_eq!(keys(&s), 2 * n as u64);
    // Events of a long-past day load that day's neighbourhood; once an interval passes
    // without events of that day (here: the flush after next), it is dropped again.
    let old = batch_on(2, n, "2001-06-01");
    assert!(old.contains("2001-06-01T"));
    let (st, v) = post(&s.base, "/api/v1/usage/track", &admin, &old).unwrap();
    assert_eq!((st, v["accepted"].as_u64()), (202, Some(n as u64)));
    assert_eq!(keys(&s), 3 * n as u64);
    flush(&s.base, &admin);
    assert_eq!(keys(&s), 3 * n as u64, "kept while that day has traffic");
    flush(&s.base, &admin);
    assert_eq!(keys(&s), 2 * n as u64, "the 2001 keys are gone from memory");
    // Still exact: every batch sent again is all duplicates, the old one included.
    for b in 0..2 {
        c.send(&s.base, b, n);
        assert_eq!(c.answers[b].last().unwrap().2, n as u64, "batch {b}");
    }
    let (st, v) = post(&s.base, "/api/v1/usage/track", &admin, &old).unwrap();
    assert_eq!((st, v["duplicates"].as_u64()), (202, Some(n as u64)), "{v}");
    flush(&s.base, &admin);
    s.kill9();
    let rows = read_lake(&lake);
    assert_eq!(rows.len(), 3 * n);
    assert_eq!(rows.iter().filter(|r| r.date == "2001-06-01").count(), n);
}

#[test]
fn torn_records_anywhere_in_leftover_segments_do_not_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let faults = Faults(dir.path().join("faults"));
    let env = [("MLK_FAULTS", faults.0.to_str().unwrap())];
    let admin = key(&lake, None);
    let mut c = Client::new(admin.clone());
    let n = 50;
    // A torn append whose cut-back fails, then kill -9 before anything else is written:
    // the segment ends in a torn line.
    let s = Server::start_env(&lake, &["--flush-ms", "600000"], &env);
    c.send(&s.base, 0, n);
    faults.arm("wal.write=partial\nwal.cut");
    assert!(!c.send_once(&s.base, 1, n));
    s.kill9();
    faults.clear();
    // A segment with a torn line in its middle (as a disk that failed mid-write and came
    // back would leave), written by hand from two whole records of batch 2.
    let whole: Vec<String> = (0..2)
        .map(|i| {
            let ts = chrono::Utc::now().timestamp_micros() - 3_600_000_000;
            format!(
                r#"{{"key":"{:032x}","id":"b2-{i}","ts":{ts},"tenant_id":"acme","user_id":null,"meter":"api_calls","value":1.0,"properties":""}}"#,
                (0xfeed_u128 + i) << 100
            )
        })
        .collect();
    std::fs::write(
        lake.join("_wal/00000099.wal"),
        format!(
            "{}\n{{\"key\":\"00ab\",\"id\":\"torn\n{}\n",
            whole[0], whole[1]
        ),
    )
    .unwrap();
    let s = Server::start(&lake, &["--flush-ms", "600000"]);
    // Batch 1 was never acknowledged. The whole records its torn append left before the
    // kill were recovered with the segment; its retry stores the rest, and finds those
    // as duplicates: each event once.
    c.send(&s.base, 1, n);
    let (_, accepted, duplicates) = *c.answers[1].last().unwrap();
    assert_eq!(accepted + duplicates, n as u64);
    assert!(duplicates > 0 && accepted > 0, "{accepted} + {duplicates}");
    flush(&s.base, &admin);
    s.kill9();
    let ids: Vec<String> = read_lake(&lake).into_iter().map(|r| r.id).collect();
    assert!(
        ids.contains(&"b2-0".to_string()) && ids.contains(&"b2-1".to_string()),
        "{:?}",
        ids.iter()
            .filter(|i| !i.starts_with("b0") && !i.starts_with("b1"))
            .collect::<Vec<_>>()
    );
    assert!(!ids.iter().any(|i| i.contains("torn")));
    assert_eq!(
        ids.len(),
        2 * n + 2,
        "batches 0 and 1 once each, and the two records"
    );
}

/// `forecast --series` writing its CSV onto a full disk: the command fails naming the
/// output file, the file it would replace is left as it was, and no temp file is left
/// behind (the CSV is formatted straight from the results, not through a frame).
#[test]
fn a_full_disk_leaves_the_forecast_csv_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let Some(fs) = Tmpfs::mount(&mnt, 1) else {
        return;
    };
    // 2,000 series of 60 days: 60,000 forecast rows, ~4 MB of CSV, on a 1 MiB disk.
    let series = dir.path().join("series.csv");
    let mut text = String::from("series_id,ts,value\n");
    for s in 0..2000 {
        for d in 0..60 {
            let day =
                chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + chrono::Duration::days(d);
            text += &format!("series-{s},{day},{}\n", (s * 7 + d as usize * 3) % 101);
        }
    }
    std::fs::write(&series, text).unwrap();
    let out = fs.0.join("forecast.csv");
    std::fs::write(&out, "before\n").unwrap();
    let args = [
        "forecast",
        "--series",
        series.to_str().unwrap(),
        "--model",
        "ses",
        "--horizon",
        "30",
        "--folds",
        "0",
        "--out",
        out.to_str().unwrap(),
    ];
    let o = crate::common::mlk(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "wrote 4 MB onto 1 MiB: {err}");
    let named = format!("{}:", out.display());
    assert!(err.contains(&named), "the error names the file: {err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "before\n");
    let left: Vec<_> = std::fs::read_dir(&fs.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(left, ["forecast.csv"], "no temp file is left");
    // With room, the same command writes the whole table.
    let roomy = dir.path().join("forecast.csv");
    let mut args = args;
    let at = args.len() - 1;
    args[at] = roomy.to_str().unwrap();
    crate::common::ok(&args);
    let rows = std::fs::read_to_string(&roomy).unwrap().lines().count();
    assert_eq!(rows, 1 + 2000 * 30);
}
