//! White-box checks that interrupted waits (a `Timeout`, a deadline, a kill) leave nothing
//! registered in any primitive.

use super::*;
use crate::{Timeout, WaitError};
use std::rc::Rc;
use std::time::Duration;

const SHORT: Duration = Duration::from_millis(1);

fn async_waiters<T, E>(r: &AsyncResult<T, E>) -> usize {
    r.shared.lock().unwrap().waiters.len()
}

#[test]
fn a_fired_timeout_unregisters_every_kind_of_waiter() {
    let event = Rc::new(Event::new());
    let sem = Rc::new(Semaphore::new(0));
    let mutex = Rc::new(Mutex::new(()));
    let condvar = Rc::new(Condvar::new());
    let result: AsyncResult<(), ()> = AsyncResult::new();
    let held = mutex.lock().unwrap();
    let (e, s, m, r) = (event.clone(), sem.clone(), mutex.clone(), result.clone());
    let waiter = crate::spawn(move || {
        let _t = Timeout::start(SHORT);
        [
            e.wait().err(),
            s.acquire().err(),
            m.lock().err(),
            r.wait().err(),
            e.wait_timeout(Duration::from_secs(60)).err(),
        ]
    });
    assert_eq!(waiter.join().unwrap(), [Some(WaitError::TimedOut); 5]);
    drop(held);
    let (m, cv) = (mutex.clone(), condvar.clone());
    let cv_waiter = crate::spawn(move || {
        let _t = Timeout::start(SHORT);
        cv.wait(m.lock().unwrap()).err()
    });
    assert_eq!(cv_waiter.join().unwrap(), Some(WaitError::TimedOut));
    assert_eq!(event.waiters.len(), 0);
    assert_eq!(sem.waiters.len(), 0);
    assert_eq!(mutex.waiters.len(), 0);
    assert_eq!(condvar.waiters.len(), 0);
    assert_eq!(async_waiters(&result), 0);
    assert!(!mutex.is_locked());
    assert_eq!(sem.available_permits(), 0);
}

#[test]
fn a_passed_deadline_unregisters_every_kind_of_waiter() {
    let event = Event::new();
    let sem = Semaphore::new(0);
    let mutex = Mutex::new(());
    let condvar = Condvar::new();
    let result: AsyncResult<(), ()> = AsyncResult::new();
    assert_eq!(event.wait_timeout(SHORT), Ok(false));
    assert!(sem.acquire_timeout(SHORT).unwrap().is_none());
    let guard = mutex.lock().unwrap();
    let (guard, timed_out) = condvar.wait_timeout(guard, SHORT).unwrap();
    assert!(timed_out);
    let m = Rc::new(Mutex::new(()));
    let held = m.lock().unwrap();
    assert!(m.lock_timeout(SHORT).unwrap().is_none());
    assert_eq!(result.wait_timeout(SHORT), Ok(false));
    assert_eq!(event.waiters.len(), 0);
    assert_eq!(sem.waiters.len(), 0);
    assert_eq!(m.waiters.len(), 0);
    assert_eq!(condvar.waiters.len(), 0);
    assert_eq!(async_waiters(&result), 0);
    drop((guard, held));
    assert!(!m.is_locked() && !mutex.is_locked());
}

#[test]
fn a_kill_unregisters_every_kind_of_waiter() {
    let event = Rc::new(Event::new());
    let sem = Rc::new(Semaphore::new(0));
    let mutex = Rc::new(Mutex::new(()));
    let condvar = Rc::new(Condvar::new());
    let result: AsyncResult<(), ()> = AsyncResult::new();
    let held = mutex.lock().unwrap();
    let victims = vec![
        crate::spawn({
            let e = event.clone();
            move || {
                let _ = e.wait();
            }
        }),
        crate::spawn({
            let s = sem.clone();
            move || drop(s.acquire())
        }),
        crate::spawn({
            let m = mutex.clone();
            move || drop(m.lock())
        }),
        crate::spawn({
            let r = result.clone();
            move || {
                let _ = r.wait();
            }
        }),
    ];
    crate::yield_now();
    assert_eq!(
        (
            event.waiters.len(),
            sem.waiters.len(),
            mutex.waiters.len(),
            async_waiters(&result)
        ),
        (1, 1, 1, 1)
    );
    for v in &victims {
        v.kill();
    }
    for r in crate::joinall(victims) {
        assert!(r.unwrap_err().is_killed());
    }
    drop(held);
    let cv_victim = crate::spawn({
        let (m, cv) = (mutex.clone(), condvar.clone());
        move || drop(cv.wait(m.lock().unwrap()))
    });
    crate::yield_now();
    assert_eq!(condvar.waiters.len(), 1);
    cv_victim.kill();
    assert!(cv_victim.join().unwrap_err().is_killed());
    assert_eq!(event.waiters.len(), 0);
    assert_eq!(sem.waiters.len(), 0);
    assert_eq!(mutex.waiters.len(), 0);
    assert_eq!(condvar.waiters.len(), 0);
    assert_eq!(async_waiters(&result), 0);
    assert!(!mutex.is_locked());
    assert_eq!(sem.available_permits(), 0);
}

#[test]
fn waiters_leaving_from_the_middle_of_a_wait_queue_keep_the_rest_in_order() {
    // Five acquirers wait; 1 and 3 are killed (one of them after it was handed a permit,
    // which it passes on); the permits then go to 0, 2, 4 in that order.
    let sem = Rc::new(Semaphore::new(0));
    let order = Rc::new(std::cell::RefCell::new(Vec::new()));
    let waiters: Vec<_> = (0..5)
        .map(|i| {
            let (sem, order) = (sem.clone(), order.clone());
            crate::spawn(move || {
                sem.acquire().unwrap().forget();
                order.borrow_mut().push(i);
            })
        })
        .collect();
    crate::yield_now();
    assert_eq!(sem.waiters.len(), 5);
    waiters[3].kill();
    crate::yield_now();
    assert_eq!(sem.waiters.len(), 4);
    // Permits handed to 0 and 1; 1 is killed before it runs and passes its permit to 2.
    sem.release();
    sem.release();
    waiters[1].kill();
    assert_eq!(sem.waiters.len(), 2);
    sem.release();
    for w in waiters {
        let _ = w.join();
    }
    assert_eq!(*order.borrow(), [0, 2, 4]);
    assert_eq!(sem.waiters.len(), 0);
    assert_eq!(sem.available_permits(), 0);
}

/// Green threads parked in a `Queue` or `Channel` that are woken with nothing for them (a
/// spurious wake-up, here from `TaskRef::wake`) park again, stay registered and are served
/// later: the out-of-line endings of a blocking `get`/`put` only end the wait on a
/// deadline, a `Timeout` or `close`.
#[test]
fn spuriously_woken_queue_waiters_wait_on_and_are_served() {
    let tasks = Rc::new(std::cell::RefCell::new(Vec::new()));
    let queue: Queue<u32> = Queue::new();
    let channel: Channel<u32> = Channel::new();
    let getter = {
        let (q, tasks) = (queue.clone(), tasks.clone());
        crate::spawn(move || {
            tasks.borrow_mut().push(crate::hub::current_task());
            q.get()
        })
    };
    let putter = {
        let (ch, tasks) = (channel.clone(), tasks.clone());
        crate::spawn(move || {
            tasks.borrow_mut().push(crate::hub::current_task());
            ch.put(9)
        })
    };
    crate::yield_now();
    assert_eq!(tasks.borrow().len(), 2);
    for _ in 0..3 {
        for task in tasks.borrow().iter() {
            task.wake();
        }
        crate::yield_now();
        crate::yield_now();
        assert!(!getter.is_finished() && !putter.is_finished());
        assert!(format!("{queue:?}").contains("getters: 1"), "{queue:?}");
        assert!(format!("{channel:?}").contains("putters: 1"), "{channel:?}");
    }
    queue.put(5).unwrap();
    assert_eq!(channel.get(), Ok(9));
    assert_eq!(getter.join().unwrap(), Ok(5));
    assert_eq!(putter.join().unwrap(), Ok(()));
    assert!(format!("{queue:?}").contains("getters: 0"), "{queue:?}");
    assert!(format!("{channel:?}").contains("putters: 0"), "{channel:?}");
    assert_eq!(queue.try_get(), Err(TryRecvError::Empty));
}
