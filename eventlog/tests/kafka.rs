//! The Kafka backend against the same conformance suite, on the broker that
//! `deploy/local/services.sh` starts (`TALLY_TEST_KAFKA=host:port`).
#![cfg(feature = "kafka")]

use async_trait::async_trait;
use eventlog::conformance::{run_all, service_url, unique_prefix, Harness};
use eventlog::{EventLog, KafkaConfig, KafkaLog, LogError, OutRecord, Producer};
use std::sync::Arc;
use std::time::Duration;

struct Kafka {
    brokers: String,
    prefix: String,
}

#[async_trait]
impl Harness for Kafka {
    async fn open(&self) -> Arc<dyn EventLog> {
        Arc::new(
            KafkaLog::connect(KafkaConfig::new(&self.brokers))
                .await
                .expect("connect to kafka"),
        )
    }
    fn topic(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_log_passes_conformance() {
    let Some(brokers) = service_url("TALLY_TEST_KAFKA") else {
        return;
    };
    let h = Kafka {
        brokers,
        prefix: unique_prefix(),
    };
    run_all(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_is_unavailable_not_success() {
    // Nothing listens on port 1: connecting must fail as `Unavailable`, and so must an append.
    let mut cfg = KafkaConfig::new("127.0.0.1:1");
    cfg.message_timeout = Duration::from_millis(500);
    match KafkaLog::connect(cfg).await {
        Err(LogError::Unavailable(_)) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(log) => {
            let r = log
                .append(
                    "t",
                    vec![OutRecord {
                        key: b"k".to_vec(),
                        value: b"v".to_vec(),
                    }],
                )
                .await;
            assert!(matches!(r, Err(LogError::Unavailable(_))), "{r:?}");
        }
    }
}
