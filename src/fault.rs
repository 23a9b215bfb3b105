//! Fault injection for the durability tests: named points in the write paths that fail on
//! demand, so a test can make a WAL append, a commit or a publish fail the way a full disk
//! does, then let it succeed again, and check that nothing acknowledged was lost or stored
//! twice.
//!
//! Off unless the environment names a control file, `MLK_FAULTS=PATH`. While the file
//! exists, each of its lines `POINT` or `POINT=MODE` arms that point; the file is read
//! again at every check, so a test switches faults on and off while the process runs by
//! writing and deleting it. Modes:
//! - `fail` (the default): the operation fails with ENOSPC, as on a full disk;
//! - `partial`: a write writes the first half of its bytes, then fails with ENOSPC (a torn
//!   write); other operations just fail;
//! - `abort`: the process aborts on the spot (a kill -9 at that instant);
//! - `sleep`: [`pause`] waits one second there (work that takes long, to test limits).
//!
//! The points: `wal.write`, `wal.sync` (the `/track` append and its fsync), `lake.stage`
//! (a commit's new files), `lake.log` (the commit point's log file), `lake.publish` (after
//! the commit point), `compact.write`; `serve.heavy` (inside a heavy request's slot);
//! `refresh.tables` (an analytics refresh between its forecast and anomaly tables) and
//! `refresh.state` (before it records the commit it reached); `invoice.write` (an issued
//! invoice file's bytes) and `invoice.state` (after it is issued, before its state);
//! `remote.staged` (an s3:// push after staging a commit's files, before its commit
//! point), `remote.committed` (after the commit point, before publishing) and
//! `remote.published` (after publishing, before deleting the staging objects);
//! `remote.pulled` (a command on an s3:// lake after its pull: `sleep` holds it there while
//! armed, see [`hold`]).
//!
//! Production code calls [`check`] (or [`write_all`]); with `MLK_FAULTS` unset, the cost is
//! one environment lookup cached at first use.

use std::io::{self, Write};
use std::sync::OnceLock;

/// What an armed point does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Fail with ENOSPC.
    Fail,
    /// Write half the bytes, then fail with ENOSPC.
    Partial,
    /// Abort the process.
    Abort,
    /// Wait a second ([`pause`] only).
    Sleep,
}

fn control() -> Option<&'static str> {
    static PATH: OnceLock<Option<String>> = OnceLock::new();
    PATH.get_or_init(|| std::env::var("MLK_FAULTS").ok().filter(|s| !s.is_empty()))
        .as_deref()
}

/// The mode `point` is armed with now, if any.
pub fn armed(point: &str) -> Option<Mode> {
    let text = std::fs::read_to_string(control()?).ok()?;
    text.lines().find_map(|line| {
        let (name, mode) = line.trim().split_once('=').unwrap_or((line.trim(), "fail"));
        (name == point).then_some(match mode {
            "partial" => Mode::Partial,
            "abort" => Mode::Abort,
            "sleep" => Mode::Sleep,
            _ => Mode::Fail,
        })
    })
}

fn injected(point: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::StorageFull,
        format!("No space left on device (fault injected at {point})"),
    )
}

/// Fails (or aborts) if `point` is armed.
pub fn check(point: &str) -> io::Result<()> {
    match armed(point) {
        None => Ok(()),
        Some(Mode::Abort) => {
            eprintln!("MLK_FAULTS: aborting at {point}");
            std::process::abort()
        }
        Some(_) => Err(injected(point)),
    }
}

/// `w.write_all(buf)`, through the fault point `point`: a `partial` fault writes the first
/// half of `buf` before it fails, as a disk that fills mid-write does.
pub fn write_all(point: &str, w: &mut impl Write, buf: &[u8]) -> io::Result<()> {
    match armed(point) {
        None => w.write_all(buf),
        Some(Mode::Partial) => {
            w.write_all(&buf[..buf.len() / 2])?;
            Err(injected(point))
        }
        Some(_) => check(point),
    }
}

/// Waits as long as `point` is armed with `sleep` (a test removes the line or the file to
/// let it go on); other modes do nothing here.
pub fn hold(point: &str) {
    while armed(point) == Some(Mode::Sleep) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Waits a second if `point` is armed with `sleep` (and fails or aborts as [`check`]
/// for the other modes).
pub fn pause(point: &str) -> io::Result<()> {
    if armed(point) == Some(Mode::Sleep) {
        std::thread::sleep(std::time::Duration::from_secs(1));
        return Ok(());
    }
    check(point)
}
