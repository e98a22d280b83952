//! [`LocalQueue`]: a FIFO with no borrow flag, for the hub's run queue.
//!
//! The hub pushes and pops on every hand-off between green threads; a `RefCell<VecDeque>`
//! costs a flag check and two flag writes per access, and a borrow held across a switch
//! would be a bug waiting to happen. This queue gives out no references at all: values go
//! in and come out by move, so no access can overlap another.
//!
//! It is a ring buffer whose capacity is a power of two: a slot is `head + i` masked, so a
//! push or a pop is a load, a store and two index updates, with a single capacity test on
//! push (growing is out of line). It keeps the mask (`capacity - 1`) rather than the
//! capacity, which is what every index computation needs.
//!
//! A value alone in the queue is kept beside the ring, in a cell of its own (`single`):
//! between green threads that hand control to each other (a spawn and its join, a
//! channel's two ends, two yielding ones) the run queue holds one green thread at most,
//! and a push or a pop is then a store or two (a load and a test first), with no index
//! to update and no slot to compute. Instructions per operation at 3830578 (callgrind):
//! spawn + run + join 384.5 -> 373.5, a yield hand-off 87.5 -> 82.7, a channel hop 182.0 ->
//! 179.2, an event hop 276.1 -> 268.3, a semaphore hop 257.6 -> 245.8. With more values,
//! all of them are in the ring (the push of a second one moves the first one there, out
//! of line); the ring may hold a single value too (popped down to it).
//!
//! One signed field, `state`, tells the three cases apart, so that one load and one test
//! (its sign and zero flags) sort every operation, and `single` needs no `None`: `state`
//! says whether it holds a value, and a pop only reads it. (A first version kept `len`
//! and an `Option`: a pop tested `single` before `len`, a push onto one value `len == 1`
//! and then `single`.) Instructions at e587151 -> with `state` (callgrind): spawn + run +
//! join 317.5 -> 314.6, yield 82.7 -> 82.6, channel 179.2 -> 176.1, queue 247.7 -> 243.1,
//! event 266.8 -> 262.7, semaphore 243.7 -> 240.2; the HTTP server 1,207.8 -> 1,207.5 per
//! request.
//!
//! Mind the inlining: a channel's `put` has `yield_now` inlined by MIR's inliner, and with
//! `Cell::set` for `single`'s store (`as_ptr().write` now) it was not (yield_now's own
//! MIR, a call, did not change: presumably the inliner's cycle check, which walks what
//! the callee reaches, gave up), and the yield stayed out of line (channel 179 -> 196).
//! `push_front`'s slow cases are out of line, its ring case inline: all of it out of line
//! cost spawn + run + join some 20 instructions (the join's registers).
//!
//! ```text
//!   state < 0 (-1):  one value, in `single`   ring empty
//!   state = 0:       empty                    ring empty
//!   state = n > 0:   n values, in the ring    `single` holds none
//! ```

use std::cell::Cell;
use std::mem::MaybeUninit;

/// `state` of a queue whose one value is in `single`.
const SINGLE: isize = -1;

/// A single-threaded FIFO accessed through `&self`, by move only (no references into it
/// are ever handed out, so no borrow flag is needed).
pub(crate) struct LocalQueue<T> {
    /// The queue's value when it holds exactly that one beside an empty ring (`state` is
    /// [`SINGLE`]); uninitialised (or a value already moved out) otherwise.
    single: Cell<MaybeUninit<T>>,
    /// The ring's slots; `state` of them, from `head` on (wrapping), are initialised when
    /// `state > 0`, none otherwise. Its length, `cap`, is zero or a power of two. Replaced
    /// (not resized in place) when it grows.
    buf: Cell<Box<[MaybeUninit<T>]>>,
    /// Raw pointer of `buf` and its length minus one (wrapping: `usize::MAX` while it is
    /// empty), kept beside it so that the hot paths need not take the box out of its cell.
    slots: Cell<*mut MaybeUninit<T>>,
    mask: Cell<usize>,
    head: Cell<usize>,
    /// [`SINGLE`], or how many values the ring holds (0: the queue is empty). Never below
    /// [`SINGLE`]: a ring of `isize::MAX` values cannot be allocated.
    state: Cell<isize>,
}

impl<T> Default for LocalQueue<T> {
    fn default() -> Self {
        let mut buf: Box<[MaybeUninit<T>]> = Box::new([]);
        LocalQueue {
            single: Cell::new(MaybeUninit::uninit()),
            slots: Cell::new(buf.as_mut_ptr()),
            buf: Cell::new(buf),
            mask: Cell::new(usize::MAX),
            head: Cell::new(0),
            state: Cell::new(0),
        }
    }
}

impl<T> LocalQueue<T> {
    /// Puts `value` into `single` and makes it the queue's one value (the queue is empty).
    #[inline(always)]
    fn set_single(&self, value: T) {
        debug_assert_eq!(self.state.get(), 0, "LocalQueue: not empty");
        // The old contents are not a value (the queue is empty): `MaybeUninit` drops nothing.
        // SAFETY: the cell is never borrowed (its contents are only moved in and out, and
        // the queue is !Sync); what it held is not a value any more, and `MaybeUninit`
        // drops nothing.
        unsafe { self.single.as_ptr().write(MaybeUninit::new(value)) };
        self.state.set(SINGLE);
    }

    /// Takes the value out of `single` (`state` is [`SINGLE`]); the caller sets `state`.
    #[inline(always)]
    fn take_single(&self) -> T {
        debug_assert_eq!(self.state.get(), SINGLE, "LocalQueue: no value in `single`");
        // SAFETY: `state` is `SINGLE`, so `single` holds a value; the caller moves `state`
        // away from `SINGLE`, so it is read exactly once. The cell is not borrowed: its
        // contents are only ever moved in and out (the queue is !Sync).
        unsafe { (*self.single.as_ptr()).assume_init_read() }
    }

    /// Appends `value` at the back.
    #[inline]
    pub(crate) fn push_back(&self, value: T) {
        let state = self.state.get();
        if state == 0 {
            self.set_single(value);
            return;
        }
        if state < 0 {
            self.push_back_beside_single(value);
            return;
        }
        self.push_back_ring(value);
    }

    /// [`push_back`](Self::push_back) onto the value in `single`: both go into the ring,
    /// in order. Out of line (a queue that grows past one value comes here once, as it
    /// does), and `extern "C"` as [`grow`](Self::grow), which it may call: a push does not
    /// unwind.
    #[cold]
    #[inline(never)]
    extern "C" fn push_back_beside_single(&self, value: T) {
        self.single_to_ring();
        self.push_back_ring(value);
    }

    /// Moves the value in `single` into the (empty) ring, for another one to join it.
    #[inline(always)]
    fn single_to_ring(&self) {
        let first = self.take_single();
        self.state.set(0);
        self.push_back_ring(first);
    }

    /// Appends `value` at the back of the ring (`state` is not [`SINGLE`]).
    #[inline(always)]
    fn push_back_ring(&self, value: T) {
        let len = self.state.get() as usize;
        debug_assert!(len as isize >= 0, "LocalQueue: a ring push beside `single`");
        if len == self.cap() {
            self.grow();
        }
        let i = (self.head.get() + len) & self.mask();
        // SAFETY: `i < cap`, the number of slots (the buffer grew above if it was full, so
        // `cap > 0`); slot `i` is outside the `len` initialised ones: nothing is overwritten.
        unsafe { (*self.slots.get().add(i)).write(value) };
        self.state.set(len as isize + 1);
    }

    /// `cap - 1`: the capacity is a power of two (or 0, with no value to index).
    #[inline(always)]
    fn mask(&self) -> usize {
        self.mask.get()
    }

    /// The number of slots.
    #[inline(always)]
    fn cap(&self) -> usize {
        self.mask.get().wrapping_add(1)
    }

    /// Puts `value` back at the front (it is the next to come out).
    #[inline]
    pub(crate) fn push_front(&self, value: T) {
        let state = self.state.get();
        if state <= 0 || state as usize == self.cap() {
            self.push_front_slow(value);
            return;
        }
        self.push_front_ring(value);
    }

    /// [`push_front`](Self::push_front) onto an empty queue, a value in `single` or a full
    /// ring. Out of line (the hub pushes to the front only a green thread it took off the
    /// queue to hand control to and then found finished or being killed), and `extern "C"`
    /// as [`grow`](Self::grow), which it may call: a push does not unwind.
    #[cold]
    #[inline(never)]
    extern "C" fn push_front_slow(&self, value: T) {
        let state = self.state.get();
        if state == 0 {
            self.set_single(value);
            return;
        }
        if state < 0 {
            self.single_to_ring();
        }
        if self.state.get() as usize == self.cap() {
            self.grow();
        }
        self.push_front_ring(value);
    }

    /// Puts `value` at the front of the ring, which has room for it (`state` is not
    /// [`SINGLE`] and below the capacity).
    #[inline(always)]
    fn push_front_ring(&self, value: T) {
        let len = self.state.get() as usize;
        debug_assert!(
            (len as isize) >= 0 && len < self.cap(),
            "LocalQueue: a ring front push beside `single` or into a full ring"
        );
        let head = self.head.get().wrapping_sub(1) & self.mask();
        // SAFETY: `len < cap`: slot `head` (masked) is in the buffer and, just before the
        // `len` initialised ones, not initialised: nothing is overwritten.
        unsafe { (*self.slots.get().add(head)).write(value) };
        self.head.set(head);
        self.state.set(len as isize + 1);
    }

    /// Takes the value at the front.
    #[inline]
    pub(crate) fn pop_front(&self) -> Option<T> {
        let state = self.state.get();
        if state < 0 {
            // The only value (the ring is empty).
            let value = self.take_single();
            self.state.set(0);
            return Some(value);
        }
        if state == 0 {
            return None;
        }
        let head = self.head.get();
        self.head.set((head + 1) & self.mask());
        self.state.set(state - 1);
        // SAFETY: `state > 0` values in the ring, so slot `head` is initialised; it counts
        // as empty from now on (head and state moved past it), so it is read exactly once.
        Some(unsafe { (*self.slots.get().add(head)).assume_init_read() })
    }

    /// Appends `value` at the back and takes the value at the front (`value` itself if the
    /// queue is empty): a push and a pop with one index update, no length update and never
    /// a grow (the length does not change). With one value queued, `value` takes its place
    /// in `single` (the ring's one value first moves out of the ring).
    #[inline]
    pub(crate) fn push_back_pop_front(&self, value: T) -> T {
        let state = self.state.get();
        if state < 0 {
            // `state` stays `SINGLE`: `value` is the one value now.
            let front = self.take_single();
            // SAFETY: the cell is never borrowed (its contents are only moved in and out, and
            // the queue is !Sync); what it held is not a value any more, and `MaybeUninit`
            // drops nothing.
            unsafe { self.single.as_ptr().write(MaybeUninit::new(value)) };
            return front;
        }
        if state == 0 {
            return value;
        }
        if state == 1 {
            return self.rotate_ring_last(value);
        }
        let len = state as usize;
        let head = self.head.get();
        let mask = self.mask();
        let slots = self.slots.get();
        // SAFETY: `len > 0`, so `cap > 0` and slot `head` is initialised: it is read first,
        // exactly once (it counts as empty once `head` moves past it). Slot
        // `(head + len) & mask` is then the first one after the initialised ones, or, when
        // the queue is full, slot `head` itself, just emptied: nothing is overwritten.
        let front = unsafe { (*slots.add(head)).assume_init_read() };
        // SAFETY: as above.
        unsafe { (*slots.add((head + len) & mask)).write(value) };
        self.head.set((head + 1) & mask);
        front
    }

    /// [`push_back_pop_front`](Self::push_back_pop_front) with one value in the ring: it
    /// comes out, and `value` goes into `single`, alone. Out of line: a queue popped down
    /// to one value comes here once, and its rotations then swap `single` (between two
    /// green threads that yield to each other, the ring's would cost some 10 instructions
    /// more per hand-off).
    #[cold]
    #[inline(never)]
    fn rotate_ring_last(&self, value: T) -> T {
        debug_assert_eq!(self.state.get(), 1, "LocalQueue: not one value in the ring");
        let head = self.head.get();
        self.head.set((head + 1) & self.mask());
        // SAFETY: the ring holds one value, at slot `head`; it counts as empty from now on
        // (`head` moved past it and `state` no longer counts the ring's), so it is read
        // exactly once.
        let front = unsafe { (*self.slots.get().add(head)).assume_init_read() };
        self.state.set(0);
        self.set_single(value);
        front
    }

    /// Calls `f` with the value `i` places from the front, if there is one in the ring: a
    /// lone value (in `single`) is not seen. For hints that read the value and do nothing
    /// else (the hub's prefetch of the next green threads to run, when several are ready):
    /// `f` is a plain function, not a closure, and must not reach this queue (it must be
    /// a projection of the value, as `greenlet_of` of
    /// [`Greenlet::resume_held_in`](super::Greenlet::resume_held_in)).
    #[inline(always)]
    pub(crate) fn peek_with(&self, i: usize, f: fn(&T)) {
        let state = self.state.get();
        if state > 0 && i < state as usize {
            let slot = (self.head.get() + i) & self.mask();
            // SAFETY: `i < state`, the ring's values, so slot `head + i` (masked) is
            // initialised; the reference lives only while `f` runs, which does not reach
            // the queue (its contract).
            f(unsafe { (*self.slots.get().add(slot)).assume_init_ref() });
        }
    }

    /// How many values are queued.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        let state = self.state.get();
        if state < 0 {
            1
        } else {
            state as usize
        }
    }

    /// Whether the queue is empty.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.state.get() == 0
    }

    /// Doubles the capacity (at least 16 slots), moving the values to the front of the new
    /// buffer in order.
    ///
    /// `extern "C"`: a panic in here (none is expected: only a capacity overflow could
    /// panic, and an allocation failure aborts already) aborts rather than unwinds, so a
    /// `push_back` does not unwind. Its caller then needs no drop of the value being pushed
    /// on an unwinding path: a spawn keeps the new record's handle in registers rather than
    /// in the frame (−3 instructions per spawn + join). It would not leave the queue whole
    /// either: `buf` is taken out before the new buffer is made.
    #[cold]
    #[inline(never)]
    extern "C" fn grow(&self) {
        let old = self.buf.take();
        let (head, len) = (self.head.get(), self.state.get() as usize);
        debug_assert!(len as isize >= 0, "LocalQueue: a grow beside `single`");
        let cap = (old.len() * 2).max(16);
        let mut new: Box<[MaybeUninit<T>]> = (0..cap).map(|_| MaybeUninit::uninit()).collect();
        let old_mask = old.len().wrapping_sub(1);
        for (k, slot) in new.iter_mut().enumerate().take(len) {
            // SAFETY: slot `(head + k) & old_mask`, `k < len`, is an initialised one of
            // `old`; it is moved out once (`old` is freed below without dropping anything:
            // `MaybeUninit` has no drop glue).
            *slot = MaybeUninit::new(unsafe { old[(head + k) & old_mask].assume_init_read() });
        }
        drop(old);
        self.slots.set(new.as_mut_ptr());
        self.mask.set(cap - 1);
        self.head.set(0);
        self.buf.set(new);
    }
}

impl<T> Drop for LocalQueue<T> {
    fn drop(&mut self) {
        while let Some(v) = self.pop_front() {
            drop(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LocalQueue;

    #[test]
    fn first_in_first_out_with_push_front_for_the_next_one() {
        let q = LocalQueue::default();
        assert!(q.is_empty());
        for i in 0..100 {
            q.push_back(i);
        }
        assert_eq!(q.pop_front(), Some(0));
        q.push_front(-1);
        assert_eq!(q.len(), 100);
        assert_eq!(q.pop_front(), Some(-1));
        let rest: Vec<i32> = std::iter::from_fn(|| q.pop_front()).collect();
        assert_eq!(rest, (1..100).collect::<Vec<_>>());
        assert!(q.is_empty());
    }

    #[test]
    fn wraps_and_grows_keeping_the_order() {
        let q = LocalQueue::default();
        let mut next_in = 0;
        let mut next_out = 0;
        // Pushes outpace pops, so the ring wraps at every size it grows through.
        for round in 0..200 {
            for _ in 0..3 {
                q.push_back(next_in);
                next_in += 1;
            }
            if round % 7 == 0 {
                next_out -= 1;
                q.push_front(next_out);
            }
            for _ in 0..2 {
                assert_eq!(q.pop_front(), Some(next_out));
                next_out += 1;
            }
        }
        assert_eq!(q.len(), (next_in - next_out) as usize);
        while let Some(v) = q.pop_front() {
            assert_eq!(v, next_out);
            next_out += 1;
        }
        assert_eq!(next_out, next_in);
    }

    #[test]
    fn push_back_pop_front_rotates_full_wrapped_and_empty_queues() {
        let q = LocalQueue::default();
        assert_eq!(
            q.push_back_pop_front(1),
            1,
            "empty: the value itself comes out"
        );
        assert!(q.is_empty());
        // Full (16 slots, the first capacity), then rotated past the wrap many times.
        for i in 0..16 {
            q.push_back(i);
        }
        let mut next_in = 16;
        for expect in 0..100 {
            assert_eq!(q.push_back_pop_front(next_in), expect);
            next_in += 1;
            assert_eq!(q.len(), 16);
        }
        // Not full, with a push_front in between.
        assert_eq!(q.pop_front(), Some(100));
        q.push_front(-1);
        assert_eq!(q.push_back_pop_front(next_in), -1);
        let rest: Vec<i32> = std::iter::from_fn(|| q.pop_front()).collect();
        assert_eq!(rest, (101..=next_in).collect::<Vec<_>>());
    }

    #[test]
    fn push_front_on_an_empty_queue() {
        let q = LocalQueue::default();
        q.push_front(7);
        q.push_back(8);
        q.push_front(6);
        assert_eq!(
            (q.pop_front(), q.pop_front(), q.pop_front()),
            (Some(6), Some(7), Some(8))
        );
        assert_eq!(q.pop_front(), None);
    }

    #[test]
    fn peek_with_sees_the_value_i_places_from_the_front_wrapped_or_not() {
        thread_local! {
            static SEEN: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        fn record(v: &u32) {
            SEEN.with(|s| s.borrow_mut().push(*v));
        }
        let seen = || SEEN.with(|s| s.take());
        let q = LocalQueue::default();
        q.peek_with(0, record);
        assert_eq!(
            seen(),
            Vec::<u32>::new(),
            "nothing to see in an empty queue"
        );
        for v in 0..16 {
            q.push_back(v);
        }
        for _ in 0..12 {
            let v = q.pop_front().unwrap();
            q.push_back(v + 100); // wraps around the 16 slots
        }
        // Front to back: 12..16, then 100..112.
        for i in [0, 3, 4, 15] {
            q.peek_with(i, record);
        }
        q.peek_with(16, record);
        q.peek_with(usize::MAX, record);
        assert_eq!(seen(), vec![12, 15, 100, 111], "none past the back");
        assert_eq!(q.len(), 16, "peeking takes nothing");
        assert_eq!(q.pop_front(), Some(12));
    }

    #[test]
    fn a_lone_value_and_the_ring_hand_over_in_order() {
        let q = LocalQueue::default();
        // Alone, then out.
        q.push_back(1);
        assert_eq!((q.len(), q.is_empty()), (1, false));
        assert_eq!(q.pop_front(), Some(1));
        assert_eq!((q.len(), q.is_empty(), q.pop_front()), (0, true, None));
        // A second value after a lone one: both in the ring, in order.
        q.push_back(2);
        q.push_back(3);
        assert_eq!(q.len(), 2);
        // Down to one value in the ring: a rotation takes it out and leaves the new one
        // alone, which the next rotations swap.
        assert_eq!(q.pop_front(), Some(2));
        assert_eq!(q.push_back_pop_front(4), 3);
        assert_eq!(q.push_back_pop_front(5), 4);
        assert_eq!(q.len(), 1);
        // In front of a lone value, and a lone value pushed to the front.
        q.push_front(6);
        assert_eq!(q.len(), 2);
        assert_eq!(
            (q.pop_front(), q.pop_front(), q.pop_front()),
            (Some(6), Some(5), None)
        );
        q.push_front(7);
        q.push_back(8);
        assert_eq!(
            (q.pop_front(), q.pop_front(), q.pop_front()),
            (Some(7), Some(8), None)
        );
        // Empty: a rotation gives back its own value and queues nothing.
        assert_eq!(q.push_back_pop_front(9), 9);
        assert!(q.is_empty());
    }

    #[test]
    fn peek_with_sees_the_rings_values_only() {
        thread_local! {
            static SEEN: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        fn record(v: &u32) {
            SEEN.with(|s| s.borrow_mut().push(*v));
        }
        let q = LocalQueue::default();
        // A lone value, in `single`, is not seen (the hub peeks only when several are
        // ready).
        q.push_back(5);
        for i in [1, 0, 2] {
            q.peek_with(i, record);
        }
        assert_eq!(SEEN.with(|s| s.take()), Vec::<u32>::new());
        // One value in the ring is, at the front only.
        q.push_back(6);
        assert_eq!(q.pop_front(), Some(5));
        for i in [1, 0, 2] {
            q.peek_with(i, record);
        }
        assert_eq!(SEEN.with(|s| s.take()), vec![6]);
        assert_eq!(q.pop_front(), Some(6));
    }

    #[test]
    fn dropping_the_queue_drops_a_lone_value() {
        let item = std::rc::Rc::new(());
        let q = LocalQueue::default();
        q.push_back(item.clone());
        drop(q);
        assert_eq!(std::rc::Rc::strong_count(&item), 1);
    }

    #[test]
    fn one_value_in_the_ring_and_the_slow_front_pushes_keep_the_order() {
        let q = LocalQueue::default();
        // Popped down to one value in the ring (`state` 1): pushes join it there.
        q.push_back(1);
        q.push_back(2);
        assert_eq!(q.pop_front(), Some(1));
        assert_eq!(q.len(), 1);
        q.push_back(3);
        assert_eq!((q.len(), q.pop_front()), (2, Some(2)));
        // One value in the ring again: a push to the front lands before it.
        q.push_front(0);
        assert_eq!(
            (q.pop_front(), q.pop_front(), q.pop_front()),
            (Some(0), Some(3), None)
        );
        // A push to the front of a full ring grows it first.
        for i in 0..16 {
            q.push_back(i);
        }
        q.push_front(-1);
        let all: Vec<i32> = std::iter::from_fn(|| q.pop_front()).collect();
        assert_eq!(all, (-1..16).collect::<Vec<_>>());
        assert!(q.is_empty());
    }

    #[test]
    fn dropping_the_queue_drops_a_value_rotated_into_single() {
        let (a, b) = (std::rc::Rc::new(()), std::rc::Rc::new(()));
        let q = LocalQueue::default();
        q.push_back(a.clone());
        q.push_back(b.clone());
        drop(q.pop_front());
        // `b` alone in the ring: the rotation takes it out and leaves `a` in `single`.
        drop(q.push_back_pop_front(a.clone()));
        assert_eq!((q.len(), std::rc::Rc::strong_count(&b)), (1, 1));
        drop(q);
        assert_eq!(std::rc::Rc::strong_count(&a), 1);
    }

    #[test]
    fn dropping_the_queue_drops_what_is_left() {
        let item = std::rc::Rc::new(());
        let q = LocalQueue::default();
        q.push_back(item.clone());
        q.push_back(item.clone());
        drop(q);
        assert_eq!(std::rc::Rc::strong_count(&item), 1);
    }
}
