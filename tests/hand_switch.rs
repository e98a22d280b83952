//! A green thread that switches to a greenlet by hand, where that greenlet blocks on the hub.

use std::time::Duration;
use verdant::greenlet::{Greenlet, Value};

#[test]
fn a_spawned_green_thread_that_switched_by_hand_to_a_blocking_greenlet_still_delivers_its_result() {
    let h = verdant::spawn(|| {
        let g = Greenlet::new(|v: Value| {
            verdant::sleep(Duration::from_millis(5));
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
