//! Two "visits" of slow pages, 200 ms and 300 ms (a scaled-down 2 s and 3 s), in two green
//! threads: together they take about as long as the slower one, not the sum.
//!
//! ```sh
//! cargo run --release --example two_visits
//! ```

use std::time::{Duration, Instant};

fn visit(page: &'static str, delay: Duration, start: Instant) -> &'static str {
    println!("  visiting {page} ({} ms)", delay.as_millis());
    verdant::sleep(delay).expect("no timeout is set");
    println!("  {page} answered at {} ms", start.elapsed().as_millis());
    page
}

fn main() {
    let start = Instant::now();
    let first = verdant::spawn(move || visit("first page", Duration::from_millis(200), start));
    let second = verdant::spawn(move || visit("second page", Duration::from_millis(300), start));
    let pages: Vec<&str> = verdant::joinall([first, second])
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let elapsed = start.elapsed();
    println!(
        "visited {} in {} ms (sum of the delays: 500 ms, longest: 300 ms)",
        pages.join(" and "),
        elapsed.as_millis()
    );
}
