//! Behaviour of the hub: spawn, join, kill, sleep, yield, Timeout, the "block forever" error.
//! No test here measures time: they check order, results and side effects.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use verdant::{JoinError, JoinHandle, Timeout, WaitError};

#[test]
fn spawn_and_join_return_values() {
    let a = verdant::spawn(|| 40);
    let b = verdant::spawn(|| "two".to_string());
    assert_eq!(a.join().unwrap(), 40);
    assert_eq!(b.join().unwrap(), "two");
}

#[test]
fn spawned_threads_run_only_when_the_spawner_blocks() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    let h = verdant::spawn(move || l.borrow_mut().push("child"));
    log.borrow_mut().push("parent before join");
    h.join().unwrap();
    assert_eq!(*log.borrow(), ["parent before join", "child"]);
}

#[test]
fn a_joiner_woken_by_a_finish_runs_after_the_green_threads_ready_before_it() {
    // `a` spawns `b` and `c`, then joins `b`; `b` finishes while `c` is ready: `a` goes
    // behind `c` in the run queue (a finishing green thread hands control straight to its
    // joiner only when nothing else is ready).
    let log = Rc::new(RefCell::new(Vec::new()));
    let a = {
        let log = log.clone();
        verdant::spawn(move || {
            let b = {
                let log = log.clone();
                verdant::spawn(move || log.borrow_mut().push("b"))
            };
            let c = {
                let log = log.clone();
                verdant::spawn(move || log.borrow_mut().push("c"))
            };
            b.join().unwrap();
            log.borrow_mut().push("a");
            c.join().unwrap();
        })
    };
    a.join().unwrap();
    assert_eq!(*log.borrow(), ["b", "c", "a"]);
}

#[test]
fn sleepers_wake_in_deadline_order() {
    // Deadlines from one common instant, 200 ms apart: a green thread that starts late
    // (qemu runs this suite many times slower) still cannot overtake an earlier deadline.
    let base = std::time::Instant::now();
    let order = Rc::new(RefCell::new(Vec::new()));
    let handles: Vec<JoinHandle<()>> = [600u64, 200, 400, 0]
        .into_iter()
        .map(|ms| {
            let o = order.clone();
            verdant::spawn(move || {
                verdant::sleep_until(base + Duration::from_millis(ms)).unwrap();
                o.borrow_mut().push(ms);
            })
        })
        .collect();
    for r in verdant::joinall(handles) {
        r.unwrap();
    }
    assert_eq!(*order.borrow(), [0, 200, 400, 600]);
}

#[test]
fn yield_now_is_fair_round_robin() {
    let trace = Rc::new(RefCell::new(String::new()));
    let hs: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|name| {
            let t = trace.clone();
            verdant::spawn(move || {
                for _ in 0..3 {
                    t.borrow_mut().push_str(name);
                    verdant::yield_now();
                }
            })
        })
        .collect();
    verdant::joinall(hs);
    assert_eq!(trace.borrow().as_str(), "abcabcabc");
}

#[test]
fn a_spinning_yielder_does_not_starve_a_sleeper() {
    let done = Rc::new(Cell::new(false));
    let d = done.clone();
    let sleeper = verdant::spawn(move || {
        verdant::sleep(Duration::from_millis(5)).unwrap();
        d.set(true);
    });
    let d2 = done.clone();
    let spinner = verdant::spawn(move || {
        let mut spins = 0u64;
        while !d2.get() {
            verdant::yield_now();
            spins += 1;
        }
        spins
    });
    sleeper.join().unwrap();
    assert!(spinner.join().unwrap() > 0);
}

#[test]
fn a_panic_in_one_green_thread_leaves_the_others_running() {
    let bad = verdant::spawn(|| -> u32 { panic!("deliberate") });
    let good = verdant::spawn(|| {
        verdant::sleep(Duration::from_millis(1)).unwrap();
        7
    });
    match bad.join() {
        Err(e @ JoinError::Panicked(_)) => assert!(e.to_string().contains("deliberate")),
        other => panic!("expected a panic, got {other:?}"),
    }
    assert_eq!(good.join().unwrap(), 7);
    // The hub is still fine.
    assert_eq!(verdant::spawn(|| 1).join().unwrap(), 1);
}

struct Flag(Rc<Cell<u32>>);
impl Drop for Flag {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

#[test]
fn kill_unwinds_a_blocked_green_thread() {
    let drops = Rc::new(Cell::new(0));
    let d = drops.clone();
    let h = verdant::spawn(move || {
        let _guard = Flag(d);
        verdant::sleep(Duration::from_secs(3600)).unwrap();
        "never"
    });
    verdant::yield_now(); // let it start and block
    h.kill();
    match h.join() {
        Err(JoinError::Killed) => {}
        other => panic!("expected Killed, got {other:?}"),
    }
    assert_eq!(drops.get(), 1, "the destructor ran exactly once");
}

#[test]
fn a_joiner_scheduled_by_a_kill_as_the_joined_one_finishes_is_killed_not_handed_control() {
    // `j` joins `a`; `a` is woken, then `j` is killed (scheduled too). `a` finishes with its
    // joiner already scheduled: it may not hand control to it (that wake-up is not its to
    // claim), and `j` runs once, from the run queue, where its kill is thrown in.
    struct Counted(Rc<Cell<u32>>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }
    let drops = Rc::new(Cell::new(0));
    let go = Rc::new(verdant::Event::new());
    let (g, d) = (go.clone(), drops.clone());
    let a = verdant::spawn(move || {
        g.wait().unwrap();
        Counted(d)
    });
    let joined = Rc::new(Cell::new(false));
    let jd = joined.clone();
    let j = verdant::spawn(move || {
        let r = a.join();
        jd.set(true);
        r.map(drop)
    });
    // Both wait: `a` on the event, `j` in its join.
    verdant::yield_now();
    go.set();
    j.kill();
    assert!(j.join().unwrap_err().is_killed());
    assert!(!joined.get(), "the join returned in a killed green thread");
    assert_eq!(drops.get(), 1, "the result was dropped exactly once");
}

#[test]
fn a_green_thread_killed_before_it_starts_never_runs() {
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let h = verdant::spawn(move || r.set(true));
    h.kill();
    assert!(h.join().unwrap_err().is_killed());
    assert!(!ran.get());
    let r = ran.clone();
    let later = verdant::spawn_later(Duration::from_millis(1), move || r.set(true));
    later.kill();
    assert!(later.join().unwrap_err().is_killed());
    assert!(!ran.get());
}

#[test]
fn spawn_later_runs_after_the_delay_and_after_earlier_work() {
    let order = Rc::new(RefCell::new(Vec::new()));
    let o = order.clone();
    let late = verdant::spawn_later(Duration::from_millis(5), move || {
        o.borrow_mut().push("late")
    });
    let o = order.clone();
    let now = verdant::spawn(move || o.borrow_mut().push("now"));
    now.join().unwrap();
    late.join().unwrap();
    assert_eq!(*order.borrow(), ["now", "late"]);
}

#[test]
fn timeout_interrupts_a_sleep_and_nothing_stays_registered() {
    let t = Timeout::start(Duration::from_millis(2));
    assert_eq!(
        verdant::sleep(Duration::from_secs(3600)),
        Err(WaitError::TimedOut)
    );
    assert!(t.expired());
    // Every blocking call in scope is bounded.
    assert_eq!(
        verdant::sleep(Duration::from_secs(3600)),
        Err(WaitError::TimedOut)
    );
    drop(t);
    // Out of scope: blocking works again.
    verdant::sleep(Duration::from_millis(1)).unwrap();
}

#[test]
fn with_timeout_and_join_timeout() {
    let r = verdant::with_timeout(Duration::from_millis(2), || {
        verdant::sleep(Duration::from_secs(3600))
    });
    assert_eq!(r.unwrap_err().duration(), Duration::from_millis(2));
    assert_eq!(verdant::with_timeout(Duration::from_secs(1), || 5), Ok(5));

    let slow = verdant::spawn(|| verdant::sleep(Duration::from_secs(3600)));
    assert!(!slow.wait_timeout(Duration::from_millis(1)).unwrap());
    slow.kill();
    assert!(slow
        .join_timeout(Duration::from_secs(5))
        .unwrap_err()
        .is_killed());
}

#[test]
fn a_timeout_interrupts_a_join() {
    let forever = verdant::spawn(|| verdant::sleep(Duration::from_secs(3600)));
    let t = Timeout::start(Duration::from_millis(1));
    match forever.join() {
        Err(JoinError::TimedOut) => {}
        other => panic!("expected TimedOut, got {other:?}"),
    }
    drop(t);
}

#[test]
fn current_reports_names_and_main() {
    let me = verdant::current();
    assert!(me.is_main());
    let h = verdant::Builder::new()
        .name("worker-7")
        .spawn(|| {
            let c = verdant::current();
            (c.name().map(str::to_owned), c.is_main())
        })
        .unwrap();
    assert_eq!(h.name(), Some("worker-7"));
    assert_eq!(h.join().unwrap(), (Some("worker-7".to_string()), false));
}

#[test]
fn iwait_yields_in_completion_order() {
    let base = std::time::Instant::now();
    // 200 ms apart, as in sleepers_wake_in_deadline_order.
    let hs: Vec<JoinHandle<u64>> = [400u64, 0, 200]
        .into_iter()
        .map(|ms| {
            verdant::spawn(move || {
                verdant::sleep_until(base + Duration::from_millis(ms)).unwrap();
                ms
            })
        })
        .collect();
    let got: Vec<(usize, u64)> = verdant::iwait(hs).map(|(i, r)| (i, r.unwrap())).collect();
    assert_eq!(got, [(1, 0), (2, 200), (0, 400)]);
}

#[test]
fn each_os_thread_has_its_own_hub() {
    let t = std::thread::spawn(|| {
        let h = verdant::spawn(|| verdant::current().is_main());
        h.join().unwrap()
    });
    assert!(!t.join().unwrap());
    assert_eq!(verdant::spawn(|| 3).join().unwrap(), 3);
}

/// Two green threads yielding to each other hand control over directly, without the hub
/// loop; the reactor, the cross-thread inbox and the timers must still be served.
fn spin_pair_until(done: &Rc<Cell<bool>>) -> Vec<verdant::JoinHandle<u64>> {
    (0..2)
        .map(|_| {
            let d = done.clone();
            verdant::spawn(move || {
                let mut spins = 0u64;
                while !d.get() {
                    verdant::yield_now();
                    spins += 1;
                    assert!(spins < 50_000_000, "starved: the wake-up never came");
                }
                spins
            })
        })
        .collect()
}

#[test]
fn yielders_handing_off_directly_do_not_starve_a_reader() {
    use std::io::{Read, Write};
    let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut a = verdant::net::UnixStream::from_std(a).unwrap();
    let done = Rc::new(Cell::new(false));
    let d = done.clone();
    let reader = verdant::spawn(move || {
        let mut buf = [0u8; 4];
        a.read_exact(&mut buf).unwrap();
        d.set(true);
        buf
    });
    verdant::yield_now(); // the reader blocks in read
    let spinners = spin_pair_until(&done);
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(5));
        b.write_all(b"ping").unwrap();
        b
    });
    assert_eq!(&reader.join().unwrap(), b"ping");
    for s in spinners {
        s.join().unwrap();
    }
    drop(writer.join().unwrap());
}

#[test]
fn yielders_handing_off_directly_do_not_starve_a_cross_thread_put() {
    let q = verdant::Queue::new();
    let done = Rc::new(Cell::new(false));
    let d = done.clone();
    let getter = {
        let q = q.clone();
        verdant::spawn(move || {
            let v: u32 = q.get().unwrap();
            d.set(true);
            v
        })
    };
    verdant::yield_now(); // the getter blocks in get
    let spinners = spin_pair_until(&done);
    let putter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(5));
        q.put(7).unwrap();
    });
    assert_eq!(getter.join().unwrap(), 7);
    for s in spinners {
        s.join().unwrap();
    }
    putter.join().unwrap();
}

#[test]
fn every_green_thread_waiting_on_one_handle_is_woken_when_it_finishes() {
    // Three waiters on one green thread: the first is woken inline, the others from the
    // rest of the waiter list; each sees it finished, and the join still gets its value.
    let (go, started) = (Rc::new(Cell::new(false)), Rc::new(Cell::new(0)));
    let target = Rc::new({
        let go = go.clone();
        verdant::spawn(move || {
            while !go.get() {
                verdant::yield_now();
            }
            42
        })
    });
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let (target, started) = (target.clone(), started.clone());
            verdant::spawn(move || {
                started.set(started.get() + 1);
                target.wait_timeout(Duration::from_secs(60)).unwrap()
            })
        })
        .collect();
    while started.get() < 3 {
        verdant::yield_now();
    }
    go.set(true);
    for w in waiters {
        assert!(w.join().unwrap(), "the waiter saw it finish");
    }
    let target = Rc::into_inner(target).expect("the waiters dropped their clones");
    assert_eq!(target.join().unwrap(), 42);
}

/// Counts its drops.
struct NotedDrop(Rc<Cell<u32>>);

impl Drop for NotedDrop {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

#[test]
fn a_detached_green_thread_drops_its_result_as_it_ends_and_hands_control_on() {
    let drops = Rc::new(Cell::new(0));
    let d = drops.clone();
    // Its handle is gone before it runs: when it ends, the hub holds its record's last
    // reference, and its result goes with the record as control passes to `next`.
    drop(verdant::spawn(move || NotedDrop(d)));
    let seen = drops.clone();
    let next = verdant::spawn(move || seen.get());
    assert_eq!(
        next.join().unwrap(),
        1,
        "the detached green thread's result was dropped before the next one ran"
    );
    assert_eq!(drops.get(), 1, "and only once");
    // The hub carries on as usual.
    assert_eq!(verdant::spawn(|| 8).join().unwrap(), 8);
}

/// A result whose drop blocks: it yields, then sleeps, then counts itself dropped.
struct BlockingDrop(Rc<Cell<u32>>);

impl Drop for BlockingDrop {
    fn drop(&mut self) {
        verdant::yield_now();
        verdant::sleep(Duration::from_millis(2)).expect("the sleep in the drop");
        self.0.set(self.0.get() + 1);
    }
}

#[test]
fn a_detached_green_thread_whose_result_blocks_in_its_drop_leaves_the_others_running() {
    let drops = Rc::new(Cell::new(0));
    let d = drops.clone();
    // Detached before it runs: nobody can take its result, which it drops as it ends, as
    // ordinary code of its own (the drop yields and sleeps).
    drop(verdant::spawn(move || BlockingDrop(d)));
    let next = verdant::spawn(|| 5);
    assert_eq!(next.join().unwrap(), 5, "the green thread spawned next ran");
    for i in 0..3 {
        assert_eq!(verdant::spawn(move || i).join().unwrap(), i);
    }
    verdant::sleep(Duration::from_millis(20)).unwrap();
    assert_eq!(drops.get(), 1, "the result was dropped, once");
}

/// A result whose drop panics.
struct PanickingDrop;

impl Drop for PanickingDrop {
    fn drop(&mut self) {
        panic!("a detached green thread's result panicked in its drop");
    }
}

/// A panic in the drop of a detached green thread's result is that green thread's: it
/// ends, and the others and the hub carry on. It used to reach the thread's main green
/// thread through the hub and end the process, so the scenario runs in a child process.
#[test]
fn a_panic_in_the_drop_of_a_detached_result_leaves_the_others_running() {
    #[path = "support/mod.rs"]
    mod support;
    const SCENARIO: &str = "panic-in-detached-result-drop";
    if !support::is_child(SCENARIO) {
        let child = support::run_child(
            "a_panic_in_the_drop_of_a_detached_result_leaves_the_others_running",
            SCENARIO,
        );
        assert!(child.status.success(), "{}", child.transcript());
        return;
    }
    drop(verdant::spawn(|| PanickingDrop));
    let next = verdant::spawn(|| 5);
    assert_eq!(next.join().unwrap(), 5);
    assert_eq!(verdant::spawn(|| 6).join().unwrap(), 6);
}

#[test]
fn many_green_threads_ending_in_a_row_hand_control_on_in_spawn_order() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let handles: Vec<JoinHandle<usize>> = (0..100)
        .map(|i| {
            let log = log.clone();
            verdant::spawn(move || {
                log.borrow_mut().push(i);
                i
            })
        })
        .collect();
    let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(total, (0..100).sum());
    assert_eq!(*log.borrow(), (0..100).collect::<Vec<_>>());
}

/// A sleeper whose timer is registered (it ran up to its `sleep`), setting `done` when it
/// wakes.
fn registered_sleeper(done: &Rc<Cell<bool>>, nap: Duration) -> JoinHandle<()> {
    let d = done.clone();
    let sleeper = verdant::spawn(move || {
        verdant::sleep(nap).unwrap();
        d.set(true);
    });
    verdant::yield_now(); // the sleeper registers its timer
    sleeper
}

#[test]
fn spawning_and_joining_in_a_loop_lets_a_due_timer_fire_within_a_few_hand_offs() {
    // Each spawn + join is two hand-offs that begin turns without the hub's loop (a park,
    // then a finish): a due timer must still fire, and soon, not only at the next poll.
    let done = Rc::new(Cell::new(false));
    let sleeper = registered_sleeper(&done, Duration::from_millis(1));
    std::thread::sleep(Duration::from_millis(3)); // the timer is due
    let mut cycles = 0u32;
    while !done.get() {
        verdant::spawn(|| ()).join().unwrap();
        cycles += 1;
        assert!(
            cycles < verdant::hub::POLL_EVERY / 4,
            "a due timer waited {cycles} spawn + join cycles"
        );
    }
    sleeper.join().unwrap();
}

#[test]
fn spawning_and_joining_in_a_loop_does_not_starve_a_cross_thread_put() {
    let q = verdant::Queue::new();
    let done = Rc::new(Cell::new(false));
    let getter = {
        let (q, d) = (q.clone(), done.clone());
        verdant::spawn(move || {
            let v: u32 = q.get().unwrap();
            d.set(true);
            v
        })
    };
    verdant::yield_now(); // the getter blocks in get
    let putter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(5));
        q.put(9).unwrap();
    });
    let mut cycles = 0u64;
    while !done.get() {
        verdant::spawn(|| ()).join().unwrap();
        cycles += 1;
        assert!(cycles < 50_000_000, "starved: the wake-up never came");
    }
    assert_eq!(getter.join().unwrap(), 9);
    putter.join().unwrap();
}

#[test]
fn a_yield_in_a_turn_begun_by_a_join_lets_a_due_timer_fire() {
    // The join parks the main green thread and begins a turn for `t`, which may run more
    // hand-offs than are ready; a yield still ends it: the due timer fires, and the sleeper
    // it wakes runs after `t`'s next yield (it is queued behind `t`).
    let done = Rc::new(Cell::new(false));
    let sleeper = registered_sleeper(&done, Duration::from_millis(1));
    let d = done.clone();
    let t = verdant::spawn(move || {
        std::thread::sleep(Duration::from_millis(3)); // the timer is due
        verdant::yield_now(); // the hub fires it; the sleeper is queued behind us
        verdant::yield_now(); // the sleeper runs
        d.get()
    });
    assert!(
        t.join().unwrap(),
        "two yields after its timer was due, the sleeper had not run"
    );
    sleeper.join().unwrap();
}

/// A green thread that yields until `go` is set, then returns 7.
fn yield_until(go: &Rc<Cell<bool>>) -> JoinHandle<u32> {
    let go = go.clone();
    verdant::spawn(move || {
        while !go.get() {
            verdant::yield_now();
        }
        7
    })
}

#[test]
fn a_green_thread_killed_or_timed_out_in_a_join_leaves_the_joined_one_running() {
    let go = Rc::new(Cell::new(false));
    let drops = Rc::new(Cell::new(0));

    // Killed while it waits: it unwinds, and the joined one (detached) finishes later
    // without resuming the dead joiner.
    let target = yield_until(&go);
    let d = drops.clone();
    let joiner = verdant::spawn(move || {
        let _guard = Flag(d);
        target.join().unwrap()
    });
    verdant::yield_now(); // the joiner starts and parks in its join
    assert!(!joiner.is_finished());
    joiner.kill();
    match joiner.join() {
        Err(JoinError::Killed) => {}
        other => panic!("expected Killed, got {other:?}"),
    }
    assert_eq!(drops.get(), 1, "the joiner's destructor ran exactly once");

    // A `Timeout` covering a spawned joiner's join: `TimedOut`, the joined one goes on.
    let target = yield_until(&go);
    let joiner = verdant::spawn(move || {
        let _t = Timeout::start(Duration::from_millis(1));
        target.join()
    });
    match joiner.join() {
        Ok(Err(JoinError::TimedOut)) => {}
        other => panic!("expected Ok(Err(TimedOut)), got {other:?}"),
    }

    // Both joined ones (detached) finish; spawning and joining work as before.
    go.set(true);
    let joiner = verdant::spawn(move || yield_until(&go).join().unwrap());
    assert_eq!(joiner.join().unwrap(), 7);
    assert_eq!(verdant::spawn(|| 3).join().unwrap(), 3);
}

#[test]
fn a_joiner_that_finds_the_joined_one_done_gets_its_value_though_its_timeout_fired() {
    // The joined green thread blocks the OS thread past the joiner's `Timeout`, then yields:
    // the hub fires the `Timeout` (the parked joiner is scheduled, its wait expired) before
    // the joined one finishes. The joiner then runs with the joined one done: its join
    // returns the value, and the fired `Timeout` is reported by the next blocking call in
    // its scope. (The `Timeout` leaves the joiner ample time to reach its park first, even
    // in a debug build under qemu: with 5 ms it once fired before the join began.)
    let joiner = verdant::spawn(|| {
        let timeout = Timeout::start(Duration::from_millis(100));
        let target = verdant::spawn(|| {
            std::thread::sleep(Duration::from_millis(250));
            verdant::yield_now();
            7
        });
        let joined = target.join();
        let next = verdant::sleep(Duration::from_secs(10));
        (joined, timeout.expired(), next)
    });
    let (joined, expired, next) = joiner.join().unwrap();
    assert_eq!(joined.unwrap(), 7);
    assert!(expired, "the Timeout fired during the join");
    assert_eq!(next, Err(WaitError::TimedOut));
}
