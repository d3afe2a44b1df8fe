//! Test support: a recording channel (a real `TopicSink` that keeps what
//! it is given), its factory, message builders and a log capture.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rsq_codec::{Message, MessageId};
use rsq_diskqueue::{BackendQueue, MemoryQueue};
use rsq_topic::{SinkError, SinkFactory, Topic, TopicConfig, TopicError, TopicSink};

/// One put the channel received.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub msg: Message,
    /// `Some(delay)` when it came through `put_deferred`.
    pub deferred: Option<Duration>,
}

/// A channel that records every call.
#[derive(Debug, Default)]
pub struct RecordingChannel {
    pub name: String,
    /// Creation order across the factory, so a re-created name is a new instance.
    pub serial: usize,
    deliveries: Mutex<Vec<Delivery>>,
    pub closed: AtomicBool,
    pub deleted: AtomicBool,
    pub puts_after_delete: AtomicUsize,
    pub failing: AtomicBool,
    /// Refuses puts as a channel whose disk is full does.
    pub full: AtomicBool,
}

impl RecordingChannel {
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }

    pub fn ids(&self) -> Vec<MessageId> {
        self.deliveries().into_iter().map(|d| d.msg.id).collect()
    }

    fn record(&self, msg: Message, deferred: Option<Duration>) -> Result<(), SinkError> {
        if self.deleted.load(Ordering::SeqCst) {
            self.puts_after_delete.fetch_add(1, Ordering::SeqCst);
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(SinkError::new("refusing on purpose"));
        }
        if self.full.load(Ordering::SeqCst) {
            return Err(SinkError::disk_full("disk full on purpose", vec![msg]));
        }
        self.deliveries
            .lock()
            .unwrap()
            .push(Delivery { msg, deferred });
        Ok(())
    }
}

#[async_trait]
impl TopicSink for RecordingChannel {
    async fn put(&self, msg: Message) -> Result<(), SinkError> {
        self.record(msg, None)
    }

    async fn put_deferred(&self, msg: Message, delay: Duration) -> Result<(), SinkError> {
        self.record(msg, Some(delay))
    }

    async fn close(&self) -> Result<(), SinkError> {
        self.closed.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn delete(&self) -> Result<(), SinkError> {
        self.deleted.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// Creates recording channels and remembers every one it made.
#[derive(Debug, Default)]
pub struct Recorder {
    pub created: Mutex<Vec<Arc<RecordingChannel>>>,
    /// Channel names the factory refuses.
    pub refuse: Mutex<Vec<String>>,
    /// When set, each creation first waits for a permit: a slow open.
    pub gate: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
}

#[async_trait::async_trait]
impl SinkFactory<RecordingChannel> for Recorder {
    async fn create(
        &self,
        _topic: &str,
        channel: &str,
    ) -> Result<Arc<RecordingChannel>, TopicError> {
        let gate = self.gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            gate.acquire().await.unwrap().forget();
        }
        if self.refuse.lock().unwrap().iter().any(|n| n == channel) {
            return Err(TopicError::ChannelCreate {
                channel: channel.to_owned(),
                source: SinkError::new("refused by test"),
            });
        }
        let mut created = self.created.lock().unwrap();
        let c = Arc::new(RecordingChannel {
            name: channel.to_owned(),
            serial: created.len(),
            ..RecordingChannel::default()
        });
        created.push(c.clone());
        Ok(c)
    }
}

pub type TestTopic = Arc<Topic<RecordingChannel>>;

/// A stopped topic over `backend`.
pub fn topic_over(
    name: &str,
    mem_queue_size: usize,
    backend: Arc<dyn BackendQueue>,
) -> (TestTopic, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let topic = Topic::new(
        name,
        TopicConfig {
            mem_queue_size,
            ..TopicConfig::default()
        },
        backend,
        recorder.clone(),
    );
    (topic, recorder)
}

/// A stopped topic over a fresh unbounded in-memory backend.
pub fn topic(mem_queue_size: usize) -> (TestTopic, Arc<MemoryQueue>, Arc<Recorder>) {
    let backend = Arc::new(MemoryQueue::unbounded());
    let (topic, recorder) = topic_over("t", mem_queue_size, backend.clone());
    (topic, backend, recorder)
}

pub fn id(n: u32) -> MessageId {
    let mut bytes = [b'0'; 16];
    bytes[8..].copy_from_slice(format!("{n:08x}").as_bytes());
    MessageId(bytes)
}

/// Message `n` with a 100-byte body.
pub fn msg(n: u32) -> Message {
    Message::new(id(n), i64::from(n) * 1000, Bytes::from(vec![n as u8; 100]))
}

pub fn deferred(n: u32, delay: Duration) -> Message {
    Message {
        deferred: Some(delay),
        ..msg(n)
    }
}

/// Lets every task run until all are waiting: with tokio's paused clock the
/// runtime advances time only once nothing else can run.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// Collects the messages of tracing events on the current thread.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<String>>>);

impl LogCapture {
    /// Installs the capture for the current thread until the guard drops.
    pub fn install() -> (Self, tracing::subscriber::DefaultGuard) {
        let capture = LogCapture::default();
        let guard = tracing::subscriber::set_default(capture.clone());
        (capture, guard)
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn contains(&self, needle: &str) -> bool {
        self.lines().iter().any(|l| l.contains(needle))
    }
}

struct LineVisitor(String);

impl tracing::field::Visit for LineVisitor {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
}

impl tracing::Subscriber for LogCapture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = LineVisitor(event.metadata().level().to_string());
        event.record(&mut line);
        self.0.lock().unwrap().push(line.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
