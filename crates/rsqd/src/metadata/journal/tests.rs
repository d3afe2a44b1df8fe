//! The journal: replayed changes give the latest state, torn tails are
//! dropped and a journal for another `nsqd.dat` is ignored.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn arb_change() -> impl Strategy<Value = Change> {
    let name = "[a-d]{1,2}";
    prop_oneof![
        (
            name,
            any::<bool>(),
            proptest::collection::btree_map(name, any::<bool>(), 0..4)
        )
            .prop_map(|(name, paused, channels)| Change::Topic {
                name,
                paused,
                channels: channels
                    .into_iter()
                    .map(|(name, paused)| ChannelMetadata {
                        name,
                        paused,
                        max_attempts: None,
                    })
                    .collect(),
            }),
        name.prop_map(|name| Change::DeleteTopic { name }),
    ]
}

proptest! {
    /// Replaying changes through the journal's bytes gives what applying
    /// them to a map gives, in name order.
    #[test]
    fn replay_gives_the_latest_state(changes in proptest::collection::vec(arb_change(), 0..30)) {
        let mut bytes = b"{\"base_crc32\":7}\n".to_vec();
        for change in &changes {
            bytes.extend(serde_json::to_vec(change).unwrap());
            bytes.push(b'\n');
        }
        let Replay::Changes(read) = parse(&bytes, 7) else {
            panic!("journal not read back");
        };
        prop_assert_eq!(&read, &changes);
        let mut model = BTreeMap::new();
        let mut meta = Metadata::default();
        for change in &read {
            apply(&mut meta, change);
            match change {
                Change::Topic { name, paused, channels } => {
                    model.insert(name.clone(), (*paused, channels.clone()));
                }
                Change::DeleteTopic { name } => {
                    model.remove(name);
                }
            }
        }
        let got: Vec<_> = meta
            .topics
            .into_iter()
            .map(|t| (t.name, (t.paused, t.channels)))
            .collect();
        prop_assert_eq!(got, model.into_iter().collect::<Vec<_>>());
    }
}

#[test]
fn a_torn_tail_is_dropped_and_a_foreign_base_ignored() {
    let change = Change::DeleteTopic { name: "t".into() };
    let line = serde_json::to_vec(&change).unwrap();
    let mut bytes = b"{\"base_crc32\":7}\n".to_vec();
    bytes.extend(&line);
    bytes.push(b'\n');
    bytes.extend(&line[..5]);
    assert_eq!(parse(&bytes, 7), Replay::Changes(vec![change]));
    assert_eq!(parse(&bytes, 8), Replay::None, "another nsqd.dat");
    assert_eq!(parse(b"{\"base_cr", 7), Replay::None, "torn header");
    assert_eq!(parse(b"", 7), Replay::None);
    let mut corrupt = b"{\"base_crc32\":7}\nnot json\n".to_vec();
    corrupt.extend(&line);
    corrupt.push(b'\n');
    assert!(matches!(parse(&corrupt, 7), Replay::Corrupt(why) if why.starts_with("line 2")));
}
