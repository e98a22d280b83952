//! [`Queue`]: a FIFO queue between green threads (gevent's `Queue` and `JoinableQueue`) that
//! also works between OS threads, plus the error types it shares with
//! [`Channel`](super::Channel).
//!
//! ## Design
//! One [`Core`] behind an `Arc<Mutex<..>>` holds the buffered items and two FIFO wait lists,
//! one of blocked getters and one of blocked putters. Items are *handed off*: a `put` that
//! finds a getter waiting takes it off the list, files the item under the getter's id (in
//! the hand-off cell, else in `handed`) and wakes it; a `get` that frees a slot takes the
//! first blocked putter off its list, moves its item into the buffer and wakes it. So a
//! woken waiter never competes with a newcomer (strict FIFO, no barging), and these
//! invariants hold whenever the lock is free:
//!
//! ```text
//!   a getter is still waiting  ⇒  the buffer is empty
//!   a putter is still waiting  ⇒  the buffer is full (capacity 0: always)
//!
//!   getters: [Getter { id, waker }, ..]        served: off the list, item in cell/handed
//!   cell:    (getter id, item) or empty        picked up by the getter, without the lock
//!   handed:  [(getter id, item), ..]           (the cell was taken) picked up under the lock
//!   putters: [Putter { id, item, waker }, ..]  served: off the list (it finds itself gone)
//!   (waker: None while the waiter yields once before parking, see "Yielding first")
//! ```
//!
//! Ids grow with every wait, so both lists are sorted by id and a waiter finds its own
//! entry by binary search. The hand-off cell (`Core::cell`, a
//! [`HandOffCell`](crate::greenlet::HandOffCell)) is filled under the lock by whoever hands
//! an item over and emptied by the getter it is for with one compare-and-swap: a getter
//! served while it yielded or parked returns its item without taking the lock again. An
//! item is in the cell or in `handed`, never both; a getter that did not find it in the
//! cell looks in both under the lock. Waking a waiter of this OS thread's hub only
//! schedules it, so that is done at once, under the lock; a waiter of another hub is woken
//! through that hub's inbox once the lock is released.
//!
//! A waiter leaves its wait list itself, whatever ended its wait (success, deadline,
//! `Timeout`, `close`, a kill unwinding it): nothing stays registered. An item handed to a
//! waiter that departs anyway is not lost: on a deadline or `Timeout` the call returns the
//! item (`Ok`), since it did arrive; on a kill it goes back to the *front* of the queue and
//! on to the next waiter (so the queue may briefly hold one item over its capacity).
//!
//! Waiters are woken through a [`SharedWaker`]: directly when the wake comes from the same
//! OS thread, through the hub's `RemoteWaker` otherwise. A green thread blocked on a queue
//! is therefore never reported as `WouldBlockForever` (another OS thread might still put):
//! bound such waits with a timeout, or [`close`](Queue::close) the queue.
//!
//! ## Yielding first
//! A caller that must wait while other green threads of its hub are ready to run takes its
//! place in the wait list at once, but with no waker (`waker: None`), and yields once.
//! When the green thread it waits for is one of those (the ping-pong of a producer and a
//! consumer on one hub), it is served during that turn: the item is handed to it (or taken
//! from it) and nothing needs waking, since it is in the run queue already. Only if it is
//! still waiting when it runs again does it take a wait slot, store the waker in its entry
//! and park. That spares the hop the slot's registration, the wake-up and the slot's
//! release (about 40% of a hop's instructions); the place in the FIFO, the hand-off and
//! everything said above about departures hold from the moment the entry is queued. With
//! nothing else ready (a lone consumer fed by another OS thread) it parks at once, as a
//! yield would come straight back; so does a green thread whose `Timeout` has fired (the
//! call must fail at once, not be served during a turn).
//!
//! ```text
//!   get, empty, others ready:  getters: [.., Getter { id, waker: None }]  → yield_now
//!     a put meanwhile:  item in the cell, nothing to wake → the get takes it, no park, no lock
//!     no put:           take a slot, waker: Some(..) in the same entry → park as above
//! ```
//!
//! ## Channels: the offer cell
//! A [`Channel`](super::Channel) (not a `Queue`, even of capacity 0: a channel keeps no
//! count of unfinished tasks, so its get need not touch the state) has one more hand-off
//! cell, `Core::offer`. A putter that yields first (see above) while no other putter waits
//! leaves its item there, filed under its id, instead of in the list; a get takes it from
//! there with one compare-and-swap, without the lock, and publishes the id in
//! `served_putter` (so the putter returns without the lock too). The offering putter is
//! older than every putter in the list (it offers only when the list is empty, and the
//! ones after it queue in the list), so getters look in the cell first, under the lock as
//! well. If nobody took the item during its yield, the putter takes it back under the lock
//! and parks with it at the front of the list; a kill takes it back the same way, and
//! `close` moves it to the list, so that it comes back with `Closed` like any other.
//!
//! ```text
//!   put, no getter, no putter, others ready:  offer: (id, item) → yield_now
//!     a get meanwhile:  takes it (CAS), served_putter = id → the put returns, no lock
//!     no get:           lock, take it back, putters: [Putter { id, item, waker }, ..] → park
//! ```
//!
//! ## Inlined into the caller, for the return predictor
//! A green thread that resumes after a switch finds the CPU's return-address predictor
//! filled by the other context (the switch's `call` pushes an entry that is never popped):
//! every `ret` it runs before its next switch is mispredicted (some 10 ns each on the AMD
//! EPYC where these figures come from). So a `get`, and a channel's `put`, are inlined into
//! the caller down to the `yield_now` of their yield (which is to be inlined in turn, down
//! to the switch): a ping-pong hop (`examples/hub_counts channel|queue`) then runs no `ret`
//! between the resume and the caller's own code. What follows a yield that did not serve
//! the waiter, and a park, are out of line (`#[cold]`, or `#[inline(never)]` for the
//! parks), so that the inlined code stays small. A queue's `put` is inlined as far as it
//! goes when there is room; its wait is out of line.
//!
//! ## Closing
//! [`Queue::close`] (Python 3.13's `Queue.shutdown()`, the disconnection of std's channels)
//! wakes every blocked caller: putters get their item back in [`SendError::Closed`], later
//! puts fail the same way, getters drain what is buffered and then get
//! [`RecvError::Closed`]. It is the usual way to stop a pool of consumers.

use super::shared_waker::{self, SharedWaker, Wakeup};
use crate::greenlet::{HandOffCell, HandOffWriter};
use crate::hub::{self, WaitError};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Why a non-blocking [`try_get`](Queue::try_get) returned no item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing is available right now.
    Empty,
    /// The queue is closed and drained: nothing will ever arrive.
    Closed,
}

/// Why a blocking [`get`](Queue::get) returned no item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvError {
    /// The queue is closed and drained: nothing will ever arrive.
    Closed,
    /// The time limit (`get_timeout`'s, or a [`Timeout`](crate::Timeout) in scope) passed.
    TimedOut,
    /// Nothing could ever complete the call ([`WaitError::WouldBlockForever`]).
    WouldBlockForever,
}

/// Why a non-blocking [`try_put`](Queue::try_put) did not enqueue; the item is returned.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The queue is at capacity (for a [`Channel`](super::Channel): no getter is waiting).
    Full(T),
    /// The queue is closed.
    Closed(T),
}

/// Why a blocking [`put`](Queue::put) did not enqueue; the item is returned.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum SendError<T> {
    /// The queue is closed (before the call, or while it waited for room).
    Closed(T),
    /// The time limit (`put_timeout`'s, or a [`Timeout`](crate::Timeout) in scope) passed.
    TimedOut(T),
    /// Nothing could ever complete the call ([`WaitError::WouldBlockForever`]).
    WouldBlockForever(T),
}

impl<T> TrySendError<T> {
    /// The item that was not enqueued.
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(t) | TrySendError::Closed(t) => t,
        }
    }
}

impl<T> SendError<T> {
    /// The item that was not enqueued.
    pub fn into_inner(self) -> T {
        match self {
            SendError::Closed(t) | SendError::TimedOut(t) | SendError::WouldBlockForever(t) => t,
        }
    }

    fn from_wait(e: WaitError, item: T) -> SendError<T> {
        match e {
            WaitError::TimedOut => SendError::TimedOut(item),
            WaitError::WouldBlockForever => SendError::WouldBlockForever(item),
        }
    }
}

impl From<WaitError> for RecvError {
    fn from(e: WaitError) -> RecvError {
        match e {
            WaitError::TimedOut => RecvError::TimedOut,
            WaitError::WouldBlockForever => RecvError::WouldBlockForever,
        }
    }
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryRecvError::Empty => f.write_str("the queue is empty; use get() to wait for an item"),
            TryRecvError::Closed => {
                f.write_str("the queue is closed and drained; no item will ever arrive")
            }
        }
    }
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::Closed => {
                f.write_str("the queue is closed and drained; no item will ever arrive")
            }
            RecvError::TimedOut => f.write_str("timed out waiting for an item from the queue"),
            RecvError::WouldBlockForever => WaitError::WouldBlockForever.fmt(f),
        }
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str(
                "the queue is full (or, for a channel, no getter is waiting); use put() to wait for room",
            ),
            TrySendError::Closed(_) => f.write_str("the queue is closed; the item was not enqueued"),
        }
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed(_) => f.write_str("the queue is closed; the item was not enqueued"),
            SendError::TimedOut(_) => {
                f.write_str("timed out waiting for room in the queue; the item was not enqueued")
            }
            SendError::WouldBlockForever(_) => WaitError::WouldBlockForever.fmt(f),
        }
    }
}

// Like std's channel errors: `Debug` does not require `T: Debug`.
impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed(_) => f.write_str("Closed(..)"),
            SendError::TimedOut(_) => f.write_str("TimedOut(..)"),
            SendError::WouldBlockForever(_) => f.write_str("WouldBlockForever(..)"),
        }
    }
}

impl std::error::Error for TryRecvError {}
impl std::error::Error for RecvError {}
impl<T> std::error::Error for TrySendError<T> {}
impl<T> std::error::Error for SendError<T> {}

impl From<RecvError> for io::Error {
    fn from(e: RecvError) -> io::Error {
        let kind = match e {
            RecvError::Closed => io::ErrorKind::BrokenPipe,
            RecvError::TimedOut => io::ErrorKind::TimedOut,
            RecvError::WouldBlockForever => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// A blocked getter, waiting for an item.
struct Getter {
    id: u64,
    /// `None` while the getter yields once before it parks (see "Yielding first").
    waker: Option<SharedWaker>,
}

/// A blocked putter and the item it offers.
struct Putter<T> {
    id: u64,
    item: T,
    /// `None` while the putter yields once before it parks (see "Yielding first").
    waker: Option<SharedWaker>,
}

struct State<T> {
    buf: VecDeque<T>,
    /// Getters still waiting (none of them has been handed an item), oldest first. Ids
    /// grow with each wait, so the list is sorted by id.
    getters: VecDeque<Getter>,
    /// The writing side of `Core::cell`: an item handed to a getter goes there when the
    /// cell is free (the usual case: a getter picks its item up as soon as it runs).
    to_cell: HandOffWriter<T>,
    /// Items handed to getters while the cell was taken, by getter id.
    handed: Vec<(u64, T)>,
    /// A channel's: the writing side of `Core::offer`.
    to_offer: Option<HandOffWriter<T>>,
    /// Putters still waiting (their item not taken), oldest first; sorted by id too.
    putters: VecDeque<Putter<T>>,
    joiners: Vec<(u64, SharedWaker)>,
    unfinished: usize,
    closed: bool,
    next_id: u64,
}

/// The shared state of a [`Queue`] or [`Channel`](super::Channel).
pub(crate) struct Core<T> {
    state: Mutex<State<T>>,
    /// `None`: unbounded. `Some(0)`: rendezvous.
    capacity: Option<usize>,
    /// The id of the last putter whose item a get took (0: none yet). Putters are served
    /// oldest first and only leave the list otherwise by themselves, so a putter that is
    /// still waiting was served exactly when this is at least its own id: a woken putter
    /// reads it without taking the lock (see `put`). Written under the lock, in
    /// increasing order, except by a getter that takes a channel's offered item without
    /// the lock: that one may write an older id over a younger one, which only makes a
    /// served putter look under the lock (it never makes a waiting one think it was
    /// served: the offering putter is older than every putter in the list).
    served_putter: AtomicU64,
    /// An item handed to a getter, filed under its id, that the getter takes out without
    /// the lock (filled under the lock, through `State::to_cell`). An item is in the cell or
    /// in `State::handed`, never both; only the getter it is for takes it out.
    cell: HandOffCell<T>,
    /// A [`Channel`](super::Channel)'s (`None` for a queue, even of capacity 0): the item
    /// of the oldest waiting putter while it yields, filed under its id, for a getter to
    /// take without the lock (see "Channels: the offer cell").
    offer: Option<HandOffCell<T>>,
}

/// Blocks until woken; `Ok(true)` once `deadline` has passed.
#[inline]
fn park_for(deadline: Option<Instant>) -> Result<bool, WaitError> {
    match deadline {
        Some(d) => hub::park_until(d),
        None => hub::park().map(|()| false),
    }
}

fn deadline_after(timeout: Duration) -> Option<Instant> {
    // A timeout too large to represent is no timeout.
    Instant::now().checked_add(timeout)
}

/// Wakes the waiter of `waker`, taken out of its wait list: at once (it is only
/// scheduled, so this is fine under the lock) if it lives on this OS thread's hub, else
/// returns the waker, to be woken through its hub's inbox once the lock is released.
#[inline]
fn wake(waker: Option<SharedWaker>) -> Option<SharedWaker> {
    // `None`: the waiter is yielding (it is ready to run already): nothing to wake.
    waker?.wake_here_or_return()
}

/// Performs a deferred wake-up (after the lock is released).
#[inline]
fn finish_wake(wakeup: Option<SharedWaker>) {
    if let Some(w) = wakeup {
        w.wake_remote();
    }
}

impl<T> State<T> {
    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Hands `item` to the oldest waiting getter, if there is one.
    // Always inline: it is on the hop's path and the compiler kept it out of line.
    #[inline(always)]
    fn hand_to_getter(&mut self, item: T) -> Result<Option<SharedWaker>, T> {
        match self.getters.pop_front() {
            Some(g) => {
                if let Err(item) = self.to_cell.put(g.id, item) {
                    self.handed.push((g.id, item));
                }
                Ok(wake(g.waker))
            }
            None => Err(item),
        }
    }

    /// Enqueues without blocking: to the first waiting getter, else into the buffer.
    /// Always inlined: every put begins with it (`offer_now`), and out of line it costs
    /// a hop more than its body.
    #[inline(always)]
    fn offer(&mut self, item: T, capacity: Option<usize>) -> Result<Option<SharedWaker>, T> {
        let item = match self.hand_to_getter(item) {
            Ok(wakeup) => {
                self.unfinished += 1;
                return Ok(wakeup);
            }
            Err(item) => item,
        };
        if capacity.is_none_or(|c| self.buf.len() < c) {
            self.buf.push_back(item);
            self.unfinished += 1;
            return Ok(None);
        }
        Err(item)
    }

    /// Dequeues without blocking: from the buffer (refilled from the first waiting putter),
    /// else straight from the first waiting putter (capacity 0). Once the queue is closed,
    /// waiting putters keep their items (they get them back with `Closed`).
    // Always inline: every get begins with it, and the compiler kept it out of line in a
    // ping-pong's loop, where its call cost some 17 instructions (saving six registers,
    // the result passed through memory) and its `ret` ran between a resume and the next
    // switch (see "Inlined into the caller, for the return predictor").
    #[inline(always)]
    fn take(
        &mut self,
        served_putter: &AtomicU64,
        offer: Option<&HandOffCell<T>>,
    ) -> Option<(T, Option<SharedWaker>)> {
        // A channel's offered item is the oldest waiting putter's (and a channel buffers
        // nothing); after `close` the cell stays empty.
        if let Some((id, item)) = offer.and_then(HandOffCell::take_any) {
            served_putter.store(id, Ordering::Release);
            self.unfinished += 1;
            return Some((item, None));
        }
        let first = self.buf.pop_front();
        let putter = if self.closed {
            None
        } else {
            self.putters.pop_front()
        };
        if let Some(p) = &putter {
            // Release: pairs with the woken putter's Acquire load in `put`, so that what
            // happened to its entry under this lock (it is off the list, its item taken)
            // is visible to it without the lock, also on weakly ordered CPUs (aarch64).
            served_putter.store(p.id, Ordering::Release);
        }
        match (first, putter) {
            (Some(item), None) => Some((item, None)),
            (Some(item), Some(p)) => {
                self.buf.push_back(p.item);
                self.unfinished += 1;
                Some((item, wake(p.waker)))
            }
            (None, Some(p)) => {
                self.unfinished += 1;
                Some((p.item, wake(p.waker)))
            }
            (None, None) => None,
        }
    }

    /// Takes back the item handed to getter `id`, if one was (from `cell`, this queue's
    /// `Core::cell`, or from `handed`).
    #[inline]
    fn take_handed(&mut self, cell: &HandOffCell<T>, id: u64) -> Option<T> {
        if let Some(item) = cell.take(id) {
            return Some(item);
        }
        let pos = self.handed.iter().position(|(i, _)| *i == id)?;
        Some(self.handed.swap_remove(pos).1)
    }

    /// Removes getter `id` from the waiting getters, if it is still there.
    fn remove_getter(&mut self, id: u64) -> Option<Getter> {
        let pos = position(&self.getters, id, |g| g.id)?;
        self.getters.remove(pos)
    }

    /// Removes putter `id` from the waiting putters, if its item was not taken (from the
    /// list: see `Core::take_offer_back` for the offer cell).
    fn remove_putter(&mut self, id: u64) -> Option<Putter<T>> {
        let pos = position(&self.putters, id, |p| p.id)?;
        self.putters.remove(pos)
    }
}

/// Where waiter `id` is in a wait list sorted by id, if it is still there. A waiter that
/// was served is usually older than everyone still waiting, or the list is empty: that
/// is checked first, before a binary search.
#[inline]
fn position<E>(list: &VecDeque<E>, id: u64, id_of: impl Fn(&E) -> u64) -> Option<usize> {
    match list.front() {
        None => None,
        Some(first) if id_of(first) > id => None,
        Some(first) if id_of(first) == id => Some(0),
        Some(_) => list.binary_search_by_key(&id, id_of).ok(),
    }
}

/// Which wait list a [`Leave`] guard removes its entry from.
#[derive(Clone, Copy)]
enum List {
    Getters,
    Putters,
    Joiners,
}

/// Removes a waiter's entry when its wait ends abnormally (including a kill unwinding the
/// green thread). An item handed to a departing getter is passed on.
struct Leave<'a, T> {
    core: &'a Core<T>,
    list: List,
    id: u64,
    /// Cleared when the waiter already removed its entry itself (a wait that returns does,
    /// under the lock it holds anyway).
    armed: bool,
}

impl<T> Drop for Leave<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // A wait that returns normally disarms the guard: keep that check inline.
        if self.armed {
            self.leave();
        }
    }
}

impl<T> Leave<'_, T> {
    #[cold]
    #[inline(never)]
    fn leave(&mut self) {
        let mut st = self.core.lock();
        let id = self.id;
        let mut wakeup = None;
        // Dropped outside the lock: a putter's item is the caller's `T`.
        let mut removed_putter = None;
        let mut removed_offer = None;
        let mut removed_joiner = None;
        match self.list {
            List::Getters => {
                if st.remove_getter(id).is_none() {
                    if let Some(item) = st.take_handed(&self.core.cell, id) {
                        // Handed to us but never returned: on to the next waiting getter,
                        // else back to the front of the buffer.
                        match st.hand_to_getter(item) {
                            Ok(w) => wakeup = w,
                            Err(item) => st.buf.push_front(item),
                        }
                    }
                }
            }
            List::Putters => {
                removed_putter = st.remove_putter(id);
                if removed_putter.is_none() {
                    removed_offer = self.core.take_offer_back(id);
                }
            }
            List::Joiners => {
                let pos = st.joiners.iter().position(|(i, _)| *i == id);
                removed_joiner = pos.map(|p| st.joiners.swap_remove(p).1);
            }
        }
        drop(st);
        drop(removed_putter);
        drop(removed_offer);
        drop(removed_joiner);
        finish_wake(wakeup);
    }
}

/// How the first part of a blocking call, up to its yield, ended (`Core::put_begin`,
/// `Core::get_begin`).
enum Begun<R> {
    /// The call is over (served at once, failed, or parked and woken): its result.
    Done(R),
    /// The waiter with this id is queued without a waker, and yields next (see "Yielding
    /// first"), inlined into the caller.
    Yielding(u64),
}

/// How [`Core::offer_now`] ended.
enum OfferNow<'a, T> {
    /// Enqueued or handed to a getter.
    Done,
    /// The queue is closed: the item comes back.
    Closed(T),
    /// No room and no getter: the item comes back with the locked state.
    Full(MutexGuard<'a, State<T>>, T),
}

impl<T> Core<T> {
    pub(crate) fn new(capacity: Option<usize>) -> Core<T> {
        Core::with_offer(capacity, false)
    }

    /// A [`Channel`](super::Channel)'s core: capacity 0, with the offer cell.
    pub(crate) fn rendezvous() -> Core<T> {
        Core::with_offer(Some(0), true)
    }

    fn with_offer(capacity: Option<usize>, offer: bool) -> Core<T> {
        let (cell, to_cell) = HandOffCell::new();
        let (offer, to_offer) = match offer {
            true => {
                let (offer, to_offer) = HandOffCell::new();
                (Some(offer), Some(to_offer))
            }
            false => (None, None),
        };
        Core {
            state: Mutex::new(State {
                buf: VecDeque::new(),
                getters: VecDeque::new(),
                to_cell,
                handed: Vec::new(),
                to_offer,
                putters: VecDeque::new(),
                joiners: Vec::new(),
                unfinished: 0,
                closed: false,
                next_id: 0,
            }),
            capacity,
            served_putter: AtomicU64::new(0),
            cell,
            offer,
        }
    }

    #[inline]
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // No invariant is left half-updated by a panic under the lock (only `T`'s own
        // code could panic there, in a drop), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn capacity(&self) -> Option<usize> {
        self.capacity
    }

    /// Takes putter `id`'s item back out of the offer cell, if it is still there.
    #[inline]
    fn take_offer_back(&self, id: u64) -> Option<T> {
        self.offer.as_ref()?.take(id)
    }

    /// The guard that removes waiter `id`'s entry from `list` when dropped `armed`.
    #[inline(always)]
    fn leave_guard(&self, list: List, id: u64, armed: bool) -> Leave<'_, T> {
        Leave {
            core: self,
            list,
            id,
            armed,
        }
    }

    /// What every put begins with: under the lock, the item is enqueued or handed to a
    /// getter at once (then the lock is released and the getter woken); otherwise the
    /// item comes back, closed or with the locked state for the caller to wait on.
    #[inline(always)]
    fn offer_now(&self, item: T) -> OfferNow<'_, T> {
        let mut st = self.lock();
        if st.closed {
            return OfferNow::Closed(item);
        }
        match st.offer(item, self.capacity) {
            Ok(wakeup) => {
                drop(st);
                finish_wake(wakeup);
                OfferNow::Done
            }
            Err(item) => OfferNow::Full(st, item),
        }
    }

    pub(crate) fn try_put(&self, item: T) -> Result<(), TrySendError<T>> {
        match self.offer_now(item) {
            OfferNow::Done => Ok(()),
            OfferNow::Closed(item) => Err(TrySendError::Closed(item)),
            OfferNow::Full(_, item) => Err(TrySendError::Full(item)),
        }
    }

    /// A queue's `put`: a short call when there is room (the item is enqueued or handed
    /// to a getter at once); the wait is out of line.
    #[inline]
    pub(crate) fn put(&self, item: T, deadline: Option<Instant>) -> Result<(), SendError<T>> {
        match self.offer_now(item) {
            OfferNow::Done => Ok(()),
            OfferNow::Closed(item) => Err(SendError::Closed(item)),
            OfferNow::Full(st, item) => self.put_wait_out_of_line(st, item, deadline),
        }
    }

    /// A channel's `put`, inlined into the caller down to the switch of its yield (see
    /// "Inlined into the caller, for the return predictor"): a channel's put usually
    /// waits. What comes after the yield when the put was not served during it is out of
    /// line, and so is a park.
    #[inline(always)]
    pub(crate) fn put_rendezvous(
        &self,
        item: T,
        deadline: Option<Instant>,
    ) -> Result<(), SendError<T>> {
        match self.put_begin(item, deadline) {
            Begun::Done(done) => done,
            Begun::Yielding(id) => self.put_yielding(id, deadline),
        }
    }

    /// A channel's `put` up to its yield: the item is handed to a getter, or the put fails,
    /// or it parks (nothing else is ready: [`Begun::Done`]), or it is queued without a
    /// waker, or offered in the offer cell, to yield ([`Begun::Yielding`]). Inlined too:
    /// out of line, its call and its result passed back through memory cost a channel's
    /// hop some 35 instructions (of about 220).
    #[inline(always)]
    fn put_begin(&self, item: T, deadline: Option<Instant>) -> Begun<Result<(), SendError<T>>> {
        match self.offer_now(item) {
            OfferNow::Done => Begun::Done(Ok(())),
            OfferNow::Closed(item) => Begun::Done(Err(SendError::Closed(item))),
            OfferNow::Full(st, item) => self.put_wait_begin(st, item, deadline),
        }
    }

    /// A queue's `put` once there was no room, out of line: the whole wait.
    #[inline(never)]
    fn put_wait_out_of_line<'a>(
        &'a self,
        st: MutexGuard<'a, State<T>>,
        item: T,
        deadline: Option<Instant>,
    ) -> Result<(), SendError<T>> {
        match self.put_wait_begin(st, item, deadline) {
            Begun::Done(done) => done,
            Begun::Yielding(id) => self.put_yielding(id, deadline),
        }
    }

    /// `put` once there was no room, up to the yield (see "Yielding first"): with other
    /// green threads ready, the putter takes its place in line without a waker (a
    /// channel's oldest putter offers its item in the offer cell) and is to yield;
    /// otherwise it parks at once.
    #[inline(always)]
    fn put_wait_begin<'a>(
        &'a self,
        mut st: MutexGuard<'a, State<T>>,
        item: T,
        deadline: Option<Instant>,
    ) -> Begun<Result<(), SendError<T>>> {
        let id = st.new_id();
        if !shared_waker::may_yield_first() {
            let not_queued = self.leave_guard(List::Putters, id, false);
            return Begun::Done(self.put_park(st, id, Some(item), deadline, not_queued));
        }
        let state = &mut *st;
        // The oldest waiting putter of a channel offers its item in the cell.
        let offered = match &mut state.to_offer {
            Some(to_offer) if state.putters.is_empty() => to_offer.put(id, item),
            _ => Err(item),
        };
        if let Err(item) = offered {
            state.putters.push_back(Putter {
                id,
                item,
                waker: None,
            });
        }
        drop(st);
        Begun::Yielding(id)
    }

    /// Putter `id`, queued (or offering) without a waker, yields; inlined into the caller,
    /// so that it runs no `ret` between its resume and its own code when it was served
    /// during the yield (a get took its item), the hop of a ping-pong.
    #[inline(always)]
    fn put_yielding(&self, id: u64, deadline: Option<Instant>) -> Result<(), SendError<T>> {
        // Armed across the yield (a kill unwinds out of it), while the entry has no waker.
        let mut yielding = self.leave_guard(List::Putters, id, true);
        crate::yield_now();
        // Acquire: as in `put_park`.
        if self.served_putter.load(Ordering::Acquire) >= id {
            yielding.armed = false;
            return Ok(());
        }
        self.put_yielded_unserved(yielding, deadline)
    }

    /// A putter not served during its yield: takes its item back from the offer cell (if
    /// it offered it there) and parks, unless the queue was closed meanwhile. Out of line,
    /// off the hop's path. `yielding` is the guard armed across the yield.
    #[cold]
    #[inline(never)]
    fn put_yielded_unserved<'a>(
        &'a self,
        mut yielding: Leave<'a, T>,
        deadline: Option<Instant>,
    ) -> Result<(), SendError<T>> {
        let id = yielding.id;
        let st = self.lock();
        // Not taken from the cell: still the oldest waiting putter; it parks with its item
        // in the list, at the front.
        let mut item = self.take_offer_back(id);
        if let Some(item) = item.take_if(|_| st.closed) {
            // (`close` moves an offered item to the list: not expected here.)
            drop(st);
            yielding.armed = false;
            return Err(SendError::Closed(item));
        }
        if item.is_none() && (st.closed || position(&st.putters, id, |p| p.id).is_none()) {
            drop(st);
            yielding.armed = false;
            return self
                .put_woken_unserved(id, Ok(false))
                .expect("a closed or served putter is done");
        }
        self.put_park(st, id, item, deadline, yielding)
    }

    /// Putter `id` parks until a get takes its item: `item` is `Some` if it is not in the
    /// list (a new putter, or one back from the offer cell), `None` if it is there already
    /// (queued without a waker to yield). `queued` is the guard that removes an entry
    /// queued without a waker, disarmed here once the entry has its waker.
    #[inline(never)]
    fn put_park<'a>(
        &'a self,
        mut st: MutexGuard<'a, State<T>>,
        id: u64,
        item: Option<T>,
        deadline: Option<Instant>,
        mut queued: Leave<'a, T>,
    ) -> Result<(), SendError<T>> {
        let (_registration, waker) = shared_waker::register();
        match item {
            Some(item) => {
                // At the back, or (back from the offer cell) at the front: where its id
                // keeps the list sorted.
                let pos = st.putters.partition_point(|p| p.id < id);
                st.putters.insert(
                    pos,
                    Putter {
                        id,
                        item,
                        waker: Some(waker),
                    },
                );
            }
            None => {
                let pos = position(&st.putters, id, |p| p.id).expect("checked under this lock");
                st.putters[pos].waker = Some(waker);
            }
        }
        drop(st);
        let mut leave = self.leave_guard(List::Putters, id, true);
        queued.armed = false;
        loop {
            let woke = park_for(deadline);
            // Served (see `served_putter`)? Then the item was enqueued, whatever else
            // happened meanwhile, and the entry is gone: no need for the lock. Acquire:
            // pairs with the Release store of the get that took the item.
            if self.served_putter.load(Ordering::Acquire) >= id {
                leave.armed = false;
                return Ok(());
            }
            if let Some(done) = self.put_woken_unserved(id, woke) {
                leave.armed = false;
                return done;
            }
        }
    }

    /// A putter woken before `served_putter` showed its item taken (a deadline, a
    /// `Timeout`, `close`, or a spurious wake-up): decides under the lock. `None`: still
    /// waiting, park again; otherwise the entry is gone and this is the result. Out of
    /// line: the hop's path (the item was taken) never gets here.
    #[cold]
    #[inline(never)]
    fn put_woken_unserved(
        &self,
        id: u64,
        woke: Result<bool, WaitError>,
    ) -> Option<Result<(), SendError<T>>> {
        let mut st = self.lock();
        let Some(pos) = position(&st.putters, id, |p| p.id) else {
            // Taken (whatever else happened meanwhile, the item was enqueued).
            return Some(Ok(()));
        };
        let wait_error = match woke {
            _ if st.closed => None,
            Ok(false) => return None,
            Ok(true) => Some(WaitError::TimedOut),
            Err(e) => Some(e),
        };
        // Not taken: leave the list now, under this lock, with the item.
        let entry = st.putters.remove(pos).expect("found just now");
        drop(st);
        Some(Err(match wait_error {
            None => SendError::Closed(entry.item),
            Some(e) => SendError::from_wait(e, entry.item),
        }))
    }

    pub(crate) fn try_get(&self) -> Result<T, TryRecvError> {
        let mut st = self.lock();
        match st.take(&self.served_putter, self.offer.as_ref()) {
            Some((item, wakeup)) => {
                drop(st);
                finish_wake(wakeup);
                Ok(item)
            }
            None if st.closed => Err(TryRecvError::Closed),
            None => Err(TryRecvError::Empty),
        }
    }

    /// `get`, inlined into the caller down to the switch of its yield (see "Inlined into
    /// the caller, for the return predictor"): a channel's item offered in the cell is
    /// taken without the lock, else the get takes an item or its place in line under the
    /// lock ([`get_begin`](Self::get_begin)) and yields. What comes after the yield when
    /// the get was not served during it is out of line, and so is a park.
    #[inline(always)]
    pub(crate) fn get(&self, deadline: Option<Instant>) -> Result<T, RecvError> {
        // A channel's oldest putter offers its item in the cell: take it without the lock.
        if let Some((id, item)) = self.offer.as_ref().and_then(HandOffCell::take_any) {
            // Release: as in `State::take`. Written outside the lock, so a slower getter
            // may overwrite a younger id with an older one: a putter then only fails to
            // see that it was served and looks under the lock (`put_woken_unserved`).
            self.served_putter.store(id, Ordering::Release);
            return Ok(item);
        }
        match self.get_begin(deadline) {
            Begun::Done(done) => done,
            Begun::Yielding(id) => self.get_yielding(id, deadline),
        }
    }

    /// `get` once the offer cell had nothing, up to the yield: under the lock, an item is
    /// taken, or the get fails, or it parks (nothing else is ready: [`Begun::Done`]), or
    /// it takes its place in line without a waker, to yield ([`Begun::Yielding`]; see
    /// "Yielding first"). Inlined, as [`put_begin`](Self::put_begin) (out of line: some 20
    /// instructions more per hop of a queue, of about 300).
    #[inline(always)]
    fn get_begin(&self, deadline: Option<Instant>) -> Begun<Result<T, RecvError>> {
        let mut st = self.lock();
        if let Some((item, wakeup)) = st.take(&self.served_putter, self.offer.as_ref()) {
            drop(st);
            finish_wake(wakeup);
            return Begun::Done(Ok(item));
        }
        if st.closed {
            return Begun::Done(Err(RecvError::Closed));
        }
        let id = st.new_id();
        if !shared_waker::may_yield_first() {
            let not_queued = self.leave_guard(List::Getters, id, false);
            return Begun::Done(self.get_park(st, id, false, deadline, not_queued));
        }
        st.getters.push_back(Getter { id, waker: None });
        drop(st);
        Begun::Yielding(id)
    }

    /// Getter `id`, queued without a waker, yields; inlined into the caller, so that it
    /// runs no `ret` between its resume and its own code when it was served during the
    /// yield (a put handed it an item), the hop of a ping-pong.
    #[inline(always)]
    fn get_yielding(&self, id: u64, deadline: Option<Instant>) -> Result<T, RecvError> {
        // Armed across the yield (a kill unwinds out of it), while the entry has no waker.
        let mut yielding = self.leave_guard(List::Getters, id, true);
        crate::yield_now();
        // Served during the turn? The item is in the cell: no need for the lock.
        if let Some(item) = self.cell.take(id) {
            yielding.armed = false;
            return Ok(item);
        }
        self.get_yielded_unserved(yielding, deadline)
    }

    /// A getter that found no item in the cell after its yield: takes one handed to it
    /// under the lock, else parks, unless the queue was closed meanwhile. Out of line,
    /// off the hop's path. `yielding` is the guard armed across the yield.
    #[cold]
    #[inline(never)]
    fn get_yielded_unserved<'a>(
        &'a self,
        mut yielding: Leave<'a, T>,
        deadline: Option<Instant>,
    ) -> Result<T, RecvError> {
        let id = yielding.id;
        let mut st = self.lock();
        if let Some(item) = st.take_handed(&self.cell, id) {
            yielding.armed = false;
            return Ok(item);
        }
        if st.closed {
            yielding.armed = false;
            return Err(
                Self::get_woken_unserved(st, id, Ok(false)).expect("a closed queue ends the wait")
            );
        }
        self.get_park(st, id, true, deadline, yielding)
    }

    /// Getter `id` parks until an item is handed to it: `in_list` if its entry is there
    /// already (queued without a waker to yield), else it is queued now. `queued` is the
    /// guard that removes an entry queued without a waker, disarmed here once the entry
    /// has its waker.
    #[inline(never)]
    fn get_park<'a>(
        &'a self,
        mut st: MutexGuard<'a, State<T>>,
        id: u64,
        in_list: bool,
        deadline: Option<Instant>,
        mut queued: Leave<'a, T>,
    ) -> Result<T, RecvError> {
        let (_registration, waker) = shared_waker::register();
        if in_list {
            let pos = position(&st.getters, id, |g| g.id).expect("not handed an item");
            st.getters[pos].waker = Some(waker);
        } else {
            st.getters.push_back(Getter {
                id,
                waker: Some(waker),
            });
        }
        drop(st);
        let mut leave = self.leave_guard(List::Getters, id, true);
        queued.armed = false;
        loop {
            let woke = park_for(deadline);
            // As after the yield: an item in the cell is taken without the lock.
            if let Some(item) = self.cell.take(id) {
                leave.armed = false;
                return Ok(item);
            }
            let mut st = self.lock();
            if let Some(item) = st.take_handed(&self.cell, id) {
                // Whatever else happened (a deadline, a Timeout), the item did arrive.
                leave.armed = false;
                return Ok(item);
            }
            if let Some(error) = Self::get_woken_unserved(st, id, woke) {
                leave.armed = false;
                return Err(error);
            }
        }
    }

    /// A getter woken without an item (a deadline, a `Timeout`, `close`, or a spurious
    /// wake-up), with the lock held: `None`: still waiting, park again; otherwise the
    /// entry is gone and this is the error. Out of line, off the hop's path.
    #[cold]
    #[inline(never)]
    fn get_woken_unserved(
        mut st: MutexGuard<'_, State<T>>,
        id: u64,
        woke: Result<bool, WaitError>,
    ) -> Option<RecvError> {
        let error = if st.closed {
            RecvError::Closed
        } else {
            match woke {
                Ok(false) => return None,
                Ok(true) => RecvError::TimedOut,
                Err(e) => e.into(),
            }
        };
        // Not handed an item, so still waiting: leave the list now, under this lock.
        let entry = st.remove_getter(id);
        drop(st);
        drop(entry);
        Some(error)
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().buf.len()
    }

    pub(crate) fn close(&self) {
        let mut st = self.lock();
        if st.closed {
            return;
        }
        st.closed = true;
        // The offering putter (yielding, so nothing to wake) gets its item back with
        // `Closed`, from the list, like any other.
        if let Some((id, item)) = self.offer.as_ref().and_then(HandOffCell::take_any) {
            st.putters.push_front(Putter {
                id,
                item,
                waker: None,
            });
        }
        let wakeups: Vec<Wakeup> = st
            .getters
            .iter()
            .filter_map(|g| g.waker.as_ref())
            .chain(st.putters.iter().filter_map(|p| p.waker.as_ref()))
            .map(SharedWaker::wakeup)
            .collect();
        drop(st);
        for w in wakeups {
            w.wake();
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    pub(crate) fn unfinished(&self) -> usize {
        self.lock().unfinished
    }

    pub(crate) fn task_done(&self) {
        let mut st = self.lock();
        if st.unfinished == 0 {
            drop(st);
            panic!("Queue::task_done called more times than items were put");
        }
        st.unfinished -= 1;
        if st.unfinished > 0 {
            return;
        }
        let wakeups: Vec<Wakeup> = st.joiners.iter().map(|(_, w)| w.wakeup()).collect();
        drop(st);
        for w in wakeups {
            w.wake();
        }
    }

    /// Waits until every item put has been marked done: `Ok(true)`, or `Ok(false)` at
    /// `deadline`.
    pub(crate) fn join(&self, deadline: Option<Instant>) -> Result<bool, WaitError> {
        let mut st = self.lock();
        if st.unfinished == 0 {
            return Ok(true);
        }
        let (_registration, waker) = shared_waker::register();
        let id = st.new_id();
        st.joiners.push((id, waker));
        drop(st);
        let _leave = self.leave_guard(List::Joiners, id, true);
        loop {
            let woke = park_for(deadline);
            if self.lock().unfinished == 0 {
                return Ok(true);
            }
            match woke {
                Ok(false) => {}
                Ok(true) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }
}

/// A FIFO queue for green threads that also works between OS threads (gevent's
/// `gevent.queue.JoinableQueue`).
///
/// Unbounded ([`Queue::new`]) or bounded ([`Queue::bounded`]: `put` blocks while it is
/// full). Blocked getters and putters are served in FIFO order. A clone is another handle
/// to the same queue (an `Arc` inside); with `T: Send` the queue is `Send + Sync`, and a
/// `put` from another OS thread (a plain `std::thread`, or a green thread of another hub)
/// wakes the green thread blocked in `get`. Every blocking call can be bounded by its
/// `_timeout` variant or a [`Timeout`](crate::Timeout) and ends with nothing left
/// registered; [`close`](Queue::close) wakes everyone with an error.
///
/// Items are handed off: a `put` that finds a getter waiting gives it the item directly,
/// and a `get` that frees a slot moves the first blocked putter's item in, so a newcomer
/// never overtakes a woken waiter. An item handed to a getter that is then killed goes
/// back to the front of the queue (which may briefly hold one item over its capacity);
/// one handed to a getter whose timeout fires meanwhile is returned to it. A green thread
/// blocked on a queue is never reported as `WouldBlockForever`, since another OS thread
/// may still put: bound such waits, or close the queue.
///
/// A call that has to wait while other green threads of its hub are ready takes its place
/// in line and yields once before it parks: a producer and a consumer on one hub then
/// serve each other without waking anyone.
///
/// ```
/// use verdant::Queue;
///
/// let q = Queue::bounded(2);
/// let producer = {
///     let q = q.clone();
///     verdant::spawn(move || {
///         for i in 0..5 {
///             q.put(i).unwrap(); // blocks while two items wait
///         }
///         q.close();
///     })
/// };
/// let mut got = Vec::new();
/// while let Ok(i) = q.get() {
///     got.push(i);
///     q.task_done();
/// }
/// producer.join().unwrap();
/// assert_eq!(got, [0, 1, 2, 3, 4]);
/// q.join().unwrap(); // every item was marked done
/// ```
pub struct Queue<T> {
    core: Arc<Core<T>>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            core: self.core.clone(),
        }
    }
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue::new()
    }
}

impl<T> Queue<T> {
    /// An unbounded queue: `put` never blocks.
    ///
    /// ```
    /// let q = verdant::Queue::new();
    /// q.put("hello").unwrap();
    /// assert_eq!(q.get(), Ok("hello"));
    /// ```
    pub fn new() -> Queue<T> {
        Queue {
            core: Arc::new(Core::new(None)),
        }
    }

    /// A queue holding at most `capacity` items: `put` blocks while it is full.
    /// `bounded(0)` is a rendezvous queue, like a [`Channel`](super::Channel).
    ///
    /// ```
    /// use verdant::sync::TrySendError;
    /// let q = verdant::Queue::bounded(1);
    /// q.try_put(1).unwrap();
    /// assert_eq!(q.try_put(2), Err(TrySendError::Full(2)));
    /// assert!(q.is_full());
    /// ```
    pub fn bounded(capacity: usize) -> Queue<T> {
        Queue {
            core: Arc::new(Core::new(Some(capacity))),
        }
    }

    /// Enqueues `item`, blocking the green thread while the queue is full.
    ///
    /// Fails with [`SendError::Closed`] if the queue is (or gets) closed, and with
    /// `TimedOut` if a [`Timeout`](crate::Timeout) covering the call fires; the error holds
    /// the item. A kill unwinds out of it and drops the item, which was not enqueued.
    #[inline]
    pub fn put(&self, item: T) -> Result<(), SendError<T>> {
        self.core.put(item, None)
    }

    /// Like [`put`](Self::put), giving up after `timeout` with [`SendError::TimedOut`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use verdant::sync::SendError;
    /// let q = verdant::Queue::bounded(1);
    /// q.put(1).unwrap();
    /// let r = q.put_timeout(2, Duration::from_millis(5));
    /// assert!(matches!(r, Err(SendError::TimedOut(2))));
    /// assert_eq!(q.len(), 1);
    /// ```
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), SendError<T>> {
        self.core.put(item, deadline_after(timeout))
    }

    /// Enqueues `item` if there is room now, without blocking.
    pub fn try_put(&self, item: T) -> Result<(), TrySendError<T>> {
        self.core.try_put(item)
    }

    /// Dequeues the oldest item, blocking the green thread while the queue is empty.
    ///
    /// Fails with [`RecvError::Closed`] once the queue is closed and drained, and with
    /// `TimedOut` if a [`Timeout`](crate::Timeout) covering the call fires. A kill unwinds
    /// out of it; an item already handed to the killed getter goes back to the queue.
    #[inline]
    pub fn get(&self) -> Result<T, RecvError> {
        self.core.get(None)
    }

    /// Like [`get`](Self::get), giving up after `timeout` with [`RecvError::TimedOut`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use verdant::sync::RecvError;
    /// let q: verdant::Queue<u8> = verdant::Queue::new();
    /// assert_eq!(q.get_timeout(Duration::from_millis(5)), Err(RecvError::TimedOut));
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, RecvError> {
        self.core.get(deadline_after(timeout))
    }

    /// Dequeues the oldest item if there is one, without blocking.
    ///
    /// ```
    /// use verdant::sync::TryRecvError;
    /// let q = verdant::Queue::new();
    /// assert_eq!(q.try_get(), Err(TryRecvError::Empty));
    /// q.put(7).unwrap();
    /// assert_eq!(q.try_get(), Ok(7));
    /// q.close();
    /// assert_eq!(q.try_get(), Err(TryRecvError::Closed));
    /// ```
    pub fn try_get(&self) -> Result<T, TryRecvError> {
        self.core.try_get()
    }

    /// Items buffered now (blocked putters' items are not counted).
    pub fn len(&self) -> usize {
        self.core.len()
    }

    /// Whether no item is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a `put` would block now (always `false` for an unbounded queue).
    pub fn is_full(&self) -> bool {
        self.core.capacity().is_some_and(|c| self.len() >= c)
    }

    /// The bound given to [`bounded`](Self::bounded); `None` if unbounded.
    pub fn capacity(&self) -> Option<usize> {
        self.core.capacity()
    }

    /// Marks one item taken from the queue as processed (for [`join`](Self::join)).
    ///
    /// # Panics
    /// If called more times than items were put (Python's `ValueError`).
    pub fn task_done(&self) {
        self.core.task_done()
    }

    /// Items put and not yet marked done with [`task_done`](Self::task_done).
    pub fn unfinished_tasks(&self) -> usize {
        self.core.unfinished()
    }

    /// Blocks until every item ever put has been marked done with
    /// [`task_done`](Self::task_done) (gevent's `JoinableQueue.join`).
    ///
    /// ```
    /// let q = verdant::Queue::new();
    /// for job in 0..3 {
    ///     q.put(job).unwrap();
    /// }
    /// let worker = {
    ///     let q = q.clone();
    ///     verdant::spawn(move || while let Ok(_job) = q.get() {
    ///         q.task_done();
    ///     })
    /// };
    /// q.join().unwrap();
    /// assert_eq!(q.unfinished_tasks(), 0);
    /// q.close();
    /// worker.join().unwrap();
    /// ```
    pub fn join(&self) -> Result<(), WaitError> {
        self.core.join(None).map(|_| ())
    }

    /// Like [`join`](Self::join), giving up after `timeout`: `Ok(true)` if every item was
    /// marked done, `Ok(false)` if the time ran out.
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool, WaitError> {
        self.core.join(deadline_after(timeout))
    }

    /// Closes the queue: wakes every blocked `put` (which returns its item in
    /// [`SendError::Closed`]) and fails later puts; getters still drain the buffered items,
    /// then get [`RecvError::Closed`]. Idempotent.
    ///
    /// ```
    /// use verdant::sync::RecvError;
    /// let q = verdant::Queue::new();
    /// let consumer = {
    ///     let q = q.clone();
    ///     verdant::spawn(move || q.get())
    /// };
    /// verdant::yield_now(); // the consumer blocks in get()
    /// q.close();
    /// assert_eq!(consumer.join().unwrap(), Err::<(), _>(RecvError::Closed));
    /// ```
    pub fn close(&self) {
        self.core.close()
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.core.is_closed()
    }

    /// A blocking iterator over the items, ending when the queue is closed and drained (or
    /// a blocking `get` fails otherwise).
    ///
    /// ```
    /// let q = verdant::Queue::new();
    /// q.put(1).unwrap();
    /// q.put(2).unwrap();
    /// q.close();
    /// assert_eq!(q.iter().collect::<Vec<_>>(), [1, 2]);
    /// ```
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { queue: self }
    }
}

/// The iterator of [`Queue::iter`].
#[derive(Debug)]
pub struct Iter<'a, T> {
    queue: &'a Queue<T>,
}

impl<T> Iterator for Iter<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.queue.get().ok()
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.core.lock();
        f.debug_struct("Queue")
            .field("len", &st.buf.len())
            .field("capacity", &self.core.capacity)
            .field("getters", &st.getters.len())
            .field("putters", &self.core.putters_waiting(&st))
            .field("unfinished_tasks", &st.unfinished)
            .field("closed", &st.closed)
            .finish()
    }
}

impl<T> Core<T> {
    /// Putters waiting: in the list, and the one offering its item in the cell.
    fn putters_waiting(&self, st: &State<T>) -> usize {
        let offering = self.offer.as_ref().is_some_and(HandOffCell::is_filled);
        st.putters.len() + usize::from(offering)
    }

    pub(crate) fn debug_fields(&self, s: &mut fmt::DebugStruct<'_, '_>) {
        let st = self.lock();
        s.field("getters", &st.getters.len())
            .field("putters", &self.putters_waiting(&st))
            .field("closed", &st.closed);
    }
}

#[cfg(test)]
impl<T> Queue<T> {
    /// Waiters queued without a waker (yielding once before they park), and all waiters.
    pub(crate) fn waiters_yielding_and_all(&self) -> (usize, usize) {
        self.core.waiters_yielding_and_all()
    }

    pub(crate) fn handed_in_cell_and_list(&self) -> (usize, usize) {
        self.core.handed_in_cell_and_list()
    }
}

#[cfg(test)]
impl<T> Core<T> {
    pub(crate) fn waiters_yielding_and_all(&self) -> (usize, usize) {
        let st = self.lock();
        let offering = usize::from(self.offer.as_ref().is_some_and(HandOffCell::is_filled));
        let yielding = st.getters.iter().filter(|g| g.waker.is_none()).count()
            + st.putters.iter().filter(|p| p.waker.is_none()).count()
            + offering;
        (yielding, st.getters.len() + st.putters.len() + offering)
    }
    /// Items handed to getters and not picked up yet: in the hand-off cell (0 or 1), and
    /// in the `handed` list.
    pub(crate) fn handed_in_cell_and_list(&self) -> (usize, usize) {
        let st = self.lock();
        (usize::from(self.cell.is_filled()), st.handed.len())
    }
}
