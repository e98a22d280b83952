//! Two workers that each wait a while, in two green threads. With `std::thread::sleep` the
//! wait blocks the whole OS thread, hub included, so the workers run one after the other and
//! the total is the *sum* of the delays. With `verdant::sleep` only the green thread waits,
//! so the total is about the *longest* delay.
//!
//! ```sh
//! cargo run --release --example blocking_vs_cooperative
//! ```

use std::time::{Duration, Instant};

const DELAYS_MS: [u64; 2] = [200, 300];

fn run(label: &'static str, wait: fn(Duration)) -> Duration {
    let start = Instant::now();
    let workers: Vec<_> = DELAYS_MS
        .iter()
        .enumerate()
        .map(|(i, &ms)| {
            verdant::spawn(move || {
                wait(Duration::from_millis(ms));
                println!(
                    "  {label}: worker {i} ({ms} ms) done at {} ms",
                    start.elapsed().as_millis()
                );
            })
        })
        .collect();
    for result in verdant::joinall(workers) {
        result.unwrap();
    }
    start.elapsed()
}

fn main() {
    let blocking = run("std::thread::sleep", std::thread::sleep);
    let cooperative = run("verdant::sleep", |d| {
        verdant::sleep(d).expect("no timeout is set")
    });
    let sum: u64 = DELAYS_MS.iter().sum();
    let longest = DELAYS_MS.iter().max().copied().unwrap_or(0);
    println!(
        "std::thread::sleep: {:>4} ms  (blocks the hub: about the sum, {sum} ms)",
        blocking.as_millis()
    );
    println!(
        "verdant::sleep:     {:>4} ms  (blocks only the green thread: about the longest, {longest} ms)",
        cooperative.as_millis()
    );
}
