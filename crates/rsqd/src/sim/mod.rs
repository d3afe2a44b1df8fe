//! A seeded simulation of the whole daemon: one seed, one run.
//!
//! The real `Nsqd` (registry, topics with their pumps, channels with their
//! drivers, disk queues with group commit and the eager metadata writer,
//! the id floor, `nsqd.dat`) runs on a current-thread tokio runtime with
//! paused time, in a [`World`] whose every seam the simulation owns:
//!
//! - **clock**: `SimClock` (`clock.rs`), tokio's paused instant for deadlines
//!   and a wall clock that starts at a fixed epoch and, across restarts,
//!   moves by seeded steps (sometimes backwards, as a stepped clock does);
//! - **storage**: one `MemStorage` that outlives each life; a crash keeps
//!   a seeded cut of each file's unsynced bytes (`crashed_copy`), a fault
//!   fails the next fsyncs (`fail_next_syncs`), another flips a bit of a
//!   segment file;
//! - **blocking pool**: `Offload::Inline`, so no thread but the runtime's
//!   runs daemon code;
//! - **randomness**: one `StdRng` seeded from the run's seed draws the
//!   workload and the faults; the daemon draws none on these paths;
//! - **connections**: none: the clients call `Nsqd` and the channel as the
//!   TCP session does (`publish`, `finish`, `requeue`, `touch`, a
//!   `Consumer` stream), without the V2 machine and sockets.
//!
//! After every step the model (`model.rs`) checks what was delivered and
//! what the daemon holds; at the end a last life drains the channel and
//! nothing acknowledged may be missing. Every event goes into a trace whose
//! hash the run reports (`trace <seed> <hash>`); a failure carries the
//! trace's tail and the command that replays it.

mod clock;
mod model;
#[cfg(test)]
mod tests;
mod trace;

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rsq_channel::Clock;
use rsq_diskqueue::{MemStorage, Offload};

use crate::options::Options;
use crate::world::World;
use crate::{ChannelHandle, DaemonTopic, Nsqd};
use clock::SimClock;
use model::Model;
use trace::Trace;

/// Steps of one run (across all its lives).
pub const STEPS_PER_RUN: usize = 80;
/// How long a barrier lets the daemon run: several of the eager metadata
/// writer's 10 ms gaps, so every commit asked for before it is written.
const BARRIER: Duration = Duration::from_millis(50);
/// How long a consumer waits for one more message before it stops asking.
const RECV_WAIT: Duration = Duration::from_millis(5);
/// A DPUB's delay is below this.
const DEFER_MAX_MS: u64 = 2_000;
/// How long the drain at the end waits for one more message: past every
/// deferral and timeout.
const DRAIN_WAIT: Duration = Duration::from_secs(5);
/// The wall clock of the first life, in Unix nanoseconds.
const EPOCH_UNIX_NANOS: i64 = 1_767_225_600_000_000_000;

/// Which faults a run may inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Faults {
    /// Power loss and restart, unsynced bytes cut at a seeded point.
    pub crash: bool,
    /// fsyncs that fail (the publish must not be acknowledged).
    pub fsync: bool,
    /// A flipped bit in a segment file at a crash (it must be quarantined,
    /// never delivered).
    pub bitflip: bool,
}

impl Faults {
    /// Every fault.
    pub const ALL: Faults = Faults {
        crash: true,
        fsync: true,
        bitflip: true,
    };

    /// Parses a comma-separated list of `crash`, `fsync`, `bitflip`, or
    /// `all` or `none`.
    pub fn parse(list: &str) -> Result<Faults, String> {
        let mut faults = Faults {
            crash: false,
            fsync: false,
            bitflip: false,
        };
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "all" => faults = Faults::ALL,
                "none" => {}
                "crash" => faults.crash = true,
                "fsync" => faults.fsync = true,
                "bitflip" => faults.bitflip = true,
                other => return Err(format!("unknown fault {other:?} (crash, fsync, bitflip)")),
            }
        }
        Ok(faults)
    }

    /// The list form `parse` reads back.
    pub fn list(&self) -> String {
        let names: Vec<&str> = [
            (self.crash, "crash"),
            (self.fsync, "fsync"),
            (self.bitflip, "bitflip"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(",")
        }
    }
}

/// What one run did.
#[derive(Debug)]
pub struct Outcome {
    /// The run's seed.
    pub seed: u64,
    /// The hash of its trace.
    pub hash: u64,
    /// How many events the trace holds.
    pub events: u64,
    /// How many daemon lives it took (one more than its crashes, plus the
    /// drain).
    pub lives: u32,
    /// The broken invariant, with the trace's tail, if one broke.
    pub failure: Option<String>,
    /// The trace's last events, one a line.
    pub tail: String,
}

impl Outcome {
    /// The line every run prints: `trace <seed> <hash>`.
    pub fn trace_line(&self) -> String {
        format!("trace {} {:016x}", self.seed, self.hash)
    }
}

/// The command that replays a seed.
pub fn replay_command(seed: u64, faults: Faults) -> String {
    if faults == Faults::ALL {
        format!("cargo xtask sim --seed {seed}")
    } else {
        format!("cargo xtask sim --seed {seed} --faults {}", faults.list())
    }
}

/// Runs seed `seed` with `faults`: every life on its own paused
/// current-thread runtime, the disk carried over.
pub fn run(seed: u64, faults: Faults) -> Outcome {
    run_showing(seed, faults, trace::TAIL_MAX)
}

/// [`run`], a failure showing the trace's last `tail` events.
pub fn run_showing(seed: u64, faults: Faults, tail: usize) -> Outcome {
    let mut sim = Sim {
        rng: StdRng::seed_from_u64(seed),
        faults,
        trace: Trace::new(tail),
        inbox: std::collections::VecDeque::new(),
        model: Model::default(),
        disk: Arc::new(MemStorage::new()),
        unix_nanos: EPOCH_UNIX_NANOS,
        steps_left: STEPS_PER_RUN,
        lives: 0,
        msg_timeout: Duration::ZERO,
    };
    sim.msg_timeout = Duration::from_millis(sim.rng.gen_range(200..3_000));
    let failure = sim.run().err().map(|why| {
        format!(
            "seed {seed}: {why}\n{}replay: {}",
            sim.trace.tail(),
            replay_command(seed, faults)
        )
    });
    Outcome {
        seed,
        hash: sim.trace.hash(),
        events: sim.trace.len(),
        lives: sim.lives,
        failure,
        tail: sim.trace.tail(),
    }
}

/// One step of the workload or a fault.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// `count` PUBs, each waiting for its answer.
    Pub { count: u64 },
    /// One MPUB of `count` bodies.
    Mpub { count: u64 },
    /// One DPUB.
    Dpub { delay_ms: u64 },
    /// Take up to `count` messages, settling each as the seed says.
    Consume { count: u64 },
    /// Virtual time passes: deadlines and deferrals come due.
    Advance { ms: u64 },
    /// A barrier: long enough for every commit asked for to be written.
    Barrier,
    /// The next `count` fsyncs fail.
    FailSyncs { count: usize },
    /// Power loss, then a restart on what the disk kept.
    Crash,
}

/// How a consumer settles one message.
#[derive(Debug, Clone, Copy)]
enum Settle {
    Fin,
    Req {
        delay_ms: u64,
    },
    TouchFin,
    /// Keeps it until its deadline passes.
    Hold,
}

/// How a life ended.
enum LifeEnd {
    Crashed,
    Stopped,
}

/// One daemon's life: the daemon and the test's channel and consumer.
struct Life {
    nsqd: Arc<Nsqd>,
    topic: Arc<DaemonTopic>,
    channel: Arc<ChannelHandle>,
    consumer: rsq_channel::Consumer,
    clock: Arc<SimClock>,
}

struct Sim {
    rng: StdRng,
    /// What reached the client and it has not settled yet, oldest first:
    /// its socket buffer. A copy of a message that timed out while waiting
    /// here may sit beside its redelivery.
    inbox: std::collections::VecDeque<rsq_codec::Message>,
    faults: Faults,
    trace: Trace,
    model: Model,
    disk: Arc<MemStorage>,
    /// The wall clock the next life starts at.
    unix_nanos: i64,
    steps_left: usize,
    lives: u32,
    msg_timeout: Duration,
}

fn options() -> Options {
    // Small segments, so runs roll over, remove read files and recover
    // several per queue.
    Options::load_from([
        "rsqd",
        "--data-path=/simulated",
        "--durable",
        "--max-bytes-per-file=1024",
    ])
    .expect("the simulation's options parse")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime")
}

impl Sim {
    fn event(&mut self, text: String) {
        self.trace.event(text);
    }

    fn run(&mut self) -> Result<(), String> {
        self.event(format!(
            "start faults={} msg_timeout={:?}",
            self.faults.list(),
            self.msg_timeout
        ));
        loop {
            let rt = runtime();
            match rt.block_on(self.life())? {
                LifeEnd::Crashed => {}
                LifeEnd::Stopped => break,
            }
        }
        runtime().block_on(self.drain())
    }

    fn draw(&mut self) -> Step {
        let r = &mut self.rng;
        loop {
            let step = match r.gen_range(0..100) {
                0..20 => Step::Pub {
                    count: r.gen_range(1..6),
                },
                20..30 => Step::Mpub {
                    count: r.gen_range(2..20),
                },
                30..36 => Step::Dpub {
                    delay_ms: r.gen_range(0..DEFER_MAX_MS),
                },
                36..66 => Step::Consume {
                    count: r.gen_range(1..20),
                },
                66..76 => Step::Advance {
                    ms: r.gen_range(1..2_000),
                },
                76..88 => Step::Barrier,
                88..92 if self.faults.fsync => Step::FailSyncs {
                    count: r.gen_range(1..3),
                },
                92..100 if self.faults.crash => Step::Crash,
                _ => continue,
            };
            return step;
        }
    }

    async fn start(&mut self) -> Result<Life, String> {
        self.lives += 1;
        let clock = Arc::new(SimClock::new(self.unix_nanos));
        let world = World {
            clock: clock.clone(),
            storage: self.disk.clone(),
            offload: Offload::Inline,
        };
        let nsqd = Nsqd::in_world(options(), world).map_err(|e| format!("start: {e:#}"))?;
        nsqd.load_metadata()
            .await
            .map_err(|e| format!("load metadata: {e:#}"))?;
        let (topic, channel) = nsqd
            .get_or_create_channel("t", "c")
            .await
            .map_err(|e| format!("channel: {e}"))?;
        let consumer = channel
            .add_consumer(1, self.msg_timeout)
            .map_err(|e| format!("consumer: {e}"))?;
        channel.set_ready(1, 50);
        let files: Vec<String> = self
            .disk
            .names()
            .into_iter()
            .map(|name| {
                let len = self.disk.contents(&name).map_or(0, |c| c.len());
                format!("{name}:{len}")
            })
            .collect();
        self.event(format!(
            "life {} unix={} files {}",
            self.lives,
            self.unix_nanos,
            files.join(" ")
        ));
        Ok(Life {
            nsqd,
            topic,
            channel,
            consumer,
            clock,
        })
    }

    async fn life(&mut self) -> Result<LifeEnd, String> {
        let mut life = self.start().await?;
        while self.steps_left > 0 {
            self.steps_left -= 1;
            let step = self.draw();
            self.event(format!("step {step:?}"));
            match step {
                Step::Pub { count } => {
                    for _ in 0..count {
                        self.publish(&life, 1, None).await;
                    }
                }
                Step::Mpub { count } => self.publish(&life, count, None).await,
                Step::Dpub { delay_ms } => {
                    self.publish(&life, 1, Some(Duration::from_millis(delay_ms)))
                        .await;
                }
                Step::Consume { count } => self.consume(&mut life, count).await?,
                Step::Advance { ms } => tokio::time::sleep(Duration::from_millis(ms)).await,
                Step::Barrier => {
                    tokio::time::sleep(BARRIER).await;
                    self.check_holds(&life)?;
                    let idle = self.holds(&life) == 0;
                    self.model.barrier(idle);
                    self.event(format!("barrier idle={idle}"));
                }
                Step::FailSyncs { count } => {
                    self.disk.fail_next_syncs(count);
                    self.model.syncs_failing();
                }
                Step::Crash => {
                    self.crash(&life);
                    return Ok(LifeEnd::Crashed);
                }
            }
        }
        let Life {
            nsqd,
            consumer,
            clock,
            ..
        } = life;
        drop(consumer);
        self.inbox.clear();
        let failing = self.disk.failing_syncs_left();
        nsqd.shutdown().await;
        let synced_all = failing == 0;
        self.disk.fail_next_syncs(0);
        self.model.clean_stop(synced_all);
        self.model.life_ends();
        self.unix_nanos = clock.unix_nanos();
        self.event(format!("stopped synced_all={synced_all}"));
        Ok(LifeEnd::Stopped)
    }

    /// What the daemon holds for the channel: queued at the topic or the
    /// channel, in flight, deferred.
    fn holds(&self, life: &Life) -> u64 {
        let topic = life.topic.stats();
        let channel = life.channel.stats();
        topic.depth + channel.depth + channel.in_flight_count + channel.deferred_count
    }

    /// The depth check, at a barrier (where no message is between topic and
    /// channel): the daemon holds at least every acknowledged message not
    /// finished, and exactly those when the model knows them all.
    fn check_holds(&mut self, life: &Life) -> Result<(), String> {
        self.note_quarantined();
        let holds = self.holds(life);
        let must = self.model.must_hold() as u64;
        if holds < must {
            let (t, c) = (life.topic.stats(), life.channel.stats());
            return Err(format!(
                "the daemon holds {holds} messages, but {must} acknowledged ones are not finished \
                 (topic depth {} backend {}, channel depth {} backend {} in flight {} deferred {})",
                t.depth,
                t.backend_depth,
                c.depth,
                c.backend_depth,
                c.in_flight_count,
                c.deferred_count
            ));
        }
        if self.model.exact() && holds != must {
            return Err(format!(
                "the daemon holds {holds} messages; the model, which knows them all, {must}"
            ));
        }
        Ok(())
    }

    async fn publish(&mut self, life: &Life, count: u64, defer: Option<Duration>) {
        let first = self.model.next;
        self.model.next += count;
        let bodies: Vec<bytes::Bytes> = (first..first + count)
            .map(|n| bytes::Bytes::copy_from_slice(&model::body(n)))
            .collect();
        let result = async {
            let mut msgs = life.nsqd.new_messages(bodies).await?;
            msgs.iter_mut().for_each(|m| m.deferred = defer);
            life.nsqd.publish("t", msgs).await
        }
        .await;
        let range = first..first + count;
        match result {
            Ok(()) => self.model.acked.extend(range),
            Err(ref e) => {
                self.model.failed.extend(range);
                self.event(format!("publish {first}+{count} failed: {e}"));
                return;
            }
        }
        self.event(format!("publish {first}+{count} ok"));
    }

    /// Takes everything delivered so far into the inbox, checking each
    /// arrival against the model.
    fn receive(&mut self, life: &mut Life) -> Result<(), String> {
        while let Some(msg) = life.consumer.try_recv() {
            self.arrive(msg)?;
        }
        Ok(())
    }

    /// One delivery: checked against the model, traced, kept for settling.
    fn arrive(&mut self, msg: rsq_codec::Message) -> Result<(), String> {
        let n = self.model.delivered(&msg.body)?;
        self.event(format!(
            "deliver {n} id={} attempts={}",
            String::from_utf8_lossy(msg.id.as_bytes()),
            msg.attempts
        ));
        self.inbox.push_back(msg);
        Ok(())
    }

    /// Settles up to `count` messages, waiting a little for more when the
    /// inbox runs dry. No other task runs between taking the inbox and
    /// settling from it, and what each settle delivers inline is taken
    /// before the next, so a copy that arrives after a FIN is a real
    /// redelivery.
    async fn consume(&mut self, life: &mut Life, count: u64) -> Result<(), String> {
        let mut left = count;
        while left > 0 {
            self.receive(life)?;
            if self.inbox.is_empty() {
                match tokio::time::timeout(RECV_WAIT, life.consumer.recv()).await {
                    Ok(Some(msg)) => {
                        self.arrive(msg)?;
                        continue;
                    }
                    _ => break,
                }
            }
            while left > 0
                && let Some(msg) = self.inbox.pop_front()
            {
                left -= 1;
                self.settle(life, &msg);
                // A FIN or REQ runs the channel's delivery inline (a due
                // deadline may redeliver a message right here): take what
                // it delivered before the next settle.
                self.receive(life)?;
            }
        }
        Ok(())
    }

    /// Settles one message from the inbox as the seed says.
    fn settle(&mut self, life: &Life, msg: &rsq_codec::Message) {
        let Some(n) = model::body_number(&msg.body) else {
            return;
        };
        let settle = match self.rng.gen_range(0..100) {
            0..65 => Settle::Fin,
            65..80 => Settle::Req {
                delay_ms: self.rng.gen_range(0..800),
            },
            80..90 => Settle::TouchFin,
            _ => Settle::Hold,
        };
        self.event(format!("settle {n} attempts={} {settle:?}", msg.attempts));
        let fin = match settle {
            Settle::Fin => true,
            Settle::TouchFin => {
                if let Err(e) = life.channel.touch(1, &msg.id) {
                    self.event(format!("touch {n}: {e}"));
                }
                true
            }
            Settle::Req { delay_ms } => {
                let delay = Duration::from_millis(delay_ms);
                if let Err(e) = life.channel.requeue(1, &msg.id, delay) {
                    self.event(format!("req {n}: {e}"));
                }
                false
            }
            Settle::Hold => false,
        };
        if fin {
            match life.channel.finish(1, &msg.id) {
                Ok(()) => self.model.finished(n),
                // Its deadline passed while it waited in the inbox (a
                // redelivered copy may be right behind it), or it is a
                // stale copy of one already finished.
                Err(e) => self.event(format!("fin {n}: {e}")),
            }
        }
    }

    /// Power loss: the disk keeps each file's synced bytes and a seeded cut
    /// of the rest, and perhaps one flipped bit in a segment's synced part.
    fn crash(&mut self, life: &Life) {
        let cuts: u64 = self.rng.r#gen();
        // Each file keeps its synced bytes and a seeded share of the rest.
        let crashed = self.disk.crashed_copy(|name, synced, len| {
            let draw = cuts ^ u64::from(crc32fast::hash(name.as_bytes()));
            synced + (draw % (len - synced + 1) as u64) as usize
        });
        self.event(format!("crash cuts={cuts:016x}"));
        if self.faults.bitflip && self.rng.gen_range(0..4) == 0 {
            let segments: Vec<String> = crashed
                .names()
                .into_iter()
                .filter(|n| is_segment(n))
                .collect();
            if !segments.is_empty() {
                let name = segments[self.rng.gen_range(0..segments.len())].clone();
                let mut data = crashed.contents(&name).unwrap_or_default();
                if !data.is_empty() {
                    let bit = self.rng.gen_range(0..data.len() * 8);
                    // Recovery moves a damaged segment aside whole: every
                    // message in it may be lost (and must not be delivered
                    // damaged).
                    let before = self.model.may_lose.len();
                    self.model.may_lose.extend(
                        data.windows(model::BODY_BYTES)
                            .filter_map(model::body_number),
                    );
                    let at_risk = self.model.may_lose.len() - before;
                    data[bit / 8] ^= 1 << (bit % 8);
                    crashed.set_contents(&name, data);
                    self.event(format!(
                        "flip {name} bit {bit} ({at_risk} more bodies at risk)"
                    ));
                }
            }
        }
        self.disk = Arc::new(crashed);
        self.inbox.clear();
        self.model.crash();
        self.model.life_ends();
        let jump_ms: i64 = self.rng.gen_range(-5..1_000);
        self.unix_nanos = life.clock.unix_nanos() + jump_ms * 1_000_000;
    }

    /// Bodies in segments moved aside as `.bad` may be lost: a reader that
    /// meets a damaged record skips the rest of its segment (as
    /// go-diskqueue does), records appended after the damage included.
    fn note_quarantined(&mut self) {
        for name in self.disk.names() {
            if name.ends_with(".bad")
                && let Some(data) = self.disk.contents(&name)
            {
                self.model.may_lose.extend(
                    data.windows(model::BODY_BYTES)
                        .filter_map(model::body_number),
                );
            }
        }
    }

    /// The last life: take and finish everything, then nothing
    /// acknowledged may be missing, and the daemon must hold nothing.
    async fn drain(&mut self) -> Result<(), String> {
        self.event("drain".to_string());
        let mut life = self.start().await?;
        while let Ok(Some(msg)) = tokio::time::timeout(DRAIN_WAIT, life.consumer.recv()).await {
            let n = self.model.delivered(&msg.body)?;
            self.event(format!("drain {n} attempts={}", msg.attempts));
            self.model.drained.insert(n);
            if let Err(e) = life.channel.finish(1, &msg.id) {
                return Err(format!("drain: FIN of {n} refused: {e}"));
            }
            self.model.finished(n);
        }
        self.note_quarantined();
        let missing = self.model.missing();
        if !missing.is_empty() {
            return Err(format!("acknowledged, never finished, lost: {missing:?}"));
        }
        let holds = self.holds(&life);
        if holds != 0 {
            return Err(format!("drained, yet the daemon holds {holds} messages"));
        }
        let Life { nsqd, consumer, .. } = life;
        drop(consumer);
        nsqd.shutdown().await;
        self.event(format!("end lives={}", self.lives));
        Ok(())
    }
}

/// Whether a data-dir file is a disk queue's segment
/// (`<queue>.diskqueue.<6 digits>.dat`), not its metadata.
fn is_segment(name: &str) -> bool {
    name.strip_suffix(".dat")
        .and_then(|rest| rest.rsplit_once(".diskqueue."))
        .is_some_and(|(_, number)| !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()))
}
