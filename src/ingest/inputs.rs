//! Which files an ingest reads and how the lake recognises them: directories expanded to
//! the input files they hold, and the xxh3-128 checksum of an input's bytes, by which an
//! input the lake already holds is skipped. The first step of [`super::ingest`], before
//! the lake is touched.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::source;
use crate::error::{Error, IoContext, Result};

/// Expands directories into the input files they hold (sorted), keeps files as given.
pub fn expand_inputs(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = fs::read_dir(p)
                .at(p)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && source::is_input_file(f))
                .collect();
            found.sort();
            if found.is_empty() {
                tracing::warn!(dir = %p.display(), "no input files (.ndjson, .jsonl, .json, .csv, .parquet, optionally .gz) in this directory");
            }
            out.extend(found);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(Error::io(
                p,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
            ));
        }
    }
    Ok(out)
}

/// xxh3-128 of a file's bytes, hex, and its size.
pub fn checksum(path: &Path) -> Result<(String, u64)> {
    let mut h = xxhash_rust::xxh3::Xxh3Default::new();
    let n = hash_from(path, 0, &mut h)?;
    Ok((format!("{:032x}", h.digest128()), n))
}

/// Feeds the bytes of `path` from `offset` to its end into `h`; returns how many.
fn hash_from(path: &Path, offset: u64, h: &mut xxhash_rust::xxh3::Xxh3Default) -> Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut f = fs::File::open(path).at(path)?;
    f.seek(SeekFrom::Start(offset)).at(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).at(path)?;
        if k == 0 {
            return Ok(n);
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
}

/// The checksum the reader computed over the first `read` bytes of `path`, completed
/// with whatever it did not read (a reader may stop early, e.g. on a blank input).
pub(super) fn finish_checksum(path: &Path, hash: source::Hasher, read: u64) -> Result<String> {
    let mut h = match std::sync::Arc::try_unwrap(hash) {
        Ok(m) => m.into_inner().unwrap_or_else(|p| p.into_inner()),
        Err(shared) => shared
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|p| p.into_inner().clone()),
    };
    hash_from(path, read, &mut h)?;
    Ok(format!("{:032x}", h.digest128()))
}
