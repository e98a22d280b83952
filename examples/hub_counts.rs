//! Loops to profile with callgrind, for instruction counts that stay exact when wall-clock
//! figures are noisy: `channel` (ping-pong hops between two green threads over two
//! `Channel`s), `queue` (the same over two unbounded `Queue`s), `event` (the same over two
//! `Event`s: each green thread waits for its own, then sets and clears the other's; a hop is
//! a wake-up through a `WaitQueue` and a park), `semaphore` (the same over two
//! `Semaphore`s without permits: each green thread acquires from its own, then releases
//! the other's, handing its permit over) and `spawn` (spawn + run + join of a trivial
//! green thread on a pooled stack; an optional third argument is the stack size in bytes,
//! default `DEFAULT_STACK_SIZE`). Run it twice and subtract, so that setup cancels out:
//!
//! ```text
//! cargo build --release --example hub_counts
//! valgrind --tool=callgrind --callgrind-out-file=cg.1 target/release/examples/hub_counts channel 100000
//! valgrind --tool=callgrind --callgrind-out-file=cg.2 target/release/examples/hub_counts channel 200000
//! # instructions per hop = (Ir of cg.2 - Ir of cg.1) / 100000
//! ```

use std::cell::Cell;
use std::hint::black_box;
use std::rc::Rc;
use std::time::Instant;
use verdant::{Builder, Channel, Event, Queue, Semaphore};

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "channel".into());
    let n: u64 = args
        .next()
        .map(|n| {
            n.replace('_', "")
                .parse()
                .expect("usage: hub_counts MODE [N]")
        })
        .unwrap_or(1_000_000);
    let stack_size: Option<usize> = args.next().map(|s| {
        s.replace('_', "")
            .parse()
            .expect("usage: hub_counts spawn N [STACK_BYTES]")
    });
    let start = Instant::now();
    match mode.as_str() {
        "channel" => channel_hops(n),
        "queue" => queue_hops(n),
        "event" => event_hops(n),
        "semaphore" => semaphore_hops(n),
        "spawn" => spawn_joins(n, stack_size),
        other => panic!("unknown mode {other:?}: channel, queue, event, semaphore or spawn"),
    }
    let elapsed = start.elapsed();
    println!(
        "{mode}: {n} in {elapsed:.2?}: {:.1} ns each",
        elapsed.as_nanos() as f64 / n.max(1) as f64
    );
}

// Each mode is a function of its own, out of line, so that what one inlines (a park, for
// the return predictor) does not change how another's loop is compiled, and its count
// stays comparable from build to build.

/// Defines `$name(n)`: N hops over two `$kind`s (N/2 round trips), with an echo green thread
/// that adds one. `Channel` and `Queue` have the same methods but no trait in common.
macro_rules! ping_pong_hops {
    ($name:ident, $kind:ident) => {
        #[inline(never)]
        fn $name(n: u64) {
            let (ping, pong) = ($kind::<u64>::new(), $kind::<u64>::new());
            let echo = {
                let (ping, pong) = (ping.clone(), pong.clone());
                verdant::spawn(move || {
                    while let Ok(v) = ping.get() {
                        pong.put(v + 1).unwrap();
                    }
                })
            };
            let mut v = 0;
            for _ in 0..n / 2 {
                ping.put(black_box(v)).unwrap();
                v = pong.get().unwrap();
            }
            ping.close();
            echo.join().unwrap();
        }
    };
}

ping_pong_hops!(channel_hops, Channel);
// Unbounded queues.
ping_pong_hops!(queue_hops, Queue);

/// N spawn + run + join cycles of a trivial green thread, with `stack_size` bytes of stack
/// (the default if `None`).
#[inline(never)]
fn spawn_joins(n: u64, stack_size: Option<usize>) {
    match stack_size {
        None => {
            for _ in 0..n {
                black_box(verdant::spawn(|| black_box(1u32)).join().unwrap());
            }
        }
        Some(size) => {
            for _ in 0..n {
                let handle = Builder::new()
                    .stack_size(size)
                    .spawn(|| black_box(1u32))
                    .expect("spawn");
                black_box(handle.join().unwrap());
            }
        }
    }
}

/// N hops over two `Event`s: N/2 round trips.
#[inline(never)]
fn event_hops(n: u64) {
    let (ping, pong) = (Rc::new(Event::new()), Rc::new(Event::new()));
    let done = Rc::new(Cell::new(false));
    let echo = {
        let (ping, pong, done) = (ping.clone(), pong.clone(), done.clone());
        verdant::spawn(move || {
            while ping.wait().is_ok() && !done.get() {
                pong.set();
                pong.clear();
            }
        })
    };
    // Let the echo wait first, so that every hop below wakes a waiter.
    verdant::yield_now();
    for _ in 0..n / 2 {
        ping.set();
        ping.clear();
        black_box(pong.wait()).unwrap();
    }
    done.set(true);
    ping.set();
    echo.join().unwrap();
}

/// N hops over two `Semaphore`s: N/2 round trips.
#[inline(never)]
fn semaphore_hops(n: u64) {
    let (ping, pong) = (Rc::new(Semaphore::new(0)), Rc::new(Semaphore::new(0)));
    let done = Rc::new(Cell::new(false));
    let echo = {
        let (ping, pong, done) = (ping.clone(), pong.clone(), done.clone());
        verdant::spawn(move || {
            while let Ok(permit) = ping.acquire() {
                permit.forget();
                if done.get() {
                    break;
                }
                pong.release();
            }
        })
    };
    // Let the echo wait first, so that every hop below hands a permit to a waiter.
    verdant::yield_now();
    for _ in 0..n / 2 {
        ping.release();
        pong.acquire().unwrap().forget();
    }
    done.set(true);
    ping.release();
    echo.join().unwrap();
}
