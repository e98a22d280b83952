//! Behaviour of `Pool` and `Group`. No test measures time: they check order, counts and
//! results.

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::time::Duration;
use verdant::{Group, Pool};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn a_pool_never_runs_more_than_its_size() {
    let pool = Pool::new(3);
    let running = Rc::new(Cell::new(0));
    let peak = Rc::new(Cell::new(0));
    let handles: Vec<_> = (0..20u64)
        .map(|i| {
            let (running, peak) = (running.clone(), peak.clone());
            pool.spawn(move || {
                running.set(running.get() + 1);
                peak.set(peak.get().max(running.get()));
                verdant::sleep(ms(i % 3)).unwrap();
                verdant::yield_now();
                running.set(running.get() - 1);
                i
            })
        })
        .collect();
    assert!(pool.len() <= 3);
    let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(sum, (0..20).sum());
    assert_eq!(peak.get(), 3);
    pool.join().unwrap();
    assert_eq!(pool.len(), 0);
    assert_eq!(pool.free_count(), 3);
}

#[test]
fn spawn_blocks_while_the_pool_is_full() {
    let pool = Pool::new(1);
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    pool.spawn(move || {
        verdant::sleep(ms(2)).unwrap();
        l.borrow_mut().push("first done");
    });
    assert_eq!(pool.free_count(), 0);
    let l = log.clone();
    let second = pool.spawn(move || l.borrow_mut().push("second ran"));
    // The second spawn returned only once the first member had finished.
    assert_eq!(*log.borrow(), ["first done"]);
    second.join().unwrap();
    assert_eq!(*log.borrow(), ["first done", "second ran"]);
}

#[test]
fn blocked_spawners_are_served_in_fifo_order() {
    let pool = Rc::new(Pool::new(1));
    let order = Rc::new(RefCell::new(Vec::new()));
    pool.spawn(|| verdant::sleep(ms(2)).unwrap());
    let spawners: Vec<_> = (0..3)
        .map(|i| {
            let (pool, order) = (pool.clone(), order.clone());
            verdant::spawn(move || {
                pool.spawn(move || order.borrow_mut().push(i))
                    .join()
                    .unwrap();
            })
        })
        .collect();
    for s in spawners {
        s.join().unwrap();
    }
    assert_eq!(*order.borrow(), [0, 1, 2]);
}

#[test]
fn map_returns_results_in_input_order() {
    let pool = Pool::new(2);
    let out = pool.map([5u64, 1, 4, 2, 3], |n| {
        verdant::sleep(ms(n)).unwrap();
        n * 10
    });
    assert_eq!(out, [50, 10, 40, 20, 30]);
}

#[test]
fn imap_unordered_yields_in_completion_order() {
    let pool = Pool::new(4);
    // Deadlines 100 ms apart from one instant: the order cannot depend on how quickly the
    // tasks start (qemu on a loaded machine starts them tens of milliseconds apart).
    let start = std::time::Instant::now();
    let order: Vec<u64> = pool
        .imap_unordered([400u64, 100, 300, 200], move |n| {
            verdant::sleep_until(start + ms(n)).unwrap();
            n
        })
        .collect();
    assert_eq!(order, [100, 200, 300, 400]);
}

#[test]
fn imap_unordered_respects_the_pool_size() {
    let pool = Pool::new(2);
    let running = Rc::new(Cell::new(0));
    let peak = Rc::new(Cell::new(0));
    let (r, p) = (running.clone(), peak.clone());
    let mut got: Vec<u32> = pool
        .imap_unordered(0..10u32, move |i| {
            r.set(r.get() + 1);
            p.set(p.get().max(r.get()));
            verdant::sleep(ms(1)).unwrap();
            r.set(r.get() - 1);
            i
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    assert_eq!(peak.get(), 2);
}

#[test]
fn a_panicking_task_does_not_stop_the_others() {
    let pool = Pool::new(2);
    let done = Rc::new(Cell::new(0));
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let done = done.clone();
            pool.spawn(move || {
                verdant::yield_now();
                if i == 1 {
                    panic!("task 1 fails");
                }
                done.set(done.get() + 1);
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
    assert!(results[1].as_ref().unwrap_err().is_panic());
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 5);
    assert_eq!(done.get(), 5);
    assert_eq!(pool.len(), 0);
}

#[test]
fn map_reraises_a_tasks_panic() {
    let pool = Pool::new(2);
    let r = panic::catch_unwind(AssertUnwindSafe(|| {
        pool.map(0..4, |i| if i == 2 { panic!("bad item") } else { i })
    }));
    let payload = r.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"bad item"));
    pool.join().unwrap();
}

#[test]
fn kill_kills_every_member_including_unstarted_ones() {
    let group = Group::new();
    let ran = Rc::new(Cell::new(0));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let ran = ran.clone();
            group.spawn(move || {
                ran.set(ran.get() + 1);
                verdant::sleep(Duration::from_secs(3600)).unwrap();
            })
        })
        .collect();
    verdant::yield_now(); // the members start and block
    let late = group.spawn(|| unreachable!("killed before it started"));
    group.kill();
    assert!(group.is_empty());
    for h in handles {
        assert!(h.join().unwrap_err().is_killed());
    }
    assert!(late.join().unwrap_err().is_killed());
    assert_eq!(ran.get(), 4);
    // The group is usable afterwards.
    assert_eq!(group.spawn(|| 1).join().unwrap(), 1);
}

#[test]
fn group_join_waits_for_every_member() {
    let group = Group::new();
    let finished = Rc::new(Cell::new(0));
    for n in [3u64, 1, 2] {
        let finished = finished.clone();
        group.spawn(move || {
            verdant::sleep(ms(n)).unwrap();
            finished.set(finished.get() + 1);
        });
    }
    assert_eq!(group.len(), 3);
    group.join().unwrap();
    assert_eq!(finished.get(), 3);
    assert_eq!(group.map(0..3, |i| i + 1), [1, 2, 3]);
}

#[test]
fn join_timeout_reports_running_members() {
    let pool = Pool::new(1);
    pool.spawn(|| verdant::sleep(ms(20)).unwrap());
    assert_eq!(pool.join_timeout(ms(1)), Ok(false));
    assert_eq!(pool.join_timeout(Duration::from_secs(60)), Ok(true));
}
