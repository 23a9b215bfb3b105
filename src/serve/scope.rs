//! Who is calling and which tenant they may see: the extractors every endpoint but the open
//! ones (`/healthz`, `/readyz`, `/prometheus`, the OpenAPI document) names in its signature.
//!
//! - [`Caller`]: the principal of the request's API key (`Authorization: Bearer KEY`, else
//!   `X-Api-Key`); 401 `authorization` when there is no key or it is unknown.
//! - [`Admin`]: a caller with an admin key; 403 `authorization` for a tenant key.
//! - [`Scope`]: the tenant a read is about, from the key and `?tenant=`: a tenant key sees
//!   its own tenant only (403 `tenant` when it asks for another), an admin key must name
//!   one (400 `tenant`). Endpoints taking the tenant from a JSON body call
//!   [`Caller::scope`] once the body is parsed: the same rule, in the same place.
//! - [`WithBody`]: the body, then one of the above, for the `POST`s.
//!
//! Extractors run in the order of the handler's arguments, and that order decides which
//! error a request with several faults gets: a malformed query string (axum's plain-text
//! 400) before a missing key, a missing key before a bad parameter. So a handler lists
//! `Path`, then `Query`, then its [`Scope`]/[`Caller`], and validates its parameters in
//! its body; a body that cannot be read (over the limit) is refused before the key is
//! looked at, which is what [`WithBody`] is for.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::App;
use super::auth::Principal;
use super::error::ApiError;

/// The principal of the request's API key, and the key's id.
pub struct Caller(pub Principal, pub String);

impl Caller {
    /// Records a read of `tenant`'s data (`what`) in the lake's access log
    /// ([`crate::lake::access`]), off the async threads (a lock, a write and an fsync). A
    /// read that cannot be recorded is refused (500).
    pub async fn read(&self, app: &Arc<App>, tenant: &str, what: &str) -> Result<(), ApiError> {
        let (a, actor, key) = (app.clone(), self.0.actor(), self.1.clone());
        let (tenant, what) = (tenant.to_string(), what.to_string());
        let done = tokio::task::spawn_blocking(move || {
            crate::lake::access::record(
                &a.opts.lake,
                crate::lake::access::Read {
                    actor: &actor,
                    via: "api",
                    key_id: Some(&key),
                    tenant: &tenant,
                    what: &what,
                },
            )
            .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        done.map_err(|e| {
            tracing::error!("access log: {e}");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                "the read could not be recorded in the access log",
            )
        })
    }

    /// Looks the key of these headers up.
    fn of(app: &App, h: &HeaderMap) -> Result<Caller, ApiError> {
        let token = h
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .or_else(|| h.get("x-api-key").and_then(|v| v.to_str().ok()))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    Some("authorization"),
                    "an API key is required (Authorization: Bearer KEY)",
                )
            })?;
        let keys = app.keys.keys();
        let unknown = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                Some("authorization"),
                "unknown API key",
            )
        };
        let p = keys.principal(token.trim()).ok_or_else(unknown)?;
        let id = keys.id_of(token.trim()).ok_or_else(unknown)?;
        Ok(Caller(p, id))
    }

    /// The tenant a request is about: the key's, or (admin) the `asked` one.
    pub fn scope(&self, asked: Option<&str>) -> Result<String, ApiError> {
        match (&self.0, asked) {
            (Principal::Tenant(t), None) => Ok(t.clone()),
            (Principal::Tenant(t), Some(a)) if a == t => Ok(t.clone()),
            (Principal::Tenant(_), Some(_)) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                Some("tenant"),
                "this key belongs to another tenant",
            )),
            (Principal::Admin(_), Some(a)) => {
                crate::ingest::record::check_id("tenant", a)
                    .map_err(|r| ApiError::bad("tenant", format!("{a:?} {}", r.reason)))?;
                Ok(a.to_string())
            }
            (Principal::Admin(_), None) => Err(ApiError::bad(
                "tenant",
                "required with an admin key (?tenant=ID)",
            )),
        }
    }

    /// The admin key's id, or 403 for a tenant key.
    fn admin(&self) -> Result<String, ApiError> {
        match &self.0 {
            Principal::Admin(id) => Ok(id.clone()),
            Principal::Tenant(_) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                Some("authorization"),
                "admin key required",
            )),
        }
    }
}

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        Caller::of(app, &parts.headers)
    }
}

/// A caller with an admin key: the key's id (the audit log's actor).
pub struct Admin(pub String);

impl FromRequestParts<Arc<App>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        Ok(Admin(Caller::of(app, &parts.headers)?.admin()?))
    }
}

/// A query string decoded into `T`; a malformed one is a 400 in the API's JSON shape,
/// naming the parameter (`{"error", "field"}`), not axum's plain-text answer.
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(q.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Params)
            .map_err(|e| {
                let (field, msg) = named_field(&e, "query");
                ApiError::bad(&field, format!("query parameter {field}: {msg}"))
            })
    }
}

/// The field a decoding error is about (its path; for a missing field, which has no path
/// yet, the name in the message; else `whole`), and the message.
pub(super) fn named_field<E: std::fmt::Display>(
    e: &serde_path_to_error::Error<E>,
    whole: &str,
) -> (String, String) {
    let path = e.path().to_string();
    let msg = e.inner().to_string();
    let field = match path.as_str() {
        "." | "" => msg
            .split('`')
            .nth(1)
            .map_or_else(|| whole.to_string(), str::to_string),
        p => p.to_string(),
    };
    (field, msg)
}

/// The `?tenant=` parameter every tenant-scoped read accepts.
#[derive(Deserialize)]
struct TenantQ {
    tenant: Option<String>,
}

/// The tenant a read may see (see [`Caller::scope`]), asked for with `?tenant=`.
pub struct Scope(pub String);

impl FromRequestParts<Arc<App>> for Scope {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Response> {
        let Params(q) = Params::<TenantQ>::from_request_parts(parts, app)
            .await
            .map_err(IntoResponse::into_response)?;
        let caller = Caller::of(app, &parts.headers).map_err(IntoResponse::into_response)?;
        let t = caller
            .scope(q.tenant.as_deref())
            .map_err(IntoResponse::into_response)?;
        // Quota and entitlement checks are the hot path: counted in the metrics, not logged.
        // The reads that name a scope are the usage routes, nested under /api/v1/usage
        // (which the nesting strips).
        let path = format!("/api/v1/usage{}", parts.uri.path());
        if !path.contains("/check-quota/") && !path.contains("/entitlements/") {
            caller
                .read(app, &t, &format!("{} {path}", parts.method))
                .await
                .map_err(IntoResponse::into_response)?;
        }
        Ok(Scope(t))
    }
}

/// The request body and `A` ([`Caller`] or [`Admin`]), whose error is reported only once
/// the body has been read: a body the server refuses to read answers that refusal (413),
/// whatever the key.
pub struct WithBody<A>(pub A, pub Bytes);

impl<A> FromRequest<Arc<App>> for WithBody<A>
where
    A: FromRequestParts<Arc<App>> + Send,
    A::Rejection: IntoResponse,
{
    type Rejection = Response;

    async fn from_request(req: Request, app: &Arc<App>) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        // `A` only looks at the headers (no side effect), so it can run first and its
        // answer wait for the body's.
        let head = A::from_request_parts(&mut parts, app)
            .await
            .map_err(IntoResponse::into_response);
        let body = Bytes::from_request(Request::from_parts(parts, body), app)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(WithBody(head?, body))
    }
}

/// Acknowledges alert `id` for `who`, recorded as `CHANNEL:TENANT` or
/// `CHANNEL-admin:KEY` (`api`, `dashboard`) in the alert store, which audits it. Another
/// tenant's alert is `None`, exactly as an id that does not exist: a tenant key cannot learn
/// that it exists.
pub(crate) fn acknowledge_as(
    lake: &std::path::Path,
    who: &Principal,
    id: &str,
    channel: &str,
) -> crate::error::Result<Option<crate::stage::alerts::Alert>> {
    let mut store = crate::stage::alerts::AlertStore::open(lake)?;
    let owner = store
        .alerts
        .iter()
        .find(|a| a.id == id)
        .map(|a| a.tenant_id.clone());
    let visible = match (who, &owner) {
        (_, None) => false,
        (Principal::Tenant(t), Some(o)) => t == o,
        (Principal::Admin(_), Some(_)) => true,
    };
    if !visible {
        return Ok(None);
    }
    let by = match who {
        Principal::Tenant(t) => format!("{channel}:{t}"),
        Principal::Admin(k) => format!("{channel}-admin:{k}"),
    };
    Ok(Some(store.ack(id, &by, crate::time::now())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ok TENANT`, or `STATUS FIELD` of the refusal.
    fn outcome(r: Result<String, ApiError>) -> String {
        match r {
            Ok(t) => format!("ok {t}"),
            Err(e) => format!("{} {}", e.status().as_u16(), e.field().unwrap_or("")),
        }
    }

    #[test]
    fn scope_and_admin_follow_the_key() {
        let tenant = Caller(Principal::Tenant("acme".into()), "k0".into());
        let admin = Caller(Principal::Admin("k1".into()), "k1".into());
        let cases = [
            ("tenant, none asked", &tenant, None, "ok acme"),
            ("tenant, own asked", &tenant, Some("acme"), "ok acme"),
            ("tenant, other asked", &tenant, Some("globex"), "403 tenant"),
            ("admin, one asked", &admin, Some("globex"), "ok globex"),
            ("admin, none asked", &admin, None, "400 tenant"),
        ];
        for (name, c, asked, want) in cases {
            assert_eq!(outcome(c.scope(asked)), want, "{name}");
        }
        assert_eq!(outcome(admin.admin()), "ok k1");
        assert_eq!(outcome(tenant.admin()), "403 authorization");
    }
}
