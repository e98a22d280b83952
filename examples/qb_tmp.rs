use std::time::Instant;
use verdant::coroutine::{Coroutine, CoroutineResult};
fn main() {
    let n = 20_000_000u64;
    let mut co: Coroutine<u64, u64, ()> = Coroutine::new(|y, mut x| loop { x = y.suspend(x + 1); });
    let t = Instant::now();
    let mut acc = 0;
    for i in 0..n { if let CoroutineResult::Yield(v) = co.resume(i) { acc += v; } }
    let ns = t.elapsed().as_nanos() as f64 / (2.0 * n as f64);
    println!("verdant {ns:.2} ns/switch {acc}");
    let mut c = corosensei::Coroutine::new(|y: &corosensei::Yielder<u64, u64>, mut x: u64| loop { x = y.suspend(x + 1); });
    let t = Instant::now();
    let mut acc = 0;
    for i in 0..n { if let corosensei::CoroutineResult::Yield(v) = c.resume(i) { acc += v; } }
    let ns = t.elapsed().as_nanos() as f64 / (2.0 * n as f64);
    println!("corosensei {ns:.2} ns/switch {acc}");
}
