//! L3: the fd registry the hub drives. It caches readiness, parks one opaque waiter per fd
//! and direction, and on [`Reactor::poll`] hands back the waiters whose fd became ready. It
//! never switches and knows nothing of green threads: `W` is whatever the hub stores
//! (its `Waiter` handle).
//!
//! # The readiness protocol (edge-triggered, cached)
//!
//! Every fd is registered once, for both directions, edge-triggered: the kernel reports a
//! *change*, and the reactor remembers the level in the fd's cached readiness bits. An
//! operation on a non-blocking fd follows this loop (the hub's sockets do exactly this):
//!
//! ```text
//!   loop {
//!       match op() {                                  // try first: readiness may be stale
//!           Err(WouldBlock) => {}
//!           other => return other,
//!       }
//!       reactor.clear_ready(id, dir);                 // only now is "not ready" known
//!       reactor.set_waiter(id, dir, waiter)?;         // park; poll() hands it back
//!       switch to the hub, which polls and switches back
//!   }
//! ```
//!
//! Readiness is cleared **only after `WouldBlock`**, never before an operation: a read that
//! fills the buffer leaves data behind and no new edge will come for it, so clearing
//! "on take" would strand the next reader. An fd starts out ready in both directions
//! ("unknown: try it"). `set_waiter` refuses to park on a direction that is marked ready
//! (the wake-up would be lost: its edge was already consumed), returning the waiter in
//! [`WaiterError::Ready`] so the caller retries the operation instead.
//!
//! Readiness can be spurious (an edge that was consumed by an earlier read, a stale event
//! of a deregistered fd whose slot was reused): the loop above simply tries again.
//!
//! # The drained shortcut
//!
//! One case proves "not ready" without a `WouldBlock`: a stream read that returns fewer
//! bytes than asked for (but some) has emptied the socket's receive buffer at that moment,
//! so data that arrives later is a new edge. [`Reactor::clear_ready_drained`] then clears
//! the cached bit and the next read can wait at once instead of first failing with
//! `EAGAIN` (what mio/tokio do too). The shortcut is refused while the direction is closed
//! or errored (their sticky bits stand for an edge already consumed) or while the last event
//! reported urgent data (TCP stops a read at the urgent mark, short of the buffered rest).
//!
//! # Closing and errors
//!
//! An event with an error wakes both directions; a closed read side wakes readers and a
//! closed write side wakes writers (epoll's `EPOLLHUP` closes both). These states are sticky
//! in [`Readiness`]. [`Reactor::deregister`] hands back the parked waiters: the caller wakes
//! them with an error — this is how closing a socket wakes whoever waits on it.
//!
//! # Layout
//!
//! ```text
//!   slots: Vec<Slot<W>>            SourceId { index, gen }  → valid while slots[index].gen == gen
//!   ┌──────────────────────────────────────────────────────────────────────┐
//!   │ gen │ occupied │ Source { fd, ready: bits, waiters: [read, write] }  │  32 bytes,
//!   │ gen │ vacant   │ Source { fd: next free index, no waiters }          │  32-aligned
//!   └──────────────────────────────────────────────────────────────────────┘
//!   selector token = index | gen << INDEX_BITS   (WAKER_TOKEN = usize::MAX is reserved)
//! ```
//!
//! A slot's generation is bumped when it is freed, so a stale `SourceId`, or a kernel event
//! still carrying an old token, never reaches the fd that now uses the slot.
//!
//! # Cross-thread wake-ups
//!
//! [`Reactor::waker`] gives an `Arc<Waker>` any OS thread may call `wake()` on. A blocked
//! `poll` then returns with [`PollReport::notified`] set (the waker is already re-armed
//! then), telling the hub to drain its cross-thread queue. The other thread must publish
//! its work (e.g. push to a mutex-protected queue) *before* calling `wake()`.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use crate::sys::{Events, Interest, Selector, Waker};

/// How many kernel events one `poll` takes at most; the rest wait for the next `poll` (the
/// kernel keeps them, in order). Small, as tokio's 61 ticks between polls: each woken green
/// thread's record is touched by the poll and again when it runs, which with a batch of
/// 1,024 is 1,024 connections later and long out of cache. A server at 1,000 connections,
/// under callgrind (scripts/callgrind-http, 48 KiB L1): 17.3 -> 15.7 L1 data misses per
/// request at 1,024 -> 64 events (15.1 at 32, 16.4 at 128), for one more `epoll_wait` per
/// 64 requests.
const EVENTS_PER_POLL: usize = 64;

/// Bits of a selector token that hold the slot index; the rest hold (part of) the generation.
const INDEX_BITS: u32 = if usize::BITS >= 64 { 32 } else { 24 };
const INDEX_MASK: usize = (1 << INDEX_BITS) - 1;
/// Slot indices are below this, so no source token can equal [`WAKER_TOKEN`].
const MAX_SOURCES: usize = INDEX_MASK;
/// The waker's token: index bits all ones, never a valid slot.
const WAKER_TOKEN: usize = usize::MAX;

const NO_SLOT: u32 = u32::MAX;

thread_local! {
    /// How many times a reactor of this thread began a [`Reactor::poll`]: the only call
    /// that sets cached readiness bits of a registered fd.
    static POLLS: Cell<u64> = const { Cell::new(0) };
}

/// The number of polls this thread's reactors began. While it is unchanged, no cached
/// readiness bit was set: a socket that recorded it at a drained read may clear its read
/// readiness at its next wait as [`Reactor::clear_ready_drained`] would have at the read
/// (what `net`'s stream reads do, instead of reaching the reactor at every read).
#[inline]
pub(crate) fn polls() -> u64 {
    POLLS.with(Cell::get)
}

/// Identifies a registered fd: a slot index and the slot's generation at registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SourceId {
    index: u32,
    gen: u32,
}

impl SourceId {
    fn token(self) -> usize {
        self.index as usize | ((self.gen as usize) << INDEX_BITS)
    }
}

/// One direction of an fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Reading, accepting, receiving.
    Read,
    /// Writing, connecting, sending.
    Write,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::Read => 0,
            Direction::Write => 1,
        }
    }

    fn ready_bit(self) -> u8 {
        match self {
            Direction::Read => Readiness::READABLE,
            Direction::Write => Readiness::WRITABLE,
        }
    }

    /// The bits that keep [`Reactor::clear_ready_drained`] from clearing this direction.
    fn drained_keep(self) -> u8 {
        match self {
            Direction::Read => Readiness::READ_CLOSED | Readiness::ERROR | Readiness::PRIORITY,
            Direction::Write => Readiness::WRITE_CLOSED | Readiness::ERROR,
        }
    }
}

/// What [`Reactor::set_waiter_after`] does to the cached readiness before it parks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Clear {
    /// Nothing.
    Not,
    /// [`Reactor::clear_ready`]: the operation just failed with `WouldBlock`.
    AfterWouldBlock,
    /// [`Reactor::clear_ready_drained`]: a stream read drained the fd and no poll came
    /// since (see [`polls`]).
    Drained,
}

/// The cached readiness of a source.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Readiness(u8);

impl Readiness {
    const READABLE: u8 = 1 << 0;
    const WRITABLE: u8 = 1 << 1;
    const READ_CLOSED: u8 = 1 << 2;
    const WRITE_CLOSED: u8 = 1 << 3;
    const ERROR: u8 = 1 << 4;
    /// The last event reported priority (TCP urgent) data; not sticky: each event sets or
    /// clears it. Disables [`Reactor::clear_ready_drained`] for reads.
    const PRIORITY: u8 = 1 << 5;

    /// A read may succeed (cleared after `WouldBlock`).
    pub(crate) fn is_readable(self) -> bool {
        self.0 & Self::READABLE != 0
    }

    /// A write may succeed (cleared after `WouldBlock`).
    pub(crate) fn is_writable(self) -> bool {
        self.0 & Self::WRITABLE != 0
    }

    /// The peer sends no more data (sticky).
    pub(crate) fn is_read_closed(self) -> bool {
        self.0 & Self::READ_CLOSED != 0
    }

    /// Writes can no longer succeed (sticky).
    pub(crate) fn is_write_closed(self) -> bool {
        self.0 & Self::WRITE_CLOSED != 0
    }

    /// The fd reported an error; the next operation returns it (sticky).
    pub(crate) fn is_error(self) -> bool {
        self.0 & Self::ERROR != 0
    }
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Readiness")
            .field("readable", &self.is_readable())
            .field("writable", &self.is_writable())
            .field("read_closed", &self.is_read_closed())
            .field("write_closed", &self.is_write_closed())
            .field("error", &self.is_error())
            .finish()
    }
}

/// Why [`Reactor::set_waiter`] refused a waiter; each variant gives the waiter back.
#[derive(PartialEq, Eq)]
pub(crate) enum WaiterError<W> {
    /// The id is stale: its fd was deregistered.
    Stale(W),
    /// Another waiter already waits in this direction. One waiter per direction is the
    /// contract: a socket shared between green threads must be guarded by a lock above.
    Busy(W),
    /// The direction is marked ready: retry the operation (and `clear_ready` after its
    /// `WouldBlock`) before waiting, or the wake-up would be lost.
    Ready(W),
}

impl<W> WaiterError<W> {
    /// The refused waiter.
    // Part of the documented contract; exercised by unit tests, not yet by the layers above.
    #[allow(dead_code)]
    pub(crate) fn into_waiter(self) -> W {
        match self {
            WaiterError::Stale(w) | WaiterError::Busy(w) | WaiterError::Ready(w) => w,
        }
    }
}

impl<W> fmt::Debug for WaiterError<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            WaiterError::Stale(_) => "Stale",
            WaiterError::Busy(_) => "Busy",
            WaiterError::Ready(_) => "Ready",
        };
        f.write_str(what)
    }
}

impl<W> fmt::Display for WaiterError<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WaiterError::Stale(_) => "the fd is no longer registered",
            WaiterError::Busy(_) => {
                "another green thread already waits on this fd in this direction"
            }
            WaiterError::Ready(_) => "the fd is ready in this direction: retry the operation",
        })
    }
}

impl<W> std::error::Error for WaiterError<W> {}

impl<W> From<WaiterError<W>> for io::Error {
    fn from(e: WaiterError<W>) -> io::Error {
        let kind = match e {
            WaiterError::Stale(_) => io::ErrorKind::NotConnected,
            WaiterError::Busy(_) => io::ErrorKind::ResourceBusy,
            WaiterError::Ready(_) => io::ErrorKind::WouldBlock,
        };
        io::Error::new(kind, e.to_string())
    }
}

/// What one [`Reactor::poll`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PollReport {
    /// How many waiters were handed to `wake`.
    pub(crate) woken: usize,
    /// The cross-thread [`Waker`] fired (and has been re-armed): drain the cross-thread queue.
    pub(crate) notified: bool,
}

struct Source<W> {
    fd: RawFd,
    ready: u8,
    waiters: [Option<W>; 2],
}

/// One slot of the slab: 32 bytes for a pointer-sized waiter, and aligned to 32 so that it
/// never straddles two cache lines. A server touches its connection's slot once when the
/// poll reads its event and once when the woken green thread reads and waits again; a
/// 40-byte slot (an enum around `Source`) spanned two lines for 3 slots in 8.
#[repr(align(32))]
struct Slot<W> {
    gen: u32,
    /// Whether `source` is live. A vacant slot is a link of the free list: its
    /// `source.fd` holds the next free index (the bits of a `u32`, [`NO_SLOT`] at the end)
    /// and it has no waiters.
    occupied: bool,
    source: Source<W>,
}

const _: () = assert!(std::mem::size_of::<Slot<std::rc::Rc<()>>>() == 32);

impl<W> Slot<W> {
    /// The next free index of a vacant slot.
    fn next_free(&self) -> u32 {
        debug_assert!(!self.occupied);
        u32::from_ne_bytes(self.source.fd.to_ne_bytes())
    }

    /// Empties the slot into the free list before `next_free`; returns its source's fd
    /// and waiters.
    fn vacate(&mut self, next_free: u32) -> (RawFd, [Option<W>; 2]) {
        self.occupied = false;
        let fd = std::mem::replace(
            &mut self.source.fd,
            RawFd::from_ne_bytes(next_free.to_ne_bytes()),
        );
        self.source.ready = 0;
        (
            fd,
            [self.source.waiters[0].take(), self.source.waiters[1].take()],
        )
    }
}

/// The fd registry over one [`Selector`]. One per hub, used by its OS thread.
///
/// Dropping it drops any parked waiters unwoken (the hub deregisters its sources, waking
/// their waiters, before that) and closes the selector, which ends every kernel registration.
pub(crate) struct Reactor<W> {
    selector: Selector,
    events: Events,
    waker: Arc<Waker>,
    slots: Vec<Slot<W>>,
    free_head: u32,
    registered: usize,
}

impl<W> fmt::Debug for Reactor<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reactor")
            .field("selector", &self.selector)
            .field("registered", &self.registered)
            .finish_non_exhaustive()
    }
}

impl<W> Reactor<W> {
    /// A reactor with its own selector and cross-thread waker.
    pub(crate) fn new() -> io::Result<Reactor<W>> {
        let selector = Selector::new()?;
        let waker = Arc::new(Waker::new(&selector, WAKER_TOKEN)?);
        Ok(Reactor {
            selector,
            events: Events::with_capacity(EVENTS_PER_POLL),
            waker,
            slots: Vec::new(),
            free_head: NO_SLOT,
            registered: 0,
        })
    }

    /// A handle any OS thread can `wake()` to make a blocked [`poll`](Self::poll) return
    /// with [`PollReport::notified`].
    pub(crate) fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    /// The selector's fd (to nest this reactor in another poller, or the reverse).
    // Part of the documented contract; exercised by unit tests, not yet by the layers above.
    #[allow(dead_code)]
    pub(crate) fn selector(&self) -> &Selector {
        &self.selector
    }

    /// How many fds are registered.
    // Part of the documented contract; exercised by unit tests, not yet by the layers above.
    #[allow(dead_code)]
    pub(crate) fn registered_count(&self) -> usize {
        self.registered
    }

    /// Whether no fd is registered: no I/O event can ever arrive (the waker aside).
    // Part of the documented contract; exercised by unit tests, not yet by the layers above.
    #[allow(dead_code)]
    pub(crate) fn is_empty(&self) -> bool {
        self.registered == 0
    }

    /// Registers a non-blocking `fd` for both directions, once for its whole life. It starts
    /// out ready in both directions. Call [`deregister`](Self::deregister) before closing it.
    pub(crate) fn register(&mut self, fd: RawFd) -> io::Result<SourceId> {
        let source = Source {
            fd,
            ready: Readiness::READABLE | Readiness::WRITABLE,
            waiters: [None, None],
        };
        let id = if self.free_head != NO_SLOT {
            let index = self.free_head;
            let slot = &self.slots[index as usize];
            SourceId {
                index,
                gen: slot.gen,
            }
        } else {
            if self.slots.len() >= MAX_SOURCES {
                return Err(io::Error::other("verdant: too many registered fds"));
            }
            SourceId {
                index: self.slots.len() as u32,
                gen: 0,
            }
        };
        // Register with the kernel before touching the slab: on error nothing changed.
        self.selector.register(fd, id.token(), Interest::BOTH)?;
        if id.index == self.free_head {
            let slot = &mut self.slots[id.index as usize];
            assert!(!slot.occupied, "free list points at an occupied slot");
            self.free_head = slot.next_free();
            slot.occupied = true;
            slot.source = source;
        } else {
            self.slots.push(Slot {
                gen: 0,
                occupied: true,
                source,
            });
        }
        self.registered += 1;
        Ok(id)
    }

    /// Removes a source and returns its parked waiters `(read, write)`; the caller wakes
    /// them with an error. A stale id returns `(None, None)`.
    ///
    /// The kernel registration is removed too. That can only fail if the fd was already
    /// closed (the kernel then dropped it by itself; a stale event for a reused slot is
    /// filtered by the generation), so the error is ignored.
    pub(crate) fn deregister(&mut self, id: SourceId) -> (Option<W>, Option<W>) {
        let Some(slot) = self.slots.get_mut(id.index as usize) else {
            return (None, None);
        };
        if slot.gen != id.gen || !slot.occupied {
            return (None, None);
        }
        let (fd, [read, write]) = slot.vacate(self.free_head);
        slot.gen = slot.gen.wrapping_add(1);
        self.free_head = id.index;
        self.registered -= 1;
        let _ = self.selector.deregister(fd);
        (read, write)
    }

    /// Proves that `id` still watches the file its fd number names now, for a registration
    /// kept across waits by the monkey shim, whose fd may have been closed and the number
    /// reused behind verdant's back (a raw `close` system call, another OS thread). An epoll
    /// registration belongs to the pair (fd number, open file), so `EPOLL_CTL_ADD` of the
    /// fd fails with `EEXIST` exactly while that number still names the registered open
    /// file: `Ok(false)`, nothing changed (unlike `EPOLL_CTL_MOD`, which would re-arm the
    /// edge and queue a spurious event for a writable socket at every call). Once the file
    /// was closed, or the number names another file, the `ADD` succeeds: the fd is now
    /// registered afresh under the same token, starting out ready in both directions, and
    /// `Ok(true)` tells the caller that whatever it cached about the old file is void.
    ///
    /// Only epoll can tell: kqueue's `EV_ADD` succeeds either way, so this is Linux-only.
    /// An error is the fd's (`EBADF`: not open), or `NotConnected` for an id that is no
    /// longer this fd's registration.
    #[cfg(all(feature = "monkey", any(target_os = "linux", target_os = "android")))]
    pub(crate) fn refresh(&mut self, id: SourceId, fd: RawFd) -> io::Result<bool> {
        if self.source(id).is_none_or(|s| s.fd != fd) {
            return Err(io::ErrorKind::NotConnected.into());
        }
        match self.selector.register(fd, id.token(), Interest::BOTH) {
            // The raw errno, not `kind()`: this is the common answer, once per hooked wait.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(e),
            Ok(()) => {
                if let Some(s) = self.source_mut(id) {
                    s.ready = Readiness::READABLE | Readiness::WRITABLE;
                }
                Ok(true)
            }
        }
    }

    /// Whether `id` is registered.
    // Part of the documented contract; exercised by unit tests, not yet by the layers above.
    #[allow(dead_code)]
    pub(crate) fn contains(&self, id: SourceId) -> bool {
        self.source(id).is_some()
    }

    /// The fd of a registered source.
    // Part of the documented contract; exercised by unit tests, not yet by the layers above.
    #[allow(dead_code)]
    pub(crate) fn fd(&self, id: SourceId) -> Option<RawFd> {
        self.source(id).map(|s| s.fd)
    }

    /// The cached readiness of a registered source.
    // Part of the documented contract; exercised by unit tests, not yet by the layers above.
    #[allow(dead_code)]
    pub(crate) fn readiness(&self, id: SourceId) -> Option<Readiness> {
        self.source(id).map(|s| Readiness(s.ready))
    }

    /// Whether an operation in `dir` may succeed (false for a stale id).
    pub(crate) fn is_ready(&self, id: SourceId, dir: Direction) -> bool {
        self.source(id)
            .is_some_and(|s| s.ready & dir.ready_bit() != 0)
    }

    /// Forgets that `dir` is ready. Call it after an operation returned `WouldBlock`, and
    /// only then (see the module docs). A stale id is ignored.
    // Part of the documented contract; exercised by unit tests, the layers above use
    // `set_waiter_after`.
    #[allow(dead_code)]
    pub(crate) fn clear_ready(&mut self, id: SourceId, dir: Direction) {
        if let Some(s) = self.source_mut(id) {
            s.ready &= !dir.ready_bit();
        }
    }

    /// Forgets that `dir` is ready after an operation that proves the kernel buffer drained
    /// without a `WouldBlock`: a stream read that returned fewer bytes than asked for, but
    /// some (see "The drained shortcut" in the module docs). Does nothing while `dir` is
    /// closed or errored, or, for reads, while the last event reported urgent data; a stale
    /// id is ignored.
    // Part of the documented contract; exercised by unit tests, the layers above use
    // `set_waiter_after`.
    #[allow(dead_code)]
    pub(crate) fn clear_ready_drained(&mut self, id: SourceId, dir: Direction) {
        if let Some(s) = self.source_mut(id) {
            if s.ready & dir.drained_keep() == 0 {
                s.ready &= !dir.ready_bit();
            }
        }
    }

    /// Parks `waiter` until `dir` becomes ready, errors or closes, or the source is
    /// deregistered. Refused, with the waiter handed back, for a stale id, a second waiter
    /// in the same direction, or a direction currently marked ready.
    // Part of the documented contract; exercised by unit tests, the layers above use
    // `set_waiter_after`.
    #[allow(dead_code)]
    pub(crate) fn set_waiter(
        &mut self,
        id: SourceId,
        dir: Direction,
        waiter: W,
    ) -> Result<(), WaiterError<W>> {
        self.set_waiter_after(id, dir, Clear::Not, waiter)
    }

    /// [`set_waiter`](Self::set_waiter) after [`clear_ready`](Self::clear_ready)
    /// (`Clear::AfterWouldBlock`) or [`clear_ready_drained`](Self::clear_ready_drained)
    /// (`Clear::Drained`), with one lookup of the source: what a socket's wait does.
    #[inline]
    pub(crate) fn set_waiter_after(
        &mut self,
        id: SourceId,
        dir: Direction,
        clear: Clear,
        waiter: W,
    ) -> Result<(), WaiterError<W>> {
        let Some(s) = self.source_mut(id) else {
            return Err(WaiterError::Stale(waiter));
        };
        match clear {
            Clear::Not => {}
            Clear::AfterWouldBlock => s.ready &= !dir.ready_bit(),
            Clear::Drained => {
                if s.ready & dir.drained_keep() == 0 {
                    s.ready &= !dir.ready_bit();
                }
            }
        }
        if s.ready & dir.ready_bit() != 0 {
            return Err(WaiterError::Ready(waiter));
        }
        let slot = &mut s.waiters[dir.index()];
        if slot.is_some() {
            return Err(WaiterError::Busy(waiter));
        }
        *slot = Some(waiter);
        Ok(())
    }

    /// Takes the waiter parked in `dir` back without waking it (a timeout or a kill): nothing
    /// of it stays registered.
    pub(crate) fn remove_waiter(&mut self, id: SourceId, dir: Direction) -> Option<W> {
        self.source_mut(id)?.waiters[dir.index()].take()
    }

    /// Waits for events up to `timeout` (`None`: until an event or a wake), updates the
    /// cached readiness, and hands each waiter whose direction became ready to `wake`
    /// (readers first, then writers, in kernel order) as its event is read, while the
    /// source's slot is still in cache: the hub schedules it at once, with no buffer to
    /// fill and drain. `wake` cannot reach the reactor (it is borrowed). `EINTR` is a return
    /// with nothing done.
    pub(crate) fn poll(
        &mut self,
        timeout: Option<Duration>,
        mut wake: impl FnMut(W),
    ) -> io::Result<PollReport> {
        POLLS.with(|n| n.set(n.get() + 1));
        self.selector.select(&mut self.events, timeout)?;
        let mut report = PollReport::default();
        for event in self.events.iter() {
            let token = event.token();
            if token == WAKER_TOKEN {
                // Not `?`: the events after this one must still be handled. A failed
                // drain cannot lose a wake (the flag is cleared anyway and the next wake is a
                // new edge); the worst case is one spurious `notified`.
                let _ = self.waker.reset();
                report.notified = true;
                continue;
            }
            let index = token & INDEX_MASK;
            let gen_bits = token >> INDEX_BITS;
            let Some(slot) = self.slots.get_mut(index) else {
                continue;
            };
            // Compare only the generation bits that fit in a token (all of them on 64-bit).
            let gen_mask = usize::MAX >> INDEX_BITS;
            if !slot.occupied || (slot.gen as usize) & gen_mask != gen_bits {
                continue; // an event for an fd that used this slot before
            }
            let source = &mut slot.source;
            let bits = if event.is_plain() {
                // A server's event: readable and/or writable and nothing else, which
                // `event_bits` would also find, in a third of the instructions.
                (if event.is_readable() {
                    Readiness::READABLE
                } else {
                    0
                }) | (if event.is_writable() {
                    Readiness::WRITABLE
                } else {
                    0
                })
            } else {
                event_bits(&event)
            };
            // Priority data is reported with each read-side event, so every such event
            // sets or clears it (a write event of kqueue says nothing about it).
            if event.is_readable() {
                source.ready &= !Readiness::PRIORITY;
            }
            source.ready |= bits;
            for dir in [Direction::Read, Direction::Write] {
                if bits & dir.ready_bit() != 0 {
                    if let Some(w) = source.waiters[dir.index()].take() {
                        wake(w);
                        report.woken += 1;
                    }
                }
            }
        }
        Ok(report)
    }

    fn source(&self, id: SourceId) -> Option<&Source<W>> {
        match self.slots.get(id.index as usize) {
            Some(slot) if slot.occupied && slot.gen == id.gen => Some(&slot.source),
            _ => None,
        }
    }

    fn source_mut(&mut self, id: SourceId) -> Option<&mut Source<W>> {
        match self.slots.get_mut(id.index as usize) {
            Some(slot) if slot.occupied && slot.gen == id.gen => Some(&mut slot.source),
            _ => None,
        }
    }
}

/// The readiness bits an event sets ([`Readiness::PRIORITY`] included: a read-side event
/// clears it first); for a [plain](crate::sys::Event::is_plain) event, only the
/// readable and writable bits.
fn event_bits(event: &crate::sys::Event) -> u8 {
    let mut bits = 0;
    if event.is_readable() {
        bits |= Readiness::READABLE;
    }
    if event.is_writable() {
        bits |= Readiness::WRITABLE;
    }
    if event.is_read_closed() {
        bits |= Readiness::READ_CLOSED | Readiness::READABLE;
    }
    if event.is_write_closed() {
        bits |= Readiness::WRITE_CLOSED | Readiness::WRITABLE;
    }
    if event.is_hup() {
        bits |= Readiness::READ_CLOSED
            | Readiness::READABLE
            | Readiness::WRITE_CLOSED
            | Readiness::WRITABLE;
    }
    if event.is_error() {
        bits |= Readiness::ERROR | Readiness::READABLE | Readiness::WRITABLE;
    }
    if event.is_priority() {
        bits |= Readiness::PRIORITY;
    }
    bits
}

#[cfg(test)]
mod tests;
