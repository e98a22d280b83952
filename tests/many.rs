//! Scale: many green threads on one hub at once.
//!
//! `a_hundred_thousand_sleeping_green_threads` needs 200,000 memory mappings (a stack and its
//! guard page each), more than Linux's default `vm.max_map_count` (65,530). CI raises the
//! limit before running the tests (`sysctl -w vm.max_map_count=262144`, as root). Under a
//! lower limit the test spawns until the stack allocation fails and checks that the error
//! names the limit, then checks every green thread it did spawn.
//!
//! `VERDANT_MANY=N` runs it with N green threads instead of 100,000.

use std::cell::Cell;
use std::fs;
use std::rc::Rc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use verdant::Builder;

/// The tests here use most of the process's memory mappings: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn max_map_count() -> Option<usize> {
    fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn map_count() -> Option<usize> {
    Some(fs::read_to_string("/proc/self/maps").ok()?.lines().count())
}

#[test]
fn a_hundred_thousand_sleeping_green_threads() {
    let _serial = serial();
    let full: usize = std::env::var("VERDANT_MANY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let maps_before = map_count();
    // Room for `full` guarded stacks beside what is mapped already (and some to spare)?
    let fits = match (max_map_count(), maps_before) {
        (Some(limit), Some(used)) => limit >= used + 2 * full + 1_000,
        _ => true,
    };

    let start = Instant::now();
    let mut handles = Vec::with_capacity(full);
    let mut refused = None;
    for i in 0..full {
        let nap = Duration::from_millis(1 + (i as u64 * 7_919) % 20);
        let spawned = Builder::new().stack_size(16 * 1024).spawn(move || {
            let t = Instant::now();
            verdant::sleep(nap).unwrap();
            assert!(t.elapsed() >= nap, "sleep returned early");
            i
        });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) if !fits => {
                refused = Some(e);
                break;
            }
            Err(e) => panic!("spawn {i} of {full} failed with room for all: {e}"),
        }
    }
    let spawned = handles.len();
    if let Some(e) = &refused {
        let msg = e.to_string();
        assert!(
            msg.contains("vm.max_map_count"),
            "a spawn refused for lack of mappings must name the limit: {msg}"
        );
        assert!(
            spawned >= 10_000,
            "only {spawned} green threads fit before: {msg}"
        );
        eprintln!(
            "a_hundred_thousand_sleeping_green_threads: ran {spawned} of {full}: the spawn \
             after that failed ({msg}). The full {full} needs the limit raised: \
             sysctl -w vm.max_map_count=262144 (as root)"
        );
    }

    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(
            h.join().unwrap(),
            i,
            "green thread {i} returned another's index"
        );
    }
    if refused.is_none() {
        assert_eq!(spawned, full);
    }
    // Finished green threads give their stacks back: at most the pool's worth stays mapped.
    if let (Some(before), Some(after)) = (maps_before, map_count()) {
        assert!(
            after <= before + 2 * verdant::stack::POOL_LIMIT + 100,
            "{after} mappings after joining, {before} before: stacks leaked"
        );
    }
    eprintln!(
        "a_hundred_thousand_sleeping_green_threads: {spawned} spawned, slept and joined in {:.2?}",
        start.elapsed()
    );
}

#[test]
fn a_sleeper_wakes_among_a_thousand_yielders() {
    let _serial = serial();
    let woke = Rc::new(Cell::new(false));
    // A bound so that a starved sleeper fails the test instead of hanging it.
    let give_up = Instant::now() + Duration::from_secs(60);
    let yielders: Vec<_> = (0..1_000)
        .map(|_| {
            let woke = woke.clone();
            Builder::new()
                .stack_size(16 * 1024)
                .spawn(move || {
                    let mut turns = 0u64;
                    while !woke.get() && Instant::now() < give_up {
                        verdant::yield_now();
                        turns += 1;
                    }
                    (woke.get(), turns)
                })
                .unwrap()
        })
        .collect();
    let w = woke.clone();
    let sleeper = verdant::spawn(move || {
        verdant::sleep(Duration::from_millis(5)).unwrap();
        w.set(true);
    });
    sleeper.join().unwrap();
    assert!(woke.get());
    for (i, h) in yielders.into_iter().enumerate() {
        let (saw_wake, turns) = h.join().unwrap();
        assert!(
            saw_wake,
            "yielder {i} gave up after {turns} turns: the sleeper never woke"
        );
        assert!(turns > 0, "yielder {i} never yielded");
    }
}
