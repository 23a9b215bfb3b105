//! API keys and rate limits.
//!
//! Keys are random 32-byte tokens (`mlk_` + hex) shown once when made
//! (`meterlake serve-keys add`); the server stores only their SHA-256 hashes, in
//! `LAKE/_api/keys.json`. A key is scoped to one tenant, or is an admin key. Per-tenant
//! token buckets bound the events `/track` accepts per second.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};

/// The keys file under the lake.
pub const KEYS_FILE: &str = "_api/keys.json";

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
}

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    /// One tenant.
    Tenant(String),
    /// An administrator.
    Admin(String),
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
                .map(|k| (k.hash.clone(), k))
                .collect(),
        })
    }

    /// Makes a key, stores its hash and returns the key (shown once).
    pub fn add(lake: &Path, tenant: Option<&str>) -> Result<(String, StoredKey)> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| Error::Render(format!("random: {e}")))?;
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let key = format!("mlk_{hex}");
        let stored = StoredKey {
            id: hex[..8].to_string(),
            hash: sha256_hex(&key),
            tenant: tenant.map(str::to_string),
            admin: tenant.is_none(),
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        let mut all = Keys::read_all(lake)?;
        all.push(stored.clone());
        let p = Keys::path(lake);
        let dir = p.parent().expect("has a parent");
        std::fs::create_dir_all(dir).at(dir)?;
        let mut text = serde_json::to_vec_pretty(&all).map_err(|e| Error::Render(e.to_string()))?;
        text.push(b'\n');
        crate::report::atomic_write(&p, &text)?;
        Ok((key, stored))
    }

    /// Who a bearer token is.
    pub fn principal(&self, token: &str) -> Option<Principal> {
        let k = self.by_hash.get(&sha256_hex(token))?;
        Some(match (&k.tenant, k.admin) {
            (Some(t), false) => Principal::Tenant(t.clone()),
            _ => Principal::Admin(k.id.clone()),
        })
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

#[cfg(test)]
mod tests {
    use super::*;

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
