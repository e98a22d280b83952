//! Hub behaviour that needs the crate-internal park/wake contract.

use super::*;

#[test]
fn main_parked_with_nothing_to_wake_it_gets_would_block_forever() {
    assert_eq!(park(), Err(WaitError::WouldBlockForever));
    // The hub keeps working afterwards.
    assert_eq!(crate::spawn(|| 5).join().unwrap(), 5);
}

#[test]
fn joining_a_green_thread_that_waits_forever_reports_it() {
    let h = crate::spawn(park);
    match h.join() {
        Err(JoinError::WouldBlockForever) => {}
        other => panic!("expected WouldBlockForever, got {other:?}"),
    }
}

#[test]
fn a_wake_from_another_os_thread_ends_a_park() {
    let waker = remote_waker();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(5));
        waker.wake();
    });
    // The remote waker is outstanding, so this is not a deadlock: park until woken.
    assert_eq!(park(), Ok(()));
    t.join().unwrap();
    // Once the other thread dropped its waker, a lone park is a deadlock again.
    assert_eq!(park(), Err(WaitError::WouldBlockForever));
}

#[test]
fn a_woken_task_runs_after_the_ones_already_ready() {
    let order = Rc::new(RefCell::new(Vec::new()));
    let o = order.clone();
    let sleeper_task: Rc<RefCell<Option<TaskRef>>> = Rc::new(RefCell::new(None));
    let st = sleeper_task.clone();
    let parked = crate::spawn(move || {
        *st.borrow_mut() = Some(current_task());
        park().unwrap();
        o.borrow_mut().push("parked one");
    });
    crate::yield_now();
    let o = order.clone();
    let other = crate::spawn(move || o.borrow_mut().push("ready one"));
    sleeper_task.borrow().as_ref().unwrap().wake();
    other.join().unwrap();
    parked.join().unwrap();
    assert_eq!(*order.borrow(), ["ready one", "parked one"]);
}

#[test]
fn a_wait_slot_woken_from_another_os_thread_ends_a_park() {
    let (registration, waker) = register_slot();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(5));
        waker.wakeup().wake();
    });
    // The slot is taken, so this is not a deadlock: park until woken.
    assert_eq!(park(), Ok(()));
    t.join().unwrap();
    drop(registration);
    // Once the slot is free, a lone park is a deadlock again.
    assert_eq!(park(), Err(WaitError::WouldBlockForever));
}

#[test]
fn a_stale_wait_slot_wakes_nothing() {
    let (first, stale) = register_slot();
    drop(first);
    // The next wait reuses the slot, with the next generation.
    let (_second, _current) = register_slot();
    assert!(matches!(stale.wakeup(), Wakeup::Stale));
    // From another OS thread the message is posted, and dropped by the hub.
    std::thread::spawn(move || stale.wakeup().wake())
        .join()
        .unwrap();
    let woken = crate::spawn(|| ());
    crate::yield_now();
    assert!(woken.is_finished());
}

#[test]
fn a_reused_task_record_starts_afresh() {
    // A record that was killed, named and joined...
    let killed = crate::Builder::new()
        .name("first")
        .spawn(|| {
            yield_now();
            1
        })
        .unwrap();
    let first_id = killed.id();
    killed.kill();
    assert!(killed.join().unwrap_err().is_killed());
    // ...is what the next spawns get (the hub keeps it): nothing of it may show.
    let spare = with_hub(|hub| hub.spare_tasks.len());
    assert!(spare >= 1, "the joined record is kept for reuse");
    let next = crate::spawn(|| {
        yield_now();
        let me = crate::current();
        (me.id(), me.name().map(str::to_owned))
    });
    assert!(!next.is_finished());
    let next_id = next.id();
    assert_ne!(next_id, first_id);
    assert_eq!(next.join().unwrap(), (next_id, None));
    // A Timeout that fired in a record's previous life does not fire in the next one.
    let timed = crate::spawn(|| {
        let _t = crate::Timeout::start(Duration::from_millis(1));
        crate::sleep(Duration::from_millis(50))
    });
    assert!(timed.join().unwrap().is_err());
    let after = crate::spawn(|| crate::sleep(Duration::from_millis(1)));
    assert!(after.join().unwrap().is_ok());
}

#[test]
fn dropping_the_handle_of_a_finished_green_thread_drops_its_result_at_once() {
    let witness = Rc::new(());
    let w = witness.clone();
    let h = crate::spawn(move || w);
    while !h.is_finished() {
        yield_now();
    }
    assert_eq!(Rc::strong_count(&witness), 2, "the result holds it");
    drop(h);
    assert_eq!(
        Rc::strong_count(&witness),
        1,
        "the result went with the handle"
    );
}

#[test]
fn spawns_of_one_closure_type_reuse_the_record_and_keep_their_own_values() {
    // The same closure type each time: from the second spawn on, the spare record (and
    // the cell in it that holds the closure, then the result) is reused. Each green thread
    // still sees its own capture and returns its own value, and what one captured is
    // dropped with it, not kept by the reused record.
    let witness = Rc::new(());
    let spawn_one = |i: u32, w: Rc<()>| {
        crate::spawn(move || {
            yield_now();
            drop(w);
            i * 10
        })
    };
    for i in 0..5 {
        let h = spawn_one(i, witness.clone());
        assert_eq!(h.join().unwrap(), i * 10);
        assert_eq!(
            Rc::strong_count(&witness),
            1,
            "the capture went with its run"
        );
    }
    // Killed before it starts: its closure is dropped unrun, and the next spawn of the
    // same type runs its own closure.
    let h = spawn_one(7, witness.clone());
    h.kill();
    assert!(h.join().unwrap_err().is_killed());
    assert_eq!(
        Rc::strong_count(&witness),
        1,
        "the unrun closure was dropped"
    );
    assert_eq!(spawn_one(8, witness.clone()).join().unwrap(), 80);
    // A handle still held keeps its result while later spawns of the type run.
    let kept = spawn_one(9, witness.clone());
    while !kept.is_finished() {
        yield_now();
    }
    assert_eq!(spawn_one(10, witness.clone()).join().unwrap(), 100);
    assert_eq!(kept.join().unwrap(), 90);
}

#[test]
fn closures_and_results_too_big_or_aligned_for_the_record_are_carried_boxed() {
    // Bigger than the record's inline cell, both ways, and over-aligned: each value
    // arrives whole and is dropped once, whatever the previous green thread on the same
    // record carried.
    #[repr(align(64))]
    struct Aligned(u8, Rc<()>);
    let witness = Rc::new(());
    let big = [7u8; 300];
    let w = witness.clone();
    let h = crate::spawn(move || {
        yield_now();
        let sum: u32 = big.iter().map(|&b| u32::from(b)).sum();
        ([sum as u64; 40], w)
    });
    let (out, w) = h.join().unwrap();
    assert_eq!(out, [2100u64; 40]);
    drop(w);
    let w = witness.clone();
    let a = Aligned(3, w.clone());
    let h = crate::spawn(move || {
        assert_eq!(std::ptr::addr_of!(a) as usize % 64, 0);
        drop(w);
        Aligned(a.0 + 1, a.1)
    });
    let r = h.join().unwrap();
    assert_eq!((r.0, std::ptr::addr_of!(r) as usize % 64), (4, 0));
    drop(r);
    // Small values right after the boxed ones, on the same records.
    assert_eq!(crate::spawn(|| 5u8).join().unwrap(), 5);
    assert_eq!(Rc::strong_count(&witness), 1, "every copy was dropped once");
}

#[test]
fn a_record_dropped_with_its_closure_or_result_in_it_drops_them() {
    let witness = Rc::new(());
    // Killed before it starts, and detached: the timer still holds the record; when it
    // fires, the green thread starts killed and drops its closure unrun.
    let w = witness.clone();
    let h = crate::spawn_later(Duration::from_millis(1), move || drop(w));
    h.kill();
    drop(h);
    // Detached while running: its result is stored in a record nobody joins, dropped
    // with the record once the green thread is done.
    let w = witness.clone();
    let detached = crate::spawn(move || {
        yield_now();
        w
    });
    drop(detached);
    let w = witness.clone();
    let joined = crate::spawn(move || drop(w));
    joined.join().unwrap();
    crate::sleep(Duration::from_millis(5)).unwrap();
    assert_eq!(
        Rc::strong_count(&witness),
        1,
        "the unrun closure and the unjoined result were dropped"
    );
}

#[test]
fn a_killed_or_panicked_green_threads_record_and_stack_serve_the_next_spawn() {
    use crate::stack::{kept_count, live_count, pooled_count};
    let witness = Rc::new(());
    // The next spawn takes a spare record with the stack it kept: the pool is not touched,
    // and the new green thread sees its own values only.
    let spawn_on_a_kept_stack = |what: &str| {
        let spare = with_hub(|hub| hub.spare_tasks.len());
        let (kept, pooled, live) = (kept_count(), pooled_count(), live_count());
        assert!(
            spare >= 1 && kept >= 1,
            "{what}: record kept ({spare}, {kept} stacks)"
        );
        let next = crate::spawn(|| {
            yield_now();
            (crate::current().id(), crate::current().name().is_none())
        });
        // Neither pooled nor new: the kept one, which stays in the kept set.
        assert_eq!(
            (kept_count(), pooled_count(), live_count()),
            (kept, pooled, live),
            "{what}: the spawn runs on a kept stack"
        );
        let id = next.id();
        assert_eq!(next.join().unwrap(), (id, true));
    };
    // Killed while suspended: its locals are dropped by the unwind.
    let w = witness.clone();
    let killed = crate::Builder::new()
        .name("killed")
        .spawn(move || {
            let _held = w;
            loop {
                yield_now();
            }
        })
        .unwrap();
    yield_now();
    killed.kill();
    assert!(killed.join().unwrap_err().is_killed());
    assert_eq!(
        Rc::strong_count(&witness),
        1,
        "the killed one's locals were dropped"
    );
    // The hub threw the kill from its own stack, which holds a handle to the greenlet until
    // the hub runs again (a record whose greenlet has another handle gets a new greenlet).
    crate::sleep(Duration::from_millis(1)).unwrap();
    spawn_on_a_kept_stack("killed");
    // Panicked: likewise.
    let w = witness.clone();
    let panicked = crate::spawn(move || {
        let _held = w;
        yield_now();
        panic!("on purpose");
    });
    assert!(panicked.join().unwrap_err().is_panic());
    assert_eq!(
        Rc::strong_count(&witness),
        1,
        "the panicked one's locals were dropped"
    );
    spawn_on_a_kept_stack("panicked");
}

#[test]
fn green_thread_ids_are_unique_across_os_threads_and_name_their_greenlet() {
    let ids = |n: usize| {
        (0..n)
            .map(|_| {
                crate::spawn(|| {
                    let id = crate::current().id();
                    assert_eq!(
                        Greenlet::current().id(),
                        id,
                        "the greenlet has the task's id"
                    );
                    id
                })
                .join()
                .unwrap()
            })
            .collect::<Vec<u64>>()
    };
    // More than one block of ids per thread.
    let other = std::thread::spawn(move || ids(3000));
    let mut all = ids(3000);
    all.extend(other.join().unwrap());
    let count = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), count, "an id was handed out twice");
}

#[test]
fn a_spare_record_is_rearmed_with_a_new_name_and_stack_size() {
    // Which stack a green thread runs on, read from its greenlet: a test that used the
    // stack to find out would overflow a wrong one and abort the whole test binary.
    let name_and_stack = || {
        (
            crate::current().name().map(str::to_owned),
            crate::greenlet::Greenlet::current().stack_size(),
        )
    };
    let first = crate::Builder::new()
        .name("first")
        .stack_size(64 * 1024)
        .spawn(name_and_stack)
        .unwrap();
    let (name, size) = first.join().unwrap();
    assert_eq!(name.as_deref(), Some("first"));
    let first_size = size.expect("a spawned green thread has a stack");
    assert!(
        (64 * 1024..128 * 1024).contains(&first_size),
        "{first_size}"
    );
    // The record (and its 64 KiB stack) is spare: re-armed with another size and name.
    let second = crate::Builder::new()
        .name("second")
        .stack_size(128 * 1024)
        .spawn(name_and_stack)
        .unwrap();
    let (name, size) = second.join().unwrap();
    assert_eq!(name.as_deref(), Some("second"));
    let second_size = size.expect("a spawned green thread has a stack");
    assert!(second_size >= 128 * 1024, "{second_size}");
    let third = crate::spawn(name_and_stack);
    let (name, size) = third.join().unwrap();
    assert_eq!(name, None);
    assert!(size.expect("a stack") >= crate::stack::DEFAULT_STACK_SIZE);
}

#[test]
fn a_green_thread_that_joins_itself_panics_instead_of_waiting_forever() {
    let own: Rc<RefCell<Option<JoinHandle<()>>>> = Rc::default();
    let message = Rc::new(RefCell::new(String::new()));
    let (o, m) = (own.clone(), message.clone());
    let h = crate::spawn(move || {
        yield_now();
        let me = o.borrow_mut().take().expect("the handle was stored");
        let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| me.join()))
            .expect_err("joining itself panics");
        *m.borrow_mut() = panic_message(err.as_ref()).to_owned();
    });
    *own.borrow_mut() = Some(h);
    while message.borrow().is_empty() {
        yield_now();
    }
    assert!(message.borrow().contains("cannot join itself"));
}

/// A `join` that a `Timeout` ends takes its waiter entry off the joined green thread's
/// record (else the joined one, finishing, would wake whatever the joiner waits on next).
#[test]
fn a_join_ended_by_a_timeout_leaves_no_waiter_behind() {
    let go = Rc::new(Cell::new(false));
    let g = go.clone();
    let target = crate::spawn(move || {
        while !g.get() {
            crate::yield_now();
        }
        7
    });
    let record = target.task_ref();
    let joined = crate::with_timeout(Duration::from_millis(2), move || target.join());
    assert!(
        matches!(joined, Err(_) | Ok(Err(JoinError::TimedOut))),
        "the join was ended by its timeout"
    );
    assert_eq!(
        record.waiter_count(),
        0,
        "the timed-out joiner is no waiter any more"
    );
    // The joined one still finishes.
    go.set(true);
    while !record.is_finished() {
        crate::yield_now();
    }
}

/// A second joiner (the waiters' vector, behind the inline first one) that leaves by a
/// timeout empties the vector and clears the record's flag for it: the finish wakes the
/// first joiner alone, and the record, kept for reuse, has no waiters (`Task::reset`
/// asserts, in debug builds, that the flag agrees with the vector). A third one that stays
/// in the vector is woken by the finish.
#[test]
fn joiners_after_the_first_are_woken_and_a_timed_out_one_is_forgotten() {
    let go = Rc::new(Cell::new(false));
    let g = go.clone();
    let target = Rc::new(crate::spawn(move || {
        while !g.get() {
            crate::yield_now();
        }
        7
    }));
    let waiter = |t: Rc<crate::JoinHandle<i32>>, timeout: Duration| {
        crate::spawn(move || matches!(t.wait_timeout(timeout), Ok(true)))
    };
    let first = waiter(target.clone(), Duration::from_secs(60));
    crate::yield_now();
    // 50 ms: time enough to be seen waiting below, even in a debug build under qemu.
    let second = waiter(target.clone(), Duration::from_millis(50));
    crate::yield_now();
    assert_eq!(target.task_ref().waiter_count(), 2, "both wait");
    assert!(!second.join().unwrap(), "the second one's wait timed out");
    assert_eq!(target.task_ref().waiter_count(), 1, "the first one waits");
    let third = waiter(target.clone(), Duration::from_secs(60));
    crate::yield_now();
    assert_eq!(
        target.task_ref().waiter_count(),
        2,
        "the first and the third wait"
    );
    go.set(true);
    assert!(first.join().unwrap(), "the first one was woken");
    assert!(third.join().unwrap(), "the third one was woken");
    let target = Rc::into_inner(target).expect("the waiters' handles are gone");
    assert_eq!(target.join().unwrap(), 7);
    let next = crate::spawn(|| 8);
    assert_eq!(next.task_ref().waiter_count(), 0);
    assert_eq!(next.join().unwrap(), 8);
}

/// Joiners killed while they wait leave their entries on the joined record until it
/// finishes, which takes them all: a record kept for reuse has no waiters (what
/// `Task::reset` relies on, and asserts in debug builds).
#[test]
fn joiners_killed_while_waiting_leave_no_waiter_on_the_reused_record() {
    let go = Rc::new(Cell::new(false));
    let g = go.clone();
    let target = Rc::new(crate::spawn(move || {
        while !g.get() {
            crate::yield_now();
        }
        7
    }));
    let waiter = |t: Rc<crate::JoinHandle<i32>>| {
        crate::spawn(move || t.wait_timeout(Duration::from_secs(60)).is_ok())
    };
    let (a, b) = (waiter(target.clone()), waiter(target.clone()));
    for _ in 0..3 {
        crate::yield_now();
    }
    assert_eq!(target.task_ref().waiter_count(), 2, "both wait");
    a.kill();
    b.kill();
    assert!(a.join().unwrap_err().is_killed());
    assert!(b.join().unwrap_err().is_killed());
    go.set(true);
    let target = Rc::into_inner(target).expect("the waiters' handles are gone");
    assert_eq!(target.join().unwrap(), 7);
    assert!(
        with_hub(|hub| hub.spare_tasks.len()) >= 1,
        "the record is kept"
    );
    let next = crate::spawn(|| 8);
    assert_eq!(next.task_ref().waiter_count(), 0);
    assert_eq!(next.join().unwrap(), 8);
}

/// Counts its drops.
struct CountedDrop(Rc<Cell<u32>>);

impl Drop for CountedDrop {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

#[test]
fn a_detached_green_thread_whose_record_has_another_handle_drops_its_result_as_it_ends() {
    let drops = Rc::new(Cell::new(0));
    let d = drops.clone();
    let handle = crate::spawn(move || CountedDrop(d));
    // Another handle to the record, as a pending wake-up or a cross-thread waker holds one:
    // the green thread is still detached once its `JoinHandle` is gone.
    let other = handle.task_ref();
    drop(handle);
    let seen = drops.clone();
    assert_eq!(
        crate::spawn(move || seen.get()).join().unwrap(),
        1,
        "its result was dropped as it ended, not left for the record's last handle"
    );
    drop(other);
    assert_eq!(drops.get(), 1, "and only once");
}

#[test]
fn the_last_join_handle_of_a_finished_green_thread_drops_its_result_whatever_holds_the_record() {
    let drops = Rc::new(Cell::new(0));
    let d = drops.clone();
    let handle = crate::spawn(move || CountedDrop(d));
    let other = handle.task_ref();
    yield_now();
    assert!(handle.is_finished());
    assert_eq!(drops.get(), 0, "the result waits for its handle");
    drop(handle);
    assert_eq!(
        drops.get(),
        1,
        "dropped with the handle, not with the record"
    );
    drop(other);
    assert_eq!(drops.get(), 1, "and only once");
    // A record whose result was taken or dropped serves later spawns as before.
    assert_eq!(crate::spawn(|| 3).join().unwrap(), 3);
}

#[test]
fn a_handle_joined_with_a_timeout_hands_its_record_on_for_reuse() {
    let first = crate::spawn(|| 1u8);
    let before = with_hub(|hub| hub.spare_tasks.len());
    assert_eq!(first.join_timeout(Duration::from_secs(5)).unwrap(), 1);
    assert_eq!(
        with_hub(|hub| hub.spare_tasks.len()),
        before + 1,
        "the joined record went to the spare ones"
    );
    assert_eq!(crate::spawn(|| 2u8).join().unwrap(), 2);
}

#[test]
fn a_busy_hub_polls_the_reactor_only_while_a_green_thread_waits_on_an_fd() {
    use std::io::{Read, Write};
    // Two green threads yielding to each other keep the run queue busy for some 16 polls'
    // worth of runs (`POLL_EVERY`).
    let yields = 8 * POLL_EVERY as usize;
    let busy = move || {
        let a = crate::spawn(move || (0..yields).for_each(|_| yield_now()));
        let b = crate::spawn(move || (0..yields).for_each(|_| yield_now()));
        a.join().unwrap();
        b.join().unwrap();
    };
    // No fd waiter: a poll could find nothing that a turn does not see (the waker's news
    // is `inbox.pending`), so none is made while busy.
    let before = crate::reactor::polls();
    busy();
    let polls = crate::reactor::polls() - before;
    assert!(
        polls <= 2,
        "{polls} polls with no green thread waiting on an fd"
    );
    // A green thread parked on a socket: its fd is polled every `POLL_EVERY` runs still.
    let (r, w) = crate::net::UnixStream::pair().unwrap();
    let reader = crate::spawn(move || {
        let mut byte = [0u8; 1];
        (&r).read_exact(&mut byte).map(|()| byte[0])
    });
    yield_now();
    let before = crate::reactor::polls();
    busy();
    let polls = crate::reactor::polls() - before;
    assert!(
        polls >= 8,
        "{polls} polls with a green thread waiting on an fd"
    );
    (&w).write_all(&[7]).unwrap();
    assert_eq!(reader.join().unwrap().unwrap(), 7);
}
