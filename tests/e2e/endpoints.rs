//! Data endpoints over HTTP on the real seller PostgreSQL and ClickHouse servers: a table of
//! 250 rows exposed as a paginated API to another company. Pages cover every row exactly once
//! and never show a hidden column; the price is charged per call; an aggregated endpoint
//! groups and filters at the source; every access method admits exactly its callers; endpoint
//! keys open their endpoint's calls and nothing else; the endpoint's own limit answers `429`;
//! the export matches the table.

use crate::common::*;
use crate::engines::{clickhouse, network_credentials};
use serde_json::{json, Value};
use std::collections::BTreeMap;

const ROWS: i64 = 250;
const PAGE: i64 = 40;

/// Row `i` of the seller's table: (id, region, amount, secret).
fn row(i: i64) -> (i64, &'static str, i64) {
    (i, ["north", "south", "east"][(i % 3) as usize], i * 2)
}

fn values_sql() -> String {
    (1..=ROWS)
        .map(|i| {
            let (id, region, amount) = row(i);
            format!("({id}, '{region}', {amount}, 'hidden-{id}')")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A number the engine may send as a JSON number or a string (64-bit and decimal types).
fn num(v: &Value) -> f64 {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not a number: {v}"))
}

/// One seller database: its engine, credentials, schema and table.
struct Source {
    name: &'static str,
    engine_id: i64,
    credentials: Value,
    schema: &'static str,
    table: String,
}

async fn postgres(prefix: &str) -> Option<Source> {
    let url = schemas::testenv::service_url("TALLY_TEST_SOURCE_POSTGRES")?;
    let table = format!("{prefix}_ep_pg");
    let pool = sqlx::PgPool::connect(&url).await.expect("pg admin");
    sqlx::raw_sql(&format!(
        "CREATE TABLE {table} (id bigint, region text, amount bigint, secret text); \
         INSERT INTO {table} VALUES {}",
        values_sql()
    ))
    .execute(&pool)
    .await
    .expect("pg seed");
    Some(Source {
        name: "postgresql",
        engine_id: 1,
        credentials: network_credentials(&url, 5432),
        schema: "public",
        table,
    })
}

async fn clickhouse_source(prefix: &str) -> Option<Source> {
    let url = schemas::testenv::service_url("TALLY_TEST_SOURCE_CLICKHOUSE")?;
    let table = format!("{prefix}_ep_ch");
    clickhouse(
        &url,
        &format!(
            "CREATE TABLE default.{table} (id Int64, region String, amount Int64, secret String) ENGINE = Log"
        ),
    )
    .await;
    clickhouse(
        &url,
        &format!("INSERT INTO default.{table} VALUES {}", values_sql()),
    )
    .await;
    let u = url::Url::parse(&url).expect("url");
    Some(Source {
        name: "clickhouse",
        engine_id: 4,
        credentials: json!({"host": u.host_str().expect("host"), "port": u.port().unwrap_or(8123),
                            "database": "default", "username": "default", "password": ""}),
        schema: "default",
        table,
    })
}

async fn balance(c: &Client, company: &str) -> i64 {
    let (s, b) = c.get(&format!("/companies/{company}")).await;
    assert_eq!(s, 200, "{b}");
    b["data"]["credits_balance"].as_i64().expect("balance")
}

/// Every page of `path` (`limit` per page): the rows and how many calls it took.
async fn walk(c: &Client, path: &str, limit: i64) -> (Vec<Value>, i64) {
    let (mut rows, mut start, mut calls) = (Vec::new(), 0i64, 0);
    loop {
        let (s, b) = c
            .get(&format!("{path}/execute?start={start}&limit={limit}"))
            .await;
        assert_eq!(s, 200, "{path} start {start}: {b}");
        calls += 1;
        let page = b["data"]["rows"].as_array().expect("rows").clone();
        assert!(page.len() as i64 <= limit);
        rows.extend(page.iter().cloned());
        let p = &b["data"]["pagination"];
        if !p["has_more"].as_bool().expect("has_more") {
            assert!(p["next_start"].is_null());
            return (rows, calls);
        }
        start = p["next_start"].as_i64().expect("next_start");
        assert_eq!(start, rows.len() as i64, "pages neither overlap nor skip");
        assert!(calls < 100, "runaway pagination");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_page_filter_guard_and_export_at_the_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = format!("ep_{}", schemas::testenv::unique_prefix());
    let mut sources = Vec::new();
    sources.extend(postgres(&prefix).await);
    sources.extend(clickhouse_source(&prefix).await);
    if sources.is_empty() {
        return;
    }
    let mut settings = test_settings(dir.path());
    settings.source_allow_cidrs = "127.0.0.0/8".into();
    let (_app, op) = start_app(settings).await;
    let (seller_id, seller) = op.company("tabula").await;
    let (buyer_id, buyer) = op.company("lector").await;
    let r = op
        .req(
            reqwest::Method::POST,
            &format!("/companies/{buyer_id}/credits"),
        )
        .header("idempotency-key", "endpoints")
        .json(&json!({"credits": 10_000, "reason": "test"}))
        .send()
        .await
        .expect("top up");
    assert_eq!(r.status().as_u16(), 201);
    let anonymous = Client::new(op.base.clone());

    for src in &sources {
        let name = src.name;
        let (s, b) = seller
            .post(
                &format!("/companies/{seller_id}/connections"),
                &json!({"engine_id": src.engine_id, "name": name, "credentials": src.credentials}),
            )
            .await;
        assert_eq!(s, 201, "{name}: {b}");
        let conn = b["data"]["connection_id"]
            .as_str()
            .expect("conn")
            .to_string();
        let endpoints = format!("/companies/{seller_id}/endpoints");

        // Checked at the source when written: the table and every column must exist.
        let base = json!({"name": format!("Orders {name}"), "connection_id": conn,
            "source_schema_name": src.schema, "source_table_name": src.table});
        let mut bad = base.clone();
        bad["source_table_name"] = json!("no_such_table");
        let (s, b) = seller.post(&endpoints, &bad).await;
        assert_eq!(s, 400, "{name}: {b}");
        let mut bad = base.clone();
        bad["endpoint_schema"] = json!({"columns": [{"name": "nope"}]});
        let (s, b) = seller.post(&endpoints, &bad).await;
        assert_eq!(s, 400, "{name}: {b}");

        let mut body = base.clone();
        body["endpoint_schema"] = json!({"columns": [
            {"name": "id"}, {"name": "region"}, {"name": "amount"},
            {"name": "secret", "visible": false}]});
        body["sell_in_marketplace"] = json!(true);
        body["export_enabled"] = json!(true);
        body["max_records_per_request"] = json!(PAGE);
        body["max_records_per_export"] = json!(1000);
        let (s, b) = seller.post(&endpoints, &body).await;
        assert_eq!(s, 201, "{name}: {b}");
        let id = b["data"]["endpoint_id"].as_str().expect("id").to_string();
        let path = format!("{endpoints}/{id}");
        let (s, p) = seller
            .post(&format!("{path}/prices"), &json!({"price_usd": 0.03}))
            .await;
        assert_eq!(s, 201, "{name}: {p}");
        let price = p["data"]["price_credits"].as_i64().expect("credits");
        assert_eq!(price, 3);

        // Pagination: every row exactly once, in order, never the hidden column; each call
        // is charged the price.
        let before = balance(&buyer, &buyer_id).await;
        let (rows, calls) = walk(&buyer, &path, PAGE).await;
        let ids: Vec<i64> = rows.iter().map(|r| num(&r["id"]) as i64).collect();
        assert_eq!(ids, (1..=ROWS).collect::<Vec<_>>(), "{name}");
        assert!(rows.iter().all(|r| r.get("secret").is_none()), "{name}");
        for r in &rows {
            let (id, region, amount) = row(num(&r["id"]) as i64);
            assert_eq!(
                (r["region"].as_str(), num(&r["amount"]) as i64),
                (Some(region), amount),
                "{name} {id}"
            );
        }
        assert_eq!(calls, (ROWS + PAGE - 1) / PAGE, "{name}");
        assert_eq!(
            balance(&buyer, &buyer_id).await,
            before - calls * price,
            "{name}"
        );
        let (s, b) = buyer
            .get(&format!("{path}/execute?limit={}", PAGE + 1))
            .await;
        assert_eq!(s, 400, "{name}: over max_records_per_request: {b}");
        let (s, st) = seller.get(&format!("{path}/stats?days=1")).await;
        assert_eq!(s, 200, "{st}");
        assert_eq!(
            st["data"]["totals"]["executions"],
            json!(calls),
            "{name}: {st}"
        );

        // Export: the whole table as CSV, the hidden column left out.
        let r = buyer
            .req(reqwest::Method::GET, &format!("{path}/export?format=csv"))
            .send()
            .await
            .expect("export");
        assert_eq!(r.status().as_u16(), 200, "{name}");
        let csv = r.text().await.expect("csv");
        let mut lines = csv.lines();
        assert_eq!(lines.next(), Some("id,region,amount"), "{name}");
        let exported: Vec<String> = lines.map(str::to_string).collect();
        let expected: Vec<String> = (1..=ROWS)
            .map(|i| {
                let (id, region, amount) = row(i);
                format!("{id},{region},{amount}")
            })
            .collect();
        assert_eq!(exported, expected, "{name}: the export matches the table");
        let (s, _) = buyer.get(&format!("{path}/export?format=parquet")).await;
        assert_eq!(s, 501, "{name}");

        // An aggregated endpoint: grouped and filtered at the source.
        let mut agg = base.clone();
        agg["name"] = json!(format!("Totals {name}"));
        agg["sell_in_marketplace"] = json!(true);
        agg["endpoint_schema"] = json!({"columns": [
            {"name": "region"},
            {"name": "amount", "aggregation": "SUM"},
            {"name": "id", "visible": false, "filters": [{"operator": "lte", "value": 100}]},
            {"name": "secret", "visible": false,
             "filters": [{"operator": "ne", "value": "x' OR '1'='1"}]}]});
        let (s, b) = seller.post(&endpoints, &agg).await;
        assert_eq!(s, 201, "{name}: {b}");
        let agg_id = b["data"]["endpoint_id"].as_str().expect("id").to_string();
        let (s, b) = buyer.get(&format!("{endpoints}/{agg_id}/execute")).await;
        assert_eq!(s, 200, "{name}: {b}");
        let mut want: BTreeMap<String, i64> = BTreeMap::new();
        for i in 1..=100 {
            let (_, region, amount) = row(i);
            *want.entry(region.to_string()).or_default() += amount;
        }
        let got: BTreeMap<String, i64> = b["data"]["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                (
                    r["region"].as_str().expect("region").to_string(),
                    num(&r["sum_amount"]) as i64,
                )
            })
            .collect();
        assert_eq!(got, want, "{name}");
        assert_eq!(b["data"]["credits_charged"], json!(0), "no price: free");

        // Access methods: each admits exactly its callers.
        let (s, _) = anonymous.get(&format!("{path}/execute")).await;
        assert_eq!(s, 401, "{name}: API_KEY without a key");
        let set = |fields: Value| {
            let (seller, path) = (seller.clone(), path.clone());
            async move {
                let (s, b) = seller.patch(&path, &fields).await;
                assert_eq!(s, 200, "{fields} → {b}");
            }
        };
        set(json!({"access_method": "OPEN"})).await;
        let (s, _) = anonymous.get(&format!("{path}/execute")).await;
        assert_eq!(s, 401, "{name}: an anonymous caller cannot pay the price");
        let (s, b) = anonymous
            .get(&format!("{endpoints}/{agg_id}/execute"))
            .await;
        assert_eq!(s, 401, "{name}: the free one is still API_KEY: {b}");
        set(json!({"access_method": "IP", "access_whitelist": {"type": "ip", "values": ["10.0.0.0/8"]}})).await;
        let (s, _) = buyer.get(&format!("{path}/execute")).await;
        assert_eq!(s, 403, "{name}: not on the IP list");
        set(json!({"access_whitelist": {"type": "ip", "values": ["127.0.0.0/8"]}})).await;
        let (s, _) = buyer.get(&format!("{path}/execute")).await;
        assert_eq!(s, 200, "{name}: on the IP list");
        set(json!({"access_method": "EMAIL", "access_whitelist": {"type": "email", "values": ["someone@else.example"]}})).await;
        let (s, _) = buyer.get(&format!("{path}/execute")).await;
        assert_eq!(s, 403, "{name}: not on the e-mail list");
        set(json!({"access_whitelist": {"type": "email", "values": ["admin@lector.example"]}}))
            .await;
        let (s, _) = buyer.get(&format!("{path}/execute")).await;
        assert_eq!(s, 200, "{name}: on the e-mail list");
        set(json!({"access_method": "DOMAIN", "access_whitelist": {"type": "domain", "values": ["lector.example"]}})).await;
        let (s, _) = buyer.get(&format!("{path}/execute")).await;
        assert_eq!(s, 200, "{name}: on the domain list");
        let (s, _) = anonymous.get(&format!("{path}/execute")).await;
        assert_eq!(s, 401, "{name}: a domain list needs a caller");
        set(json!({"access_method": "API_KEY", "active": false})).await;
        let (s, b) = buyer.get(&format!("{path}/execute")).await;
        assert_eq!(
            (s, b["error"]["code"].clone()),
            (409, json!("endpoint_inactive")),
            "{name}"
        );
        let (s, _) = seller.get(&format!("{path}/execute")).await;
        assert_eq!(s, 200, "{name}: the seller tries its own inactive endpoint");
        set(json!({"active": true, "sell_in_marketplace": false})).await;
        let (s, _) = buyer.get(&format!("{path}/execute")).await;
        assert_eq!(s, 404, "{name}: not sold, not seen");
        let (s, _) = buyer.get(&path).await;
        assert_eq!(s, 403, "{name}: the seller's routes are the seller's");

        // Endpoint keys: this endpoint's calls only, free (the seller's own), gone when deleted.
        let (s, k) = seller
            .post(&format!("{path}/keys"), &json!({"name": "customer"}))
            .await;
        assert_eq!(s, 201, "{name}: {k}");
        let key_no = k["data"]["api_key_id"].as_i64().expect("key id");
        assert_eq!(k["data"]["key_type"], json!("endpoint"));
        let customer = anonymous.with_key(k["data"]["key"].as_str().expect("secret"));
        let (rows, _) = walk(&customer, &path, PAGE).await;
        assert_eq!(rows.len() as i64, ROWS, "{name}");
        let (s, _) = customer.get(&format!("{endpoints}/{agg_id}/execute")).await;
        assert_eq!(s, 403, "{name}: a key of another endpoint");
        let (s, _) = customer
            .get(&format!("/companies/{seller_id}/assets"))
            .await;
        assert_eq!(s, 403, "{name}: an endpoint key opens nothing else");
        let (s, list) = seller.get(&format!("{path}/keys")).await;
        assert_eq!(
            (s, list["data"].as_array().map(Vec::len)),
            (200, Some(1)),
            "{list}"
        );
        let (s, _) = seller.delete(&format!("{path}/keys/{key_no}")).await;
        assert_eq!(s, 200);
        let (s, _) = customer.get(&format!("{path}/execute")).await;
        assert_eq!(s, 401, "{name}: a deleted key");

        // The endpoint's own limit: 2 calls per hour per key, then 429 naming it.
        let (s, b) = seller
            .patch(
                &format!("{endpoints}/{agg_id}"),
                &json!({"rate_limit_number": 2, "rate_limit_period": "HOUR",
                        "rate_limit_granularity": "API_KEY"}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        for _ in 0..2 {
            let (s, _) = buyer.get(&format!("{endpoints}/{agg_id}/execute")).await;
            assert_eq!(s, 200, "{name}");
        }
        let r = buyer
            .req(
                reqwest::Method::GET,
                &format!("{endpoints}/{agg_id}/execute"),
            )
            .send()
            .await
            .expect("limited");
        assert_eq!(r.status().as_u16(), 429, "{name}");
        assert!(r.headers().contains_key("retry-after"));
        let b: Value = r.json().await.expect("json");
        assert_eq!(
            b["error"]["details"]["limit"],
            json!("endpoint_hour"),
            "{b}"
        );

        // Seller tools read the source: a test run, a column's values, real cardinalities.
        let (s, t) = seller.get(&format!("{path}/test?limit=5")).await;
        assert_eq!((s, t["data"]["row_count"].clone()), (200, json!(5)), "{t}");
        let (s, v) = seller
            .post(&format!("{path}/scan_column"), &json!({"column": "region"}))
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            v["data"]["values"],
            json!(["east", "north", "south"]),
            "{name}"
        );
        let (s, rec) = seller.get(&format!("{path}/recommendations")).await;
        assert_eq!(s, 200, "{rec}");
        assert_eq!(rec["data"]["row_count"], json!(ROWS), "{name}: {rec}");
        let region = rec["data"]["columns"]
            .as_array()
            .expect("columns")
            .iter()
            .find(|c| c["column"] == "region")
            .expect("region")
            .clone();
        assert_eq!(
            (region["distinct_values"].clone(), region["role"].clone()),
            (json!(3), json!("dimension"))
        );
        let (s, u) = seller.get(&format!("{path}/url")).await;
        assert_eq!(s, 200);
        assert!(u["data"]["url"]
            .as_str()
            .expect("url")
            .ends_with(&format!("{path}/execute")));
        let (s, o) = seller.get(&format!("/companies/{seller_id}/objects")).await;
        assert_eq!(s, 200);
        assert!(o["data"]["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .any(|e| e["endpoint_id"] == id.as_str()));

        let (s, _) = seller.delete(&path).await;
        assert_eq!(s, 200);
        let (s, _) = buyer.get(&format!("{path}/execute")).await;
        assert_eq!(s, 404, "{name}: a deleted endpoint");
    }
}
