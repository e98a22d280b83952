//! Switch cost of verdant beside its peers, measured in one run.
//!
//! Group `switch`: one iteration is a **round trip** (resume + suspend, or a token handed to
//! another OS thread and back), which is **two switches**. The group declares
//! `Throughput::Elements(2)`, so criterion's `thrpt` line reads in switches per second and
//! the time per switch is half the reported iteration time.
//!
//! * `verdant_coroutine`: `verdant::coroutine::Coroutine::resume` / `Yielder::suspend`.
//! * `verdant_greenlet`: `Greenlet::switch` from the main greenlet into a greenlet that
//!   switches straight back. The value is `()`, which boxes into a [`Value`] without
//!   allocating (zero-sized); any other value costs one `Box` per switch on top.
//! * `corosensei`: `corosensei::Coroutine::resume` / `Yielder::suspend`, the yardstick.
//! * `os_thread_futex`: two OS threads handing a token back and forth through a raw futex
//!   (`benches/support/os_thread.rs`): every hop blocks and wakes a thread.
//!
//! Group `spawn_run_finish`: create a coroutine, resume it to completion, drop it.
//!
//! * `verdant_coroutine_pooled`: `Coroutine::new` takes a stack from the thread's pool (no
//!   `mmap` after the first iteration) and boxes the closure.
//! * `verdant_greenlet_pooled`: `Greenlet::new` + a switch into it; its body returns to
//!   the main greenlet (its parent) and the handle is dropped.
//! * `corosensei_reused_stack`: `Coroutine::with_stack` on one `DefaultStack`, taken back
//!   with `into_stack` every time.
//! * `corosensei_fresh_stack`: `Coroutine::new`, which maps a fresh 1 MiB stack each time.
//!
//! Compare within one run: absolute figures drift between runs on a shared machine, the
//! ratios hold.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use verdant::coroutine::{Coroutine, CoroutineResult};
use verdant::greenlet::{Greenlet, Value};

#[path = "support/os_thread.rs"]
mod os_thread;

fn switch(c: &mut Criterion) {
    let mut group = c.benchmark_group("switch");
    group.throughput(Throughput::Elements(2));

    group.bench_function("verdant_coroutine", |b| {
        let mut co: Coroutine<u64, u64, ()> = Coroutine::new(|y, mut x: u64| loop {
            x = y.suspend(x.wrapping_add(1));
        });
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            match co.resume(black_box(i)) {
                CoroutineResult::Yield(v) => v,
                CoroutineResult::Return(()) => unreachable!(),
            }
        });
    });

    group.bench_function("verdant_greenlet", |b| {
        let main = Greenlet::current();
        let echo = Greenlet::new(move |_| loop {
            main.switch(());
        });
        b.iter(|| echo.switch(()));
    });

    group.bench_function("corosensei", |b| {
        let mut co =
            corosensei::Coroutine::new(|y: &corosensei::Yielder<u64, u64>, mut x: u64| loop {
                x = y.suspend(x.wrapping_add(1));
            });
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            match co.resume(black_box(i)) {
                corosensei::CoroutineResult::Yield(v) => v,
                corosensei::CoroutineResult::Return(()) => unreachable!(),
            }
        });
    });

    group.bench_function("os_thread_futex", |b| {
        let mut pair = os_thread::PingPong::new();
        b.iter(|| pair.round_trip());
    });

    group.finish();
}

fn spawn_run_finish(c: &mut Criterion) {
    let mut group = c.benchmark_group("spawn_run_finish");

    group.bench_function("verdant_coroutine_pooled", |b| {
        b.iter(|| {
            let mut co: Coroutine<u64, (), u64> = Coroutine::new(|_, x| x + 1);
            let r = co.resume(black_box(41));
            drop(co);
            r
        });
    });

    group.bench_function("verdant_greenlet_pooled", |b| {
        b.iter(|| {
            let g = Greenlet::new(|v: Value| v);
            g.switch(())
        });
    });

    group.bench_function("corosensei_reused_stack", |b| {
        let mut stack = Some(corosensei::stack::DefaultStack::default());
        b.iter(|| {
            let mut co = corosensei::Coroutine::with_stack(
                stack.take().expect("stack returned"),
                |_: &corosensei::Yielder<u64, ()>, x: u64| x + 1,
            );
            let r = co.resume(black_box(41));
            stack = Some(co.into_stack());
            r
        });
    });

    group.bench_function("corosensei_fresh_stack", |b| {
        b.iter(|| {
            let mut co =
                corosensei::Coroutine::new(|_: &corosensei::Yielder<u64, ()>, x: u64| x + 1);
            co.resume(black_box(41))
        });
    });

    group.finish();
}

criterion_group!(benches, switch, spawn_run_finish);
criterion_main!(benches);
