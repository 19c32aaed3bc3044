//! The seller → buyer path over HTTP against the real seller Postgres, on either backend set:
//! a priced asset found and executed in place, the buyer charged exactly the price, the seller
//! credited its share and the platform the rest, failed executions refunded, retries never
//! charged twice, read-only SQL enforced with the source unchanged, concurrency that never
//! overdraws, and `tally reconcile` agreeing at the end.

use crate::common::*;
use crate::connections::{seed_table, seller_db, source_url, url_password};
use serde_json::{json, Value};

struct Market {
    app: tally::App,
    op: Client,
    seller: Client,
    buyer: Client,
    seller_id: String,
    buyer_id: String,
    op_company: String,
    settings: tally::Settings,
}

/// An operator, a seller company with a Postgres connection, and a buyer company.
async fn market(dir: &std::path::Path, url: &str) -> (Market, String) {
    let mut settings = test_settings(dir);
    settings.source_allow_cidrs = "127.0.0.0/8,::1/128".into();
    let (app, op) = start_app(settings.clone()).await;
    let (_, me) = op.get("/me").await;
    let op_company = me["data"]["company_id"]
        .as_str()
        .expect("company")
        .to_string();
    let (seller_id, seller) = op.company("acme").await;
    let (buyer_id, buyer) = op.company("globex").await;
    let conn = crate::connections::source_connection(&seller, &seller_id, url).await;
    (
        Market {
            app,
            op,
            seller,
            buyer,
            seller_id,
            buyer_id,
            op_company,
            settings,
        },
        conn,
    )
}

async fn create_asset(m: &Market, body: Value) -> (u16, Value) {
    m.seller
        .post(&format!("/companies/{}/assets", m.seller_id), &body)
        .await
}

async fn balance(c: &Client, company: &str) -> i64 {
    let (s, b) = c.get(&format!("/companies/{company}")).await;
    assert_eq!(s, 200, "{b}");
    b["data"]["credits_balance"].as_i64().expect("balance")
}

async fn top_up(op: &Client, company: &str, credits: i64, key: &str) -> (u16, Value) {
    let r = op
        .req(
            reqwest::Method::POST,
            &format!("/companies/{company}/credits"),
        )
        .header("idempotency-key", key)
        .json(&json!({"credits": credits, "reason": "test"}))
        .send()
        .await
        .expect("send");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn ledger_kinds(c: &Client, company: &str) -> Vec<(String, i64)> {
    let (s, b) = c.get(&format!("/companies/{company}/credits/ledger")).await;
    assert_eq!(s, 200, "{b}");
    b["data"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or("").to_string(),
                e["credits"].as_i64().unwrap_or(0),
            )
        })
        .collect()
}

/// The price in force is replaced by PATCH and ended by DELETE; ended prices are history that
/// never changes, and an asset without a price in force is not for sale.
async fn price_changes(m: &Market, asset_id: &str, run: &str) {
    let prices = format!("/companies/{}/assets/{asset_id}/prices", m.seller_id);
    let (s, b) = m.seller.get(&format!("{prices}/active")).await;
    assert_eq!(s, 200, "{b}");
    let first = b["data"]["aph_id"].as_str().expect("aph").to_string();
    let both = json!({"price_usd": 0.3, "active": false});
    assert_eq!(
        m.seller.patch(&format!("{prices}/{first}"), &both).await.0,
        400
    );
    let (s, b) = m
        .buyer
        .patch(&format!("{prices}/{first}"), &json!({"price_usd": 0.01}))
        .await;
    assert_eq!(s, 403, "the buyer may not change the seller's price: {b}");
    let (s, b) = m
        .seller
        .patch(&format!("{prices}/{first}"), &json!({"price_usd": 0.3}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (&b["data"]["price_credits"], &b["data"]["replaces"]),
        (&json!(30), &json!(first))
    );
    let second = b["data"]["aph_id"].as_str().expect("aph").to_string();
    let (s, b) = m
        .seller
        .patch(&format!("{prices}/{first}"), &json!({"price_usd": 0.4}))
        .await;
    assert_eq!(s, 409, "an ended price never changes: {b}");
    let (s, b) = m.seller.delete(&format!("{prices}/{second}")).await;
    assert_eq!((s, &b["data"]["active"]), (200, &json!(false)), "{b}");
    assert_eq!(m.seller.delete(&format!("{prices}/{second}")).await.0, 409);
    assert_eq!(
        m.seller.delete(&format!("{prices}/no-such-price")).await.0,
        404
    );
    let (s, b) = m.seller.get(&prices).await;
    assert_eq!(s, 200, "{b}");
    let history: Vec<(Value, Value)> = b["data"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| (p["aph_id"].clone(), p["active"].clone()))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        history,
        vec![(json!(second), json!(false)), (json!(first), json!(false))],
        "newest first, both kept"
    );
    let (s, b) = m.buyer.get(run).await;
    assert_eq!(
        (s, &b["error"]["code"]),
        (409, &json!("not_for_sale")),
        "{b}"
    );
}

/// The seller's statistics after the walk below: the priced asset ran four times (three charged
/// runs by the buyer, one free run by the seller) and earned 3 × 21; the broken one failed three
/// times; the slow one timed out once. The buyer may not read them.
async fn asset_statistics(m: &Market, asset_id: &str, broken: &str) {
    let base = format!("/companies/{}/assets", m.seller_id);
    let (s, b) = m.seller.get(&format!("{base}/{asset_id}/statistics")).await;
    assert_eq!(s, 200, "{b}");
    let t = &b["data"]["totals"];
    assert_eq!(
        (&t["executions"], &t["succeeded"], &t["failed"]),
        (&json!(4), &json!(4), &json!(0)),
        "{b}"
    );
    assert_eq!(
        (&t["distinct_buyers"], &t["revenue_credits"]),
        (&json!(1), &json!(63))
    );
    assert!(t["p95_duration_ms"]
        .as_f64()
        .is_some_and(|d| d >= t["p50_duration_ms"].as_f64().unwrap_or(f64::MAX)));
    assert_eq!(b["data"]["per_day"].as_array().map(Vec::len), Some(1));
    assert_eq!(b["data"]["per_day"][0]["executions"], 4);
    let (s, b) = m.seller.get(&format!("{base}/statistics?days=7")).await;
    assert_eq!(s, 200, "{b}");
    let t = &b["data"]["totals"];
    assert_eq!(
        (
            &t["executions"],
            &t["failed"],
            &t["error_rate"],
            &t["revenue_credits"]
        ),
        (&json!(8), &json!(4), &json!(0.5), &json!(63)),
        "{b}"
    );
    let broken_row = b["data"]["assets"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["asset_id"] == broken))
        .cloned()
        .unwrap_or_default();
    assert_eq!(broken_row["totals"]["error_rate"], 1.0, "{b}");
    assert_eq!(
        m.seller.get(&format!("{base}/statistics?days=0")).await.0,
        400
    );
    // Requests against the plan: every execution the company made counts (the buyer's three
    // priced runs, one slow and three broken; the seller's own free run).
    let (s, b) = m
        .buyer
        .get(&format!("/companies/{}/requests/plan", m.buyer_id))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (
            &b["data"]["plan"],
            &b["data"]["allocation"],
            &b["data"]["used"],
            &b["data"]["requests_counted"],
            &b["data"]["remaining"]
        ),
        (
            &json!("starter"),
            &json!(300_000),
            &json!(7),
            &json!(12),
            &json!(299_988)
        ),
        "the seven executions; twelve requests counted (also the 409, the 402, two 400s and the replayed retry): {b}"
    );
    let (_, b) = m
        .seller
        .get(&format!("/companies/{}/requests/plan", m.seller_id))
        .await;
    assert_eq!(b["data"]["used"], 1, "{b}");
    let theirs = format!("/companies/{}/requests/plan", m.seller_id);
    assert_eq!(m.buyer.get(&theirs).await.0, 403);
    let theirs = m.buyer.get(&format!("{base}/{asset_id}/statistics")).await;
    assert_eq!(theirs.0, 403, "{}", theirs.1);
    let own_path = format!("/companies/{}/assets/{asset_id}/statistics", m.buyer_id);
    assert_eq!(m.buyer.get(&own_path).await.0, 404, "not the buyer's asset");
}

/// A fresh key used twice, refused once by its company scope and once after it was revoked:
/// its statistics say so (counted within a second).
async fn key_statistics(m: &Market) {
    let keys = format!("/companies/{}/api-keys", m.buyer_id);
    let (s, b) = m.buyer.post(&keys, &json!({"name": "counted"})).await;
    assert_eq!(s, 201, "{b}");
    let number = b["data"]["api_key_id"].as_i64().expect("id");
    let key = b["data"]["key"].as_str().expect("key").to_string();
    let counted = m.buyer.with_key(&key);
    assert_eq!(counted.get("/me").await.0, 200);
    assert_eq!(
        counted.get(&format!("/companies/{}", m.buyer_id)).await.0,
        200
    );
    let other = format!("/companies/{}/credits/ledger", m.seller_id);
    assert_eq!(counted.get(&other).await.0, 403);
    let (s, b) = m
        .buyer
        .post(
            &format!("{keys}/{number}/revoke"),
            &json!({"reason": "test"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(counted.get("/me").await.0, 401);
    let stats = format!("{keys}/{number}/stats");
    let mut last = Value::Null;
    for _ in 0..50 {
        let (s, b) = m.buyer.get(&stats).await;
        assert_eq!(s, 200, "{b}");
        last = b["data"].clone();
        if last["usage_count"] == 2 && last["failed_attempts"] == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        (
            &last["usage_count"],
            &last["failed_attempts"],
            &last["is_active"]
        ),
        (&json!(2), &json!(2), &json!(false)),
        "{last}"
    );
    assert!(last["last_used"].is_string() && last["last_failed_attempt"].is_string());
    let theirs = format!("/companies/{}/api-keys/{number}/stats", m.seller_id);
    assert_eq!(
        m.seller.get(&theirs).await.0,
        404,
        "another company's key number"
    );
}

/// The month's usage as the metering projection reports it, once it has caught up with
/// `executions` (polled: metering is asynchronous, behind the outbox and the log).
async fn usage_once(c: &Client, company: &str, query: &str, executions: u64) -> Value {
    let path = format!("/companies/{company}/requests/usage{query}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (s, b) = c.get(&path).await;
        assert_eq!(s, 200, "{b}");
        if b["data"]["total"]["executions"] == executions || std::time::Instant::now() > deadline {
            return b["data"].clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Every execution of the test is metered once: the buyer's seven (three succeeded at 25,
/// returning two rows in all, and four failed and refunded) and the seller's own free run, per day, key and asset; test mode
/// and other months are empty; the month is checked.
async fn request_usage(m: &Market) {
    let u = usage_once(&m.buyer, &m.buyer_id, "", 7).await;
    assert_eq!(
        u["total"],
        json!({"executions": 7, "succeeded": 3, "failed": 4, "credits": 75, "rows": 2}),
        "{u}"
    );
    let days = u["days"].as_array().cloned().unwrap_or_default();
    assert!(
        (28..=31).contains(&days.len()),
        "every day of the month: {u}"
    );
    let busy: Vec<&Value> = days.iter().filter(|d| d["executions"] != 0).collect();
    assert_eq!(busy.len(), 1, "all today: {u}");
    assert_eq!(busy[0]["executions"], 7);
    assert_eq!(u["by_key"].as_array().map(Vec::len), Some(1), "{u}");
    let per_asset: Vec<&Value> = u["by_asset"]
        .as_array()
        .map(|a| a.iter().map(|r| &r["executions"]).collect())
        .unwrap_or_default();
    assert_eq!(
        per_asset,
        [&json!(3), &json!(3), &json!(1)],
        "most used first: {u}"
    );
    // The key that ran them shows the same executions per day.
    let key_id = &u["by_key"][0]["api_key_id"];
    let stats = format!("/companies/{}/api-keys/{key_id}/stats", m.buyer_id);
    let (s, b) = m.buyer.get(&format!("{stats}?days=7")).await;
    assert_eq!(s, 200, "{b}");
    let ran = &b["data"]["executions"];
    assert_eq!(ran["total"], u["total"], "{b}");
    assert_eq!(ran["per_day"].as_array().map(Vec::len), Some(7), "{b}");
    assert_eq!(ran["per_day"][6]["executions"], 7, "today is last: {b}");
    assert_eq!(m.buyer.get(&format!("{stats}?days=0")).await.0, 400);
    let own = usage_once(&m.seller, &m.seller_id, "", 1).await;
    assert_eq!(
        own["total"],
        json!({"executions": 1, "succeeded": 1, "failed": 0, "credits": 0, "rows": 1}),
        "{own}"
    );
    let test = usage_once(&m.buyer, &m.buyer_id, "?mode=test", 0).await;
    assert_eq!(test["total"]["executions"], 0, "{test}");
    let old = usage_once(&m.buyer, &m.buyer_id, "?month=2020-01", 0).await;
    assert_eq!(old["days"].as_array().map(Vec::len), Some(31), "{old}");
    assert_eq!(old["period_start"], "2020-01-01T00:00:00+00:00", "{old}");
    for bad in ["?month=2020-1", "?month=soon", "?mode=both"] {
        let (s, b) = m
            .buyer
            .get(&format!("/companies/{}/requests/usage{bad}", m.buyer_id))
            .await;
        assert_eq!(
            (s, b["error"]["code"].clone()),
            (400, json!("bad_request")),
            "{bad}: {b}"
        );
    }
}

/// A buyer's test key runs the same assets at the same source: at most 10 rows, never
/// charged, not paid from the allocation, metered as `test` only, never a sale.
async fn test_key_runs(m: &Market, conn: &str) {
    let (s, b) = m
        .buyer
        .post(
            &format!("/companies/{}/api-keys", m.buyer_id),
            &json!({"name": "sandbox", "mode": "test"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["data"]["mode"], "test", "{b}");
    let secret = b["data"]["key"].as_str().expect("secret").to_string();
    assert!(secret.starts_with("sk_test_"), "{secret}");
    let key_id = b["data"]["api_key_id"].clone();
    let (s, b) = m
        .buyer
        .post(
            &format!("/companies/{}/api-keys", m.buyer_id),
            &json!({"name": "x", "mode": "sandbox"}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let sandbox = Client {
        base: m.buyer.base.clone(),
        http: reqwest::Client::new(),
        key: Some(secret),
    };

    let series = ("Series", "SELECT generate_series(1, 25) AS n");
    crate::connections::priced_asset(&m.seller, &m.seller_id, conn, series, 0.5).await;
    assert_eq!(top_up(&m.op, &m.buyer_id, 100, "t2").await.0, 201);
    let plan = format!("/companies/{}/requests/plan", m.buyer_id);
    let counted = |b: &Value| b["data"]["requests_counted"].as_u64().unwrap_or(u64::MAX);
    let before = counted(&m.buyer.get(&plan).await.1);
    assert_eq!(balance(&m.buyer, &m.buyer_id).await, 125);

    let (s, b) = sandbox.get("/analyze/acme/assets/series").await;
    assert_eq!(s, 200, "{b}");
    let d = &b["data"];
    assert_eq!(
        (
            &d["row_count"],
            &d["truncated"],
            &d["credits_charged"],
            &d["mode"]
        ),
        (&json!(10), &json!(true), &json!(0), &json!("test")),
        "{b}"
    );
    assert_eq!(d["credits_remaining"], 125, "{b}");
    let (s, b) = sandbox.get("/analyze/acme/assets/broken").await;
    assert_eq!(
        (s, b["error"]["code"].clone()),
        (502, json!("source_error")),
        "{b}"
    );
    // The same key in the live mode is charged: 50 credits for the series.
    let (s, b) = m.buyer.get("/analyze/acme/assets/series").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (&b["data"]["row_count"], &b["data"]["credits_charged"]),
        (&json!(25), &json!(50)),
        "{b}"
    );
    assert_eq!(balance(&m.buyer, &m.buyer_id).await, 75);

    let (_, after) = m.buyer.get(&plan).await;
    assert_eq!(
        counted(&after),
        before + 1,
        "only the live run is paid from the allocation: {after}"
    );
    let test = usage_once(&m.buyer, &m.buyer_id, "?mode=test", 2).await;
    assert_eq!(
        test["total"],
        json!({"executions": 2, "succeeded": 1, "failed": 1, "credits": 0, "rows": 10}),
        "{test}"
    );
    let live = usage_once(&m.buyer, &m.buyer_id, "", 8).await;
    assert_eq!(
        (&live["total"]["executions"], &live["total"]["credits"]),
        (&json!(8), &json!(125)),
        "the seven live runs and the series: {live}"
    );
    let (s, b) = m
        .buyer
        .get(&format!(
            "/companies/{}/api-keys/{key_id}/stats?days=1",
            m.buyer_id
        ))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (
            &b["data"]["executions"]["mode"],
            &b["data"]["executions"]["total"]["executions"]
        ),
        (&json!("test"), &json!(2)),
        "{b}"
    );
    // The seller earned from the live run only: floor(50 × 0.85) = 42 more than the 63.
    assert_eq!(balance(&m.seller, &m.seller_id).await, 105);
    let (_, sales) = m
        .seller
        .get(&format!("/companies/{}/analytics/metrics", m.seller_id))
        .await;
    assert_eq!(
        (
            &sales["data"]["total_executions"],
            &sales["data"]["total_revenue_credits"]
        ),
        (&json!(8), &json!(105)),
        "{sales}"
    );
}

/// The seller's analytics over the same executions (metered by the time `request_usage`
/// returns): three sales of 25 earning 21 each and four failures, all by one new customer
/// today; the seller's own run is not a sale.
async fn seller_analytics(m: &Market, asset_id: &str, broken: &str) {
    let base = format!("/companies/{}/analytics", m.seller_id);
    let (s, b) = m.seller.get(&format!("{base}/metrics")).await;
    assert_eq!(s, 200, "{b}");
    let d = &b["data"];
    assert_eq!(
        (
            &d["total_revenue_credits"],
            &d["total_executions"],
            &d["succeeded"],
            &d["failed"]
        ),
        (&json!(63), &json!(7), &json!(3), &json!(4)),
        "{b}"
    );
    assert_eq!(
        (&d["total_customers"], &d["assets_sold"]),
        (&json!(1), &json!(3)),
        "{b}"
    );
    assert_eq!(d["total_revenue_usd"], 0.63);

    let (s, b) = m.seller.get(&format!("{base}/dashboard")).await;
    assert_eq!(s, 200, "{b}");
    let d = &b["data"];
    assert_eq!(
        (
            &d["summary"]["revenue_credits"],
            &d["summary"]["executions"],
            &d["summary"]["customers"]
        ),
        (&json!(63), &json!(7), &json!(1)),
        "{b}"
    );
    assert_eq!(
        (
            &d["summary"]["new_customers"],
            &d["summary"]["returning_customers"]
        ),
        (&json!(1), &json!(0)),
        "{b}"
    );
    let series = d["series"].as_array().cloned().unwrap_or_default();
    assert_eq!(series.len(), 30, "30 days by default, quiet days included");
    assert_eq!(series[29]["executions"], 7, "today is last: {b}");
    assert_eq!(series[29]["new_customers"], 1);
    assert_eq!(d["top_assets"][0]["asset_id"], asset_id, "{b}");
    assert_eq!(d["top_assets"][0]["name"], "Sales by Region");
    assert_eq!(d["top_customers"][0]["company_id"], m.buyer_id.as_str());

    let since = (chrono::Utc::now() - chrono::Duration::days(300)).format("%Y-%m-%d");
    let (s, b) = m
        .seller
        .get(&format!(
            "{base}/sales?group_by=month&segment_by=asset&start_date={since}"
        ))
        .await;
    assert_eq!(s, 200, "{b}");
    let months = b["data"]["series"].as_array().cloned().unwrap_or_default();
    let now = months.last().cloned().unwrap_or_default();
    assert_eq!(
        (now["revenue_credits"].clone(), now["executions"].clone()),
        (json!(63), json!(7)),
        "{b}"
    );
    assert_eq!(now["segments"][0]["asset_id"], asset_id, "{b}");
    assert_eq!(now["segments"].as_array().map(Vec::len), Some(3));
    assert!(months[..months.len() - 1]
        .iter()
        .all(|p| p["executions"] == 0));

    let (s, b) = m.seller.get(&format!("{base}/customers")).await;
    assert_eq!(s, 200, "{b}");
    let c = &b["data"]["customers"][0];
    assert_eq!(
        (&c["company_id"], &c["revenue_credits"], &c["is_new"]),
        (&json!(m.buyer_id), &json!(63), &json!(true)),
        "{b}"
    );

    let (s, b) = m
        .seller
        .get(&format!("{base}/assets?sort_by=error_rate"))
        .await;
    assert_eq!(s, 200, "{b}");
    let list = b["data"]["assets"].as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), 3, "{b}");
    let mine = list
        .iter()
        .find(|a| a["asset_id"] == broken)
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (
            &mine["error_rate"],
            &mine["executions"],
            &mine["revenue_credits"]
        ),
        (&json!(1.0), &json!(3), &json!(0)),
        "{b}"
    );
    assert_eq!(list[0]["error_rate"], 1.0, "failing first: {b}");
    assert_eq!(list[2]["asset_id"], asset_id, "{b}");

    // The buyer sold nothing, and cannot read the seller's figures.
    let (s, b) = m
        .buyer
        .get(&format!("/companies/{}/analytics/metrics", m.buyer_id))
        .await;
    assert_eq!(
        (s, b["data"]["total_executions"].clone()),
        (200, json!(0)),
        "{b}"
    );
    assert_eq!(m.buyer.get(&format!("{base}/dashboard")).await.0, 403);
    for bad in [
        "dashboard?group_by=year",
        "sales?start_date=2026-02-01&end_date=2026-01-01",
        "assets?limit=0",
        "customers?sort_by=mood",
        "sales?segment_by=planet",
    ] {
        let (s, b) = m.seller.get(&format!("{base}/{bad}")).await;
        assert_eq!(
            (s, b["error"]["code"].clone()),
            (400, json!("bad_request")),
            "{bad}: {b}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seller_to_buyer_charges_exactly_and_reconciles() {
    let Some(url) = source_url() else {
        return;
    };
    let table = format!("money_sales_{}", std::process::id());
    seed_table(&url, &table).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (m, conn) = market(dir.path(), &url).await;

    // Read-only at write time: writes, two statements, a data-modifying CTE are refused.
    for sql in [
        format!("DELETE FROM {table}"),
        format!("UPDATE {table} SET amount = 0"),
        format!("DROP TABLE {table}"),
        format!("INSERT INTO {table} SELECT * FROM {table}"),
        format!("SELECT 1; DELETE FROM {table}"),
        format!("WITH d AS (DELETE FROM {table} RETURNING *) SELECT * FROM d"),
        format!("SELECT * FROM {table} FOR UPDATE"),
    ] {
        let (s, b) = create_asset(
            &m,
            json!({"name": "bad", "connection_id": conn, "sql_logic": sql}),
        )
        .await;
        assert_eq!(s, 400, "{sql} → {b}");
    }
    let before = seller_db::connect(&url).await.fingerprint(&table).await;

    // A priced, shared asset with a parameter.
    let (s, b) = create_asset(
        &m,
        json!({
            "name": "Sales by Region", "connection_id": conn, "visibility": "SHARED",
            "sell_in_marketplace": true, "allow_params": true, "asset_type": "DATA",
            "description": "Total sales for one region", "tags": ["retail"],
            "asset_schema": {"params": [{"name": "region", "type": "string", "required": true}]},
            "sql_logic": format!("SELECT region, sum(amount) AS total FROM {table} WHERE region = {{{{region}}}} GROUP BY region"),
            "viz_chart_type": "BAR",
        }),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["data"]["slug"], "sales-by-region");
    let asset_id = b["data"]["asset_id"].as_str().expect("asset").to_string();
    let (s, _) = create_asset(
        &m,
        json!({"name": "Sales by region", "connection_id": conn, "sql_logic": "SELECT 1"}),
    )
    .await;
    assert_eq!(s, 409, "slugs are unique per company");

    // The buyer finds it, without the SQL.
    let (s, found) = m
        .buyer
        .get(&format!("/companies/{}/assets/search?q=region", m.buyer_id))
        .await;
    assert_eq!(s, 200, "{found}");
    assert_eq!(found["meta"]["pagination"]["total"], 1);
    assert!(found["data"][0]["sql_logic"].is_null() && found["data"][0]["connection_id"].is_null());
    assert_eq!(found["data"][0]["viz_chart_type"], "BAR");

    let run = "/analyze/acme/assets/sales-by-region?region=north".to_string();
    let (s, b) = m.buyer.get(&run).await;
    assert_eq!(
        (s, b["error"]["code"].clone()),
        (409, json!("not_for_sale")),
        "no price yet: {b}"
    );

    // A price of 0.25 USD is 25 credits.
    let prices = format!("/companies/{}/assets/{asset_id}/prices", m.seller_id);
    let (s, b) = m.seller.post(&prices, &json!({"price_usd": 0.25})).await;
    assert_eq!(
        (s, b["data"]["price_credits"].clone()),
        (201, json!(25)),
        "{b}"
    );
    let (s, b) = m
        .seller
        .post(
            &format!("{prices}/calculate_credits"),
            &json!({"price_usd": 0.101}),
        )
        .await;
    assert_eq!(
        (s, b["data"]["credits"].clone()),
        (200, json!(11)),
        "rounded up: {b}"
    );

    let (s, b) = m.buyer.get(&run).await;
    assert_eq!(
        (s, b["error"]["code"].clone()),
        (402, json!("insufficient_credits")),
        "{b}"
    );
    assert_eq!(b["error"]["details"], json!({"balance": 0, "cost": 25}));

    // Top-ups: operator only, once per Idempotency-Key.
    let (s, _) = top_up(&m.buyer, &m.buyer_id, 100, "k0").await;
    assert_eq!(s, 403);
    assert_eq!(top_up(&m.op, &m.buyer_id, 100, "t1").await.0, 201);
    let (s, b) = top_up(&m.op, &m.buyer_id, 100, "t1").await;
    assert_eq!(
        (s, b["data"]["balance"].clone()),
        (201, json!(100)),
        "a replay adds nothing"
    );
    assert_eq!(top_up(&m.op, &m.buyer_id, 50, "t1").await.0, 422);
    let r =
        m.op.req(
            reqwest::Method::POST,
            &format!("/companies/{}/credits", m.buyer_id),
        )
        .json(&json!({"credits": 5}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 400, "the key is required");

    // Execute: the expected rows, exactly the price.
    let (s, b) = m.buyer.get(&run).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["data"]["rows"],
        json!([{"region": "north", "total": 10.5}])
    );
    assert_eq!(
        (
            b["data"]["credits_charged"].clone(),
            b["data"]["credits_remaining"].clone()
        ),
        (json!(25), json!(75))
    );
    assert_eq!(b["data"]["columns"][1]["name"], "total");
    // A bad or missing parameter is a 400 and charges nothing.
    assert_eq!(
        m.buyer.get("/analyze/acme/assets/sales-by-region").await.0,
        400
    );
    assert_eq!(m.buyer.get(&format!("{run}&other=1")).await.0, 400);
    // An injection attempt is a value: no rows, the table untouched.
    let (s, b) = m
        .buyer
        .post(
            "/analyze/acme/assets/sales-by-region",
            &json!({"params": {"region": format!("x' OR '1'='1'; DROP TABLE {table}; --")}}),
        )
        .await;
    assert_eq!((s, b["data"]["row_count"].clone()), (200, json!(0)), "{b}");
    assert_eq!(balance(&m.buyer, &m.buyer_id).await, 50);

    // A retry with the same Idempotency-Key is never charged twice.
    for _ in 0..2 {
        let r = m
            .buyer
            .req(reqwest::Method::GET, &run)
            .header("idempotency-key", "exec-1")
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 200);
    }
    assert_eq!(balance(&m.buyer, &m.buyer_id).await, 25);

    // A query past the timeout answers 504 and is refunded.
    let (s, b) = create_asset(
        &m,
        json!({"name": "Slow", "connection_id": conn, "visibility": "SHARED", "sell_in_marketplace": true,
               "sql_logic": "SELECT pg_sleep(3)", "timeout_ms": 300}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let slow = b["data"]["asset_id"].as_str().expect("asset").to_string();
    let (s, _) = m
        .seller
        .post(
            &format!("/companies/{}/assets/{slow}/prices", m.seller_id),
            &json!({"price_usd": 0.1}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, b) = m.buyer.get("/analyze/acme/assets/slow").await;
    assert_eq!(
        (s, b["error"]["code"].clone()),
        (504, json!("source_timeout")),
        "{b}"
    );
    assert_eq!(b["error"]["details"]["credits_charged"], 0);
    assert_eq!(balance(&m.buyer, &m.buyer_id).await, 25, "refunded");

    // A source failing on every call moves no credit: each hold is refunded.
    let failing = ("Broken", "SELECT * FROM no_such_table_anywhere");
    let broken =
        crate::connections::priced_asset(&m.seller, &m.seller_id, &conn, failing, 0.05).await;
    let seller_before = balance(&m.seller, &m.seller_id).await;
    for _ in 0..3 {
        let (s, b) = m.buyer.get("/analyze/acme/assets/broken").await;
        assert_eq!(
            (s, b["error"]["code"].clone()),
            (502, json!("source_error")),
            "{b}"
        );
        assert!(
            !b.to_string().contains(&url_password(&url)),
            "no credentials in the error"
        );
    }
    assert_eq!(
        balance(&m.buyer, &m.buyer_id).await,
        25,
        "no credit moved for the buyer"
    );
    assert_eq!(
        balance(&m.seller, &m.seller_id).await,
        seller_before,
        "nor for the seller"
    );

    // The seller runs its own asset free; the shares add up.
    let (s, b) = m.seller.get(&run).await;
    assert_eq!((s, b["data"]["credits_charged"].clone()), (200, json!(0)));
    // Three charged runs of 25: the seller keeps floor(25 × 0.85) = 21 of each, the platform 4.
    assert_eq!(balance(&m.seller, &m.seller_id).await, 63);
    assert_eq!(balance(&m.op, &m.op_company).await, 12);
    let kinds = ledger_kinds(&m.buyer, &m.buyer_id).await;
    assert_eq!(
        kinds.iter().filter(|(k, _)| k == "debit").count(),
        7,
        "{kinds:?}"
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|(k, _)| k == "refund")
            .map(|(_, c)| *c)
            .collect::<Vec<_>>(),
        vec![5, 5, 5, 10],
        "newest first"
    );
    assert!(ledger_kinds(&m.seller, &m.seller_id)
        .await
        .iter()
        .all(|(k, c)| k == "seller_credit" && *c == 21));
    // The buyer cannot read the seller's ledger.
    assert_eq!(
        m.buyer
            .get(&format!("/companies/{}/credits/ledger", m.seller_id))
            .await
            .0,
        403
    );

    asset_statistics(&m, &asset_id, &broken).await;
    key_statistics(&m).await;
    request_usage(&m).await;
    seller_analytics(&m, &asset_id, &broken).await;

    // The source is byte-for-byte unchanged.
    assert_eq!(
        seller_db::connect(&url).await.fingerprint(&table).await,
        before
    );
    price_changes(&m, &asset_id, &run).await;
    test_key_runs(&m, &conn).await;

    wait_drained(&m.buyer).await;
    let settings = m.settings.clone();
    m.app.shutdown().await.expect("shutdown");
    let r = tally::reconcile(&settings).await.expect("reconcile");
    assert!(r.ok, "{}", r.lines.join("\n"));

    // A metered execution the money store never answered is a difference reconcile names.
    let b = tally::Backends::open(&settings).await.expect("open");
    let forged = projections::UsageRow {
        execution_id: "forged".into(),
        buyer_company_id: m.buyer_id.clone(),
        seller_company_id: m.seller_id.clone(),
        asset_id: asset_id.clone(),
        api_key_id: 1,
        user_id: "u".into(),
        credits: 25,
        seller_credits: 21,
        rows: 1,
        duration_ms: 1.0,
        status: "succeeded".into(),
        mode: "live".into(),
        at_ms: 1,
    };
    b.analytics
        .write_usage("probe", vec![forged], Vec::new())
        .await
        .expect("write");
    b.close();
    drop(b);
    let r = tally::reconcile(&settings).await.expect("reconcile");
    assert!(!r.ok, "{}", r.lines.join("\n"));
    let diffs: Vec<&String> = r.lines.iter().filter(|l| l.starts_with("DIFF")).collect();
    assert_eq!(
        diffs.len(),
        3,
        "executions, credits, seller revenue: {diffs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_executions_never_overdraw() {
    let Some(url) = source_url() else {
        return;
    };
    let table = format!("money_race_{}", std::process::id());
    seed_table(&url, &table).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (m, conn) = market(dir.path(), &url).await;
    let (s, b) = create_asset(
        &m,
        json!({"name": "One row", "connection_id": conn, "visibility": "SHARED", "sell_in_marketplace": true,
               "sql_logic": format!("SELECT count(*) AS n FROM {table}")}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let asset = b["data"]["asset_id"].as_str().expect("asset").to_string();
    let (s, _) = m
        .seller
        .post(
            &format!("/companies/{}/assets/{asset}/prices", m.seller_id),
            &json!({"price_usd": 0.07}),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(top_up(&m.op, &m.buyer_id, 70, "ten-runs").await.0, 201);
    // Fifty calls in flight at once: more than Starter's five concurrent.
    m.op.subscribe(&m.buyer_id, "enterprise").await;
    let calls = (0..50).map(|_| {
        let c = m.buyer.clone();
        async move { c.get("/analyze/acme/assets/one-row").await.0 }
    });
    let answers = futures::future::join_all(calls).await;
    let ok = answers.iter().filter(|s| **s == 200).count();
    let short = answers.iter().filter(|s| **s == 402).count();
    assert_eq!((ok, short), (10, 40), "{answers:?}");
    assert_eq!(balance(&m.buyer, &m.buyer_id).await, 0);
    wait_drained(&m.buyer).await;
    let settings = m.settings.clone();
    m.app.shutdown().await.expect("shutdown");
    let r = tally::reconcile(&settings).await.expect("reconcile");
    assert!(r.ok, "{}", r.lines.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn favorites_belong_to_their_user() {
    let Some(url) = source_url() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (m, conn) = market(dir.path(), &url).await;
    let (s, b) = create_asset(
        &m,
        json!({"name": "Shared", "connection_id": conn, "visibility": "SHARED", "sell_in_marketplace": true, "sql_logic": "SELECT 1"}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let shared = b["data"]["asset_id"].as_str().expect("asset").to_string();
    let (_, b) = create_asset(
        &m,
        json!({"name": "Private", "connection_id": conn, "sql_logic": "SELECT 1"}),
    )
    .await;
    let private = b["data"]["asset_id"].as_str().expect("asset").to_string();
    let (_, me) = m.buyer.get("/me").await;
    let user = me["data"]["user_id"].as_str().expect("user").to_string();
    let favs = format!("/companies/{}/users/{user}/favorites", m.buyer_id);
    let (s, b) = m
        .buyer
        .post(
            &favs,
            &json!({"asset_id": shared, "category": "weekly", "priority": 5}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let id = b["data"]["favorite_id"]
        .as_i64()
        .expect("integer favorite_id");
    assert_eq!(
        m.buyer.post(&favs, &json!({"asset_id": shared})).await.0,
        409,
        "one per asset"
    );
    assert_eq!(
        m.buyer.post(&favs, &json!({"asset_id": private})).await.0,
        404,
        "another company's private asset"
    );
    let (_, list) = m.buyer.get(&format!("{favs}/category/weekly")).await;
    assert_eq!(list["meta"]["pagination"]["total"], 1);
    let (_, none) = m.buyer.get(&format!("{favs}/uncategorized")).await;
    assert_eq!(none["meta"]["pagination"]["total"], 0);
    let (_, c) = m.buyer.get(&format!("{favs}/check/{shared}")).await;
    assert_eq!(
        (
            c["data"]["is_favorite"].clone(),
            c["data"]["favorite_id"].clone()
        ),
        (json!(true), json!(id))
    );
    assert_eq!(
        m.buyer
            .patch(
                &format!("{favs}/{id}"),
                &json!({"category": null, "notes": "n"})
            )
            .await
            .0,
        200
    );
    let (_, none) = m.buyer.get(&format!("{favs}/uncategorized")).await;
    assert_eq!(none["meta"]["pagination"]["total"], 1);
    // The company's admin cannot read another user's favorites; another company gets 403.
    let (s, _) = m.seller.get(&favs).await;
    assert_eq!(s, 403);
    assert_eq!(m.buyer.delete(&format!("{favs}/{id}")).await.0, 200);
    let (_, c) = m.buyer.get(&format!("{favs}/check/{shared}")).await;
    assert_eq!(c["data"]["is_favorite"], false);
    m.app.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_files_are_sources_read_only_and_confined_to_the_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("files");
    std::fs::create_dir_all(&root).expect("root");
    let db = root.join("sales.db");
    {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&db)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(opts)
            .await
            .expect("seller sqlite");
        sqlx::raw_sql(
            "CREATE TABLE sales (region TEXT, amount REAL, n INTEGER); \
             INSERT INTO sales VALUES ('north', 10.5, 1), ('south', 20.25, 2), ('north', 1.0, 3);",
        )
        .execute(&pool)
        .await
        .expect("seed");
        pool.close().await;
    }
    std::fs::write(dir.path().join("outside.db"), b"").expect("outside");
    let before = std::fs::read(&db).expect("bytes");
    let mut settings = test_settings(dir.path());
    settings.source_file_root = Some(root.clone());
    let (app, op) = start_app(settings).await;
    let (seller_id, seller) = op.company("acme").await;
    let (buyer_id, buyer) = op.company("globex").await;
    let conns = format!("/companies/{seller_id}/connections");
    for bad in ["../outside.db", "/etc/hostname", "missing.db"] {
        let (s, b) = seller
            .post(
                &conns,
                &json!({"engine_id": 5, "name": "x", "credentials": {"path": bad}}),
            )
            .await;
        assert_eq!(s, 400, "{bad}: {b}");
    }
    let (s, b) = seller
        .post(
            &conns,
            &json!({"engine_id": 5, "name": "files", "credentials": {"path": "sales.db"}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let conn = b["data"]["connection_id"]
        .as_str()
        .expect("conn")
        .to_string();
    let (s, t) = seller.get(&format!("{conns}/{conn}/test")).await;
    assert_eq!(
        (
            s,
            t["data"]["status"].clone(),
            t["data"]["tables_found"].clone()
        ),
        (200, json!("ok"), json!(1))
    );
    let (_, info) = seller.get(&format!("{conns}/{conn}/infoschema")).await;
    assert_eq!(
        info["data"]["schemas"][0]["tables"][0]["columns"][2]["data_type"],
        "integer"
    );
    let (_, sample) = seller
        .get(&format!("{conns}/{conn}/sample-data?table=sales&limit=2"))
        .await;
    assert_eq!(sample["data"]["row_count"], 2, "{sample}");
    let assets = format!("/companies/{seller_id}/assets");
    let (s, _) = seller
        .post(
            &assets,
            &json!({"name": "bad", "connection_id": conn, "sql_logic": "DELETE FROM sales"}),
        )
        .await;
    assert_eq!(s, 400);
    let (s, b) = seller
        .post(
            &assets,
            &json!({"name": "Totals", "connection_id": conn, "visibility": "SHARED", "sell_in_marketplace": true,
                    "allow_params": true, "asset_schema": {"params": [{"name": "region", "type": "string", "required": true}]},
                    "sql_logic": "SELECT region, sum(amount) AS total, sum(n) AS n FROM sales WHERE region = {{region}} GROUP BY region"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let asset = b["data"]["asset_id"].as_str().expect("asset").to_string();
    assert_eq!(
        seller
            .post(
                &format!("{assets}/{asset}/prices"),
                &json!({"price_usd": 0.02})
            )
            .await
            .0,
        201
    );
    assert_eq!(top_up(&op, &buyer_id, 10, "sqlite").await.0, 201);
    let (s, b) = buyer.get("/analyze/acme/assets/totals?region=north").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["data"]["rows"],
        json!([{"region": "north", "total": 11.5, "n": 4}])
    );
    assert_eq!(
        (
            b["data"]["credits_charged"].clone(),
            b["data"]["credits_remaining"].clone()
        ),
        (json!(2), json!(8))
    );
    let (s, b) = buyer
        .post(
            "/analyze/acme/assets/totals",
            &json!({"params": {"region": "x'; DROP TABLE sales; --"}}),
        )
        .await;
    assert_eq!((s, b["data"]["row_count"].clone()), (200, json!(0)));
    app.shutdown().await.expect("shutdown");
    assert_eq!(
        std::fs::read(&db).expect("bytes"),
        before,
        "the file is byte-for-byte unchanged"
    );
}

/// A second key of the seller's admin (the same user, its own per-key windows).
async fn second_seller_key(m: &Market) -> Client {
    let (s, b) = m
        .seller
        .post(
            &format!("/companies/{}/api-keys", m.seller_id),
            &json!({"name": "second"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    m.seller.with_key(b["data"]["key"].as_str().expect("key"))
}

/// An execution's answer: status, the `X-RateLimit-*` and `Retry-After` headers, the body.
async fn limited(c: &Client, path: &str) -> (u16, [Option<i64>; 4], Value) {
    let r = c
        .req(reqwest::Method::GET, path)
        .send()
        .await
        .expect("send");
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok())
    };
    let h = [
        header("x-ratelimit-limit"),
        header("x-ratelimit-remaining"),
        header("x-ratelimit-reset"),
        header("retry-after"),
    ];
    let s = r.status().as_u16();
    (s, h, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starter_key_gets_sixty_a_minute_and_five_at_once() {
    let Some(url) = source_url() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (m, conn) = market(dir.path(), &url).await;
    for (name, sql) in [
        ("Tiny", "SELECT 1 AS one"),
        ("Slow", "SELECT pg_sleep(0.6) IS NULL AS slept"),
    ] {
        let (s, b) = create_asset(
            &m,
            json!({"name": name, "connection_id": conn, "visibility": "PRIVATE", "sql_logic": sql}),
        )
        .await;
        assert_eq!(s, 201, "{b}");
    }
    // Sixty calls inside one minute window (started early enough in it), then a refusal.
    let second = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() % 60)
            .unwrap_or(0)
    };
    while second(std::time::SystemTime::now()) > 30 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    for n in 1..=60 {
        let (s, h, b) = limited(&m.seller, "/analyze/acme/assets/tiny").await;
        assert_eq!(s, 200, "call {n}: {b}");
        assert_eq!((h[0], h[1]), (Some(60), Some(60 - n)), "call {n}");
        assert!(h[2].is_some_and(|reset| reset % 60 == 0), "{h:?}");
    }
    let (s, h, b) = limited(&m.seller, "/analyze/acme/assets/tiny").await;
    assert_eq!(
        (s, b["error"]["code"].clone()),
        (429, json!("rate_limited")),
        "{b}"
    );
    assert_eq!(b["error"]["details"]["limit"], "minute", "{b}");
    assert_eq!((h[0], h[1]), (Some(60), Some(0)));
    assert!(
        h[3].is_some_and(|secs| (1..=60).contains(&secs)),
        "Retry-After: {h:?}"
    );

    // Another key of the same company has its own minute; six at once on five slots.
    let second_key = second_seller_key(&m).await;
    let calls = (0..6).map(|_| {
        let c = second_key.clone();
        async move { limited(&c, "/analyze/acme/assets/slow").await }
    });
    let answers = futures::future::join_all(calls).await;
    let codes: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert_eq!(codes.iter().filter(|s| **s == 200).count(), 5, "{codes:?}");
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|a| a.0 == 429)
        .map(|a| &a.2)
        .collect();
    assert_eq!(refused.len(), 1, "{codes:?}");
    assert_eq!(
        refused[0]["error"]["details"]["limit"], "concurrent",
        "{}",
        refused[0]
    );
    // The slots are given back: the next call runs.
    let (s, _, b) = limited(&second_key, "/analyze/acme/assets/slow").await;
    assert_eq!(s, 200, "{b}");
    // A slot is free again before its answer arrives: five callers that each send their
    // next call on the answer of the last never exceed five in flight.
    let (s, b) = m
        .seller
        .post(
            &format!("/companies/{}/api-keys", m.seller_id),
            &json!({"name": "third"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let third = m.seller.with_key(b["data"]["key"].as_str().expect("key"));
    let workers = (0..5).map(|_| {
        let c = third.clone();
        async move {
            let mut codes = Vec::new();
            for _ in 0..6 {
                codes.push(limited(&c, "/analyze/acme/assets/tiny").await.0);
            }
            codes
        }
    });
    let codes: Vec<u16> = futures::future::join_all(workers)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert!(codes.iter().all(|s| *s == 200), "{codes:?}");
    m.app.shutdown().await.expect("shutdown");
}

/// An asset's own limit (`rate_limit_number` per `rate_limit_period`, per
/// `rate_limit_granularity`), checked when it is set, counted with the plan's windows in one
/// step, in the headers when it is the tightest, and named in the `429`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asset_limits_its_calls_per_user_or_ip() {
    let Some(url) = source_url() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (m, conn) = market(dir.path(), &url).await;
    for bad in [
        json!({"rate_limit_number": 0}),
        json!({"rate_limit_number": 3, "rate_limit_period": "week"}),
        json!({"rate_limit_number": 3, "rate_limit_granularity": "GLOBAL"}),
    ] {
        let mut body = json!({"name": "Bad", "connection_id": conn, "sql_logic": "SELECT 1"});
        for (k, v) in bad.as_object().cloned().unwrap_or_default() {
            body[k] = v;
        }
        let (s, b) = create_asset(&m, body).await;
        assert_eq!(s, 400, "{bad}: {b}");
    }
    let (s, b) = create_asset(
        &m,
        json!({"name": "Capped", "connection_id": conn, "sql_logic": "SELECT 1 AS one",
               "rate_limit_number": 2, "rate_limit_period": "hour"}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let capped = b["data"]["asset_id"].as_str().expect("asset").to_string();
    let (s, b) = m
        .seller
        .get(&format!("/companies/{}/assets/{capped}", m.seller_id))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (
            &b["data"]["rate_limit_number"],
            &b["data"]["rate_limit_period"]
        ),
        (&json!(2), &json!("hour")),
        "{b}"
    );
    for remaining in [1, 0] {
        let (s, h, b) = limited(&m.seller, "/analyze/acme/assets/capped").await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(
            (h[0], h[1]),
            (Some(2), Some(remaining)),
            "the tightest: {h:?}"
        );
    }
    let (s, h, b) = limited(&m.seller, "/analyze/acme/assets/capped").await;
    assert_eq!(
        (s, &b["error"]["code"], &b["error"]["details"]["limit"]),
        (429, &json!("rate_limited"), &json!("asset_hour")),
        "{b}"
    );
    assert!(h[3].is_some_and(|secs| (1..=3600).contains(&secs)), "{h:?}");
    // The limit is per user: another key of the same user is refused too.
    let second = second_seller_key(&m).await;
    assert_eq!(limited(&second, "/analyze/acme/assets/capped").await.0, 429);
    // The refused calls used up none of the plan's minute: another asset still runs.
    let (s, _) = create_asset(
        &m,
        json!({"name": "Free", "connection_id": conn, "sql_logic": "SELECT 1 AS one"}),
    )
    .await;
    assert_eq!(s, 201);
    let (s, h, _) = limited(&second, "/analyze/acme/assets/free").await;
    assert_eq!(
        (s, h[0], h[1]),
        (200, Some(60), Some(59)),
        "one run of the second key: {h:?}"
    );

    // Lifting the limit (PATCH to null) lets the calls through; a bad PATCH is a 400.
    let path = format!("/companies/{}/assets/{capped}", m.seller_id);
    let (s, b) = m
        .seller
        .patch(&path, &json!({"rate_limit_period": "fortnight"}))
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = m
        .seller
        .patch(
            &path,
            &json!({"rate_limit_number": 1, "rate_limit_granularity": "IP"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let from = |ip: &'static str| {
        m.seller
            .req(reqwest::Method::GET, "/analyze/acme/assets/capped")
            .header("x-forwarded-for", ip)
            .send()
    };
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await; // the asset cache
    assert_eq!(
        from("81.2.69.1").await.expect("send").status().as_u16(),
        200
    );
    assert_eq!(
        from("81.2.69.1").await.expect("send").status().as_u16(),
        429
    );
    assert_eq!(
        from("85.214.9.9").await.expect("send").status().as_u16(),
        200,
        "another IP has its own hour"
    );
    m.app.shutdown().await.expect("shutdown");
}
