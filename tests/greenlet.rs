//! Behaviour of `verdant::greenlet::Greenlet`: greenlet's semantics in Rust.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use verdant::greenlet::{Builder, Greenlet, GreenletExit, Value};

fn num(v: Value) -> i64 {
    *v.downcast::<i64>().expect("an i64")
}

#[test]
fn main_greenlet_is_current_and_started() {
    let main = Greenlet::main();
    assert!(main.is_main() && main.is_started() && main.is_current() && !main.is_dead());
    assert_eq!(Greenlet::current(), main);
    assert!(main.parent().is_none());
}

#[test]
fn values_travel_both_ways_and_return_goes_to_parent() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    let g = Greenlet::new(move |v| {
        l.borrow_mut().push(format!("start {}", num(v)));
        let again = Greenlet::main().switch(10i64);
        l.borrow_mut().push(format!("again {}", num(again)));
        Box::new(99i64)
    });
    assert!(!g.is_started());
    assert_eq!(num(g.switch(1i64)), 10);
    assert!(g.is_started() && !g.is_dead() && !g.is_current());
    assert_eq!(num(g.switch(2i64)), 99);
    assert!(g.is_dead());
    assert_eq!(*log.borrow(), vec!["start 1", "again 2"]);
}

#[test]
fn switching_to_self_returns_the_value() {
    let main = Greenlet::current();
    assert_eq!(num(main.switch(5i64)), 5);
}

#[test]
fn symmetric_switches_between_siblings() {
    // a and b are both children of main; they switch to each other directly.
    let trace = Rc::new(RefCell::new(String::new()));
    let b_slot: Rc<RefCell<Option<Greenlet>>> = Rc::new(RefCell::new(None));
    let (t1, t2) = (trace.clone(), trace.clone());
    let bs = b_slot.clone();
    let a = Greenlet::new(move |_| {
        for i in 0..3 {
            t1.borrow_mut().push_str(&format!("a{i} "));
            let b = bs.borrow().clone().unwrap();
            b.switch(());
        }
        Box::new("a done")
    });
    let a2 = a.clone();
    let b = Greenlet::new(move |_| {
        for i in 0..3 {
            t2.borrow_mut().push_str(&format!("b{i} "));
            a2.switch(());
        }
        Box::new("b done")
    });
    *b_slot.borrow_mut() = Some(b.clone());
    let r = a.switch(());
    // a finishes first (after its third switch to b, b switches back to a, a returns).
    assert_eq!(*r.downcast::<&str>().unwrap(), "a done");
    assert_eq!(trace.borrow().as_str(), "a0 b0 a1 b1 a2 b2 ");
    assert!(a.is_dead() && !b.is_dead());
    assert_eq!(*b.switch(()).downcast::<&str>().unwrap(), "b done");
}

#[test]
fn switching_to_a_dead_greenlet_goes_to_its_parent() {
    let g = Greenlet::new(|v| v);
    assert_eq!(num(g.switch(3i64)), 3);
    assert!(g.is_dead());
    // The parent is main (us): switching to dead g is switching to ourselves.
    assert_eq!(num(g.switch(4i64)), 4);
}

#[test]
fn parent_chains_and_cycle_refusal() {
    let outer = Greenlet::new(|v| v);
    let inner = Builder::new().parent(&outer).spawn(|v| v).unwrap();
    assert_eq!(inner.parent().unwrap(), outer);
    assert_eq!(outer.parent().unwrap(), Greenlet::main());
    assert!(outer.set_parent(&inner).is_err(), "cycle through a child");
    assert!(outer.set_parent(&outer).is_err(), "self as parent");
    assert!(
        Greenlet::main().set_parent(&outer).is_err(),
        "main has no parent"
    );
    let msg = outer.set_parent(&inner).unwrap_err().to_string();
    assert!(msg.contains("cycle"), "{msg}");
    // inner's return goes to outer, which returns it to main.
    let r = inner.switch(7i64);
    assert_eq!(num(r), 7);
    assert!(inner.is_dead() && outer.is_dead());
}

#[test]
fn a_child_created_inside_a_greenlet_returns_to_it() {
    let g = Greenlet::new(|_| {
        let child = Greenlet::new(|v| Box::new(num(v) * 2) as Value);
        assert_eq!(child.parent().unwrap(), Greenlet::current());
        let doubled = num(child.switch(21i64));
        Box::new(doubled + 1)
    });
    assert_eq!(num(g.switch(())), 43);
}

#[test]
fn panic_in_a_greenlet_resumes_in_its_parent() {
    let g = Greenlet::new(|_| -> Value { panic!("kaboom") });
    let err = catch_unwind(AssertUnwindSafe(|| g.switch(()))).unwrap_err();
    assert_eq!(*err.downcast_ref::<&str>().unwrap(), "kaboom");
    assert!(g.is_dead());
    // The thread's greenlets still work afterwards.
    let h = Greenlet::new(|v| v);
    assert_eq!(num(h.switch(1i64)), 1);
}

#[test]
fn throw_raises_at_the_pending_switch() {
    let caught = Rc::new(Cell::new(false));
    let c = caught.clone();
    let g = Greenlet::new(move |_| {
        let r = catch_unwind(AssertUnwindSafe(|| Greenlet::main().switch(())));
        let payload = r.unwrap_err();
        c.set(payload.downcast_ref::<&str>() == Some(&"injected"));
        Box::new(1i64)
    });
    g.switch(());
    assert_eq!(num(g.throw("injected")), 1);
    assert!(caught.get());
}

#[test]
fn uncaught_throw_propagates_to_parent_and_greenlet_exit_is_a_normal_end() {
    let g = Greenlet::new(|_| {
        Greenlet::main().switch(());
        unreachable!()
    });
    g.switch(());
    let err = catch_unwind(AssertUnwindSafe(|| g.throw(42u8))).unwrap_err();
    assert_eq!(err.downcast_ref::<u8>(), Some(&42));
    assert!(g.is_dead());

    let h = Greenlet::new(|_| {
        Greenlet::main().switch(());
        unreachable!()
    });
    h.switch(());
    let v = h.throw(GreenletExit);
    assert!(v.is::<GreenletExit>());
    assert!(h.is_dead());
}

#[test]
fn throw_into_unstarted_greenlet_never_runs_it() {
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let g = Greenlet::new(move |_| {
        r.set(true);
        Box::new(())
    });
    assert!(g.throw(GreenletExit).is::<GreenletExit>());
    assert!(g.is_dead() && !ran.get());
    let h = Greenlet::new(|v| v);
    let err = catch_unwind(AssertUnwindSafe(|| h.throw("early"))).unwrap_err();
    assert_eq!(*err.downcast_ref::<&str>().unwrap(), "early");
}

struct CountDrop(Rc<Cell<u32>>);
impl Drop for CountDrop {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

#[test]
fn dropping_the_last_handle_unwinds_a_suspended_greenlet_once() {
    let drops = Rc::new(Cell::new(0));
    let saw_exit = Rc::new(Cell::new(false));
    let (d, s) = (drops.clone(), saw_exit.clone());
    let g = Greenlet::new(move |_| {
        let _a = CountDrop(d.clone());
        let _b = CountDrop(d.clone());
        let r = catch_unwind(AssertUnwindSafe(|| Greenlet::main().switch(())));
        if let Err(p) = r {
            s.set(p.is::<GreenletExit>());
            std::panic::resume_unwind(p);
        }
        Box::new(())
    });
    g.switch(());
    assert_eq!(drops.get(), 0);
    drop(g);
    assert_eq!(drops.get(), 2);
    assert!(saw_exit.get(), "GreenletExit was raised inside");
    // We are still the running greenlet and can keep going.
    assert!(Greenlet::current().is_main());
}

#[test]
fn dropping_an_unstarted_greenlet_drops_its_closure() {
    let drops = Rc::new(Cell::new(0));
    let guard = CountDrop(drops.clone());
    let g = Greenlet::new(move |v| {
        let _g = &guard;
        v
    });
    drop(g);
    assert_eq!(drops.get(), 1);
}

#[test]
fn current_inside_a_greenlet() {
    let g = Builder::new()
        .name("inner")
        .spawn(|_| {
            let me = Greenlet::current();
            Box::new((me.name().map(str::to_owned), me.is_current(), me.is_main()))
        })
        .unwrap();
    let r = g.switch(());
    let (name, cur, main) = *r.downcast::<(Option<String>, bool, bool)>().unwrap();
    assert_eq!(name.as_deref(), Some("inner"));
    assert!(cur && !main);
}

#[test]
fn many_greenlets_alive_at_once() {
    let n = 10_000;
    let all: Vec<Greenlet> = (0..n)
        .map(|i| {
            Builder::new()
                .stack_size(16 * 1024)
                .spawn(move |v| {
                    let x = num(v);
                    let y = num(Greenlet::main().switch(x + i));
                    Box::new(y * 2)
                })
                .unwrap()
        })
        .collect();
    for (i, g) in all.iter().enumerate() {
        assert_eq!(num(g.switch(1i64)), 1 + i as i64);
    }
    for g in &all {
        assert_eq!(num(g.switch(4i64)), 8);
    }
}

#[test]
fn values_that_are_already_boxed_are_not_boxed_twice() {
    let g = Greenlet::new(|v| v);
    let boxed: Value = Box::new(17i64);
    assert_eq!(num(g.switch(boxed)), 17);
}

thread_local!(static PARKED: RefCell<Vec<Greenlet>> = const { RefCell::new(Vec::new()) });

#[test]
fn a_thread_can_exit_with_greenlets_still_suspended() {
    std::thread::spawn(|| {
        // Registered before the greenlet machinery, so torn down after it: these
        // greenlets can no longer run when their last handles go.
        PARKED.with(|_| ());
        let suspended: Vec<Greenlet> = (0..3)
            .map(|_| {
                Greenlet::new(|_| {
                    Greenlet::main().switch(());
                    Box::new(())
                })
            })
            .collect();
        for g in &suspended {
            g.switch(());
        }
        PARKED.with(|p| p.borrow_mut().extend(suspended));
    })
    .join()
    .expect("the thread exits cleanly");
}

#[test]
fn a_greenlet_whose_parent_died_returns_to_the_nearest_live_ancestor() {
    let outer = Greenlet::new(|v| v);
    assert_eq!(num(outer.switch(1i64)), 1);
    assert!(outer.is_dead());
    // Its parent is dead before it even starts: its return goes to outer's parent (us).
    let child = Builder::new().parent(&outer).spawn(|v| v).unwrap();
    assert_eq!(num(child.switch(5i64)), 5);
    assert!(child.is_dead());
    // Its parent dies while it is suspended.
    let main = Greenlet::current();
    let mid = Greenlet::new(move |_| {
        let leaf = Greenlet::new(move |_| {
            main.switch(10i64);
            Box::new(12i64) as Value
        });
        leaf.switch(());
        Box::new(leaf) as Value
    });
    // leaf switches to us (10); resuming mid lets it return leaf to us (mid dies).
    assert_eq!(num(mid.switch(())), 10);
    let leaf = *mid.switch(()).downcast::<Greenlet>().unwrap();
    assert!(mid.is_dead() && !leaf.is_dead());
    assert_eq!(num(leaf.switch(())), 12);
    assert!(leaf.is_dead());
}
