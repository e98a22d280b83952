//! Three "API calls" at once, then their average: each call is a green thread that waits a
//! random-ish short time and returns a number. Written with callbacks, collecting the three
//! answers before averaging needs shared counters; with green threads it is `joinall` and a
//! sum.
//!
//! ```sh
//! cargo run --release --example api_calls_average
//! ```

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A small xorshift generator seeded from the clock: different delays on every run.
struct Jitter(u64);

impl Jitter {
    fn new() -> Jitter {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        Jitter(nanos | 1)
    }

    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// A pretend remote call: answers `value` after `delay`.
fn api_call(endpoint: &'static str, delay: Duration, value: f64, start: Instant) -> f64 {
    verdant::sleep(delay).expect("no timeout is set");
    println!(
        "  {endpoint:<12} answered {value:>6.1} after {:>3} ms (at {:>3} ms)",
        delay.as_millis(),
        start.elapsed().as_millis()
    );
    value
}

fn main() {
    let mut jitter = Jitter::new();
    let start = Instant::now();
    let calls: Vec<_> = ["/temperature", "/humidity", "/pressure"]
        .into_iter()
        .map(|endpoint| {
            let delay = Duration::from_millis(50 + jitter.next(150));
            let value = jitter.next(1000) as f64 / 10.0;
            verdant::spawn(move || api_call(endpoint, delay, value, start))
        })
        .collect();
    let answers: Vec<f64> = verdant::joinall(calls)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let average = answers.iter().sum::<f64>() / answers.len() as f64;
    println!("answers: {answers:?}");
    println!(
        "average: {average:.2} (all three calls took {} ms together)",
        start.elapsed().as_millis()
    );
}
