//! Pseudonymised user ids: with `privacy.pseudonymise_users`, every user id is replaced at
//! ingest (batch and API) by a keyed HMAC-SHA256 of it, so the lake, its quarantine, the
//! server's log and every output derived from them never hold a raw user id.
//!
//! The pseudonym is `pu-` and the first 128 bits of HMAC-SHA256(key, id) in hex: the same
//! id gives the same pseudonym under one key (unique-user counts, engagement and per-user
//! limits are unchanged; a collision among 10⁹ users has odds below 10⁻²⁰), and without
//! the key nobody can recompute it from a guessed id. The key is a file outside the lake
//! holding one base64 line of 16 to 64 random bytes (`openssl rand -base64 32`).
//!
//! A lake is pseudonymised or not for its whole life, recorded in `LAKE/_privacy.json` with
//! the key's id (a hash of the key, not the key): an ingest into it without the key, or
//! with another key, is refused rather than mixing raw and hashed ids; so is turning
//! pseudonymisation on for a lake that already holds events (they would stay raw).

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};

/// The marker of a pseudonymised lake, under its root.
pub const PRIVACY_FILE: &str = "_privacy.json";

/// The environment variable naming the pseudonym key file.
pub const KEY_FILE_ENV: &str = "MLK_PSEUDONYM_KEY_FILE";

/// A loaded pseudonym key: turns user ids into pseudonyms.
#[derive(Clone)]
pub struct Pseudonymiser {
    mac: hmac::Hmac<Sha256>,
    key_id: String,
}

impl std::fmt::Debug for Pseudonymiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Pseudonymiser")
            .field("key_id", &self.key_id)
            .finish()
    }
}

impl Pseudonymiser {
    /// From raw key bytes (16 to 64).
    pub fn new(key: &[u8]) -> std::result::Result<Self, String> {
        if !(16..=64).contains(&key.len()) {
            return Err(format!(
                "the key has {} bytes; it must have 16 to 64 (e.g. `openssl rand -base64 32`)",
                key.len()
            ));
        }
        let mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key)
            .map_err(|e| format!("unusable key: {e}"))?;
        let mut h = Sha256::new();
        h.update(b"meterlake pseudonym key id\0");
        h.update(key);
        let key_id = hex(&h.finalize()[..8]);
        Ok(Pseudonymiser { mac, key_id })
    }

    /// Reads a key file: one line, the key in standard base64.
    pub fn from_key_file(path: &Path) -> Result<Self> {
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
        let key = base64::engine::general_purpose::STANDARD
            .decode(line)
            .map_err(|e| bad(format!("the key is not base64: {e}")))?;
        Pseudonymiser::new(&key).map_err(bad)
    }

    /// The key's id: 16 hex digits of a hash of the key (names the key, never reveals it).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The pseudonym of a user id.
    pub fn pseudonym(&self, user: &str) -> String {
        let mut m = self.mac.clone();
        m.update(user.as_bytes());
        let tag = m.finalize().into_bytes();
        let mut s = String::with_capacity(3 + 32);
        s.push_str("pu-");
        s.push_str(&hex(&tag[..16]));
        s
    }

    /// Keeps this for the life of the process (validation limits are `Copy` and hold a
    /// reference): call once per loaded key.
    pub fn leak(self) -> &'static Pseudonymiser {
        Box::leak(Box::new(self))
    }
}

/// Characters that continue an id in free text: an occurrence of an id next to one is part
/// of a longer id (`u1` in `u12`, `user-u1`), not the id.
fn continues_id(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '@' | '+')
}

/// Byte offsets of the whole-id occurrences of `id` in `text`: not preceded by a character
/// that continues an id, nor followed by one (a `.` ending a sentence does not: `u1.` is
/// `u1`, `u1.5` is not).
pub fn whole_id_matches(text: &str, id: &str) -> Vec<usize> {
    let mut out = Vec::new();
    if id.is_empty() {
        return out;
    }
    for (i, _) in text.match_indices(id) {
        let before = text[..i].chars().next_back();
        let mut after = text[i + id.len()..].chars();
        let next = after.next();
        let whole_before = before.is_none_or(|c| !continues_id(c));
        let whole_after = match next {
            None => true,
            Some('.') => after.next().is_none_or(|c| !continues_id(c)),
            Some(c) => !continues_id(c),
        };
        if whole_before && whole_after {
            out.push(i);
        }
    }
    out
}

/// `text` with every whole-id occurrence of `id` ([`whole_id_matches`]) replaced by `with`.
pub fn replace_whole_id(text: &str, id: &str, with: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for i in whole_id_matches(text, id) {
        out.push_str(&text[last..i]);
        out.push_str(with);
        last = i + id.len();
    }
    out.push_str(&text[last..]);
    out
}

/// Whether a stored user id has the form of a pseudonym (`pu-` and 32 lowercase hex digits).
pub fn is_pseudonym(user: &str) -> bool {
    user.strip_prefix("pu-").is_some_and(|h| {
        h.len() == 32
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// What `_privacy.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    pseudonymise_users: bool,
    key_id: String,
}

fn marker_path(lake: &Path) -> PathBuf {
    lake.join(PRIVACY_FILE)
}

/// The key id a lake's user ids are pseudonymised with, if they are.
pub fn lake_key_id(lake: &Path) -> Result<Option<String>> {
    let p = marker_path(lake);
    let text = match fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&p, e)),
    };
    let m: Marker = serde_json::from_str(&text).map_err(|e| Error::CorruptLake {
        path: p.clone(),
        reason: format!("unreadable privacy marker: {e}"),
    })?;
    Ok(m.pseudonymise_users.then_some(m.key_id))
}

fn needs_key(lake: &Path, id: &str) -> Error {
    Error::InvalidParameter {
        name: "privacy.pseudonym_key_file",
        reason: format!(
            "the lake {} pseudonymises user ids with key {id}: set privacy.pseudonymise_users = true \
             and privacy.pseudonym_key_file (or {KEY_FILE_ENV}) to that key",
            lake.display()
        ),
    }
}

fn wrong_key(lake: &Path, want: &str, got: &str) -> Error {
    Error::InvalidParameter {
        name: "privacy.pseudonym_key_file",
        reason: format!(
            "the lake {} pseudonymises user ids with key {want}, the configured key is {got}",
            lake.display()
        ),
    }
}

/// Checks that a writer's pseudonymisation matches the lake's, before anything is written:
/// the same key, or neither. A lake with no events yet becomes pseudonymised by its first
/// writer that has a key (`has_events`: whether it holds events already). The caller holds
/// the lake's write lock.
pub fn check_writer(lake: &Path, has_events: bool, p: Option<&Pseudonymiser>) -> Result<()> {
    match (lake_key_id(lake)?, p) {
        (None, None) => Ok(()),
        (Some(id), None) => Err(needs_key(lake, &id)),
        (Some(id), Some(p)) if id != p.key_id() => Err(wrong_key(lake, &id, p.key_id())),
        (Some(_), Some(_)) => Ok(()),
        (None, Some(p)) if has_events => Err(Error::InvalidParameter {
            name: "privacy.pseudonymise_users",
            reason: format!(
                "the lake {} already holds events with raw user ids; pseudonymising from now on \
                 would mix raw and hashed ids (start a new lake, key {})",
                lake.display(),
                p.key_id()
            ),
        }),
        (None, Some(p)) => {
            let m = Marker {
                pseudonymise_users: true,
                key_id: p.key_id().to_string(),
            };
            let text = serde_json::to_string_pretty(&m).expect("plain struct");
            super::write_whole(&marker_path(lake), text.as_bytes())
        }
    }
}

/// A user id as the lake stores it: its pseudonym when the lake is pseudonymised (which
/// needs the lake's key), else the id itself. For commands that take a raw `--user`.
pub fn user_in_lake(lake: &Path, p: Option<&Pseudonymiser>, user: &str) -> Result<String> {
    match (lake_key_id(lake)?, p) {
        (None, _) => Ok(user.to_string()),
        (Some(id), None) => Err(needs_key(lake, &id)),
        (Some(id), Some(p)) if id != p.key_id() => Err(wrong_key(lake, &id, p.key_id())),
        (Some(_), Some(p)) => Ok(p.pseudonym(user)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_match_an_independent_hmac() {
        // RFC 4231 test case 2 ("Jefe"), padded: the key must have 16+ bytes, so use case 1's
        // 20-byte key and message "Hi There": HMAC-SHA256 = b0344c61d8db38535ca8afceaf0bf12b...
        let p = Pseudonymiser::new(&[0x0b; 20]).unwrap();
        assert_eq!(
            p.pseudonym("Hi There"),
            "pu-b0344c61d8db38535ca8afceaf0bf12b"
        );
        assert_eq!(p.pseudonym("u-1"), p.pseudonym("u-1"));
        assert_ne!(p.pseudonym("u-1"), p.pseudonym("u-2"));
        let q = Pseudonymiser::new(&[0x0c; 20]).unwrap();
        assert_ne!(p.pseudonym("u-1"), q.pseudonym("u-1"));
        assert_ne!(p.key_id(), q.key_id());
        assert!(!format!("{p:?}").contains("0b0b"));
    }

    #[test]
    fn key_files_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("k");
        fs::write(&f, "c2hvcnQ=\n").unwrap(); // "short"
        let e = Pseudonymiser::from_key_file(&f).unwrap_err().to_string();
        assert!(
            e.contains("5 bytes") && e.contains(&f.display().to_string()),
            "{e}"
        );
        fs::write(&f, "not base64!\n").unwrap();
        assert!(
            Pseudonymiser::from_key_file(&f)
                .unwrap_err()
                .to_string()
                .contains("not base64")
        );
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        fs::write(&f, format!("{key}\n")).unwrap();
        let p = Pseudonymiser::from_key_file(&f).unwrap();
        assert_eq!(p.key_id(), Pseudonymiser::new(&[7u8; 32]).unwrap().key_id());
    }

    #[test]
    fn a_lake_keeps_one_key_for_life() {
        let d = tempfile::tempdir().unwrap();
        let lake = d.path();
        let a = Pseudonymiser::new(&[1; 32]).unwrap();
        let b = Pseudonymiser::new(&[2; 32]).unwrap();
        // A plain lake with events cannot be switched on.
        assert!(check_writer(lake, true, Some(&a)).is_err());
        check_writer(lake, true, None).unwrap();
        // An empty one becomes pseudonymised by its first keyed writer.
        check_writer(lake, false, Some(&a)).unwrap();
        assert_eq!(lake_key_id(lake).unwrap().as_deref(), Some(a.key_id()));
        check_writer(lake, true, Some(&a)).unwrap();
        let e = check_writer(lake, true, None).unwrap_err().to_string();
        assert!(e.contains(a.key_id()), "{e}");
        let e = check_writer(lake, true, Some(&b)).unwrap_err().to_string();
        assert!(e.contains(a.key_id()) && e.contains(b.key_id()), "{e}");
        assert_eq!(user_in_lake(lake, Some(&a), "u").unwrap(), a.pseudonym("u"));
        assert!(user_in_lake(lake, None, "u").is_err());
        assert_eq!(
            user_in_lake(d.path().join("x").as_path(), None, "u").unwrap(),
            "u"
        );
    }
}
