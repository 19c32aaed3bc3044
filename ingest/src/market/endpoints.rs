//! Data endpoints under `/companies/{company_id}/endpoints`: one table of one of the company's
//! connections exposed as a paginated API. The seller chooses the visible columns, their
//! aggregations and filters (`endpoint_schema`), who may call (`access_method` with its
//! whitelist, keys scoped to the endpoint), its own rate limit, and a price per call through
//! the price history (`…/endpoints/{id}/prices`). The query is built from those settings by
//! `sources::table_query` (identifiers checked and quoted, values bound) and runs in place,
//! read-only, like an asset; a call is charged by the same money path
//! ([`super::analyze::run_paid`]) and metered under the endpoint's id.
//!
//! `execute` and `export` are the customer-facing routes: a seller's own key, an endpoint key,
//! another company's key (when the endpoint is sold) or, for `OPEN` and `IP` endpoints, no key
//! at all. Every other route is the seller's.

use super::analyze::{
    default_limits, execution_id, formatted_execution, idempotency_key, run_paid, source_of,
    Answered, Prepared, Sale,
};
use super::assets::{bool_field, object, one_of, slugify, str_field};
use super::companies::scoped;
use super::limits::{admit, admit_anonymous, client_ip_of, endpoint_counter, endpoint_limit};
use super::money::active;
use super::*;
use crate::commands::now_ms;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use ipnet::IpNet;
use projections::EndpointScope;
use schemas::{ConnectionState, EndpointState, EndpointUpserted};
use serde::{Deserialize, Serialize};
use serde_json::Map;
use sources::model::{Rows, SchemaFilter};
use sources::table_query::{
    cardinalities, distinct_values, param_for, shape, Aggregation, Arity, ColumnUse, Filter, Op,
    Page, Source,
};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use web::roles::Action;
use web::{market, Caller, Paging};

const STATUSES: &[&str] = &["ACTIVE", "INACTIVE", "DEPRECATED"];
const ACCESS_METHODS: &[&str] = &["OPEN", "API_KEY", "IP", "EMAIL", "DOMAIN"];
/// Rows per `execute` call: the default page, and the most `max_records_per_request` allows.
const DEFAULT_PAGE: u64 = 100;
const MAX_PAGE: u64 = super::analyze::MAX_ROWS as u64;
/// Rows per export: the default `max_records_per_export`, and the most it allows.
const DEFAULT_EXPORT: u64 = 10_000;
const MAX_EXPORT: u64 = 100_000;
const EXPORT_MAX_BYTES: usize = 64 << 20;
/// Columns an endpoint uses at most, filters per column, values per `in` filter.
const MAX_COLUMNS: usize = 200;
const MAX_FILTERS: usize = 10;
const MAX_IN_VALUES: usize = 100;
const EXTRA_MAX_BYTES: usize = 16 * 1024;
const SCAN_DEFAULT: u64 = 1_000;
const SCAN_MAX: u64 = 5_000;
/// How long a call's lookups are reused (this process's own writes clear them at once).
const LOOKED_TTL: Duration = Duration::from_secs(1);

/// One filter as the seller writes it: `{"operator": "eq", "value": …}` (`in` takes a list,
/// `is_null` and `not_null` none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct FilterSpec {
    operator: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<Value>,
}

/// How the endpoint uses one column; `source_type` is the column's type at the source when
/// the endpoint was written (filter values are bound as that type).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ColumnSpec {
    name: String,
    source_type: String,
    visible: bool,
    aggregation: Option<String>,
    filters: Vec<FilterSpec>,
}

/// `access_whitelist`: `{type: ip|email|domain, values: […]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Whitelist {
    #[serde(rename = "type")]
    kind: String,
    values: Vec<String>,
}

/// The endpoint's settings, kept in `EndpointState::spec_json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Spec {
    description: Option<String>,
    sell_in_marketplace: bool,
    status: String,
    active: bool,
    export_enabled: bool,
    source_schema_name: String,
    source_table_name: String,
    columns: Vec<ColumnSpec>,
    access_method: String,
    access_whitelist: Option<Whitelist>,
    max_records_per_request: u64,
    max_records_per_export: u64,
    customer_name: Option<String>,
    /// The contract's other fields (rate limit, coverage, sample response …), as sent.
    extra: Map<String, Value>,
}

impl Spec {
    fn new() -> Spec {
        Spec {
            description: None,
            sell_in_marketplace: false,
            status: "ACTIVE".into(),
            active: true,
            export_enabled: false,
            source_schema_name: String::new(),
            source_table_name: String::new(),
            columns: Vec::new(),
            access_method: "API_KEY".into(),
            access_whitelist: None,
            max_records_per_request: DEFAULT_PAGE,
            max_records_per_export: DEFAULT_EXPORT,
            customer_name: None,
            extra: Map::new(),
        }
    }

    fn of(e: &EndpointState) -> ApiResult<Spec> {
        serde_json::from_str(&e.spec_json).map_err(ApiError::internal)
    }

    fn live(&self) -> bool {
        self.active && self.status == "ACTIVE"
    }

    /// The columns of the endpoint's table as the source has them now.
    async fn columns_at(
        &self,
        connector: &sources::Connector,
    ) -> ApiResult<Vec<sources::model::ColumnInfo>> {
        table_columns(connector, &self.source_schema_name, &self.source_table_name).await
    }

    /// The endpoint's table, as the query builder reads it on an engine of `dialect`.
    fn source(&self, dialect: sources::sql::SqlDialect) -> Source<'_> {
        Source {
            dialect,
            schema: &self.source_schema_name,
            table: &self.source_table_name,
        }
    }
}

/// The fields this module interprets; every other field of a body is kept in `extra`.
const CORE_FIELDS: &[&str] = &[
    "name",
    "slug",
    "connection_id",
    "description",
    "sell_in_marketplace",
    "status",
    "active",
    "export_enabled",
    "source_schema_name",
    "source_table_name",
    "endpoint_schema",
    "access_method",
    "access_whitelist",
    "max_records_per_request",
    "max_records_per_export",
    "customer_name",
    "endpoint_id",
    "company_id",
    "user_id",
    "date_created",
    "last_updated",
    "last_accessed",
    "version",
];

/// The query's column uses: the stored settings, with every filter value as its bound type.
fn column_uses(columns: &[ColumnSpec]) -> ApiResult<Vec<ColumnUse>> {
    columns.iter().map(column_use).collect()
}

fn column_use(c: &ColumnSpec) -> ApiResult<ColumnUse> {
    let aggregation = match c.aggregation.as_deref() {
        None => None,
        Some(a) => Some(Aggregation::parse(a).ok_or_else(|| {
            ApiError::bad_request(format!(
                "aggregation {a:?} of column {:?} is not one of {}",
                c.name,
                Aggregation::NAMES.join(", ")
            ))
        })?),
    };
    let filters = c
        .filters
        .iter()
        .map(|f| filter_of(&c.name, &c.source_type, f))
        .collect::<ApiResult<_>>()?;
    Ok(ColumnUse {
        name: c.name.clone(),
        visible: c.visible,
        aggregation,
        filters,
    })
}

fn filter_of(column: &str, source_type: &str, f: &FilterSpec) -> ApiResult<Filter> {
    let op = Op::parse(&f.operator).ok_or_else(|| {
        ApiError::bad_request(format!(
            "filter operator {:?} on column {column:?} is not one of {}",
            f.operator,
            Op::NAMES.join(", ")
        ))
    })?;
    let bad = |needs: &str| {
        ApiError::bad_request(format!(
            "the {} filter on column {column:?} needs {needs}",
            f.operator
        ))
    };
    let typed = |v: &Value| param_for(source_type, v).map_err(bad);
    let values = match (op.arity(), &f.value) {
        (Arity::None, None | Some(Value::Null)) => Vec::new(),
        (Arity::None, Some(_)) => return Err(bad("no value")),
        (Arity::One, Some(v)) if !v.is_array() => vec![typed(v)?],
        (Arity::One, _) => return Err(bad("one value")),
        (Arity::List, Some(Value::Array(vs))) if !vs.is_empty() && vs.len() <= MAX_IN_VALUES => {
            vs.iter().map(typed).collect::<ApiResult<_>>()?
        }
        (Arity::List, _) => return Err(bad("a list of 1 to 100 values")),
    };
    if op == Op::Like
        && !values
            .iter()
            .all(|v| matches!(v, sources::model::Param::Str(_)))
    {
        return Err(bad("a text value"));
    }
    Ok(Filter { op, values })
}

/// `endpoint_schema.columns` of a body against the table's columns at the source: every named
/// column must exist; without a schema every column is visible, unfiltered.
fn columns_from(
    schema: Option<&Value>,
    table: &[sources::model::ColumnInfo],
) -> ApiResult<Vec<ColumnSpec>> {
    let Some(schema) = schema.filter(|v| !v.is_null()) else {
        return Ok(table
            .iter()
            .map(|c| ColumnSpec {
                name: c.name.clone(),
                source_type: c.type_name.clone(),
                visible: true,
                aggregation: None,
                filters: Vec::new(),
            })
            .collect());
    };
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ColumnBody {
        name: String,
        #[serde(default)]
        visible: Option<bool>,
        #[serde(default)]
        aggregation: Option<String>,
        #[serde(default)]
        filters: Vec<FilterSpec>,
        #[serde(rename = "type", default)]
        _type: Option<Value>,
    }
    let list = schema
        .get("columns")
        .cloned()
        .ok_or_else(|| ApiError::bad_request("endpoint_schema must be {\"columns\": [...]}"))?;
    let bodies: Vec<ColumnBody> = serde_json::from_value(list).map_err(|e| {
        ApiError::bad_request(format!(
            "endpoint_schema.columns: each is {{name, visible?, aggregation?, filters?: [{{operator, value?}}]}} ({e})"
        ))
    })?;
    if bodies.is_empty() || bodies.len() > MAX_COLUMNS {
        return Err(ApiError::bad_request(
            "endpoint_schema.columns must list 1 to 200 columns",
        ));
    }
    let mut out: Vec<ColumnSpec> = Vec::with_capacity(bodies.len());
    for b in bodies {
        let source = table.iter().find(|c| c.name == b.name).ok_or_else(|| {
            ApiError::bad_request(format!("column {:?} is not in the table", b.name))
        })?;
        if out.iter().any(|c| c.name == b.name) {
            return Err(ApiError::bad_request(format!(
                "column {:?} is listed twice",
                b.name
            )));
        }
        if b.filters.len() > MAX_FILTERS {
            return Err(ApiError::bad_request(format!(
                "column {:?} has more than {MAX_FILTERS} filters",
                b.name
            )));
        }
        out.push(ColumnSpec {
            name: b.name,
            source_type: source.type_name.clone(),
            visible: b.visible.unwrap_or(true),
            aggregation: b.aggregation.map(|a| a.to_ascii_uppercase()),
            filters: b.filters,
        });
    }
    Ok(out)
}

fn whitelist_of(method: &str, v: Option<&Value>) -> ApiResult<Option<Whitelist>> {
    let kind = match method {
        "IP" => "ip",
        "EMAIL" => "email",
        "DOMAIN" => "domain",
        _ => return Ok(None),
    };
    let list: Whitelist = v
        .filter(|v| !v.is_null())
        .map(|v| serde_json::from_value(v.clone()))
        .transpose()
        .map_err(|_| {
            ApiError::bad_request("access_whitelist must be {\"type\": \"ip|email|domain\", \"values\": [...]}")
        })?
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "access_method {method} needs access_whitelist {{\"type\": \"{kind}\", \"values\": [...]}}"
            ))
        })?;
    if !list.kind.eq_ignore_ascii_case(kind) {
        return Err(ApiError::bad_request(format!(
            "access_whitelist.type must be {kind} for access_method {method}"
        )));
    }
    if list.values.is_empty() || list.values.len() > 1_000 {
        return Err(ApiError::bad_request(
            "access_whitelist.values must hold 1 to 1,000 entries",
        ));
    }
    let values = list
        .values
        .iter()
        .map(|v| whitelist_entry(kind, v))
        .collect::<ApiResult<_>>()?;
    Ok(Some(Whitelist {
        kind: kind.into(),
        values,
    }))
}

fn whitelist_entry(kind: &str, v: &str) -> ApiResult<String> {
    let v = v.trim().to_ascii_lowercase();
    let ok = match kind {
        "ip" => v.parse::<IpNet>().is_ok() || v.parse::<IpAddr>().is_ok(),
        "email" => return valid_email(&v),
        _ => {
            v.contains('.')
                && !v.starts_with('.')
                && v.len() <= 253
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        }
    };
    if ok {
        Ok(v)
    } else {
        Err(ApiError::bad_request(format!(
            "access_whitelist value {v:?} is not a valid {kind}"
        )))
    }
}

fn bounded(body: &Map<String, Value>, field: &str, current: u64, max: u64) -> ApiResult<u64> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(current),
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("{field} must be 1 to {max}"))),
    }
}

/// The seller's connection `id` (`400` naming the field when it is not one of the company's).
async fn own_connection(s: &IngestState, company_id: &str, id: &str) -> ApiResult<ConnectionState> {
    s.metadata
        .connection(id)
        .await?
        .filter(|c| c.company_id == company_id)
        .ok_or_else(|| {
            ApiError::bad_request("connection_id must name one of the company's connections")
        })
}

/// The table's columns at the source (`400` when the table is not there).
async fn table_columns(
    connector: &sources::Connector,
    schema: &str,
    table: &str,
) -> ApiResult<Vec<sources::model::ColumnInfo>> {
    let filter = SchemaFilter {
        schemas: vec![schema.to_string()],
        tables: vec![table.to_string()],
    };
    connector
        .tables(&filter)
        .await?
        .into_iter()
        .find(|t| t.schema == schema && t.table == table)
        .map(|t| t.columns)
        .ok_or_else(|| {
            ApiError::bad_request(format!("no table {schema}.{table} in the connection"))
        })
}

/// Applies `body` onto the endpoint and its settings, checking the table and columns at the
/// source and that the query builds.
async fn apply_body(
    s: &IngestState,
    e: &mut EndpointState,
    spec: &mut Spec,
    body: &Map<String, Value>,
) -> ApiResult<()> {
    if let Some(n) = str_field(body, "name")? {
        e.name = text("name", n, 200)?;
    }
    if let Some(slug) = str_field(body, "slug")? {
        e.slug = slugify(slug);
    } else if e.slug.is_empty() {
        e.slug = slugify(&e.name);
    }
    if e.slug.is_empty() {
        return Err(ApiError::bad_request(
            "name must contain letters or digits (it gives the slug)",
        ));
    }
    if let Some(c) = str_field(body, "connection_id")? {
        e.connection_id = c.to_string();
    }
    let conn = own_connection(s, &e.company_id, &e.connection_id).await?;
    if let Some(d) = body.get("description") {
        spec.description = opt_text("description", d.as_str(), 5_000)?;
    }
    if let Some(c) = body.get("customer_name") {
        spec.customer_name = opt_text("customer_name", c.as_str(), 200)?;
    }
    spec.sell_in_marketplace = bool_field(body, "sell_in_marketplace", spec.sell_in_marketplace)?;
    spec.active = bool_field(body, "active", spec.active)?;
    spec.export_enabled = bool_field(body, "export_enabled", spec.export_enabled)?;
    if let Some(v) = str_field(body, "status")? {
        spec.status = one_of("status", &v.to_ascii_uppercase(), STATUSES)?;
    }
    if let Some(v) = str_field(body, "access_method")? {
        spec.access_method = one_of("access_method", &v.to_ascii_uppercase(), ACCESS_METHODS)?;
    }
    // The list kept is checked again against the method, which may have changed.
    let whitelist = body
        .get("access_whitelist")
        .cloned()
        .or_else(|| spec.access_whitelist.as_ref().map(|w| json!(w)));
    spec.access_whitelist = whitelist_of(&spec.access_method, whitelist.as_ref())?;
    spec.max_records_per_request = bounded(
        body,
        "max_records_per_request",
        spec.max_records_per_request,
        MAX_PAGE,
    )?;
    spec.max_records_per_export = bounded(
        body,
        "max_records_per_export",
        spec.max_records_per_export,
        MAX_EXPORT,
    )?;
    for (k, v) in body {
        if !CORE_FIELDS.contains(&k.as_str()) {
            spec.extra.insert(k.clone(), v.clone());
        }
    }
    endpoint_limit(&spec.extra)?;
    if Value::Object(spec.extra.clone()).to_string().len() > EXTRA_MAX_BYTES {
        return Err(ApiError::bad_request(
            "the endpoint's other fields exceed 16 KB",
        ));
    }
    let (connector, driver) = source_of(s, Some(&conn), "endpoint").await?;
    if let Some(t) = str_field(body, "source_table_name")? {
        spec.source_table_name = t.to_string();
    }
    if spec.source_table_name.is_empty() {
        return Err(ApiError::bad_request("source_table_name is required"));
    }
    if let Some(t) = str_field(body, "source_schema_name")? {
        spec.source_schema_name = t.to_string();
    }
    if spec.source_schema_name.is_empty() {
        spec.source_schema_name = connector.default_schema();
    }
    let source_changed = ["connection_id", "source_schema_name", "source_table_name"]
        .iter()
        .any(|f| body.contains_key(*f));
    if body.contains_key("endpoint_schema") || source_changed || spec.columns.is_empty() {
        let table = spec.columns_at(&connector).await?;
        spec.columns = columns_from(body.get("endpoint_schema"), &table)?;
    }
    let src = spec.source(driver.dialect());
    shape(&src, &column_uses(&spec.columns)?, None)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    e.spec_json = serde_json::to_string(spec).map_err(ApiError::internal)?;
    Ok(())
}

fn endpoint_json(e: &EndpointState, spec: &Spec, own: bool) -> Value {
    let columns: Vec<Value> = spec
        .columns
        .iter()
        .filter(|c| own || c.visible)
        .map(|c| {
            let mut v = json!({
                "name": c.name,
                "type": c.source_type,
                "visible": c.visible,
                "aggregation": c.aggregation,
            });
            if own {
                v["filters"] = json!(c.filters);
            }
            v
        })
        .collect();
    let mut v = json!({
        "endpoint_id": e.id,
        "company_id": e.company_id,
        "name": e.name,
        "slug": e.slug,
        "description": spec.description,
        "sell_in_marketplace": spec.sell_in_marketplace,
        "status": spec.status,
        "active": spec.active,
        "export_enabled": spec.export_enabled,
        "endpoint_schema": { "columns": columns },
        "access_method": spec.access_method,
        "max_records_per_request": spec.max_records_per_request,
        "max_records_per_export": spec.max_records_per_export,
        "customer_name": spec.customer_name,
        "version": e.version,
        "date_created": rfc3339(e.created_at_ms),
        "last_updated": rfc3339(e.updated_at_ms),
    });
    for (k, x) in &spec.extra {
        v[k] = x.clone();
    }
    if own {
        v["user_id"] = json!(e.user_id);
        v["connection_id"] = json!(e.connection_id);
        v["source_schema_name"] = json!(spec.source_schema_name);
        v["source_table_name"] = json!(spec.source_table_name);
        v["access_whitelist"] = json!(spec.access_whitelist);
    }
    v
}

async fn save(s: &IngestState, endpoint: EndpointState) -> ApiResult<()> {
    s.command_checked(vec![EntityEvent::EndpointUpserted(EndpointUpserted {
        event_id: new_id(),
        endpoint,
    })])
    .await
}

/// A live endpoint of `company_id` (`404` otherwise: never another company's).
async fn in_company(s: &IngestState, company_id: &str, id: &str) -> ApiResult<EndpointState> {
    s.metadata
        .endpoints_where(EndpointScope::One, id)
        .await?
        .pop()
        .filter(|e| e.company_id == company_id)
        .ok_or_else(|| ApiError::not_found(format!("no endpoint {id:?} in this company")))
}

/// The caller's own endpoint, for what `action` allows.
async fn own(
    s: &IngestState,
    caller: &Caller,
    company_id: &str,
    id: &str,
    action: Action,
) -> ApiResult<(EndpointState, Spec)> {
    scoped(s, caller, company_id, action).await?;
    let e = in_company(s, company_id, id).await?;
    let spec = Spec::of(&e)?;
    Ok((e, spec))
}

/// `POST /companies/{company_id}/endpoints`
pub async fn create(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(company_id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    scoped(&s, &caller, &company_id, Action::ManageAssets).await?;
    let body = object(&body)?;
    for field in ["name", "connection_id", "source_table_name"] {
        required(field, &body.get(field).cloned())?;
    }
    let now = now_ms();
    let mut e = EndpointState {
        id: new_id(),
        company_id: company_id.clone(),
        user_id: caller.user_id.clone(),
        connection_id: String::new(),
        name: String::new(),
        slug: String::new(),
        spec_json: String::new(),
        version: 1,
        deleted: false,
        created_at_ms: now,
        updated_at_ms: now,
    };
    let mut spec = Spec::new();
    apply_body(&s, &mut e, &mut spec, &body).await?;
    let data = json!({ "endpoint_id": e.id, "slug": e.slug });
    save(&s, e).await?;
    Ok(web::market_created("Endpoint created", data))
}

/// `GET /companies/{company_id}/endpoints`: the company's endpoints, oldest first.
pub async fn list(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path(company_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    scoped(&s, &caller, &company_id, Action::ReadAssets).await?;
    let paging = Paging::from_query(&q, 20, 100)?;
    let all = s
        .metadata
        .endpoints_where(EndpointScope::Company, &company_id)
        .await?;
    let rows = all
        .iter()
        .map(|e| Ok(endpoint_json(e, &Spec::of(e)?, true)))
        .collect::<ApiResult<Vec<Value>>>()?;
    Ok(web::market_list("Endpoints retrieved", &rows, paging))
}

/// `GET /companies/{company_id}/endpoints/{endpoint_id}`
pub async fn get(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (e, spec) = own(&s, &caller, &company_id, &id, Action::ReadAssets).await?;
    Ok(market("Endpoint retrieved", endpoint_json(&e, &spec, true)).into_response())
}

/// `PATCH /companies/{company_id}/endpoints/{endpoint_id}`
pub async fn patch(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let (current, mut spec) = own(&s, &caller, &company_id, &id, Action::ManageAssets).await?;
    let body = object(&body)?;
    let mut next = current.clone();
    apply_body(&s, &mut next, &mut spec, &body).await?;
    if next == current {
        return Err(ApiError::bad_request(
            "nothing to update: send at least one changed field",
        ));
    }
    next.version = current.version + 1;
    next.updated_at_ms = now_ms().max(current.updated_at_ms + 1);
    save(&s, next).await?;
    Ok(market("Endpoint updated", json!({ "endpoint_id": id })).into_response())
}

/// `DELETE /companies/{company_id}/endpoints/{endpoint_id}`: its calls stop at once.
pub async fn delete(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (current, _) = own(&s, &caller, &company_id, &id, Action::ManageAssets).await?;
    let mut next = current.clone();
    next.deleted = true;
    next.version = current.version + 1;
    next.updated_at_ms = now_ms().max(current.updated_at_ms + 1);
    save(&s, next).await?;
    Ok(market("Endpoint deleted", json!({ "endpoint_id": id })).into_response())
}

/// What a call of an endpoint looks up: the endpoint and its settings, its seller, its
/// connection and the price in force (credits) with the discounts. Kept for [`LOOKED_TTL`].
#[derive(Debug)]
pub(crate) struct Looked {
    endpoint: EndpointState,
    spec: Spec,
    seller: Company,
    connection: Option<ConnectionState>,
    price: Option<i64>,
    discounts: Vec<projections::Discount>,
}

async fn look_up(s: &IngestState, company_id: &str, id: &str) -> ApiResult<Arc<Looked>> {
    if let Some(hit) = s.endpoints.get(id) {
        if hit.0.elapsed() < LOOKED_TTL && hit.1.endpoint.company_id == company_id {
            return Ok(hit.1.clone());
        }
    }
    let endpoint = in_company(s, company_id, id).await?;
    let seller = s
        .metadata
        .company(company_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such company"))?;
    let (connection, prices, discounts) = tokio::join!(
        s.metadata.connection(&endpoint.connection_id),
        s.metadata.prices(id),
        s.metadata.discounts(id)
    );
    let looked = Arc::new(Looked {
        spec: Spec::of(&endpoint)?,
        endpoint,
        seller,
        connection: connection?,
        price: active(&prices?).map(|p| p.credits),
        discounts: discounts?,
    });
    if s.endpoints.len() > 10_000 {
        s.endpoints.clear();
    }
    s.endpoints
        .insert(id.to_string(), (Instant::now(), looked.clone()));
    Ok(looked)
}

/// Who calls an endpoint, as [`access`] judges it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Calling<'a> {
    /// The caller's company, endpoint scope and e-mail, if it presented a key or a session.
    pub(crate) caller: Option<(&'a Caller, Option<&'a str>)>,
    pub(crate) ip: IpAddr,
}

/// Whether a call may go on: the caller's own company (other than through an endpoint key)
/// always may; otherwise the endpoint must be live, sold to other companies, and its access
/// method satisfied. A key scoped to another endpoint opens nothing here.
fn access(spec: &Spec, endpoint: &EndpointState, who: Calling<'_>) -> ApiResult<()> {
    if let Some((c, _)) = who.caller {
        if c.endpoint_id.as_deref().is_some_and(|e| e != endpoint.id) {
            return Err(ApiError::forbidden(
                "this endpoint key is scoped to another endpoint",
            ));
        }
        if c.company_id == endpoint.company_id && c.endpoint_id.is_none() {
            return c.require(Action::ReadAssets);
        }
        if c.company_id != endpoint.company_id && !spec.sell_in_marketplace {
            return Err(ApiError::not_found(format!(
                "no endpoint {:?} in this company",
                endpoint.id
            )));
        }
    }
    if !spec.live() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "endpoint_inactive",
            format!(
                "this endpoint is {} and takes no calls",
                spec.status.to_lowercase()
            ),
        ));
    }
    let listed = |v: &str| {
        spec.access_whitelist
            .as_ref()
            .is_some_and(|w| w.values.iter().any(|x| x == v))
    };
    let signed_in = || {
        who.caller.ok_or_else(|| {
            ApiError::unauthorized(format!(
                "this endpoint's access method is {}: send x-api-key or sign in",
                spec.access_method
            ))
        })
    };
    let refused = |what: &str| {
        ApiError::forbidden(format!(
            "this endpoint admits callers by {what}, and yours is not on its list"
        ))
    };
    match spec.access_method.as_str() {
        "OPEN" => Ok(()),
        "IP" => {
            let admitted = spec.access_whitelist.as_ref().is_some_and(|w| {
                w.values.iter().any(|v| match v.parse::<IpNet>() {
                    Ok(net) => net.contains(&who.ip),
                    Err(_) => v.parse::<IpAddr>().is_ok_and(|a| a == who.ip),
                })
            });
            if admitted {
                Ok(())
            } else {
                Err(refused("IP address"))
            }
        }
        "EMAIL" | "DOMAIN" => {
            let email = signed_in()?.1.unwrap_or_default();
            let domain = email.rsplit_once('@').map_or("", |(_, d)| d);
            let ok = if spec.access_method == "EMAIL" {
                listed(email)
            } else {
                listed(domain)
            };
            if ok {
                Ok(())
            } else {
                Err(refused(&spec.access_method.to_lowercase()))
            }
        }
        _ => signed_in().map(|_| ()),
    }
}

/// What a call asks for: a page of `execute`, or the whole (capped) result of `export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Page { start: u64, limit: u64 },
    Export { format: ExportFormat, cap: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExportFormat {
    Csv,
    Ndjson,
}

fn page_of(q: &HashMap<String, String>, spec: &Spec) -> ApiResult<Call> {
    let number = |name: &str, default: u64| -> ApiResult<u64> {
        q.get(name).map_or(Ok(default), |v| {
            v.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("{name} must be a non-negative integer"))
            })
        })
    };
    let max = spec.max_records_per_request;
    let limit = number("limit", DEFAULT_PAGE.min(max))?;
    if limit == 0 || limit > max {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {max} (the endpoint's max_records_per_request)"
        ))
        .with_details(json!({ "max_records_per_request": max })));
    }
    let start = number("start", 0)?;
    if start > i64::MAX as u64 / 2 {
        return Err(ApiError::bad_request("start is too large"));
    }
    Ok(Call::Page { start, limit })
}

fn export_of(q: &HashMap<String, String>, spec: &Spec) -> ApiResult<Call> {
    if !spec.export_enabled {
        return Err(ApiError::forbidden(
            "this endpoint's export is not enabled (export_enabled: false)",
        ));
    }
    let format = match q.get("format").map_or("csv", String::as_str) {
        "csv" => ExportFormat::Csv,
        "ndjson" => ExportFormat::Ndjson,
        "parquet" => return Err(ApiError::not_implemented(
            "Parquet export is not built yet in this version of Tally; use format=csv or ndjson",
        )),
        other => {
            return Err(ApiError::bad_request(format!(
                "format {other:?} is not one of csv, ndjson, parquet"
            )))
        }
    };
    Ok(Call::Export {
        format,
        cap: spec.max_records_per_export,
    })
}

/// The caller an anonymous call runs as: the seller's own (the endpoint's author), so it is
/// free and metered under the seller.
fn as_seller(e: &EndpointState) -> Caller {
    Caller {
        key_id: String::new(),
        api_key_id: 0,
        user_id: e.user_id.clone(),
        company_id: e.company_id.clone(),
        role: Role::Viewer,
        session: None,
        test_mode: false,
        endpoint_id: None,
    }
}

/// One call of `execute` or `export`, from access to answer.
async fn call(
    s: &IngestState,
    caller: Option<Caller>,
    (company_id, id): (&str, &str),
    q: &HashMap<String, String>,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    export: bool,
) -> ApiResult<Response> {
    let looked = look_up(s, company_id, id).await?;
    let (e, spec) = (&looked.endpoint, &looked.spec);
    let ip = client_ip_of(s, peer, headers);
    let email = match (&caller, spec.access_method.as_str()) {
        (Some(c), "EMAIL" | "DOMAIN") => s.metadata.user(&c.user_id).await?.and_then(|u| u.email),
        _ => None,
    };
    let who = Calling {
        caller: caller.as_ref().map(|c| (c, email.as_deref())),
        ip,
    };
    access(spec, e, who)?;
    let asked = if export {
        export_of(q, spec)?
    } else {
        page_of(q, spec)?
    };
    if caller.is_none() && looked.price.is_some_and(|p| p > 0) {
        return Err(ApiError::unauthorized(
            "this endpoint has a price: call it with an API key so the call can be charged",
        ));
    }
    let buyer = caller.clone().unwrap_or_else(|| as_seller(e));
    let price = if buyer.company_id == e.company_id {
        0
    } else {
        buyer.require(Action::ExecuteAssets)?;
        let price = looked.price.unwrap_or(0);
        projections::discounted(price, &looked.discounts, &buyer.company_id, now_ms())
    };
    let own_limit = endpoint_limit(&spec.extra)
        .ok()
        .flatten()
        .map(|l| endpoint_counter(&e.id, &l, caller.as_ref(), ip, now_ms()));
    let admission = match &caller {
        Some(c) => admit(s, c, own_limit).await,
        None => admit_anonymous(s, ip, own_limit).await,
    };
    let mut admitted = match admission {
        Ok(a) => a,
        // A limit refused the call: the answer is the `429` with its headers.
        Err(refused) => return Ok(refused),
    };
    let out = run_call(s, &buyer, &looked, asked, price, headers, &mut admitted).await;
    Ok(super::limits::finish(admitted, out).await)
}

async fn run_call(
    s: &IngestState,
    buyer: &Caller,
    looked: &Looked,
    asked: Call,
    price: i64,
    headers: &HeaderMap,
    admitted: &mut Option<super::limits::Admitted>,
) -> ApiResult<Response> {
    let (e, spec) = (&looked.endpoint, &looked.spec);
    let (connector, driver) = source_of(s, looked.connection.as_ref(), "endpoint").await?;
    let src = spec.source(driver.dialect());
    let mut limits = default_limits(s);
    // One row more than asked says whether there is more.
    let (page, wanted) = match asked {
        Call::Page { start, limit } => (
            Page {
                offset: start,
                limit: limit + 1,
            },
            limit,
        ),
        Call::Export { cap, .. } => {
            limits.max_bytes = EXPORT_MAX_BYTES;
            (
                Page {
                    offset: 0,
                    limit: cap + 1,
                },
                cap,
            )
        }
    };
    limits.max_rows = page.limit as usize;
    let query = shape(&src, &column_uses(&spec.columns)?, Some(page))
        .map_err(|err| ApiError::bad_request(err.to_string()))?;
    let prepared = Prepared {
        connector,
        sql: query.sql,
        binds: query.binds,
        limits,
    };
    let sale = Sale {
        item_id: &e.id,
        seller: &looked.seller,
        price,
        cache_key: None,
    };
    let key = idempotency_key(headers);
    let execution_id = execution_id(&buyer.company_id, key.as_deref());
    let (rows, answered) = run_paid(s, buyer, sale, prepared, execution_id, admitted).await?;
    // An endpoint's rows are never cached, so this call owns them: no copy.
    let mut rows = Arc::try_unwrap(rows).unwrap_or_else(|shared| Rows::clone(&shared));
    let more = rows.rows.len() as u64 > wanted || rows.truncated;
    rows.rows.truncate(wanted as usize);
    match asked {
        Call::Page { start, limit } => Ok(page_answer(e, &rows, start, limit, more, &answered)),
        Call::Export { format, .. } => {
            rows.truncated = more;
            export_answer(e, &rows, format, &answered)
        }
    }
}

fn page_answer(
    e: &EndpointState,
    rows: &Rows,
    start: u64,
    limit: u64,
    more: bool,
    a: &Answered,
) -> Response {
    let returned = rows.rows.len() as u64;
    let data = json!({
        "endpoint_id": e.id,
        "execution_id": a.execution_id,
        "columns": rows.columns,
        "rows": rows.objects(),
        "row_count": returned,
        "pagination": {
            "start": start,
            "limit": limit,
            "returned": returned,
            "has_more": more,
            "next_start": more.then_some(start + returned),
        },
        "duration_ms": a.duration_ms,
        "credits_charged": a.charged,
        "credits_remaining": a.balance,
        "mode": a.mode(),
    });
    market("Endpoint executed", data).into_response()
}

fn export_answer(
    e: &EndpointState,
    rows: &Rows,
    format: ExportFormat,
    a: &Answered,
) -> ApiResult<Response> {
    let (name, ext) = match format {
        ExportFormat::Csv => ("csv", "csv"),
        ExportFormat::Ndjson => ("ndjson", "ndjson"),
    };
    let mut resp = formatted_execution(name, rows, a)?
        .ok_or_else(|| ApiError::internal("an export format answered no body"))?;
    let disposition = format!("attachment; filename=\"{}.{ext}\"", e.slug);
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// `GET /companies/{company_id}/endpoints/{endpoint_id}/execute?start&limit` (`EXPORT` false):
/// one page of the endpoint's rows (`limit` ≤ `max_records_per_request`), with
/// `pagination.has_more` and `next_start`; and `GET …/export?format=csv|ndjson` (`EXPORT`
/// true): every row, up to `max_records_per_export` (`x-tally-truncated: true` when there
/// were more), when `export_enabled` (Parquet answers `501`).
pub async fn call_route<const EXPORT: bool>(
    State(s): State<Arc<IngestState>>,
    caller: Option<Extension<Caller>>,
    Path((company_id, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let caller = caller.map(|c| c.0);
    let at = (company_id.as_str(), id.as_str());
    call(&s, caller, at, &q, peer.map(|p| p.0 .0), &headers, EXPORT).await
}

/// The seller's own source and query settings of an endpoint, for its tools.
async fn seller_source(
    s: &IngestState,
    e: &EndpointState,
) -> ApiResult<(sources::Connector, sources::sql::SqlDialect)> {
    let conn = s.metadata.connection(&e.connection_id).await?;
    let (connector, driver) = source_of(s, conn.as_ref(), "endpoint").await?;
    Ok((connector, driver.dialect()))
}

fn tool_limits(s: &IngestState, max_rows: usize) -> sources::model::Limits {
    let mut l = default_limits(s);
    l.max_rows = max_rows;
    l
}

fn elapsed_ms(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1e5).round() / 100.0
}

/// `GET|POST …/endpoints/{endpoint_id}/test?limit` (default 10, at most 100; or `{"limit"}`):
/// the first rows as callers would get them, never charged. A source error is a `200` with
/// `status: failed` and the reason; the answer also shows the query built.
pub async fn test(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let (e, spec) = own(&s, &caller, &company_id, &id, Action::ManageAssets).await?;
    let from_body = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        object(&body)?.get("limit").cloned()
    };
    let limit = match (from_body, q.get("limit")) {
        (Some(v), _) => v.as_u64(),
        (None, Some(v)) => v.parse().ok(),
        (None, None) => Some(10),
    }
    .filter(|n| (1..=100).contains(n))
    .ok_or_else(|| ApiError::bad_request("limit must be 1 to 100"))?;
    let (connector, dialect) = seller_source(&s, &e).await?;
    let src = spec.source(dialect);
    let query = shape(
        &src,
        &column_uses(&spec.columns)?,
        Some(Page { offset: 0, limit }),
    )
    .map_err(|err| ApiError::bad_request(err.to_string()))?;
    let started = Instant::now();
    let rows = connector
        .query(&query.sql, &query.binds, tool_limits(&s, limit as usize))
        .await;
    let mut report = super::asset_tools::test_report(rows, elapsed_ms(started));
    report["endpoint_id"] = json!(id);
    report["query"] = json!(query.sql);
    Ok(market("Endpoint tested", report).into_response())
}

/// `POST …/endpoints/{endpoint_id}/scan_column`: `{"column", "limit"?}` → the distinct values
/// of one column of the endpoint's table (default 1,000, at most 5,000), for choosing filters.
pub async fn scan_column(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let (e, spec) = own(&s, &caller, &company_id, &id, Action::ManageAssets).await?;
    let b = object(&body)?;
    let column = str_field(&b, "column")?
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::bad_request("column is required (a column of the table)"))?
        .to_string();
    let limit = bounded(&b, "limit", SCAN_DEFAULT, SCAN_MAX)?;
    let (connector, dialect) = seller_source(&s, &e).await?;
    let table = spec.columns_at(&connector).await?;
    if !table.iter().any(|c| c.name == column) {
        return Err(ApiError::bad_request(format!(
            "column {column:?} is not in the table"
        )));
    }
    let src = spec.source(dialect);
    let query = distinct_values(&src, &column, limit)
        .map_err(|err| ApiError::bad_request(err.to_string()))?;
    let started = Instant::now();
    let rows = connector
        .query(&query.sql, &query.binds, tool_limits(&s, limit as usize))
        .await?;
    let values: Vec<Value> = rows.rows.into_iter().filter_map(|mut r| r.pop()).collect();
    Ok(market(
        "Column scanned",
        json!({"endpoint_id": id, "column": column, "values": values, "count": values.len(),
               "truncated": rows.truncated, "duration_ms": elapsed_ms(started)}),
    )
    .into_response())
}

/// Whether a source type is numeric (aggregated by sum and average rather than counted).
fn numeric(type_name: &str) -> bool {
    let t = type_name.to_ascii_lowercase();
    ["int", "float", "double", "real", "numeric", "decimal"]
        .iter()
        .any(|k| t.contains(k))
        && !t.contains("interval")
}

/// Filter and aggregation suggestions from one column's cardinality in a table of `rows`
/// rows: few distinct values make a filter (`in`) and a grouping dimension; a numeric column
/// with many is a measure to sum or average; a text column with many is counted distinct.
fn suggest(name: &str, type_name: &str, distinct: i64, rows: i64) -> Value {
    let ratio = if rows > 0 {
        distinct as f64 / rows as f64
    } else {
        0.0
    };
    let low = distinct > 0 && (distinct <= 50 || ratio <= 0.05);
    let (filters, aggregations, role): (Vec<&str>, Vec<&str>, &str) = if low {
        (vec!["eq", "in"], vec![], "dimension")
    } else if numeric(type_name) {
        (
            vec!["gte", "lte"],
            vec!["SUM", "AVG", "MIN", "MAX"],
            "measure",
        )
    } else {
        (vec!["eq", "like"], vec!["COUNT_DISTINCT"], "identifier")
    };
    json!({
        "column": name,
        "type": type_name,
        "distinct_values": distinct,
        "cardinality_ratio": (ratio * 10_000.0).round() / 10_000.0,
        "role": role,
        "suggested_filters": filters,
        "suggested_aggregations": aggregations,
    })
}

fn int_cell(rows: &Rows, i: usize) -> i64 {
    rows.rows
        .first()
        .and_then(|r| r.get(i))
        .and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .unwrap_or(0)
}

/// `GET …/endpoints/{endpoint_id}/recommendations`: each column's distinct values and the
/// table's row count, read in one pass at the source, with what they suggest.
pub async fn recommendations(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (e, spec) = own(&s, &caller, &company_id, &id, Action::ManageAssets).await?;
    let (connector, dialect) = seller_source(&s, &e).await?;
    let table = spec.columns_at(&connector).await?;
    let names: Vec<&str> = table.iter().map(|c| c.name.as_str()).collect();
    let src = spec.source(dialect);
    let query =
        cardinalities(&src, &names).map_err(|err| ApiError::bad_request(err.to_string()))?;
    let counts = connector
        .query(&query.sql, &query.binds, tool_limits(&s, 1))
        .await?;
    let total = int_cell(&counts, 0);
    let columns: Vec<Value> = table
        .iter()
        .enumerate()
        .map(|(i, c)| suggest(&c.name, &c.type_name, int_cell(&counts, i + 1), total))
        .collect();
    Ok(market(
        "Endpoint recommendations",
        json!({"endpoint_id": id, "row_count": total, "columns": columns}),
    )
    .into_response())
}

/// `GET …/endpoints/{endpoint_id}/stats?days` (default 30): executions, buyers, revenue, error
/// rate and durations of the endpoint's calls, in total and per day.
pub async fn stats(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let (e, _) = own(&s, &caller, &company_id, &id, Action::ReadSales).await?;
    let mut data = super::statistics::of_item(&s, &e.id, &q).await?;
    data["endpoint_id"] = json!(e.id);
    data["name"] = json!(e.name);
    data["slug"] = json!(e.slug);
    Ok(market("Endpoint statistics retrieved", data).into_response())
}

/// The base URL callers reach this server at, from the request's `Host` (and a trusted
/// `X-Forwarded-Proto`).
pub(crate) fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .unwrap_or("localhost");
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
    {
        Some("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}")
}

/// `GET …/endpoints/{endpoint_id}/url`: where callers reach the endpoint and how.
pub async fn url(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (e, spec) = own(&s, &caller, &company_id, &id, Action::ReadAssets).await?;
    let path = format!("/companies/{}/endpoints/{}", e.company_id, e.id);
    let base = base_url(&headers);
    Ok(market(
        "Endpoint URL",
        json!({
            "endpoint_id": e.id,
            "url": format!("{base}{path}/execute"),
            "export_url": spec.export_enabled.then(|| format!("{base}{path}/export")),
            "method": "GET",
            "query": {"start": "first row (default 0)", "limit": format!("rows per page, at most {}", spec.max_records_per_request)},
            "access_method": spec.access_method,
            "auth_header": (spec.access_method != "OPEN" && spec.access_method != "IP").then_some("x-api-key"),
        }),
    )
    .into_response())
}

/// `GET …/endpoints/{endpoint_id}/available-endpoints`: the routes this endpoint answers, with
/// whether each is open now.
pub async fn available(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (e, spec) = own(&s, &caller, &company_id, &id, Action::ReadAssets).await?;
    let base = format!("/companies/{}/endpoints/{}", e.company_id, e.id);
    let route = |method: &str, tail: &str, open: bool, what: &str| json!({"method": method, "path": format!("{base}{tail}"), "available": open, "description": what});
    let routes = vec![
        route(
            "GET",
            "/execute",
            spec.live(),
            "a page of rows (start, limit)",
        ),
        route(
            "GET",
            "/export",
            spec.live() && spec.export_enabled,
            "every row as CSV or NDJSON",
        ),
        route("GET", "/test", true, "the first rows, never charged"),
        route("GET", "/stats", true, "calls, buyers and revenue per day"),
        route(
            "GET",
            "/recommendations",
            true,
            "filter and aggregation suggestions",
        ),
        route("POST", "/scan_column", true, "distinct values of a column"),
        route("GET", "/keys", true, "the keys scoped to this endpoint"),
        route("GET", "/prices", true, "the price history"),
    ];
    Ok(market(
        "Available endpoints",
        json!({"endpoint_id": e.id, "routes": routes}),
    )
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    name: Option<String>,
    expiration_date_utc: Option<String>,
    mode: Option<String>,
}

/// `GET …/endpoints/{endpoint_id}/keys`: the keys scoped to the endpoint (masked).
pub async fn keys(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (e, _) = own(&s, &caller, &company_id, &id, Action::ManageAssets).await?;
    let list: Vec<Value> = s
        .metadata
        .api_keys(&company_id)
        .await?
        .iter()
        .filter(|k| k.state.endpoint_id.as_deref() == Some(e.id.as_str()))
        .map(key_json)
        .collect();
    let n = list.len();
    Ok(web::market_page("Endpoint keys retrieved", list, n as u64, n as u64, 0, n).into_response())
}

/// `POST …/endpoints/{endpoint_id}/keys`: `{"name"?, "expiration_date_utc"?, "mode"?}` → a key
/// that opens this endpoint's `execute` and `export` and nothing else (the secret shown once).
pub async fn create_key(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let (e, _) = own(&s, &caller, &company_id, &id, Action::ManageAssets).await?;
    let b: KeyBody = if body.iter().all(u8::is_ascii_whitespace) {
        KeyBody {
            name: None,
            expiration_date_utc: None,
            mode: None,
        }
    } else {
        web::parse_json(&body)?
    };
    let user =
        s.metadata.user(&caller.user_id).await?.ok_or_else(|| {
            ApiError::forbidden("endpoint keys are made by a user of the company")
        })?;
    let name = text(
        "name",
        b.name.as_deref().unwrap_or(&format!("{} key", e.name)),
        100,
    )?;
    let expires = b
        .expiration_date_utc
        .as_deref()
        .map(|t| future_time("expiration_date_utc", t))
        .transpose()?;
    let mode = super::keys::key_mode(b.mode.as_deref())?;
    let (secret, mut state) =
        super::keys::new_key(&user, &name, Role::Viewer, "endpoint", expires, mode);
    state.endpoint_id = Some(e.id.clone());
    let data = super::keys::issue(&s, state, &secret).await?;
    Ok(web::market_created("Endpoint key created", data))
}

/// `DELETE …/endpoints/{endpoint_id}/keys/{api_key_id}`: the key stops working at once.
pub async fn delete_key(
    State(s): State<Arc<IngestState>>,
    Extension(caller): Extension<Caller>,
    Path((company_id, id, key_id)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let (e, _) = own(&s, &caller, &company_id, &id, Action::ManageAssets).await?;
    let number = int_id("api_key_id", &key_id)?;
    let k = s
        .metadata
        .api_key_by_number(&company_id, number)
        .await?
        .filter(|k| k.state.endpoint_id.as_deref() == Some(e.id.as_str()))
        .ok_or_else(|| ApiError::not_found(format!("no key {number} on this endpoint")))?;
    super::keys::deactivate(&s, &k).await
}

/// The endpoints of a company as `/companies/{id}/objects` lists them.
pub(crate) async fn objects_of(s: &IngestState, company_id: &str) -> ApiResult<Vec<Value>> {
    s.metadata
        .endpoints_where(EndpointScope::Company, company_id)
        .await?
        .iter()
        .map(|e| {
            let spec = Spec::of(e)?;
            Ok(
                json!({"endpoint_id": e.id, "name": e.name, "slug": e.slug, "status": spec.status,
                      "active": spec.active, "connection_id": e.connection_id}),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sources::model::Param;

    fn endpoint() -> EndpointState {
        EndpointState {
            id: "ep1".into(),
            company_id: "seller".into(),
            user_id: "u-seller".into(),
            connection_id: "cn".into(),
            name: "Orders".into(),
            slug: "orders".into(),
            spec_json: "{}".into(),
            version: 1,
            deleted: false,
            created_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    fn caller(company: &str, endpoint_id: Option<&str>, role: Role) -> Caller {
        Caller {
            key_id: "k".into(),
            api_key_id: 3,
            user_id: "u".into(),
            company_id: company.into(),
            role,
            session: None,
            test_mode: false,
            endpoint_id: endpoint_id.map(str::to_string),
        }
    }

    fn with(method: &str, kind: &str, values: &[&str]) -> Spec {
        let mut spec = Spec::new();
        spec.access_method = method.into();
        spec.access_whitelist = (!values.is_empty()).then(|| Whitelist {
            kind: kind.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
        });
        spec
    }

    fn code(r: ApiResult<()>) -> u16 {
        r.err().map_or(200, |e| e.status.as_u16())
    }

    #[test]
    fn access_methods_admit_exactly_their_callers() {
        let e = endpoint();
        let ip = IpAddr::from([203, 0, 113, 7]);
        let anon = Calling { caller: None, ip };
        let buyer = caller("buyer", None, Role::Buyer);
        let keyed = |email: Option<&'static str>| Calling {
            caller: Some((&buyer, email)),
            ip,
        };
        let mut sold = with("API_KEY", "", &[]);
        sold.sell_in_marketplace = true;
        assert_eq!(code(access(&sold, &e, anon)), 401, "API_KEY needs a key");
        assert_eq!(code(access(&sold, &e, keyed(None))), 200);
        let mut unsold = sold.clone();
        unsold.sell_in_marketplace = false;
        assert_eq!(
            code(access(&unsold, &e, keyed(None))),
            404,
            "not sold: unseen"
        );
        let mut open = with("OPEN", "", &[]);
        open.sell_in_marketplace = true;
        assert_eq!(code(access(&open, &e, anon)), 200);
        let mut by_ip = with("IP", "ip", &["203.0.113.0/24"]);
        by_ip.sell_in_marketplace = true;
        assert_eq!(code(access(&by_ip, &e, anon)), 200);
        let other_ip = Calling {
            caller: None,
            ip: IpAddr::from([198, 51, 100, 1]),
        };
        assert_eq!(code(access(&by_ip, &e, other_ip)), 403);
        let mut by_mail = with("EMAIL", "email", &["ana@buyer.io"]);
        by_mail.sell_in_marketplace = true;
        assert_eq!(code(access(&by_mail, &e, keyed(Some("ana@buyer.io")))), 200);
        assert_eq!(code(access(&by_mail, &e, keyed(Some("bo@buyer.io")))), 403);
        assert_eq!(code(access(&by_mail, &e, anon)), 401);
        let mut by_domain = with("DOMAIN", "domain", &["buyer.io"]);
        by_domain.sell_in_marketplace = true;
        assert_eq!(
            code(access(&by_domain, &e, keyed(Some("bo@buyer.io")))),
            200
        );
        assert_eq!(code(access(&by_domain, &e, keyed(Some("bo@else.io")))), 403);
        // Keys scoped to an endpoint open only it; the seller's own keys open it always.
        let scoped_here = caller("seller", Some("ep1"), Role::Viewer);
        let scoped_there = caller("seller", Some("ep2"), Role::Viewer);
        let here = Calling {
            caller: Some((&scoped_here, None)),
            ip,
        };
        let there = Calling {
            caller: Some((&scoped_there, None)),
            ip,
        };
        assert_eq!(code(access(&unsold, &e, here)), 200);
        assert_eq!(code(access(&unsold, &e, there)), 403);
        let here_elsewhere = Calling {
            caller: Some((&scoped_here, None)),
            ip: IpAddr::from([198, 51, 100, 1]),
        };
        assert_eq!(code(access(&by_ip, &e, here)), 200);
        assert_eq!(
            code(access(&by_ip, &e, here_elsewhere)),
            403,
            "an endpoint key still passes the IP list"
        );
        let seller = caller("seller", None, Role::Seller);
        let mut off = by_ip.clone();
        off.active = false;
        let own = Calling {
            caller: Some((&seller, None)),
            ip,
        };
        assert_eq!(code(access(&off, &e, own)), 200, "the seller tries its own");
        assert_eq!(code(access(&off, &e, anon)), 409);
        let mut deprecated = open.clone();
        deprecated.status = "DEPRECATED".into();
        assert_eq!(code(access(&deprecated, &e, anon)), 409);
    }

    #[test]
    fn filter_values_are_checked_and_typed_by_column() {
        let f = |op: &str, v: Option<Value>| FilterSpec {
            operator: op.into(),
            value: v,
        };
        assert_eq!(
            filter_of("n", "bigint", &f("gte", Some(json!(2)))).ok(),
            Some(Filter {
                op: Op::Gte,
                values: vec![Param::Int(2)]
            })
        );
        assert_eq!(
            filter_of("region", "text", &f("in", Some(json!(["north", "south"]))))
                .ok()
                .map(|f| f.values.len()),
            Some(2)
        );
        for (ty, bad) in [
            ("bigint", f("gte", Some(json!("x")))),
            ("text", f("in", Some(json!([])))),
            ("text", f("eq", None)),
            ("text", f("is_null", Some(json!(1)))),
            ("text", f("between", Some(json!(1)))),
            ("bigint", f("like", Some(json!(3)))),
        ] {
            assert!(filter_of("c", ty, &bad).is_err(), "{:?}", bad);
        }
        assert!(whitelist_of(
            "IP",
            Some(&json!({"type": "ip", "values": ["10.0.0.0/8", "::1"]}))
        )
        .is_ok());
        assert!(whitelist_of("IP", Some(&json!({"type": "ip", "values": ["nope"]}))).is_err());
        assert!(whitelist_of("EMAIL", Some(&json!({"type": "ip", "values": ["a@b.io"]}))).is_err());
        assert!(whitelist_of("DOMAIN", None).is_err());
        assert_eq!(whitelist_of("OPEN", None).ok(), Some(None));
    }

    #[test]
    fn pages_stay_within_the_endpoint_limit() {
        let mut spec = Spec::new();
        spec.max_records_per_request = 50;
        let q = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        assert_eq!(
            page_of(&q(&[]), &spec).ok(),
            Some(Call::Page {
                start: 0,
                limit: 50
            })
        );
        assert_eq!(
            page_of(&q(&[("start", "100"), ("limit", "5")]), &spec).ok(),
            Some(Call::Page {
                start: 100,
                limit: 5
            })
        );
        for bad in [[("limit", "51")], [("limit", "0")], [("start", "-1")]] {
            assert!(page_of(&q(&bad), &spec).is_err(), "{bad:?}");
        }
        assert!(export_of(&q(&[]), &spec).is_err(), "export off");
        spec.export_enabled = true;
        assert!(export_of(&q(&[("format", "parquet")]), &spec)
            .err()
            .is_some_and(|e| e.status == StatusCode::NOT_IMPLEMENTED));
        assert!(export_of(&q(&[("format", "xml")]), &spec).is_err());
    }

    #[test]
    fn recommendations_follow_cardinality() {
        let low = suggest("region", "text", 4, 10_000);
        assert_eq!(low["role"], "dimension");
        let measure = suggest("amount", "numeric(10,2)", 9_000, 10_000);
        assert_eq!(measure["role"], "measure");
        assert_eq!(measure["suggested_aggregations"][0], "SUM");
        let id = suggest("email", "text", 9_990, 10_000);
        assert_eq!(id["suggested_aggregations"][0], "COUNT_DISTINCT");
    }
}
