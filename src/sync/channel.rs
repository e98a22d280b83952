//! [`Channel`]: a rendezvous between green threads (gevent's `gevent.queue.Channel`), also
//! between OS threads.
//!
//! A channel buffers nothing: `put` blocks until a `get` takes the item, and `get` blocks
//! until a `put` offers one. It is a [`Queue`](super::Queue) of capacity 0 with the
//! buffer-specific parts of the API left out; the hand-off, FIFO and clean-departure
//! guarantees are the queue's (see [`Queue`](super::Queue)). One thing only a channel
//! does: a put that yields first (other green threads are ready) leaves its item in an
//! offer cell that a get empties without taking the lock ("Channels: the offer cell" in
//! `queue.rs`), so a ping-pong hop takes the lock once.

use super::queue::{Core, RecvError, SendError, TryRecvError, TrySendError};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A rendezvous channel: `put` blocks until a `get` takes the item (gevent's `Channel`).
///
/// Clones are handles to the same channel; with `T: Send` it is `Send + Sync`, and the two
/// sides may be green threads of different OS threads (or plain `std::thread`s).
///
/// ```
/// use verdant::Channel;
///
/// let ch = Channel::new();
/// let taker = {
///     let ch = ch.clone();
///     verdant::spawn(move || ch.get().unwrap())
/// };
/// ch.put("ping").unwrap(); // returns once the taker has the item
/// assert_eq!(taker.join().unwrap(), "ping");
/// ```
pub struct Channel<T> {
    core: Arc<Core<T>>,
}

fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

impl<T> Channel<T> {
    /// A new channel.
    pub fn new() -> Channel<T> {
        Channel {
            core: Arc::new(Core::rendezvous()),
        }
    }

    /// Hands `item` to a getter, blocking until one takes it.
    ///
    /// Fails with [`SendError::Closed`] if the channel is (or gets) closed, with `TimedOut`
    /// if a [`Timeout`](crate::Timeout) covering the call fires; the error holds the item.
    #[inline]
    pub fn put(&self, item: T) -> Result<(), SendError<T>> {
        self.core.put_rendezvous(item, None)
    }

    /// Like [`put`](Self::put), giving up after `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use verdant::sync::SendError;
    /// let ch = verdant::Channel::new();
    /// let r = ch.put_timeout(1, Duration::from_millis(5)); // nobody takes it
    /// assert!(matches!(r, Err(SendError::TimedOut(1))));
    /// ```
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), SendError<T>> {
        self.core.put_rendezvous(item, deadline_after(timeout))
    }

    /// Hands `item` to a getter that is already waiting; [`TrySendError::Full`] if none is.
    pub fn try_put(&self, item: T) -> Result<(), TrySendError<T>> {
        self.core.try_put(item)
    }

    /// Takes an item from a putter, blocking until one offers it.
    #[inline]
    pub fn get(&self) -> Result<T, RecvError> {
        self.core.get(None)
    }

    /// Like [`get`](Self::get), giving up after `timeout` with [`RecvError::TimedOut`].
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, RecvError> {
        self.core.get(deadline_after(timeout))
    }

    /// Takes an item from a putter that is already waiting; [`TryRecvError::Empty`] if none
    /// is.
    ///
    /// ```
    /// use verdant::sync::TryRecvError;
    /// let ch: verdant::Channel<u8> = verdant::Channel::new();
    /// assert_eq!(ch.try_get(), Err(TryRecvError::Empty));
    /// ```
    pub fn try_get(&self) -> Result<T, TryRecvError> {
        self.core.try_get()
    }

    /// Closes the channel: blocked and later calls on both sides fail with `Closed`
    /// (a blocked putter gets its item back). Idempotent.
    pub fn close(&self) {
        self.core.close()
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.core.is_closed()
    }
}

impl<T> Clone for Channel<T> {
    fn clone(&self) -> Self {
        Channel {
            core: self.core.clone(),
        }
    }
}

impl<T> Default for Channel<T> {
    fn default() -> Self {
        Channel::new()
    }
}

impl<T> fmt::Debug for Channel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Channel");
        self.core.debug_fields(&mut s);
        s.finish()
    }
}

#[cfg(test)]
impl<T> Channel<T> {
    /// Waiters queued without a waker (yielding once before they park), and all waiters.
    pub(crate) fn waiters_yielding_and_all(&self) -> (usize, usize) {
        self.core.waiters_yielding_and_all()
    }
}
