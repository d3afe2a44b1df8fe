//! rsq-bench: a load generator and benchmark suite for NSQ-compatible
//! daemons, speaking protocol V2 through rsq-codec.
//!
//! - [`writer`]: connections publishing PUB or MPUB, bodies stamped with
//!   their send time ([`latency`]);
//! - [`reader`]: subscribed connections with a RDY count that FIN every
//!   message and record its end-to-end delay in an HDR histogram;
//! - [`scenario`]: the suite (publish, consume a backlog, publish and
//!   consume at once, fan-out, many topics, disk-backed, many connections)
//!   and its runner, which starts a daemon per scenario or uses one already
//!   running ([`daemon`]) and samples its memory and CPU ([`process`]);
//! - [`report`]: the table and JSON.
//!
//! Every loop is bounded in time and count, every wait for the daemon has a
//! deadline, and only loopback or given addresses are contacted.

pub mod connection;
pub mod daemon;
mod error;
pub mod latency;
pub mod options;
pub mod process;
pub mod progress;
pub mod reader;
pub mod report;
pub mod scale;
pub mod scenario;
pub mod writer;

pub use error::BenchError;
