//! The client states nsqd reports.

/// Client states, numbered as nsqd reports them in stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientState {
    /// Connected, not subscribed.
    Init = 0,
    /// Gone.
    Disconnected = 1,
    /// Connected (unused by V2; kept for numbering).
    Connected = 2,
    /// Subscribed to a channel.
    Subscribed = 3,
    /// Sent CLS; waiting for in-flight messages to finish.
    Closing = 4,
}
