//! Usage across a month boundary in a DST-observing time zone, with exact numbers. Every
//! company is on America/New_York, where October 2026 ends at 2026-11-01T04:00Z (midnight
//! EDT) and the clocks go back two hours later (06:00Z). The marketplace clock is moved
//! (`Settings::clock_offset_ms`) to 23:50 EDT on October 31, then, after a restart on the same
//! data, to 02:30 EST on November 1: both instants are November in UTC, so a read that grouped
//! by UTC month would put everything in November.
//!
//! Two buyers, three keys of the first (two live, one test), two assets (one fails at the
//! source), some executions in test mode: requests usage per month, day, key and asset, key
//! statistics, the plan, asset statistics and seller analytics all return exactly the numbers
//! worked out here.

use crate::common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// 2026-11-01T03:50:00Z (October 31, 23:50 EDT) and 2026-11-01T07:30:00Z (November 1, 02:30
/// EST).
const BEFORE_MIDNIGHT_MS: i64 = 1_793_505_000_000;
const AFTER_DST_MS: i64 = 1_793_518_200_000;

fn offset_to(target_ms: i64) -> i64 {
    target_ms - chrono::Utc::now().timestamp_millis()
}

fn rebased(c: &Client, base: &str) -> Client {
    Client {
        base: base.to_string(),
        ..c.clone()
    }
}

async fn run(c: &Client, slug: &str, want: u16) {
    let (s, b) = c.get(&format!("/analyze/vendo/assets/{slug}")).await;
    assert_eq!(s, want, "{slug}: {b}");
}

/// `path` once `ready` holds for its answer's `data` (metering is asynchronous).
async fn settled(c: &Client, path: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (s, b) = c.get(path).await;
        assert_eq!(s, 200, "{path}: {b}");
        if ready(&b["data"]) || std::time::Instant::now() > deadline {
            return b["data"].clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn counts(executions: u64, succeeded: u64, failed: u64, credits: i64, rows: i64) -> Value {
    json!({"executions": executions, "succeeded": succeeded, "failed": failed,
           "credits": credits, "rows": rows})
}

/// The days of a usage answer that saw executions: (date, executions).
fn busy_days(u: &Value) -> Vec<(String, u64)> {
    u["days"]
        .as_array()
        .expect("days")
        .iter()
        .filter(|d| d["executions"] != 0)
        .map(|d| {
            (
                d["date"].as_str().expect("date").to_string(),
                d["executions"].as_u64().expect("n"),
            )
        })
        .collect()
}

fn executions_by(list: &Value, id_field: &str) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = list
        .as_array()
        .expect("list")
        .iter()
        .map(|r| {
            (
                r[id_field].to_string().trim_matches('"').to_string(),
                r["executions"].as_u64().expect("n"),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_exact_across_a_month_boundary_and_a_dst_change() {
    let Some(url) = crate::connections::source_url() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = test_settings(dir.path());
    settings.source_allow_cidrs = "127.0.0.0/8,::1/128".into();
    settings.clock_offset_ms = offset_to(BEFORE_MIDNIGHT_MS);
    let (app, op) = start_app(settings.clone()).await;
    let (seller_id, seller) = op.company("vendo").await;
    let (b1_id, b1) = op.company("emptor").await;
    let (b2_id, b2) = op.company("alter").await;
    for (id, c) in [(&seller_id, &seller), (&b1_id, &b1), (&b2_id, &b2)] {
        let (s, b) = c
            .patch(
                &format!("/companies/{id}"),
                &json!({"timezone": "America/New_York"}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }
    for (id, key) in [(&b1_id, "u1"), (&b2_id, "u2")] {
        let r = op
            .req(reqwest::Method::POST, &format!("/companies/{id}/credits"))
            .header("idempotency-key", key)
            .json(&json!({"credits": 1000, "reason": "test"}))
            .send()
            .await
            .expect("top up");
        assert_eq!(r.status().as_u16(), 201);
    }
    let key = |name: &str, mode: &str| {
        let (b1, path) = (b1.clone(), format!("/companies/{b1_id}/api-keys"));
        let body = json!({"name": name, "mode": mode});
        async move {
            let (s, k) = b1.post(&path, &body).await;
            assert_eq!(s, 201, "{k}");
            (
                k["data"]["api_key_id"].as_i64().expect("id"),
                k["data"]["key"].as_str().expect("secret").to_string(),
            )
        }
    };
    let (_, k2_secret) = key("second", "live").await;
    let (_, k3_secret) = key("sandbox", "test").await;
    let (_, me) = b1.get("/me").await;
    let k1_no = me["data"]["api_key_id"].as_i64().expect("key id");

    let conn = crate::connections::postgres_connection(&seller, &seller_id, &url, "dwh").await;
    // 0.05 USD is 5 credits; the seller keeps 85 %: 4 credits a sale.
    let answer = crate::connections::priced_asset(
        &seller,
        &seller_id,
        &conn,
        ("Answer", "SELECT 1 AS n"),
        0.05,
    )
    .await;
    let broken = crate::connections::priced_asset(
        &seller,
        &seller_id,
        &conn,
        ("Broken", "SELECT 1 / 0 AS n"),
        0.05,
    )
    .await;

    // October 31, 23:50 EDT.
    let k2 = b1.with_key(&k2_secret);
    let k3 = b1.with_key(&k3_secret);
    run(&b1, "answer", 200).await;
    run(&b1, "answer", 200).await;
    run(&b1, "broken", 502).await;
    run(&k2, "answer", 200).await;
    run(&k3, "answer", 200).await;
    run(&b2, "answer", 200).await;
    let op_key = op.key.clone().expect("operator key");
    app.shutdown().await.expect("shutdown");

    // November 1, 02:30 EST, on the same data.
    settings.clock_offset_ms = offset_to(AFTER_DST_MS);
    let (app, op) = start_app_with_key(settings, &op_key).await;
    let (seller, b1, b2) = (
        rebased(&seller, &op.base),
        rebased(&b1, &op.base),
        rebased(&b2, &op.base),
    );
    let (k2, k3) = (rebased(&k2, &op.base), rebased(&k3, &op.base));
    run(&b1, "answer", 200).await;
    run(&b1, "broken", 502).await;
    run(&k2, "broken", 502).await;
    run(&k3, "answer", 200).await;
    run(&k3, "answer", 200).await;
    run(&b2, "answer", 200).await;
    run(&b2, "answer", 200).await;
    run(&b2, "broken", 502).await;

    // The first buyer: October holds the evening of the 31st, November the night of the 1st.
    let usage = format!("/companies/{b1_id}/requests/usage");
    let total_is = |n: u64| move |d: &Value| d["total"]["executions"] == n;
    let oct = settled(&b1, &format!("{usage}?month=2026-10"), total_is(4)).await;
    assert_eq!(oct["total"], counts(4, 3, 1, 15, 3), "{oct}");
    assert_eq!(oct["days"].as_array().map(Vec::len), Some(31));
    assert_eq!(
        busy_days(&oct),
        vec![("2026-10-31".to_string(), 4)],
        "{oct}"
    );
    let k2_no = oct["by_key"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["api_key_id"].as_i64().expect("id"))
        .find(|id| *id != k1_no)
        .expect("second key");
    assert_eq!(
        executions_by(&oct["by_key"], "api_key_id"),
        {
            let mut v = vec![(k1_no.to_string(), 3), (k2_no.to_string(), 1)];
            v.sort();
            v
        },
        "{oct}"
    );
    let mut by_asset = vec![(answer.clone(), 3), (broken.clone(), 1)];
    by_asset.sort();
    assert_eq!(executions_by(&oct["by_asset"], "asset_id"), by_asset);
    let nov = settled(&b1, &format!("{usage}?month=2026-11"), total_is(3)).await;
    assert_eq!(nov["total"], counts(3, 1, 2, 5, 1), "{nov}");
    assert_eq!(nov["days"].as_array().map(Vec::len), Some(30));
    assert_eq!(
        busy_days(&nov),
        vec![("2026-11-01".to_string(), 3)],
        "{nov}"
    );
    let mut by_asset = vec![(answer.clone(), 1), (broken.clone(), 2)];
    by_asset.sort();
    assert_eq!(executions_by(&nov["by_asset"], "asset_id"), by_asset);
    // Test mode is metered apart, and never in the live reads above.
    let oct_test = settled(
        &b1,
        &format!("{usage}?month=2026-10&mode=test"),
        total_is(1),
    )
    .await;
    assert_eq!(oct_test["total"], counts(1, 1, 0, 0, 1), "{oct_test}");
    let nov_test = settled(
        &b1,
        &format!("{usage}?month=2026-11&mode=test"),
        total_is(2),
    )
    .await;
    assert_eq!(nov_test["total"], counts(2, 2, 0, 0, 2), "{nov_test}");
    // The second buyer.
    let usage2 = format!("/companies/{b2_id}/requests/usage");
    let oct2 = settled(&b2, &format!("{usage2}?month=2026-10"), total_is(1)).await;
    assert_eq!(oct2["total"], counts(1, 1, 0, 5, 1), "{oct2}");
    let nov2 = settled(&b2, &format!("{usage2}?month=2026-11"), total_is(3)).await;
    assert_eq!(nov2["total"], counts(3, 2, 1, 10, 2), "{nov2}");

    // The first key's statistics: today is November 1 in New York.
    let (s, st) = b1
        .get(&format!("/companies/{b1_id}/api-keys/{k1_no}/stats?days=2"))
        .await;
    assert_eq!(s, 200, "{st}");
    let per_day: Vec<(String, u64)> = st["data"]["executions"]["per_day"]
        .as_array()
        .expect("per_day")
        .iter()
        .map(|d| {
            (
                d["date"].as_str().expect("date").to_string(),
                d["executions"].as_u64().expect("n"),
            )
        })
        .collect();
    assert_eq!(
        per_day,
        vec![("2026-10-31".to_string(), 3), ("2026-11-01".to_string(), 2)],
        "{st}"
    );
    assert_eq!(st["data"]["executions"]["total"], counts(5, 3, 2, 15, 3));

    // The plan: the period holds all seven live executions, whatever their outcome.
    let (s, plan) = b1.get(&format!("/companies/{b1_id}/requests/plan")).await;
    assert_eq!(s, 200, "{plan}");
    assert_eq!(
        (
            plan["data"]["allocation"].clone(),
            plan["data"]["used"].clone()
        ),
        (json!(300_000), json!(7)),
        "{plan}"
    );

    // Asset statistics (UTC days): every sale was on November 1 UTC.
    let stats = |asset: &str| format!("/companies/{seller_id}/assets/{asset}/statistics?days=2");
    let (s, a) = seller.get(&stats(&answer)).await;
    assert_eq!(s, 200, "{a}");
    let t = &a["data"]["totals"];
    assert_eq!(
        (
            &t["executions"],
            &t["succeeded"],
            &t["failed"],
            &t["distinct_buyers"],
            &t["revenue_credits"]
        ),
        (&json!(7), &json!(7), &json!(0), &json!(2), &json!(28)),
        "{a}"
    );
    let per_day: Vec<(&Value, &Value)> = a["data"]["per_day"]
        .as_array()
        .expect("per_day")
        .iter()
        .map(|d| (&d["date"], &d["executions"]))
        .collect();
    assert_eq!(per_day, vec![(&json!("2026-11-01"), &json!(7))], "{a}");
    let (s, a) = seller.get(&stats(&broken)).await;
    assert_eq!(s, 200, "{a}");
    let t = &a["data"]["totals"];
    assert_eq!(
        (
            &t["executions"],
            &t["failed"],
            &t["distinct_buyers"],
            &t["revenue_credits"]
        ),
        (&json!(4), &json!(4), &json!(2), &json!(0)),
        "{a}"
    );

    // Seller analytics by local day and by local month.
    let dashboard = format!(
        "/companies/{seller_id}/analytics/dashboard?start_date=2026-10-31&end_date=2026-11-01"
    );
    let d = settled(&seller, &dashboard, |d| d["summary"]["executions"] == 11).await;
    let figures = |v: &Value| {
        (
            v["executions"].as_u64(),
            v["succeeded"].as_u64(),
            v["failed"].as_u64(),
            v["revenue_credits"].as_i64(),
            v["customers"].as_u64(),
            v["new_customers"].as_u64(),
        )
    };
    assert_eq!(
        figures(&d["summary"]),
        (Some(11), Some(7), Some(4), Some(28), Some(2), Some(2)),
        "{d}"
    );
    let series: Vec<_> = d["series"]
        .as_array()
        .expect("series")
        .iter()
        .map(|p| (p["period_start"].as_str().map(str::to_string), figures(p)))
        .collect();
    assert_eq!(
        series,
        vec![
            (
                Some("2026-10-31".to_string()),
                (Some(5), Some(4), Some(1), Some(16), Some(2), Some(2))
            ),
            (
                Some("2026-11-01".to_string()),
                (Some(6), Some(3), Some(3), Some(12), Some(2), Some(0))
            ),
        ],
        "{d}"
    );
    let (s, m) = seller
        .get(&format!(
            "/companies/{seller_id}/analytics/sales?start_date=2026-10-01&end_date=2026-11-30&group_by=month"
        ))
        .await;
    assert_eq!(s, 200, "{m}");
    let months: Vec<_> = m["data"]["series"]
        .as_array()
        .expect("series")
        .iter()
        .map(|p| (p["period_start"].clone(), p["executions"].clone()))
        .collect();
    assert_eq!(
        months,
        vec![
            (json!("2026-10-01"), json!(5)),
            (json!("2026-11-01"), json!(6))
        ],
        "{m}"
    );
    let (s, all) = seller
        .get(&format!("/companies/{seller_id}/analytics/metrics"))
        .await;
    assert_eq!(s, 200, "{all}");
    let a = &all["data"];
    assert_eq!(
        (
            &a["total_executions"],
            &a["succeeded"],
            &a["failed"],
            &a["total_revenue_credits"],
            &a["total_customers"]
        ),
        (&json!(11), &json!(7), &json!(4), &json!(28), &json!(2)),
        "{all}"
    );
    app.shutdown().await.expect("shutdown");
}
