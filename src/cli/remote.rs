//! Commands on an `s3://` lake: the `--lake` argument (or `run`'s `paths.lake`) is pointed
//! at the lake's local mirror ([`crate::lake::remote`]), which is pulled before the
//! command and pushed after; a command's mirror leaves the event files in the bucket
//! (read by cloud scans), a server's copies them. A push that loses a race to another writer pulls again and
//! runs the command again, so its dedup is checked against what the winner committed.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;

use super::{Cli, Command};
use crate::lake::remote::{Mirror, Pushed, S3Url, parse_location};

/// Runs of one command before it gives up on a lake other writers keep changing.
const MAX_ATTEMPTS: u32 = 30;

/// The `s3://` lake the command works on, if any, and the index in `argv` of the
/// `--lake` value (added for `run` when the configuration names the lake). Other URL
/// schemes are refused, naming the setting.
pub(super) fn lake_of(
    command: &Command,
    argv: &mut Vec<OsString>,
) -> anyhow::Result<Option<(S3Url, usize)>> {
    let mut at = None;
    let mut i = 1;
    while i < argv.len() {
        let arg = argv[i].to_string_lossy().into_owned();
        if arg == "--" {
            break;
        }
        if arg == "--lake" && i + 1 < argv.len() {
            at = Some(i + 1);
            i += 1;
        } else if let Some(v) = arg.strip_prefix("--lake=") {
            // Split so that the value can be replaced on its own.
            let v = OsString::from(v);
            argv[i] = OsString::from("--lake");
            argv.insert(i + 1, v);
            at = Some(i + 1);
            i += 1;
        }
        i += 1;
    }
    if at.is_none()
        && let Command::Run(a) = command
        && a.lake.is_none()
    {
        let mut c = crate::config::Config::load(a.config.as_deref())?;
        c.apply_env(|k| std::env::var(k).ok())?;
        if parse_location(&c.paths.lake, "paths.lake")?.is_some() {
            argv.push(OsString::from("--lake"));
            argv.push(c.paths.lake.clone().into_os_string());
            at = Some(argv.len() - 1);
        }
    }
    let Some(at) = at else { return Ok(None) };
    let Some(url) = parse_location(Path::new(&argv[at]), "--lake")? else {
        return Ok(None);
    };
    Ok(Some((url, at)))
}

/// Runs the command in `argv` on the mirror of `url` (its `--lake` value at `at`): pull,
/// run, push; again after a conflict, up to [`MAX_ATTEMPTS`] times. A command that fails
/// sends nothing (the next pull discards what it left in the mirror).
pub(super) fn on_mirror(
    url: &S3Url,
    mut argv: Vec<OsString>,
    at: usize,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    let mut mirror = Mirror::open(url).with_context(|| format!("opening {url}"))?;
    argv[at] = mirror.root().as_os_str().to_owned();
    if let Command::Serve(a) = Cli::parse_from(&argv).command {
        // The server keeps the mirror: it sends each commit itself (crate::serve::App::flush).
        mirror
            .pull_server()
            .with_context(|| format!("pulling {url}"))?;
        let mirror = std::sync::Arc::new(std::sync::Mutex::new(mirror));
        let code = super::serve::run(a, Some(mirror.clone()));
        // Dropped here, outside the server's runtime (the mirror holds one of its own).
        drop(mirror);
        return code;
    }
    // Event files stay in the bucket, read by cloud scans (MLK_LAKE_EVENTS=fetch mirrors them).
    mirror.read_events_in_place(crate::lake::remote::events_in_place()?);
    let mut conflicts = 0u32;
    loop {
        mirror.pull().with_context(|| format!("pulling {url}"))?;
        // Held here while a test's fault file says so: another writer commits meanwhile.
        crate::fault::hold("remote.pulled");
        let cli = Cli::parse_from(&argv);
        // What the command prints waits in a file until its run is the one that counts.
        let out = Captured::start()?;
        let code = super::dispatch(cli.command, quiet);
        let pushed = match &code {
            Ok(_) => mirror.push().with_context(|| format!("pushing to {url}")),
            // A file read in the bucket may have been removed by another writer's commit.
            Err(e) if mirror.moved_under_a_read().unwrap_or(false) => {
                eprintln!("{url}: {e:#}");
                Ok(Pushed::Conflict(format!(
                    "{url}: the lake changed while the command read it"
                )))
            }
            Err(_) => Ok(Pushed::Done(Default::default())),
        };
        // Printed only when the run counts: its push is done (or it failed by itself). A
        // conflict is retried; a failed push committed nothing, so "commit 1" must not show.
        out.finish(matches!(pushed, Ok(Pushed::Done(_))))?;
        match pushed? {
            Pushed::Done(s) => {
                let code = code?;
                if !quiet {
                    eprintln!(
                        "{url}: {} commits, {} files sent, {} deleted, {conflicts} conflicts retried",
                        s.commits, s.files, s.deleted
                    );
                }
                return Ok(code);
            }
            Pushed::Conflict(what) => {
                conflicts += 1;
                if conflicts >= MAX_ATTEMPTS {
                    bail!(
                        "{what}: other writers changed it {conflicts} times under this command; \
                         nothing of its last run was committed"
                    );
                }
                eprintln!("{what}: another writer got there first; pulling and running again");
                std::thread::sleep(backoff(conflicts));
            }
        }
    }
}

/// The standard output of one run of a command, sent to a temporary file: a run that loses
/// the race and runs again would otherwise print twice (for `--output json`, two
/// documents).
struct Captured {
    saved: std::os::fd::OwnedFd,
    file: std::fs::File,
}

impl Captured {
    fn start() -> anyhow::Result<Captured> {
        use std::io::Write;
        std::io::stdout().flush()?;
        let saved = rustix::io::dup(std::io::stdout()).context("saving standard output")?;
        // Unlinked once open: nothing is left behind, whatever ends the process.
        let path =
            std::env::temp_dir().join(format!("meterlake-output-{}", crate::lake::random_hex(8)?));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("a file for the command's output: {}", path.display()))?;
        let _ = std::fs::remove_file(&path);
        rustix::stdio::dup2_stdout(&file).context("redirecting standard output")?;
        Ok(Captured { saved, file })
    }

    /// Puts standard output back, and prints what the run printed if `keep`.
    fn finish(mut self, keep: bool) -> anyhow::Result<()> {
        use std::io::{Seek, Write};
        std::io::stdout().flush()?;
        rustix::stdio::dup2_stdout(&self.saved).context("restoring standard output")?;
        if keep {
            self.file.rewind()?;
            let mut out = std::io::stdout().lock();
            std::io::copy(&mut self.file, &mut out)?;
            out.flush()?;
        }
        Ok(())
    }
}

/// A random wait that grows with the attempts, so that racing writers fall out of step.
fn backoff(attempt: u32) -> Duration {
    let mut b = [0u8; 2];
    let r = getrandom::fill(&mut b).map_or(0, |()| u16::from_le_bytes(b));
    let base = 20 * u64::from(attempt.min(8));
    Duration::from_millis(base + u64::from(r) % (base * 4 + 1))
}
