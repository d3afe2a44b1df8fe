//! The `tokio-nsq` crate, an NSQ client we did not write, against rsqd.

use std::collections::HashSet;
use std::time::Duration;

use tokio::time::timeout;
use tokio_nsq::{
    NSQChannel, NSQConsumerConfig, NSQConsumerConfigSources, NSQEvent, NSQProducerConfig,
    NSQRequeueDelay, NSQTopic,
};

use crate::harness::{Daemon, channel_stats};

const LIMIT: Duration = Duration::from_secs(20);

async fn producer(d: &Daemon) -> tokio_nsq::NSQProducer {
    let mut p = NSQProducerConfig::new(d.tcp.to_string()).build();
    match timeout(LIMIT, p.consume()).await {
        Ok(Some(NSQEvent::Healthy())) => p,
        other => panic!("producer did not connect: {other:?}"),
    }
}

async fn expect_ack(p: &mut tokio_nsq::NSQProducer) {
    match timeout(LIMIT, p.consume()).await {
        Ok(Some(NSQEvent::Ok())) => {}
        other => panic!("expected OK, got {other:?}"),
    }
}

fn consumer(d: &Daemon, topic: &str, channel: &str) -> tokio_nsq::NSQConsumer {
    NSQConsumerConfig::new(
        NSQTopic::new(topic).unwrap(),
        NSQChannel::new(channel).unwrap(),
    )
    .set_max_in_flight(20)
    .set_sources(NSQConsumerConfigSources::Daemons(vec![d.tcp.to_string()]))
    .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_nsq_publishes_and_consumes() {
    let d = Daemon::start(&[]);
    let topic = NSQTopic::new("tn").unwrap();
    let mut p = producer(&d).await;
    let mut c = consumer(&d, "tn", "c");
    for i in 0..20 {
        p.publish(&topic, format!("pub{i}").into_bytes())
            .await
            .unwrap();
        expect_ack(&mut p).await;
    }
    p.publish_multiple(
        &topic,
        (0..20).map(|i| format!("mpub{i}").into_bytes()).collect(),
    )
    .await
    .unwrap();
    expect_ack(&mut p).await;
    p.publish_deferred(&topic, b"dpub".to_vec(), 200)
        .await
        .unwrap();
    expect_ack(&mut p).await;

    let mut seen = HashSet::new();
    let mut requeued = false;
    while seen.len() < 41 {
        let msg = timeout(LIMIT, c.consume_filtered())
            .await
            .expect("consumer timed out")
            .expect("consumer closed");
        let body = String::from_utf8(msg.body.clone()).unwrap();
        if body == "pub0" && !requeued {
            // Exercise REQ through the third-party client once.
            requeued = true;
            msg.requeue(NSQRequeueDelay::NoDelay).await;
            continue;
        }
        if body == "pub0" {
            assert_eq!(msg.attempt, 2);
        }
        msg.touch().await;
        seen.insert(body);
        msg.finish().await;
    }
    assert!(seen.contains("dpub") && seen.contains("mpub19") && seen.contains("pub19"));
    let d2 = &d;
    tokio::task::spawn_blocking({
        let http = d2.http;
        move || {
            let deadline = std::time::Instant::now() + LIMIT;
            loop {
                let (_, body) =
                    crate::harness::http(http, "GET", "/stats?format=json", b"").unwrap();
                let s: serde_json::Value = serde_json::from_str(&body).unwrap();
                if channel_stats(&s, "tn", "c")
                    .is_some_and(|c| c["in_flight_count"] == 0 && c["requeue_count"] == 1)
                {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "{s:#}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    })
    .await
    .unwrap();
}
