//! A yield loop to profile: two green threads hand control to each other through the hub
//! N times (default 1,000,000), and the program prints the wall time per hand-off.
//!
//! Made for instruction counts, which stay exact when wall-clock figures are noisy (no
//! hardware counters in a VM). Run it twice and subtract, so that setup cancels out:
//!
//! ```text
//! cargo build --release --example yield_handoffs
//! valgrind --tool=callgrind --callgrind-out-file=cg.1 target/release/examples/yield_handoffs 100000
//! valgrind --tool=callgrind --callgrind-out-file=cg.2 target/release/examples/yield_handoffs 200000
//! # instructions per hand-off = (Ir of cg.2 - Ir of cg.1) / 100000
//! callgrind_annotate --inclusive=no cg.2 | head -40
//! ```

use std::time::Instant;

fn main() {
    let handoffs: u64 = std::env::args()
        .nth(1)
        .map(|n| {
            n.replace('_', "")
                .parse()
                .expect("usage: yield_handoffs [N]")
        })
        .unwrap_or(1_000_000);
    // Each of the two green threads yields N/2 times: N hand-offs in all.
    let per_thread = handoffs / 2;
    let spin = move || {
        for _ in 0..per_thread {
            verdant::yield_now();
        }
    };
    let a = verdant::spawn(spin);
    let b = verdant::spawn(spin);
    let start = Instant::now();
    a.join().unwrap();
    b.join().unwrap();
    let elapsed = start.elapsed();
    println!(
        "{} hand-offs in {elapsed:.2?}: {:.1} ns each",
        per_thread * 2,
        elapsed.as_nanos() as f64 / (per_thread * 2).max(1) as f64
    );
}
