//! Behaviour of `verdant::coroutine::Coroutine`: values both ways, panics, drop, nesting,
//! deep recursion, many coroutines at once, and registers surviving switches.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use verdant::coroutine::{Builder, Coroutine, CoroutineResult};

#[test]
fn values_travel_both_ways() {
    let mut co = Coroutine::new(|y, first: String| {
        let mut seen = vec![first];
        loop {
            let next = y.suspend(seen.len());
            if next.is_empty() {
                return seen;
            }
            seen.push(next);
        }
    });
    assert!(!co.is_started());
    assert_eq!(co.resume("a".into()), CoroutineResult::Yield(1));
    assert!(co.is_started());
    assert_eq!(co.resume("b".into()), CoroutineResult::Yield(2));
    assert_eq!(co.resume("c".into()), CoroutineResult::Yield(3));
    assert_eq!(
        co.resume(String::new()),
        CoroutineResult::Return(vec!["a".to_string(), "b".into(), "c".into()])
    );
    assert!(co.is_finished());
}

#[test]
fn resume_after_finish_panics_with_a_clear_message() {
    let mut co: Coroutine<(), (), u8> = Builder::new().name("once").spawn(|_, ()| 7).unwrap();
    assert_eq!(co.resume(()), CoroutineResult::Return(7));
    let err = catch_unwind(AssertUnwindSafe(|| co.resume(()))).unwrap_err();
    let msg = err.downcast_ref::<String>().unwrap();
    assert!(
        msg.contains("finished coroutine") && msg.contains("'once'"),
        "{msg}"
    );
}

#[test]
fn panics_propagate_to_the_resumer() {
    let mut co: Coroutine<(), (), ()> = Coroutine::new(|y, ()| {
        y.suspend(());
        panic!("boom inside");
    });
    assert_eq!(co.resume(()), CoroutineResult::Yield(()));
    let err = catch_unwind(AssertUnwindSafe(|| co.resume(()))).unwrap_err();
    assert_eq!(*err.downcast_ref::<&str>().unwrap(), "boom inside");
    assert!(co.is_finished());
}

struct CountDrop(Rc<Cell<u32>>);
impl Drop for CountDrop {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

#[test]
fn drop_of_suspended_coroutine_unwinds_its_stack_once() {
    let drops = Rc::new(Cell::new(0));
    let d = drops.clone();
    let mut co: Coroutine<(), u32, ()> = Coroutine::new(move |y, ()| {
        let _a = CountDrop(d.clone());
        let _b = CountDrop(d.clone());
        let mut i = 0;
        loop {
            i += 1;
            y.suspend(i);
        }
    });
    assert_eq!(co.resume(()), CoroutineResult::Yield(1));
    assert_eq!(co.resume(()), CoroutineResult::Yield(2));
    assert_eq!(drops.get(), 0);
    drop(co);
    assert_eq!(drops.get(), 2, "both locals dropped exactly once");
}

#[test]
fn drop_of_unstarted_coroutine_drops_the_closure_only() {
    let drops = Rc::new(Cell::new(0));
    let guard = CountDrop(drops.clone());
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let co: Coroutine<(), (), ()> = Coroutine::new(move |_, ()| {
        let _g = &guard;
        r.set(true);
    });
    drop(co);
    assert_eq!(drops.get(), 1);
    assert!(!ran.get());
}

#[test]
fn nested_coroutines() {
    let mut outer: Coroutine<(), u32, u32> = Coroutine::new(|y, ()| {
        let mut inner: Coroutine<u32, u32, u32> = Coroutine::new(|iy, mut x| {
            for _ in 0..3 {
                x = iy.suspend(x * 10);
            }
            x + 1000
        });
        let mut v = 1;
        loop {
            match inner.resume(v) {
                CoroutineResult::Yield(out) => {
                    y.suspend(out);
                    v += 1;
                }
                CoroutineResult::Return(r) => return r,
            }
        }
    });
    let mut seen = vec![];
    loop {
        match outer.resume(()) {
            CoroutineResult::Yield(v) => seen.push(v),
            CoroutineResult::Return(r) => {
                seen.push(r);
                break;
            }
        }
    }
    assert_eq!(seen, vec![10, 20, 30, 1004]);
}

fn recurse(depth: usize, acc: &mut [u8; 256]) -> usize {
    acc[depth % 256] = acc[depth % 256].wrapping_add(1);
    let local = std::hint::black_box([depth as u8; 64]);
    if depth == 0 {
        return local[0] as usize;
    }
    recurse(depth - 1, acc) + local[1] as usize
}

#[test]
fn deep_recursion_close_to_the_stack_size() {
    let size = 256 * 1024;
    // Each frame uses well under 512 bytes; recurse to use most of the stack.
    let mut co: Coroutine<usize, (), usize> = Builder::new()
        .stack_size(size)
        .spawn(|_, depth| {
            let mut acc = [0u8; 256];
            recurse(depth, &mut acc)
        })
        .unwrap();
    let depth = 1000;
    assert!(co.resume(depth).as_return().is_some());
}

#[test]
fn ten_thousand_alive_at_once() {
    let n = 10_000;
    let mut all: Vec<Coroutine<u64, u64, u64>> = (0..n)
        .map(|i| {
            Builder::new()
                .stack_size(16 * 1024)
                .spawn(move |y, x| {
                    let a = y.suspend(x + i);
                    a * 2 + i
                })
                .unwrap()
        })
        .collect();
    for (i, co) in all.iter_mut().enumerate() {
        assert_eq!(co.resume(1), CoroutineResult::Yield(1 + i as u64));
    }
    for (i, co) in all.iter_mut().enumerate() {
        assert_eq!(co.resume(3), CoroutineResult::Return(6 + i as u64));
    }
}

#[test]
fn callee_saved_registers_survive_switches() {
    // Many live values across each switch force the compiler to keep them in callee-saved
    // registers (and spill the rest); any register the switch failed to preserve corrupts
    // the sums. Run in release too (CI does).
    let mut co: Coroutine<u64, u64, ()> = Coroutine::new(|y, mut x: u64| {
        let mut v: [u64; 16] = core::array::from_fn(|i| x.wrapping_mul(i as u64 + 3));
        for _ in 0..1000 {
            let s: u64 = v.iter().fold(0u64, |a, b| a.wrapping_add(*b));
            x = y.suspend(s);
            for (i, e) in v.iter_mut().enumerate() {
                *e = e.wrapping_add(x ^ i as u64);
            }
        }
    });
    let mut v: [u64; 16] = core::array::from_fn(|i| 5u64.wrapping_mul(i as u64 + 3));
    let mut x = 5u64;
    let mut local: [f64; 8] = core::array::from_fn(|i| i as f64 * 1.5);
    for round in 0..1000u64 {
        let expect: u64 = v.iter().fold(0u64, |a, b| a.wrapping_add(*b));
        let got = co.resume(x);
        assert_eq!(got, CoroutineResult::Yield(expect), "round {round}");
        x = round * 7 + 1;
        for (i, e) in v.iter_mut().enumerate() {
            *e = e.wrapping_add(x ^ i as u64);
        }
        for (i, f) in local.iter_mut().enumerate() {
            *f += i as f64;
        }
    }
    let total: f64 = local.iter().sum();
    assert_eq!(
        total,
        (0..8)
            .map(|i| i as f64 * 1.5 + i as f64 * 1000.0)
            .sum::<f64>()
    );
}

#[test]
fn stack_pool_reuses_stacks() {
    // Warm up, then creating and finishing coroutines must not map new stacks: the same
    // stack address comes back.
    let addr = Rc::new(RefCell::new(Vec::new()));
    for _ in 0..5 {
        let a = addr.clone();
        let mut co: Coroutine<(), (), ()> = Coroutine::new(move |_, ()| {
            let probe = 0u8;
            a.borrow_mut().push(&probe as *const u8 as usize / 4096);
        });
        co.resume(());
    }
    let pages = addr.borrow();
    assert!(pages.windows(2).all(|w| w[0] == w[1]), "{pages:?}");
}
