//! `Semaphore`, `BoundedSemaphore`, `Mutex` and `Condvar`: exclusion, FIFO hand-over,
//! timeouts, kills, and "would block forever". No test measures time: they check order,
//! values and counts.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use verdant::{BoundedSemaphore, Condvar, Mutex, Semaphore, Timeout, WaitError};

type Log = Rc<RefCell<Vec<String>>>;

fn log() -> Log {
    Rc::new(RefCell::new(Vec::new()))
}

fn push(log: &Log, entry: impl Into<String>) {
    log.borrow_mut().push(entry.into());
}

#[test]
fn semaphore_never_grants_more_than_its_permits() {
    let sem = Rc::new(Semaphore::new(3));
    let inside = Rc::new(Cell::new(0usize));
    let most = Rc::new(Cell::new(0usize));
    let done = Rc::new(Cell::new(0usize));
    let workers: Vec<_> = (0..20)
        .map(|i| {
            let (sem, inside, most, done) =
                (sem.clone(), inside.clone(), most.clone(), done.clone());
            verdant::spawn(move || {
                for round in 0..3 {
                    let _permit = sem.acquire().unwrap();
                    inside.set(inside.get() + 1);
                    most.set(most.get().max(inside.get()));
                    if (i + round) % 2 == 0 {
                        verdant::yield_now();
                    } else {
                        verdant::sleep(Duration::from_millis(1)).unwrap();
                    }
                    inside.set(inside.get() - 1);
                }
                done.set(done.get() + 1);
            })
        })
        .collect();
    for r in verdant::joinall(workers) {
        r.unwrap();
    }
    assert_eq!(most.get(), 3);
    assert_eq!(done.get(), 20);
    assert_eq!(sem.available_permits(), 3);
}

#[test]
fn semaphore_waiters_get_permits_in_fifo_order_and_newcomers_do_not_barge() {
    let sem = Rc::new(Semaphore::new(0));
    let order = log();
    let waiters: Vec<_> = (0..4)
        .map(|i| {
            let (sem, order) = (sem.clone(), order.clone());
            verdant::spawn(move || {
                sem.acquire().unwrap().forget();
                push(&order, format!("w{i}"));
            })
        })
        .collect();
    verdant::yield_now();
    sem.release();
    // The permit went to w0, not to whoever asks first now.
    assert!(sem.try_acquire().is_none());
    assert_eq!(sem.available_permits(), 0);
    for _ in 1..4 {
        sem.release();
    }
    verdant::joinall(waiters);
    assert_eq!(*order.borrow(), ["w0", "w1", "w2", "w3"]);
    assert_eq!(sem.available_permits(), 0);
}

#[test]
fn a_timed_out_acquire_takes_no_permit_and_a_later_release_is_not_lost() {
    let sem = Rc::new(Semaphore::new(0));
    assert!(sem
        .acquire_timeout(Duration::from_millis(1))
        .unwrap()
        .is_none());
    let s = sem.clone();
    let impatient = verdant::spawn(move || {
        let _t = Timeout::start(Duration::from_millis(1));
        s.acquire().map(SemaphorePermitExt::keep)
    });
    assert_eq!(impatient.join().unwrap(), Err(WaitError::TimedOut));
    // Both departed waiters are gone: the permit is available, not handed to a ghost.
    sem.release();
    assert_eq!(sem.available_permits(), 1);
    assert!(sem.try_acquire().is_some());
}

/// Forgets a permit and reports it was taken, so results compare with `assert_eq!`.
trait SemaphorePermitExt {
    fn keep(self);
}

impl SemaphorePermitExt for verdant::SemaphorePermit<'_> {
    fn keep(self) {
        self.forget();
    }
}

#[test]
fn a_killed_waiter_takes_no_permit() {
    let sem = Rc::new(Semaphore::new(0));
    let s = sem.clone();
    let victim = verdant::spawn(move || s.acquire().map(SemaphorePermitExt::keep));
    let s = sem.clone();
    let survivor = verdant::spawn(move || s.acquire().map(SemaphorePermitExt::keep));
    verdant::yield_now();
    victim.kill();
    assert!(victim.join().unwrap_err().is_killed());
    sem.release();
    assert_eq!(survivor.join().unwrap(), Ok(()));
    assert_eq!(sem.available_permits(), 0);
    sem.release();
    assert_eq!(sem.available_permits(), 1);
}

#[test]
fn a_waiter_killed_after_it_was_handed_a_permit_passes_it_on() {
    let sem = Rc::new(Semaphore::new(0));
    let order = log();
    let (s, o) = (sem.clone(), order.clone());
    let victim = verdant::spawn(move || {
        let _p = s.acquire().unwrap();
        push(&o, "victim got it");
    });
    let (s, o) = (sem.clone(), order.clone());
    let next = verdant::spawn(move || {
        let _p = s.acquire().unwrap();
        push(&o, "next got it");
    });
    verdant::yield_now();
    sem.release(); // handed to the victim, which has not run yet
    victim.kill();
    assert!(victim.join().unwrap_err().is_killed());
    next.join().unwrap();
    assert_eq!(*order.borrow(), ["next got it"]);
    assert_eq!(sem.available_permits(), 1);
}

#[test]
fn main_acquiring_a_permit_nobody_releases_would_block_forever() {
    let sem = Semaphore::new(0);
    assert_eq!(sem.acquire().unwrap_err(), WaitError::WouldBlockForever);
    sem.release();
    assert_eq!(sem.available_permits(), 1);
}

#[test]
fn bounded_semaphore_refuses_an_over_release() {
    let sem = BoundedSemaphore::new(2);
    let err = sem.release().unwrap_err();
    assert!(err.to_string().contains("released too many times"), "{err}");
    assert_eq!(sem.available_permits(), 2);
    sem.acquire().unwrap().forget();
    sem.try_acquire().unwrap().forget();
    assert!(sem.try_acquire().is_none());
    assert_eq!(sem.release(), Ok(()));
    assert_eq!(sem.release(), Ok(()));
    assert!(sem.release().is_err());
    assert_eq!(sem.available_permits(), 2);
    // A guard-based permit gives itself back, never beyond the bound.
    {
        let _a = sem.acquire().unwrap();
        assert_eq!(sem.available_permits(), 1);
    }
    assert_eq!(sem.available_permits(), 2);
}

#[test]
fn bounded_semaphore_release_hands_over_to_a_waiter() {
    let sem = Rc::new(BoundedSemaphore::new(1));
    sem.acquire().unwrap().forget();
    let s = sem.clone();
    let waiter = verdant::spawn(move || s.acquire().map(SemaphorePermitExt::keep));
    verdant::yield_now();
    assert_eq!(sem.release(), Ok(()));
    assert_eq!(waiter.join().unwrap(), Ok(()));
    assert_eq!(sem.available_permits(), 0);
    assert_eq!(sem.release(), Ok(()));
    assert!(sem.release().is_err());
}

#[test]
fn mutex_excludes_across_blocking_calls() {
    let m = Rc::new(Mutex::new(0u32));
    let workers: Vec<_> = (0..10)
        .map(|_| {
            let m = m.clone();
            verdant::spawn(move || {
                for _ in 0..5 {
                    let mut g = m.lock().unwrap();
                    let seen = *g;
                    verdant::yield_now(); // a race without the lock
                    *g = seen + 1;
                }
            })
        })
        .collect();
    for r in verdant::joinall(workers) {
        r.unwrap();
    }
    assert_eq!(*m.lock().unwrap(), 50);
}

#[test]
fn mutex_is_handed_over_in_fifo_order() {
    let m = Rc::new(Mutex::new(()));
    let order = log();
    let held = m.lock().unwrap();
    let waiters: Vec<_> = (0..4)
        .map(|i| {
            let (m, order) = (m.clone(), order.clone());
            verdant::spawn(move || {
                let _g = m.lock().unwrap();
                push(&order, format!("w{i}"));
                verdant::yield_now();
            })
        })
        .collect();
    verdant::yield_now();
    drop(held);
    // Handed to w0: still locked, and try_lock cannot barge in.
    assert!(m.is_locked());
    assert!(m.try_lock().is_none());
    verdant::joinall(waiters);
    assert_eq!(*order.borrow(), ["w0", "w1", "w2", "w3"]);
    assert!(!m.is_locked());
}

#[test]
fn a_green_thread_relocking_in_a_loop_does_not_starve_a_waiter() {
    let m = Rc::new(Mutex::new(Vec::new()));
    let m1 = m.clone();
    let greedy = verdant::spawn(move || {
        for i in 0..5 {
            let mut g = m1.lock().unwrap();
            g.push(format!("greedy{i}"));
            verdant::yield_now();
            verdant::yield_now();
        }
    });
    verdant::yield_now(); // greedy holds the lock
    let m2 = m.clone();
    let polite = verdant::spawn(move || m2.lock().unwrap().push("polite".to_string()));
    greedy.join().unwrap();
    polite.join().unwrap();
    let seen = m.lock().unwrap().clone();
    // polite queued while greedy held the lock the first time; it gets it next.
    assert_eq!(seen[..2], ["greedy0", "polite"]);
    assert_eq!(seen.len(), 6);
}

#[test]
fn mutex_timeouts_leave_no_waiter_behind() {
    let m = Rc::new(Mutex::new(5));
    let held = m.lock().unwrap();
    assert!(m.lock_timeout(Duration::from_millis(1)).unwrap().is_none());
    let m2 = m.clone();
    let impatient = verdant::spawn(move || {
        let _t = Timeout::start(Duration::from_millis(1));
        m2.lock().map(|g| *g)
    });
    assert_eq!(impatient.join().unwrap(), Err(WaitError::TimedOut));
    drop(held);
    // Nobody was waiting any more: the mutex is free, not handed to a departed waiter.
    assert!(!m.is_locked());
    assert_eq!(*m.try_lock().unwrap(), 5);
}

#[test]
fn a_waiter_killed_after_it_was_handed_the_lock_passes_it_on() {
    let m = Rc::new(Mutex::new(Vec::new()));
    let held = m.lock().unwrap();
    let m1 = m.clone();
    let victim = verdant::spawn(move || m1.lock().unwrap().push("victim"));
    let m2 = m.clone();
    let next = verdant::spawn(move || m2.lock().unwrap().push("next"));
    verdant::yield_now();
    drop(held); // handed to the victim, which has not run yet
    victim.kill();
    assert!(victim.join().unwrap_err().is_killed());
    next.join().unwrap();
    assert_eq!(*m.lock().unwrap(), ["next"]);
    assert!(!m.is_locked());
}

#[test]
fn a_panic_while_holding_the_lock_unlocks_without_poisoning() {
    let m = Rc::new(Mutex::new(1));
    let m1 = m.clone();
    let h = verdant::spawn(move || {
        let mut g = m1.lock().unwrap();
        *g = 2;
        panic!("boom while locked");
    });
    assert!(h.join().unwrap_err().is_panic());
    assert!(!m.is_locked());
    assert_eq!(*m.lock().unwrap(), 2);
}

#[test]
fn locking_twice_from_main_would_block_forever() {
    let m = Mutex::new(7);
    let g = m.lock().unwrap();
    assert_eq!(m.lock().unwrap_err(), WaitError::WouldBlockForever);
    assert_eq!(*g, 7);
    drop(g);
    assert!(!m.is_locked());
}

#[test]
fn mutex_get_mut_and_into_inner() {
    let mut m = Mutex::new(String::from("a"));
    m.get_mut().push('b');
    assert_eq!(format!("{m:?}"), r#"Mutex { data: "ab", waiters: 0 }"#);
    assert_eq!(m.into_inner(), "ab");
}

#[test]
fn condvar_notify_one_wakes_waiters_one_at_a_time_in_fifo_order() {
    let pair = Rc::new((Mutex::new(Vec::<String>::new()), Condvar::new()));
    let waiters: Vec<_> = (0..3)
        .map(|i| {
            let pair = pair.clone();
            verdant::spawn(move || {
                let (m, cv) = &*pair;
                let mut g = cv.wait(m.lock().unwrap()).unwrap();
                g.push(format!("w{i}"));
            })
        })
        .collect();
    verdant::yield_now();
    for expected in 1..=3 {
        pair.1.notify_one();
        verdant::yield_now();
        assert_eq!(pair.0.lock().unwrap().len(), expected);
    }
    verdant::joinall(waiters);
    assert_eq!(*pair.0.lock().unwrap(), ["w0", "w1", "w2"]);
}

#[test]
fn condvar_notify_all_wakes_everyone() {
    let pair = Rc::new((Mutex::new(false), Condvar::new()));
    let woken = Rc::new(Cell::new(0));
    let waiters: Vec<_> = (0..5)
        .map(|_| {
            let (pair, woken) = (pair.clone(), woken.clone());
            verdant::spawn(move || {
                let (m, cv) = &*pair;
                let _g = cv.wait_while(m.lock().unwrap(), |go| !*go).unwrap();
                woken.set(woken.get() + 1);
            })
        })
        .collect();
    verdant::yield_now();
    *pair.0.lock().unwrap() = true;
    pair.1.notify_all();
    for r in verdant::joinall(waiters) {
        r.unwrap();
    }
    assert_eq!(woken.get(), 5);
}

#[test]
fn condvar_wait_timeout_relocks_and_reports_the_timeout() {
    let pair = Rc::new((Mutex::new(0), Condvar::new()));
    let (m, cv) = &*pair;
    let (g, timed_out) = cv
        .wait_timeout(m.lock().unwrap(), Duration::from_millis(1))
        .unwrap();
    assert!(timed_out);
    assert!(m.is_locked());
    drop(g);
    let p = pair.clone();
    let notifier = verdant::spawn(move || {
        *p.0.lock().unwrap() = 1;
        p.1.notify_one();
    });
    let (g, timed_out) = cv
        .wait_timeout(m.lock().unwrap(), Duration::from_secs(60))
        .unwrap();
    assert!(!timed_out);
    assert_eq!(*g, 1);
    drop(g);
    notifier.join().unwrap();
}

#[test]
fn an_interrupted_condvar_wait_unlocks_and_loses_no_notification() {
    let pair = Rc::new((Mutex::new(()), Condvar::new()));
    let p = pair.clone();
    let impatient = verdant::spawn(move || {
        let _t = Timeout::start(Duration::from_millis(1));
        p.1.wait(p.0.lock().unwrap()).map(drop)
    });
    let p = pair.clone();
    let patient = verdant::spawn(move || p.1.wait(p.0.lock().unwrap()).map(drop));
    assert_eq!(impatient.join().unwrap(), Err(WaitError::TimedOut));
    assert!(!pair.0.is_locked());
    // The one notification goes to the waiter that is still there.
    pair.1.notify_one();
    assert_eq!(patient.join().unwrap(), Ok(()));
}

#[test]
fn a_condvar_waiter_killed_after_notify_passes_the_notification_on() {
    let pair = Rc::new((Mutex::new(Vec::new()), Condvar::new()));
    let p = pair.clone();
    let victim = verdant::spawn(move || p.1.wait(p.0.lock().unwrap()).unwrap().push("victim"));
    let p = pair.clone();
    let next = verdant::spawn(move || p.1.wait(p.0.lock().unwrap()).unwrap().push("next"));
    verdant::yield_now();
    pair.1.notify_one(); // goes to the victim, which has not run yet
    victim.kill();
    assert!(victim.join().unwrap_err().is_killed());
    next.join().unwrap();
    assert_eq!(*pair.0.lock().unwrap(), ["next"]);
}

#[test]
fn main_waiting_on_a_condvar_nobody_notifies_would_block_forever() {
    let (m, cv) = (Mutex::new(0), Condvar::new());
    assert_eq!(
        cv.wait(m.lock().unwrap()).unwrap_err(),
        WaitError::WouldBlockForever
    );
    assert!(!m.is_locked());
}
