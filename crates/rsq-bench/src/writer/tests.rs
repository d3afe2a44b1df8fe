//! The commands a writer sends: whole batches per topic in turn, and a
//! shorter last one so a bound that is not a whole number of batches is
//! met exactly.

use super::*;

fn cfg(topics: &[&str], batch: usize) -> WriterConfig {
    WriterConfig {
        topics: topics.iter().map(|t| t.to_string()).collect(),
        ..WriterConfig::new("", batch, 64)
    }
}

#[track_caller]
fn check(commands: &mut Commands, cfg: &WriterConfig, count: usize, verb: &[u8], topic: &str) {
    let bytes = commands.next(cfg, count).expect("prepared").to_vec();
    assert!(bytes.starts_with(verb), "{:?}", &bytes[..8]);
    let line_end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .expect("a command line");
    assert!(bytes[..line_end].ends_with(topic.as_bytes()));
    assert_eq!(stamp_offsets(&bytes).len(), count);
}

#[test]
fn topics_take_turns_and_a_short_batch_is_its_own_command() {
    let cfg = cfg(&["a", "b"], 200);
    let mut commands = Commands::new(&cfg).expect("valid");
    check(&mut commands, &cfg, 200, b"MPUB ", "a");
    check(&mut commands, &cfg, 200, b"MPUB ", "b");
    check(&mut commands, &cfg, 7, b"MPUB ", "a");
    check(&mut commands, &cfg, 1, b"PUB ", "b");
    check(&mut commands, &cfg, 200, b"MPUB ", "a");
}

#[test]
fn every_send_is_stamped_with_a_fresh_time() {
    let cfg = cfg(&["a"], 1);
    let mut commands = Commands::new(&cfg).expect("valid");
    let first = commands.next(&cfg, 1).expect("prepared").to_vec();
    std::thread::sleep(Duration::from_millis(2));
    let second = commands.next(&cfg, 1).expect("prepared").to_vec();
    assert_eq!(first.len(), second.len());
    assert_ne!(first, second, "the stamp was not rewritten");
}
