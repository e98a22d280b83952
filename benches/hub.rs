//! Hub benchmarks: what the scheduler costs on top of a context switch.
//!
//! Targets from the hub issue, and the peers measured on this project's machines
//! (`ANCHORS.md`; absolute figures drift between days, the ratios hold):
//!
//! | group | verdant target | peers |
//! |---|---|---|
//! | `hub/yield hand-off` | ≤ 10 ns per hand-off | may 22.6 ns · Go `Gosched` 42.3 ns |
//! | `hub/spawn+run+join` | ≤ 50 ns (pooled stack) | Go 570 ns · greenlet 2,014 · may 2,069 · gevent 7,805 · OS thread 7,217 |
//! | `hub/timer churn` | (no target) | raw `TimerQueue` insert+cancel: `benches/timer.rs` |
//!
//! A *hand-off* is one green thread calling [`verdant::yield_now`] until the next one runs:
//! green thread → hub → green thread, two switches plus the hub's bookkeeping. Each group
//! runs an in-process peer beside verdant so every report is a ratio:
//!
//! * hand-off: two corosensei coroutines driven round-robin by a six-line scheduler (the
//!   floor: the same two switches with no hub), and a plain greenlet round trip (two verdant
//!   switches, no hub), which separates the greenlet layer's cost from the hub's;
//! * spawn: corosensei on a reused stack, and `std::thread::spawn` + `join`;
//! * timers: `Instant::now()`, the clock read every `Timeout::start` pays.
//!
//! Run: `cargo bench --bench hub`. The figures criterion prints for the hand-off group are
//! per hand-off (each measured iteration is one).

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult, Yielder};
use criterion::{criterion_group, criterion_main, Criterion};
use verdant::greenlet::Greenlet;
use verdant::{Builder, Timeout};

/// Two green threads on one hub, both looping on `yield_now()`.
fn yield_handoff(c: &mut Criterion) {
    let mut g = c.benchmark_group("hub/yield hand-off");
    g.bench_function("verdant yield_now, 2 green threads", |b| {
        b.iter_custom(|iters| {
            // Each yields `iters` times: 2 * iters hand-offs in all.
            let spin = move || {
                for _ in 0..iters {
                    verdant::yield_now();
                }
            };
            let x = verdant::spawn(spin);
            let y = verdant::spawn(spin);
            let start = Instant::now();
            x.join().unwrap();
            y.join().unwrap();
            start.elapsed() / 2
        })
    });
    g.bench_function("peer: corosensei, 2 coroutines round-robin", |b| {
        b.iter_custom(|iters| {
            let make = || {
                Coroutine::new(move |y: &Yielder<(), ()>, ()| {
                    for _ in 0..iters {
                        y.suspend(());
                    }
                })
            };
            let mut queue: VecDeque<Coroutine<(), (), ()>> = VecDeque::from([make(), make()]);
            let start = Instant::now();
            while let Some(mut co) = queue.pop_front() {
                if let CoroutineResult::Yield(()) = co.resume(()) {
                    queue.push_back(co);
                }
            }
            start.elapsed() / 2
        })
    });
    g.bench_function("peer: verdant greenlet round trip, no hub", |b| {
        let main = Greenlet::current();
        let echo = Greenlet::new(move |_| loop {
            main.switch(());
        });
        b.iter(|| echo.switch(()));
    });
    g.finish();
}

/// Spawn a trivial green thread, let it run, join it.
fn spawn_run_join(c: &mut Criterion) {
    let mut g = c.benchmark_group("hub/spawn+run+join");
    g.bench_function("verdant, default stack (pooled)", |b| {
        verdant::spawn(|| ()).join().unwrap();
        b.iter(|| verdant::spawn(|| black_box(1u32)).join().unwrap())
    });
    g.bench_function("verdant, 16 KiB stack (pooled)", |b| {
        let small = || Builder::new().stack_size(16 * 1024);
        b.iter(|| small().spawn(|| black_box(1u32)).unwrap().join().unwrap())
    });
    g.bench_function("verdant, 100 spawned then joined (per green thread)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters.div_ceil(100) {
                let start = Instant::now();
                let hs: Vec<_> = (0..100u32)
                    .map(|i| verdant::spawn(move || black_box(i)))
                    .collect();
                for h in hs {
                    black_box(h.join().unwrap());
                }
                total += start.elapsed();
            }
            total * iters as u32 / (iters.div_ceil(100) * 100) as u32
        })
    });
    g.bench_function("peer: corosensei, reused stack", |b| {
        let mut stack = Some(DefaultStack::new(256 * 1024).unwrap());
        b.iter(|| {
            let mut co = Coroutine::with_stack(stack.take().unwrap(), |_: &Yielder<(), ()>, ()| {
                black_box(1u32)
            });
            let r = co.resume(());
            stack = Some(co.into_stack());
            r
        })
    });
    g.bench_function("peer: std::thread spawn+join", |b| {
        b.iter(|| std::thread::spawn(|| black_box(1u32)).join().unwrap())
    });
    g.finish();
}

/// A `Timeout` around a call that does not block: one timer insert and one cancel.
fn timer_churn(c: &mut Criterion) {
    let mut g = c.benchmark_group("hub/timer churn");
    let guarded = || {
        let t = Timeout::start(Duration::from_secs(30));
        black_box(t.expired());
        drop(t)
    };
    g.bench_function("Timeout::start + drop, no other timer", |b| b.iter(guarded));
    g.bench_function("sleep(0), alone on the hub, no timer", |b| {
        b.iter(|| verdant::sleep(Duration::ZERO))
    });
    // 10,000 green threads asleep for an hour keep 10,000 deadlines in the queue.
    let sleepers: Vec<_> = (0..10_000)
        .map(|_| {
            Builder::new()
                .stack_size(16 * 1024)
                .spawn(|| verdant::sleep(Duration::from_secs(3600)))
                .unwrap()
        })
        .collect();
    verdant::yield_now();
    g.bench_function("Timeout::start + drop, 10,000 timers pending", |b| {
        b.iter(guarded)
    });
    g.bench_function("sleep(0), alone on the hub, 10,000 timers pending", |b| {
        b.iter(|| verdant::sleep(Duration::ZERO))
    });
    g.bench_function("peer: Instant::now()", |b| b.iter(Instant::now));
    g.finish();
    for h in &sleepers {
        h.kill();
    }
    for h in sleepers {
        assert!(h.join().unwrap_err().is_killed());
    }
}

criterion_group!(benches, yield_handoff, spawn_run_join, timer_churn);
criterion_main!(benches);
