//! Green threads: spawn, join, kill, and the task record the hub schedules.

use super::{
    current_task, hub, park, park_task_with, park_until_in, with_hub, TimerAction, WaitError,
};
use crate::greenlet::erased::{ErasedCell, TypeKey};
use crate::greenlet::{self, DropAction, Greenlet, OnDrop, StrongRc};
use crate::stack::DEFAULT_STACK_SIZE;
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::ops::Deref;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// The panic payload that unwinds a killed green thread (see [`JoinHandle::kill`]).
///
/// Code that catches panics inside a green thread should let this one continue
/// (`std::panic::resume_unwind`), as it would a `GreenletExit` in gevent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Killed;

/// The hub's record of one green thread, with its join state.
///
/// A spawned green thread's closure, then its result, live in the record itself, in one
/// type-erased cell (`body`): the closure is taken out when the green thread starts,
/// before there is a result, so the two never need the cell at once. The greenlet's own
/// body captures nothing (so boxing it allocates nothing), and a `JoinHandle<T>` is the
/// record and a type: nothing else is allocated or reference counted per spawn. The record
/// itself stays sized, so a `TaskRef` is a thin pointer whose fields are at fixed offsets.
///
/// `repr(C)`, hot fields first: what every park and wake-up touches (the greenlet, the
/// flags, the epoch) follows the `Rc`'s counts in the first 52 bytes of the allocation,
/// one cache line or two, instead of being spread over three. A server's connection
/// misses each line of its record once when the poll schedules it and once when it runs.
///
/// The flags lie in two words, placed for the tests and stores that touch several at once
/// (offsets in the record's allocation; the `Rc`'s count precedes `greenlet`):
///
/// ```text
///   0x28  expired (u32)  kill  finished  done  closed     a park's stop test: the low 5 bytes
///   0x30  queued  parked  reason  joinable  is_adhoc  recorded  more_waiters  (padding)
/// ```
///
/// * `expired` and `kill`, the two reasons a park stops ([`stop_pending`](Task::stop_pending)):
///   one test of the word with a mask, where `expired` and then `kill` were two loads and
///   two branches per park (and per park's end).
/// * `kill` and `finished`, what a direct hand-off tests of its target (`Hub::direct_to`):
///   one 16-bit compare with memory, where two byte loads were or'd (twice per spawn + run +
///   join, once per other hand-off).
/// * `finished` and `done`, both set as a green thread finishes: one 16-bit store.
/// * `queued` and `parked` (cleared at once as a green thread is run: `enter_direct`),
///   `parked` and `reason` (set at once by a park's first half: `begin_park`).
/// * `recorded` and `more_waiters`, what a finish tests for its slow path: one 16-bit
///   compare.
/// * A re-arming spawn ([`reset`](Task::reset)) stores constants in both words: all of the
///   first (one 8-byte store of 0), and the second's seven bytes (`recorded` false, set
///   after that only for a green thread the stall monitor is told about).
#[repr(C)]
pub(crate) struct Task {
    pub(crate) greenlet: Greenlet,
    pub(crate) id: u64,
    /// Incremented by every park with a deadline (`deadline_epoch`), so that a stale
    /// deadline does not wake a later wait.
    pub(crate) epoch: Cell<u64>,
    /// Fired `Timeout` guards still in scope.
    pub(crate) expired: Cell<u32>,
    pub(crate) kill: Cell<bool>,
    pub(crate) finished: Cell<bool>,
    /// Whether it finished (returned, panicked or was killed) and its result is stored.
    done: Cell<bool>,
    /// Set when the fd this task waited on was deregistered (closed) under it.
    pub(crate) closed: Cell<bool>,
    pub(crate) queued: Cell<bool>,
    pub(crate) parked: Cell<bool>,
    /// Beside `parked`: a park's first half sets both (`begin_park`), one store.
    pub(crate) reason: Cell<super::WakeReason>,
    /// Whether its `JoinHandle` still exists (one is made at every spawn). Without it the
    /// green thread is detached and drops its result itself as it ends (`end_detached`),
    /// whatever else still holds the record (a pending wake-up, a waker of another OS
    /// thread): a result left in the record would be dropped with the record's last
    /// handle, possibly on the hub's stack.
    joinable: Cell<bool>,
    /// A green thread the hub did not spawn: the main greenlet, or one switched to by hand.
    pub(crate) is_adhoc: bool,
    /// Whether the stall monitor was told about this green thread (and must be told when
    /// it finishes).
    recorded: Cell<bool>,
    /// Whether `waiters.rest` holds any: what a green thread's finish tests (`complete_in`),
    /// one byte, where testing `rest` itself takes its borrow flag and its length. Beside
    /// `recorded`: the finish tests both with one 16-bit compare
    /// ([`finish_exit_in`](TaskRef::finish_exit_in)).
    more_waiters: Cell<bool>,
    /// When it finished, in its hub's completion order (for `iwait`).
    finished_seq: Cell<u64>,
    /// The green threads waiting in `join`/`iwait`.
    waiters: Waiters,
    /// A spawned green thread's closure `F` until it starts, then its
    /// `Result<T, JoinError>` until a `JoinHandle<T>` takes it (or the last one is dropped);
    /// taken and stored by code that knows `F` and `T` (`run_task::<F, T>`,
    /// `JoinHandle<T>`), so the hub handles every task alike. Empty for an ad hoc task, and
    /// in a spare record.
    body: ErasedCell,
}

// The hot fields end within the first 48 bytes of `Task` (the `Rc`'s two counts precede it).
const _: () = assert!(std::mem::offset_of!(Task, more_waiters) < 48);
// The words of the type's docs: `expired` to `closed` one aligned word, with no padding
// (`stop_pending` reads it whole), `queued` to `more_waiters` the next (`reset` writes it).
const _: () = {
    use std::mem::{align_of, offset_of};
    assert!(offset_of!(Task, expired) % 8 == 0 && align_of::<Task>() >= 8);
    assert!(offset_of!(Task, kill) == offset_of!(Task, expired) + 4);
    assert!(offset_of!(Task, finished) == offset_of!(Task, kill) + 1);
    assert!(offset_of!(Task, done) == offset_of!(Task, finished) + 1);
    assert!(offset_of!(Task, closed) == offset_of!(Task, done) + 1);
    assert!(offset_of!(Task, queued) == offset_of!(Task, expired) + 8);
    assert!(offset_of!(Task, recorded) == offset_of!(Task, queued) + 5);
    assert!(offset_of!(Task, more_waiters) == offset_of!(Task, recorded) + 1);
    assert!(std::mem::size_of::<super::WakeReason>() == 1);
    assert!(super::WakeReason::Normal as u8 == 0);
    // `reset` writes the second word whole: it ends at the next field's start at most.
    assert!(offset_of!(Task, queued) + 8 <= offset_of!(Task, finished_seq));
};

/// A cheap, clonable handle to a green thread's record, for wake-up lists.
#[derive(Clone)]
pub(crate) struct TaskRef(StrongRc<Task>);

/// Most finished task records a hub keeps for reuse ([`SpareTasks`]).
const SPARE_TASKS: usize = 256;

/// Finished task records, each with its dead greenlet, kept by the hub so that a spawn
/// after warm-up allocates neither (see [`Builder::build`]). A record goes here when the
/// last handle to it, a `JoinHandle`, is dropped after the green thread finished; only
/// memory stays in it (the result was dropped), and the stack its dead greenlet kept for
/// the next green thread (within `stack::keep`'s limit; else it went back to the pool).
///
/// A stack of records, the last one given the first one taken: the top one in a cell of
/// its own, so that the usual spawn-join-spawn cycle passes one record back and forth
/// without touching the vector (no borrow flag, no length or capacity test).
#[derive(Default)]
pub(crate) struct SpareTasks {
    top: Cell<Option<TaskRef>>,
    /// The ones below `top` (at most `SPARE_TASKS - 1`), the last one next.
    rest: RefCell<Vec<TaskRef>>,
}

impl SpareTasks {
    #[inline]
    fn take(&self) -> Option<TaskRef> {
        match self.top.take() {
            Some(task) => Some(task),
            None => self.take_below(),
        }
    }

    /// [`take`](Self::take) with the top cell empty.
    #[inline(never)]
    fn take_below(&self) -> Option<TaskRef> {
        self.rest.borrow_mut().pop()
    }

    /// How many records are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        let top = self.top.take();
        let n = usize::from(top.is_some()) + self.rest.borrow().len();
        self.top.set(top);
        n
    }

    /// Keeps `task` (a clone of the last handle to it) unless the pool is full.
    #[inline(always)]
    pub(crate) fn give(&self, task: TaskRef) {
        if let Some(below) = self.top.replace(Some(task)) {
            self.give_below(below);
        }
    }

    /// Keeps `task`, the previous top one, below the new top one unless the pool is full.
    ///
    /// `extern "C"` (never called from C): a panic in here (none is expected: the borrow is
    /// never held elsewhere, the vector never outgrows `SPARE_TASKS`, and a spare record's
    /// drop runs no code of the user's) aborts rather than unwinds, so a `give` does not
    /// unwind. A join then needs no drop of the result it took on an unwinding path, and
    /// keeps it in registers (with the record moved to the spares rather than cloned:
    /// spawn + run + join −4 instructions).
    #[inline(never)]
    #[allow(improper_ctypes_definitions)]
    extern "C" fn give_below(&self, task: TaskRef) {
        let mut rest = self.rest.borrow_mut();
        if rest.len() < SPARE_TASKS - 1 {
            rest.push(task);
            return;
        }
        // Dropped outside the borrow (its greenlet's drop gives its stack back).
        drop(rest);
        drop(task);
    }
}

impl Deref for TaskRef {
    type Target = Task;
    fn deref(&self) -> &Task {
        &self.0
    }
}

impl Task {
    fn new(id: u64, greenlet: Greenlet, is_adhoc: bool) -> Task {
        Task {
            id,
            greenlet,
            is_adhoc,
            queued: Cell::new(false),
            parked: Cell::new(false),
            finished: Cell::new(false),
            kill: Cell::new(false),
            reason: Cell::new(super::WakeReason::Normal),
            expired: Cell::new(0),
            epoch: Cell::new(0),
            closed: Cell::new(false),
            done: Cell::new(false),
            joinable: Cell::new(!is_adhoc),
            recorded: Cell::new(false),
            more_waiters: Cell::new(false),
            finished_seq: Cell::new(0),
            waiters: Waiters::default(),
            body: ErasedCell::new(),
        }
    }

    /// Whether a park must not go on: a `Timeout` covering it fired (`expired`) or a kill
    /// was asked for (`kill`, of an ad hoc task too, which the caller then sorts out: see
    /// [`begin_park`](super::begin_park)). One test of the first word of the flags (see
    /// the type's docs) with a mask of its low five bytes (`movabs` and `test` with
    /// memory), for what was two loads and two branches per park and per park's end.
    #[inline(always)]
    pub(crate) fn stop_pending(&self) -> bool {
        // SAFETY: `expired` (4 bytes) is followed by `kill`, `finished`, `done` and `closed`
        // (one byte each) with no padding, at an 8-aligned offset of an 8-aligned type (the
        // asserts after the type): the 8 bytes read are initialised fields of `self`,
        // through a pointer made from `&Task`, whose provenance covers them all. They are
        // all in `Cell`s, which are never borrowed (their values are only moved in and
        // out) and which only this thread touches (`Task` is !Sync): no reference to them
        // lives, so reading them through a raw pointer conflicts with none.
        let word = unsafe {
            (self as *const Task)
                .cast::<u8>()
                .add(std::mem::offset_of!(Task, expired))
                .cast::<u64>()
                .read()
        };
        // The bytes of `expired` and `kill`, in memory order on any target.
        u64::from_le(word) & 0xff_ffff_ffff != 0
    }

    /// Whether it finished or a kill was asked for (`kill | finished`), what a direct
    /// hand-off tests of its target: the two bytes are adjacent (see the type's docs), read
    /// as one (LLVM merges the two loads: one compare with memory).
    #[inline(always)]
    pub(crate) fn killed_or_finished(&self) -> bool {
        u16::from_ne_bytes([u8::from(self.kill.get()), u8::from(self.finished.get())]) != 0
    }

    /// The green thread's name, if it was given one: its greenlet's (which every way of
    /// making or re-arming a task's greenlet gives the same name, so the record keeps no
    /// copy of its own, and a spawn does not store or test a second one).
    pub(crate) fn name(&self) -> Option<&str> {
        self.greenlet.name()
    }
}

impl Task {
    /// Makes a finished spawned record (its greenlet already respawned) the record of a
    /// new green thread, keeping the allocations it has (the waiters' vector). Its `body` is
    /// empty already (the last `JoinHandle` took or dropped the result).
    #[inline(always)]
    fn reset(&mut self, id: u64, queued: bool) {
        self.id = id;
        debug_assert!(!self.is_adhoc, "a spare record is an ad hoc one");
        debug_assert!(self.waiters.is_empty(*self.more_waiters.get_mut()));
        // The two words of the type's docs, constants both, one store each (written field
        // by field, LLVM made four stores of them, of 8, 4, 2 and 1 bytes):
        // `expired` to `closed` all 0; `queued` (as the caller asks: a spawn's is put in
        // the run queue at once), `parked`, `reason` (`Normal`), `joinable`
        // (true), `is_adhoc` (false already: a spare record was spawned, as it had a
        // `JoinHandle`, which only a spawn makes), `recorded` (false; set after this when the
        // stall monitor watches, out of line: `record_spawn`), `more_waiters` (false already:
        // no waiters, asserted above) and a byte of padding.
        // A constant still: `queued` is one where this is inlined (`build_in`'s `QUEUED`).
        let second = u64::from_ne_bytes([u8::from(queued), 0, 0, 1, 0, 0, 0, 0]);
        let base = (self as *mut Task).cast::<u8>();
        // SAFETY: both words lie within `self` (8-aligned, see the asserts after the type),
        // which is borrowed mutably here, through a pointer made from that borrow: no other
        // reference to the record lives. The first holds `expired` (a `u32`) and four
        // `bool`s, the second seven fields of one byte (`bool`s and `WakeReason`, whose
        // `Normal` is 0) and padding: every value written is a valid one for its field.
        unsafe {
            base.add(std::mem::offset_of!(Task, expired))
                .cast::<u64>()
                .write(0);
            base.add(std::mem::offset_of!(Task, queued))
                .cast::<u64>()
                .write(second);
        }
        debug_assert!(self.expired.get() == 0 && !self.kill.get() && !self.done.get());
        debug_assert!(self.joinable.get() && self.queued.get() == queued && !self.recorded.get());
        debug_assert!(self.reason.get() == super::WakeReason::Normal && !self.is_adhoc);
        // `epoch` is kept: it is only compared with a deadline's copy, whose timer holds a
        // handle to the record (a record with another handle is not reused). Nor is
        // `finished_seq` reset: it is read only once `done`, and `complete_in` sets it.
        // No waiters to clear: `complete_in` took them all when the record was done, and
        // none is added to a done record (`join`, `wait` and `iwait` test `done` first);
        // asserted before the flags' stores (which clear `more_waiters`).
    }
}

impl Task {
    /// Marks the current green thread's record finished (its result stored, or dropped if
    /// detached), tells the stall monitor, and completes it ([`complete_in`]).
    ///
    /// [`complete_in`]: Self::complete_in
    #[inline(always)]
    fn finish_in(&self, hub: &super::Hub) -> Option<TaskRef> {
        self.finished.set(true);
        if self.recorded.get() {
            hub.activity.finished(self.id);
        }
        self.complete_in(hub)
    }

    /// Marks the task done (its result is stored, or dropped if detached) and wakes its
    /// joiners, on this thread's hub. Inline (its one caller is a green thread's finish,
    /// `finish_in`); more than one joiner is the rare case, out of line.
    ///
    /// The usual single joiner is returned rather than queued, and not claimed (marked
    /// `queued`) yet: the caller's [`exit_direct`](super::Hub::exit_direct) claims and
    /// queues it or, when the run queue is empty, hands control straight to it (what
    /// pushing and popping it would do).
    #[inline(always)]
    fn complete_in(&self, hub: &super::Hub) -> Option<TaskRef> {
        // Once per life: its one caller is the green thread's finish (and `reset` clears it
        // for the next life).
        let was_done = self.done.replace(true);
        debug_assert!(!was_done, "a green thread completed twice");
        // The usual single joiner taken without touching the vector (woken after its
        // borrow is released). Both read before the stores to the hub below, which for all
        // the compiler knows may write the record: then the test of `more` folds away
        // where the caller made it already ([`TaskRef::finish_exit_in`]).
        let first = self.waiters.first.take();
        let more = self.more_waiters.get();
        // Only compared between tasks of one hub (`iwait`): the hub's own count.
        let seq = hub.completions.get() + 1;
        hub.completions.set(seq);
        self.finished_seq.set(seq);
        if more {
            if let Some(w) = first {
                w.wake_owned_in(hub);
            }
            self.wake_more_joiners(hub);
            return None;
        }
        first
    }

    /// The joiners after the first one (in `join`/`iwait` on several handles at once).
    #[inline(never)]
    fn wake_more_joiners(&self, hub: &super::Hub) {
        let rest = std::mem::take(&mut *self.waiters.rest.borrow_mut());
        self.more_waiters.set(false);
        for w in rest {
            w.wake_owned_in(hub);
        }
    }
}

impl TaskRef {
    pub(crate) fn adhoc(greenlet: Greenlet, id: u64) -> TaskRef {
        TaskRef(StrongRc::new(Task::new(id, greenlet, true)))
    }

    /// Schedules the green thread to run (if it is not already scheduled or finished).
    pub(crate) fn wake(&self) {
        if !self.finished.get() {
            with_hub(|hub| hub.schedule(self.clone()));
        }
    }

    /// [`wake`](Self::wake) for a caller that holds this thread's hub already and gives
    /// up its handle (moved into the run queue rather than cloned).
    #[inline(always)]
    fn wake_owned_in(self, hub: &super::Hub) {
        if self.claim_wake() {
            hub.ready.push_back(self);
        }
    }

    /// Marks it scheduled (`queued`) unless it finished or is scheduled already, and
    /// returns whether it did: then the caller puts it in the run queue
    /// ([`wake_owned_in`](Self::wake_owned_in)) or hands control straight to it
    /// ([`Task::complete_in`]'s joiner, claimed by `Hub::exit_direct`).
    #[inline(always)]
    pub(super) fn claim_wake(&self) -> bool {
        !self.finished.get() && !self.queued.replace(true)
    }

    /// The end of the current green thread, whose record this is (taken out of `current`),
    /// its result stored there (or dropped, if detached): marks it finished, wakes its
    /// joiners ([`Task::finish_in`]) and ends it inside `Hub::exit_direct`, with its final
    /// switch straight to the next ready green thread, when the turn allows; otherwise the
    /// record goes back into `current` and this returns (the final switch then goes to the
    /// hub when the greenlet's body returns).
    ///
    /// Inline, the usual finish (the stall monitor not told, at most one joiner), and with
    /// `Hub::exit_direct`'s own split the usual hand-off, hold no call that returns into
    /// them: the frame of the green thread's body they are inlined into (`run_closure_in`)
    /// then needs no callee-saved register and no spill for them (it saved six and spilled
    /// eight values, some 20 instructions per spawn + run + join). The rest goes out of
    /// line as a whole (`finish_exit_outlined`: the same steps), its tests folding away
    /// here.
    #[inline(always)]
    fn finish_exit_in(self, hub: &super::Hub) {
        // Both in one 16-bit load (adjacent: see the type's docs), one test.
        if u16::from_ne_bytes([
            u8::from(self.recorded.get()),
            u8::from(self.more_waiters.get()),
        ]) != 0
        {
            return self.finish_exit_outlined(hub);
        }
        self.finish_exit_with(hub)
    }

    /// [`finish_exit_in`](Self::finish_exit_in) out of line: a green thread the stall
    /// monitor was told about, or one with several joiners.
    #[cold]
    #[inline(never)]
    fn finish_exit_outlined(self, hub: &super::Hub) {
        self.finish_exit_with(hub)
    }

    #[inline(always)]
    fn finish_exit_with(self, hub: &super::Hub) {
        let joiner = self.finish_in(hub);
        hub.exit_direct(self, joiner);
    }

    /// Gives up this handle if another one keeps the record (no code runs: only the count
    /// is decremented); else returns it, the last one.
    #[inline(always)]
    pub(crate) fn release_shared(self) -> Option<TaskRef> {
        if StrongRc::strong_count(&self.0) > 1 {
            drop(self);
            None
        } else {
            Some(self)
        }
    }

    pub(crate) fn ptr_eq(&self, other: &TaskRef) -> bool {
        StrongRc::ptr_eq(&self.0, &other.0)
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.finished.get()
    }

    /// Whether a kill is pending for it (ad hoc tasks cannot be killed).
    #[inline]
    pub(crate) fn kill_pending(&self) -> bool {
        self.kill.get() && !self.is_adhoc
    }

    /// Parks the current green thread until this task is done, for `join`: the
    /// [`wait_done_in`](Self::wait_done_in) of a wait with no deadline, without the
    /// deadline's tests, as far as its usual case goes (one park, woken by the joined one's
    /// finish); whatever else happens is left to the general wait
    /// ([`join_wait_slow`](Self::join_wait_slow)), told why. Inlined into `join` (so into the
    /// user's code), with its cold paths out of line: no `ret` runs between the resume and
    /// the caller's own code, whose returns the return-address predictor would otherwise
    /// mispredict (see "Inlined into the caller" in the hub's module docs).
    ///
    /// It returns no `Result`: the join's `Result<(), JoinError>` of one, merged with those
    /// of its slow paths (one returned through memory), was a value LLVM kept on the stack
    /// when the code around it changed (a store, a load and a compare per join), where a
    /// small enum's cases are branches.
    #[inline(always)]
    fn join_wait_in(&self, hub: &super::Hub) -> JoinWait {
        // The park of `park_task_with` (its two halves, `begin_park` and `end_park`), on
        // the record taken out of `current`: it moves into the waiters (no handle made,
        // none dropped, none on this stack while parked), and `current` stays empty until
        // the switch puts the next record in (as a yield's does). A kill is unwound only
        // once the record is back in `current` (by the caller).
        let Some(me) = hub.take_current_task() else {
            return JoinWait::NotCurrent;
        };
        if self.ptr_eq(&me) {
            hub.put_current_task(me);
            join_self();
        }
        if let Err(stop) = super::begin_park(&me) {
            hub.put_current_task(me);
            return JoinWait::Stopped(stop);
        }
        self.waiters.push(me, &self.more_waiters);
        hub.switch_out_emptied();
        // Woken. Done, the usual case (`complete_in` took every waiter already, this one
        // included): the result is there, and the join returns it without looking at the
        // end of the park (no record taken out of `current` and put back). A kill requested
        // meanwhile was thrown in at the switch already (the hub's `run` throws it into a
        // parked green thread, and a direct hand-off never goes to one being killed); a
        // `Timeout` that fired as the joined one finished is left to the next blocking
        // call, as one that fires while nothing blocks.
        if self.done.get() {
            JoinWait::Done
        } else {
            JoinWait::WokenEarly
        }
    }

    /// [`join_wait_in`](Self::join_wait_in) when its park did not end with this task done
    /// (`wait`, as it returned): the general wait finishes it (for
    /// [`JoinHandle::join_slow`]). Not generic; its errors are a wait's (the joined one's
    /// panic comes with its result).
    #[cold]
    #[inline(never)]
    fn join_wait_slow(&self, hub: &super::Hub, wait: JoinWait) -> Result<(), WaitError> {
        match wait {
            JoinWait::Done => return Ok(()),
            // A green thread whose record `current` does not hold (a greenlet the user
            // switched to by hand, not seen yet): the general wait's `current_task` finds
            // (or makes) the record.
            JoinWait::NotCurrent => {}
            JoinWait::Stopped(stop) => return Err(stop.raise()),
            // Woken before this task was done (a wake from elsewhere, a kill, a `Timeout`,
            // nothing left to run): the park's end first, and the current green thread off
            // the waiters; then wait again.
            JoinWait::WokenEarly => {
                let r = match hub.with_current_task(|me| me.map(super::end_park)) {
                    Some(Ok(_)) => Ok(()),
                    Some(Err(stop)) => Err(stop.raise()),
                    None => Self::after_park_slow(hub),
                };
                self.remove_current_waiter(hub);
                r?;
            }
        }
        // With no deadline, `wait_done_in` returns only once done (or with an error).
        self.wait_done_in(hub, None).map(drop)
    }

    /// The end of [`join_wait_in`](Self::join_wait_in)'s park (as `park_task_with`'s)
    /// when `current` does not hold the resumed green thread's record.
    #[cold]
    #[inline(never)]
    fn after_park_slow(hub: &super::Hub) -> Result<(), WaitError> {
        match super::end_park(&hub.current_task()) {
            Ok(_) => Ok(()),
            Err(stop) => Err(stop.raise()),
        }
    }

    /// Takes the current green thread off the waiters (woken before this task was done:
    /// a timeout, nothing left to run, or a wake from elsewhere).
    #[cold]
    #[inline(never)]
    fn remove_current_waiter(&self, hub: &super::Hub) {
        self.waiters.remove(&hub.current_task(), &self.more_waiters);
    }

    /// Blocks the current green thread until this task is done (`Ok(true)`) or the
    /// deadline (`Ok(false)`). Not generic, so shared by every `JoinHandle<T>`.
    #[inline(never)]
    fn wait_done_in(&self, hub: &super::Hub, deadline: Option<Instant>) -> Result<bool, WaitError> {
        let me = hub.current_task();
        if self.ptr_eq(&me) {
            join_self();
        }
        loop {
            if self.done.get() {
                return Ok(true);
            }
            self.waiters.push(me.clone(), &self.more_waiters);
            let r = match deadline {
                Some(d) => park_until_in(hub, d),
                None => park_task_with(&me, hub, super::Hub::switch_out_inline).map(|_| false),
            };
            // Done: `complete_in` took every waiter already, this one included.
            if !self.done.get() {
                self.waiters.remove(&me, &self.more_waiters);
            }
            match r {
                Ok(true) if !self.done.get() => return Ok(false),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// How many green threads wait in `join`/`iwait` for this one.
    #[cfg(test)]
    pub(crate) fn waiter_count(&self) -> usize {
        let first = self.waiters.first.take();
        let n = usize::from(first.is_some()) + self.waiters.rest.borrow().len();
        self.waiters.first.set(first);
        n
    }

    /// Unwinds the current green thread if a kill is pending for it.
    pub(crate) fn check_kill(&self) {
        if self.kill_pending() {
            panic::resume_unwind(Box::new(Killed));
        }
    }
}

/// How [`Task::join_wait_in`]'s park ended.
#[derive(PartialEq, Eq)]
enum JoinWait {
    /// Woken with the joined green thread done: its result is there.
    Done,
    /// Not parked: `current` does not hold the running green thread's record.
    NotCurrent,
    /// Not parked: a `Timeout` fired or a kill is pending (raised by the caller, with the
    /// record back in `current`).
    Stopped(super::ParkStop),
    /// Woken before the joined green thread was done; the park is not ended yet
    /// ([`Task::join_wait_slow`] ends it).
    WokenEarly,
}

/// A finished green thread's record holds no result for its handle: a bug of the hub's.
#[cold]
#[inline(never)]
fn no_result() -> ! {
    panic!("a finished green thread stores its result once");
}

/// A green thread waits for itself to finish.
#[cold]
#[inline(never)]
fn join_self() -> ! {
    panic!("a green thread cannot join itself (it would wait forever)");
}

impl fmt::Debug for TaskRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("id", &self.id)
            .field("name", &self.name())
            .finish()
    }
}

/// Why [`JoinHandle::join`] did not return the green thread's value.
pub enum JoinError {
    /// The green thread panicked; the payload is the panic's.
    Panicked(Box<dyn Any + Send + 'static>),
    /// The green thread was killed (possibly before it ever ran).
    Killed,
    /// A `Timeout` covering the join fired, or `join_timeout`'s duration elapsed; the green
    /// thread keeps running, detached.
    TimedOut,
    /// Nothing could ever finish the green thread (see [`WaitError::WouldBlockForever`]).
    WouldBlockForever,
}

impl JoinError {
    /// Whether the green thread panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, JoinError::Panicked(_))
    }

    /// Whether the green thread was killed.
    pub fn is_killed(&self) -> bool {
        matches!(self, JoinError::Killed)
    }

    /// The panic payload, if the green thread panicked.
    pub fn into_panic(self) -> Option<Box<dyn Any + Send + 'static>> {
        match self {
            JoinError::Panicked(p) => Some(p),
            _ => None,
        }
    }
}

/// The message of a panic payload (`&str` or `String`), for `Debug`/`Display` of errors
/// that carry one.
pub(crate) fn panic_message(p: &(dyn Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("<non-string panic payload>")
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Panicked(p) => write!(f, "Panicked({:?})", panic_message(p.as_ref())),
            JoinError::Killed => f.write_str("Killed"),
            JoinError::TimedOut => f.write_str("TimedOut"),
            JoinError::WouldBlockForever => f.write_str("WouldBlockForever"),
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Panicked(p) => write!(
                f,
                "the green thread panicked: {}",
                panic_message(p.as_ref())
            ),
            JoinError::Killed => f.write_str("the green thread was killed"),
            JoinError::TimedOut => f.write_str("timed out waiting for the green thread to finish"),
            JoinError::WouldBlockForever => WaitError::WouldBlockForever.fmt(f),
        }
    }
}

impl std::error::Error for JoinError {}

impl From<WaitError> for JoinError {
    fn from(e: WaitError) -> JoinError {
        match e {
            WaitError::TimedOut => JoinError::TimedOut,
            WaitError::WouldBlockForever => JoinError::WouldBlockForever,
        }
    }
}

/// The green threads waiting in `join`/`iwait`: the first one inline, so that the usual
/// single joiner costs no allocation, and is pushed and taken with no borrow flag (a
/// `Cell`: moved in and out, never borrowed). Whether `rest` holds any is the record's
/// `more_waiters` (beside the flags a finish tests with it), which the methods are given.
#[derive(Default)]
struct Waiters {
    first: Cell<Option<TaskRef>>,
    rest: RefCell<Vec<TaskRef>>,
}

impl Waiters {
    /// Inline (a join's park pushes its one waiter here), with the second and later
    /// waiters, which may grow the vector, out of line: a call would cost more than the
    /// test and the store of the usual case.
    #[inline(always)]
    fn push(&self, task: TaskRef, more: &Cell<bool>) {
        // Stored at once (one load and one store, no store of `None` first); the rare
        // earlier first one is put back in front out of line.
        if let Some(first) = self.first.replace(Some(task)) {
            self.push_rest(first, more);
        }
    }

    /// [`push`](Self::push) with a first waiter already there (`first`, just replaced by the
    /// new one): it goes back in front, the new one to the back.
    #[cold]
    #[inline(never)]
    fn push_rest(&self, first: TaskRef, more: &Cell<bool>) {
        let task = self.first.replace(Some(first));
        self.rest.borrow_mut().extend(task);
        more.set(true);
    }

    fn remove(&self, task: &TaskRef, more: &Cell<bool>) {
        match self.first.take() {
            Some(first) if first.ptr_eq(task) => drop(first),
            first => {
                self.first.set(first);
                let mut rest = self.rest.borrow_mut();
                if !rest.is_empty() {
                    rest.retain(|w| !w.ptr_eq(task));
                    more.set(!rest.is_empty());
                }
            }
        }
    }

    /// Whether none waits (for a record taken for reuse, which no one else can see), `more`
    /// the record's `more_waiters`.
    fn is_empty(&mut self, more: bool) -> bool {
        debug_assert_eq!(more, !self.rest.get_mut().is_empty());
        self.first.get_mut().is_none() && !more
    }
}

/// An owned permission to join a green thread (wait for it and take its value), as
/// `std::thread::JoinHandle`. Dropping it detaches the green thread.
pub struct JoinHandle<T> {
    /// The record, whose `body` holds the `Result<T, JoinError>` once the green thread is
    /// done. Its drop is the handle's (see [`HandleRecord`]); `join` moves it out whole.
    task: OnDrop<HandleRecord>,
    /// The result's type, to take it out of the record's cell (made at spawn, where
    /// `T: 'static` is known: the handle's methods do not require it). Invariant in `T`.
    result: TypeKey<Result<T, JoinError>>,
}

// Two words (the record and the result's `TypeKey`): a `spawn`'s `io::Result` of one comes
// back in two registers, not through memory.
const _: () = assert!(std::mem::size_of::<JoinHandle<()>>() == 16);
const _: () = assert!(std::mem::size_of::<io::Result<JoinHandle<()>>>() == 16);

impl<T> JoinHandle<T> {
    /// Waits for the green thread to finish and returns its value.
    ///
    /// Other green threads run meanwhile. Returns `Err` if it panicked or was killed, if a
    /// `Timeout` covering this call fired before it finished (the green thread keeps
    /// running, detached; one that fired as it finished is reported by the next blocking
    /// call instead), or if nothing could ever finish it.
    // Always inlined (LLVM left it out of line once the handle was lent rather than moved,
    // and a `ret` after the switch would then be mispredicted: see `join_wait_in`).
    #[inline(always)]
    pub fn join(self) -> Result<T, JoinError> {
        // One look-up of the hub for the wait and for keeping the finished record. Inlined
        // down to the switch, closure included (see `join_wait_in`).
        with_hub(
            #[inline(always)]
            move |hub| self.join_in(hub),
        )
    }

    /// [`join`](Self::join) with this thread's hub. Done, the record is moved out of the
    /// handle (the handle's drop, its tests of `done` and of the result, does not run) and,
    /// if the handle's was its last handle, into the spare records: no clone made for them,
    /// no count decremented after.
    #[inline(always)]
    fn join_in(self, hub: &super::Hub) -> Result<T, JoinError> {
        if !self.task.done.get() {
            let wait = self.task.join_wait_in(hub);
            if wait != JoinWait::Done {
                return self.join_slow(hub, wait);
            }
        }
        let JoinHandle { task, result } = self;
        let HandleRecord(task) = task.into_inner();
        // Taken first, then the record given away: `give` does not unwind (see
        // `give_below`), and a record that another handle keeps is released only as this
        // returns (a decrement, which runs no code), so no unwinding path has the result
        // to drop (which kept it in the frame rather than in registers).
        let r = task.body.take_result_or_else(&result, || no_result());
        if StrongRc::strong_count(&task.0) == 1 {
            // Moved in: the spare records hold the last handle.
            hub.spare_tasks.give(task);
        }
        r
    }

    /// [`join_in`](Self::join_in) when its park did not end with the green thread done
    /// (`wait`, as [`Task::join_wait_in`] returned): the general wait finishes the join
    /// ([`Task::join_wait_slow`]), and the result is taken as [`join_timeout`] takes it.
    /// Out of line as a whole, with the result's take: merged with the usual join's, the
    /// wait's `Result` was kept in memory (see [`Task::join_wait_in`]). An error drops the
    /// handle: the green thread is detached.
    ///
    /// [`join_timeout`]: Self::join_timeout
    #[cold]
    #[inline(never)]
    fn join_slow(self, hub: &super::Hub, wait: JoinWait) -> Result<T, JoinError> {
        self.task.join_wait_slow(hub, wait)?;
        self.take()
    }

    /// Like [`join`](Self::join), giving up after `timeout` with `Err(JoinError::TimedOut)`.
    pub fn join_timeout(self, timeout: Duration) -> Result<T, JoinError> {
        if !self.wait(Some(Instant::now() + timeout))? {
            return Err(JoinError::TimedOut);
        }
        self.take()
    }

    /// Waits up to `timeout` for the green thread to finish without taking its value
    /// (gevent's `join(timeout)`); returns whether it finished.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool, JoinError> {
        self.wait(Some(Instant::now() + timeout))
    }

    fn take(self) -> Result<T, JoinError> {
        // The last handle to the record: kept for the next spawn (the drop that follows
        // finds the result gone and does nothing).
        let task: &TaskRef = &self.task;
        if StrongRc::strong_count(&task.0) == 1 {
            super::recycle_task(task);
        }
        self.take_result()
    }

    /// The finished green thread's result, moved out of the record (straight into the
    /// caller's registers: no `Option` of it is made).
    #[inline(always)]
    fn take_result(&self) -> Result<T, JoinError> {
        self.task
            .body
            .take_result_or_else(&self.result, || no_result())
    }

    /// Blocks until finished (`Ok(true)`) or the deadline (`Ok(false)`).
    fn wait(&self, deadline: Option<Instant>) -> Result<bool, JoinError> {
        if self.task.done.get() {
            return Ok(true);
        }
        // One look-up of the hub for the whole wait.
        with_hub(|hub| self.task.wait_done_in(hub, deadline)).map_err(JoinError::from)
    }

    /// Whether the green thread has finished (returned, panicked or been killed).
    pub fn is_finished(&self) -> bool {
        self.task.done.get()
    }

    /// Kills the green thread: at its next blocking point (or at once, if it is the
    /// current one) a [`Killed`] panic unwinds its stack, so its destructors run. One that
    /// has not started never runs. Does not wait: use [`join`](Self::join) for that.
    pub fn kill(&self) {
        if self.task.done.get() {
            return;
        }
        self.task.kill.set(true);
        if self.task.ptr_eq(&current_task()) {
            panic::resume_unwind(Box::new(Killed));
        }
        self.task.wake();
    }

    /// Another handle to its record (for tests that look at it after a `join`).
    #[cfg(test)]
    pub(crate) fn task_ref(&self) -> TaskRef {
        self.task.clone()
    }

    /// The green thread's unique id.
    pub fn id(&self) -> u64 {
        self.task.id
    }

    /// The green thread's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        self.task.name()
    }
}

/// A `JoinHandle`'s record, with the handle's drop: it detaches the green thread, or drops
/// its result if it finished and nobody took it.
struct HandleRecord(TaskRef);

impl Deref for HandleRecord {
    type Target = TaskRef;
    #[inline(always)]
    fn deref(&self) -> &TaskRef {
        &self.0
    }
}

impl DropAction for HandleRecord {
    #[inline]
    fn on_drop(&mut self) {
        if !self.0.done.get() {
            // Detached: the green thread drops its result itself as it ends.
            self.0.joinable.set(false);
        } else if !self.0.body.is_empty() {
            drop_result(&self.0);
        }
    }
}

/// The handle of a finished green thread is dropped with its result untaken: the result
/// goes now, whatever else holds the record (as `std`'s does), and the record is kept for
/// the next spawn if the handle's was its last handle.
#[inline(never)]
fn drop_result(task: &TaskRef) {
    task.body.clear();
    if StrongRc::strong_count(&task.0) == 1 {
        super::recycle_task(task);
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("id", &self.task.id)
            .field("name", &self.task.name())
            .field("finished", &self.task.done.get())
            .finish()
    }
}

/// Configures a green thread before spawning it, like `std::thread::Builder`.
///
/// ```
/// let handle = verdant::Builder::new()
///     .name("worker")
///     .stack_size(64 * 1024)
///     .spawn(|| verdant::current().name().map(str::to_owned))
///     .expect("spawn");
/// assert_eq!(handle.join().unwrap().as_deref(), Some("worker"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Builder {
    name: Option<String>,
    stack_size: Option<usize>,
}

impl Builder {
    /// No name, the default stack size.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Names the green thread (see [`current`], `Debug`, stack-overflow reports).
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// Usable stack size in bytes (default [`DEFAULT_STACK_SIZE`]).
    pub fn stack_size(mut self, bytes: usize) -> Builder {
        self.stack_size = Some(bytes);
        self
    }

    /// Spawns the green thread on this OS thread's hub; it runs when the current green
    /// thread next blocks or yields. Fails only if no stack can be allocated.
    #[track_caller]
    #[inline]
    pub fn spawn<F, T>(self, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        // Taken here: the closure below would end the caller tracking.
        let site = std::panic::Location::caller();
        // One look-up of the hub for building and scheduling.
        with_hub(|hub| {
            // Built marked `queued`, for `schedule_new`.
            let handle = self.build_in::<F, T, true>(hub, f, site)?;
            hub.schedule_new(handle.task.clone());
            Ok(handle)
        })
    }

    /// Spawns the green thread to start after `delay` (gevent's `spawn_later`). Killed
    /// before then, it never runs.
    #[track_caller]
    pub fn spawn_later<F, T>(self, delay: Duration, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        let handle = self.build(f)?;
        hub().add_timer(
            Instant::now() + delay,
            TimerAction::Start(handle.task.clone()),
        );
        Ok(handle)
    }

    #[track_caller]
    fn build<F, T>(self, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        // Taken here: the closure below would end the caller tracking.
        let site = std::panic::Location::caller();
        with_hub(|hub| self.build_in::<F, T, false>(hub, f, site))
    }

    /// The green thread's record, ready to run; marked `queued` if `QUEUED` (the caller
    /// puts it in the run queue at once: `schedule_new`).
    #[inline]
    fn build_in<F, T, const QUEUED: bool>(
        self,
        hub: &super::Hub,
        f: F,
        site: &'static std::panic::Location<'static>,
    ) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        let id = hub.next_id();
        // Parented to the hub (given at spawn or respawn: a reused record usually has it
        // as its parent already).
        // The greenlet has the green thread's id (shown in stack-overflow reports).
        let stack_size = self.stack_size.unwrap_or(DEFAULT_STACK_SIZE);
        // A finished record from the hub's spare ones, reused in place (with its dead
        // greenlet's stack), or a new one.
        let task = match hub.spare_tasks.take() {
            Some(mut spare) => match StrongRc::get_mut(&mut spare.0) {
                Some(record) => {
                    let name = self.name.as_deref();
                    let parent = &hub.greenlet;
                    if !greenlet::rearm::<TaskStart<F, T>>(
                        &mut record.greenlet,
                        parent,
                        id,
                        stack_size,
                        name,
                    )? {
                        greenlet_builder(id, stack_size, name).respawn(
                            &mut record.greenlet,
                            parent,
                            task_body::<F, T>,
                        )?;
                    }
                    record.reset(id, QUEUED);
                    spare
                }
                None => new_task::<F, T>(hub, id, stack_size, self.name.as_deref(), QUEUED)?,
            },
            None => new_task::<F, T>(hub, id, stack_size, self.name.as_deref(), QUEUED)?,
        };
        // Named for the stall monitor while it watches this hub (and forgotten at the end),
        // out of line: `reset` (or `Task::new`) stored `recorded` false with the flags
        // around it, constants all, and only a watched spawn stores it again. Told once
        // the spawn cannot fail any more (a failed one left an id that never finished).
        if hub.activity.is_watched() {
            record_spawn(hub, &task, self.name.as_deref(), site);
        }
        // Into an empty cell, untested in release builds: a new record's, or a spare one's,
        // whose last handle took or dropped the result before giving it back (`join_in`,
        // `drop_result`).
        task.body.put_vacant(f);
        Ok(JoinHandle {
            task: OnDrop::new(HandleRecord(task)),
            result: TypeKey::new(),
        })
    }
}

/// Tells the stall monitor about a green thread just built (its record not run yet), and
/// marks the record so (its finish tells the monitor too).
#[cold]
#[inline(never)]
fn record_spawn(
    hub: &super::Hub,
    task: &TaskRef,
    name: Option<&str>,
    site: &'static std::panic::Location<'static>,
) {
    hub.activity.spawned(task.id, name, site);
    task.recorded.set(true);
}

/// The builder of a spawned green thread's greenlet, when no spare record can be re-armed
/// in place (`greenlet::rearm`): the green thread's id (shown in stack-overflow reports),
/// stack size and name.
fn greenlet_builder(id: u64, stack_size: usize, name: Option<&str>) -> greenlet::Builder {
    let builder = greenlet::Builder::new().stack_size(stack_size).id(id);
    match name {
        Some(name) => builder.name(name),
        None => builder,
    }
}

/// A spawned green thread's greenlet body. It captures nothing (so boxing it allocates
/// nothing): the closure and the result live in the task record, found through the
/// current task.
fn task_body<F, T>(_: greenlet::Value) -> greenlet::Value
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    run_task::<F, T>();
    Box::new(())
}

/// A new record, with a new greenlet parented to the hub, when there is no spare one to
/// reuse. Out of line: after warm-up a spawn reuses a spare record.
#[cold]
#[inline(never)]
fn new_task<F, T>(
    hub: &super::Hub,
    id: u64,
    stack_size: usize,
    name: Option<&str>,
    queued: bool,
) -> io::Result<TaskRef>
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    let greenlet = greenlet_builder(id, stack_size, name)
        .parent(&hub.greenlet)
        .spawn(task_body::<F, T>)?;
    let task = Task::new(id, greenlet, false);
    task.queued.set(queued);
    Ok(TaskRef(StrongRc::new(task)))
}

/// A re-armed green thread's greenlet body ([`greenlet::rearm`]): [`run_task`], known by
/// its type, so that the greenlet's entry made for it has it inlined.
struct TaskStart<F, T>(PhantomData<fn() -> (F, T)>);

impl<F, T> greenlet::UnitBody for TaskStart<F, T>
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    #[inline(always)]
    fn run() {
        run_task::<F, T>();
    }
}

/// The body of a spawned green thread: runs the closure stored in its task record and
/// stores the result there. Inlined into the greenlet's entry made for it
/// ([`TaskStart`]), whose frame is the root of the stack: the hub's look-up here is the
/// only thread-local one of the start (the greenlet layer's own look-up of the running
/// greenlet, to find its body, went with the entry that called the body through a pointer).
#[inline(always)]
fn run_task<F, T>()
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    // One look-up of the hub for the whole life (held across the closure's switches: the
    // hub outlives every green thread of its thread). It exists: it spawned us. Were it
    // gone, the general look-up is out of line, as a whole, as every rarer start is: the
    // entry's frame keeps no register saved for them.
    super::HUB.with(|hub| match hub {
        Some(hub) => run_task_in::<F, T>(hub),
        None => run_task_without_hub::<F, T>(),
    })
}

/// [`run_task`] with no hub found (not expected: the hub spawned this green thread).
#[cold]
#[inline(never)]
fn run_task_without_hub<F, T>()
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    with_hub(run_task_in::<F, T>)
}

/// [`run_task`] with this thread's hub.
#[inline(always)]
fn run_task_in<F, T>(hub: &super::Hub)
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    // The hub made our record the current task before starting us. Hold no handle to it
    // while the closure runs (it would keep a green thread that blocks forever alive
    // through a cycle: record -> greenlet -> stack -> record). The closure is taken with
    // no call that returns here (`take_same_constant`), and every rarer start goes out of
    // line as a whole: so the frame needs no register saved and no spill for them.
    // Read with no test that it is ours (as `take_current_task` makes): the hub puts a
    // spawned green thread's record into `current` before it starts it, and nothing can
    // start it otherwise (its greenlet is not handed out before it runs). The test never
    // protected soundness (the closure is taken by its type); a record that was not ours
    // would at worst have its closure run here. Debug builds assert it.
    // Read in place, not taken out and put back (two stores fewer, spawn + run + join:
    // 299.6 -> 297.6 instructions; the cell is left as it is).
    // SAFETY: a `Cell`'s contents are only ever moved in and out, never borrowed across
    // anything that could touch the cell: this borrow ends below, and nothing in between
    // touches `current` (a flag read and the closure moved out of the record's own cell).
    let start = match unsafe { &*hub.current.as_ptr() } {
        Some(task) => {
            debug_assert!(
                task.greenlet.is_current(),
                "a spawned green thread starts as the hub's current task"
            );
            if task.kill.get() {
                None
            } else {
                task.body.take_same_constant::<F>()
            }
        }
        None => None,
    };
    let Some(f) = start else {
        return run_task_slow::<F, T>(hub);
    };
    run_closure_in(hub, f);
}

/// [`run_task_in`] for a green thread that was killed before it started (its closure is
/// dropped unrun), or whose closure's `TypeId` is another copy of the constant.
#[cold]
#[inline(never)]
fn run_task_slow<F, T>(hub: &super::Hub)
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    let (f, killed_before_start) = hub.with_current_task(|task| {
        let task = task.expect("a spawned green thread starts as the hub's current task");
        (task.body.take::<F>(), task.kill.get())
    });
    let f = f.expect("a green thread's closure runs once");
    if killed_before_start {
        drop_caught(f);
        return end_task_in::<T>(hub, Err(JoinError::Killed));
    }
    run_closure_in(hub, f);
}

/// Runs a green thread's closure, a panic caught (a kill's, or one that ends it), and ends
/// the green thread with its result. Out of line, so that both starts (`run_task_in`'s
/// and `run_task_slow`'s) call the closure here, its one call site: the compiler inlines
/// it (a green thread's loop then keeps the hub in a register: 90.5 -> 87.5 instructions
/// per yield, `examples/yield_handoffs`, against a copy of this in each start). The usual
/// start reaches it by a jump.
#[inline(never)]
fn run_closure_in<F, T>(hub: &super::Hub, f: F)
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    let result = match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Ok(v),
        Err(p) if p.is::<Killed>() || p.is::<greenlet::GreenletExit>() => Err(JoinError::Killed),
        Err(p) => Err(JoinError::Panicked(p)),
    };
    end_task_in(hub, result);
}

/// The end of a spawned green thread whose closure is over with `result`: stores it (or
/// drops it, detached) and ends the green thread ([`TaskRef::finish_exit_in`]).
#[inline(always)]
fn end_task_in<T>(hub: &super::Hub, result: Result<T, JoinError>)
where
    T: 'static,
{
    // Our record, taken out of `current` (no handle made) until `exit_direct` puts the
    // next one in: nothing in here runs code of the user's (the result is stored, its
    // joiners scheduled).
    let Some(task) = hub.take_current_task() else {
        return end_task_displaced(hub, result);
    };
    end_task_with(hub, task, result);
}

/// [`end_task_in`] when `current` does not hold our record. Either a greenlet we switched
/// to by hand displaced it (it is found again), or it was dropped while we were suspended,
/// and its greenlet's drop unwound us from elsewhere (no one can join us): the result is
/// dropped, and we go back to that greenlet. Out of line, so that the usual end keeps
/// nothing alive across a call.
#[cold]
#[inline(never)]
fn end_task_displaced<T>(hub: &super::Hub, result: Result<T, JoinError>)
where
    T: 'static,
{
    match hub.take_displaced_task() {
        Some(task) => end_task_with(hub, task, result),
        None => drop(result),
    }
}

/// The rest of [`end_task_in`], with our record `task` taken out of `current`.
#[inline(always)]
fn end_task_with<T>(hub: &super::Hub, task: TaskRef, result: Result<T, JoinError>)
where
    T: 'static,
{
    if !task.joinable.get() {
        // Detached: its `JoinHandle` is gone, so nobody can take the result.
        return end_detached(hub, task, result);
    }
    // Into the cell emptied at our start (nothing else writes it while we run): no test
    // for a value to drop.
    task.body.put_vacant::<Result<T, JoinError>>(result);
    // Our greenlet's final switch goes straight to the next ready green thread (the joiner
    // woken just now, usually) when the turn has runs left, as a park's hand-off does: then
    // this green thread ends inside `exit_direct`, which does not return, and these frames
    // are abandoned, so nothing that needs dropping may be alive here (the closure and its
    // result are gone, our record's handle moved in). Our record is held by our
    // `JoinHandle` too (`joinable`, tested above: nothing that could drop that handle ran
    // since), so ours is not its last.
    task.finish_exit_in(hub);
}

/// The end of a detached green thread (its `JoinHandle` is gone, whatever else still
/// holds its record): its result is dropped here, as code of the green thread itself,
/// which may block or panic (a panic ends there: it has no joiner to go to; the panic hook
/// reported it). Only then is it marked finished. Dropped later, with the record, it would
/// run after the hub had handed control on (or on the hub's own stack). Out of line: a
/// detached green thread is the rare case.
///
/// `task`: our record, taken out of `current` (put back while the result's drop runs).
#[cold]
#[inline(never)]
fn end_detached<R>(hub: &super::Hub, task: TaskRef, result: R) {
    hub.put_current_task(task);
    drop_caught(result);
    let Some(task) = hub
        .take_current_task()
        .or_else(|| hub.take_displaced_task())
    else {
        return;
    };
    task.finish_exit_in(hub);
}

/// Drops `value` as code of the current green thread, a panic in its drop caught (and
/// reported by the panic hook as it happened): for what a green thread drops after its
/// closure, with nobody to hand the panic to.
fn drop_caught<V>(value: V) {
    let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(value)));
}

/// Spawns a green thread on this OS thread's hub (created on first use) and returns its
/// [`JoinHandle`]. The closure does not need to be `Send`: it never leaves this OS thread.
///
/// ```
/// let a = verdant::spawn(|| 20);
/// let b = verdant::spawn(|| 22);
/// assert_eq!(a.join().unwrap() + b.join().unwrap(), 42);
/// ```
///
/// # Panics
/// If no stack can be allocated; use [`Builder::spawn`] to get that as an error.
#[track_caller]
// Inlined, with `Builder::spawn`, into the caller when LLVM sees fit: the call, its
// register saves and the handle returned through memory cost some 14 instructions of the
// 550 a spawn + run + join takes.
#[inline]
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    Builder::new()
        .spawn(f)
        .unwrap_or_else(|e| panic!("verdant::spawn: {e}"))
}

/// Spawns a green thread that starts after `delay` (gevent's `spawn_later`).
///
/// # Panics
/// If no stack can be allocated; use [`Builder::spawn_later`] to get that as an error.
#[track_caller]
pub fn spawn_later<F, T>(delay: Duration, f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    Builder::new()
        .spawn_later(delay, f)
        .unwrap_or_else(|e| panic!("verdant::spawn_later: {e}"))
}

/// Identity of the running green thread, from [`current`].
#[derive(Debug, Clone)]
pub struct CurrentThread {
    id: u64,
    name: Option<String>,
    is_main: bool,
}

impl CurrentThread {
    /// Unique id of the green thread.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Its name: the one given to [`Builder::name`], `"main"` for a thread's main green
    /// thread, otherwise `None`.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Whether it is the OS thread's own (main) green thread.
    pub fn is_main(&self) -> bool {
        self.is_main
    }
}

/// The green thread running now.
pub fn current() -> CurrentThread {
    let task = current_task();
    CurrentThread {
        id: task.id,
        name: task.name().map(str::to_owned),
        is_main: task.greenlet.is_main(),
    }
}

/// Waits for every handle and returns their results in order (gevent's `joinall`).
///
/// ```
/// let handles: Vec<_> = (0..5).map(|i| verdant::spawn(move || i * i)).collect();
/// let squares: Vec<i32> = verdant::joinall(handles).into_iter().map(Result::unwrap).collect();
/// assert_eq!(squares, [0, 1, 4, 9, 16]);
/// ```
pub fn joinall<T, I>(handles: I) -> Vec<Result<T, JoinError>>
where
    I: IntoIterator<Item = JoinHandle<T>>,
{
    handles.into_iter().map(JoinHandle::join).collect()
}

/// Yields `(index, result)` for each handle as it finishes, in completion order (gevent's
/// `iwait`).
///
/// ```
/// // Green threads take turns: the one that yields fewer times finishes first.
/// let slow = verdant::spawn(|| { for _ in 0..10 { verdant::yield_now(); } "slow" });
/// let fast = verdant::spawn(|| { verdant::yield_now(); "fast" });
/// let order: Vec<&str> = verdant::iwait(vec![slow, fast]).map(|(_, r)| r.unwrap()).collect();
/// assert_eq!(order, ["fast", "slow"]);
/// ```
pub fn iwait<T>(handles: Vec<JoinHandle<T>>) -> AsCompleted<T> {
    AsCompleted {
        pending: handles.into_iter().map(Some).collect(),
        remaining: 0,
    }
    .counted()
}

/// The iterator returned by [`iwait`].
pub struct AsCompleted<T> {
    pending: Vec<Option<JoinHandle<T>>>,
    remaining: usize,
}

impl<T> AsCompleted<T> {
    fn counted(mut self) -> Self {
        self.remaining = self.pending.len();
        self
    }
}

impl<T> Iterator for AsCompleted<T> {
    type Item = (usize, Result<T, JoinError>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        loop {
            // The earliest to finish among those that have (several may have finished
            // before this green thread ran again).
            let done = self
                .pending
                .iter()
                .enumerate()
                .filter_map(|(i, h)| {
                    let h = h.as_ref()?;
                    h.is_finished().then(|| (h.task.finished_seq.get(), i))
                })
                .min()
                .map(|(_, i)| i);
            if let Some(i) = done {
                let handle = self.pending[i].take().expect("position found a handle");
                self.remaining -= 1;
                return Some((i, handle.take()));
            }
            let me = current_task();
            for h in self.pending.iter().flatten() {
                h.task.waiters.push(me.clone(), &h.task.more_waiters);
            }
            let r = park();
            for h in self.pending.iter().flatten() {
                h.task.waiters.remove(&me, &h.task.more_waiters);
            }
            if let Err(e) = r {
                // Report the interruption once for one of the pending handles.
                let i = self.pending.iter().position(Option::is_some)?;
                self.pending[i] = None;
                self.remaining -= 1;
                return Some((i, Err(e.into())));
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<T> fmt::Debug for AsCompleted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsCompleted")
            .field("remaining", &self.remaining)
            .finish()
    }
}
