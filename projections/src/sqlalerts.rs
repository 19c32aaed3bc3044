//! The alert store's SQL (see `alert_store.rs`), once for SQLite and Postgres. Expanded inside
//! `money_sql_impl!`'s module: a batch's `AlertTriggered` records go through the same outbox
//! as the money path's, written by its `flush`.

/// Durable alert tables: never dropped by a migration (part of the money store's DDL).
pub(crate) const ALERTS_DDL: &str = "
CREATE TABLE IF NOT EXISTS alert_firings (
    firing_id TEXT PRIMARY KEY,
    alert_id TEXT NOT NULL,
    alert_number BIGINT NOT NULL,
    company_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    asset_id TEXT,
    kind TEXT NOT NULL,
    fire_window TEXT NOT NULL,
    reason TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    read_at_ms BIGINT,
    UNIQUE (alert_id, fire_window)
);
CREATE INDEX IF NOT EXISTS alert_firings_by_user ON alert_firings (user_id, at_ms);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    delivery_id TEXT PRIMARY KEY,
    firing_id TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    url TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at_ms BIGINT NOT NULL,
    last_status BIGINT,
    last_error TEXT,
    created_at_ms BIGINT NOT NULL,
    delivered_at_ms BIGINT
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at_ms);
CREATE INDEX IF NOT EXISTS webhook_deliveries_by_alert ON webhook_deliveries (alert_id, created_at_ms);
";

macro_rules! alerts_sql_impl {
    ($store:ident, $db:ty) => {
        use crate::alert_store::{AlertStore, Attempt, Delivery, Firing, NewFiring};

        fn firing_from(r: &<$db as sqlx::Database>::Row) -> Result<Firing, sqlx::Error> {
            Ok(Firing {
                record: schemas::AlertTriggered {
                    firing_id: r.try_get("firing_id")?,
                    alert_id: r.try_get("alert_id")?,
                    alert_number: r.try_get("alert_number")?,
                    company_id: r.try_get("company_id")?,
                    user_id: r.try_get("user_id")?,
                    asset_id: r.try_get("asset_id")?,
                    kind: r.try_get("kind")?,
                    window: r.try_get("fire_window")?,
                    reason: r.try_get("reason")?,
                    at_ms: r.try_get("at_ms")?,
                },
                read_at_ms: r.try_get("read_at_ms")?,
            })
        }

        fn delivery_from(r: &<$db as sqlx::Database>::Row) -> Result<Delivery, sqlx::Error> {
            Ok(Delivery {
                delivery_id: r.try_get("delivery_id")?,
                firing_id: r.try_get("firing_id")?,
                alert_id: r.try_get("alert_id")?,
                url: r.try_get("url")?,
                status: r.try_get("status")?,
                attempts: r.try_get("attempts")?,
                next_attempt_at_ms: r.try_get("next_attempt_at_ms")?,
                last_status: r.try_get("last_status")?,
                last_error: r.try_get("last_error")?,
                created_at_ms: r.try_get("created_at_ms")?,
                delivered_at_ms: r.try_get("delivered_at_ms")?,
            })
        }

        /// Inserts `f` unless its rule fired in its window already: the stored firing if new.
        async fn insert_firing(tx: &mut Tx<'_>, f: &NewFiring) -> Result<Option<Firing>, sqlx::Error> {
            let mut r = f.record.clone();
            r.firing_id = crate::sqlmoney::new_id();
            let n = sqlx::query(
                "INSERT INTO alert_firings (firing_id, alert_id, alert_number, company_id, user_id, asset_id, kind, fire_window, reason, at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (alert_id, fire_window) DO NOTHING",
            )
            .bind(&r.firing_id)
            .bind(&r.alert_id)
            .bind(r.alert_number)
            .bind(&r.company_id)
            .bind(&r.user_id)
            .bind(&r.asset_id)
            .bind(&r.kind)
            .bind(&r.window)
            .bind(&r.reason)
            .bind(r.at_ms)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            Ok((n == 1).then_some(Firing { record: r, read_at_ms: None }))
        }

        #[async_trait]
        impl AlertStore for $store {
            async fn alert_offsets(&self, stage: &str) -> StoreResult<Vec<crate::StoredOffset>> {
                let rows = sqlx::query("SELECT topic, part, next_offset FROM projection_offsets WHERE consumer = $1")
                    .bind(stage)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(sql_err)?;
                rows.iter()
                    .map(|r| {
                        let part: i64 = r.try_get("part")?;
                        let next: i64 = r.try_get("next_offset")?;
                        Ok(crate::StoredOffset {
                            topic: r.try_get("topic")?,
                            partition: part as u32,
                            next_offset: next as u64,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(sql_err)
            }

            async fn record_firings(
                &self,
                stage: &str,
                firings: &[NewFiring],
                offsets: &[crate::StoredOffset],
            ) -> StoreResult<Vec<Firing>> {
                let _writer = crate::sqlmeta::write_turn(&self.writer).await;
                let mut tx = self.pool.begin_with($store::BEGIN_WRITE).await.map_err(sql_err)?;
                let mut pending = Pending::default();
                let mut fresh = Vec::new();
                for f in firings {
                    let Some(stored) = insert_firing(&mut tx, f).await.map_err(sql_err)? else {
                        continue;
                    };
                    if let Some(url) = &f.webhook_url {
                        sqlx::query(
                            "INSERT INTO webhook_deliveries (delivery_id, firing_id, alert_id, url, status, attempts, next_attempt_at_ms, created_at_ms) \
                             VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5)",
                        )
                        .bind(crate::sqlmoney::new_id())
                        .bind(&stored.record.firing_id)
                        .bind(&stored.record.alert_id)
                        .bind(url)
                        .bind(stored.record.at_ms)
                        .execute(&mut *tx)
                        .await
                        .map_err(sql_err)?;
                    }
                    let record = schemas::encode(&stored.record)
                        .map_err(|e| StoreError::Backend(e.to_string()))?;
                    let (company, at_ms) = (&stored.record.company_id, stored.record.at_ms);
                    crate::sqlmoney::outbox(&mut pending, "alerts", company, record, at_ms);
                    fresh.push(stored);
                }
                flush(&mut tx, &mut pending).await?;
                for o in offsets {
                    sqlx::query(
                        "INSERT INTO projection_offsets (consumer, topic, part, next_offset) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (consumer, topic, part) DO UPDATE SET next_offset = EXCLUDED.next_offset",
                    )
                    .bind(stage)
                    .bind(&o.topic)
                    .bind(i64::from(o.partition))
                    .bind(o.next_offset as i64)
                    .execute(&mut *tx)
                    .await
                    .map_err(sql_err)?;
                }
                tx.commit().await.map_err(sql_err)?;
                Ok(fresh)
            }

            async fn notifications(
                &self,
                user_id: &str,
                limit: usize,
                offset: usize,
            ) -> StoreResult<(Vec<Firing>, u64, u64)> {
                let rows = sqlx::query(
                    "SELECT * FROM alert_firings WHERE user_id = $1 ORDER BY at_ms DESC, firing_id DESC LIMIT $2 OFFSET $3",
                )
                .bind(user_id)
                .bind(limit as i64)
                .bind(offset as i64)
                .fetch_all(&self.pool)
                .await
                .map_err(sql_err)?;
                let out = rows.iter().map(firing_from).collect::<Result<Vec<_>, _>>().map_err(sql_err)?;
                let (total, unread): (i64, i64) = sqlx::query_as(
                    "SELECT count(*), count(*) - count(read_at_ms) FROM alert_firings WHERE user_id = $1",
                )
                .bind(user_id)
                .fetch_one(&self.pool)
                .await
                .map_err(sql_err)?;
                Ok((out, total as u64, unread as u64))
            }

            async fn mark_read(&self, user_id: &str, firing_id: &str, at_ms: i64) -> StoreResult<bool> {
                let _writer = crate::sqlmeta::write_turn(&self.writer).await;
                let n = sqlx::query(
                    "UPDATE alert_firings SET read_at_ms = COALESCE(read_at_ms, $3) WHERE user_id = $1 AND firing_id = $2",
                )
                .bind(user_id)
                .bind(firing_id)
                .bind(at_ms)
                .execute(&self.pool)
                .await
                .map_err(sql_err)?
                .rows_affected();
                Ok(n == 1)
            }

            async fn firings_of(&self, alert_id: &str) -> StoreResult<Vec<Firing>> {
                let rows = sqlx::query("SELECT * FROM alert_firings WHERE alert_id = $1 ORDER BY at_ms DESC, firing_id DESC")
                    .bind(alert_id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(sql_err)?;
                rows.iter().map(firing_from).collect::<Result<_, _>>().map_err(sql_err)
            }

            async fn deliveries_of(&self, alert_id: &str) -> StoreResult<Vec<Delivery>> {
                let rows = sqlx::query(
                    "SELECT * FROM webhook_deliveries WHERE alert_id = $1 ORDER BY created_at_ms DESC, delivery_id DESC",
                )
                .bind(alert_id)
                .fetch_all(&self.pool)
                .await
                .map_err(sql_err)?;
                rows.iter().map(delivery_from).collect::<Result<_, _>>().map_err(sql_err)
            }

            async fn claim_deliveries(
                &self,
                limit: usize,
                now_ms: i64,
                lease_ms: i64,
            ) -> StoreResult<Vec<(Delivery, Firing)>> {
                let claimed = {
                    let _writer = crate::sqlmeta::write_turn(&self.writer).await;
                    // The outer condition is checked again on a row another notifier claimed
                    // meanwhile (Postgres re-reads it), so two never claim one delivery.
                    let rows = sqlx::query(
                        "UPDATE webhook_deliveries SET next_attempt_at_ms = $2 + $3 \
                         WHERE status = 'pending' AND next_attempt_at_ms <= $2 AND delivery_id IN \
                         (SELECT delivery_id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at_ms <= $2 \
                          ORDER BY next_attempt_at_ms LIMIT $1) RETURNING *",
                    )
                    .bind(limit as i64)
                    .bind(now_ms)
                    .bind(lease_ms)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(sql_err)?;
                    rows.iter().map(delivery_from).collect::<Result<Vec<_>, _>>().map_err(sql_err)?
                };
                let mut out = Vec::with_capacity(claimed.len());
                for d in claimed {
                    let row = sqlx::query("SELECT * FROM alert_firings WHERE firing_id = $1")
                        .bind(&d.firing_id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(sql_err)?;
                    if let Some(r) = row {
                        out.push((d, firing_from(&r).map_err(sql_err)?));
                    }
                }
                Ok(out)
            }

            async fn record_attempt(&self, delivery_id: &str, attempt: &Attempt, now_ms: i64) -> StoreResult<()> {
                let (status, code, error, next, delivered) = match attempt {
                    Attempt::Delivered { status } => ("delivered", Some(*status), None, now_ms, Some(now_ms)),
                    Attempt::Failed { status, error, retry_at_ms } => ("pending", *status, Some(error.clone()), *retry_at_ms, None),
                    Attempt::Dead { status, error } => ("dead", *status, Some(error.clone()), now_ms, None),
                };
                let _writer = crate::sqlmeta::write_turn(&self.writer).await;
                sqlx::query(
                    "UPDATE webhook_deliveries SET status = $2, attempts = attempts + 1, last_status = $3, last_error = $4, \
                     next_attempt_at_ms = $5, delivered_at_ms = $6 WHERE delivery_id = $1",
                )
                .bind(delivery_id)
                .bind(status)
                .bind(code)
                .bind(error)
                .bind(next)
                .bind(delivered)
                .execute(&self.pool)
                .await
                .map_err(sql_err)?;
                Ok(())
            }
        }
    };
}

pub(crate) use alerts_sql_impl;
