//! Groups of green threads (gevent's `gevent.pool`): [`Group`] tracks the green threads it
//! spawned so they can be joined or killed together; [`Pool`] is a group that runs at most
//! `n` of them at once, so [`Pool::spawn`] blocks while the pool is full.
//!
//! ```
//! use verdant::Pool;
//!
//! let pool = Pool::new(2); // at most two fetches in flight
//! let lengths = pool.map(["a", "bb", "ccc"], |s| s.len());
//! assert_eq!(lengths, [1, 2, 3]);
//! ```
//!
//! ## Design
//! A group is a counter of *slots* (green threads spawned and not finished), the records
//! of its members that have started, and two FIFO wait lists, all on one hub (a group and
//! its green threads are `!Send`, like the green threads themselves):
//!
//! ```text
//!   spawn ── acquire a slot (Pool: wait in `slot_waiters` while full) ──▶ crate::spawn(wrapper)
//!   wrapper: register in `members` ─▶ run f ─▶ (return, panic or kill) ─▶ leave `members`,
//!            release the slot: handed to the first waiting spawner, else freed;
//!            the last release wakes `idle_waiters` (join)
//! ```
//!
//! A freed slot is handed directly to the first blocked spawner, so spawners are served in
//! FIFO order and a newcomer cannot take the slot from under a woken one; a spawner that
//! is interrupted after being handed a slot passes it on. Members hold only a weak
//! reference to the group, so dropping the group detaches them (they keep running).
//! [`kill`](Group::kill) kills the members that started and bumps an epoch that members
//! spawned earlier check when they start, so those never run.

use crate::hub::{self, current_task, JoinError, JoinHandle, Killed, TaskRef, WaitError};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::iter::Fuse;
use std::panic::{self, AssertUnwindSafe};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

struct SlotWaiter {
    id: u64,
    task: TaskRef,
    granted: bool,
}

struct Inner {
    limit: Option<usize>,
    /// Members spawned and not finished: the slots in use.
    active: Cell<usize>,
    /// Members that have started, by task id.
    members: RefCell<HashMap<u64, TaskRef>>,
    slot_waiters: RefCell<VecDeque<SlotWaiter>>,
    idle_waiters: RefCell<Vec<(u64, TaskRef)>>,
    kill_epoch: Cell<u64>,
    next_id: Cell<u64>,
}

fn park_for(deadline: Option<Instant>) -> Result<bool, WaitError> {
    match deadline {
        Some(d) => hub::park_until(d),
        None => hub::park().map(|()| false),
    }
}

impl Inner {
    fn new(limit: Option<usize>) -> Rc<Inner> {
        Rc::new(Inner {
            limit,
            active: Cell::new(0),
            members: RefCell::new(HashMap::new()),
            slot_waiters: RefCell::new(VecDeque::new()),
            idle_waiters: RefCell::new(Vec::new()),
            kill_epoch: Cell::new(0),
            next_id: Cell::new(0),
        })
    }

    fn new_id(&self) -> u64 {
        self.next_id.set(self.next_id.get() + 1);
        self.next_id.get()
    }

    fn free_count(&self) -> usize {
        match self.limit {
            Some(limit) => limit.saturating_sub(self.active.get()),
            None => usize::MAX,
        }
    }

    /// Takes a slot if one is free and nobody queues for one.
    fn try_acquire(&self) -> bool {
        let waiting = self.slot_waiters.borrow().iter().any(|w| !w.granted);
        if self.free_count() > 0 && !waiting {
            self.active.set(self.active.get() + 1);
            true
        } else {
            false
        }
    }

    /// Takes a slot, waiting in FIFO order while none is free: `Ok(false)` at `deadline`.
    fn acquire(&self, deadline: Option<Instant>) -> Result<bool, WaitError> {
        if self.try_acquire() {
            return Ok(true);
        }
        let id = self.new_id();
        self.slot_waiters.borrow_mut().push_back(SlotWaiter {
            id,
            task: current_task(),
            granted: false,
        });
        let mut leave = LeaveSlotQueue {
            inner: self,
            id,
            keep: false,
        };
        loop {
            let woke = park_for(deadline);
            let granted = self
                .slot_waiters
                .borrow()
                .iter()
                .any(|w| w.id == id && w.granted);
            if granted {
                leave.keep = true;
                return Ok(true);
            }
            match woke {
                Ok(false) => {}
                Ok(true) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    /// Gives a slot back: to the first waiting spawner, else frees it.
    fn release(&self) {
        let next = {
            let mut waiters = self.slot_waiters.borrow_mut();
            waiters.iter_mut().find(|w| !w.granted).map(|w| {
                w.granted = true;
                w.task.clone()
            })
        };
        if let Some(task) = next {
            task.wake();
            return;
        }
        self.active.set(self.active.get() - 1);
        if self.active.get() == 0 {
            let idle: Vec<TaskRef> = self
                .idle_waiters
                .borrow()
                .iter()
                .map(|(_, t)| t.clone())
                .collect();
            for task in idle {
                task.wake();
            }
        }
    }

    /// Waits until no member is left: `Ok(false)` at `deadline`.
    fn wait_idle(&self, deadline: Option<Instant>) -> Result<bool, WaitError> {
        if self.active.get() == 0 {
            return Ok(true);
        }
        let id = self.new_id();
        self.idle_waiters.borrow_mut().push((id, current_task()));
        let _leave = LeaveIdleQueue { inner: self, id };
        loop {
            let woke = park_for(deadline);
            if self.active.get() == 0 {
                return Ok(true);
            }
            match woke {
                Ok(false) => {}
                Ok(true) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    fn spawn<F, T>(self: &Rc<Self>, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        if let Err(e) = self.acquire(None) {
            panic!("verdant pool: waiting for a free slot to spawn in failed: {e}");
        }
        self.spawn_in_slot(f)
    }

    /// Spawns a member in a slot already acquired.
    fn spawn_in_slot<F, T>(self: &Rc<Self>, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        let group = Rc::downgrade(self);
        let epoch = self.kill_epoch.get();
        let spawned = crate::Builder::new().spawn(move || {
            let member = Member::enter(group, epoch);
            if member.killed_before_start {
                drop(member);
                panic::resume_unwind(Box::new(Killed));
            }
            let value = f();
            drop(member);
            value
        });
        match spawned {
            Ok(handle) => handle,
            Err(e) => {
                self.release();
                panic!("verdant pool: could not spawn a green thread: {e}");
            }
        }
    }

    fn kill(&self) {
        self.kill_epoch.set(self.kill_epoch.get() + 1);
        let me = current_task();
        let members: Vec<TaskRef> = self.members.borrow().values().cloned().collect();
        let mut me_too = false;
        for task in members {
            if task.ptr_eq(&me) {
                me_too = true;
            } else if !task.is_finished() {
                // What JoinHandle::kill does: the hub delivers it at the next switch-in.
                task.kill.set(true);
                task.wake();
            }
        }
        if me_too {
            panic::resume_unwind(Box::new(Killed));
        }
        // An interrupted wait leaves the kills delivered; only the waiting is cut short.
        let _ = self.wait_idle(None);
    }
}

/// Removes a spawner's entry from the slot queue; passes on a slot granted but not used.
struct LeaveSlotQueue<'a> {
    inner: &'a Inner,
    id: u64,
    keep: bool,
}

impl Drop for LeaveSlotQueue<'_> {
    fn drop(&mut self) {
        let entry = {
            let mut waiters = self.inner.slot_waiters.borrow_mut();
            let pos = waiters.iter().position(|w| w.id == self.id);
            pos.and_then(|p| waiters.remove(p))
        };
        if entry.is_some_and(|w| w.granted) && !self.keep {
            self.inner.release();
        }
    }
}

struct LeaveIdleQueue<'a> {
    inner: &'a Inner,
    id: u64,
}

impl Drop for LeaveIdleQueue<'_> {
    fn drop(&mut self) {
        self.inner
            .idle_waiters
            .borrow_mut()
            .retain(|(id, _)| *id != self.id);
    }
}

/// A running member's registration; dropping it (however the member ends) releases its slot.
struct Member {
    group: Weak<Inner>,
    task_id: u64,
    killed_before_start: bool,
}

impl Member {
    fn enter(group: Weak<Inner>, epoch: u64) -> Member {
        let task = current_task();
        let task_id = task.id;
        let mut killed_before_start = false;
        if let Some(inner) = group.upgrade() {
            if inner.kill_epoch.get() != epoch {
                killed_before_start = true;
            } else {
                inner.members.borrow_mut().insert(task_id, task);
            }
        }
        Member {
            group,
            task_id,
            killed_before_start,
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(inner) = self.group.upgrade() {
            inner.members.borrow_mut().remove(&self.task_id);
            inner.release();
        }
    }
}

fn map_in<I, F, T>(inner: &Rc<Inner>, iter: I, f: F) -> Vec<T>
where
    I: IntoIterator,
    I::Item: 'static,
    F: Fn(I::Item) -> T + 'static,
    T: 'static,
{
    let f = Rc::new(f);
    let handles: Vec<JoinHandle<T>> = iter
        .into_iter()
        .map(|item| {
            let f = f.clone();
            inner.spawn(move || f(item))
        })
        .collect();
    let mut results = Vec::with_capacity(handles.len());
    let mut handles = handles.into_iter();
    while let Some(handle) = handles.next() {
        match handle.join() {
            Ok(value) => results.push(value),
            Err(e) => {
                for rest in handles {
                    rest.kill();
                }
                match e {
                    JoinError::Panicked(payload) => panic::resume_unwind(payload),
                    other => panic!("verdant pool: map: a task did not return a value: {other}"),
                }
            }
        }
    }
    results
}

/// Results of [`imap_unordered`](Pool::imap_unordered)'s tasks, in completion order.
struct Completions<T> {
    results: RefCell<VecDeque<Result<T, Box<dyn Any + Send>>>>,
    /// Tasks that ended without a result (killed).
    lost: Cell<usize>,
    consumer: RefCell<Option<TaskRef>>,
}

impl<T> Completions<T> {
    fn notify(&self) {
        if let Some(task) = self.consumer.borrow().as_ref() {
            task.wake();
        }
    }
}

/// Records a task's outcome; one killed before delivering counts as lost.
struct Deliver<T> {
    to: Rc<Completions<T>>,
    delivered: bool,
}

impl<T> Drop for Deliver<T> {
    fn drop(&mut self) {
        if !self.delivered {
            self.to.lost.set(self.to.lost.get() + 1);
            self.to.notify();
        }
    }
}

/// The iterator of [`Pool::imap_unordered`] and [`Group::imap_unordered`]: results in the
/// order the tasks finish.
///
/// It spawns lazily: as many tasks as the pool has free slots, and one more (waiting for a
/// slot) only when none of its own is running. A task that panicked re-raises its panic in
/// `next`; tasks killed (by [`Pool::kill`]) yield nothing.
///
/// # Panics
/// `next` panics if waiting for a result is interrupted (a [`Timeout`](crate::Timeout)
/// fired, or nothing could ever finish the tasks).
pub struct ImapUnordered<I: Iterator, F, T> {
    inner: Rc<Inner>,
    source: Fuse<I>,
    f: Rc<F>,
    done: Rc<Completions<T>>,
    pending: usize,
}

impl<I, F, T> ImapUnordered<I, F, T>
where
    I: Iterator,
    I::Item: 'static,
    F: Fn(I::Item) -> T + 'static,
    T: 'static,
{
    fn new(inner: Rc<Inner>, iter: I, f: F) -> Self {
        ImapUnordered {
            inner,
            source: iter.fuse(),
            f: Rc::new(f),
            done: Rc::new(Completions {
                results: RefCell::new(VecDeque::new()),
                lost: Cell::new(0),
                consumer: RefCell::new(None),
            }),
            pending: 0,
        }
    }

    fn launch(&mut self, item: I::Item, slot_held: bool) {
        let f = self.f.clone();
        let done = self.done.clone();
        let body = move || {
            let mut deliver = Deliver {
                to: done,
                delivered: false,
            };
            let outcome = match panic::catch_unwind(AssertUnwindSafe(|| f(item))) {
                Ok(value) => Ok(value),
                Err(p) if p.is::<Killed>() => panic::resume_unwind(p),
                Err(p) => Err(p),
            };
            deliver.to.results.borrow_mut().push_back(outcome);
            deliver.delivered = true;
            deliver.to.notify();
        };
        // The handle is dropped: the task runs detached, reporting through `done`.
        drop(if slot_held {
            self.inner.spawn_in_slot(body)
        } else {
            self.inner.spawn(body)
        });
        self.pending += 1;
    }
}

impl<I, F, T> Iterator for ImapUnordered<I, F, T>
where
    I: Iterator,
    I::Item: 'static,
    F: Fn(I::Item) -> T + 'static,
    T: 'static,
{
    type Item = T;

    fn next(&mut self) -> Option<T> {
        loop {
            let lost = self.done.lost.replace(0);
            self.pending -= lost;
            let ready = self.done.results.borrow_mut().pop_front();
            if let Some(outcome) = ready {
                self.pending -= 1;
                return Some(outcome.unwrap_or_else(|p| panic::resume_unwind(p)));
            }
            // Top up: every free slot, or one waited for if none of ours runs.
            loop {
                let slot_held = self.inner.try_acquire();
                if !slot_held && self.pending > 0 {
                    break;
                }
                match self.source.next() {
                    Some(item) => self.launch(item, slot_held),
                    None => {
                        if slot_held {
                            self.inner.release();
                        }
                        break;
                    }
                }
            }
            if self.pending == 0 {
                return None;
            }
            *self.done.consumer.borrow_mut() = Some(current_task());
            let woke = hub::park();
            *self.done.consumer.borrow_mut() = None;
            if let Err(e) = woke {
                panic!("verdant pool: imap_unordered: waiting for a result failed: {e}");
            }
        }
    }
}

impl<I: Iterator, F, T> fmt::Debug for ImapUnordered<I, F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImapUnordered")
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

/// Green threads spawned together, so they can be joined or killed together (gevent's
/// `gevent.pool.Group`). Unbounded: see [`Pool`] for a bounded one.
///
/// ```
/// use std::time::Duration;
/// let group = verdant::Group::new();
/// for ms in [3, 1, 2] {
///     group.spawn(move || verdant::sleep(Duration::from_millis(ms)).unwrap());
/// }
/// assert_eq!(group.len(), 3);
/// group.join().unwrap();
/// assert!(group.is_empty());
/// ```
pub struct Group {
    inner: Rc<Inner>,
}

impl Default for Group {
    fn default() -> Self {
        Group::new()
    }
}

impl Group {
    /// An empty group.
    pub fn new() -> Group {
        Group {
            inner: Inner::new(None),
        }
    }

    /// Spawns `f` as a member of the group (see [`crate::spawn`]).
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        self.inner.spawn(f)
    }

    /// Runs `f` on every item, each in its own member, and returns the results in the
    /// items' order.
    ///
    /// # Panics
    /// Re-raises the panic of a task that panicked (after killing the tasks after it);
    /// panics if a task was killed.
    pub fn map<I, F, T>(&self, iter: I, f: F) -> Vec<T>
    where
        I: IntoIterator,
        I::Item: 'static,
        F: Fn(I::Item) -> T + 'static,
        T: 'static,
    {
        map_in(&self.inner, iter, f)
    }

    /// Runs `f` on every item, each in its own member, yielding results in the order the
    /// tasks finish (see [`ImapUnordered`]).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let group = verdant::Group::new();
    /// // Deadlines from one instant, so that the order holds even where starting the
    /// // tasks is slow (an emulator, a loaded machine).
    /// let start = Instant::now();
    /// let order: Vec<u64> = group
    ///     .imap_unordered([300, 10, 150], move |ms| {
    ///         verdant::sleep_until(start + Duration::from_millis(ms)).unwrap();
    ///         ms
    ///     })
    ///     .collect();
    /// assert_eq!(order, [10, 150, 300]);
    /// ```
    pub fn imap_unordered<I, F, T>(&self, iter: I, f: F) -> ImapUnordered<I::IntoIter, F, T>
    where
        I: IntoIterator,
        I::Item: 'static,
        F: Fn(I::Item) -> T + 'static,
        T: 'static,
    {
        ImapUnordered::new(self.inner.clone(), iter.into_iter(), f)
    }

    /// Waits until every member has finished.
    pub fn join(&self) -> Result<(), WaitError> {
        self.inner.wait_idle(None).map(|_| ())
    }

    /// Like [`join`](Self::join), giving up after `timeout`: `Ok(true)` if every member
    /// finished, `Ok(false)` if the time ran out.
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool, WaitError> {
        self.inner.wait_idle(Instant::now().checked_add(timeout))
    }

    /// Kills every member and waits for them to finish (a [`Timeout`](crate::Timeout) can
    /// cut the waiting short). Members spawned but not started never run. Called from a
    /// member, it kills the others, then unwinds the caller.
    pub fn kill(&self) {
        self.inner.kill()
    }

    /// Members spawned and not finished.
    pub fn len(&self) -> usize {
        self.inner.active.get()
    }

    /// Whether no member is left.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group").field("len", &self.len()).finish()
    }
}

/// A [`Group`] that runs at most `size` green threads at once (gevent's
/// `gevent.pool.Pool`): [`spawn`](Pool::spawn) blocks while the pool is full, and spawners
/// are served in FIFO order.
///
/// ```
/// use std::cell::Cell;
/// use std::rc::Rc;
/// use std::time::Duration;
///
/// let pool = verdant::Pool::new(3);
/// let (now, peak) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
/// for _ in 0..10 {
///     let (now, peak) = (now.clone(), peak.clone());
///     pool.spawn(move || {
///         now.set(now.get() + 1);
///         peak.set(peak.get().max(now.get()));
///         verdant::sleep(Duration::from_millis(1)).unwrap();
///         now.set(now.get() - 1);
///     });
/// }
/// pool.join().unwrap();
/// assert_eq!(peak.get(), 3);
/// ```
pub struct Pool {
    group: Group,
    size: usize,
}

impl Pool {
    /// A pool that runs at most `size` green threads at once.
    ///
    /// # Panics
    /// If `size` is 0 (nothing could ever run).
    pub fn new(size: usize) -> Pool {
        assert!(
            size > 0,
            "verdant::Pool::new(0): a pool needs at least one slot"
        );
        Pool {
            group: Group {
                inner: Inner::new(Some(size)),
            },
            size,
        }
    }

    /// Spawns `f` in the pool, first blocking the current green thread while the pool is
    /// full. Returns the member's [`JoinHandle`].
    ///
    /// # Panics
    /// If waiting for a free slot is interrupted (a [`Timeout`](crate::Timeout) fired, or
    /// nothing could ever free a slot). Call [`wait_available`](Self::wait_available) first
    /// to get that as an error.
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        self.group.spawn(f)
    }

    /// Waits until a slot is free (gevent's `wait_available`). A [`spawn`](Self::spawn)
    /// right after it, with no blocking call between, does not block unless other
    /// spawners queue for slots too.
    ///
    /// ```
    /// let pool = verdant::Pool::new(1);
    /// pool.spawn(|| verdant::sleep(std::time::Duration::from_millis(2)).unwrap());
    /// assert_eq!(pool.free_count(), 0);
    /// pool.wait_available().unwrap();
    /// assert_eq!(pool.free_count(), 1);
    /// ```
    pub fn wait_available(&self) -> Result<(), WaitError> {
        self.group.inner.acquire(None)?;
        self.group.inner.release();
        Ok(())
    }

    /// See [`Group::map`]; at most `size` tasks run at once.
    ///
    /// ```
    /// let pool = verdant::Pool::new(2);
    /// assert_eq!(pool.map(1..=4, |n| n * 10), [10, 20, 30, 40]);
    /// ```
    pub fn map<I, F, T>(&self, iter: I, f: F) -> Vec<T>
    where
        I: IntoIterator,
        I::Item: 'static,
        F: Fn(I::Item) -> T + 'static,
        T: 'static,
    {
        self.group.map(iter, f)
    }

    /// See [`Group::imap_unordered`]; at most `size` tasks run at once.
    pub fn imap_unordered<I, F, T>(&self, iter: I, f: F) -> ImapUnordered<I::IntoIter, F, T>
    where
        I: IntoIterator,
        I::Item: 'static,
        F: Fn(I::Item) -> T + 'static,
        T: 'static,
    {
        self.group.imap_unordered(iter, f)
    }

    /// Waits until every member has finished.
    pub fn join(&self) -> Result<(), WaitError> {
        self.group.join()
    }

    /// See [`Group::join_timeout`].
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool, WaitError> {
        self.group.join_timeout(timeout)
    }

    /// See [`Group::kill`].
    pub fn kill(&self) {
        self.group.kill()
    }

    /// Slots free now: how many spawns would not block.
    pub fn free_count(&self) -> usize {
        self.group.inner.free_count()
    }

    /// Members spawned and not finished.
    pub fn len(&self) -> usize {
        self.group.len()
    }

    /// Whether no member is left.
    pub fn is_empty(&self) -> bool {
        self.group.is_empty()
    }

    /// The most members that run at once.
    pub fn size(&self) -> usize {
        self.size
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("size", &self.size)
            .field("len", &self.len())
            .finish()
    }
}
