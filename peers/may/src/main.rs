//! may's side of `scripts/bench-peers`: the same loops as verdant's `yield_handoffs` and
//! `hub_counts` examples, on one may worker (may's equivalent of verdant's one hub per OS
//! thread), printing `... X ns each` like them.
//!
//! ```text
//! peer-may yield N     # N hand-offs between two coroutines calling yield_now
//! peer-may channel N   # N ping-pong hops over two may::sync::mpsc channels
//! peer-may spawn N     # N spawn + run + join of a trivial coroutine, from a coroutine
//! ```

use std::hint::black_box;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "yield".into());
    let n: u64 = args
        .next()
        .map(|n| {
            n.replace('_', "")
                .parse()
                .expect("usage: peer-may MODE [N]")
        })
        .unwrap_or(1_000_000);
    may::config().set_workers(1);
    // SAFETY (all `may::coroutine::spawn` calls): may requires that a coroutine does not use
    // thread-local storage or block its OS thread; these closures only call may's own
    // yield, channel and spawn functions.
    let (mode, elapsed) = unsafe {
        may::coroutine::spawn(move || {
            let elapsed = run(&mode, n);
            (mode, elapsed)
        })
        .join()
        .expect("the measuring coroutine panicked")
    };
    println!(
        "{mode}: {n} in {elapsed:.2?}: {:.1} ns each",
        elapsed.as_nanos() as f64 / n.max(1) as f64
    );
}

fn run(mode: &str, n: u64) -> std::time::Duration {
    let start = Instant::now();
    match mode {
        // N hand-offs: each of the two coroutines yields N/2 times.
        "yield" => {
            let spin = move || {
                for _ in 0..n / 2 {
                    may::coroutine::yield_now();
                }
            };
            // SAFETY: see main.
            let (a, b) = unsafe { (may::coroutine::spawn(spin), may::coroutine::spawn(spin)) };
            a.join().unwrap();
            b.join().unwrap();
        }
        // N hops: N/2 round trips, between this coroutine and an echoing one.
        "channel" => {
            let (ping_tx, ping_rx) = may::sync::mpsc::channel::<u64>();
            let (pong_tx, pong_rx) = may::sync::mpsc::channel::<u64>();
            // SAFETY: see main.
            let echo = unsafe {
                may::coroutine::spawn(move || {
                    while let Ok(v) = ping_rx.recv() {
                        pong_tx.send(v + 1).unwrap();
                    }
                })
            };
            let mut v = 0;
            for _ in 0..n / 2 {
                ping_tx.send(black_box(v)).unwrap();
                v = pong_rx.recv().unwrap();
            }
            drop(ping_tx);
            echo.join().unwrap();
        }
        "spawn" => {
            for _ in 0..n {
                // SAFETY: see main.
                let h = unsafe { may::coroutine::spawn(|| black_box(1u32)) };
                black_box(h.join().unwrap());
            }
        }
        other => panic!("unknown mode {other:?}: yield, channel or spawn"),
    }
    start.elapsed()
}
