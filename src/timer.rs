//! L3: a deadline queue, generic over what a timer carries. A pure data structure: no clock
//! reads, no OS calls — the caller passes `now`.
//!
//! The hub keeps one [`TimerQueue`] per OS thread. Every `sleep`, `Timeout` and timed wait
//! inserts a timer; most of them (a `Timeout` around a read that completes in time) are
//! cancelled long before they fire, so `insert` and `cancel` are the hot pair, and the queue
//! must stay fast with a million timers pending.
//!
//! # Design: an indexed 4-ary min-heap over a slab
//!
//! ```text
//!   heap: Vec<HeapEntry>   (4-ary min-heap ordered by (deadline, seq))
//!   ┌────────────────────┬────────────────────┬─────
//!   │ deadline, seq, slot│ deadline, seq, slot│ ...      children of i: 4i+1 ..= 4i+4
//!   └─────────┬──────────┴────────────────────┴─────
//!             │ slot                      ▲ pos
//!             ▼                           │
//!   slots: Vec<Slot<T>>  ┌─────────────────┴──┐
//!                        │ value: Some(T), seq, link = pos in heap │  occupied
//!                        │ value: None,          link = next free  │  vacant (free list)
//!                        └─────────────────────────────────────────┘
//!   TimerKey { slot, seq }: valid while slots[slot] is occupied with the same seq
//! ```
//!
//! * `insert` takes a slot from the free list and sifts a new heap entry up: O(log₄ n), and
//!   O(1) in the usual case where the new deadline is the latest one (`now + timeout`).
//! * `cancel` finds the heap position through the slot and removes it there, moving the last
//!   heap entry into the hole: O(log₄ n). The value is returned at once and the memory is
//!   reused: there are no tombstones, so heavy churn never makes the heap grow.
//! * `next_deadline` is the root: O(1). The hub asks for it on every loop turn to compute
//!   the poll timeout.
//!
//! Why not a hierarchical timing wheel? A wheel gives O(1) insert/cancel, but it buckets
//! deadlines into ticks: either timers fire up to a tick late, or each bucket needs sorting
//! to stay exact and FIFO; "when is the next deadline" needs a scan or cascading; and an idle
//! hub must still advance ticks. The heap is exact by construction, FIFO through the
//! sequence number, answers `next_deadline` from its root, and a 4-ary layout keeps a
//! million timers at ten levels whose four children share a cache line or two.
//!
//! # Invariants
//!
//! * Heap order: no entry is ordered before its parent by `(deadline, seq)`.
//! * `slots[h.slot]` is occupied with `seq == h.seq` and `link == i` for every `heap[i] = h`,
//!   and every occupied slot is referenced by exactly one heap entry.
//! * `seq` increases with every insertion and is never reused, so it is both the FIFO
//!   tie-break for equal deadlines and the generation that makes stale keys harmless.
//! * A timer is returned by `pop_*` only when `deadline <= now`: never early.
//!
//! # Example
//!
//! ```text
//! let mut timers = TimerQueue::new();
//! let now = Instant::now();
//! let a = timers.insert(now + Duration::from_secs(5), "read timeout");
//! timers.insert(now + Duration::from_millis(10), "sleep");
//! assert_eq!(timers.cancel(a), Some("read timeout")); // the read finished in time
//! assert_eq!(timers.cancel(a), None);                 // stale key: nothing happens
//! let mut fired = Vec::new();
//! timers.pop_expired(now + Duration::from_secs(1), &mut fired);
//! assert_eq!(fired, ["sleep"]);
//! ```

use std::time::Instant;

/// Children per heap node.
const ARITY: usize = 4;
/// End of the free list.
const NONE: u32 = u32::MAX;

/// Identifies one inserted timer. Stays harmless after the timer fired or was cancelled:
/// `cancel` with a stale key returns `None`, even when its slot has been reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TimerKey {
    slot: u32,
    seq: u64,
}

#[derive(Clone, Copy, Debug)]
struct HeapEntry {
    deadline: Instant,
    seq: u64,
    slot: u32,
}

impl HeapEntry {
    /// Strict heap order: earlier deadline first, then earlier insertion.
    #[inline]
    fn before(&self, other: &HeapEntry) -> bool {
        (self.deadline, self.seq) < (other.deadline, other.seq)
    }
}

#[derive(Debug)]
struct Slot<T> {
    /// `Some` while the timer is pending.
    value: Option<T>,
    /// The timer's sequence number (meaningful while occupied).
    seq: u64,
    /// Occupied: the index of this timer's entry in the heap. Vacant: the next free slot.
    link: u32,
}

/// A queue of timers ordered by deadline, then by insertion (FIFO for equal deadlines).
#[derive(Debug)]
pub(crate) struct TimerQueue<T> {
    heap: Vec<HeapEntry>,
    slots: Vec<Slot<T>>,
    free_head: u32,
    next_seq: u64,
}

impl<T> Default for TimerQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> TimerQueue<T> {
    /// An empty queue.
    pub(crate) fn new() -> TimerQueue<T> {
        Self::with_capacity(0)
    }

    /// An empty queue with room for `capacity` pending timers before it reallocates.
    pub(crate) fn with_capacity(capacity: usize) -> TimerQueue<T> {
        TimerQueue {
            heap: Vec::with_capacity(capacity),
            slots: Vec::with_capacity(capacity),
            free_head: NONE,
            next_seq: 0,
        }
    }

    /// How many timers are pending.
    // Part of the documented contract; exercised by unit tests, not yet by the layers above.
    #[allow(dead_code)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no timer is pending.
    pub(crate) fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Adds a timer that fires once `now >= deadline`.
    ///
    /// # Panics
    ///
    /// With `u32::MAX - 1` timers already pending.
    pub(crate) fn insert(&mut self, deadline: Instant, value: T) -> TimerKey {
        let seq = self.next_seq;
        self.next_seq += 1;
        let pos = self.heap.len();
        assert!(pos < NONE as usize, "TimerQueue: too many pending timers");
        let pos = pos as u32;
        let slot = if self.free_head != NONE {
            let slot = self.free_head;
            let s = &mut self.slots[slot as usize];
            self.free_head = s.link;
            *s = Slot {
                value: Some(value),
                seq,
                link: pos,
            };
            slot
        } else {
            let slot = self.slots.len() as u32;
            self.slots.push(Slot {
                value: Some(value),
                seq,
                link: pos,
            });
            slot
        };
        self.heap.push(HeapEntry {
            deadline,
            seq,
            slot,
        });
        self.sift_up(pos as usize);
        TimerKey { slot, seq }
    }

    /// Removes a pending timer and returns its value; `None` if it already fired or was
    /// cancelled (the key is stale).
    pub(crate) fn cancel(&mut self, key: TimerKey) -> Option<T> {
        let pos = self.pending_slot(key)?.link as usize;
        Some(self.remove_at(pos))
    }

    /// Whether the timer is still pending.
    // Part of the documented contract; exercised by unit tests, not yet by the layers above.
    #[allow(dead_code)]
    pub(crate) fn contains(&self, key: TimerKey) -> bool {
        self.pending_slot(key).is_some()
    }

    /// The deadline of a pending timer.
    // Part of the documented contract; exercised by unit tests, not yet by the layers above.
    #[allow(dead_code)]
    pub(crate) fn deadline(&self, key: TimerKey) -> Option<Instant> {
        let pos = self.pending_slot(key)?.link as usize;
        Some(self.heap[pos].deadline)
    }

    /// The earliest deadline, if any timer is pending.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.heap.first().map(|e| e.deadline)
    }

    /// Removes and returns the first timer (earliest deadline, then earliest inserted) if its
    /// deadline is `<= now`.
    pub(crate) fn pop_next_expired(&mut self, now: Instant) -> Option<T> {
        match self.heap.first() {
            Some(root) if root.deadline <= now => Some(self.remove_at(0)),
            _ => None,
        }
    }

    /// Moves every timer whose deadline is `<= now` into `out`, in firing order (deadline,
    /// then insertion), and returns how many.
    // Part of the documented contract; exercised by unit tests, not yet by the layers above.
    #[allow(dead_code)]
    pub(crate) fn pop_expired<E: Extend<T>>(&mut self, now: Instant, out: &mut E) -> usize {
        let mut n = 0;
        while let Some(value) = self.pop_next_expired(now) {
            out.extend(Some(value));
            n += 1;
        }
        n
    }

    /// Drops every pending timer; all keys become stale.
    // Part of the documented contract; exercised by unit tests, not yet by the layers above.
    #[allow(dead_code)]
    pub(crate) fn clear(&mut self) {
        self.heap.clear();
        self.slots.clear();
        self.free_head = NONE;
    }

    fn pending_slot(&self, key: TimerKey) -> Option<&Slot<T>> {
        let s = self.slots.get(key.slot as usize)?;
        (s.value.is_some() && s.seq == key.seq).then_some(s)
    }

    /// Removes `heap[pos]`, frees its slot and returns its value.
    fn remove_at(&mut self, pos: usize) -> T {
        let removed = self.heap.swap_remove(pos);
        let s = &mut self.slots[removed.slot as usize];
        let value = s.value.take().expect("heap entry points at a vacant slot");
        s.link = self.free_head;
        self.free_head = removed.slot;
        if pos < self.heap.len() {
            // The former last entry now sits at `pos`: restore heap order around it.
            let moved = self.heap[pos];
            self.slots[moved.slot as usize].link = pos as u32;
            if pos > 0 && moved.before(&self.heap[(pos - 1) / ARITY]) {
                self.sift_up(pos);
            } else {
                self.sift_down(pos);
            }
        }
        value
    }

    /// Moves `heap[pos]` towards the root until its parent is before it.
    fn sift_up(&mut self, mut pos: usize) {
        let entry = self.heap[pos];
        while pos > 0 {
            let parent = (pos - 1) / ARITY;
            let p = self.heap[parent];
            if !entry.before(&p) {
                break;
            }
            self.heap[pos] = p;
            self.slots[p.slot as usize].link = pos as u32;
            pos = parent;
        }
        self.heap[pos] = entry;
        self.slots[entry.slot as usize].link = pos as u32;
    }

    /// Moves `heap[pos]` towards the leaves until no child is before it.
    fn sift_down(&mut self, mut pos: usize) {
        let entry = self.heap[pos];
        let len = self.heap.len();
        loop {
            let first = pos * ARITY + 1;
            if first >= len {
                break;
            }
            let end = (first + ARITY).min(len);
            let mut best = first;
            for c in first + 1..end {
                if self.heap[c].before(&self.heap[best]) {
                    best = c;
                }
            }
            let child = self.heap[best];
            if !child.before(&entry) {
                break;
            }
            self.heap[pos] = child;
            self.slots[child.slot as usize].link = pos as u32;
            pos = best;
        }
        self.heap[pos] = entry;
        self.slots[entry.slot as usize].link = pos as u32;
    }

    /// Checks every invariant in the module docs (tests only).
    #[cfg(test)]
    fn check_invariants(&self) {
        for (i, e) in self.heap.iter().enumerate() {
            if i > 0 {
                assert!(!e.before(&self.heap[(i - 1) / ARITY]), "heap order at {i}");
            }
            let s = &self.slots[e.slot as usize];
            assert!(s.value.is_some() && s.seq == e.seq && s.link as usize == i);
        }
        let occupied = self.slots.iter().filter(|s| s.value.is_some()).count();
        assert_eq!(occupied, self.heap.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn empty_queue() {
        let mut q: TimerQueue<u32> = TimerQueue::new();
        assert!(q.is_empty());
        assert_eq!(q.len(), 0);
        assert_eq!(q.next_deadline(), None);
        assert_eq!(q.pop_next_expired(Instant::now()), None);
    }

    #[test]
    fn equal_deadlines_fire_in_insertion_order() {
        let mut q = TimerQueue::new();
        let t = Instant::now();
        // Interleave with other deadlines so the heap really reorders things.
        for i in 0..1000u32 {
            q.insert(t + ms(u64::from(i % 3)), i);
        }
        q.check_invariants();
        let mut fired = Vec::new();
        assert_eq!(q.pop_expired(t + ms(10), &mut fired), 1000);
        let expected: Vec<u32> = (0..3)
            .flat_map(|d| (0..1000).filter(move |i| i % 3 == d))
            .collect();
        assert_eq!(fired, expected);
    }

    #[test]
    fn fifo_survives_cancellations() {
        let mut q = TimerQueue::new();
        let t = Instant::now();
        let keys: Vec<_> = (0..100u32).map(|i| q.insert(t, i)).collect();
        for k in keys.iter().step_by(3) {
            q.cancel(*k).unwrap();
        }
        q.check_invariants();
        let mut fired = Vec::new();
        q.pop_expired(t, &mut fired);
        let expected: Vec<u32> = (0..100).filter(|i| i % 3 != 0).collect();
        assert_eq!(fired, expected);
    }

    #[test]
    fn never_fires_early() {
        let mut q = TimerQueue::new();
        let t = Instant::now();
        q.insert(t + ms(5), "b");
        q.insert(t + ms(1), "a");
        let mut fired = Vec::new();
        assert_eq!(q.pop_expired(t, &mut fired), 0);
        assert_eq!(
            q.pop_expired(t + ms(1) - Duration::from_nanos(1), &mut fired),
            0
        );
        assert_eq!(q.pop_expired(t + ms(1), &mut fired), 1);
        assert_eq!(fired, ["a"]);
        assert_eq!(q.next_deadline(), Some(t + ms(5)));
        assert_eq!(q.pop_next_expired(t + ms(4)), None);
        assert_eq!(q.pop_next_expired(t + ms(5)), Some("b"));
        assert!(q.is_empty());
    }

    #[test]
    fn cancel_returns_value_once_and_stale_keys_are_harmless() {
        let mut q = TimerQueue::new();
        let t = Instant::now();
        let a = q.insert(t + ms(1), 'a');
        let b = q.insert(t + ms(2), 'b');
        assert!(q.contains(a));
        assert_eq!(q.deadline(b), Some(t + ms(2)));
        assert_eq!(q.cancel(a), Some('a'));
        assert_eq!(q.cancel(a), None, "cancelled twice");
        assert!(!q.contains(a));
        assert_eq!(q.deadline(a), None);

        // `a`'s slot is reused by `c`: the stale key must not cancel `c`.
        let c = q.insert(t + ms(3), 'c');
        assert_eq!(c.slot, a.slot);
        assert_eq!(q.cancel(a), None);
        assert!(q.contains(c));

        // A fired timer's key is stale too.
        assert_eq!(q.pop_next_expired(t + ms(2)), Some('b'));
        assert_eq!(q.cancel(b), None);
        assert_eq!(q.len(), 1);

        // Keys from before a clear are stale.
        q.clear();
        assert_eq!(q.cancel(c), None);
        let d = q.insert(t, 'd');
        assert_eq!(q.cancel(c), None);
        assert_eq!(q.cancel(d), Some('d'));
    }

    #[test]
    fn values_are_dropped_with_the_queue() {
        use std::rc::Rc;
        let counter = Rc::new(());
        let mut q = TimerQueue::new();
        let t = Instant::now();
        for i in 0..10 {
            q.insert(t + ms(i), Rc::clone(&counter));
        }
        assert_eq!(Rc::strong_count(&counter), 11);
        drop(q);
        assert_eq!(Rc::strong_count(&counter), 1);
    }

    /// A small xorshift generator: deterministic, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn random_churn_matches_a_model() {
        // Model: a sorted list of (deadline, seq, value).
        let mut q = TimerQueue::new();
        let mut model: Vec<(u64, u64, u64)> = Vec::new();
        let mut keys: Vec<(TimerKey, u64)> = Vec::new();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let t = Instant::now();
        let mut now = 0u64;
        let mut seq = 0u64;
        for step in 0..20_000 {
            match rng.next() % 10 {
                0..=4 => {
                    let d = now + rng.next() % 50;
                    let k = q.insert(t + ms(d), seq);
                    model.push((d, seq, seq));
                    keys.push((k, seq));
                    seq += 1;
                }
                5..=7 if !keys.is_empty() => {
                    let i = (rng.next() as usize) % keys.len();
                    let (k, v) = keys.swap_remove(i);
                    let expected = model
                        .iter()
                        .position(|m| m.2 == v)
                        .map(|p| model.remove(p).2);
                    assert_eq!(q.cancel(k), expected);
                }
                _ => {
                    now += rng.next() % 5;
                    let mut fired = Vec::new();
                    q.pop_expired(t + ms(now), &mut fired);
                    model.sort();
                    let split = model.partition_point(|m| m.0 <= now);
                    let expected: Vec<u64> = model.drain(..split).map(|m| m.2).collect();
                    assert_eq!(fired, expected, "step {step}");
                }
            }
            assert_eq!(q.len(), model.len());
            if step % 1000 == 0 {
                q.check_invariants();
            }
        }
        q.check_invariants();
    }

    #[test]
    fn million_timers_pop_in_order() {
        const N: u64 = 1_000_000;
        let mut q = TimerQueue::with_capacity(N as usize);
        let t = Instant::now();
        let mut rng = Rng(42);
        for i in 0..N {
            // Many duplicates (10_000 distinct deadlines) to exercise the FIFO tie-break.
            q.insert(t + Duration::from_micros(rng.next() % 10_000), i);
        }
        assert_eq!(q.len(), N as usize);
        let mut last: Option<(Instant, u64)> = None;
        let mut count = 0;
        while let Some(next) = q.next_deadline() {
            let v = q.pop_next_expired(next).unwrap();
            if let Some((d, prev)) = last {
                assert!(
                    d < next || (d == next && prev < v),
                    "out of order at {count}"
                );
            }
            last = Some((next, v));
            count += 1;
        }
        assert_eq!(count, N);
        assert!(q.is_empty());
    }
}
