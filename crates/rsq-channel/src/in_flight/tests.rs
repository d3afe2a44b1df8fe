//! The deadline lanes against a sorted model.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    /// Put id in flight with a timeout of this many ms.
    Insert(u8, u16),
    Remove(u8),
    Reschedule(u8, u16),
    /// Advance the clock by this many ms and expire what is due.
    Expire(u16),
}

fn op() -> impl Strategy<Value = Op> {
    // Few distinct timeouts on most steps (the lanes' case), any on
    // some (the overflow heap's).
    let timeout = prop_oneof![
        3 => prop::sample::select(vec![100u16, 250, 1000]),
        1 => any::<u16>(),
    ];
    prop_oneof![
        4 => (0u8..64, timeout.clone()).prop_map(|(i, t)| Op::Insert(i, t)),
        2 => (0u8..64).prop_map(Op::Remove),
        1 => (0u8..64, timeout).prop_map(|(i, t)| Op::Reschedule(i, t)),
        1 => (0u16..600).prop_map(Op::Expire),
    ]
}

proptest! {
    /// Against a model that keeps each id's deadline: the same ids
    /// expire, at the same instants, in deadline order.
    #[test]
    fn timers_match_a_sorted_model(ops in prop::collection::vec(op(), 1..400)) {
        let start = Instant::now();
        let mut now = start;
        let mut table = InFlight::default();
        let mut model: BTreeMap<u8, Instant> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Insert(i, ms) => {
                    if model.contains_key(&i) {
                        continue;
                    }
                    let deadline = now + Duration::from_millis(ms.into());
                    let msg = Message::new(MessageId::from_u64(i.into()), 0, Bytes::new());
                    assert!(table.insert(msg, 1, now, deadline).is_ok(), "fresh id");
                    model.insert(i, deadline);
                }
                Op::Remove(i) => {
                    let got = table.remove_held(1, &MessageId::from_u64(i.into())).is_ok();
                    prop_assert_eq!(got, model.remove(&i).is_some());
                }
                Op::Reschedule(i, ms) => {
                    let deadline = now + Duration::from_millis(ms.into());
                    table.reschedule(&MessageId::from_u64(i.into()), deadline);
                    if let Some(d) = model.get_mut(&i) {
                        *d = deadline;
                    }
                }
                Op::Expire(ms) => {
                    now += Duration::from_millis(ms.into());
                    let mut last = start;
                    while let Some(e) = table.pop_expired(now) {
                        prop_assert!(e.deadline >= last, "expired out of order");
                        last = e.deadline;
                        let i = e.msg.id.to_u64().and_then(|v| u8::try_from(v).ok());
                        let i = i.expect("test ids are small");
                        prop_assert_eq!(model.remove(&i), Some(e.deadline));
                    }
                    prop_assert!(model.values().all(|&d| d > now), "a due timer was missed");
                }
            }
            table.check_timers();
            prop_assert_eq!(table.len(), model.len());
            prop_assert_eq!(table.next_deadline(), model.values().min().copied());
            prop_assert!(table.timer_count() <= 2 * table.len() + STALE_SLACK + 1);
        }
    }
}
