//! `GET /alerts` and `PATCH /alerts/{id}/acknowledge`: a tenant's alerts, as the batch
//! alert stage stored them.
//!
//! Acknowledging records who did it (`api:TENANT` or `api-admin:KEY`) in the alert store,
//! where the audit log reads it. Another tenant's alert answers 404 `id`, exactly as an id
//! that does not exist: a tenant key cannot learn that it exists.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::json;

use super::{blocking, now, ok_json};
use crate::serve::App;
use crate::serve::auth::Principal;
use crate::serve::error::{ApiError, ApiResult};
use crate::serve::scope::{Caller, Scope};

pub(super) async fn alerts(State(app): State<Arc<App>>, Scope(t): Scope) -> ApiResult {
    blocking(move || {
        let list: Vec<_> = crate::stage::tables::alerts::read_lake(&app.opts.lake)?
            .into_iter()
            .filter(|a| a.tenant_id == t)
            .collect();
        ok_json(StatusCode::OK, json!({ "tenant_id": t, "alerts": list }))
    })
    .await
}

pub(super) async fn acknowledge(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Caller(p): Caller,
) -> ApiResult {
    blocking(move || {
        let mut store = crate::stage::alerts::AlertStore::open(&app.opts.lake)?;
        let owner = store
            .alerts
            .iter()
            .find(|a| a.id == id)
            .map(|a| a.tenant_id.clone());
        // Another tenant's alert is reported as missing: its existence is not disclosed.
        let visible = match (&p, &owner) {
            (_, None) => false,
            (Principal::Tenant(t), Some(o)) => t == o,
            (Principal::Admin(_), Some(_)) => true,
        };
        if !visible {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                Some("id"),
                format!("no alert {id}"),
            ));
        }
        let by = match &p {
            Principal::Tenant(t) => format!("api:{t}"),
            Principal::Admin(k) => format!("api-admin:{k}"),
        };
        // The alert store records who acknowledged it; the audit log reads it from there.
        let a = store.ack(&id, &by, now())?;
        ok_json(StatusCode::OK, serde_json::to_value(&a).unwrap_or_default())
    })
    .await
}
