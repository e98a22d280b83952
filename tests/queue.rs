//! Behaviour of `Queue` and `Channel`: between green threads of one hub, and between OS
//! threads (plain threads and other hubs). No test measures time.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use verdant::sync::{RecvError, SendError, TryRecvError, TrySendError};
use verdant::{Channel, Queue, Timeout};

/// Lets every ready green thread run until it blocks.
fn settle() {
    for _ in 0..4 {
        verdant::yield_now();
    }
}

#[test]
fn producer_and_consumer_green_threads() {
    let q = Queue::new();
    let producer = {
        let q = q.clone();
        verdant::spawn(move || {
            for i in 0..100 {
                q.put(i).unwrap();
                if i % 7 == 0 {
                    verdant::yield_now();
                }
            }
            q.close();
        })
    };
    let consumer = {
        let q = q.clone();
        verdant::spawn(move || q.iter().collect::<Vec<i32>>())
    };
    producer.join().unwrap();
    assert_eq!(consumer.join().unwrap(), (0..100).collect::<Vec<_>>());
}

#[test]
fn bounded_put_blocks_until_a_get() {
    let q = Queue::bounded(1);
    let log = Rc::new(RefCell::new(Vec::new()));
    q.put(1).unwrap();
    assert!(q.is_full());
    let putter = {
        let (q, log) = (q.clone(), log.clone());
        verdant::spawn(move || {
            log.borrow_mut().push("putting 2");
            q.put(2).unwrap();
            log.borrow_mut().push("put 2");
        })
    };
    settle();
    assert_eq!(
        *log.borrow(),
        ["putting 2"],
        "the putter must block while the queue is full"
    );
    assert_eq!(q.get(), Ok(1));
    // The get moved the blocked putter's item in: the queue is full again.
    assert_eq!(q.len(), 1);
    putter.join().unwrap();
    assert_eq!(*log.borrow(), ["putting 2", "put 2"]);
    assert_eq!(q.get(), Ok(2));
    assert_eq!(q.capacity(), Some(1));
}

#[test]
fn items_and_waiting_getters_are_served_in_fifo_order() {
    let q = Queue::new();
    let getters: Vec<_> = (0..4)
        .map(|_| {
            let q = q.clone();
            verdant::spawn(move || q.get().unwrap())
        })
        .collect();
    settle();
    for i in 0..4 {
        q.put(i).unwrap();
    }
    let got: Vec<i32> = getters.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(got, [0, 1, 2, 3]);
}

#[test]
fn waiting_putters_are_served_in_fifo_order() {
    let q = Queue::bounded(1);
    q.put(-1).unwrap();
    let putters: Vec<_> = (0..3)
        .map(|i| {
            let q = q.clone();
            verdant::spawn(move || q.put(i).unwrap())
        })
        .collect();
    settle();
    let got: Vec<i32> = (0..4).map(|_| q.get().unwrap()).collect();
    assert_eq!(got, [-1, 0, 1, 2]);
    for p in putters {
        p.join().unwrap();
    }
}

#[test]
fn a_getter_that_times_out_leaves_nothing_registered() {
    let q: Queue<u32> = Queue::new();
    assert_eq!(
        q.get_timeout(Duration::from_millis(2)),
        Err(RecvError::TimedOut)
    );
    {
        let _t = Timeout::start(Duration::from_millis(2));
        assert_eq!(q.get(), Err(RecvError::TimedOut));
    }
    assert!(format!("{q:?}").contains("getters: 0"), "{q:?}");
    // A later item is not handed to a departed waiter.
    q.put(9).unwrap();
    assert_eq!(q.try_get(), Ok(9));
}

#[test]
fn a_putter_that_times_out_gets_its_item_back() {
    let q = Queue::bounded(1);
    q.put("first").unwrap();
    match q.put_timeout("second", Duration::from_millis(2)) {
        Err(SendError::TimedOut(item)) => assert_eq!(item, "second"),
        other => panic!("expected TimedOut, got {other:?}"),
    }
    assert!(format!("{q:?}").contains("putters: 0"), "{q:?}");
    assert_eq!(q.get(), Ok("first"));
    assert_eq!(q.try_get(), Err(TryRecvError::Empty));
}

#[test]
fn waiters_that_leave_from_the_middle_keep_the_others_in_fifo_order() {
    // Getters 0..5 wait; 1 and 3 are killed; items then go to 0, 2, 4 in that order.
    let q: Queue<u32> = Queue::new();
    let order = Rc::new(RefCell::new(Vec::new()));
    let getters: Vec<_> = (0..5)
        .map(|i| {
            let (q, order) = (q.clone(), order.clone());
            verdant::spawn(move || {
                let item = q.get().unwrap();
                order.borrow_mut().push((i, item));
            })
        })
        .collect();
    settle();
    getters[1].kill();
    getters[3].kill();
    settle();
    assert!(format!("{q:?}").contains("getters: 3"), "{q:?}");
    for item in 10..13 {
        q.put(item).unwrap();
    }
    for g in getters {
        let _ = g.join();
    }
    assert_eq!(*order.borrow(), [(0, 10), (2, 11), (4, 12)]);
    assert_eq!(q.try_get(), Err(TryRecvError::Empty));

    // The same for putters blocked on a full queue: 1 and 3 time out, 0, 2, 4 get in.
    let q = Queue::bounded(1);
    q.put(-1).unwrap();
    let putters: Vec<_> = (0..5)
        .map(|i| {
            let q = q.clone();
            verdant::spawn(move || {
                if i % 2 == 1 {
                    q.put_timeout(i, Duration::from_millis(1)).is_ok()
                } else {
                    q.put(i).is_ok()
                }
            })
        })
        .collect();
    settle();
    // Let the two deadlines pass, then let those putters leave.
    verdant::sleep(Duration::from_millis(5)).unwrap();
    settle();
    assert!(format!("{q:?}").contains("putters: 3"), "{q:?}");
    let got: Vec<i32> = (0..4).map(|_| q.get().unwrap()).collect();
    assert_eq!(got, [-1, 0, 2, 4]);
    let done: Vec<bool> = putters.into_iter().map(|p| p.join().unwrap()).collect();
    assert_eq!(done, [true, false, true, false, true]);
}

#[test]
fn an_item_handed_to_a_getter_whose_deadline_passes_before_it_runs_is_returned() {
    for ch in [Queue::new(), Queue::bounded(0)] {
        let getter = {
            let ch = ch.clone();
            verdant::spawn(move || ch.get_timeout(Duration::from_millis(500)))
        };
        settle();
        // Handed over now; the getter only runs after its deadline has passed too (the OS
        // thread sleeps). 500 ms leaves room for qemu on a busy machine to reach the `put`
        // first; the bounded `put` fails instead of hanging if it ever does not.
        ch.put_timeout(7, Duration::from_secs(10)).unwrap();
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(getter.join().unwrap(), Ok(7));
        assert!(format!("{ch:?}").contains("getters: 0"), "{ch:?}");
        assert_eq!(ch.try_get(), Err(TryRecvError::Empty));
    }
}

#[test]
fn a_putter_whose_item_was_taken_before_its_deadline_passed_succeeds() {
    for q in [Queue::bounded(0), Queue::bounded(1)] {
        if q.capacity() == Some(1) {
            q.put(0).unwrap();
        }
        let putters: Vec<_> = (1..=2)
            .map(|i| {
                let q = q.clone();
                verdant::spawn(move || q.put_timeout(i, Duration::from_millis(500)))
            })
            .collect();
        settle();
        // Serves the first putter only; both deadlines pass before either runs again (the
        // OS thread sleeps, so no green thread runs). 500 ms leaves room for qemu on a busy
        // machine to reach the `get` before the deadlines; the bounded `get` fails instead
        // of hanging if it ever does not.
        let first = q.get_timeout(Duration::from_secs(10)).unwrap();
        std::thread::sleep(Duration::from_millis(600));
        let results: Vec<_> = putters.into_iter().map(|p| p.join().unwrap()).collect();
        assert!(
            matches!(results[..], [Ok(()), Err(SendError::TimedOut(2))]),
            "{results:?}"
        );
        assert!(format!("{q:?}").contains("putters: 0"), "{q:?}");
        let rest: Vec<_> = std::iter::from_fn(|| q.try_get().ok()).collect();
        match q.capacity() {
            Some(0) => assert_eq!((first, rest), (1, vec![])),
            _ => assert_eq!((first, rest), (0, vec![1])),
        }
    }
}

#[test]
fn an_item_handed_to_a_killed_getter_goes_back_to_the_queue() {
    let q = Queue::new();
    let doomed = {
        let q = q.clone();
        verdant::spawn(move || q.get().unwrap())
    };
    let patient = {
        let q = q.clone();
        verdant::spawn(move || q.get().unwrap())
    };
    settle();
    q.put("a").unwrap(); // handed to `doomed`, which has not run yet
    doomed.kill();
    assert!(doomed.join().unwrap_err().is_killed());
    // The item moved on to the next waiter; nothing was lost, nothing is registered.
    assert_eq!(patient.join().unwrap(), "a");
    assert!(format!("{q:?}").contains("getters: 0"), "{q:?}");
    assert!(q.is_empty());
}

#[test]
fn an_item_handed_to_a_killed_getter_stays_queued_if_nobody_else_waits() {
    let q = Queue::new();
    let doomed = {
        let q = q.clone();
        verdant::spawn(move || q.get().unwrap())
    };
    settle();
    q.put(42).unwrap();
    doomed.kill();
    assert!(doomed.join().unwrap_err().is_killed());
    assert_eq!(q.try_get(), Ok(42));
}

#[test]
fn a_killed_putter_enqueues_nothing() {
    let q = Queue::bounded(1);
    q.put(1).unwrap();
    let doomed = {
        let q = q.clone();
        verdant::spawn(move || q.put(2))
    };
    settle();
    doomed.kill();
    assert!(doomed.join().unwrap_err().is_killed());
    assert_eq!(q.get(), Ok(1));
    assert_eq!(q.try_get(), Err(TryRecvError::Empty));
    assert_eq!(q.unfinished_tasks(), 1, "only the first item was ever put");
}

#[test]
fn join_waits_for_task_done_of_every_item() {
    let q = Queue::new();
    let processed = Rc::new(RefCell::new(Vec::new()));
    let worker = {
        let (q, processed) = (q.clone(), processed.clone());
        verdant::spawn(move || {
            while let Ok(job) = q.get() {
                verdant::sleep(Duration::from_millis(1)).unwrap();
                processed.borrow_mut().push(job);
                q.task_done();
            }
        })
    };
    for job in 0..5 {
        q.put(job).unwrap();
    }
    assert_eq!(q.unfinished_tasks(), 5);
    q.join().unwrap();
    assert_eq!(*processed.borrow(), [0, 1, 2, 3, 4]);
    assert_eq!(q.unfinished_tasks(), 0);
    q.close();
    worker.join().unwrap();
}

#[test]
fn join_timeout_reports_unfinished_work() {
    let q = Queue::new();
    q.put(()).unwrap();
    assert_eq!(q.join_timeout(Duration::from_millis(2)), Ok(false));
    q.get().unwrap();
    q.task_done();
    assert_eq!(q.join_timeout(Duration::from_millis(2)), Ok(true));
}

#[test]
#[should_panic(expected = "task_done called more times")]
fn too_many_task_done_calls_panic() {
    let q: Queue<()> = Queue::new();
    q.task_done();
}

#[test]
fn close_wakes_getters_and_putters() {
    let empty: Queue<u8> = Queue::new();
    let getters: Vec<_> = (0..2)
        .map(|_| {
            let q = empty.clone();
            verdant::spawn(move || q.get())
        })
        .collect();
    let full = Queue::bounded(1);
    full.put(0).unwrap();
    let putter = {
        let q = full.clone();
        verdant::spawn(move || q.put(1))
    };
    settle();
    empty.close();
    full.close();
    for g in getters {
        assert_eq!(g.join().unwrap(), Err(RecvError::Closed));
    }
    assert!(matches!(putter.join().unwrap(), Err(SendError::Closed(1))));
    // Buffered items still drain, then Closed.
    assert_eq!(full.get(), Ok(0));
    assert_eq!(full.get(), Err(RecvError::Closed));
    assert_eq!(full.try_put(5), Err(TrySendError::Closed(5)));
    assert!(full.is_closed());
}

#[test]
fn errors_explain_themselves() {
    assert!(RecvError::Closed.to_string().contains("closed"));
    assert!(TryRecvError::Empty.to_string().contains("get()"));
    assert!(TrySendError::Full(()).to_string().contains("put()"));
    assert_eq!(SendError::TimedOut(7).into_inner(), 7);
    let io: std::io::Error = RecvError::TimedOut.into();
    assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
}

#[test]
fn queue_is_send_sync_and_clone() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Queue<String>>();
    assert_send_sync::<Channel<String>>();
}

#[test]
fn a_std_thread_produces_for_green_consumers() {
    let q = Queue::bounded(16);
    let producer = {
        let q = q.clone();
        std::thread::spawn(move || {
            for i in 0..2000u32 {
                q.put(i).unwrap();
            }
            q.close();
        })
    };
    let consumers: Vec<_> = (0..3)
        .map(|_| {
            let q = q.clone();
            verdant::spawn(move || q.iter().collect::<Vec<u32>>())
        })
        .collect();
    let mut all: Vec<u32> = consumers
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    producer.join().unwrap();
    all.sort_unstable();
    assert_eq!(all, (0..2000).collect::<Vec<_>>());
}

#[test]
fn green_threads_on_two_hubs_exchange_through_queues_both_ways() {
    let requests: Queue<u64> = Queue::bounded(4);
    let replies: Queue<u64> = Queue::new();
    let server = {
        let (requests, replies) = (requests.clone(), replies.clone());
        std::thread::spawn(move || {
            // Green threads of the other OS thread's hub.
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    let (requests, replies) = (requests.clone(), replies.clone());
                    verdant::spawn(move || {
                        while let Ok(n) = requests.get() {
                            replies.put(n * 2).unwrap();
                        }
                    })
                })
                .collect();
            for w in workers {
                w.join().unwrap();
            }
        })
    };
    let client = {
        let requests = requests.clone();
        verdant::spawn(move || {
            for n in 0..500 {
                requests.put(n).unwrap();
            }
            requests.close();
        })
    };
    let collector = verdant::spawn(move || (0..500).map(|_| replies.get().unwrap()).sum::<u64>());
    client.join().unwrap();
    assert_eq!(collector.join().unwrap(), 2 * (0..500).sum::<u64>());
    server.join().unwrap();
}

#[test]
fn channel_put_returns_once_a_getter_has_the_item() {
    let ch = Channel::new();
    let log = Rc::new(RefCell::new(Vec::new()));
    let putter = {
        let (ch, log) = (ch.clone(), log.clone());
        verdant::spawn(move || {
            ch.put(1).unwrap();
            log.borrow_mut().push("put returned");
        })
    };
    settle();
    assert!(
        log.borrow().is_empty(),
        "put must block until a get takes the item"
    );
    assert_eq!(ch.try_put(2), Err(TrySendError::Full(2)));
    assert_eq!(ch.get(), Ok(1));
    putter.join().unwrap();
    assert_eq!(*log.borrow(), ["put returned"]);
    assert_eq!(
        ch.get_timeout(Duration::from_millis(2)),
        Err(RecvError::TimedOut)
    );
}

#[test]
fn channel_between_two_hubs_both_ways() {
    let ping: Channel<u32> = Channel::new();
    let pong: Channel<u32> = Channel::new();
    let other = {
        let (ping, pong) = (ping.clone(), pong.clone());
        std::thread::spawn(move || {
            let echo = verdant::spawn(move || {
                while let Ok(n) = ping.get() {
                    pong.put(n + 1).unwrap();
                }
            });
            echo.join().unwrap();
        })
    };
    let mut n = 0;
    for _ in 0..200 {
        ping.put(n).unwrap();
        n = pong.get().unwrap();
    }
    assert_eq!(n, 200);
    ping.close();
    other.join().unwrap();
}

#[test]
fn channel_close_returns_the_blocked_putters_item() {
    let ch = Channel::new();
    let putter = {
        let ch = ch.clone();
        verdant::spawn(move || ch.put(String::from("kept")))
    };
    settle();
    ch.close();
    match putter.join().unwrap() {
        Err(SendError::Closed(s)) => assert_eq!(s, "kept"),
        other => panic!("expected Closed, got {other:?}"),
    }
    assert_eq!(ch.get(), Err(RecvError::Closed));
}

#[test]
fn a_bounded_putter_served_and_drained_before_it_runs_returns_ok() {
    let q = Queue::bounded(1);
    q.put(1).unwrap();
    let putter = {
        let q = q.clone();
        verdant::spawn(move || q.put(2))
    };
    settle();
    assert!(format!("{q:?}").contains("putters: 1"), "{q:?}");
    // The first get moves the putter's item into the buffer (full again) and wakes it; the
    // second drains the queue before the putter runs. Its item was enqueued: `Ok`.
    assert_eq!(q.try_get(), Ok(1));
    assert!(q.is_full());
    assert_eq!(q.try_get(), Ok(2));
    assert_eq!(putter.join().unwrap(), Ok(()));
    assert!(format!("{q:?}").contains("putters: 0"), "{q:?}");
    assert_eq!(q.try_get(), Err(TryRecvError::Empty));
    assert_eq!(q.unfinished_tasks(), 2);
}

#[test]
fn an_item_handed_to_a_killed_channel_getter_goes_to_the_next_getter_or_stays() {
    for next_getter_waits in [true, false] {
        let ch = Channel::new();
        let doomed = {
            let ch = ch.clone();
            verdant::spawn(move || ch.get().unwrap())
        };
        let patient = next_getter_waits.then(|| {
            let ch = ch.clone();
            verdant::spawn(move || ch.get().unwrap())
        });
        settle();
        ch.put("a").unwrap(); // handed to `doomed`, which has not run yet
        doomed.kill();
        assert!(doomed.join().unwrap_err().is_killed());
        match patient {
            Some(patient) => {
                assert_eq!(patient.join().unwrap(), "a");
                assert_eq!(ch.try_get(), Err(TryRecvError::Empty));
            }
            // Nobody else waits: it stays, and the next get takes it.
            None => assert_eq!(ch.try_get(), Ok("a")),
        }
        assert!(format!("{ch:?}").contains("getters: 0"), "{ch:?}");
    }
}
