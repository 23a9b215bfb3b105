//! Input files → chunks of raw records, read on a background thread.
//!
//! Formats are detected from the extension and then the content (Parquet magic, `[` for a
//! JSON array batch, a header line for CSV), and can be forced. `.gz` inputs are decompressed
//! on the fly. Line-oriented inputs (NDJSON, CSV) stream in chunks of a few MiB cut at record
//! boundaries, so memory stays bounded whatever the file size; a JSON array or a
//! pretty-printed JSON stream is read whole.
//!
//! [`open`] decides the format and opens the bytes; this file cuts them into chunks (line
//! buffers from a pool, so reading reuses memory) on the reader thread.

mod open;

pub use open::Format;
pub(crate) use open::{Decided, Hasher, decide, is_input_file};

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{Error, IoContext, Result};
pub(crate) use open::read_up_to;
use open::{bad_read, open_raw};

/// Target size of a chunk handed to one parser task.
pub const CHUNK_BYTES: usize = 1 << 20;
/// A line longer than this is not buffered whole: it is rejected with its first bytes kept.
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// CSV header, mapped once per file.
#[derive(Debug)]
pub(crate) struct CsvHeader {
    pub names: Vec<String>,
}

/// A piece of input ready to parse, with where it came from.
pub(crate) enum Chunk {
    /// Whole NDJSON lines; `first_line` is the 1-based line number of the first.
    Lines { data: Pooled, first_line: u64 },
    /// Whole CSV records (after the header).
    Csv {
        data: Vec<u8>,
        first_line: u64,
        header: Arc<CsvHeader>,
    },
    /// Elements of a JSON document (array or stream): byte ranges and their line numbers.
    Elements {
        doc: Arc<Vec<u8>>,
        items: Vec<(usize, usize, u64)>,
    },
    /// Parquet rows; `first_row` is the 1-based row number of the first.
    Rows { batch: RecordBatch, first_row: u64 },
    /// A line too long to buffer: its start and full length.
    Oversized { line: u64, head: Vec<u8>, len: u64 },
}

/// Buffers of line chunks, handed back to the reader when a chunk is dropped.
type Pool = Arc<Mutex<Vec<Vec<u8>>>>;

/// Most buffers a pool keeps (more are in flight only briefly).
const POOL_MAX: usize = 32;

/// A chunk's bytes; dropping it returns the buffer to the reader's pool, so reading
/// reuses memory instead of faulting in fresh pages for every chunk (the kernel zeroing
/// them was about a tenth of ingest time).
///
/// The chunk is `data[..len]`. The buffer keeps its whole length when it goes back to the
/// pool: those bytes are initialised, so the reader reads into them as they are instead of
/// zero-filling a megabyte per chunk first (~1 % of ingest CPU).
pub(crate) struct Pooled {
    data: Vec<u8>,
    len: usize,
    pool: Pool,
}

#[cfg(test)]
impl Pooled {
    /// A chunk buffer outside any pool.
    pub(crate) fn unpooled(data: Vec<u8>) -> Self {
        Pooled {
            len: data.len(),
            data,
            pool: Pool::default(),
        }
    }
}

impl std::ops::Deref for Pooled {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let data = std::mem::take(&mut self.data);
        if let Ok(mut p) = self.pool.lock()
            && p.len() < POOL_MAX
        {
            p.push(data);
        }
    }
}

/// A buffer from the pool (its bytes are left from an earlier chunk: scratch to overwrite),
/// or a new, empty one.
fn pooled_buf(pool: &Pool) -> Vec<u8> {
    pool.lock()
        .ok()
        .and_then(|mut p| p.pop())
        .unwrap_or_else(|| Vec::with_capacity(CHUNK_BYTES * 2))
}

/// Reads up to a chunk more into `buf` after its first `filled` bytes (the input so far;
/// the rest is scratch), zero-filling only bytes the buffer never had. True at the end.
fn read_more(r: &mut impl Read, buf: &mut Vec<u8>, filled: &mut usize) -> std::io::Result<bool> {
    let want = *filled + CHUNK_BYTES;
    if buf.len() < want {
        buf.resize(want, 0);
    }
    let k = read_up_to(r, &mut buf[*filled..want])?;
    *filled += k;
    Ok(k == 0)
}

/// Starts a reader thread for `path`; chunks arrive on the returned channel, in order.
/// With `hash`, line-oriented inputs feed every raw byte they read into it.
pub(crate) fn spawn_reader(
    path: PathBuf,
    decided: Decided,
    counter: Arc<AtomicU64>,
    hash: Option<Hasher>,
) -> (Receiver<Result<Chunk>>, std::thread::JoinHandle<()>) {
    let (tx, rx) = sync_channel::<Result<Chunk>>(4);
    let handle = std::thread::Builder::new()
        .name("meterlake-reader".into())
        .spawn(move || {
            let r = match decided.format {
                Format::Parquet => read_parquet(&path, counter, &tx),
                Format::Csv => open_raw(&path, counter, decided.gzip, hash)
                    .and_then(|r| read_csv(&path, r, decided.gzip, &tx)),
                _ => open_raw(&path, counter, decided.gzip, hash)
                    .and_then(|r| read_json(&path, r, decided.gzip, &tx)),
            };
            if let Err(e) = r {
                let _ = tx.send(Err(e));
            }
        })
        .expect("spawning a thread");
    (rx, handle)
}

/// A receiver hung up (the ingest failed elsewhere): stop quietly.
struct Hangup;

fn send(tx: &SyncSender<Result<Chunk>>, c: Chunk) -> std::result::Result<(), Hangup> {
    tx.send(Ok(c)).map_err(|_| Hangup)
}

fn read_json(
    path: &Path,
    mut r: Box<dyn Read + Send>,
    gzip: bool,
    tx: &SyncSender<Result<Chunk>>,
) -> Result<()> {
    let mut buf = Vec::with_capacity(CHUNK_BYTES * 2);
    // Look at the start to choose line mode or document mode.
    let mut probe = vec![0u8; CHUNK_BYTES];
    let k = read_up_to(&mut r, &mut probe).map_err(|e| bad_read(path, e, gzip))?;
    probe.truncate(k);
    // Windows tools often start UTF-8 files with a byte-order mark: it is not part of line 1.
    if probe.starts_with(b"\xEF\xBB\xBF") {
        probe.drain(..3);
    }
    let first = probe.iter().position(|b| !b.is_ascii_whitespace());
    let Some(first) = first else { return Ok(()) };
    // Document mode for a JSON array (a CloudEvents batch), or when the first value is a
    // complete object spanning several lines (pretty-printed envelopes). Anything else is
    // read line by line, so a bad first line is just a rejected record.
    let line_mode = match probe[first] {
        b'[' => false,
        _ => {
            let mut stream = serde_json::Deserializer::from_slice(&probe[first..])
                .into_iter::<&serde_json::value::RawValue>();
            !matches!(stream.next(), Some(Ok(v)) if v.get().contains('\n'))
        }
    };
    if !line_mode {
        // A JSON array (CloudEvents batch) or a stream of (pretty-printed) objects: read whole.
        let mut doc = probe;
        r.read_to_end(&mut doc)
            .map_err(|e| bad_read(path, e, gzip))?;
        return json_document(path, doc, tx);
    }
    buf.extend_from_slice(&probe);
    // The input read so far is `buf[..filled]`; bytes after it are scratch (see `Pooled`).
    let mut filled = buf.len();
    let pool = Pool::default();
    let mut line = 1u64;
    let mut eof = false;
    loop {
        if !eof && filled < CHUNK_BYTES {
            eof = read_more(&mut r, &mut buf, &mut filled).map_err(|e| bad_read(path, e, gzip))?;
            if !eof {
                continue;
            }
        }
        if filled == 0 {
            return Ok(());
        }
        let cut = if eof {
            Some(filled)
        } else {
            memchr::memrchr(b'\n', &buf[..filled]).map(|i| i + 1)
        };
        match cut {
            Some(cut) => {
                let mut next = pooled_buf(&pool);
                let rest = filled - cut;
                if next.len() < rest {
                    next.resize(rest, 0);
                }
                next[..rest].copy_from_slice(&buf[cut..filled]);
                let lines = memchr::memchr_iter(b'\n', &buf[..cut]).count() as u64;
                let ends_nl = buf[cut - 1] == b'\n';
                let data = std::mem::replace(&mut buf, next);
                filled = rest;
                if send(
                    tx,
                    Chunk::Lines {
                        data: Pooled {
                            data,
                            len: cut,
                            pool: pool.clone(),
                        },
                        first_line: line,
                    },
                )
                .is_err()
                {
                    return Ok(());
                }
                line += lines + u64::from(!ends_nl);
            }
            None if filled >= MAX_LINE_BYTES => {
                // One huge line: keep its head, skip to its end.
                let head = buf[..64 << 10].to_vec();
                let mut len = filled as u64;
                buf.clear();
                filled = 0;
                let mut br = BufReader::new(&mut r);
                loop {
                    let avail = br.fill_buf().map_err(|e| bad_read(path, e, gzip))?;
                    if avail.is_empty() {
                        eof = true;
                        break;
                    }
                    if let Some(i) = memchr::memchr(b'\n', avail) {
                        len += i as u64;
                        buf.extend_from_slice(&avail[i + 1..]);
                        filled = buf.len();
                        let n = avail.len();
                        br.consume(n);
                        break;
                    }
                    len += avail.len() as u64;
                    let n = avail.len();
                    br.consume(n);
                }
                if send(tx, Chunk::Oversized { line, head, len }).is_err() {
                    return Ok(());
                }
                line += 1;
            }
            None => {
                // No newline yet: read more into the same buffer.
                eof = read_more(&mut r, &mut buf, &mut filled)
                    .map_err(|e| bad_read(path, e, gzip))?;
            }
        }
    }
}

/// Splits a whole JSON document into its elements: the items of a top-level array, or
/// the values of a whitespace-separated stream.
fn json_document(path: &Path, doc: Vec<u8>, tx: &SyncSender<Result<Chunk>>) -> Result<()> {
    let doc = Arc::new(doc);
    let start = doc
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(doc.len());
    let base = doc.as_ptr() as usize;
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    if doc.get(start) == Some(&b'[') {
        let items: Vec<&serde_json::value::RawValue> =
            serde_json::from_slice(&doc).map_err(|e| Error::BadInput {
                path: path.into(),
                reason: format!("not a JSON array of events: {e}"),
            })?;
        for it in items {
            let s = it.get().as_ptr() as usize - base;
            ranges.push((s, s + it.get().len()));
        }
    } else {
        let stream =
            serde_json::Deserializer::from_slice(&doc).into_iter::<&serde_json::value::RawValue>();
        for it in stream {
            let it = it.map_err(|e| Error::BadInput {
                path: path.into(),
                reason: format!("not NDJSON nor a stream of JSON objects: {e}"),
            })?;
            let s = it.get().as_ptr() as usize - base;
            ranges.push((s, s + it.get().len()));
        }
    }
    // Line numbers of each element's start, in one pass.
    let mut items = Vec::with_capacity(ranges.len());
    let (mut pos, mut line) = (0usize, 1u64);
    for (s, e) in ranges {
        line += memchr::memchr_iter(b'\n', &doc[pos..s]).count() as u64;
        pos = s;
        items.push((s, e, line));
    }
    for part in items.chunks(16 * 1024) {
        if send(
            tx,
            Chunk::Elements {
                doc: doc.clone(),
                items: part.to_vec(),
            },
        )
        .is_err()
        {
            break;
        }
    }
    Ok(())
}

/// Position just after the last newline that is outside quotes (CSV record boundary),
/// given that `data` starts outside quotes.
fn csv_cut(data: &[u8]) -> Option<usize> {
    let mut in_quotes = false;
    let mut cut = None;
    for (i, &b) in data.iter().enumerate() {
        match b {
            b'"' => in_quotes = !in_quotes,
            b'\n' if !in_quotes => cut = Some(i + 1),
            _ => {}
        }
    }
    cut
}

/// A file without a column for tenant, meter or time is the wrong format, not a file of
/// bad records: stop with an error naming the missing column.
fn require_columns(path: &Path, names: &[String], what: &str) -> Result<()> {
    for req in ["tenant_id", "meter", "ts"] {
        let aliases = crate::ingest::csv_aliases(req);
        if !names.iter().any(|n| aliases.contains(&n.as_str())) {
            return Err(Error::BadInput {
                path: path.into(),
                reason: format!("{what} has no {req} column (columns: {})", names.join(",")),
            });
        }
    }
    Ok(())
}

fn read_csv(
    path: &Path,
    r: Box<dyn Read + Send>,
    gzip: bool,
    tx: &SyncSender<Result<Chunk>>,
) -> Result<()> {
    let mut r = BufReader::with_capacity(1 << 20, r);
    let mut header_line = Vec::new();
    r.read_until(b'\n', &mut header_line)
        .map_err(|e| bad_read(path, e, gzip))?;
    let mut hr = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(&header_line[..]);
    let names: Vec<String> = match hr.records().next() {
        Some(Ok(rec)) => rec
            .iter()
            .map(|s| s.trim().trim_start_matches('\u{feff}').to_string())
            .collect(),
        Some(Err(e)) => {
            return Err(Error::BadInput {
                path: path.into(),
                reason: format!("line 1: bad CSV header: {e}"),
            });
        }
        None => return Ok(()),
    };
    require_columns(path, &names, "line 1: CSV header")?;
    let header = Arc::new(CsvHeader { names });
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK_BYTES * 2);
    let mut line = 2u64;
    let mut eof = false;
    while !eof || !buf.is_empty() {
        if !eof {
            let old = buf.len();
            buf.resize(old + CHUNK_BYTES, 0);
            let k = read_up_to(&mut r, &mut buf[old..]).map_err(|e| bad_read(path, e, gzip))?;
            buf.truncate(old + k);
            eof = k == 0;
        }
        let cut = if eof { Some(buf.len()) } else { csv_cut(&buf) };
        let Some(cut) = cut.filter(|&c| c > 0) else {
            if buf.len() >= MAX_LINE_BYTES {
                return Err(Error::BadInput {
                    path: path.into(),
                    reason: format!(
                        "line {line}: a CSV record longer than {MAX_LINE_BYTES} bytes (unbalanced quote?)"
                    ),
                });
            }
            continue;
        };
        let rest = buf.split_off(cut);
        let data = std::mem::replace(&mut buf, rest);
        let lines = memchr::memchr_iter(b'\n', &data).count() as u64;
        if send(
            tx,
            Chunk::Csv {
                data,
                first_line: line,
                header: header.clone(),
            },
        )
        .is_err()
        {
            return Ok(());
        }
        line += lines;
    }
    Ok(())
}

fn read_parquet(
    path: &Path,
    counter: Arc<AtomicU64>,
    tx: &SyncSender<Result<Chunk>>,
) -> Result<()> {
    let f = File::open(path).at(path)?;
    let size = f.metadata().at(path)?.len();
    let unreadable = |e: parquet::errors::ParquetError| Error::BadInput {
        path: path.into(),
        reason: format!("not a readable Parquet file: {e}"),
    };
    // An encrypted input (an export of an encrypted lake) reads with the configured keys.
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(
        f,
        crate::lake::crypto::decrypting(parquet::arrow::arrow_reader::ArrowReaderOptions::new())?,
    )
    .map_err(unreadable)?;
    let names: Vec<String> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    require_columns(path, &names, "Parquet schema")?;
    let reader = builder
        .with_batch_size(32 * 1024)
        .build()
        .map_err(unreadable)?;
    let mut row = 1u64;
    for batch in reader {
        let batch = batch.map_err(|e| Error::BadInput {
            path: path.into(),
            reason: format!("Parquet: {e}"),
        })?;
        let n = batch.num_rows() as u64;
        if send(
            tx,
            Chunk::Rows {
                batch,
                first_row: row,
            },
        )
        .is_err()
        {
            return Ok(());
        }
        row += n;
    }
    counter.fetch_add(size, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The NDJSON reader's chunks, put back together, are the input byte for byte, and each
    /// chunk's first line number counts the newlines before it: across pooled buffers that
    /// still hold earlier chunks' bytes, lines longer than a chunk, CRLF and a last line
    /// without a newline.
    #[test]
    fn line_chunks_reassemble_the_input_with_their_line_numbers() {
        let mut input = Vec::new();
        let mut x: u64 = 7;
        for i in 0..40_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = match i {
                5_000 => 1_500_000, // longer than a chunk
                9_000 | 21_000 => 300_000,
                _ => (x >> 33) as usize % 300,
            };
            input.extend((0..len).map(|k| b'a' + ((k as u64 + i) % 26) as u8));
            input.extend_from_slice(if x.is_multiple_of(5) { b"\r\n" } else { b"\n" });
        }
        input.extend_from_slice(b"last line, no newline");
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let reader = {
            let input = input.clone();
            std::thread::spawn(move || {
                read_json(
                    Path::new("t.ndjson"),
                    Box::new(std::io::Cursor::new(input)),
                    false,
                    &tx,
                )
            })
        };
        let (mut got, mut newlines, mut chunks) = (Vec::new(), 0u64, 0);
        for c in rx {
            match c.unwrap() {
                Chunk::Lines { data, first_line } => {
                    assert_eq!(first_line, newlines + 1, "chunk {chunks}");
                    newlines += data.iter().filter(|&&b| b == b'\n').count() as u64;
                    got.extend_from_slice(&data);
                    chunks += 1;
                    // `data` drops here: its buffer goes back to the pool for a later chunk.
                }
                _ => panic!("only line chunks expected"),
            }
        }
        reader.join().unwrap().unwrap();
        assert!(chunks > 5, "{chunks} chunks");
        assert!(got == input, "the chunks are the input");
    }

    #[test]
    fn csv_cut_respects_quoted_newlines() {
        assert_eq!(csv_cut(b"a,b\nc,\"d\ne\"\nf"), Some(12));
        assert_eq!(csv_cut(b"a,\"b\nc"), None);
        assert_eq!(csv_cut(b"a,\"b\"\"\"\n"), Some(8));
    }
}
