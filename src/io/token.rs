//! What a completion is for: one typed token per operation.
//!
//! The ring carries only a slot index in `user_data`; the slot keeps the
//! [`Token`] its operation was pushed with and hands it back in the
//! completion. A token says who the completion goes to ([`Owner`]), what
//! the operation was ([`Kind`]) and an index whose meaning is the owner's:
//! the WAL's commit chain, or the connection generation of a sink, whose
//! stale completions it recognises by it.

/// Who a completion goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    /// The shard's WAL.
    Wal,
    /// The shard's inbox wake-up (an eventfd read).
    Inbox,
    /// The shard's sink.
    Sink,
    /// A receiver core's admission wake-up (an eventfd read).
    Admission,
    /// Connection `n` of a receiver core, its WAL included.
    Connection(u32),
}

/// What an operation was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A commit's write (WRITE or WRITE_FIXED).
    WalWrite,
    /// A commit's fdatasync, linked to its write.
    WalSync,
    /// An eventfd read that wakes the loop.
    Wake,
    /// A send of WAL bytes (SEND).
    Send,
    /// A zero-copy send of WAL bytes (SEND_ZC).
    SendZc,
    /// File → pipe (SPLICE).
    SpliceIn,
    /// Pipe → socket (SPLICE).
    SpliceOut,
    /// A read of acks (RECV).
    AckRecv,
    /// The connect thread's wake-up.
    Connected,
    /// A receiver's read of records (RECV).
    RecordRecv,
    /// A receiver's ack (SEND), linked to a timeout.
    AckSend,
    /// The ack's linked timeout.
    AckTimeout,
}

/// One operation's tag: handed to the ring with the operation, handed back
/// with each of its completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token {
    pub owner: Owner,
    pub kind: Kind,
    pub index: u32,
}

impl Token {
    pub const fn new(owner: Owner, kind: Kind, index: u32) -> Token {
        Token { owner, kind, index }
    }
}
