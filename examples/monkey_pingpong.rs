//! The monkey shim's waiting path, measured without a network client: two green threads
//! of one OS thread bounce one byte `N` times over a Unix socketpair, so every read waits
//! on the hub. `std` uses `std::os::unix::net::UnixStream` after
//! `verdant::monkey::patch_all()`, `verdant` the same loop on `verdant::net::UnixStream`.
//! Nothing depends on timing, so callgrind counts the same instructions on every run: the
//! measure behind "Cost when patched" in `src/monkey/mod.rs` (the wrk-driven
//! `scripts/bench-monkey-http` is the end-to-end check).
//!
//! ```text
//! cargo build --release --features monkey --example monkey_pingpong
//! B=target/release/examples/monkey_pingpong
//! for mode in std verdant; do for n in 10000 20000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null $B $mode $n 2>&1 | grep Collected
//! done; done
//! # instructions per round trip = (Collected(20000) - Collected(10000)) / 10000
//! ```

use std::io::{Read, Write};

/// `rounds` round trips between `a` (this green thread) and `b` (a spawned one).
fn bounce<S: Read + Write + 'static>(mut a: S, mut b: S, rounds: usize) {
    let echo = verdant::spawn(move || {
        let mut buf = [0u8; 1];
        for _ in 0..rounds {
            b.read_exact(&mut buf).expect("echo read");
            b.write_all(&buf).expect("echo write");
        }
    });
    let mut buf = [0u8; 1];
    for _ in 0..rounds {
        a.write_all(&buf).expect("write");
        a.read_exact(&mut buf).expect("read");
    }
    echo.join().expect("the echo green thread");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds = args.get(2).map_or(100_000, |n| {
        n.parse()
            .expect("usage: monkey_pingpong std|verdant [ROUNDS]")
    });
    match args.get(1).map(String::as_str) {
        Some("std") => {
            verdant::monkey::patch_all();
            let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
            bounce(a, b, rounds);
        }
        Some("verdant") => {
            let (a, b) = verdant::net::UnixStream::pair().expect("socketpair");
            bounce(a, b, rounds);
        }
        _ => {
            eprintln!("usage: monkey_pingpong std|verdant [ROUNDS]");
            std::process::exit(2);
        }
    }
    println!("{rounds} round trips");
}
