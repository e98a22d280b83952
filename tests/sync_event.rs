//! `Event` and `AsyncResult`: wake-ups, timeouts, kills, "would block forever", and
//! `AsyncResult` between OS threads and hubs. No test measures time: they check order,
//! values and counts.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use verdant::{AsyncResult, Event, JoinError, Timeout, WaitError};

fn log() -> Rc<RefCell<Vec<String>>> {
    Rc::new(RefCell::new(Vec::new()))
}

#[test]
fn set_wakes_every_waiter_in_fifo_order() {
    let event = Rc::new(Event::new());
    let order = log();
    let waiters: Vec<_> = (0..4)
        .map(|i| {
            let (event, order) = (event.clone(), order.clone());
            verdant::spawn(move || {
                event.wait().unwrap();
                order.borrow_mut().push(format!("w{i}"));
            })
        })
        .collect();
    verdant::yield_now();
    assert!(order.borrow().is_empty(), "nobody passes an unset event");
    event.set();
    for r in verdant::joinall(waiters) {
        r.unwrap();
    }
    assert_eq!(*order.borrow(), ["w0", "w1", "w2", "w3"]);
}

#[test]
fn a_set_event_does_not_block_until_cleared() {
    let event = Event::new();
    assert!(!event.is_set());
    event.set();
    assert!(event.is_set());
    assert_eq!(event.wait(), Ok(()));
    assert_eq!(event.wait(), Ok(()));
    event.clear();
    assert!(!event.is_set());
    assert_eq!(event.wait_timeout(Duration::from_millis(1)), Ok(false));
}

#[test]
fn a_waiter_woken_by_set_returns_even_if_cleared_before_it_ran() {
    let event = Rc::new(Event::new());
    let e = event.clone();
    let waiter = verdant::spawn(move || e.wait());
    verdant::yield_now();
    event.set();
    event.clear();
    assert_eq!(waiter.join().unwrap(), Ok(()));
    assert!(!event.is_set());
}

#[test]
fn wait_timeout_reports_set_or_not() {
    let event = Rc::new(Event::new());
    assert_eq!(event.wait_timeout(Duration::from_millis(1)), Ok(false));
    let e = event.clone();
    let setter = verdant::spawn(move || e.set());
    assert_eq!(event.wait_timeout(Duration::from_secs(60)), Ok(true));
    setter.join().unwrap();
}

#[test]
fn a_timeout_interrupts_wait_and_a_later_set_still_reaches_the_others() {
    let event = Rc::new(Event::new());
    let e = event.clone();
    let impatient = verdant::spawn(move || {
        let _t = Timeout::start(Duration::from_millis(1));
        e.wait()
    });
    let e = event.clone();
    let patient = verdant::spawn(move || e.wait());
    assert_eq!(impatient.join().unwrap(), Err(WaitError::TimedOut));
    event.set();
    assert_eq!(patient.join().unwrap(), Ok(()));
}

#[test]
fn kill_unwinds_a_waiter() {
    struct Dropped(Rc<RefCell<Vec<String>>>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.borrow_mut().push("dropped".into());
        }
    }
    let event = Rc::new(Event::new());
    let order = log();
    let (e, o) = (event.clone(), order.clone());
    let victim = verdant::spawn(move || {
        let _d = Dropped(o.clone());
        e.wait().unwrap();
        o.borrow_mut().push("passed the event".into());
    });
    verdant::yield_now();
    victim.kill();
    assert!(victim.join().unwrap_err().is_killed());
    event.set();
    verdant::yield_now();
    assert_eq!(*order.borrow(), ["dropped"]);
}

#[test]
fn main_waiting_on_an_event_nobody_can_set_would_block_forever() {
    let event = Event::new();
    assert_eq!(event.wait(), Err(WaitError::WouldBlockForever));
    // Nothing stayed registered: the event and the hub keep working.
    event.set();
    assert_eq!(event.wait(), Ok(()));
    assert_eq!(verdant::spawn(|| 3).join().unwrap(), 3);
}

#[test]
fn joining_a_green_thread_stuck_on_an_event_reports_would_block_forever() {
    let event = Rc::new(Event::new());
    let e = event.clone();
    let stuck = verdant::spawn(move || e.wait());
    assert!(matches!(stuck.join(), Err(JoinError::WouldBlockForever)));
}

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn async_result_is_send_and_sync() {
    assert_send_sync::<AsyncResult<u32>>();
    assert_send_sync::<AsyncResult<String, String>>();
}

#[test]
fn async_result_set_in_the_same_hub_wakes_every_waiter() {
    let result: AsyncResult<String, String> = AsyncResult::new();
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let r = result.clone();
            verdant::spawn(move || r.get())
        })
        .collect();
    verdant::yield_now();
    assert!(!result.ready());
    let r = result.clone();
    verdant::spawn(move || r.set("hello".into()))
        .join()
        .unwrap();
    for w in verdant::joinall(waiters) {
        assert_eq!(w.unwrap(), Ok(Ok("hello".to_string())));
    }
    assert!(result.ready() && result.successful());
    assert_eq!(result.try_get(), Some(Ok("hello".to_string())));
}

#[test]
fn async_result_errors_reach_every_waiter() {
    let result: AsyncResult<u32> = AsyncResult::new();
    let r = result.clone();
    let waiter = verdant::spawn(move || r.get().unwrap().map_err(|e| e.to_string()));
    verdant::yield_now();
    result.set_error(Arc::new(std::io::Error::other("no route")));
    assert_eq!(waiter.join().unwrap(), Err("no route".to_string()));
    assert!(result.ready());
    assert!(!result.successful());
}

#[test]
fn async_result_set_from_a_std_thread_wakes_a_green_thread() {
    let result: AsyncResult<u64, ()> = AsyncResult::new();
    let r = result.clone();
    let green = verdant::spawn(move || r.get());
    // Let the green thread register before the other OS thread exists.
    verdant::yield_now();
    let setter = result.clone();
    let os = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(5));
        setter.set(42);
    });
    assert_eq!(green.join().unwrap(), Ok(Ok(42)));
    os.join().unwrap();
    // No remote waker is left behind: a lone wait on this hub is a deadlock again.
    assert_eq!(Event::new().wait(), Err(WaitError::WouldBlockForever));
}

#[test]
fn async_result_get_on_a_plain_os_thread() {
    let result: AsyncResult<Vec<u8>, ()> = AsyncResult::new();
    let getters: Vec<_> = (0..3)
        .map(|_| {
            let r = result.clone();
            std::thread::spawn(move || r.get())
        })
        .collect();
    std::thread::sleep(Duration::from_millis(5));
    result.set(vec![1, 2, 3]);
    for g in getters {
        assert_eq!(g.join().unwrap(), Ok(Ok(vec![1, 2, 3])));
    }
}

#[test]
fn async_results_ping_pong_between_two_hubs() {
    const ROUNDS: u32 = 50;
    let pings: Vec<AsyncResult<u32, ()>> = (0..ROUNDS).map(|_| AsyncResult::new()).collect();
    let pongs: Vec<AsyncResult<u32, ()>> = (0..ROUNDS).map(|_| AsyncResult::new()).collect();
    let (pi, po) = (pings.clone(), pongs.clone());
    let other = std::thread::spawn(move || {
        // A green thread on the other hub answers each ping.
        let h = verdant::spawn(move || {
            for (ping, pong) in pi.iter().zip(&po) {
                let n = ping.get().unwrap().unwrap();
                pong.set(n + 1);
            }
        });
        h.join().unwrap();
    });
    let mut n = 0;
    for (ping, pong) in pings.iter().zip(&pongs) {
        ping.set(n);
        n = pong.get().unwrap().unwrap() + 1;
    }
    other.join().unwrap();
    assert_eq!(n, 2 * ROUNDS);
}

#[test]
fn async_result_get_timeout_and_a_later_set() {
    let result: AsyncResult<&str, ()> = AsyncResult::new();
    assert_eq!(
        result.get_timeout(Duration::from_millis(1)),
        Err(WaitError::TimedOut)
    );
    assert_eq!(result.wait_timeout(Duration::from_millis(1)), Ok(false));
    result.set("late");
    assert_eq!(result.get_timeout(Duration::from_millis(1)), Ok(Ok("late")));
    assert_eq!(result.wait_timeout(Duration::from_millis(1)), Ok(true));
}

#[test]
fn a_timeout_interrupts_async_result_get() {
    let result: AsyncResult<u8, ()> = AsyncResult::new();
    let t = Timeout::start(Duration::from_millis(1));
    assert_eq!(result.get(), Err(WaitError::TimedOut));
    assert!(t.expired());
    drop(t);
    // The departed waiter is not woken by, and does not disturb, a later set.
    result.set(1);
    assert_eq!(result.get(), Ok(Ok(1)));
}

#[test]
fn kill_unwinds_an_async_result_waiter() {
    let result: AsyncResult<u8, ()> = AsyncResult::new();
    let r = result.clone();
    let victim = verdant::spawn(move || r.get());
    let r = result.clone();
    let survivor = verdant::spawn(move || r.get());
    verdant::yield_now();
    victim.kill();
    assert!(victim.join().unwrap_err().is_killed());
    result.set(9);
    assert_eq!(survivor.join().unwrap(), Ok(Ok(9)));
}

#[test]
fn setting_again_replaces_the_outcome() {
    let result: AsyncResult<u8, &str> = AsyncResult::new();
    result.set(1);
    result.set_error("changed my mind");
    assert_eq!(result.try_get(), Some(Err("changed my mind")));
}
