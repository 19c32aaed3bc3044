//! An undecodable record goes to the dead-letter topic with its bytes and a reason, and never
//! stops the consumer: the records around it are processed and the offset moves past it.

use eventlog::conformance::drain;
use eventlog::{EmbeddedLog, EventLog, OutRecord, Producer};
use processors::runner::RunnerConfig;
use processors::{run_stage, EnrichStage};
use schemas::{CollectedEvent, DeadLetter, EnrichedEvent};
use std::sync::Arc;
use std::time::Duration;

fn raw(i: u32) -> OutRecord {
    let e = CollectedEvent {
        event_id: format!("e{i}"),
        website_id: "w".into(),
        event_type: "pageview".into(),
        url: format!("https://example.com/p{i}?utm_source=x"),
        visitor_id: "v".into(),
        user_agent: Some(
            "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0".into(),
        ),
        ..Default::default()
    };
    OutRecord {
        key: b"w:v".to_vec(),
        value: schemas::encode(&e).expect("encode"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_records_go_to_the_dead_letter_topic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(EmbeddedLog::open(dir.path()).expect("open"));
    for t in ["raw", "enriched", "dlq"] {
        log.create_topic(t, 1).await.expect("topic");
    }
    let garbage = OutRecord {
        key: b"w:v".to_vec(),
        value: vec![0, 0, 0, 0, 2, 0xff, 0xff, 0xff],
    };
    log.append("raw", vec![raw(1), garbage.clone(), raw(2)])
        .await
        .expect("append");

    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let stage = EnrichStage::new(log.clone(), "raw".into(), "enriched".into());
    let cfg = RunnerConfig {
        max_batch: 100,
        poll_timeout: Duration::from_millis(50),
        linger: Duration::ZERO,
        dlq_topic: "dlq".into(),
        group: "enrich".into(),
        sole_member: false,
    };
    let task = tokio::spawn(run_stage(log.clone(), stage, cfg, stop_rx));

    let mut out = log
        .consumer("check", &["enriched".to_string()])
        .await
        .expect("consumer");
    let enriched = drain(out.as_mut(), 2).await;
    let pages: Vec<String> = enriched
        .iter()
        .map(|r| {
            schemas::decode::<EnrichedEvent>(&r.value)
                .expect("decode")
                .page
        })
        .collect();
    assert_eq!(pages, vec!["/p1", "/p2"]);
    let e = schemas::decode::<EnrichedEvent>(&enriched[0].value).expect("decode");
    assert_eq!(
        (e.browser.as_deref(), e.utm_source.as_deref()),
        (Some("Firefox"), Some("x"))
    );

    let mut dlq = log
        .consumer("check", &["dlq".to_string()])
        .await
        .expect("consumer");
    let letters = drain(dlq.as_mut(), 1).await;
    let letter = schemas::decode::<DeadLetter>(&letters[0].value).expect("dead letter");
    assert_eq!(
        (
            letter.topic.as_str(),
            letter.offset,
            letter.consumer.as_str()
        ),
        ("raw", 1, "enrich")
    );
    assert_eq!(letter.value, garbage.value);
    assert!(!letter.reason.is_empty());

    stop.send(true).expect("stop");
    task.await.expect("join").expect("stage");
    let committed = log.committed("enrich", "raw").await.expect("committed");
    assert_eq!(
        committed[0].next_offset, 3,
        "the consumer moved past the bad record"
    );
}
