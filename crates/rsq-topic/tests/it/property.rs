//! Property: over random sequences of puts, channel adds and removes,
//! pauses and unpauses (with a memory queue small enough to overflow), no
//! message is lost or duplicated. Each message reaches, exactly once, every
//! channel present when the pump took it; messages put while there was no
//! channel, while paused or before start wait and reach the channels present
//! when the pump resumes.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::Duration;

use proptest::prelude::*;

use crate::support::{deferred, id, msg, settle, topic};

#[derive(Debug, Clone)]
enum Op {
    Put,
    PutDeferred,
    PutMany(u8),
    Add(u8),
    Remove(u8),
    Pause,
    Unpause,
    Start,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Put),
        1 => Just(Op::PutDeferred),
        2 => (0u8..6).prop_map(Op::PutMany),
        2 => (0u8..4).prop_map(Op::Add),
        1 => (0u8..4).prop_map(Op::Remove),
        1 => Just(Op::Pause),
        1 => Just(Op::Unpause),
        1 => Just(Op::Start),
    ]
}

/// What the topic should have done, stepped after every operation once the
/// pump has run to idle.
#[derive(Default)]
struct Model {
    started: bool,
    paused: bool,
    /// Channel name → serial of the instance present under that name.
    present: BTreeMap<u8, usize>,
    /// Messages waiting at the topic.
    pending: Vec<u32>,
    /// Channel serial → messages it must have received.
    expected: HashMap<usize, Vec<u32>>,
}

impl Model {
    fn settle(&mut self) {
        if self.started && !self.paused && !self.present.is_empty() {
            for serial in self.present.values() {
                self.expected
                    .entry(*serial)
                    .or_default()
                    .extend(&self.pending);
            }
            self.pending.clear();
        }
    }
}

async fn run(mem_queue_size: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let (topic, _backend, recorder) = topic(mem_queue_size);
    let mut model = Model::default();
    let mut next = 0u32;
    let delay = Duration::from_secs(2);
    for op in ops.into_iter().chain([Op::Start, Op::Unpause, Op::Add(9)]) {
        match op {
            Op::Put => {
                topic.put(msg(next)).await.unwrap();
                model.pending.push(next);
                next += 1;
            }
            Op::PutDeferred => {
                topic.put(deferred(next, delay)).await.unwrap();
                model.pending.push(next);
                next += 1;
            }
            Op::PutMany(n) => {
                let batch: Vec<u32> = (next..next + u32::from(n)).collect();
                topic
                    .put_many(batch.iter().map(|&n| msg(n)).collect())
                    .await
                    .unwrap();
                model.pending.extend(&batch);
                next += u32::from(n);
            }
            Op::Add(c) => {
                let (ch, created) = topic.get_or_create_channel(&format!("c{c}")).await.unwrap();
                prop_assert_eq!(created, !model.present.contains_key(&c));
                model.present.insert(c, ch.serial);
            }
            Op::Remove(c) => {
                let removed = topic.delete_channel(&format!("c{c}")).await;
                prop_assert_eq!(removed.is_ok(), model.present.remove(&c).is_some());
            }
            Op::Pause => {
                topic.pause();
                model.paused = true;
            }
            Op::Unpause => {
                topic.unpause();
                model.paused = false;
            }
            Op::Start => {
                topic.start();
                model.started = true;
            }
        }
        settle().await;
        model.settle();
        prop_assert_eq!(topic.stats().depth, model.pending.len() as u64);
    }
    prop_assert!(model.pending.is_empty());

    for ch in recorder.created.lock().unwrap().iter() {
        let mut got: Vec<_> = ch.deliveries();
        for d in &got {
            // A deferred message keeps its delay unless it went through the
            // backend, where (as in nsqd) the delay is lost.
            if let Some(d_delay) = d.deferred {
                prop_assert_eq!(d_delay, delay);
                prop_assert_eq!(d.msg.deferred, Some(delay));
            }
            prop_assert_eq!(d.msg.body.len(), 100);
        }
        got.sort_by_key(|d| d.msg.id);
        let got: Vec<_> = got.into_iter().map(|d| d.msg.id).collect();
        let mut want: Vec<_> = model
            .expected
            .get(&ch.serial)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(id)
            .collect();
        want.sort();
        prop_assert_eq!(got, want, "channel {} (#{})", &ch.name, ch.serial);
        prop_assert_eq!(ch.puts_after_delete.load(Ordering::SeqCst), 0);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn no_message_is_lost_or_duplicated(
        mem_queue_size in 0usize..5,
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(run(mem_queue_size, ops))?;
    }
}
