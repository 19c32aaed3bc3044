//! The embedded log against the shared conformance suite, plus its own retention check.

use async_trait::async_trait;
use eventlog::conformance::{drain, run_all, Harness};
use eventlog::{EmbeddedLog, EventLog, OutRecord, Producer};
use std::sync::Arc;

struct Embedded {
    dir: tempfile::TempDir,
}

#[async_trait]
impl Harness for Embedded {
    async fn open(&self) -> Arc<dyn EventLog> {
        Arc::new(EmbeddedLog::open(self.dir.path()).expect("open log"))
    }
    fn topic(&self, name: &str) -> String {
        format!("test.{name}")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_log_passes_conformance() {
    let h = Embedded {
        dir: tempfile::tempdir().expect("tempdir"),
    };
    run_all(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_records_but_keeps_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = EmbeddedLog::open(dir.path()).expect("open");
    log.create_topic("t", 1).await.expect("topic");
    let rec = |i: u32| OutRecord {
        key: b"k".to_vec(),
        value: i.to_string().into_bytes(),
    };
    // Ten appends, one after another: ten batches (retention drops whole batches).
    for i in 0..10 {
        log.append("t", vec![rec(i)]).await.expect("append");
    }
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(
        log.delete_before("t", now_ms()).await.expect("retention"),
        9,
        "newest kept"
    );
    log.append("t", vec![rec(10)]).await.expect("append");
    log.close();
    drop(log);
    let log = EmbeddedLog::open(dir.path()).expect("reopen");
    let mut c = log
        .consumer("g", &["t".to_string()])
        .await
        .expect("consumer");
    let got = drain(c.as_mut(), 2).await;
    assert_eq!(
        got.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![9, 10]
    );
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
