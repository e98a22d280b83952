//! Tasks pulling work from a queue: first one worker does every job, one after another;
//! then four green threads pull from the same queue cooperatively. Each job "works" by
//! sleeping (a stand-in for waiting on the network), so the cooperative run takes about
//! a quarter of the time.
//!
//! ```sh
//! cargo run --release --example queue_workers
//! ```

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

const JOBS: u64 = 12;
const WORKERS: usize = 4;

/// The work queue shared by the green threads of this OS thread.
type WorkQueue = Rc<RefCell<VecDeque<u64>>>;

fn fill_queue() -> WorkQueue {
    Rc::new(RefCell::new((1..=JOBS).collect()))
}

/// A job that waits 20–60 ms, depending on its number.
fn job_delay(job: u64) -> Duration {
    Duration::from_millis(20 + (job * 37) % 41)
}

/// Pulls jobs until the queue is empty; returns how many it did.
fn worker(name: String, queue: WorkQueue, start: Instant) -> usize {
    let mut done = 0;
    loop {
        // The borrow ends before the sleep: other workers use the queue meanwhile.
        let next = queue.borrow_mut().pop_front();
        let Some(job) = next else { return done };
        verdant::sleep(job_delay(job)).expect("no timeout is set");
        done += 1;
        println!(
            "  {name}: job {job:>2} done at {:>4} ms",
            start.elapsed().as_millis()
        );
    }
}

fn main() {
    let total: Duration = (1..=JOBS).map(job_delay).sum();
    println!("{JOBS} jobs, {} ms of waiting in total", total.as_millis());

    println!("sequential: one worker");
    let start = Instant::now();
    let done = worker("worker 0".into(), fill_queue(), start);
    let sequential = start.elapsed();
    println!("sequential: {done} jobs in {} ms", sequential.as_millis());

    println!("cooperative: {WORKERS} green threads share the queue");
    let queue = fill_queue();
    let start = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|i| {
            let queue = queue.clone();
            verdant::spawn(move || worker(format!("worker {i}"), queue, start))
        })
        .collect();
    let done: usize = verdant::joinall(workers)
        .into_iter()
        .map(Result::unwrap)
        .sum();
    let cooperative = start.elapsed();
    println!("cooperative: {done} jobs in {} ms", cooperative.as_millis());
    println!(
        "speed-up: {:.1}x with {WORKERS} green threads on one OS thread",
        sequential.as_secs_f64() / cooperative.as_secs_f64()
    );
}
