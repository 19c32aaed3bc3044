//! Connections to sellers' databases under `/companies/{company_id}/connections`. Credentials
//! are write-only: checked (shape, and the destination through the network guard), sealed by
//! the sources registry before the event is appended, never returned. `test`, `infoschema`,
//! `sample-data` and `describe` reach the source through the registry.

use super::companies::scoped;
use super::*;
use crate::commands::now_ms;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use projections::reference::{storage_engine, StorageEngine};
use schemas::{ConnectionState, ConnectionUpserted};
use serde::Deserialize;
use sources::model::{Limits, SchemaFilter, TableInfo};
use sources::{Driver, Registry};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use web::roles::Action;
use web::{market, parse_json, patch_field, Caller, Paging};

const CREDENTIAL_TYPES: &[&str] = &[
    "USERNAME_PASSWORD",
    "SERVICE_ACCOUNT",
    "API_KEY",
    "SERVICE_IDENTITY",
    "ACCESS_KEY",
];

fn registry(s: &IngestState) -> ApiResult<&Arc<Registry>> {
    s.sources
        .as_ref()
        .ok_or_else(|| ApiError::not_implemented("this process has no access to sources"))
}

/// The engine for `engine_id` and its driver: `400` if it does not exist, `422
/// engine_not_supported` (naming it) if Tally does not connect to it.
fn engine(engine_id: i64) -> ApiResult<(&'static StorageEngine, Driver)> {
    let e = i32::try_from(engine_id)
        .ok()
        .and_then(storage_engine)
        .ok_or_else(|| ApiError::bad_request(format!("engine_id {engine_id} does not exist")))?;
    let driver = e.driver.and_then(Driver::from_name).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "engine_not_supported",
            format!(
                "Tally does not connect to {} (engine_id {})",
                e.service_name, e.engine_id
            ),
        )
        .with_details(json!({ "engine_id": e.engine_id, "service_name": e.service_name }))
    })?;
    Ok((e, driver))
}

fn credential_type(value: Option<&str>) -> ApiResult<String> {
    let t = value.unwrap_or("USERNAME_PASSWORD");
    if CREDENTIAL_TYPES.contains(&t) {
        Ok(t.to_string())
    } else {
        Err(ApiError::bad_request(format!(
            "credential_type {t:?} is not one of {}",
            CREDENTIAL_TYPES.join(", ")
        )))
    }
}

pub(crate) fn connection_json(c: &ConnectionState) -> Value {
    json!({
        "connection_id": c.id,
        "company_id": c.company_id,
        "user_id": c.user_id,
        "engine_id": c.engine_id,
        "engine": storage_engine(c.engine_id).map(|e| e.service_name),
        "name": c.name,
        "description": c.description,
        "credential_type": c.credential_type,
        "provider_domain": c.provider_domain,
        "verified_usage_ability": c.verified_usage_ability,
        "date_created": rfc3339(c.created_at_ms),
        "last_updated": rfc3339(c.updated_at_ms),
    })
}

/// A live connection of `company_id` the caller may manage.
async fn owned(
    s: &IngestState,
    caller: &Caller,
    company_id: &str,
    connection_id: &str,
) -> ApiResult<ConnectionState> {
    scoped(s, caller, company_id, Action::ManageConnections).await?;
    s.metadata
        .connection(connection_id)
        .await?
        .filter(|c| c.company_id == company_id)
        .ok_or_else(|| {
            ApiError::not_found(format!("no connection {connection_id:?} in this company"))
        })
}

async fn save(s: &IngestState, connection: ConnectionState) -> ApiResult<()> {
    let id = connection.id.clone();
    s.command_checked(vec![EntityEvent::ConnectionUpserted(ConnectionUpserted {
        event_id: new_id(),
        connection,
    })])
    .await?;
    if let Some(r) = &s.sources {
        r.forget(&id).await;
    }
    Ok(())
}

/// `GET /companies/{company_id}/connections`
pub async fn list(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(company_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    scoped(&s, &caller, &company_id, Action::ManageConnections).await?;
    let paging = Paging::from_query(&q, 50, 500)?;
    let all: Vec<_> = s
        .metadata
        .connections(&company_id)
        .await?
        .iter()
        .map(connection_json)
        .collect();
    Ok(web::market_list("Connections retrieved", &all, paging))
}

#[derive(Deserialize)]
struct CreateBody {
    engine_id: Option<i64>,
    name: Option<String>,
    description: Option<String>,
    credential_type: Option<String>,
    provider_domain: Option<String>,
    credentials: Option<Value>,
}

/// `POST /companies/{company_id}/connections`
pub async fn create(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(company_id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    scoped(&s, &caller, &company_id, Action::ManageConnections).await?;
    let b: CreateBody = parse_json(&body)?;
    let (_, driver) = engine(*required("engine_id", &b.engine_id)?)?;
    let name = text("name", required("name", &b.name)?, 200)?;
    let credentials = required("credentials", &b.credentials)?;
    let reg = registry(&s)?;
    reg.check(driver, credentials).await?;
    let now = now_ms();
    let id = new_id();
    let connection = ConnectionState {
        credentials_sealed: reg.seal(&id, credentials),
        id: id.clone(),
        company_id,
        user_id: caller.user_id.clone(),
        engine_id: i32::try_from(b.engine_id.unwrap_or_default()).unwrap_or_default(),
        name,
        description: opt_text("description", b.description.as_deref(), 2_000)?,
        credential_type: credential_type(b.credential_type.as_deref())?,
        provider_domain: opt_text("provider_domain", b.provider_domain.as_deref(), 253)?,
        verified_usage_ability: false,
        deleted: false,
        created_at_ms: now,
        updated_at_ms: now,
    };
    save(&s, connection).await?;
    Ok(web::market_created(
        "Connection created",
        json!({ "connection_id": id }),
    ))
}

/// `GET /companies/{company_id}/connections/{connection_id}`
pub async fn get(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let c = owned(&s, &caller, &company_id, &id).await?;
    Ok(market("Connection retrieved", connection_json(&c)).into_response())
}

#[derive(Deserialize)]
struct PatchBody {
    name: Option<String>,
    #[serde(default, deserialize_with = "patch_field")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch_field")]
    provider_domain: Option<Option<String>>,
    credential_type: Option<String>,
    credentials: Option<Value>,
    engine_id: Option<i64>,
}

/// `PATCH /companies/{company_id}/connections/{connection_id}`: metadata, or new credentials.
pub async fn patch(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let current = owned(&s, &caller, &company_id, &id).await?;
    let b: PatchBody = parse_json(&body)?;
    if b.engine_id
        .is_some_and(|e| e != i64::from(current.engine_id))
    {
        return Err(ApiError::bad_request(
            "a connection's engine cannot change: create a new connection",
        ));
    }
    let mut next = current.clone();
    if let Some(n) = &b.name {
        next.name = text("name", n, 200)?;
    }
    if let Some(d) = &b.description {
        next.description = opt_text("description", d.as_deref(), 2_000)?;
    }
    if let Some(p) = &b.provider_domain {
        next.provider_domain = opt_text("provider_domain", p.as_deref(), 253)?;
    }
    if let Some(t) = &b.credential_type {
        next.credential_type = credential_type(Some(t))?;
    }
    if let Some(c) = &b.credentials {
        let (_, driver) = engine(i64::from(current.engine_id))?;
        let reg = registry(&s)?;
        reg.check(driver, c).await?;
        next.credentials_sealed = reg.seal(&id, c);
        next.verified_usage_ability = false;
    }
    if next == current {
        return Err(ApiError::bad_request(
            "nothing to update: send name, description, provider_domain, credential_type or credentials",
        ));
    }
    next.updated_at_ms = now_ms().max(current.updated_at_ms + 1);
    save(&s, next).await?;
    Ok(market("Connection updated", json!({ "connection_id": id })).into_response())
}

/// `DELETE /companies/{company_id}/connections/{connection_id}`
pub async fn delete(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let current = owned(&s, &caller, &company_id, &id).await?;
    let mut next = current.clone();
    next.deleted = true;
    next.updated_at_ms = now_ms().max(current.updated_at_ms + 1);
    save(&s, next).await?;
    Ok(market("Connection deleted", json!({ "connection_id": id })).into_response())
}

async fn connector(s: &IngestState, c: &ConnectionState) -> ApiResult<sources::Connector> {
    let (_, driver) = engine(i64::from(c.engine_id))?;
    Ok(registry(s)?.connector(c, driver).await?)
}

/// `GET …/connections/{connection_id}/test`: always `200`; a failure says why in the report.
pub async fn test(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let c = owned(&s, &caller, &company_id, &id).await?;
    let report = match connector(&s, &c).await {
        Ok(conn) => conn.test().await,
        Err(e) => sources::model::TestReport::failed(e.message),
    };
    let mut data = serde_json::to_value(&report).map_err(ApiError::internal)?;
    data["connection_id"] = json!(id);
    Ok(market("Connection tested", data).into_response())
}

fn comma_list(q: &HashMap<String, String>, name: &str) -> Vec<String> {
    q.get(name)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Tables grouped by schema: `schemas → tables → columns` (columns only with `include_fields`).
fn nest(tables: &[TableInfo], include_fields: bool) -> Value {
    let mut schemas: Vec<(String, Vec<Value>)> = Vec::new();
    for t in tables {
        let table = if include_fields {
            json!({
                "table_name": t.table,
                "columns": t.columns.iter().map(|c| json!({
                    "column_name": c.name, "data_type": c.type_name, "is_nullable": c.nullable,
                })).collect::<Vec<_>>(),
            })
        } else {
            json!({ "table_name": t.table })
        };
        match schemas.last_mut() {
            Some((name, list)) if *name == t.schema => list.push(table),
            _ => schemas.push((t.schema.clone(), vec![table])),
        }
    }
    json!({
        "schemas": schemas
            .into_iter()
            .map(|(name, tables)| json!({ "schema_name": name, "tables": tables }))
            .collect::<Vec<_>>(),
    })
}

/// `GET …/connections/{connection_id}/infoschema` (also `…/describe`): `schemas`, `tables`
/// comma lists and `include_fields` (default true).
pub async fn infoschema(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let c = owned(&s, &caller, &company_id, &id).await?;
    let include_fields = match q.get("include_fields").map(String::as_str) {
        None | Some("true") | Some("1") => true,
        Some("false") | Some("0") => false,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "include_fields must be true or false, not {other:?}"
            )))
        }
    };
    let filter = SchemaFilter {
        schemas: comma_list(&q, "schemas"),
        tables: comma_list(&q, "tables"),
    };
    let tables = connector(&s, &c).await?.tables(&filter).await?;
    let mut data = nest(&tables, include_fields);
    data["connection_id"] = json!(id);
    Ok(market("Information schema retrieved", data).into_response())
}

/// `GET …/connections/{connection_id}/sample-data?table=…&schema=…&limit=…` (default 10, max 100).
pub async fn sample(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let c = owned(&s, &caller, &company_id, &id).await?;
    let table = q
        .get("table")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad_request("table is required"))?;
    let source = connector(&s, &c).await?;
    let schema = q
        .get("schema")
        .cloned()
        .unwrap_or_else(|| source.default_schema());
    let limit = Paging::from_query(&q, 10, 100)?.limit;
    let limits = Limits {
        timeout: registry(&s)?
            .config()
            .execution_timeout
            .min(Duration::from_secs(10)),
        max_rows: limit,
        max_bytes: 4 << 20,
    };
    let rows = source.sample(&schema, table, limits).await?;
    let objects = rows.objects();
    Ok(market(
        "Sample data retrieved",
        json!({
            "connection_id": id,
            "schema": schema,
            "table": table,
            "columns": rows.columns,
            "rows": objects,
            "row_count": objects.len(),
        }),
    )
    .into_response())
}
