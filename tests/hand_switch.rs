//! A green thread that switches to a greenlet by hand, where that greenlet blocks on the hub.

use std::time::Duration;
use verdant::greenlet::{Greenlet, Value};

#[test]
fn a_spawned_green_thread_that_switched_by_hand_to_a_blocking_greenlet_still_delivers_its_result() {
    let h = verdant::spawn(|| {
        let g = Greenlet::new(|v: Value| {
            verdant::sleep(Duration::from_millis(5)).expect("sleep is not interrupted");
            v
        });
        g.switch(());
        42
    });
    match h.join_timeout(Duration::from_secs(5)) {
        Ok(v) => assert_eq!(v, 42),
        Err(e) => panic!("join failed: {e:?}"),
    }
}

#[test]
fn a_hand_switched_greenlet_that_blocks_and_switches_back_leaves_the_green_thread_its_identity() {
    let h = verdant::spawn(|| {
        let me = verdant::current().id();
        let parent = Greenlet::current();
        let g = Greenlet::new(move |_v: Value| {
            verdant::sleep(Duration::from_millis(2)).expect("sleep is not interrupted");
            // Back to the green thread by hand, without finishing.
            parent.switch(());
            Box::new(()) as Value
        });
        g.switch(());
        // The green thread's own record again: same id, and it can block on the hub.
        assert_eq!(verdant::current().id(), me);
        verdant::sleep(Duration::from_millis(2)).expect("sleep is not interrupted");
        assert_eq!(verdant::current().id(), me);
        7
    });
    match h.join_timeout(Duration::from_secs(5)) {
        Ok(v) => assert_eq!(v, 7),
        Err(e) => panic!("join failed: {e:?}"),
    }
}
