//! Who caused an error: one type for every layer.

use std::fmt;

/// Who caused an error. Every error type of the crate answers with this one
/// type (`origin()`), so a runtime can decide on blame — log, retry, kill the
/// child — without matching each layer's variants.
///
/// The spec's names (PROTOCOL.md, "Error kinds and origins") are the
/// [`Display`](fmt::Display) texts: `local`, `peer`, `os`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// This side: the local caller asked for something the protocol, the
    /// transport or the configuration does not allow (nothing was sent), or
    /// this process's own setup failed.
    Local,
    /// The peer: it closed, died, was too slow, sent a bad record or a message
    /// out of order, or asked for something the policy refuses.
    Peer,
    /// The operating system: a system call failed for its own reasons.
    Os,
}

impl Origin {
    /// The spec's name: `local`, `peer` or `os`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Origin::Local => "local",
            Origin::Peer => "peer",
            Origin::Os => "os",
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
