//! Opening an input: its [`Format`] (forced, else from the extension, else from the
//! content), whether it is gzipped, and a reader over its bytes that counts them for the
//! progress bar and can hash them for the input's checksum as they stream past.
//!
//! Decided for every input before the lake is touched ([`decide`]), so a missing or
//! unreadable file fails the ingest with nothing written.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, IoContext, Result};

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Detect from the extension, then the content.
    Auto,
    /// Newline-delimited JSON events (canonical names or tracker aliases; CloudEvents lines too).
    Ndjson,
    /// CSV with a header row of canonical names.
    Csv,
    /// CloudEvents 1.0 JSON: one envelope, an array (batch) or NDJSON of envelopes.
    Cloudevents,
    /// Parquet with the canonical columns.
    Parquet,
}

impl Format {
    /// Every format, in declaration order.
    pub const ALL: [Format; 5] = [
        Format::Auto,
        Format::Ndjson,
        Format::Csv,
        Format::Cloudevents,
        Format::Parquet,
    ];

    /// Lower-case name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Ndjson => "ndjson",
            Format::Csv => "csv",
            Format::Cloudevents => "cloudevents",
            Format::Parquet => "parquet",
        }
    }
}

crate::error::named_enum!(Format, "input format");

/// The decided format of one input, and whether records must be CloudEvents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decided {
    pub format: Format,
    pub gzip: bool,
}

/// Counts raw bytes read from the file (before decompression), for the progress bar.
/// and, when asked, hashes them for the input's checksum while they stream past.
struct Counting<R> {
    inner: R,
    n: Arc<AtomicU64>,
    hash: Option<Hasher>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n.fetch_add(k as u64, Ordering::Relaxed);
        if let Some(h) = &self.hash
            && let Ok(mut h) = h.lock()
        {
            h.update(&buf[..k]);
        }
        Ok(k)
    }
}

/// A checksum being computed by the reader thread (xxh3-128 of the raw file bytes).
pub(crate) type Hasher = Arc<Mutex<xxhash_rust::xxh3::Xxh3Default>>;

fn has_ext(path: &Path, exts: &[&str]) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    exts.iter().any(|e| name.ends_with(e))
}

/// True for file names ingest picks up when given a directory.
pub(crate) fn is_input_file(path: &Path) -> bool {
    has_ext(path, &[".ndjson", ".jsonl", ".json", ".csv", ".parquet"])
}

pub(super) fn open_raw(
    path: &Path,
    counter: Arc<AtomicU64>,
    gzip: bool,
    hash: Option<Hasher>,
) -> Result<Box<dyn Read + Send>> {
    let f = File::open(path).at(path)?;
    let counted = Counting {
        inner: BufReader::with_capacity(1 << 20, f),
        n: counter,
        hash,
    };
    Ok(if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(counted))
    } else {
        Box::new(counted)
    })
}

/// Decides the format of `path`: the forced one, else extension, else content.
pub(crate) fn decide(path: &Path, forced: Format) -> Result<Decided> {
    let mut head = [0u8; 4];
    let mut f = File::open(path).at(path)?;
    let n = read_up_to(&mut f, &mut head).at(path)?;
    let gzip = n >= 2 && head[0] == 0x1f && head[1] == 0x8b;
    let format = match forced {
        Format::Auto => {
            if n == 4 && &head == b"PAR1" {
                Format::Parquet
            } else if has_ext(path, &[".csv"]) {
                Format::Csv
            } else if has_ext(path, &[".ndjson", ".jsonl", ".json"]) {
                Format::Ndjson
            } else if has_ext(path, &[".parquet"]) {
                return Err(Error::BadInput {
                    path: path.into(),
                    reason: "not a Parquet file (no PAR1 magic)".into(),
                });
            } else {
                // Sniff the (decompressed) content: JSON starts with { or [.
                let mut r = open_raw(path, Arc::default(), gzip, None)?;
                let mut buf = vec![0u8; 4096];
                let k = read_up_to(&mut r, &mut buf).map_err(|e| bad_read(path, e, gzip))?;
                let text = buf[..k].strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&buf[..k]);
                match text.iter().find(|b| !b.is_ascii_whitespace()) {
                    Some(b'{') | Some(b'[') | None => Format::Ndjson,
                    Some(_) => Format::Csv,
                }
            }
        }
        f => f,
    };
    if format == Format::Parquet && gzip {
        return Err(Error::BadInput {
            path: path.into(),
            reason: "gzipped Parquet is not supported".into(),
        });
    }
    Ok(Decided { format, gzip })
}

/// Fills `buf` unless the input ends first (a read may return fewer bytes than asked);
/// the bytes read.
pub(crate) fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

pub(super) fn bad_read(path: &Path, e: std::io::Error, gzip: bool) -> Error {
    if gzip {
        Error::BadInput {
            path: path.into(),
            reason: format!("bad gzip data: {e}"),
        }
    } else {
        Error::io(path, e)
    }
}
