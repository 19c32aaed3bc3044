//! The webhook notifier, in every process that serves ingest (beside the outbox relay): it
//! claims the deliveries that are due (with a lease, so two notifiers never send one delivery
//! together), POSTs each firing as JSON to its rule's URL and records the attempt. A failed
//! attempt is retried with exponential backoff until `TALLY_WEBHOOK_GIVE_UP_SECS` after the
//! firing, then the delivery is kept as `dead` (the dead-letter record, listed with the alert's
//! deliveries).
//!
//! Every request is signed: `X-Tally-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>">`
//! under the rule's secret (returned once when the rule was made, kept sealed), with the
//! timestamp in `X-Tally-Timestamp` and the delivery id in `X-Tally-Delivery`, which a receiver
//! uses to act once on a delivery it may get more than once. The URL's host passes the same
//! network guard as a connection, and the request goes to the address the guard checked;
//! redirects are not followed.

use hmac::{Hmac, Mac};
use projections::alert_store::{AlertStore, Attempt, Delivery, Firing};
use projections::{AlertScope, MetadataReader};
use serde_json::json;
use sha2::Sha256;
use sources::Registry;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The notifier's settings.
#[derive(Debug, Clone, Copy)]
pub struct NotifierConfig {
    pub retry_base_ms: u64,
    pub give_up_ms: i64,
}

/// How long a claim lasts: longer than one attempt (its timeout is 10 s).
const LEASE_MS: i64 = 60_000;
const BATCH: usize = 50;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_RETRY_MS: u64 = 3_600_000;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The wait before the next try after `attempts` failed ones: `base`, doubling, at most an hour.
pub fn retry_delay_ms(base_ms: u64, attempts: i64) -> u64 {
    let doublings = attempts.clamp(0, 40) as u32;
    base_ms
        .saturating_mul(2u64.saturating_pow(doublings))
        .min(MAX_RETRY_MS)
}

/// The hex HMAC-SHA256 of `message` under `secret`.
pub fn sign(secret: &[u8], message: &[u8]) -> String {
    // HMAC takes a key of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// What is signed: the timestamp, a dot, the body.
pub fn signed_message(timestamp: i64, body: &str) -> Vec<u8> {
    format!("{timestamp}.{body}").into_bytes()
}

/// The JSON a receiver gets for one delivery of a firing.
pub fn body(d: &Delivery, f: &Firing) -> String {
    let r = &f.record;
    json!({
        "delivery_id": d.delivery_id,
        "firing_id": r.firing_id,
        "alert_id": r.alert_number,
        "kind": r.kind,
        "window": r.window,
        "reason": r.reason,
        "company_id": r.company_id,
        "user_id": r.user_id,
        "asset_id": r.asset_id,
        "fired_at": chrono::DateTime::from_timestamp_millis(r.at_ms).map(|t| t.to_rfc3339()),
    })
    .to_string()
}

struct Notifier {
    store: Arc<dyn AlertStore>,
    metadata: Arc<dyn MetadataReader>,
    registry: Arc<Registry>,
    cfg: NotifierConfig,
}

/// Why an attempt did not deliver: the HTTP status if one came back, and a reason.
type Failure = (Option<i64>, String);

impl Notifier {
    /// The signing secret of the rule that fired, if it still has a webhook.
    async fn secret(&self, f: &Firing) -> Result<Vec<u8>, Failure> {
        let rules = self
            .metadata
            .alerts_where(AlertScope::Company, &f.record.company_id)
            .await
            .map_err(|e| (None, e.to_string()))?;
        let sealed = rules
            .into_iter()
            .find(|r| r.state.id == f.record.alert_id)
            .and_then(|r| r.state.webhook_secret_sealed)
            .ok_or((None, "the alert no longer has a webhook".to_string()))?;
        self.registry
            .open_secret(&f.record.alert_id, &sealed)
            .map_err(|e| (None, format!("cannot open the webhook secret: {e}")))
    }

    /// One attempt: the signed POST to the address the guard checked.
    async fn send(&self, d: &Delivery, f: &Firing) -> Result<i64, Failure> {
        let secret = self.secret(f).await?;
        let url = url::Url::parse(&d.url).map_err(|e| (None, format!("bad URL: {e}")))?;
        let host = url.host_str().unwrap_or_default().to_string();
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs = self
            .registry
            .guard()
            .resolve(&host, port)
            .await
            .map_err(|e| (None, e.to_string()))?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(ATTEMPT_TIMEOUT)
            .resolve_to_addrs(&host, &addrs)
            .build()
            .map_err(|e| (None, e.to_string()))?;
        let body = body(d, f);
        let ts = now_ms() / 1000;
        let signature = sign(&secret, &signed_message(ts, &body));
        let resp = client
            .post(url)
            .header("content-type", "application/json")
            .header("x-tally-delivery", &d.delivery_id)
            .header("x-tally-timestamp", ts.to_string())
            .header("x-tally-signature", format!("v1={signature}"))
            .body(body)
            .send()
            .await
            .map_err(|e| (None, format!("request failed: {e}")))?;
        let status = i64::from(resp.status().as_u16());
        if resp.status().is_success() {
            Ok(status)
        } else {
            Err((Some(status), format!("the receiver answered {status}")))
        }
    }

    /// What the attempt came to: delivered, to be retried, or dead once retries ran out.
    fn outcome(&self, d: &Delivery, sent: Result<i64, Failure>, now: i64) -> Attempt {
        match sent {
            Ok(status) => Attempt::Delivered { status },
            Err((status, error)) if now - d.created_at_ms >= self.cfg.give_up_ms => {
                Attempt::Dead { status, error }
            }
            Err((status, error)) => Attempt::Failed {
                status,
                error,
                retry_at_ms: now
                    + retry_delay_ms(self.cfg.retry_base_ms, d.attempts).min(i64::MAX as u64)
                        as i64,
            },
        }
    }

    /// Sends what is due; how many deliveries were attempted.
    async fn once(&self) -> projections::StoreResult<usize> {
        let due = self
            .store
            .claim_deliveries(BATCH, now_ms(), LEASE_MS)
            .await?;
        let attempts = due.iter().map(|(d, f)| async move {
            let sent = self.send(d, f).await;
            let attempt = self.outcome(d, sent, now_ms());
            match &attempt {
                Attempt::Delivered { .. } => {
                    metrics::counter!("tally_webhook_deliveries_total", "outcome" => "delivered")
                        .increment(1)
                }
                Attempt::Failed { error, .. } => {
                    metrics::counter!("tally_webhook_deliveries_total", "outcome" => "failed")
                        .increment(1);
                    tracing::info!(delivery = %d.delivery_id, %error, "webhook attempt failed; retrying later");
                }
                Attempt::Dead { error, .. } => {
                    metrics::counter!("tally_webhook_deliveries_total", "outcome" => "dead")
                        .increment(1);
                    tracing::warn!(delivery = %d.delivery_id, %error, "webhook delivery given up");
                }
            }
            self.store
                .record_attempt(&d.delivery_id, &attempt, now_ms())
                .await
        });
        for r in futures::future::join_all(attempts).await {
            r?;
        }
        Ok(due.len())
    }
}

/// Runs the notifier until `stop` fires.
pub fn spawn_notifier(
    store: Arc<dyn AlertStore>,
    metadata: Arc<dyn MetadataReader>,
    registry: Arc<Registry>,
    cfg: NotifierConfig,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let n = Notifier {
        store,
        metadata,
        registry,
        cfg,
    };
    tokio::spawn(async move {
        loop {
            let pause = match n.once().await {
                Ok(k) if k == BATCH => Duration::ZERO,
                Ok(_) => Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(error = %e, "webhook notifier failed; retrying");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(signed_message(17, "{}"), b"17.{}".to_vec());
    }

    #[test]
    fn retries_back_off_exponentially_up_to_an_hour() {
        assert_eq!(retry_delay_ms(30_000, 0), 30_000);
        assert_eq!(retry_delay_ms(30_000, 1), 60_000);
        assert_eq!(retry_delay_ms(30_000, 3), 240_000);
        assert_eq!(retry_delay_ms(30_000, 10), 3_600_000);
        assert_eq!(retry_delay_ms(30_000, 1_000), 3_600_000);
    }
}
