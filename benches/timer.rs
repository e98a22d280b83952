//! Timer queue benchmarks: the hub's hot paths with a million timers pending.
//!
//! `TimerQueue` is crate-private, and a pure data structure with no dependency on the rest of
//! the crate, so its source is compiled into this benchmark directly.
//!
//! Peer: `std::collections::BinaryHeap` with lazy cancellation (a tombstone set checked at
//! pop), the usual hand-rolled alternative, runs in the same group so each report is a ratio.
//!
//! Run: `cargo bench --bench timer`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

// cfg(test) is set for benchmark builds, so the module's tests compile here, minus #[test].
#[allow(dead_code, unused_imports)]
#[path = "../src/timer.rs"]
mod timer;
use timer::{TimerKey, TimerQueue};

const PENDING: u64 = 1_000_000;

/// Deterministic xorshift, so every run sees the same deadlines.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A queue with `PENDING` timers spread over the next 60 s, like a busy server's timeouts.
fn full_queue(base: Instant) -> TimerQueue<u64> {
    let mut q = TimerQueue::with_capacity(PENDING as usize + 1);
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    for i in 0..PENDING {
        q.insert(base + Duration::from_micros(rng.next() % 60_000_000), i);
    }
    q
}

/// The dominant pattern: a Timeout around a read that completes in time. The new deadline is
/// `now + 30 s`, later than most pending ones, and it is cancelled right away.
fn insert_cancel_churn(c: &mut Criterion) {
    let mut g = c.benchmark_group("timer/insert+cancel, 1M pending");
    let base = Instant::now();
    let mut q = full_queue(base);
    let mut now = base;
    g.bench_function("verdant TimerQueue", |b| {
        b.iter(|| {
            now += Duration::from_nanos(100);
            let k = q.insert(now + Duration::from_secs(30), 0);
            black_box(q.cancel(black_box(k)))
        })
    });
    assert_eq!(q.len(), PENDING as usize);
    drop(q);

    // Peer: BinaryHeap + tombstones. Cancel is a set insert; the dead entry stays in the heap
    // until it reaches the top, so with long timeouts the heap grows with churn. To keep
    // memory bounded, the heap is compacted whenever the tombstones outnumber the live
    // timers: that amortised cost is part of what is measured.
    let mut heap: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::with_capacity(PENDING as usize);
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    for i in 0..PENDING {
        heap.push(Reverse((
            base + Duration::from_micros(rng.next() % 60_000_000),
            i,
        )));
    }
    let mut cancelled: HashSet<u64> = HashSet::new();
    let mut seq = PENDING;
    let mut now = base;
    g.bench_function("BinaryHeap+tombstones", |b| {
        b.iter(|| {
            now += Duration::from_nanos(100);
            seq += 1;
            heap.push(Reverse((now + Duration::from_secs(30), seq)));
            cancelled.insert(black_box(seq));
            if cancelled.len() as u64 >= PENDING {
                heap.retain(|Reverse((_, s))| !cancelled.contains(s));
                cancelled.clear();
            }
        })
    });
    g.finish();
}

/// Cancelling a timer in the middle of the heap (random key), with 1M pending: the worst case
/// for an indexed heap's sift.
fn cancel_random_reinsert(c: &mut Criterion) {
    let mut g = c.benchmark_group("timer/cancel random + reinsert, 1M pending");
    let base = Instant::now();
    let mut q = TimerQueue::with_capacity(PENDING as usize + 1);
    let mut keys: Vec<TimerKey> = Vec::with_capacity(PENDING as usize);
    let mut rng = Rng(7);
    for i in 0..PENDING {
        keys.push(q.insert(base + Duration::from_micros(rng.next() % 60_000_000), i));
    }
    g.bench_function("verdant TimerQueue", |b| {
        b.iter(|| {
            let i = (rng.next() % PENDING) as usize;
            let v = q.cancel(keys[i]).unwrap();
            keys[i] = q.insert(base + Duration::from_micros(rng.next() % 60_000_000), v);
        })
    });
    g.finish();
}

/// Fill with 1M timers, then pop them all: the cost of timers that do fire.
fn insert_then_pop_all(c: &mut Criterion) {
    let mut g = c.benchmark_group("timer/insert 1M then pop all");
    g.sample_size(10);
    let base = Instant::now();
    let end = base + Duration::from_secs(120);
    g.bench_function("verdant TimerQueue", |b| {
        b.iter_batched(
            || (),
            |()| {
                let mut q = full_queue(base);
                let mut n = 0u64;
                while let Some(v) = q.pop_next_expired(end) {
                    n = n.wrapping_add(v);
                }
                black_box(n)
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("BinaryHeap", |b| {
        b.iter(|| {
            let mut heap = BinaryHeap::with_capacity(PENDING as usize);
            let mut rng = Rng(0x2545_F491_4F6C_DD1D);
            for i in 0..PENDING {
                heap.push(Reverse((
                    base + Duration::from_micros(rng.next() % 60_000_000),
                    i,
                )));
            }
            let mut n = 0u64;
            while let Some(Reverse((_, v))) = heap.pop() {
                n = n.wrapping_add(v);
            }
            black_box(n)
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    insert_cancel_churn,
    cancel_random_reinsert,
    insert_then_pop_all
);
criterion_main!(benches);
