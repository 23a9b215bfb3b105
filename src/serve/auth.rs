//! API keys and rate limits.
//!
//! Keys are random 32-byte tokens (`mlk_` + hex) shown once when made
//! (`meterlake serve-keys add`); the server stores only their SHA-256 hashes, in
//! `LAKE/_api/keys.json`. A key is scoped to one tenant, or is an admin key; `serve-keys
//! revoke ID` marks it revoked (the record stays, for the audit). Every change rewrites
//! the file atomically under an exclusive lock on `LAKE/_api/keys.lock`, so concurrent
//! `serve-keys` runs lose nothing, and is recorded in the lake's audit log; a running
//! server sees it within a second ([`KeysFile`]). Per-tenant token buckets bound the
//! events `/track` accepts per second.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};

/// The keys file under the lake.
pub const KEYS_FILE: &str = "_api/keys.json";
/// The lock file `serve-keys` holds while it changes the keys file.
pub const KEYS_LOCK: &str = "_api/keys.lock";

/// A stored key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredKey {
    /// A short public id (the key's first 8 hex digits after `mlk_`).
    pub id: String,
    /// SHA-256 of the whole key, hex.
    pub hash: String,
    /// The tenant it may act for; none for an admin key.
    pub tenant: Option<String>,
    /// Whether it is an admin key.
    pub admin: bool,
    /// When it was made.
    pub created_at: String,
    /// When it was revoked; a revoked key opens nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    /// One tenant.
    Tenant(String),
    /// An administrator.
    Admin(String),
}

impl Principal {
    /// How the access log names it: `tenant T` or `admin`.
    pub fn actor(&self) -> String {
        match self {
            Principal::Tenant(t) => format!("tenant {t}"),
            Principal::Admin(_) => "admin".to_string(),
        }
    }
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// SHA-256 of a key, hex: what the keys file stores, and what a dashboard session keeps
/// of the key it was opened with (so revoking the key ends the session).
pub fn key_hash(key: &str) -> String {
    sha256_hex(key)
}

/// The keys of a lake.
#[derive(Debug, Default)]
pub struct Keys {
    by_hash: HashMap<String, StoredKey>,
}

impl Keys {
    fn path(lake: &Path) -> PathBuf {
        lake.join(KEYS_FILE)
    }

    fn read_all(lake: &Path) -> Result<Vec<StoredKey>> {
        let p = Keys::path(lake);
        if !p.exists() {
            return Ok(Vec::new());
        }
        let text = std::fs::read_to_string(&p).at(&p)?;
        serde_json::from_str(&text).map_err(|e| Error::BadInput {
            path: p,
            reason: e.to_string(),
        })
    }

    /// Loads the keys file (none: no key works).
    pub fn load(lake: &Path) -> Result<Keys> {
        Ok(Keys {
            by_hash: Keys::read_all(lake)?
                .into_iter()
                .filter(|k| k.revoked_at.is_none())
                .map(|k| (k.hash.clone(), k))
                .collect(),
        })
    }

    /// Every stored key, revoked ones included, oldest first.
    pub fn list(lake: &Path) -> Result<Vec<StoredKey>> {
        Keys::read_all(lake)
    }

    /// Changes the keys file under its lock: reads it, applies `change`, writes it back
    /// atomically and records `action` in the audit log.
    fn update<T>(
        lake: &Path,
        action: &str,
        change: impl FnOnce(&mut Vec<StoredKey>) -> Result<(T, String)>,
    ) -> Result<T> {
        let p = Keys::path(lake);
        let dir = p.parent().expect("has a parent");
        std::fs::create_dir_all(dir).at(dir)?;
        let _lock = crate::lake::lock_exclusive(&lake.join(KEYS_LOCK))?;
        let mut all = Keys::read_all(lake)?;
        let (out, target) = change(&mut all)?;
        let mut text = serde_json::to_vec_pretty(&all).map_err(|e| Error::Render(e.to_string()))?;
        text.push(b'\n');
        crate::report::atomic_write(&p, &text)?;
        crate::lake::audit::append(
            lake,
            &crate::lake::audit::AuditEntry {
                at: crate::time::rfc3339(crate::time::now()),
                actor: "cli".into(),
                action: action.into(),
                target,
                rows: 0,
                commit: None,
                detail: String::new(),
            },
        )?;
        Ok(out)
    }

    /// Makes a key, stores its hash and returns the key (shown once). A tenant id follows
    /// the rules of an event's `tenant_id`.
    pub fn add(lake: &Path, tenant: Option<&str>) -> Result<(String, StoredKey)> {
        if let Some(t) = tenant {
            crate::ingest::record::check_id("tenant_id", t).map_err(|r| {
                Error::InvalidParameter {
                    name: "--tenant",
                    reason: format!("{t:?} {}", r.reason),
                }
            })?;
        }
        let hex = crate::lake::random_hex(32)?;
        let key = format!("mlk_{hex}");
        let stored = StoredKey {
            id: hex[..8].to_string(),
            hash: sha256_hex(&key),
            tenant: tenant.map(str::to_string),
            admin: tenant.is_none(),
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            revoked_at: None,
        };
        Keys::update(lake, "serve-keys add", |all| {
            all.push(stored.clone());
            let target = format!(
                "key {} ({})",
                stored.id,
                stored.tenant.as_deref().unwrap_or("admin")
            );
            Ok(((key, stored.clone()), target))
        })
    }

    /// Revokes the key with public id `id`; returns it.
    pub fn revoke(lake: &Path, id: &str) -> Result<StoredKey> {
        Keys::update(lake, "serve-keys revoke", |all| {
            let mut hits = all
                .iter_mut()
                .filter(|k| k.id == id && k.revoked_at.is_none());
            let (Some(k), None) = (hits.next(), hits.next()) else {
                return Err(Error::InvalidParameter {
                    name: "ID",
                    reason: format!(
                        "no single active key has id {id:?} (see `meterlake serve-keys list`)"
                    ),
                });
            };
            k.revoked_at = Some(crate::time::rfc3339(crate::time::now()));
            let target = format!("key {} ({})", k.id, k.tenant.as_deref().unwrap_or("admin"));
            Ok((k.clone(), target))
        })
    }

    /// Who a bearer token is.
    pub fn principal(&self, token: &str) -> Option<Principal> {
        self.principal_of_hash(&key_hash(token))
    }

    /// The id of a bearer token's key, while it is active.
    pub fn id_of(&self, token: &str) -> Option<String> {
        self.id_of_hash(&key_hash(token))
    }

    /// The id of the key with this hash, while it is active.
    pub fn id_of_hash(&self, hash: &str) -> Option<String> {
        self.by_hash.get(hash).map(|k| k.id.clone())
    }

    /// Who the key with this hash ([`key_hash`]) is, while it is active.
    pub fn principal_of_hash(&self, hash: &str) -> Option<Principal> {
        let k = self.by_hash.get(hash)?;
        Some(match (&k.tenant, k.admin) {
            (Some(t), false) => Principal::Tenant(t.clone()),
            _ => Principal::Admin(k.id.clone()),
        })
    }
}

/// The keys a running server answers with, reloaded when the keys file changes (its
/// size or modification time), checked at most every 250 ms: an added or revoked key
/// takes effect within a second, without a restart.
#[derive(Debug)]
pub struct KeysFile {
    lake: PathBuf,
    current: std::sync::RwLock<(std::sync::Arc<Keys>, Option<Stamp>)>,
}

/// A file's size and modification time: what tells that it changed.
type Stamp = (u64, std::time::SystemTime);

impl KeysFile {
    /// Loads the keys of a lake.
    pub fn load(lake: &Path) -> Result<KeysFile> {
        let stamp = KeysFile::stamp(lake);
        Ok(KeysFile {
            lake: lake.to_path_buf(),
            current: std::sync::RwLock::new((std::sync::Arc::new(Keys::load(lake)?), stamp)),
        })
    }

    fn stamp(lake: &Path) -> Option<Stamp> {
        let m = std::fs::metadata(Keys::path(lake)).ok()?;
        Some((m.len(), m.modified().ok()?))
    }

    /// The keys now.
    pub fn keys(&self) -> std::sync::Arc<Keys> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// Reloads the keys if the file changed; a file that cannot be read keeps the last
    /// good keys (and says why). Returns whether they changed.
    pub fn refresh(&self) -> bool {
        let stamp = KeysFile::stamp(&self.lake);
        if self.current.read().unwrap_or_else(|p| p.into_inner()).1 == stamp {
            return false;
        }
        match Keys::load(&self.lake) {
            Ok(k) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) =
                    (std::sync::Arc::new(k), stamp);
                true
            }
            Err(e) => {
                tracing::error!("keeping the last good API keys: {e}");
                false
            }
        }
    }
}

/// A token bucket: `rate` tokens a second, holding at most `burst`.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Per-tenant buckets.
#[derive(Debug)]
pub struct Limiter {
    rate: f64,
    burst: f64,
    buckets: HashMap<String, Bucket>,
}

impl Limiter {
    /// `rate` per second, `burst` at most; a rate of 0 disables limiting.
    pub fn new(rate: f64, burst: f64) -> Limiter {
        Limiter {
            rate,
            burst: burst.max(1.0),
            buckets: HashMap::new(),
        }
    }

    /// Takes `n` tokens for `tenant`, or says how many seconds until they are there.
    pub fn take(&mut self, tenant: &str, n: f64, now: Instant) -> Result<(), f64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let (rate, burst) = (self.rate, self.burst);
        let b = self.buckets.entry(tenant.to_string()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if n > burst {
            return Err(f64::INFINITY);
        }
        if b.tokens >= n {
            b.tokens -= n;
            Ok(())
        } else {
            Err((n - b.tokens) / rate)
        }
    }
}

/// Token buckets per (tenant, user), each with its plan's rate and burst. A request's
/// events are taken all or none ([`UserLimiter::take_all`]); a bucket that has refilled
/// to its burst says nothing a new one would not, so idle buckets are dropped by a sweep
/// every [`UserLimiter::SWEEP_EVERY`] takes, which bounds the memory to the users active
/// within a burst's refill time.
#[derive(Default)]
pub struct UserLimiter {
    buckets: HashMap<(String, String), (Bucket, f64, f64)>,
    takes: u64,
}

impl UserLimiter {
    /// Takes between sweeps of idle buckets.
    pub const SWEEP_EVERY: u64 = 4096;

    /// Buckets held now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Takes `n` tokens for each `(tenant, user, n, rate, burst)`, or none of them: the
    /// first user short of tokens and the seconds until they are there.
    pub fn take_all(
        &mut self,
        wants: &[(&str, &str, f64, f64, f64)],
        now: Instant,
    ) -> Result<(), (String, f64)> {
        self.takes += 1;
        if self.takes.is_multiple_of(Self::SWEEP_EVERY) {
            self.buckets.retain(|_, (b, rate, burst)| {
                b.tokens + now.duration_since(b.at).as_secs_f64() * *rate < *burst
            });
        }
        let level = |b: Option<&(Bucket, f64, f64)>, rate: f64, burst: f64| match b {
            Some((b, _, _)) => {
                (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst)
            }
            None => burst,
        };
        for &(t, u, n, rate, burst) in wants {
            let have = level(
                self.buckets.get(&(t.to_string(), u.to_string())),
                rate,
                burst,
            );
            if n > burst {
                return Err((u.to_string(), f64::INFINITY));
            }
            if have < n {
                return Err((u.to_string(), (n - have) / rate));
            }
        }
        for &(t, u, n, rate, burst) in wants {
            let key = (t.to_string(), u.to_string());
            let have = level(self.buckets.get(&key), rate, burst);
            self.buckets.insert(
                key,
                (
                    Bucket {
                        tokens: have - n,
                        at: now,
                    },
                    rate,
                    burst,
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_buckets_are_all_or_nothing_and_idle_ones_expire() {
        let mut l = UserLimiter::default();
        let t0 = Instant::now();
        // u1 may send 2 at once (burst 2, 1/s); u2 10.
        assert!(l.take_all(&[("t", "u1", 2.0, 1.0, 2.0)], t0).is_ok());
        let (who, wait) = l
            .take_all(
                &[("t", "u2", 1.0, 1.0, 10.0), ("t", "u1", 1.0, 1.0, 2.0)],
                t0,
            )
            .unwrap_err();
        assert_eq!(who, "u1");
        assert!((wait - 1.0).abs() < 1e-9, "{wait}");
        // Nothing was taken from u2 by the refused request: 10 are still there.
        assert!(l.take_all(&[("t", "u2", 10.0, 1.0, 10.0)], t0).is_ok());
        assert!(
            l.take_all(&[("other", "u1", 2.0, 1.0, 2.0)], t0).is_ok(),
            "per tenant"
        );
        // After a sweep, buckets refilled to their burst are gone.
        let later = t0 + std::time::Duration::from_secs(60);
        for _ in 0..UserLimiter::SWEEP_EVERY {
            let _ = l.take_all(&[], later);
        }
        assert!(l.is_empty(), "{} left", l.len());
    }

    #[test]
    fn buckets_refill_at_their_rate() {
        let mut l = Limiter::new(100.0, 200.0);
        let t0 = Instant::now();
        assert!(l.take("a", 200.0, t0).is_ok());
        let wait = l.take("a", 50.0, t0).unwrap_err();
        assert!((wait - 0.5).abs() < 1e-9, "{wait}");
        assert!(
            l.take("b", 200.0, t0).is_ok(),
            "tenants have their own bucket"
        );
        assert!(
            l.take("a", 50.0, t0 + std::time::Duration::from_millis(500))
                .is_ok()
        );
        assert!(l.take("a", 201.0, t0).unwrap_err().is_infinite());
    }

    #[test]
    fn keys_are_stored_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let (key, stored) = Keys::add(dir.path(), Some("acme")).unwrap();
        let text = std::fs::read_to_string(dir.path().join(KEYS_FILE)).unwrap();
        assert!(!text.contains(&key[4..]), "the key itself is not stored");
        assert_eq!(stored.hash, sha256_hex(&key));
        let keys = Keys::load(dir.path()).unwrap();
        assert_eq!(keys.principal(&key), Some(Principal::Tenant("acme".into())));
        assert_eq!(keys.principal("mlk_00"), None);
    }
}
