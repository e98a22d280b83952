//! [`HandOffCell`]: a one-item mailbox that one writer fills for a chosen reader, and that
//! reader empties without a lock.
//!
//! The `Send + Sync` queues of `sync` keep their state behind a `std::sync::Mutex`. A getter
//! that was handed an item while it yielded would have to take that lock once more just to
//! pick the item up; with this cell the putter (which holds the queue's lock anyway, and
//! owns the unique [`HandOffWriter`] stored under it) drops the item into the cell tagged
//! with the getter's id, and the getter takes it out with one compare-and-swap. The module
//! lives in the greenlet layer because it needs `unsafe` (an `UnsafeCell` handed between
//! OS threads); its API is safe whatever the callers do.
//!
//! ## States
//! One atomic word says who may touch the value:
//!
//! ```text
//!              writer: put(key, v)                 reader: take(key)
//!   EMPTY (0) ──────────────────────▶ FULL(key) ───────────────────▶ BUSY (u64::MAX)
//!      ▲        load EMPTY (Acquire),    │        CAS key → BUSY        │
//!      │        write v,                 │        (Acquire), read v     │
//!      │        store key (Release)      │                              │
//!      └─────────────────────────────────┴──────────────────────────────┘
//!                                          store EMPTY (Release)
//! ```
//!
//! * The value is initialised exactly in the states `FULL(_)` (and while the reader that
//!   won the CAS reads it out, in `BUSY`).
//! * Only the writer leaves `EMPTY`, and there is one writer (`put` takes `&mut self` and
//!   the writer is not `Clone`): while the state is `EMPTY`, nobody else touches the value.
//! * Only a reader whose CAS from `FULL(key)` succeeded leaves `FULL`, and only one CAS
//!   can succeed: while the state is `BUSY`, that reader alone touches the value.
//! * Each hand-over of the value is a Release store read by an Acquire operation, so a
//!   write of the value happens before its read, and a read before the next write.
//!
//! A writer that finds the cell not `EMPTY` (an earlier item not picked up yet) gets its
//! item back: the caller then keeps it elsewhere (the queue's `handed` list).

use std::cell::UnsafeCell;
use std::fmt;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// No value; the writer may fill the cell.
const EMPTY: u64 = 0;
/// A reader is moving the value out.
const BUSY: u64 = u64::MAX;

struct Inner<T> {
    /// `EMPTY`, `BUSY`, or the key of the reader the value is for.
    state: AtomicU64,
    /// Initialised while `state` is neither `EMPTY` nor (after the read) back to `EMPTY`:
    /// see the module docs.
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: the value is moved in by one thread and out by another, never shared by
// reference between threads: `T: Send` is all it takes, as for `std::sync::Mutex<T>`.
// Access to `value` is serialised by `state` (see the module docs).
unsafe impl<T: Send> Sync for Inner<T> {}
// SAFETY: as above; the `UnsafeCell` is what keeps the auto impl away.
unsafe impl<T: Send> Send for Inner<T> {}

impl<T> Drop for Inner<T> {
    fn drop(&mut self) {
        let state = *self.state.get_mut();
        if state != EMPTY && state != BUSY {
            // `BUSY` cannot be seen here: the reader that set it holds an `Arc` until it
            // has stored `EMPTY`.
            // SAFETY: `&mut self`, so no reader or writer is left; `FULL`: initialised.
            unsafe { self.value.get_mut().assume_init_drop() };
        }
    }
}

/// The shared, reading side: any thread may try to [`take`](Self::take) the value filed
/// under its key.
pub(crate) struct HandOffCell<T> {
    inner: Arc<Inner<T>>,
}

/// The unique, writing side: fills the cell for one reader's key.
pub(crate) struct HandOffWriter<T> {
    inner: Arc<Inner<T>>,
}

impl<T> HandOffCell<T> {
    /// An empty cell and its only writer.
    pub(crate) fn new() -> (HandOffCell<T>, HandOffWriter<T>) {
        let inner = Arc::new(Inner {
            state: AtomicU64::new(EMPTY),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        });
        (
            HandOffCell {
                inner: inner.clone(),
            },
            HandOffWriter { inner },
        )
    }

    /// Takes the value if it was put for `key`; `None` if the cell is empty, holds a value
    /// for another key, or another reader is taking it right now. Lock-free: one
    /// compare-and-swap when it succeeds, one load when there is nothing for `key`.
    #[inline]
    pub(crate) fn take(&self, key: u64) -> Option<T> {
        let state = &self.inner.state;
        // A cheap look first: a failing CAS would still take the cache line exclusively.
        if key == EMPTY || key == BUSY || state.load(Ordering::Relaxed) != key {
            return None;
        }
        self.take_filed(key)
    }

    /// Takes the value, whatever key it was put for, with that key; `None` if the cell is
    /// empty or another reader is taking the value right now.
    #[inline]
    pub(crate) fn take_any(&self) -> Option<(u64, T)> {
        let state = &self.inner.state;
        let key = state.load(Ordering::Relaxed);
        if key == EMPTY || key == BUSY {
            return None;
        }
        Some((key, self.take_filed(key)?))
    }

    /// Moves the value out if the state is still `FULL(key)` (`key` neither `EMPTY` nor
    /// `BUSY`): one compare-and-swap, the read, one store.
    #[inline(always)]
    fn take_filed(&self, key: u64) -> Option<T> {
        let state = &self.inner.state;
        // Acquire: pairs with the writer's Release store of `key`, so its write of the
        // value is visible here.
        state
            .compare_exchange(key, BUSY, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        // SAFETY: the CAS moved the state from `FULL(key)` to `BUSY`: the value is
        // initialised, and until the store below nobody else reads or writes it (only
        // one CAS from `FULL` succeeds; the writer waits for `EMPTY`).
        let value = unsafe { (*self.inner.value.get()).assume_init_read() };
        // Release: the read above happens before the writer's next write.
        state.store(EMPTY, Ordering::Release);
        Some(value)
    }

    /// Whether the cell holds a value (for any key) or is being emptied.
    pub(crate) fn is_filled(&self) -> bool {
        self.inner.state.load(Ordering::Acquire) != EMPTY
    }
}

impl<T> HandOffWriter<T> {
    /// Files `value` for the reader of `key`, if the cell is empty; otherwise (or if `key`
    /// is 0 or `u64::MAX`, which are reserved) hands `value` back.
    #[inline]
    pub(crate) fn put(&mut self, key: u64, value: T) -> Result<(), T> {
        let state = &self.inner.state;
        // Acquire: pairs with the last reader's Release store of `EMPTY`, so its read of
        // the previous value is done before the write below.
        if key == EMPTY || key == BUSY || state.load(Ordering::Acquire) != EMPTY {
            return Err(value);
        }
        // SAFETY: the state is `EMPTY`, and only this writer (unique: `&mut self`, not
        // `Clone`) moves it away from `EMPTY`, so no reader touches the value until the
        // store below; the previous value, if any, was moved out (module docs).
        unsafe { (*self.inner.value.get()).write(value) };
        // Release: the write above happens before the reader's Acquire CAS.
        state.store(key, Ordering::Release);
        Ok(())
    }
}

impl<T> fmt::Debug for HandOffCell<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandOffCell")
            .field("filled", &self.is_filled())
            .finish()
    }
}

impl<T> fmt::Debug for HandOffWriter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandOffWriter").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::thread;

    #[test]
    fn put_then_take_by_key_only() {
        let (cell, mut writer) = HandOffCell::new();
        assert_eq!(cell.take(1), None);
        writer.put(7, String::from("seven")).unwrap();
        assert!(cell.is_filled());
        assert_eq!(cell.take(6), None);
        assert_eq!(cell.take(8), None);
        assert_eq!(cell.take(7).as_deref(), Some("seven"));
        assert_eq!(cell.take(7), None);
        assert!(!cell.is_filled());
    }

    #[test]
    fn a_full_cell_hands_the_value_back() {
        let (cell, mut writer) = HandOffCell::new();
        writer.put(1, 10).unwrap();
        assert_eq!(writer.put(2, 20), Err(20));
        assert_eq!(cell.take(1), Some(10));
        writer.put(2, 20).unwrap();
        assert_eq!(cell.take(2), Some(20));
    }

    #[test]
    fn take_any_takes_whatever_key_it_is_for() {
        let (cell, mut writer) = HandOffCell::new();
        assert_eq!(cell.take_any(), None);
        writer.put(9, 'x').unwrap();
        assert_eq!(cell.take_any(), Some((9, 'x')));
        assert_eq!(cell.take_any(), None);
        assert_eq!(cell.take(9), None);
        writer.put(10, 'y').unwrap();
        assert_eq!(cell.take(10), Some('y'));
        assert_eq!(cell.take_any(), None);
    }

    #[test]
    fn reserved_keys_are_refused() {
        let (cell, mut writer) = HandOffCell::new();
        assert_eq!(writer.put(EMPTY, 1), Err(1));
        assert_eq!(writer.put(BUSY, 2), Err(2));
        assert!(!cell.is_filled());
        assert_eq!(cell.take(EMPTY), None);
        assert_eq!(cell.take(BUSY), None);
    }

    struct Counted<'a>(&'a AtomicUsize);

    impl Drop for Counted<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_value_never_taken_is_dropped_with_the_cell() {
        let drops = AtomicUsize::new(0);
        let (cell, mut writer) = HandOffCell::new();
        writer.put(3, Counted(&drops)).ok().unwrap();
        drop(writer);
        assert_eq!(drops.load(Ordering::Relaxed), 0);
        drop(cell);
        assert_eq!(drops.load(Ordering::Relaxed), 1);

        // Taken values are dropped by their taker, not again by the cell.
        let (cell, mut writer) = HandOffCell::new();
        writer.put(3, Counted(&drops)).ok().unwrap();
        drop(cell.take(3));
        assert_eq!(drops.load(Ordering::Relaxed), 2);
        drop((cell, writer));
        assert_eq!(drops.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn values_cross_os_threads_in_order() {
        const N: u64 = 5_000;
        let (cell, mut writer) = HandOffCell::new();
        let reader = thread::spawn(move || {
            let mut got = Vec::with_capacity(N as usize);
            for key in 1..=N {
                loop {
                    if let Some(v) = cell.take(key) {
                        got.push(v);
                        break;
                    }
                    thread::yield_now();
                }
            }
            got
        });
        for key in 1..=N {
            let mut value = Box::new(key * 3);
            loop {
                match writer.put(key, value) {
                    Ok(()) => break,
                    Err(v) => value = v,
                }
                thread::yield_now();
            }
        }
        let got = reader.join().unwrap();
        assert!(got.iter().zip(1..).all(|(v, key)| **v == key * 3));
    }

    #[test]
    fn racing_readers_of_one_key_take_it_once() {
        const ROUNDS: u64 = 500;
        let (cell, mut writer) = HandOffCell::new();
        let cell = Arc::new(cell);
        let taken = Arc::new(AtomicUsize::new(0));
        let readers: Vec<_> = (0..2)
            .map(|reader| {
                let (cell, taken) = (cell.clone(), taken.clone());
                thread::spawn(move || {
                    for key in 1..=ROUNDS {
                        // Both race for every key (one with `take_any`); the loser moves
                        // on once it is gone.
                        while taken.load(Ordering::Acquire) < key as usize {
                            let got = if reader == 0 {
                                cell.take(key)
                            } else {
                                // Between the check above and this take, the other reader
                                // may have taken `key` and the writer filed the next one:
                                // a later key, never an earlier one.
                                cell.take_any().map(|(k, v)| {
                                    assert!(k >= key, "took key {k} while waiting for {key}");
                                    assert_eq!(v, k);
                                    v
                                })
                            };
                            if got.is_some() {
                                taken.fetch_add(1, Ordering::AcqRel);
                            }
                            thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        // A reader that panicked (a failed assertion) never takes its item: stop waiting
        // and report its panic instead of spinning forever.
        let check = |readers: &[thread::JoinHandle<()>]| {
            assert!(
                !readers.iter().any(|r| r.is_finished()),
                "a reader ended before every key was taken"
            );
            thread::yield_now();
        };
        for key in 1..=ROUNDS {
            while writer.put(key, key).is_err() {
                check(&readers);
            }
            while taken.load(Ordering::Acquire) < key as usize {
                check(&readers);
            }
        }
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(taken.load(Ordering::Relaxed), ROUNDS as usize);
        assert!(!cell.is_filled());
    }
}
