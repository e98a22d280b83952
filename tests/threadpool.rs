//! Behaviour of the thread pool: results and panics come back to the waiting green thread,
//! the hub keeps running meanwhile, waits can be interrupted, the pool stays bounded and
//! shrinks when idle. No test here asserts on durations.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use verdant::{BlockingError, JoinError, ThreadPool, Timeout};

/// Polls `cond` (on this OS thread, with plain sleeps) for up to 10 s.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let give_up = Instant::now() + Duration::from_secs(10);
    while Instant::now() < give_up {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    cond()
}

#[test]
fn the_result_comes_back() {
    let h = verdant::spawn_blocking(|| String::from("from a worker thread"));
    assert_eq!(h.join().unwrap(), "from a worker thread");
}

#[test]
fn the_closure_runs_on_another_os_thread() {
    let here = std::thread::current().id();
    let there = verdant::spawn_blocking(|| std::thread::current().id())
        .join()
        .unwrap();
    assert_ne!(here, there);
}

#[test]
fn many_green_threads_wait_concurrently() {
    let handles: Vec<_> = (0..64u64)
        .map(|i| {
            verdant::spawn(move || {
                verdant::spawn_blocking(move || {
                    std::thread::sleep(Duration::from_millis(1));
                    i * 3
                })
                .join()
                .unwrap()
            })
        })
        .collect();
    let results: Vec<u64> = verdant::joinall(handles)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(results, (0..64).map(|i| i * 3).collect::<Vec<_>>());
}

#[test]
fn other_green_threads_run_while_one_waits() {
    let counter = Rc::new(Cell::new(0u64));
    let done = Rc::new(Cell::new(false));
    let (c, d) = (counter.clone(), done.clone());
    let spinner = verdant::spawn(move || {
        while !d.get() {
            c.set(c.get() + 1);
            verdant::yield_now();
        }
    });
    verdant::spawn_blocking(|| std::thread::sleep(Duration::from_millis(50)))
        .join()
        .unwrap();
    let seen = counter.get();
    done.set(true);
    spinner.join().unwrap();
    assert!(
        seen > 0,
        "the spinner never ran while the main green thread waited"
    );
}

#[test]
fn a_panic_comes_back_as_an_error_and_the_pool_keeps_working() {
    let pool = ThreadPool::new(1);
    let err = pool
        .spawn(|| -> u32 { panic!("worker boom") })
        .join()
        .unwrap_err();
    assert!(err.is_panic());
    assert!(err.to_string().contains("worker boom"), "{err}");
    // The only worker survived and serves the next job.
    assert_eq!(pool.apply(|| 7).unwrap(), 7);
    assert_eq!(pool.threads(), 1);
}

#[test]
fn a_timeout_interrupts_the_wait_and_the_late_result_is_dropped() {
    struct DropFlag(Arc<AtomicBool>);
    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let (release, wait) = mpsc::channel::<()>();
    let h = verdant::spawn_blocking(move || {
        let _ = wait.recv();
        DropFlag(flag)
    });
    let guard = Timeout::start(Duration::from_millis(10));
    assert!(matches!(h.join(), Err(BlockingError::TimedOut)));
    assert!(guard.expired());
    drop(guard);
    assert!(!dropped.load(Ordering::SeqCst));
    release.send(()).unwrap();
    assert!(
        eventually(|| dropped.load(Ordering::SeqCst)),
        "the abandoned result was never dropped"
    );
}

#[test]
fn join_timeout_gives_up_and_a_handle_can_be_joined_from_another_green_thread() {
    let (release, wait) = mpsc::channel::<u8>();
    let h = verdant::spawn_blocking(move || wait.recv().unwrap());
    let h2 = verdant::spawn_blocking(|| 2u8);
    assert!(matches!(
        h.join_timeout(Duration::from_millis(5)),
        Err(BlockingError::TimedOut)
    ));
    // h2 was spawned by the main green thread and is joined by another one.
    let joiner = verdant::spawn(move || h2.join().unwrap());
    assert_eq!(joiner.join().unwrap(), 2);
    release.send(1).unwrap();
}

#[test]
fn a_kill_stops_the_wait() {
    let (release, wait) = mpsc::channel::<()>();
    let waiter = verdant::spawn(move || verdant::spawn_blocking(move || wait.recv()).join());
    verdant::yield_now(); // let it start waiting
    waiter.kill();
    assert!(matches!(waiter.join(), Err(JoinError::Killed)));
    drop(release);
}

#[test]
fn the_pool_never_runs_more_than_max_threads() {
    let pool = ThreadPool::new(3);
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..24)
        .map(|_| {
            let (running, peak) = (running.clone(), peak.clone());
            pool.spawn(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
                running.fetch_sub(1, Ordering::SeqCst);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let peak = peak.load(Ordering::SeqCst);
    assert!((1..=3).contains(&peak), "peak concurrency {peak}");
    assert!(pool.threads() <= 3);
}

#[test]
fn workers_start_lazily_and_exit_when_idle() {
    // Long enough that the worker is still there when `apply` has returned, on a busy host
    // (20 ms once was not); `eventually` waits up to 10 s for it to go.
    let pool = ThreadPool::new(4).idle_timeout(Duration::from_millis(250));
    assert_eq!(pool.threads(), 0);
    assert_eq!(pool.apply(|| 1).unwrap(), 1);
    assert!(pool.threads() >= 1);
    assert!(
        eventually(|| pool.threads() == 0),
        "idle workers did not exit"
    );
    // And the pool starts a new one when work arrives again.
    assert_eq!(pool.apply(|| 2).unwrap(), 2);
}

#[test]
fn failing_to_start_a_thread_is_an_error_not_a_crash() {
    // No OS can map a stack of a quarter of the address space: the thread cannot be created.
    let pool = ThreadPool::new(2).stack_size(1 << (usize::BITS - 2));
    match pool.spawn(|| 1).join() {
        Err(BlockingError::Spawn(e)) => {
            let io: std::io::Error = BlockingError::Spawn(e).into();
            assert!(!io.to_string().is_empty());
        }
        other => panic!("expected a spawn error, got {other:?}"),
    }
    // The pool is still usable once threads can be created.
    let pool = pool.stack_size(256 * 1024);
    assert_eq!(pool.apply(|| 3).unwrap(), 3);
}

#[test]
fn waits_in_green_threads_on_several_os_threads() {
    let os_threads: Vec<_> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                let hs: Vec<_> = (0..8u64)
                    .map(|i| {
                        verdant::spawn(move || {
                            verdant::spawn_blocking(move || t * 100 + i).join().unwrap()
                        })
                    })
                    .collect();
                verdant::joinall(hs)
                    .into_iter()
                    .map(Result::unwrap)
                    .sum::<u64>()
            })
        })
        .collect();
    let sums: Vec<u64> = os_threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(sums, (0..4u64).map(|t| t * 800 + 28).collect::<Vec<_>>());
}

#[test]
fn resolve_localhost_gives_a_loopback_address() {
    let addrs = verdant::threadpool::resolve(("localhost", 80)).unwrap();
    assert!(!addrs.is_empty());
    assert!(
        addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 80),
        "{addrs:?}"
    );
}

#[test]
fn resolve_reports_a_bad_address_as_an_error() {
    assert!(verdant::threadpool::resolve("no port here").is_err());
}

#[test]
fn files_round_trip_through_the_pool() {
    let path = std::env::temp_dir().join(format!("verdant-threadpool-test-{}", std::process::id()));
    verdant::threadpool::write_file(&path, b"green".to_vec()).unwrap();
    assert_eq!(verdant::threadpool::read_file(&path).unwrap(), b"green");
    std::fs::remove_file(&path).unwrap();
    let missing = verdant::threadpool::read_file(&path).unwrap_err();
    assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
}
