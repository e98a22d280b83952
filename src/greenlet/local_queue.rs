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
//! of line), and a pop, or a push onto one value, costs the test of `single` more.
//!
//! ```text
//!   empty:      single = None      ring empty
//!   one value:  single = Some(v)   ring empty
//!   more:       single = None      ring = the values, front first (one or more)
//! ```

use std::cell::Cell;
use std::mem::MaybeUninit;

/// A single-threaded FIFO accessed through `&self`, by move only (no references into it
/// are ever handed out, so no borrow flag is needed).
pub(crate) struct LocalQueue<T> {
    /// The queue's value when it holds exactly that one, with the ring empty; else `None`.
    /// `len` counts it: while it is there, `len` is 1 and the ring holds nothing.
    single: Cell<Option<T>>,
    /// The ring's slots; `len` of them, from `head` on (wrapping), are initialised, unless
    /// `single` holds the one value (then none is). Its length,
    /// `cap`, is zero or a power of two. Replaced (not resized in place) when it grows.
    buf: Cell<Box<[MaybeUninit<T>]>>,
    /// Raw pointer of `buf` and its length minus one (wrapping: `usize::MAX` while it is
    /// empty), kept beside it so that the hot paths need not take the box out of its cell.
    slots: Cell<*mut MaybeUninit<T>>,
    mask: Cell<usize>,
    head: Cell<usize>,
    /// How many values are queued: `single`'s (then 1), or the ring's.
    len: Cell<usize>,
}

impl<T> Default for LocalQueue<T> {
    fn default() -> Self {
        let mut buf: Box<[MaybeUninit<T>]> = Box::new([]);
        LocalQueue {
            single: Cell::new(None),
            slots: Cell::new(buf.as_mut_ptr()),
            buf: Cell::new(buf),
            mask: Cell::new(usize::MAX),
            head: Cell::new(0),
            len: Cell::new(0),
        }
    }
}

impl<T> LocalQueue<T> {
    /// Whether `single` holds a value.
    #[inline(always)]
    fn has_single(&self) -> bool {
        // SAFETY: a `Cell`'s contents are only ever moved in and out, never borrowed, and
        // this read ends before anything else touches the cell (the queue is !Sync).
        unsafe { (*self.single.as_ptr()).is_some() }
    }

    /// Puts `value` into `single`, which the caller knows is empty (no drop, no test).
    #[inline(always)]
    fn set_single(&self, value: T) {
        let empty = self.single.replace(Some(value));
        debug_assert!(empty.is_none(), "LocalQueue: `single` was not empty");
        std::mem::forget(empty);
    }

    /// Appends `value` at the back.
    #[inline]
    pub(crate) fn push_back(&self, value: T) {
        let len = self.len.get();
        if len == 0 {
            // The length first: stored after the value, as the ring's push stores it, it
            // was merged with that store, at the cost of a move and a jump.
            self.len.set(1);
            self.set_single(value);
            return;
        }
        if len == 1 && self.has_single() {
            self.single_to_ring();
        }
        self.push_back_ring(value);
    }

    /// Moves the value in `single` into the ring, for a second one to follow it there.
    /// Out of line (a queue that grows past one value comes here once, as it does), and
    /// `extern "C"` as [`grow`](Self::grow), which it may call: a push does not unwind.
    #[cold]
    #[inline(never)]
    extern "C" fn single_to_ring(&self) {
        if let Some(first) = self.single.take() {
            self.len.set(0);
            self.push_back_ring(first);
        }
    }

    /// Appends `value` at the back of the ring (`single` is empty: `len` is the ring's).
    #[inline(always)]
    fn push_back_ring(&self, value: T) {
        debug_assert!(
            !self.has_single(),
            "LocalQueue: a ring push beside `single`"
        );
        let len = self.len.get();
        if len == self.cap() {
            self.grow();
        }
        let i = (self.head.get() + len) & self.mask();
        // SAFETY: `i < cap`, the number of slots (the buffer grew above if it was full, so
        // `cap > 0`); slot `i` is outside the `len` initialised ones: nothing is overwritten.
        unsafe { (*self.slots.get().add(i)).write(value) };
        self.len.set(len + 1);
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
        let len = self.len.get();
        if len == 0 {
            self.set_single(value);
            self.len.set(1);
            return;
        }
        if len == 1 && self.has_single() {
            self.single_to_ring();
        }
        if len == self.cap() {
            self.grow();
        }
        let head = self.head.get().wrapping_sub(1) & self.mask();
        // SAFETY: as in `push_back`: slot `head` is in the buffer and not initialised.
        unsafe { (*self.slots.get().add(head)).write(value) };
        self.head.set(head);
        self.len.set(len + 1);
    }

    /// Takes the value at the front.
    #[inline]
    pub(crate) fn pop_front(&self) -> Option<T> {
        if self.has_single() {
            // The only value (the ring is empty).
            self.len.set(0);
            return self.single.take();
        }
        let len = self.len.get();
        if len == 0 {
            return None;
        }
        let head = self.head.get();
        self.head.set((head + 1) & self.mask());
        self.len.set(len - 1);
        // SAFETY: `len > 0`, so slot `head` is initialised; it counts as empty from now on
        // (head and len moved past it), so it is read exactly once.
        Some(unsafe { (*self.slots.get().add(head)).assume_init_read() })
    }

    /// Appends `value` at the back and takes the value at the front (`value` itself if the
    /// queue is empty): a push and a pop with one index update, no length update and never
    /// a grow (the length does not change). With one value queued, `value` takes its place
    /// in `single` (the ring's one value first moves out of the ring).
    #[inline]
    pub(crate) fn push_back_pop_front(&self, value: T) -> T {
        let len = self.len.get();
        if len == 0 {
            return value;
        }
        if len == 1 {
            let front = match self.single.replace(Some(value)) {
                Some(front) => front,
                None => self.pop_ring_last(),
            };
            return front;
        }
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

    /// The ring's one value, taken out (`len` stays 1: the caller just put a value in
    /// `single`).
    #[cold]
    #[inline(never)]
    fn pop_ring_last(&self) -> T {
        let head = self.head.get();
        self.head.set((head + 1) & self.mask());
        // SAFETY: `len` is 1 and `single` was empty, so the ring holds one value, at slot
        // `head`; it counts as empty from now on (`head` moved past it, and `single` counts
        // for `len`), so it is read exactly once.
        unsafe { (*self.slots.get().add(head)).assume_init_read() }
    }

    /// Calls `f` with the value `i` places from the front, if there is one. For hints
    /// that read the value and do nothing else (the hub's prefetch of the next green
    /// threads to run): `f` is a plain function, not a closure, and must not reach this
    /// queue (it must be a projection of the value, as `greenlet_of` of
    /// [`Greenlet::resume_held_in`](super::Greenlet::resume_held_in)).
    #[inline(always)]
    pub(crate) fn peek_with(&self, i: usize, f: fn(&T)) {
        if self.has_single() {
            // SAFETY: as in `has_single`; the reference lives only while `f` runs, which
            // does not reach the queue (its contract).
            if let (0, Some(v)) = (i, unsafe { &*self.single.as_ptr() }) {
                f(v);
            }
            return;
        }
        if i < self.len.get() {
            let slot = (self.head.get() + i) & self.mask();
            // SAFETY: `i < len`, so slot `head + i` (masked) is initialised; the reference
            // lives only while `f` runs, which does not reach the queue (its contract).
            f(unsafe { (*self.slots.get().add(slot)).assume_init_ref() });
        }
    }

    /// How many values are queued.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len.get()
    }

    /// Whether the queue is empty.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len.get() == 0
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
        let (head, len) = (self.head.get(), self.len.get());
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
    fn peek_with_sees_a_lone_value_at_the_front_only() {
        thread_local! {
            static SEEN: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        fn record(v: &u32) {
            SEEN.with(|s| s.borrow_mut().push(*v));
        }
        let q = LocalQueue::default();
        q.push_back(5);
        for i in [1, 0, 2] {
            q.peek_with(i, record);
        }
        assert_eq!(SEEN.with(|s| s.take()), vec![5]);
        assert_eq!(q.pop_front(), Some(5));
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
    fn dropping_the_queue_drops_what_is_left() {
        let item = std::rc::Rc::new(());
        let q = LocalQueue::default();
        q.push_back(item.clone());
        q.push_back(item.clone());
        drop(q);
        assert_eq!(std::rc::Rc::strong_count(&item), 1);
    }
}
