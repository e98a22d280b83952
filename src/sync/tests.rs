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

/// Runs `f` in a green thread and lets it reach its first wait while another green thread
/// is ready, so that the wait begins with the yield (queued without a waker).
fn in_yield_phase<R: 'static>(f: impl FnOnce() -> R + 'static) -> crate::JoinHandle<R> {
    let waiter = crate::spawn(f);
    let filler = crate::spawn(|| {});
    // Ready: [waiter, filler, main]. The waiter queues itself and yields; the filler ends;
    // main runs again while the waiter is still ready, in its yield.
    crate::yield_now();
    assert!(filler.is_finished());
    waiter
}

#[test]
fn a_waiter_served_during_its_yield_returns_without_parking() {
    let q: Queue<u32> = Queue::new();
    let getter = {
        let q = q.clone();
        in_yield_phase(move || q.get())
    };
    assert_eq!(q.waiters_yielding_and_all(), (1, 1));
    q.put(1).unwrap(); // handed over; nothing to wake
    assert_eq!(q.waiters_yielding_and_all(), (0, 0));
    assert_eq!(getter.join().unwrap(), Ok(1));

    let ch: Queue<u32> = Queue::bounded(0);
    let putter = {
        let ch = ch.clone();
        in_yield_phase(move || ch.put(2))
    };
    assert_eq!(ch.waiters_yielding_and_all(), (1, 1));
    assert_eq!(ch.try_get(), Ok(2));
    assert_eq!(putter.join().unwrap(), Ok(()));
    assert_eq!(ch.waiters_yielding_and_all(), (0, 0));
}

#[test]
fn a_waiter_not_served_during_its_yield_parks_with_a_waker() {
    let q: Queue<u32> = Queue::new();
    let getter = {
        let q = q.clone();
        in_yield_phase(move || q.get())
    };
    crate::yield_now(); // the getter finds nothing, takes a slot and parks
    assert!(!getter.is_finished());
    assert_eq!(q.waiters_yielding_and_all(), (0, 1));
    q.put(3).unwrap();
    assert_eq!(getter.join().unwrap(), Ok(3));
    assert_eq!(q.waiters_yielding_and_all(), (0, 0));
}

#[test]
fn an_item_handed_to_a_getter_killed_in_its_yield_is_passed_on() {
    let q: Queue<u32> = Queue::new();
    let doomed = {
        let q = q.clone();
        in_yield_phase(move || q.get())
    };
    let patient = {
        let q = q.clone();
        crate::spawn(move || q.get())
    };
    crate::yield_now(); // `patient` queues behind `doomed`
    q.put(4).unwrap(); // handed to `doomed`, still in its yield
    doomed.kill();
    assert!(doomed.join().unwrap_err().is_killed());
    assert_eq!(patient.join().unwrap(), Ok(4));
    assert_eq!(q.waiters_yielding_and_all(), (0, 0));

    // Nobody else waits: the item stays queued.
    let doomed = {
        let q = q.clone();
        in_yield_phase(move || q.get())
    };
    q.put(5).unwrap();
    doomed.kill();
    assert!(doomed.join().unwrap_err().is_killed());
    assert_eq!(q.try_get(), Ok(5));
    assert_eq!(q.waiters_yielding_and_all(), (0, 0));
}

#[test]
fn waiters_in_their_yield_end_cleanly_on_close_kill_and_timeout() {
    // Close: the getter gets `Closed`, the putter its item back.
    let q: Queue<u32> = Queue::bounded(0);
    let getter = {
        let q = q.clone();
        in_yield_phase(move || q.get())
    };
    q.close();
    assert_eq!(getter.join().unwrap(), Err(RecvError::Closed));
    let ch: Queue<u32> = Queue::bounded(0);
    let putter = {
        let ch = ch.clone();
        in_yield_phase(move || ch.put(6))
    };
    ch.close();
    assert!(matches!(putter.join().unwrap(), Err(SendError::Closed(6))));
    assert_eq!(q.waiters_yielding_and_all(), (0, 0));
    assert_eq!(ch.waiters_yielding_and_all(), (0, 0));

    // Kill: a putter's item is dropped, nothing stays queued.
    let ch: Queue<Rc<()>> = Queue::bounded(0);
    let item = Rc::new(());
    let putter = {
        let (ch, item) = (ch.clone(), item.clone());
        in_yield_phase(move || ch.put(item).is_ok())
    };
    putter.kill();
    assert!(putter.join().unwrap_err().is_killed());
    assert_eq!(Rc::strong_count(&item), 1);
    assert_eq!(ch.waiters_yielding_and_all(), (0, 0));

    // A `Timeout` that has fired interrupts the wait at once: no yield, during which the
    // ready green thread would serve it (and the call return `Ok`).
    let q: Queue<u32> = Queue::bounded(0);
    let waiters: Vec<_> = [true, false]
        .into_iter()
        .map(|get| {
            let q = q.clone();
            crate::spawn(move || {
                let _t = Timeout::start(SHORT);
                std::thread::sleep(SHORT * 2);
                crate::yield_now(); // the hub fires the timeout
                let server = {
                    let q = q.clone();
                    crate::spawn(move || {
                        if get {
                            q.try_put(8).is_ok()
                        } else {
                            q.try_get().is_ok()
                        }
                    })
                };
                let r = if get {
                    q.get().err()
                } else {
                    q.put(7).err().map(|_| RecvError::TimedOut)
                };
                (r, server)
            })
        })
        .collect();
    for w in waiters {
        let (r, server) = w.join().unwrap();
        assert_eq!(r, Some(RecvError::TimedOut));
        assert!(
            !server.join().unwrap(),
            "served during a yield despite the fired Timeout"
        );
    }
    assert_eq!(q.waiters_yielding_and_all(), (0, 0));
}

#[test]
fn items_handed_while_the_cell_is_taken_wait_in_the_list_and_pass_on_too() {
    let q: Queue<u32> = Queue::new();
    let getters: Vec<_> = (0..3)
        .map(|_| {
            let q = q.clone();
            crate::spawn(move || q.get())
        })
        .collect();
    crate::yield_now(); // all three are queued
    assert_eq!(q.waiters_yielding_and_all().1, 3);
    for i in 0..3 {
        q.put(i).unwrap();
    }
    // The first getter's item is in the cell, the others wait in the list.
    assert_eq!(q.handed_in_cell_and_list(), (1, 2));
    let mut getters = getters.into_iter();
    let (first, second, third) = (
        getters.next().unwrap(),
        getters.next().unwrap(),
        getters.next().unwrap(),
    );
    // Killed before they run: their items (one from the cell, one from the list) go back
    // to the queue, as nobody else waits; the third getter gets its own.
    first.kill();
    second.kill();
    assert!(first.join().unwrap_err().is_killed());
    assert!(second.join().unwrap_err().is_killed());
    assert_eq!(third.join().unwrap(), Ok(2));
    assert_eq!(q.handed_in_cell_and_list(), (0, 0));
    let mut left = vec![q.try_get().unwrap(), q.try_get().unwrap()];
    left.sort_unstable();
    assert_eq!(left, [0, 1]);
    assert_eq!(q.waiters_yielding_and_all(), (0, 0));
}

#[test]
fn a_getter_in_another_os_thread_takes_its_item_from_the_cell() {
    let q: Queue<u64> = Queue::new();
    let (tx, rx) = (q.clone(), q.clone());
    let consumer = std::thread::spawn(move || (0..1000).map(|_| rx.get().unwrap()).sum::<u64>());
    for i in 0..1000 {
        tx.put(i).unwrap();
        if i % 7 == 0 {
            std::thread::yield_now();
        }
    }
    assert_eq!(consumer.join().unwrap(), 999 * 1000 / 2);
    assert_eq!(q.handed_in_cell_and_list(), (0, 0));
}

#[test]
fn a_channel_putter_in_its_yield_offers_its_item_in_the_cell() {
    // Served during the yield: a get takes the item from the cell.
    let ch: Channel<u32> = Channel::new();
    let putter = {
        let ch = ch.clone();
        in_yield_phase(move || ch.put(1))
    };
    assert_eq!(ch.waiters_yielding_and_all(), (1, 1));
    assert!(format!("{ch:?}").contains("putters: 1"), "{ch:?}");
    assert_eq!(ch.get(), Ok(1));
    assert_eq!(putter.join().unwrap(), Ok(()));
    assert_eq!(ch.waiters_yielding_and_all(), (0, 0));

    // Not served: the offering putter takes its item back and parks at the front of the
    // list, ahead of a younger putter queued meanwhile; gets serve them in order.
    let first = {
        let ch = ch.clone();
        in_yield_phase(move || ch.put(2))
    };
    let second = {
        let ch = ch.clone();
        crate::spawn(move || ch.put(3))
    };
    crate::yield_now(); // `second` queues in the list (the cell is taken)
    assert_eq!(ch.waiters_yielding_and_all().1, 2);
    crate::yield_now(); // both find themselves unserved and park
    assert_eq!(ch.waiters_yielding_and_all(), (0, 2));
    assert_eq!(ch.try_get(), Ok(2));
    assert_eq!(ch.get(), Ok(3));
    assert_eq!(first.join().unwrap(), Ok(()));
    assert_eq!(second.join().unwrap(), Ok(()));
    assert_eq!(ch.waiters_yielding_and_all(), (0, 0));
}

#[test]
fn a_channel_putter_offering_its_item_ends_cleanly_on_close_kill_and_timeout() {
    // Close: the item comes back with `Closed`; a later get finds nothing.
    let ch: Channel<u32> = Channel::new();
    let putter = {
        let ch = ch.clone();
        in_yield_phase(move || ch.put(6))
    };
    assert_eq!(ch.waiters_yielding_and_all(), (1, 1));
    ch.close();
    assert!(matches!(putter.join().unwrap(), Err(SendError::Closed(6))));
    assert_eq!(ch.get(), Err(RecvError::Closed));
    assert_eq!(ch.waiters_yielding_and_all(), (0, 0));

    // Kill: the item is taken back out of the cell and dropped.
    let ch: Channel<Rc<()>> = Channel::new();
    let item = Rc::new(());
    let putter = {
        let (ch, item) = (ch.clone(), item.clone());
        in_yield_phase(move || ch.put(item).is_ok())
    };
    assert_eq!(ch.waiters_yielding_and_all(), (1, 1));
    putter.kill();
    assert!(putter.join().unwrap_err().is_killed());
    assert_eq!(Rc::strong_count(&item), 1);
    assert_eq!(ch.waiters_yielding_and_all(), (0, 0));
    assert_eq!(ch.try_get(), Err(TryRecvError::Empty));

    // A deadline: not served during the yield, the putter parks and gets its item back.
    let ch: Channel<u32> = Channel::new();
    let putter = {
        let ch = ch.clone();
        in_yield_phase(move || ch.put_timeout(7, SHORT))
    };
    assert_eq!(ch.waiters_yielding_and_all(), (1, 1));
    assert!(matches!(
        putter.join().unwrap(),
        Err(SendError::TimedOut(7))
    ));
    assert_eq!(ch.waiters_yielding_and_all(), (0, 0));
    assert_eq!(ch.try_get(), Err(TryRecvError::Empty));
}

#[test]
fn a_getter_on_another_os_thread_takes_the_offered_item() {
    let ch: Channel<u64> = Channel::new();
    let rx = ch.clone();
    let consumer = std::thread::spawn(move || (0..500).map(|_| rx.get().unwrap()).sum::<u64>());
    // A second green thread keeps the hub busy, so that puts yield first and offer.
    let done = Rc::new(std::cell::Cell::new(false));
    let busy = {
        let done = done.clone();
        crate::spawn(move || {
            while !done.get() {
                crate::yield_now();
            }
        })
    };
    for i in 0..500 {
        ch.put(i).unwrap();
    }
    done.set(true);
    assert_eq!(consumer.join().unwrap(), 499 * 500 / 2);
    busy.join().unwrap();
    assert_eq!(ch.waiters_yielding_and_all(), (0, 0));
}
