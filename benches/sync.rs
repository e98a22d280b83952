//! Queue and Channel hop cost: ping-pong between two green threads on one hub.
//!
//! One iteration is a round trip, two hops: the main green thread puts into `ping` and
//! blocks in `pong.get()`; the echo green thread takes the item and puts it into `pong`.
//! Each hop is a hand-off plus a switch through the hub. Per hop = the reported time / 2.
//!
//! In the same group: the hub's floor (two green threads ping-ponging with `yield_now`,
//! the same two switches with no queue), and as peer the same round trip between two OS
//! threads over `std::sync::mpsc` (what a thread-per-task design pays), so each report
//! reads as a ratio.
//!
//! Run: `cargo bench --bench sync`.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::sync::mpsc;
use verdant::{Channel, Queue};

fn queue_round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("sync/round trip (2 hops), two green threads on one hub");

    let (ping, pong) = (Queue::<u64>::new(), Queue::<u64>::new());
    let echo = {
        let (ping, pong) = (ping.clone(), pong.clone());
        verdant::spawn(move || {
            while let Ok(n) = ping.get() {
                pong.put(n + 1).unwrap();
            }
        })
    };
    g.bench_function("verdant Queue (unbounded)", |b| {
        let mut n = 0u64;
        b.iter(|| {
            ping.put(black_box(n)).unwrap();
            n = pong.get().unwrap();
        })
    });
    ping.close();
    echo.join().unwrap();

    let (ping, pong) = (Channel::<u64>::new(), Channel::<u64>::new());
    let echo = {
        let (ping, pong) = (ping.clone(), pong.clone());
        verdant::spawn(move || {
            while let Ok(n) = ping.get() {
                pong.put(n + 1).unwrap();
            }
        })
    };
    g.bench_function("verdant Channel (rendezvous)", |b| {
        let mut n = 0u64;
        b.iter(|| {
            ping.put(black_box(n)).unwrap();
            n = pong.get().unwrap();
        })
    });
    ping.close();
    echo.join().unwrap();

    // The floor: the same two hops with no queue, just yield_now between two green threads
    // (each hop is a switch to the hub and on to the other green thread).
    let stop = std::rc::Rc::new(std::cell::Cell::new(false));
    let yielder = {
        let stop = stop.clone();
        verdant::spawn(move || {
            while !stop.get() {
                verdant::yield_now();
            }
        })
    };
    g.bench_function("verdant yield_now ping-pong (hub floor)", |b| {
        b.iter(verdant::yield_now)
    });
    stop.set(true);
    yielder.join().unwrap();

    let (ping_tx, ping_rx) = mpsc::channel::<u64>();
    let (pong_tx, pong_rx) = mpsc::channel::<u64>();
    let echo = std::thread::spawn(move || {
        while let Ok(n) = ping_rx.recv() {
            if pong_tx.send(n + 1).is_err() {
                break;
            }
        }
    });
    g.bench_function("std mpsc, two OS threads (peer)", |b| {
        let mut n = 0u64;
        b.iter(|| {
            ping_tx.send(black_box(n)).unwrap();
            n = pong_rx.recv().unwrap();
        })
    });
    drop(ping_tx);
    echo.join().unwrap();
    g.finish();
}

criterion_group!(benches, queue_round_trip);
criterion_main!(benches);
