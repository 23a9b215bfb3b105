//! Encryption at rest: Parquet modular encryption (AES-GCM, encrypted footer) of every
//! Parquet file meterlake writes once a key is configured (`security.encryption_key_file`
//! or `MLK_ENCRYPTION_KEY_FILE`): the lake's events, rollups, derived tables, reports and
//! exports. Without the key such a file cannot be read, its statistics included.
//!
//! Every file names the key it needs: the footer's key metadata is the key's id (16 hex
//! digits of a hash of the key, never the key). Reading looks the id up among the keys
//! loaded, so during a rekey files under the old key and files under the new one are both
//! read, and a missing key is an error naming the file and the id it expects.
//!
//! polars 0.55 cannot read encrypted Parquet: meterlake's polars reads and writes go
//! through [`read_frame`], [`scan`] and [`write_frame`], which decrypt and encrypt with
//! arrow-rs and hand the columns across through the Arrow C data interface (no copy of
//! the values). With no key configured and no encrypted file met, they are polars' own
//! lazy scans and writers, unchanged.
//!
//! The keys live in one process-wide keyring ([`use_keys`]), loaded by the CLI from the
//! configuration before a command runs, as a TLS library holds its certificates: every
//! read and write of the lake, at any depth, sees the same keys.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Arc, RwLock};

use arrow::array::{Array, ArrayRef, RecordBatch};
use base64::Engine;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::encryption::decrypt::{FileDecryptionProperties, KeyRetriever};
use parquet::encryption::encrypt::FileEncryptionProperties;
use parquet::file::properties::{WriterProperties, WriterPropertiesBuilder};
use polars::prelude::*;
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};

/// The environment variable naming the key file.
pub const KEY_FILE_ENV: &str = "MLK_ENCRYPTION_KEY_FILE";

/// An AES key (128 or 256 bits) and its id.
#[derive(Clone)]
pub struct Key {
    id: String,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("id", &self.id).finish()
    }
}

impl Key {
    /// From raw bytes: 16 (AES-128) or 32 (AES-256).
    pub fn new(bytes: Vec<u8>) -> std::result::Result<Key, String> {
        if bytes.len() != 16 && bytes.len() != 32 {
            return Err(format!(
                "the key has {} bytes; it must have 16 or 32 (128 or 256 bits, e.g. `openssl rand -base64 32`)",
                bytes.len()
            ));
        }
        let mut h = Sha256::new();
        h.update(b"meterlake encryption key id\0");
        h.update(&bytes);
        let id = h.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Key { id, bytes })
    }

    /// Reads a key file: one line, the key in standard base64.
    pub fn from_file(path: &Path) -> Result<Key> {
        let text = fs::read_to_string(path).at(path)?;
        let bad = |reason: String| Error::BadInput {
            path: path.to_path_buf(),
            reason,
        };
        let line = text.trim();
        if line.contains('\n') {
            return Err(bad(
                "the key file must hold one line (the key in base64)".into()
            ));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(line)
            .map_err(|e| bad(format!("the key is not base64: {e}")))?;
        Key::new(bytes).map_err(bad)
    }

    /// The key's id, as files record it.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Keys: the one new files are written with, and every key files may be read with.
#[derive(Default, Clone)]
pub(crate) struct Ring {
    write: Option<Key>,
    read: Vec<Key>,
}

impl Ring {
    fn new(write: Option<Key>, also_read: Vec<Key>) -> Ring {
        let mut read: Vec<Key> = write.iter().cloned().collect();
        for k in also_read {
            if !read.iter().any(|r| r.id == k.id) {
                read.push(k);
            }
        }
        Ring { write, read }
    }
}

/// The process's keys (none until the CLI loads them).
static RING: RwLock<Option<Arc<Ring>>> = RwLock::new(None);

/// Installs the keys: new files are encrypted with `write` (none: written plain); files are
/// read with it or any of `also_read` (the old key during a rekey).
pub fn use_keys(write: Option<Key>, also_read: Vec<Key>) {
    let mut r = RING.write().unwrap_or_else(|p| p.into_inner());
    *r = Some(Arc::new(Ring::new(write, also_read)));
}

/// The file, at the lake root, naming the key the lake is encrypted with.
pub const MARKER_FILE: &str = "_encryption.json";

/// What `_encryption.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Marker {
    key_id: String,
}

/// The id of the key a lake's files are (being) written with, if it is encrypted.
pub fn lake_key_id(lake: &Path) -> Result<Option<String>> {
    let path = lake.join(MARKER_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str::<Marker>(&text)
            .map(|m| Some(m.key_id))
            .map_err(|e| Error::CorruptLake {
                path,
                reason: format!("is not a key marker: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// Records that the lake is encrypted with key `id` (a rekey records the new key before it
/// rewrites the first file).
pub fn mark_lake(lake: &Path, id: &str) -> Result<()> {
    let m = Marker { key_id: id.into() };
    super::write_whole(
        &lake.join(MARKER_FILE),
        serde_json::to_string_pretty(&m)
            .expect("plain struct")
            .as_bytes(),
    )
}

/// Checks, before a process writes into a lake, that it writes with the lake's key, so an
/// encrypted lake never receives a file in clear or under another key (a process started
/// without the key, or with an old one after a rekey). A lake first written with a key is
/// marked with it.
pub fn check_writer(lake: &Path) -> Result<()> {
    let setting = "security.encryption_key_file";
    match (lake_key_id(lake)?, write_key_id()) {
        (None, None) => Ok(()),
        (None, Some(id)) => match plain_event_file(lake)? {
            // Marking would leave those files in clear and lock out the plain writers.
            Some(f) => Err(Error::InvalidParameter {
                name: setting,
                reason: format!(
                    "a key is configured ({id}), but the lake {} holds events in clear ({}): \
                     encrypt it first with `meterlake lake rekey --lake {} --new-key-file KEYFILE`, \
                     or run without the key",
                    lake.display(),
                    f.display(),
                    lake.display()
                ),
            }),
            None => mark_lake(lake, &id),
        },
        (Some(want), Some(id)) if want == id => Ok(()),
        (Some(want), Some(id)) => Err(Error::InvalidParameter {
            name: setting,
            reason: format!(
                "the lake {} is encrypted with key {want} ({MARKER_FILE}), the configured key is {id}: \
                 point {setting} (or {KEY_FILE_ENV}) at the lake's key; keys change with `meterlake lake rekey`",
                lake.display()
            ),
        }),
        (Some(want), None) => Err(Error::InvalidParameter {
            name: setting,
            reason: format!(
                "the lake {} is encrypted with key {want} ({MARKER_FILE}) and no key is configured: \
                 set {setting} (or {KEY_FILE_ENV}) to its key file, so nothing is written to it in clear",
                lake.display()
            ),
        }),
    }
}

/// An event file of the lake written in clear, if there is one.
fn plain_event_file(lake: &Path) -> Result<Option<std::path::PathBuf>> {
    let events = lake.join(super::EVENTS_DIR);
    // A mirror reading event files in the bucket has none here; this lake is unmarked, so
    // any it holds is in clear, and its dedup keys (always mirrored) say whether it holds any.
    if super::remote::in_place(lake).is_some()
        && fs::read_dir(lake.join(super::INDEX_DIR)).is_ok_and(|mut d| d.next().is_some())
    {
        return Ok(Some(events));
    }
    let Ok(days) = fs::read_dir(&events) else {
        return Ok(None);
    };
    for d in days {
        let d = d.at(&events)?.path();
        let Ok(files) = fs::read_dir(&d) else {
            continue;
        };
        for f in files {
            let f = f.at(&d)?.path();
            if f.extension().is_some_and(|x| x == "parquet") && !is_encrypted(&f)? {
                return Ok(Some(f));
            }
        }
    }
    Ok(None)
}

/// The id of the key new files are written with, if any.
pub fn write_key_id() -> Option<String> {
    ring().write.as_ref().map(|k| k.id.clone())
}

fn ring() -> Arc<Ring> {
    RING.read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_default()
}

/// The keys files are read with (the write key first).
pub fn read_keys() -> Vec<Key> {
    ring().read.clone()
}

/// The id of the key a Parquet file is encrypted with (none: written plain). Reads the
/// footer's key metadata only; no key is needed.
pub fn key_id_of(path: &Path) -> Result<Option<String>> {
    if !is_encrypted(path)? {
        return Ok(None);
    }
    /// Notes the id asked for and refuses, so the footer is not decrypted.
    struct Spy(std::sync::Mutex<Option<String>>);
    impl KeyRetriever for Spy {
        fn retrieve_key(&self, key_metadata: &[u8]) -> parquet::errors::Result<Vec<u8>> {
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(String::from_utf8_lossy(key_metadata).into_owned());
            Err(parquet::errors::ParquetError::General(
                "key id noted".into(),
            ))
        }
    }
    let spy = Arc::new(Spy(std::sync::Mutex::new(None)));
    let props = FileDecryptionProperties::with_key_retriever(spy.clone())
        .build()
        .map_err(|e| parquet_err(path, e))?;
    let f = fs::File::open(path).at(path)?;
    let _ = ParquetRecordBatchReaderBuilder::try_new_with_options(
        f,
        ArrowReaderOptions::new().with_file_decryption_properties(props),
    );
    let id = spy.0.lock().unwrap_or_else(|p| p.into_inner()).take();
    match id {
        Some(id) => Ok(Some(id)),
        None => Err(parquet_err(path, "encrypted, but its footer names no key")),
    }
}

/// Rewrites a Parquet file with the write key (decrypting it with any key it may have):
/// the same schema and rows, through a synced temporary file renamed over it, so the file
/// is whole under one key or the other at every instant.
pub fn rewrite(path: &Path, tmp: &Path) -> Result<u64> {
    let f = fs::File::open(path).at(path)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(
        f,
        decrypting(ArrowReaderOptions::new())?,
    )
    .map_err(|e| parquet_err(path, e))?;
    let schema = builder.schema().clone();
    let reader = builder
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| parquet_err(path, e))?;
    let props = encrypting(
        WriterProperties::builder()
            .set_compression(parquet::basic::Compression::ZSTD(
                parquet::basic::ZstdLevel::default(),
            ))
            .set_created_by(format!("meterlake {}", env!("CARGO_PKG_VERSION"))),
    )?
    .build();
    let out = fs::File::create(tmp).at(tmp)?;
    let written = (|| -> Result<u64> {
        let mut w = ArrowWriter::try_new(out.try_clone().at(tmp)?, schema, Some(props))
            .map_err(|e| parquet_err(tmp, e))?;
        let mut rows = 0u64;
        for b in reader {
            let b = b.map_err(|e| parquet_err(path, e))?;
            rows += b.num_rows() as u64;
            w.write(&b).map_err(|e| parquet_err(tmp, e))?;
        }
        w.close().map_err(|e| parquet_err(tmp, e))?;
        out.sync_all().at(tmp)?;
        // Test hook: a crash with the rewritten copy whole but not yet renamed over the file.
        crate::fault::check("rekey.rename").at(tmp)?;
        fs::rename(tmp, path).at(path)?;
        Ok(rows)
    })();
    if written.is_err() {
        let _ = fs::remove_file(tmp);
    }
    written
}

/// The start of a line sealed by [`seal_line`].
pub const LINE_PREFIX: &str = "mlk-aes-gcm:";

fn aead_key(k: &Key) -> ring::aead::LessSafeKey {
    let alg = if k.bytes.len() == 16 {
        &ring::aead::AES_128_GCM
    } else {
        &ring::aead::AES_256_GCM
    };
    ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(alg, &k.bytes).expect("keys have 16 or 32 bytes"),
    )
}

/// Seals one line of text (a quarantined record, a logged event) with the write key:
/// `mlk-aes-gcm:KEYID:` and the base64 of a random 96-bit nonce, the AES-GCM ciphertext and
/// its tag, still one line. Unchanged when no key is configured. The quarantine and the
/// server's log hold raw records as NDJSON, appended line by line (and cut back to whole
/// lines after a crash), so they are encrypted line by line rather than as Parquet.
pub fn seal_line(line: &[u8]) -> Result<Vec<u8>> {
    let Some(k) = ring().write.clone() else {
        return Ok(line.to_vec());
    };
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).map_err(|e| Error::Model(format!("random nonce: {e}")))?;
    let mut buf = line.to_vec();
    aead_key(&k)
        .seal_in_place_append_tag(
            ring::aead::Nonce::assume_unique_for_key(nonce),
            ring::aead::Aad::from(k.id.as_bytes()),
            &mut buf,
        )
        .map_err(|_| Error::Model("encrypting a line failed".into()))?;
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&buf);
    let mut out = format!("{LINE_PREFIX}{}:", k.id).into_bytes();
    out.extend_from_slice(
        base64::engine::general_purpose::STANDARD
            .encode(&sealed)
            .as_bytes(),
    );
    Ok(out)
}

/// The contents of a file that [`seal_file`] may have sealed: opened with the key it names,
/// or as they are when the file is plain. A sealed file that does not open (altered) is an
/// error naming it.
pub fn read_sealed(path: &Path) -> Result<Vec<u8>> {
    let bytes = fs::read(path).at(path)?;
    if !bytes.starts_with(LINE_PREFIX.as_bytes()) {
        return Ok(bytes);
    }
    let line = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    match open_line(path, line)? {
        Some(plain) => Ok(plain.into_owned()),
        None => Err(parquet_err(
            path,
            "sealed, but altered or cut: it does not open",
        )),
    }
}

/// Seals a whole file (a stored report in a text or binary format) as one sealed line with
/// the write key, through a synced temporary file renamed over it: read with any key
/// loaded first, so it also reseals a file under an old key (a rekey). Unchanged when no
/// key is configured.
pub fn seal_file(path: &Path) -> Result<()> {
    if ring().write.is_none() {
        return Ok(());
    }
    let plain = read_sealed(path)?;
    let mut sealed = seal_line(&plain)?;
    sealed.push(b'\n');
    super::write_whole(path, &sealed)
}

/// Opens a line sealed by [`seal_line`] with the key it names (a plain line is returned as
/// it is). `None`: sealed, but torn or altered (the tag does not match). An unknown key is
/// an error naming it, with `path`.
pub fn open_line<'a>(path: &Path, line: &'a [u8]) -> Result<Option<std::borrow::Cow<'a, [u8]>>> {
    let Some(rest) = line.strip_prefix(LINE_PREFIX.as_bytes()) else {
        return Ok(Some(std::borrow::Cow::Borrowed(line)));
    };
    let Some(colon) = rest.iter().position(|b| *b == b':') else {
        return Ok(None);
    };
    let (id, body) = (&rest[..colon], &rest[colon + 1..]);
    let keys = ring().read.clone();
    let Some(k) = keys.iter().find(|k| k.id.as_bytes() == id) else {
        let id = String::from_utf8_lossy(id);
        return Err(parquet_err(
            path,
            if keys.is_empty() {
                format!(
                    "encrypted with key {id}, and no key is configured (security.encryption_key_file or {KEY_FILE_ENV})"
                )
            } else {
                format!(
                    "encrypted with key {id}, not with the configured key {}",
                    keys.iter()
                        .map(|k| k.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        ));
    };
    let Ok(mut sealed) = base64::engine::general_purpose::STANDARD.decode(body) else {
        return Ok(None);
    };
    if sealed.len() < 12 + 16 {
        return Ok(None);
    }
    let nonce: [u8; 12] = sealed[..12].try_into().expect("12 bytes");
    let mut ct = sealed.split_off(12);
    match aead_key(k).open_in_place(
        ring::aead::Nonce::assume_unique_for_key(nonce),
        ring::aead::Aad::from(k.id.as_bytes()),
        &mut ct,
    ) {
        Ok(plain) => {
            let n = plain.len();
            ct.truncate(n);
            Ok(Some(std::borrow::Cow::Owned(ct)))
        }
        Err(_) => Ok(None),
    }
}

/// Finds a file's key by the id in its footer; a miss names the id.
struct Retriever(Vec<Key>);

impl KeyRetriever for Retriever {
    fn retrieve_key(&self, key_metadata: &[u8]) -> parquet::errors::Result<Vec<u8>> {
        let id = String::from_utf8_lossy(key_metadata);
        match self.0.iter().find(|k| k.id.as_bytes() == key_metadata) {
            Some(k) => Ok(k.bytes.clone()),
            None if self.0.is_empty() => Err(parquet::errors::ParquetError::General(format!(
                "encrypted with key {id}, and no key is configured (security.encryption_key_file or {KEY_FILE_ENV})"
            ))),
            None => Err(parquet::errors::ParquetError::General(format!(
                "encrypted with key {id}, not with the configured key{} {}",
                if self.0.len() > 1 { "s" } else { "" },
                self.0
                    .iter()
                    .map(|k| k.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }
}

/// Writer properties with the configured encryption added (unchanged when none).
pub fn encrypting(b: WriterPropertiesBuilder) -> Result<WriterPropertiesBuilder> {
    encrypting_with(&ring(), b)
}

fn encrypting_with(ring: &Ring, b: WriterPropertiesBuilder) -> Result<WriterPropertiesBuilder> {
    let Some(k) = ring.write.clone() else {
        return Ok(b);
    };
    let props = FileEncryptionProperties::builder(k.bytes)
        .with_footer_key_metadata(k.id.into_bytes())
        .build()
        .map_err(|e| Error::Model(format!("encryption: {e}")))?;
    Ok(b.with_file_encryption_properties(props))
}

/// Reader options that decrypt with the configured keys (files written plain read as
/// before).
pub fn decrypting(o: ArrowReaderOptions) -> Result<ArrowReaderOptions> {
    decrypting_with(&ring(), o)
}

fn decrypting_with(ring: &Ring, o: ArrowReaderOptions) -> Result<ArrowReaderOptions> {
    let keys = ring.read.clone();
    let props = FileDecryptionProperties::with_key_retriever(Arc::new(Retriever(keys)))
        .build()
        .map_err(|e| Error::Model(format!("decryption: {e}")))?;
    Ok(o.with_file_decryption_properties(props))
}

/// Whether a Parquet file's footer is encrypted (it ends in `PARE`, not `PAR1`).
pub fn is_encrypted(path: &Path) -> Result<bool> {
    let mut f = fs::File::open(path).at(path)?;
    let len = f.metadata().at(path)?.len();
    if len < 4 {
        return Ok(false);
    }
    f.seek(SeekFrom::End(-4)).at(path)?;
    let mut magic = [0u8; 4];
    f.read_exact(&mut magic).at(path)?;
    Ok(&magic == b"PARE")
}

/// Whether meterlake's polars reads must go through arrow-rs: one of the files is
/// encrypted (so that reading it decrypts it, or fails naming the key it needs). A plain
/// file is read by polars itself, key or not.
fn through_arrow(paths: &[std::path::PathBuf]) -> Result<bool> {
    for p in paths {
        if is_encrypted(p)? {
            return Ok(true);
        }
    }
    Ok(false)
}

fn parquet_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::CorruptLake {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Every batch of a Parquet file, decrypted with the configured keys.
pub fn read_batches(path: &Path) -> Result<Vec<RecordBatch>> {
    let f = fs::File::open(path).at(path)?;
    let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(
        f,
        decrypting(ArrowReaderOptions::new())?,
    )
    .map_err(|e| parquet_err(path, e))?
    .with_batch_size(64 * 1024)
    .build()
    .map_err(|e| parquet_err(path, e))?;
    reader
        .map(|b| b.map_err(|e| parquet_err(path, e)))
        .collect()
}

// The transmutes below need the two crates' C data interface structs to be the same
// bytes: `transmute` checks the sizes at compile time, these the alignments.
const _: () = assert!(
    std::mem::align_of::<arrow::ffi::FFI_ArrowArray>()
        == std::mem::align_of::<polars_arrow::ffi::ArrowArray>()
        && std::mem::align_of::<arrow::ffi::FFI_ArrowSchema>()
            == std::mem::align_of::<polars_arrow::ffi::ArrowSchema>()
);

/// An arrow-rs array as a polars column, through the C data interface.
fn to_polars(name: &str, a: &ArrayRef) -> Result<Column> {
    let (array, schema) = arrow::ffi::to_ffi(&a.to_data())?;
    // SAFETY: both structs are the Arrow C data interface's ArrowArray / ArrowSchema
    // (#[repr(C)], same fields); ownership moves with the bytes and the release callbacks
    // stay with them, so each is released once, by polars.
    let (array, schema): (
        polars_arrow::ffi::ArrowArray,
        polars_arrow::ffi::ArrowSchema,
    ) = unsafe {
        (
            std::mem::transmute::<arrow::ffi::FFI_ArrowArray, polars_arrow::ffi::ArrowArray>(array),
            std::mem::transmute::<arrow::ffi::FFI_ArrowSchema, polars_arrow::ffi::ArrowSchema>(
                schema,
            ),
        )
    };
    let field = unsafe { polars_arrow::ffi::import_field_from_c(&schema) }?;
    let arr = unsafe { polars_arrow::ffi::import_array_from_c(array, field.dtype().clone()) }?;
    Ok(Series::from_arrow(name.into(), arr)?.into_column())
}

/// A polars column (one chunk) as an arrow-rs array, through the C data interface.
fn from_polars(c: &Column) -> Result<(arrow::datatypes::Field, ArrayRef)> {
    let s = c.as_materialized_series().rechunk();
    let arr = s.to_arrow(0, CompatLevel::oldest());
    let field = polars_arrow::datatypes::Field::new(s.name().clone(), arr.dtype().clone(), true);
    let schema = polars_arrow::ffi::export_field_to_c(&field);
    let array = polars_arrow::ffi::export_array_to_c(arr);
    // SAFETY: as in `to_polars`, the other way.
    let (array, schema) = unsafe {
        (
            std::mem::transmute::<polars_arrow::ffi::ArrowArray, arrow::ffi::FFI_ArrowArray>(array),
            std::mem::transmute::<polars_arrow::ffi::ArrowSchema, arrow::ffi::FFI_ArrowSchema>(
                schema,
            ),
        )
    };
    let data = unsafe { arrow::ffi::from_ffi(array, &schema) }?;
    let field = arrow::datatypes::Field::try_from(&schema)?;
    Ok((field, arrow::array::make_array(data)))
}

/// A polars frame of arrow-rs batches (schema from the first; none: empty).
fn frame_of(batches: &[RecordBatch], schema: &arrow::datatypes::Schema) -> Result<DataFrame> {
    let mut out: Option<DataFrame> = None;
    for b in batches {
        let cols = b
            .schema()
            .fields()
            .iter()
            .zip(b.columns())
            .map(|(f, a)| to_polars(f.name(), a))
            .collect::<Result<Vec<_>>>()?;
        let df = DataFrame::new(b.num_rows(), cols)?;
        match &mut out {
            None => out = Some(df),
            Some(o) => {
                o.vstack_mut(&df)?;
            }
        }
    }
    match out {
        Some(df) => Ok(df),
        None => {
            // No rows: the columns with their types, from an empty batch.
            let empty = RecordBatch::new_empty(Arc::new(schema.clone()));
            let cols = empty
                .schema()
                .fields()
                .iter()
                .zip(empty.columns())
                .map(|(f, a)| to_polars(f.name(), a))
                .collect::<Result<Vec<_>>>()?;
            Ok(DataFrame::new(0, cols)?)
        }
    }
}

/// A Parquet file as a polars frame, decrypted when it is encrypted.
pub fn read_frame(path: &Path) -> Result<DataFrame> {
    read_frame_with(&ring(), path)
}

fn read_frame_with(ring: &Ring, path: &Path) -> Result<DataFrame> {
    if !through_arrow(std::slice::from_ref(&path.to_path_buf()))? {
        let f = fs::File::open(path).at(path)?;
        return ParquetReader::new(f)
            .finish()
            .map_err(|e| parquet_err(path, e));
    }
    read_frame_arrow(ring, path)
}

fn read_frame_arrow(ring: &Ring, path: &Path) -> Result<DataFrame> {
    read_columns_arrow(ring, path, None)
}

/// A Parquet file as a polars frame through arrow-rs, only the columns named (none: all;
/// a name the file lacks is left out): a column not read is not decrypted either.
fn read_columns_arrow(ring: &Ring, path: &Path, columns: Option<&[&str]>) -> Result<DataFrame> {
    let f = fs::File::open(path).at(path)?;
    let mut builder = ParquetRecordBatchReaderBuilder::try_new_with_options(
        f,
        decrypting_with(ring, ArrowReaderOptions::new())?,
    )
    .map_err(|e| parquet_err(path, e))?;
    let mut schema = builder.schema().clone();
    if let Some(cols) = columns {
        let roots: Vec<usize> = (0..schema.fields().len())
            .filter(|&i| cols.contains(&schema.field(i).name().as_str()))
            .collect();
        let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), roots.clone());
        builder = builder.with_projection(mask);
        schema = Arc::new(schema.project(&roots).map_err(|e| parquet_err(path, e))?);
    }
    let batches: Vec<RecordBatch> = builder
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| parquet_err(path, e))?
        .map(|b| b.map_err(|e| parquet_err(path, e)))
        .collect::<Result<_>>()?;
    let mut df = frame_of(&batches, &schema).map_err(|e| parquet_err(path, e))?;
    df.rechunk_mut();
    Ok(df)
}

/// A lazy scan of these Parquet files (no globbing), with the Hive partition columns of
/// their paths if `hive`: polars' own scan, or, when files are (or may be) encrypted, the
/// files read and decrypted in parallel.
pub fn scan(paths: &[std::path::PathBuf], hive: bool) -> Result<LazyFrame> {
    scan_with(&ring(), paths, hive, None)
}

/// [`scan`] of the named columns only (and the Hive columns). polars' own scan reads only
/// what a query uses anyway; encrypted files are read whole before the query runs, so a
/// caller that knows its columns spares decrypting and decoding the others.
pub fn scan_columns(
    paths: &[std::path::PathBuf],
    hive: bool,
    columns: &[&str],
) -> Result<LazyFrame> {
    scan_with(&ring(), paths, hive, Some(columns))
}

/// polars' own lazy scan of exactly these files (local paths or object URLs, no
/// globbing), with the Hive partition columns of their paths if `hive`.
pub(crate) fn polars_scan<S: AsRef<str>>(
    paths: impl IntoIterator<Item = S>,
    hive: bool,
) -> Result<LazyFrame> {
    let paths: Vec<PlRefPath> = paths
        .into_iter()
        .map(|p| PlRefPath::new(p.as_ref()))
        .collect();
    let args = ScanArgsParquet {
        hive_options: if hive {
            HiveOptions::new_enabled()
        } else {
            HiveOptions::default()
        },
        glob: false,
        ..Default::default()
    };
    Ok(LazyFrame::scan_parquet_files(
        paths.into_iter().collect(),
        args,
    )?)
}

fn scan_with(
    ring: &Ring,
    paths: &[std::path::PathBuf],
    hive: bool,
    columns: Option<&[&str]>,
) -> Result<LazyFrame> {
    if !through_arrow(paths)? {
        return polars_scan(paths.iter().map(|p| p.to_string_lossy()), hive);
    }
    use rayon::prelude::*;
    let frames: Vec<DataFrame> = paths
        .par_iter()
        .map(|p| -> Result<DataFrame> {
            let mut df = read_columns_arrow(ring, p, columns)?;
            if hive {
                for (k, v) in hive_parts(p) {
                    let n = df.height();
                    let day = chrono::NaiveDate::parse_from_str(&v, "%Y-%m-%d").ok();
                    // polars' own scan types a `date=YYYY-MM-DD` folder as a Date.
                    let c = match (k.as_str(), day) {
                        ("date", Some(d)) => {
                            Column::new(k.as_str().into(), vec![crate::time::day_of_date(d); n])
                                .cast(&DataType::Date)?
                        }
                        _ => Column::new(k.as_str().into(), vec![v.as_str(); n]),
                    };
                    df.with_column(c)?;
                }
            }
            Ok(df)
        })
        .collect::<Result<_>>()?;
    let mut it = frames.into_iter();
    let Some(mut out) = it.next() else {
        return Err(Error::Model("scan of no files".into()));
    };
    for df in it {
        out.vstack_mut(&df)?;
    }
    out.rechunk_mut();
    Ok(out.lazy())
}

/// `key=value` folders of a path, outermost first (the file name excluded).
fn hive_parts(p: &Path) -> Vec<(String, String)> {
    p.parent()
        .map(|d| {
            d.components()
                .filter_map(|c| c.as_os_str().to_str())
                .filter_map(|c| c.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Writes a frame as ZSTD Parquet into `f`: polars' writer, or, when a key is configured,
/// arrow-rs's with encryption.
pub fn write_frame(f: &fs::File, path: &Path, df: &mut DataFrame) -> Result<()> {
    write_frame_with(&ring(), f, path, df)
}

fn write_frame_with(ring: &Ring, f: &fs::File, path: &Path, df: &mut DataFrame) -> Result<()> {
    if ring.write.is_none() {
        return ParquetWriter::new(f)
            .with_compression(ParquetCompression::Zstd(None))
            .finish(df)
            .map(|_| ())
            .map_err(|e| Error::BadInput {
                path: path.to_path_buf(),
                reason: format!("writing: {e}"),
            });
    }
    let cols = df
        .columns()
        .iter()
        .map(from_polars)
        .collect::<Result<Vec<_>>>()?;
    let schema = Arc::new(arrow::datatypes::Schema::new(
        cols.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(schema.clone(), cols.into_iter().map(|(_, a)| a).collect())?;
    let props = encrypting_with(
        ring,
        WriterProperties::builder().set_compression(parquet::basic::Compression::ZSTD(
            parquet::basic::ZstdLevel::default(),
        )),
    )?
    .build();
    let mut w = ArrowWriter::try_new(f.try_clone().at(path)?, schema, Some(props))
        .map_err(|e| parquet_err(path, e))?;
    w.write(&batch).map_err(|e| parquet_err(path, e))?;
    w.close().map_err(|e| parquet_err(path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Explicit keyrings: the process-wide one stays empty for the other tests.
    #[test]
    fn frames_round_trip_encrypted_and_name_the_key_they_need() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("date=2026-09-01").join("t.parquet");
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let mut df = df!(
            "tenant_id" => ["a", "b", "a"],
            "value" => [1.5, 2.0, -3.25],
            "n" => [Some(1i64), None, Some(3)],
        )
        .unwrap();
        df.with_column(
            Column::new("ts".into(), [1_788_220_800_000_001i64, 2, 3])
                .cast(&DataType::Datetime(
                    TimeUnit::Microseconds,
                    Some(TimeZone::UTC),
                ))
                .unwrap(),
        )
        .unwrap();
        let k1 = Key::new(vec![1; 32]).unwrap();
        let k2 = Key::new(vec![2; 16]).unwrap();
        let one = Ring::new(Some(k1.clone()), vec![]);
        let f = fs::File::create(&p).unwrap();
        write_frame_with(&one, &f, &p, &mut df).unwrap();
        drop(f);
        assert!(is_encrypted(&p).unwrap());
        assert!(read_frame_with(&one, &p).unwrap().equals_missing(&df));
        let lf = scan_with(&one, std::slice::from_ref(&p), true, None)
            .unwrap()
            .collect()
            .unwrap();
        assert_eq!(lf.column("date").unwrap().dtype(), &DataType::Date);
        assert!(lf.drop("date").unwrap().equals_missing(&df));
        // A projection reads those columns only (and the Hive ones).
        let first = df.get_column_names()[0].to_string();
        let lf = scan_with(
            &one,
            std::slice::from_ref(&p),
            true,
            Some(&[first.as_str()]),
        )
        .unwrap()
        .collect()
        .unwrap();
        assert_eq!(lf.width(), 2);
        assert!(
            lf.column(&first)
                .unwrap()
                .equals_missing(df.column(&first).unwrap())
        );
        // Without the key, or with another one: the error names the file and the key id.
        let e = read_frame_with(&Ring::default(), &p)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(k1.id()) && e.contains("no key is configured") && e.contains("t.parquet"),
            "{e}"
        );
        let other = Ring::new(Some(k2.clone()), vec![]);
        let Err(e) = scan_with(&other, std::slice::from_ref(&p), false, None) else {
            panic!("read with another key")
        };
        let e = e.to_string();
        assert!(e.contains(k1.id()) && e.contains(k2.id()), "{e}");
        // During a rekey both keys read.
        let both = Ring::new(Some(k2), vec![k1]);
        assert!(read_frame_with(&both, &p).unwrap().equals_missing(&df));
        // Key files: base64, 16 or 32 bytes.
        let kf = d.path().join("k");
        fs::write(&kf, "AAAA\n").unwrap();
        assert!(
            Key::from_file(&kf)
                .unwrap_err()
                .to_string()
                .contains("3 bytes")
        );
    }
}
