//! The hub: one scheduler greenlet per OS thread, created on first use (gevent's `get_hub()`).
//!
//! The thread's own code runs in its *main* green thread. A green thread that blocks
//! (sleeps, joins, waits on a queue or a socket) registers how it wants to be woken and
//! switches to the hub; the hub runs whatever is ready, fires due timers, polls the reactor,
//! and switches back to the green threads that were woken. Only the hub module switches
//! between green threads.
//!
//! ```text
//!            ┌──────────────── hub greenlet (parent of every spawned green thread) ───────────┐
//!            │ loop {                                                                          │
//!            │   drain the cross-thread inbox      (RemoteWaker::wake from other OS threads)    │
//!            │   fire due timers                   (sleep, Timeout, spawn_later)               │
//!            │   run the green threads that were ready when the turn began (FIFO, fair)        │
//!            │   poll the reactor: zero timeout if something is ready (and at least every      │
//!            │   POLL_EVERY runs, so readiness is not starved), else until the next timer      │
//!            │ }                                                                               │
//!            └─────────────────────────────────────────────────────────────────────────────────┘
//!   green thread:  park()  ── switch ──▶ hub ── switch ──▶ (later) back into park()
//!   or, mid-turn:  park()  ── switch ──▶ the next ready green thread (direct hand-off)
//! ```
//!
//! ## Direct hand-off
//! A green thread that parks or yields while the hub's turn still has runs left switches
//! straight to the next ready green thread, doing on its own stack what the hub's loop
//! would have done next: same queue, same order, same budget, one switch instead of two.
//! At the end of a turn it also begins the next one itself when the hub would do nothing
//! in between (the inbox is empty, no timer is due, the reactor is not due for its
//! [`POLL_EVERY`] poll, and something is ready). Everything else goes through the hub:
//! an empty run queue (the poll and the would-block-forever check), a green thread that
//! is being killed, a due timer or poll. A green thread that has not started is started
//! directly too (its own wrapper handles a kill that came before its start). One that
//! finishes hands control on the same way: its greenlet's final switch goes straight to
//! the next ready green thread while the turn has runs left (`exit_direct`), else to its
//! parent, the hub, which carries on its turn.
//!
//! ## Inlined into the caller, for the return predictor
//! A switch leaves the CPU's return-address predictor out of step: the switch (`call`) pushes
//! an entry that is never popped, so every `ret` a resumed green thread executes before its
//! next switch is predicted from the other context's entries, and mispredicted (a pipeline
//! flush each, which no instruction count shows). So the hot path of the calls a green
//! thread blocks in most, from the user's call down to the switch, is inlined into the
//! user's code ([`yield_now`], `JoinHandle::join` and `spawn`, `Channel`/`Queue`
//! `get`/`put`, `Event::wait`, `Semaphore::acquire`): a loop that yields, joins or passes
//! values then runs no `ret` between a resume and its next switch. Their cold paths (kills,
//! timeouts, slow cases) stay out of line, so the inlined code stays small (some 600 bytes
//! per call site). On the AMD EPYC of session 10, inlining `yield_now` alone took a yield
//! hand-off from 20.3 to 8.7 ns (`examples/yield_handoffs`) with nearly the same
//! instructions (101 -> 88.5).
//!
//! ## The contract for the layers above (crate-internal: time, sync, net, pool, threadpool)
//! * `current_task()` is the green thread running now (`TaskRef`: a cheap, clonable,
//!   `!Send` handle).
//! * `park()` blocks it until something calls `TaskRef::wake()`; it returns
//!   `Err(WaitError::TimedOut)` when a [`Timeout`](crate::Timeout) in scope fired, and
//!   `Err(WaitError::WouldBlockForever)` when nothing could ever wake it (gevent's
//!   `LoopExit`). A kill unwinds out of `park` (the `Killed` payload).
//! * Wake-ups can be spurious: a primitive re-checks its condition in a loop, and removes
//!   its registration when `park` returns an error, so nothing is left registered.
//! * `park_until()` adds a deadline; `remote_waker()` gives a `Send` handle another OS
//!   thread can use to wake this green thread through the reactor's waker.
//!
//! ## Fairness
//! A turn runs only the green threads that were ready when it began: one that yields in a
//! loop goes to the back of the queue and waits for the next turn, behind everything woken
//! meanwhile; between two turns the cross-thread inbox is drained and due timers fire. A
//! turn that a green thread begins as it *parks* or finishes (not as it yields) has at
//! least `TURN_MIN` (16) runs, green threads woken during it included (a joiner woken by the
//! one it joined, the other end of a channel), so that two green threads that hand control
//! to each other do not test the inbox, the timers and the poll budget at every hand-off;
//! a yield ends such a turn at once (a yield always lets due timers fire and the inbox be
//! drained before the yielder runs again). The reactor is polled (with a zero timeout) at
//! least every [`POLL_EVERY`] green-thread runs even when the run queue never empties,
//! while a green thread waits on a file descriptor: with none waiting, such a poll could
//! only find the cross-thread waker, whose news the turn reads from the inbox's flag, so
//! a busy hub then makes no system call.
//!
//! ## Would block forever
//! When the main green thread waits and nothing is ready, no timer is pending, no green
//! thread waits on a file descriptor and no cross-thread waker or wait slot is outstanding,
//! nothing can ever wake it: its blocking call fails with [`WaitError::WouldBlockForever`]
//! instead of hanging.

mod task;
mod wait_slots;

use task::SpareTasks;
pub use task::{
    current, iwait, joinall, spawn, spawn_later, AsCompleted, Builder, CurrentThread, JoinError,
    JoinHandle, Killed,
};
pub(crate) use task::{panic_message, TaskRef};
pub(crate) use wait_slots::{register_slot, SlotRegistration, SlotWaker, Wakeup};

use crate::greenlet::{self, Greenlet, LocalQueue};
use crate::reactor::{Clear, Direction, Reactor, SourceId, WaiterError};
use crate::timer::{TimerKey, TimerQueue};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most green-thread runs between two polls of the reactor while the run queue is busy and
/// a green thread waits on a file descriptor (with none waiting, a busy hub does not poll).
pub const POLL_EVERY: u32 = 256;

/// Fewest runs of a turn begun by a green thread that parks or finishes (see "Fairness"
/// in the module docs): the most a due timer or a cross-thread wake-up waits, in runs,
/// while fewer green threads are ready and none yields. Its runs are charged in full to
/// the poll budget when it begins (what a yield leaves of them is given back), so polls
/// still come every [`POLL_EVERY`] runs at least: a turn cut short by an empty run queue is
/// followed by a poll anyway.
///
/// Between two green threads that hand control to each other (a spawn and its join, a
/// channel's two ends) turns of one run cost a turn's tests per hand-off (spawn + run +
/// join: 631.7 -> 613.6 instructions with 16, callgrind; a yield costs what it did).
const TURN_MIN: usize = 16;

/// The mark of a turn begun by a park or a finish (at least [`TURN_MIN`] runs) in
/// `Hub::turn_left`: `LONG_TURN + k` is such a turn with `k` runs left. Read as a signed
/// number it is negative, so the yield's test (`> 0`, runs left in a turn a yield does not
/// end) costs what a test for 0 does; a park's (`turn_left & TURN_RUNS != 0`) sees `k`.
const LONG_TURN: usize = 1 << (usize::BITS - 1);

/// The bits of `Hub::turn_left` that a park tests for runs left in the turn
/// ([`Hub::runs_left_parking`]): the low half of the word on 64-bit targets, a test with
/// no mask to load (−2 instructions per park, −4 per spawn + join); every bit but
/// [`LONG_TURN`] elsewhere. A turn has fewer runs than that (some 4 billion green threads
/// would have to be ready); if one had more, a park that saw a multiple of 2^32 runs
/// left would only end its turn early, with a poll sooner than needed (see there).
const TURN_RUNS: usize = if usize::BITS > 32 {
    u32::MAX as usize
} else {
    !LONG_TURN
};

/// Taken off `Hub::poll_budget` while a turn begun by a park or a finish is under way
/// (`turn_left` marked [`LONG_TURN`]), which makes the budget 0 or less: a yield then
/// finds no budget to begin the next turn with, and only on that (rare) path is the long
/// turn ended, its unused runs given back (`end_long_turn`). The yield's own path tests
/// nothing more for long turns.
const LONG_BIAS: isize = 1 << 40;

/// Why a blocking call returned without the event it waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitError {
    /// A [`Timeout`](crate::Timeout) covering the call fired.
    TimedOut,
    /// Nothing could ever wake the waiting green thread: no other green thread is ready,
    /// no timer is pending, nothing waits on a file descriptor and no other OS thread
    /// holds a waker for this hub (gevent's `LoopExit`).
    WouldBlockForever,
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::TimedOut => f.write_str("timed out: a verdant Timeout covering this call fired"),
            WaitError::WouldBlockForever => f.write_str(
                "this operation would block forever: no green thread is ready, no timer is pending, \
                 nothing waits on a file descriptor and no other thread can wake this one \
                 (gevent's LoopExit); spawn the green thread that would complete it, or add a timeout",
            ),
        }
    }
}

impl std::error::Error for WaitError {}

impl From<WaitError> for io::Error {
    fn from(e: WaitError) -> io::Error {
        let kind = match e {
            WaitError::TimedOut => io::ErrorKind::TimedOut,
            WaitError::WouldBlockForever => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// What a timer does when it fires.
pub(crate) enum TimerAction {
    /// Wake a task parked by `park_until`, if it is still in the same wait (`epoch`).
    Wake(TaskRef, u64),
    /// A `Timeout` guard fired for `task`.
    Expire(TaskRef, Rc<Cell<bool>>),
    /// Put a task created by `spawn_later` on the run queue.
    Start(TaskRef),
}

/// Messages from other OS threads.
enum RemoteMsg {
    Wake(u64),
    Forget(u64),
    /// Wake the task waiting in a wait slot, if that wait (the generation) still goes on.
    WakeSlot(u32, u32),
}

/// The cross-thread inbox of one hub.
pub(crate) struct Inbox {
    queue: Mutex<Vec<RemoteMsg>>,
    pending: AtomicBool,
    waker: Arc<crate::sys::Waker>,
}

impl Inbox {
    fn post(&self, msg: RemoteMsg) {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(msg);
        self.pending.store(true, Ordering::Release);
        // A failing eventfd write cannot be reported to anyone useful here; the pending
        // flag is still seen on the hub's next turn.
        let _ = self.waker.wake();
    }
}

/// A `Send + Sync` handle that wakes one green thread from any OS thread.
///
/// While one exists, its hub does not consider itself deadlocked (the other thread may
/// still wake it). Dropping the last clone tells the hub so.
#[derive(Clone)]
pub(crate) struct RemoteWaker {
    token: Arc<RemoteToken>,
}

struct RemoteToken {
    inbox: Arc<Inbox>,
    task: u64,
}

impl RemoteWaker {
    /// Schedules the green thread on its hub (a no-op once it finished).
    pub(crate) fn wake(&self) {
        self.token.inbox.post(RemoteMsg::Wake(self.token.task));
    }
}

impl Drop for RemoteToken {
    fn drop(&mut self) {
        // Dropped on the hub's own thread (the usual case: a wait ends), forget at once:
        // posting would cost a lock, an eventfd write and a spurious poller wake-up per wait.
        let forgotten_here = HUB.with(|hub| match hub {
            Some(hub) if Arc::ptr_eq(&hub.inbox, &self.inbox) => hub.forget_remote(self.task),
            _ => false,
        });
        if !forgotten_here {
            self.inbox.post(RemoteMsg::Forget(self.task));
        }
    }
}

impl fmt::Debug for RemoteWaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteWaker")
            .field("task", &self.token.task)
            .finish()
    }
}

/// How many green threads must be ready for [`Hub::prefetch_ready`] to prefetch the
/// next ones' lines: the three it looks at.
const PREFETCH_MIN_READY: usize = 3;

pub(crate) struct Hub {
    greenlet: Greenlet,
    /// The run queue: green threads ready to run, in order (moved in and out, no borrows).
    ready: LocalQueue<TaskRef>,
    timers: RefCell<TimerQueue<TimerAction>>,
    /// Whether `timers` holds any: kept beside it by every change (`add_timer`,
    /// `cancel_timer`, `fire_timers`), so that a hand-off between green threads checks for
    /// due timers with one load when there are none, without borrowing the queue.
    has_timers: Cell<bool>,
    reactor: RefCell<Reactor<TaskRef>>,
    inbox: Arc<Inbox>,
    /// Tasks with outstanding remote wakers, and how many tokens each has.
    remote_tasks: RefCell<HashMap<u64, (TaskRef, usize)>>,
    /// Green threads waiting on a shared primitive (see `wait_slots`).
    slots: RefCell<wait_slots::Slots>,
    /// Green threads parked on a file descriptor.
    io_waiters: Cell<usize>,
    /// Green-thread runs since the last poll of the reactor, as of the beginning of the
    /// hub's current turn (kept by the hub's loop only).
    runs_since_poll: Cell<u32>,
    /// Runs left in the current turn (0 outside a turn): while some are left, a green
    /// thread that parks or yields hands control straight to the next ready one. In a turn
    /// begun by a park or a finish, [`LONG_TURN`] plus the runs left (at least
    /// [`TURN_MIN`] at first, maybe more than are ready): a yield ends it.
    turn_left: Cell<usize>,
    /// How far the reactor's poll is away, in runs: [`POLL_EVERY`] minus the runs since the
    /// last poll, counting every begun turn's runs in full; 0 or less once they reach it,
    /// and 0 outside the hub's turn loop. A green thread begins the next turn itself only
    /// while it is positive (`next_turn_inline_with`): one test for both conditions. Less
    /// [`LONG_BIAS`] while `turn_left` is marked [`LONG_TURN`].
    poll_budget: Cell<isize>,
    /// The green thread running now (its record; see `current_task()`). A `Cell`: moved in
    /// and out, never borrowed, so the hot paths maintain no borrow flag.
    current: Cell<Option<TaskRef>>,
    /// The task of the thread's main greenlet: the one that gets `WouldBlockForever`.
    main_task: RefCell<Option<TaskRef>>,
    /// What the stall monitor reads from its own thread (`crate::monitor`).
    pub(crate) activity: Arc<crate::monitor::HubActivity>,
    /// Finished task records kept for the next spawns.
    spare_tasks: SpareTasks,
    /// How many green threads of this hub finished (their completion order, for `iwait`).
    completions: Cell<u64>,
    /// Ids for green threads: the last one this hub handed out, from a block of its own
    /// ([`next_id`](Hub::next_id)); 0 before the first block.
    last_id: Cell<u64>,
    /// Records that `current` held when a greenlet switched to by hand (not by the hub)
    /// needed one of its own ([`adhoc_current`](Hub::adhoc_current)): the green thread
    /// whose record it was is suspended inside that hand switch, and finds its record here
    /// when it runs hub code again ([`recover_current`](Hub::recover_current)), so that
    /// it still delivers its result and wakes its joiners. Pruned of finished ones.
    displaced: RefCell<Vec<TaskRef>>,
}

greenlet::thread_rc! {
    /// The thread's hub: an `Rc` released at thread exit, read by the hot paths
    /// ([`with_hub`]) with one thread-local load, no state test, no flag to maintain and
    /// no reference count to touch, even across switches. At thread exit, green threads
    /// still suspended are released without unwinding (nothing may run any more).
    static HUB: ThreadRc<Hub>, at_exit: greenlet::begin_thread_teardown;
}

/// This thread's hub, created on first use.
pub(crate) fn hub() -> Rc<Hub> {
    HUB.rc_or_init(new_hub)
}

/// Runs `f` with this thread's hub (created on first use), without touching its
/// reference count. `f` may switch away: the hub outlives every green thread of its
/// thread (it is only dropped at thread exit, when suspended stacks are released without
/// ever running again).
#[inline(always)]
fn with_hub<R>(f: impl FnOnce(&Hub) -> R) -> R {
    HUB.with_or_init(new_hub, f)
}

#[cold]
#[inline(never)]
fn new_hub() -> Rc<Hub> {
    Rc::new(Hub::new().unwrap_or_else(|e| {
        panic!("verdant: could not create this thread's hub (epoll/kqueue or its stack): {e}")
    }))
}

impl Hub {
    fn new() -> io::Result<Hub> {
        let reactor = Reactor::new()?;
        let inbox = Arc::new(Inbox {
            queue: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            waker: reactor.waker(),
        });
        let greenlet = greenlet::Builder::new()
            .name("hub")
            .parent(&Greenlet::main())
            .spawn(|_| hub_loop())?;
        Ok(Hub {
            greenlet,
            ready: LocalQueue::default(),
            timers: RefCell::new(TimerQueue::new()),
            has_timers: Cell::new(false),
            reactor: RefCell::new(reactor),
            inbox,
            remote_tasks: RefCell::new(HashMap::new()),
            slots: RefCell::new(wait_slots::Slots::default()),
            io_waiters: Cell::new(0),
            runs_since_poll: Cell::new(0),
            turn_left: Cell::new(0),
            poll_budget: Cell::new(0),
            main_task: RefCell::new(None),
            displaced: RefCell::new(Vec::new()),
            current: Cell::new(None),
            activity: crate::monitor::HubActivity::for_new_hub(),
            spare_tasks: SpareTasks::default(),
            completions: Cell::new(0),
            last_id: Cell::new(0),
        })
    }

    /// A new process-unique id for a green thread (and its greenlet), from this hub's block
    /// of them (no atomic operation per id).
    ///
    /// Every block begins one past a multiple of [`ID_BLOCK`](greenlet::ID_BLOCK) (see
    /// [`greenlet::id_block`]), so it is used up when the last id handed out is a multiple of
    /// it: a test of that one word, where keeping the block's end beside it cost a second
    /// load per spawn (0x1b0/0x1b8 in the hub, one load and one compare with memory; now a
    /// test of a register). The id is the new last one: one `lea`, stored as it is.
    #[inline]
    fn next_id(&self) -> u64 {
        let last = self.last_id.get();
        if last & (greenlet::ID_BLOCK - 1) != 0 {
            // The usual case, inline.
            let id = last + 1;
            self.last_id.set(id);
            return id;
        }
        self.next_id_block()
    }

    /// [`next_id`](Self::next_id) with this hub's block used up (or none taken yet): the
    /// first id of a new one.
    #[cold]
    #[inline(never)]
    fn next_id_block(&self) -> u64 {
        let (first, end) = greenlet::id_block();
        debug_assert_eq!(first % greenlet::ID_BLOCK, 1, "an id block is not aligned");
        debug_assert_eq!(end - first, greenlet::ID_BLOCK);
        self.last_id.set(first);
        first
    }

    /// [`schedule`](Self::schedule) for a green thread just built (`Builder::spawn`), which
    /// no one else could have scheduled: it is not in the run queue yet, so there is nothing
    /// to test, and it was built marked `queued` already (a re-armed record's `reset`
    /// stores the flag with the constants around it: one store fewer per spawn).
    #[inline(always)]
    fn schedule_new(&self, task: TaskRef) {
        debug_assert!(task.queued.get(), "a new green thread was built unqueued");
        self.ready.push_back(task);
    }

    #[inline]
    pub(crate) fn schedule(&self, task: TaskRef) {
        if !task.queued.replace(true) {
            self.ready.push_back(task);
        }
    }

    pub(crate) fn add_timer(&self, deadline: Instant, action: TimerAction) -> TimerKey {
        let key = self.timers.borrow_mut().insert(deadline, action);
        self.has_timers.set(true);
        key
    }

    pub(crate) fn cancel_timer(&self, key: TimerKey) {
        let cancelled = {
            let mut timers = self.timers.borrow_mut();
            let cancelled = timers.cancel(key);
            self.has_timers.set(!timers.is_empty());
            cancelled
        };
        // The action (and the task record it may hold) is released outside the borrow.
        drop(cancelled);
    }

    /// Switches into `task` and returns when it parks, yields or finishes.
    fn run(&self, task: TaskRef) {
        self.prefetch_ready();
        task.queued.set(false);
        if task.is_finished() {
            return;
        }
        self.activity.enter(task.id);
        // Cleared here rather than by the task: a kill unwinds it out of its park.
        task.parked.set(false);
        // A kill for a task that already runs is delivered as a panic at its blocking
        // point; one that never started is handled by the task's own wrapper.
        let throw = task.kill.get() && task.greenlet.is_started() && !task.is_adhoc;
        // No handle to the record stays on the hub's stack while the task runs: a task
        // that finishes may hand control straight to the next one (`exit_direct`), and
        // its record must then not be kept alive by this suspended frame. The previous
        // record is released outside the cell.
        let greenlet = task.greenlet.clone();
        drop(self.current.replace(Some(task)));
        if throw {
            // Rare: the greenlet handle (not the record) is kept for the throw.
            greenlet.throw(Killed);
        } else {
            // The handle is given up as control leaves.
            greenlet.resume_into();
        }
    }

    /// The next ready task, taken off the queue, if the current green thread may hand
    /// control straight to it: the turn has runs left, and it is not finished and not
    /// being killed (those go through [`run`](Self::run)).
    #[inline(always)]
    fn take_direct(&self) -> Option<TaskRef> {
        let left = self.runs_left_parking(0)?;
        // Empty only in a turn under way (a turn begins here with something ready), whose
        // `turn_left` is `left` still.
        let next = self.ready.pop_front()?;
        self.direct_to(next, left)
    }

    /// [`take_direct`](Self::take_direct) for a yield: `task`, the yielding one, goes to the
    /// back of the run queue first. Within a turn both are one rotation of the queue.
    #[inline(always)]
    fn take_direct_after_yield(&self, task: TaskRef) -> Option<TaskRef> {
        // The next turn, if begun here, counts the yielding one too.
        let Some(left) = self.runs_left(1) else {
            self.ready.push_back(task);
            return None;
        };
        let next = self.ready.push_back_pop_front(task);
        self.direct_to(next, left)
    }

    /// For a yield: the runs left in the current turn, beginning the next one inline if this
    /// one is used up or was begun by a park or a finish (which a yield ends: what is left
    /// of its runs goes back to the poll budget) ([`next_turn_inline_with`], `extra` as
    /// there); `None` when control must go to the hub's loop.
    ///
    /// `turn_left` is not updated here: [`direct_to`](Self::direct_to) stores what is left
    /// once it knows (one store per hand-off, none for the turn begun here).
    ///
    /// [`next_turn_inline_with`]: Self::next_turn_inline_with
    #[inline(always)]
    fn runs_left(&self, extra: usize) -> Option<usize> {
        let left = self.turn_left.get();
        if left as isize > 0 {
            return Some(left);
        }
        // In a long turn the budget is biased (`LONG_BIAS`): `next_turn_inline_with` ends it.
        self.next_turn_inline_with::<false>(extra, left)
    }

    /// [`runs_left`](Self::runs_left) for a green thread that parks or finishes: the runs
    /// left in any turn, and the next turn, if begun here, has at least [`TURN_MIN`] runs
    /// (see "Fairness" in the module docs).
    #[inline(always)]
    fn runs_left_parking(&self, extra: usize) -> Option<usize> {
        let left = self.turn_left.get();
        // The runs left (`k` of a long turn), fewer than 2^32 (see `TURN_RUNS`).
        if left & TURN_RUNS != 0 {
            return Some(left);
        }
        // (A test of the sign, not of 0: a turn with some multiple of 2^32 runs left, which
        // the test above took for used up, ends here, with its runs charged in full to the
        // poll budget; a long one gets its bias off.)
        if (left as isize) < 0 {
            // A long turn used up (the usual way a turn ends here): its bias comes off,
            // with no runs to give back (`end_long_turn`, inline).
            self.turn_left.set(0);
            self.poll_budget.set(self.poll_budget.get() + LONG_BIAS);
        }
        self.next_turn_inline_with::<true>(extra, 0)
    }

    /// Ends the turn under way if a park or a finish began it (`turn_left` marked
    /// [`LONG_TURN`]): its runs not made go back to the poll budget, which was charged them
    /// all, and the budget's [`LONG_BIAS`] is taken off. Returns the budget.
    #[cold]
    #[inline(never)]
    fn end_long_turn(&self) -> isize {
        let left = self.turn_left.get();
        let budget = self.poll_budget.get();
        if left as isize >= 0 {
            return budget;
        }
        self.turn_left.set(0);
        let budget = budget + LONG_BIAS + (left & !LONG_TURN) as isize;
        self.poll_budget.set(budget);
        budget
    }

    /// `next`, just taken off the run queue with `left` runs left in the turn, as the
    /// target of a direct hand-off; put back at the front (still the next one to run, by
    /// the hub's loop) if it is finished or being killed.
    #[inline(always)]
    fn direct_to(&self, next: TaskRef, left: usize) -> Option<TaskRef> {
        // Both flags in one load (`killed_or_finished`), one test.
        if next.killed_or_finished() {
            self.ready.push_front(next);
            // The hub's loop runs it, in this turn (which may have begun just now).
            self.turn_left.set(left);
            return None;
        }
        self.turn_left.set(left - 1);
        Some(next)
    }

    /// Ends the current turn and begins the next one without switching to the hub, when the
    /// hub would do nothing between them: it is inside its turn loop, green threads are
    /// ready, the cross-thread inbox is empty, no timer is due and the reactor is not due
    /// for a poll ([`POLL_EVERY`]): then the new turn's runs, which the caller stores in
    /// `turn_left` (less the one it begins with): the ready ones, or with `LONG` (a park or
    /// a finish begins it) at least [`TURN_MIN`], marked [`LONG_TURN`]. Otherwise `None`:
    /// the hub's loop takes over. `extra`: ready green threads not in the run queue yet (a
    /// yielding one about to be pushed, a woken joiner). `left`: `turn_left` as the caller
    /// read it, if it may be a long turn's (else 0).
    #[inline(always)]
    fn next_turn_inline_with<const LONG: bool>(&self, extra: usize, left: usize) -> Option<usize> {
        let mut budget = self.poll_budget.get();
        if budget <= 0 {
            // Used up, or biased by a long turn (`LONG_BIAS`), which ends here.
            if left as isize >= 0 {
                return None;
            }
            budget = self.end_long_turn();
            if budget <= 0 {
                return None;
            }
        }
        if self.inbox.pending.load(Ordering::Acquire) {
            return None;
        }
        // With `extra`, `n` is not 0: that test is left out at compile time.
        if (extra == 0 && self.ready.is_empty()) || (self.has_timers.get() && self.timer_due()) {
            return None;
        }
        let n = self.ready.len() + extra;
        if LONG {
            let n = n.max(TURN_MIN);
            // No overflow: `budget` is at most `POLL_EVERY` and `n` at most the queue's
            // length or `TURN_MIN`.
            self.poll_budget.set(budget - n as isize - LONG_BIAS);
            return Some(LONG_TURN | n);
        }
        // No overflow: as above.
        self.poll_budget.set(budget - n as isize);
        Some(n)
    }

    /// Whether the next timer is due (there is one: `has_timers`).
    #[cold]
    #[inline(never)]
    fn timer_due(&self) -> bool {
        self.timers
            .borrow()
            .next_deadline()
            .is_some_and(|deadline| deadline <= Instant::now())
    }

    /// Leaves the current green thread, which is already rescheduled or registered for its
    /// wake-up: straight to the next ready green thread while the turn has runs left (what
    /// [`run`](Self::run) would do next), else to the hub.
    #[inline(never)]
    fn switch_out(&self) {
        self.switch_out_inline()
    }

    /// [`switch_out`](Self::switch_out) inlined into its caller (the hottest ones: yield and
    /// park), saving a call, a return and a second frame's register saves per hand-off.
    #[inline(always)]
    fn switch_out_inline(&self) {
        self.switch_out_with::<false>()
    }

    /// [`switch_out_inline`](Self::switch_out_inline) for a caller that took the running
    /// green thread's record out of `current` and handed it to whoever wakes it
    /// ([`take_current_task`](Self::take_current_task)): `current` is empty, so the next
    /// record goes in without a drop or a test.
    #[inline(always)]
    fn switch_out_emptied(&self) {
        self.switch_out_with::<true>()
    }

    /// The body of [`switch_out`](Self::switch_out); `CURRENT_EMPTY`: the caller took the
    /// record out of `current` (a yield, a join's park), so there is nothing to drop when
    /// the next one goes in.
    #[inline(always)]
    fn switch_out_with<const CURRENT_EMPTY: bool>(&self) {
        self.switch_to_next::<CURRENT_EMPTY>(self.take_direct())
    }

    /// Switches to `next`, taken by [`take_direct`](Self::take_direct) (or its yield
    /// variant), or to the hub if there is none. `CURRENT_EMPTY` as for
    /// [`switch_out_with`](Self::switch_out_with).
    #[inline(always)]
    fn switch_to_next<const CURRENT_EMPTY: bool>(&self, next: Option<TaskRef>) {
        match next {
            Some(next) => {
                self.prefetch_ready();
                self.enter_direct(&next);
                // The record goes into `current`, which keeps it (and its greenlet) alive;
                // no handle to the next green thread stays on this stack while it is
                // suspended, and no reference count is touched.
                if CURRENT_EMPTY {
                    // Emptied by the caller, and nothing refilled it (no code of ours ran
                    // since): not read again.
                    Greenlet::resume_held_in_empty(&self.current, next, |task| &task.greenlet);
                } else {
                    // The record dropped here may be a last handle, whose drop may run
                    // any code (even refill `current`): the slot is tested again.
                    drop(self.current.take());
                    Greenlet::resume_held_in(&self.current, next, |task| &task.greenlet);
                }
            }
            None => self.greenlet.clone().resume_into(),
        }
    }

    /// `next`, taken for a direct hand-off ([`switch_to_next`](Self::switch_to_next), or a
    /// finish's [`exit_direct`](Self::exit_direct)), is about to run: no longer queued or
    /// parked, and the stall monitor's running one.
    #[inline(always)]
    fn enter_direct(&self, next: &TaskRef) {
        next.queued.set(false);
        next.parked.set(false);
        self.activity.enter(next.id);
    }

    /// Prefetches what the next green threads to run touch first as they resume, one step
    /// per hand-off, so that their cache misses overlap with the work of those before
    /// them (at 1,000 connections each one's lines are long evicted when it runs): the
    /// record of the third in the run queue, the greenlet record of the second (its handle
    /// is in the task record prefetched one hand-off ago) and the stack top of the first
    /// (its saved stack pointer is in the greenlet record prefetched one hand-off ago).
    ///
    /// Only when at least [`PREFETCH_MIN_READY`] green threads are ready, as after a poll
    /// that woke many connections: between two or three green threads handing control to
    /// each other (a yield or a channel ping-pong) every line is in cache already, and the
    /// hints would cost some 27 instructions per hand-off (99 -> 126 per yield).
    #[inline(always)]
    fn prefetch_ready(&self) {
        if self.ready.len() < PREFETCH_MIN_READY {
            return;
        }
        self.ready.peek_with(2, |task| {
            // Its flags and its greenlet's handle: one line or two, by the record's address.
            crate::context::prefetch(task.queued.as_ptr() as usize);
            crate::context::prefetch(&task.greenlet as *const Greenlet as usize);
        });
        self.ready
            .peek_with(1, |task| task.greenlet.prefetch_record());
        self.ready
            .peek_with(0, |task| task.greenlet.prefetch_stack());
    }

    fn turn(&self) {
        if self.inbox.pending.load(Ordering::Acquire) {
            self.drain_inbox();
        }
        if !self.timers.borrow().is_empty() {
            self.fire_timers(Instant::now());
        }
        // The runs of this turn: by this loop, or by green threads handing control straight
        // to the next one (`switch_out`), in the same order, from the same budget.
        // Green threads may also begin the next turn themselves (`next_turn_inline_with`), so
        // the turn that ends here is the last one begun (if a park or a finish began it,
        // `turn_left` is marked `LONG_TURN`, negative as a signed number: the loop ends, and
        // its runs not made go back to the budget).
        let n = self.ready.len();
        let since_poll = self.runs_since_poll.get() as isize;
        self.poll_budget
            .set(POLL_EVERY as isize - since_poll.saturating_add_unsigned(n));
        self.turn_left.set(n);
        while self.turn_left.get() as isize > 0 {
            self.turn_left.set(self.turn_left.get() - 1);
            let Some(task) = self.ready.pop_front() else {
                break;
            };
            self.run(task);
        }
        // The runs since the last poll, this turn's and those of the turns begun inline
        // included: `POLL_EVERY` or more when the budget is used up (a long turn's bias off
        // and its unused runs given back: `end_long_turn`, inline).
        let left = self.turn_left.replace(0);
        let mut budget = self.poll_budget.replace(0);
        if (left as isize) < 0 {
            budget += LONG_BIAS + (left & !LONG_TURN) as isize;
        }
        let runs = POLL_EVERY - budget.clamp(0, POLL_EVERY as isize) as u32;
        let idle = self.ready.is_empty();
        if idle {
            self.runs_since_poll.set(0);
            if self.inbox.pending.load(Ordering::Acquire) {
                return;
            }
            let timeout = self
                .timers
                .borrow()
                .next_deadline()
                .map(|deadline| deadline.saturating_duration_since(Instant::now()));
            if timeout.is_none() && self.nothing_can_wake() {
                self.deliver_loop_exit();
                return;
            }
            self.poll(timeout);
        } else if runs >= POLL_EVERY {
            self.runs_since_poll.set(0);
            // A poll that does not block, for the green threads that wait on an fd. With
            // none waiting it could only find the waker, whose news `inbox.pending` carries
            // as well (tested at every turn's start), or set cached readiness bits, which
            // only a wait reads, and whose edges stay queued in the kernel for the next
            // poll: then it is left out, a system call of some 150-190 ns saved every
            // `POLL_EVERY` runs (spawn + run + join, 2 runs: about 1.3 ns of 23.5).
            if self.io_waiters.get() != 0 {
                self.poll(Some(Duration::ZERO));
            }
        } else {
            self.runs_since_poll.set(runs);
        }
    }

    fn nothing_can_wake(&self) -> bool {
        self.ready.is_empty()
            && self.timers.borrow().is_empty()
            && self.io_waiters.get() == 0
            && self.remote_tasks.borrow().is_empty()
            && self.slots.borrow().in_use == 0
            && !self.inbox.pending.load(Ordering::Acquire)
    }

    fn deliver_loop_exit(&self) {
        let main = self.main_task.borrow().clone();
        match main {
            Some(main) if main.parked.get() => {
                main.reason.set(WakeReason::LoopExit);
                self.schedule(main);
            }
            _ => {
                // Only tasks without a main waiter are blocked: nothing can run, and the
                // main green thread is not waiting either. This cannot happen while the
                // thread's code is running; wait for a cross-thread wake-up.
                self.poll(None);
            }
        }
    }

    fn poll(&self, timeout: Option<Duration>) {
        // The hub's own loop: not a green thread blocking it, even when this waits long.
        self.activity.enter_hub();
        // Each woken task is scheduled as its event is read (no buffer per poll); `Io` tells
        // its `wait_fd_in` that the reactor holds nothing of it any more.
        let report = self.reactor.borrow_mut().poll(timeout, |task: TaskRef| {
            task.reason.set(WakeReason::Io);
            // The first step of `prefetch_ready`'s pipeline for the woken green threads,
            // whose task records are in cache now (the poll takes at most 64 events).
            task.greenlet.prefetch_record();
            self.schedule(task);
        });
        match report {
            Ok(report) => {
                self.io_waiters.set(self.io_waiters.get() - report.woken);
                if report.notified {
                    self.drain_inbox();
                }
            }
            Err(e) => {
                // epoll_wait/kevent only fail on programming errors (EBADF, EINVAL).
                panic!("verdant hub: polling the reactor failed: {e}");
            }
        }
        if !self.timers.borrow().is_empty() {
            self.fire_timers(Instant::now());
        }
    }

    fn fire_timers(&self, now: Instant) {
        loop {
            let action = {
                let mut timers = self.timers.borrow_mut();
                let action = timers.pop_next_expired(now);
                self.has_timers.set(!timers.is_empty());
                action
            };
            let Some(action) = action else { break };
            match action {
                TimerAction::Wake(task, epoch) => {
                    if task.parked.get() && task.epoch.get() == epoch {
                        task.reason.set(WakeReason::Deadline);
                        self.schedule(task);
                    }
                }
                TimerAction::Expire(task, fired) => {
                    fired.set(true);
                    task.expired.set(task.expired.get() + 1);
                    if task.parked.get() {
                        self.schedule(task);
                    }
                }
                TimerAction::Start(task) => self.schedule(task),
            }
        }
    }

    /// Drops one remote-waker token of task `id`; `false` if the map is busy (re-entrant
    /// drop), in which case the caller posts the message instead.
    fn forget_remote(&self, id: u64) -> bool {
        let Ok(mut map) = self.remote_tasks.try_borrow_mut() else {
            return false;
        };
        let mut removed = None;
        if let Some(entry) = map.get_mut(&id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                removed = map.remove(&id);
            }
        }
        drop(map);
        // The task record is released outside the borrow.
        drop(removed);
        true
    }

    fn drain_inbox(&self) {
        self.inbox.pending.store(false, Ordering::Release);
        let msgs = std::mem::take(
            &mut *self
                .inbox
                .queue
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for msg in msgs {
            match msg {
                RemoteMsg::Wake(id) => {
                    let task = self.remote_tasks.borrow().get(&id).map(|(t, _)| t.clone());
                    if let Some(task) = task {
                        self.schedule(task);
                    }
                }
                RemoteMsg::WakeSlot(slot, gen) => {
                    let task = self.slots.borrow().task(slot, gen).cloned();
                    if let Some(task) = task {
                        self.schedule(task);
                    }
                }
                RemoteMsg::Forget(id) => {
                    let mut map = self.remote_tasks.borrow_mut();
                    if let Some(entry) = map.get_mut(&id) {
                        entry.1 -= 1;
                        if entry.1 == 0 {
                            map.remove(&id);
                        }
                    }
                }
            }
        }
    }
}

fn hub_loop() -> ! {
    // No `Rc<Hub>` on this stack: the hub greenlet is never resumed once its thread exits,
    // so a handle held here would never be dropped, and the hub (its epoll and waker
    // descriptors, its stacks) would leak with every OS thread that used verdant.
    loop {
        with_hub(Hub::turn);
    }
}

/// Why a parked task was scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WakeReason {
    Normal,
    Deadline,
    LoopExit,
    /// The reactor's poll took the task's fd waiter and scheduled it (see `wait_fd_in`).
    Io,
}

/// The green thread running now (creating this thread's hub and main task on first use).
pub(crate) fn current_task() -> TaskRef {
    with_hub(Hub::current_task_outlined)
}

impl Hub {
    /// The green thread running now (creating its ad hoc task on first use).
    #[inline]
    fn current_task(&self) -> TaskRef {
        match self.current.take() {
            Some(task) if task.greenlet.is_current() => {
                let me = task.clone();
                // Put back into the cell emptied just above (nothing ran in between).
                self.put_current(Some(task));
                me
            }
            other => {
                self.current.set(other);
                self.current_task_slow()
            }
        }
    }

    /// Runs `f` with the running green thread's record, borrowed where `current` holds it
    /// (no reference count touched), or with `None` if `current` does not hold it (a
    /// greenlet unwound by the drop of its record, or an ad hoc one not seen yet). For a
    /// spawned green thread's own start ([`task`]'s `run_task`) and the end of a join's
    /// park (`join_wait_in`): `f` must not switch, panic, nor run code that looks at the
    /// current task (no user code), since the record is out of `current` while it runs.
    #[inline(always)]
    fn with_current_task<R>(&self, f: impl FnOnce(Option<&TaskRef>) -> R) -> R {
        // No look in `displaced` (`recover_current`): both callers run on a record that the
        // hub itself resumed, so `current` holds it.
        let task = self.current.take();
        let r = f(task.as_ref().filter(|task| task.greenlet.is_current()));
        // Put back into the cell emptied just above (`f` left it alone).
        self.put_current(task);
        r
    }

    /// Takes the running green thread's record out of `current` (no reference count
    /// touched), or returns `None` if `current` does not hold it (as
    /// [`with_current_task`](Self::with_current_task)), leaving `current` as it was. For a
    /// join's park, whose record moves into the joined one's waiters, and a spawned green
    /// thread's finish: the caller puts it back
    /// ([`put_current_task`](Self::put_current_task)) unless it switches out with
    /// `current` empty ([`switch_out_emptied`](Self::switch_out_emptied),
    /// [`exit_direct`](Self::exit_direct)); no code of the user's may run in between.
    #[inline(always)]
    fn take_current_task(&self) -> Option<TaskRef> {
        match self.current.take() {
            Some(task) if task.greenlet.is_current() => Some(task),
            other => {
                // Not ours (a hand switch may have displaced ours: the finish looks there,
                // `take_displaced_task`; the parks fall back to `current_task`).
                self.put_current(other);
                None
            }
        }
    }

    /// After [`take_current_task`](Self::take_current_task) found `current` not holding
    /// the running green thread's record: takes that record if a hand switch displaced it
    /// ([`recover_current`](Self::recover_current)), else returns `None`, `current` as it
    /// was.
    #[cold]
    #[inline(never)]
    pub(crate) fn take_displaced_task(&self) -> Option<TaskRef> {
        if self.recover_current() {
            return self.current.take();
        }
        None
    }

    /// Puts back the record [`take_current_task`](Self::take_current_task) took.
    #[inline(always)]
    fn put_current_task(&self, task: TaskRef) {
        self.put_current(Some(task));
    }

    /// Refills `current`, which the caller emptied (nothing ran since that could refill
    /// it): the `None` that comes out needs no drop, so none is generated.
    #[inline(always)]
    fn put_current(&self, task: Option<TaskRef>) {
        let empty = self.current.replace(task);
        debug_assert!(empty.is_none());
        std::mem::forget(empty);
    }

    /// [`current_task`](Self::current_task) out of line, so that `with_hub` around it is
    /// inlined with the thread-local's accessor (as `yield_current`).
    #[inline(never)]
    fn current_task_outlined(&self) -> TaskRef {
        self.current_task()
    }

    /// [`current_task`](Self::current_task) when `current` does not hold the running green
    /// thread's record: a displaced one found again, or an ad hoc one.
    #[cold]
    #[inline(never)]
    fn current_task_slow(&self) -> TaskRef {
        if self.recover_current() {
            let task = self.current.take().expect("recover_current filled current");
            let me = task.clone();
            self.put_current(Some(task));
            return me;
        }
        self.adhoc_current()
    }

    /// The main greenlet, or a greenlet the user switched to by hand: an ad hoc task.
    #[cold]
    #[inline(never)]
    fn adhoc_current(&self) -> TaskRef {
        let task = TaskRef::adhoc(Greenlet::current(), self.next_id());
        if task.greenlet.is_main() {
            drop(self.main_task.replace(Some(task.clone())));
        }
        self.activity.adhoc_task(&task);
        let displaced = self.current.replace(Some(task.clone()));
        self.displace(displaced);
        task
    }

    /// Keeps `record`, which `current` held, in [`displaced`](Hub::displaced) when its
    /// green thread is suspended by a hand switch and may run again (its greenlet is not
    /// dead, it has not finished); drops it otherwise. Also drops the kept ones that
    /// have since finished.
    #[cold]
    fn displace(&self, record: Option<TaskRef>) {
        let may_run_again = |task: &TaskRef| !task.finished.get() && !task.greenlet.is_dead();
        let mut displaced = self.displaced.borrow_mut();
        displaced.retain(may_run_again);
        if let Some(task) = record {
            // Both callers displace a record that is not the running green thread's.
            debug_assert!(!task.greenlet.is_current());
            if may_run_again(&task) {
                displaced.push(task);
                return;
            }
            // Dropped after the borrow ends: a record's drop runs no hub code, but a
            // greenlet's may.
            drop(displaced);
            drop(task);
        }
    }

    /// Called when `current` does not hold the running green thread's record: if the
    /// running green thread's record was displaced by a greenlet it switched to by hand
    /// (see [`displaced`](Hub::displaced)), puts it back into `current`, keeping the one
    /// there in its place, and returns `true`.
    #[cold]
    #[inline(never)]
    fn recover_current(&self) -> bool {
        let found = {
            let mut displaced = self.displaced.borrow_mut();
            match displaced.iter().position(|task| task.greenlet.is_current()) {
                Some(i) => displaced.swap_remove(i),
                None => return false,
            }
        };
        let other = self.current.replace(Some(found));
        self.displace(other);
        true
    }
}

/// Blocks the current green thread until [`TaskRef::wake`] is called for it.
///
/// Returns `Err(TimedOut)` at once, or when woken, if a `Timeout` covering the current
/// green thread has fired; `Err(WouldBlockForever)` if nothing could ever wake it. A kill
/// unwinds out of this call.
pub(crate) fn park() -> Result<(), WaitError> {
    with_hub(Hub::park_current)
}

/// [`park`] inlined into the caller down to the switch (the return predictor: see
/// "Inlined into the caller" in the module docs), for the wait queue's waits.
#[inline(always)]
pub(crate) fn park_inline() -> Result<(), WaitError> {
    with_hub(
        #[inline(always)]
        |hub| hub.park_current_inline(),
    )
}

impl Hub {
    // Out of line, so that `with_hub` around it is inlined with the thread-local's
    // accessor (as `yield_current`).
    #[inline(never)]
    fn park_current(&self) -> Result<(), WaitError> {
        self.park_current_inline()
    }

    /// The park of [`park`] and [`park_inline`], inlined into each: `park_task_with` on the
    /// record taken out of `current` (no handle made), held on this stack while parked
    /// (where a clone of it was held before, `current` keeping the other), so that the
    /// switch puts the next record into an empty `current` without dropping one
    /// (`switch_out_emptied`, as a join's park and a yield do): −8 instructions per park.
    /// Whoever resumes it puts a handle of its own into `current`; this one is dropped on
    /// the way out.
    #[inline(always)]
    fn park_current_inline(&self) -> Result<(), WaitError> {
        let Some(task) = self.take_current_task() else {
            return self.park_current_slow();
        };
        if let Err(stop) = begin_park(&task) {
            self.put_current_task(task);
            return Err(stop.raise());
        }
        self.switch_out_emptied();
        end_park(&task).map(drop).map_err(ParkStop::raise)
    }

    /// [`park_current_inline`](Self::park_current_inline) for a green thread whose record
    /// `current` does not hold (a greenlet the user switched to by hand, not seen yet).
    #[cold]
    #[inline(never)]
    fn park_current_slow(&self) -> Result<(), WaitError> {
        park_task_with(&self.current_task(), self, Hub::switch_out).map(drop)
    }
}

fn park_task(task: &TaskRef, hub: &Hub) -> Result<WakeReason, WaitError> {
    park_task_with(task, hub, Hub::switch_out)
}

/// [`park_task`] with the given way to switch out (inlined or not).
#[inline(always)]
fn park_task_with(
    task: &TaskRef,
    hub: &Hub,
    switch_out: impl FnOnce(&Hub),
) -> Result<WakeReason, WaitError> {
    begin_park(task).map_err(ParkStop::raise)?;
    switch_out(hub);
    end_park(task).map_err(ParkStop::raise)
}

/// Why a park did not (or, woken, does not) return normally: see [`begin_park`] and
/// [`end_park`], the two halves of every park.
#[derive(PartialEq, Eq)]
pub(crate) enum ParkStop {
    /// A `Timeout` covering the green thread fired.
    TimedOut,
    /// A kill is pending: the caller unwinds ([`raise`](Self::raise)), once it holds
    /// nothing that must be put back.
    Killed,
    /// Woken by `LoopExit`: nothing could ever wake it.
    WouldBlockForever,
}

impl ParkStop {
    /// The park's error, or the unwind of a kill.
    #[inline(always)]
    pub(crate) fn raise(self) -> WaitError {
        match self {
            ParkStop::TimedOut => WaitError::TimedOut,
            ParkStop::WouldBlockForever => WaitError::WouldBlockForever,
            ParkStop::Killed => std::panic::resume_unwind(Box::new(Killed)),
        }
    }
}

/// The first half of a park, before the green thread switches out: it must not park if a
/// `Timeout` covering it fired or a kill is pending; else it is marked parked, with no wake
/// reason yet (a park with a deadline gave the task a new epoch first: [`deadline_epoch`]).
/// Reports a kill rather than unwinding, for callers that must put something back first.
///
/// The wake reason is reset here, and only here: it means something only between the two
/// halves of a park (a wake-up sets it, [`end_park`] reads it), so what a wake-up left in it
/// after the park ended (or a yield, which reads none) needs no reset of its own.
#[inline(always)]
pub(crate) fn begin_park(task: &TaskRef) -> Result<(), ParkStop> {
    // Both reasons to stop in one test (`stop_pending`); which one, out of line.
    if task.stop_pending() {
        begin_park_stop(task)?;
    }
    task.parked.set(true);
    task.reason.set(WakeReason::Normal);
    Ok(())
}

/// The second half of a park, once the green thread runs again: a pending kill first, then
/// a fired `Timeout`, then why it was woken (left as it is: the next park's [`begin_park`]
/// resets it).
#[inline(always)]
pub(crate) fn end_park(task: &TaskRef) -> Result<WakeReason, ParkStop> {
    // Both reasons to stop in one test (`stop_pending`); which one, out of line.
    if task.stop_pending() {
        end_park_stop(task)?;
    }
    match task.reason.get() {
        WakeReason::LoopExit => Err(ParkStop::WouldBlockForever),
        other => Ok(other),
    }
}

/// [`begin_park`] with a `Timeout` fired or a kill asked for: which one stops the park
/// (a kill asked for an ad hoc task, which cannot be killed, does not).
#[cold]
#[inline(never)]
fn begin_park_stop(task: &TaskRef) -> Result<(), ParkStop> {
    if task.expired.get() > 0 {
        return Err(ParkStop::TimedOut);
    }
    if task.kill_pending() {
        return Err(ParkStop::Killed);
    }
    Ok(())
}

/// [`end_park`] with a `Timeout` fired or a kill asked for: a pending kill first, then the
/// `Timeout` (a kill asked for an ad hoc task, which cannot be killed, stops nothing).
#[cold]
#[inline(never)]
fn end_park_stop(task: &TaskRef) -> Result<(), ParkStop> {
    if task.kill_pending() {
        return Err(ParkStop::Killed);
    }
    if task.expired.get() > 0 {
        return Err(ParkStop::TimedOut);
    }
    Ok(())
}

/// Like [`park`], but also wakes at `deadline`. Returns `Ok(true)` if the deadline was
/// reached, `Ok(false)` if something else woke the green thread first.
pub(crate) fn park_until(deadline: Instant) -> Result<bool, WaitError> {
    with_hub(|hub| park_until_in(hub, deadline))
}

fn park_until_in(hub: &Hub, deadline: Instant) -> Result<bool, WaitError> {
    let task = hub.current_task();
    let epoch = deadline_epoch(&task);
    let key = hub.add_timer(deadline, TimerAction::Wake(task.clone(), epoch));
    // Cancels the timer on every exit, including the unwind of a kill.
    let _timer = TimerGuard { hub, key };
    let reason = park_task(&task, hub)?;
    Ok(reason == WakeReason::Deadline || Instant::now() >= deadline)
}

/// A new epoch for `task`, about to park with a deadline, for its deadline's timer
/// ([`TimerAction::Wake`]), which wakes it only in this wait. Only parks with a deadline
/// take one (not every park: one instruction less on every other one): the timer is
/// cancelled when its park ends ([`TimerGuard`]), so it is never stale in a later park
/// anyway; the epoch is a second line against that, for the parks that have timers.
fn deadline_epoch(task: &TaskRef) -> u64 {
    let epoch = task.epoch.get() + 1;
    task.epoch.set(epoch);
    epoch
}

struct TimerGuard<'a> {
    hub: &'a Hub,
    key: TimerKey,
}

impl Drop for TimerGuard<'_> {
    fn drop(&mut self) {
        self.hub.cancel_timer(self.key);
    }
}

/// Puts the current green thread at the back of the run queue and lets the others run
/// (gevent's `sleep(0)`). A kill is delivered here; a fired `Timeout` is not (the next
/// blocking call reports it).
///
/// Inlined (with the whole hand-off, up to the switch): see "Inlined into the caller" in
/// the module docs.
#[inline]
pub fn yield_now() {
    // The closure inlined too: with several call sites LLVM would keep a shim for
    // `Hub::yield_current` out of line, and its `ret` would follow every resume.
    with_hub(
        #[inline(always)]
        |hub| hub.yield_current(),
    )
}

impl Hub {
    // Inlined into `yield_now`: the hub's thread-local is one load and a null test, so
    // there is no second function (its tail jump and its stack alignment) per yield.
    #[inline(always)]
    fn yield_current(&self) {
        // The usual case: the hub's current record is the running green thread, which is
        // not queued and not being killed. Its record moves from `current` to the run
        // queue (no reference count traffic), and no handle stays on this stack. (`|`: one
        // test for both flags; a kill flag on an ad hoc task, which cannot be killed, takes
        // the slow path, which yields all the same.)
        let task = match self.current.take() {
            Some(task) if task.greenlet.is_current() && !(task.queued.get() | task.kill.get()) => {
                task
            }
            other => {
                self.current.set(other);
                return self.yield_slow();
            }
        };
        // The wake reason is left alone: only a park reads it, and `begin_park` resets it.
        task.queued.set(true);
        task.parked.set(true);
        let next = self.take_direct_after_yield(task);
        // `current` was emptied above and nothing refilled it (no code of ours ran since).
        self.switch_to_next::<true>(next);
        // No kill to check on the way back: a kill requested while this green thread was
        // queued is thrown into it at its switch-in by the hub (`run`: it unwinds out of
        // the switch above), and a direct hand-off never goes to a task with a kill
        // requested (`take_direct`).
    }

    #[cold]
    #[inline(never)]
    fn yield_slow(&self) {
        let hub = self;
        let task = hub.current_task();
        task.check_kill();
        hub.schedule(task.clone());
        task.parked.set(true);
        // A yield ends a turn begun by a park or a finish (see `runs_left`).
        hub.end_long_turn();
        hub.switch_out();
        task.check_kill();
    }
}

/// A `Send` handle that wakes the current green thread from any OS thread.
pub(crate) fn remote_waker() -> RemoteWaker {
    with_hub(remote_waker_in)
}

fn remote_waker_in(hub: &Hub) -> RemoteWaker {
    let task = hub.current_task();
    let id = task.id;
    hub.remote_tasks
        .borrow_mut()
        .entry(id)
        .and_modify(|e| e.1 += 1)
        .or_insert((task, 1));
    RemoteWaker {
        token: Arc::new(RemoteToken {
            inbox: hub.inbox.clone(),
            task: id,
        }),
    }
}

/// Registers `fd` with this thread's reactor (edge-triggered, both directions).
pub(crate) fn register_fd(fd: RawFd) -> io::Result<SourceId> {
    with_hub(|hub| hub.reactor.borrow_mut().register(fd))
}

/// Deregisters a source, waking (with an error on their next attempt) whoever waits on it.
/// Call it before closing the fd. A no-op once this thread's hub is gone (thread exit: the
/// selector, and every kernel registration with it, is closed already).
pub(crate) fn deregister_fd(id: SourceId) {
    let Some(hub) = existing_hub() else { return };
    let (r, w) = hub.reactor.borrow_mut().deregister(id);
    for task in [r, w].into_iter().flatten() {
        hub.io_waiters.set(hub.io_waiters.get() - 1);
        task.closed.set(true);
        hub.schedule(task);
    }
}

/// See [`Reactor::refresh`](crate::reactor::Reactor::refresh): proves that the kept
/// registration `id` of `fd` still watches the file `fd` names (`Ok(false)`), or registers
/// it afresh (`Ok(true)`: the number was reused). For the monkey shim's kept registrations.
#[cfg(all(feature = "monkey", any(target_os = "linux", target_os = "android")))]
pub(crate) fn refresh_fd(id: SourceId, fd: RawFd) -> io::Result<bool> {
    with_hub(|hub| hub.reactor.borrow_mut().refresh(id, fd))
}

/// Whether an operation on the registered source `id` in `dir` may succeed, per the
/// reactor's cached readiness: `false` only when it is known to fail with `WouldBlock`.
/// `true` when unknown: a stale id, no hub (thread teardown), the reactor busy.
#[cfg(test)]
pub(crate) fn fd_may_be_ready(id: SourceId, dir: Direction) -> bool {
    let Some(hub) = existing_hub() else {
        return true;
    };
    let Ok(reactor) = hub.reactor.try_borrow() else {
        return true;
    };
    reactor.readiness(id).is_none_or(|r| match dir {
        Direction::Read => r.is_readable(),
        Direction::Write => r.is_writable(),
    })
}

/// After a stream read returned fewer bytes than asked for (but some): the receive buffer
/// is drained, so the next read may go straight to [`wait_fd_drained`] (the reactor's
/// "drained shortcut"). The monkey shim's; `verdant::net` sockets clear at the wait
/// instead (see `net::source`). Its one caller, `monkey::cache`, is Linux-only.
#[cfg(all(feature = "monkey", any(target_os = "linux", target_os = "android")))]
pub(crate) fn fd_drained(id: SourceId, dir: Direction) {
    HUB.with(|hub| {
        if let Some(hub) = hub {
            if let Ok(mut reactor) = hub.reactor.try_borrow_mut() {
                reactor.clear_ready_drained(id, dir);
            }
        }
    });
}

/// Whether the code running now is a green thread (including the thread's main greenlet)
/// of this thread's hub: the hub exists, is not being created or torn down, and the hub
/// greenlet itself is not the one running. Never creates a hub. Used by the monkey shim
/// to decide whether a libc call may wait on the hub.
#[cfg(feature = "monkey")]
pub(crate) fn in_green_thread() -> bool {
    HUB.with(|hub| match hub {
        Some(hub) => !hub.greenlet.is_current(),
        None => false,
    })
}

impl Hub {
    /// The current green thread is finishing (its result is stored, its joiners woken, and
    /// it holds no handle to its record any more): it ends here, with its final switch
    /// straight to the next ready green thread, if the turn has runs left (what the hub's
    /// loop would do next: same queue, order and budget); otherwise this returns, and the
    /// final switch goes to the hub when the greenlet's body returns. The caller must be
    /// the last thing a green thread's body does, with nothing left to drop in its frames
    /// (see [`Greenlet::exit_held_in`]): they are abandoned.
    ///
    /// `joiner`: the finishing one's single joiner, to wake: not claimed yet (see
    /// `TaskRef::claim_wake`; it may be finished or scheduled already) and not in the run
    /// queue. Queued and taken back at once it would be the next to run if the queue is
    /// empty: then control goes straight to it without the trip through the queue (with the
    /// same turn accounting: one more ready green thread).
    ///
    /// `finishing`: the finishing green thread's record, which the caller took out of
    /// `current` ([`take_current_task`](Self::take_current_task)). When the green thread
    /// does not end here, it goes back there (the hub's `run` releases it when it runs the
    /// next one). The record's last handle (its `JoinHandle` is gone) is dropped once
    /// `next` is in `current` ([`exit_last`](Self::exit_last)).
    ///
    /// Inline, the usual finish: straight to the joiner, with the run queue empty, runs
    /// left in the turn, and the joiner not finished, scheduled or being killed (tested here
    /// first, the same tests then fold away in [`exit_direct_to`](Self::exit_direct_to)),
    /// holding no call that returns into it, so that the frame of the green thread's body
    /// it is inlined into saves no register for it (see `TaskRef::finish_exit_in`). Its
    /// claim of the joiner's wake-up is left out: `queued` would be set and cleared again
    /// (`enter_direct`) with nothing in between to see it, and the tests made here send
    /// `exit_direct_to` down its direct branch, so the unclaimed joiner never goes into
    /// the run queue. The rest out of line.
    #[inline(always)]
    pub(crate) fn exit_direct(&self, finishing: TaskRef, joiner: Option<TaskRef>) {
        match joiner {
            Some(joiner)
                if self.ready.is_empty()
                    && self.turn_left.get() & TURN_RUNS != 0
                    && !(joiner.killed_or_finished() | joiner.queued.get()) =>
            {
                self.exit_direct_to(finishing, Some(joiner))
            }
            joiner => self.exit_direct_claiming(finishing, joiner),
        }
    }

    /// [`exit_direct`](Self::exit_direct) out of line: the joiner's wake-up is
    /// claimed first (it may be finished or scheduled already).
    #[inline(never)]
    fn exit_direct_claiming(&self, finishing: TaskRef, joiner: Option<TaskRef>) {
        self.exit_direct_to(finishing, joiner.filter(TaskRef::claim_wake))
    }

    /// [`exit_direct`](Self::exit_direct) with `joiner`'s wake-up claimed.
    #[inline(always)]
    fn exit_direct_to(&self, finishing: TaskRef, joiner: Option<TaskRef>) {
        let next = match joiner {
            Some(joiner) if self.ready.is_empty() => match self.runs_left_parking(1) {
                Some(left) => self.direct_to(joiner, left),
                None => {
                    self.ready.push_back(joiner);
                    None
                }
            },
            Some(joiner) => {
                self.ready.push_back(joiner);
                self.take_direct()
            }
            None => self.take_direct(),
        };
        let Some(next) = next else {
            self.put_current_task(finishing);
            return;
        };
        self.enter_direct(&next);
        // The green thread ends here, its final switch going to `next`, which goes into
        // `current` (as the hub's `run` would switch it in); the finishing record is
        // released first. Nothing is left to drop on the finishing green thread's stack:
        // its closure and result are gone, and `end_task_in` calls this last.
        match finishing.release_shared() {
            // Another handle keeps the record (a `JoinHandle`, usually): released with no
            // code run, and `current` is still empty.
            None => Greenlet::exit_held_in_empty(&self.current, next, |task| &task.greenlet),
            Some(last) => self.exit_last(last, next),
        }
    }

    /// [`exit_direct`](Self::exit_direct)'s end when the finishing record's handle is its
    /// last: its drop (the result's) may run any code, which finds the record in `current`
    /// as while the green thread ran; `exit_held_in` drops it once `next` is in. Out of line
    /// and not returning, so that no call returns into the usual exit (see
    /// `TaskRef::finish_exit_in`).
    #[cold]
    #[inline(never)]
    fn exit_last(&self, last: TaskRef, next: TaskRef) -> ! {
        self.put_current_task(last);
        Greenlet::exit_held_in(&self.current, next, |task| &task.greenlet)
    }
}

/// Keeps a finished task record (a clone of its last handle) for the next spawn. A no-op
/// without a hub (thread teardown).
pub(crate) fn recycle_task(task: &TaskRef) {
    HUB.with(|hub| {
        if let Some(hub) = hub {
            hub.spare_tasks.give(task.clone());
        }
    });
}

/// This thread's hub if it exists and the thread is not tearing its locals down.
fn existing_hub() -> Option<Rc<Hub>> {
    HUB.rc()
}

/// How a [`wait_fd`] ended (interruptions are its `Err`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FdWait {
    /// The fd may be ready (or a wake-up was spurious): retry the operation.
    Ready,
    /// The source was deregistered (closed) while waiting.
    Closed,
    /// The `deadline` passed before the fd became ready.
    Deadline,
    /// Another green thread already waits on this source in this direction; nothing was
    /// registered (one waiter per fd and direction is the reactor's contract).
    Busy,
}

/// After an operation on a registered fd returned `WouldBlock`: waits until the fd is
/// ready in `dir`, the source is deregistered, `deadline` passes, or the wait is
/// interrupted (`Err`: a fired `Timeout`; a kill unwinds). Whatever ends it, the waiter
/// is removed: nothing stays registered.
#[inline]
pub(crate) fn wait_fd(
    id: SourceId,
    dir: Direction,
    deadline: Option<Instant>,
) -> Result<FdWait, WaitError> {
    match deadline {
        None => with_hub(move |hub| wait_fd_in(hub, id, dir, Clear::AfterWouldBlock)),
        Some(deadline) => {
            with_hub(move |hub| wait_fd_until(hub, id, dir, deadline, Clear::AfterWouldBlock))
        }
    }
}

/// [`wait_fd`] without an operation's `WouldBlock` first, after a stream read that
/// drained the receive buffer (the reactor's "drained shortcut"). With `clear` (no poll
/// since that read: [`crate::reactor::polls`] unchanged) the cached readiness is cleared
/// first as [`Reactor::clear_ready_drained`](crate::reactor::Reactor::clear_ready_drained)
/// would have at the read; without (a poll came since, which may have recorded a new
/// edge) it is left as it is, so that an edge that came since returns `Ready` at once
/// instead of being lost.
#[inline]
pub(crate) fn wait_fd_drained(
    id: SourceId,
    dir: Direction,
    deadline: Option<Instant>,
    clear: bool,
) -> Result<FdWait, WaitError> {
    let clear = if clear { Clear::Drained } else { Clear::Not };
    match deadline {
        None => with_hub(move |hub| wait_fd_in(hub, id, dir, clear)),
        Some(deadline) => with_hub(move |hub| wait_fd_until(hub, id, dir, deadline, clear)),
    }
}

/// Parks the current task as the waiter of `id` in `dir` (after clearing the cached
/// readiness as `clear` says), or says why not.
#[inline(always)]
fn set_fd_waiter(hub: &Hub, id: SourceId, dir: Direction, clear: Clear) -> Result<TaskRef, FdWait> {
    let task = hub.current_task();
    let set = hub
        .reactor
        .borrow_mut()
        .set_waiter_after(id, dir, clear, task.clone());
    match set {
        Ok(()) => {}
        Err(WaiterError::Ready(_)) => return Err(FdWait::Ready),
        Err(WaiterError::Stale(_)) => return Err(FdWait::Closed),
        Err(WaiterError::Busy(_)) => return Err(FdWait::Busy),
    }
    hub.io_waiters.set(hub.io_waiters.get() + 1);
    task.closed.set(false);
    Ok(task)
}

// Once per request of a server, and what lies on a parked connection's stack: one small
// frame (the wrappers above inline into the socket's I/O loop and pass registers only),
// one borrow of the reactor to register, none after a wake-up by the poll
// (`WakeReason::Io`).
#[inline(never)]
fn wait_fd_in(hub: &Hub, id: SourceId, dir: Direction, clear: Clear) -> Result<FdWait, WaitError> {
    let task = match set_fd_waiter(hub, id, dir, clear) {
        Ok(task) => task,
        Err(not_parked) => return Ok(not_parked),
    };
    // Removes the waiter on every exit, including the unwind of a kill.
    let registered = FdWaiterGuard { hub, id, dir };
    let reason = park_task(&task, hub)?;
    registered.woken(reason);
    if task.closed.replace(false) {
        Ok(FdWait::Closed)
    } else {
        Ok(FdWait::Ready)
    }
}

/// [`wait_fd_in`] with a deadline (a socket timeout).
#[cold]
#[inline(never)]
fn wait_fd_until(
    hub: &Hub,
    id: SourceId,
    dir: Direction,
    deadline: Instant,
    clear: Clear,
) -> Result<FdWait, WaitError> {
    let task = match set_fd_waiter(hub, id, dir, clear) {
        Ok(task) => task,
        Err(not_parked) => return Ok(not_parked),
    };
    let registered = FdWaiterGuard { hub, id, dir };
    let epoch = deadline_epoch(&task);
    let key = hub.add_timer(deadline, TimerAction::Wake(task.clone(), epoch));
    // Cancels the timer on every exit, including the unwind of a kill.
    let timer = TimerGuard { hub, key };
    let reason = park_task(&task, hub)?;
    registered.woken(reason);
    drop(timer);
    let reached = reason == WakeReason::Deadline || Instant::now() >= deadline;
    if task.closed.replace(false) {
        Ok(FdWait::Closed)
    } else if reached && !hub.reactor.borrow().is_ready(id, dir) {
        Ok(FdWait::Deadline)
    } else {
        Ok(FdWait::Ready)
    }
}

/// The fd waiter of a [`wait_fd_in`]: removed from the reactor when dropped, unless the
/// poll took it already.
struct FdWaiterGuard<'a> {
    hub: &'a Hub,
    id: SourceId,
    dir: Direction,
}

impl FdWaiterGuard<'_> {
    /// The wait ended with `reason` (`park` returned `Ok`).
    fn woken(self, reason: WakeReason) {
        if reason == WakeReason::Io {
            // The poll took the waiter out of the reactor (and counted it out of
            // `io_waiters`): nothing to remove, and the source's slot, which is long out
            // of cache by now, need not be touched.
            std::mem::forget(self);
        }
    }
}

impl Drop for FdWaiterGuard<'_> {
    fn drop(&mut self) {
        let removed = self
            .hub
            .reactor
            .borrow_mut()
            .remove_waiter(self.id, self.dir);
        if removed.is_some() {
            self.hub.io_waiters.set(self.hub.io_waiters.get() - 1);
        }
    }
}

#[cfg(test)]
mod tests;
