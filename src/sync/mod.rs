//! Synchronisation between green threads (and, for the queues, between OS threads).

mod channel;
mod queue;
mod shared_waker;

pub use channel::Channel;
pub use queue::{Iter, Queue, RecvError, SendError, TryRecvError, TrySendError};
