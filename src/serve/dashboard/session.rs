//! Dashboard sessions: signing in with an API key opens a session, kept in memory, that the
//! browser holds as an `HttpOnly`, `SameSite=Strict` cookie. The key itself is never
//! stored and never travels again: the session remembers the key's hash, and every request
//! looks that hash up in the current keys, so revoking the key ends its sessions at once.
//!
//! A session lasts [`TTL`] from sign-in, ends with `POST /logout`, and does not outlive the
//! process (a restart signs everyone out). The cookie carries a random 256-bit id; only its
//! SHA-256 is kept here, so the table holds nothing a reader of memory could replay.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header;

use crate::serve::auth::key_hash;

/// The cookie's name.
pub const COOKIE: &str = "mlk_session";
/// How long a session lasts from sign-in.
pub const TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; signing in beyond it drops the expired ones, then the oldest.
const MAX_SESSIONS: usize = 10_000;

struct Session {
    key_hash: String,
    expires: Instant,
}

/// The open sessions.
#[derive(Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session for the key with hash `key_hash`; returns the cookie's value.
    pub fn open(&self, key_hash_hex: String) -> crate::error::Result<String> {
        let id = crate::lake::random_hex(32)?;
        let now = Instant::now();
        let mut m = self.lock();
        if m.len() >= MAX_SESSIONS {
            m.retain(|_, s| s.expires > now);
            if m.len() >= MAX_SESSIONS
                && let Some(oldest) = m
                    .iter()
                    .min_by_key(|(_, s)| s.expires)
                    .map(|(k, _)| k.clone())
            {
                m.remove(&oldest);
            }
        }
        m.insert(
            key_hash(&id),
            Session {
                key_hash: key_hash_hex,
                expires: now + TTL,
            },
        );
        Ok(id)
    }

    /// The key hash of the request's session, if it has a live one.
    pub fn key_of(&self, headers: &HeaderMap) -> Option<String> {
        let id = cookie(headers)?;
        let mut m = self.lock();
        let h = key_hash(&id);
        match m.get(&h) {
            Some(s) if s.expires > Instant::now() => Some(s.key_hash.clone()),
            Some(_) => {
                m.remove(&h);
                None
            }
            None => None,
        }
    }

    /// Ends the request's session; returns whether there was one.
    pub fn close(&self, headers: &HeaderMap) -> bool {
        cookie(headers).is_some_and(|id| self.lock().remove(&key_hash(&id)).is_some())
    }
}

/// The session cookie of a request.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The `Set-Cookie` value that hands a session to the browser.
pub fn set_cookie(id: &str) -> String {
    format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        TTL.as_secs()
    )
}

/// The `Set-Cookie` value that removes it.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, v.parse().unwrap());
        h
    }

    #[test]
    fn a_session_opens_is_found_and_closes() {
        let s = Sessions::default();
        let id = s.open("abc".into()).unwrap();
        let h = with_cookie(&format!("other=1; {COOKIE}={id}"));
        assert_eq!(s.key_of(&h).as_deref(), Some("abc"));
        assert_eq!(
            s.key_of(&with_cookie(&format!("{COOKIE}={}", "0".repeat(64)))),
            None
        );
        assert_eq!(s.key_of(&with_cookie(&format!("{COOKIE}=short"))), None);
        assert!(s.close(&h));
        assert_eq!(s.key_of(&h), None, "closed");
        assert!(!s.close(&h));
        assert!(set_cookie(&id).contains("HttpOnly; SameSite=Strict"));
    }
}
