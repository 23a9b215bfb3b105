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

use super::{blocking, ok_json};
use crate::serve::App;
use crate::serve::error::{ApiError, ApiResult};
use crate::serve::scope::{Caller, Scope, acknowledge_as};

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
    Caller(p, _): Caller,
) -> ApiResult {
    blocking(
        move || match acknowledge_as(&app.opts.lake, &p, &id, "api")? {
            Some(a) => ok_json(StatusCode::OK, serde_json::to_value(&a).unwrap_or_default()),
            None => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                Some("id"),
                format!("no alert {id}"),
            )),
        },
    )
    .await
}
