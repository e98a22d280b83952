//! The OS-thread peer of the switch benchmarks: two `std` threads handing a token back and
//! forth, the kernel's equivalent of a green-thread switch.
//!
//! Shared by `benches/switch.rs` and `examples/switch_cost.rs` (included with `#[path]`) so
//! both measure the same thing.
//!
//! On Linux the token is a 32-bit turn counter and each hop is a raw futex hand-off: the
//! sender stores the next turn and calls `FUTEX_WAKE`; the receiver sleeps in `FUTEX_WAIT`
//! until the counter changes. There is no spinning, so every hop is a real block/wake-up
//! through the scheduler (what a thread-per-connection server pays). Elsewhere the same
//! protocol uses `std::thread::park`/`unpark`, which is a futex (or its equivalent) inside.
//!
//! ```text
//!   caller thread                      partner thread
//!   turn = 2k+1, wake ──── hop ───▶   wait until turn odd
//!   wait until turn even ◀─ hop ────  turn = 2k+2, wake
//! ```

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

/// Turn value that tells the partner to exit.
const STOP: u32 = u32::MAX;

struct Shared {
    turn: AtomicU32,
    #[cfg(not(target_os = "linux"))]
    caller: thread::Thread,
}

/// A partner thread ready to play ping-pong with the thread that created it.
pub struct PingPong {
    shared: Arc<Shared>,
    partner: Option<JoinHandle<()>>,
    turn: u32,
}

impl PingPong {
    /// Starts the partner thread. Call [`round_trip`](Self::round_trip) from this thread only.
    pub fn new() -> PingPong {
        let shared = Arc::new(Shared {
            turn: AtomicU32::new(0),
            #[cfg(not(target_os = "linux"))]
            caller: thread::current(),
        });
        let theirs = shared.clone();
        let partner = thread::Builder::new()
            .name("ping-pong partner".into())
            .spawn(move || {
                #[cfg(not(target_os = "linux"))]
                let caller = theirs.caller.clone();
                let mut seen = 0;
                loop {
                    let turn = wait_until_changed(&theirs.turn, seen);
                    if turn == STOP {
                        return;
                    }
                    // Odd turn: the caller handed us the token; hand it back.
                    theirs.turn.store(turn + 1, Ordering::Release);
                    seen = turn + 1;
                    #[cfg(target_os = "linux")]
                    futex_wake(&theirs.turn);
                    #[cfg(not(target_os = "linux"))]
                    caller.unpark();
                }
            })
            .expect("spawn the ping-pong partner thread");
        PingPong {
            shared,
            partner: Some(partner),
            turn: 0,
        }
    }

    /// Hands the token to the partner and waits until it comes back: two hops.
    pub fn round_trip(&mut self) {
        // Wrap well before STOP; the partner only compares for change.
        let next = if self.turn >= STOP - 3 {
            1
        } else {
            self.turn + 1
        };
        self.hand_over(next);
        self.turn = wait_until_changed(&self.shared.turn, next);
    }

    fn hand_over(&self, turn: u32) {
        self.shared.turn.store(turn, Ordering::Release);
        #[cfg(target_os = "linux")]
        futex_wake(&self.shared.turn);
        #[cfg(not(target_os = "linux"))]
        self.partner
            .as_ref()
            .expect("partner running")
            .thread()
            .unpark();
    }
}

impl Drop for PingPong {
    fn drop(&mut self) {
        self.hand_over(STOP);
        if let Some(partner) = self.partner.take() {
            let _ = partner.join();
        }
    }
}

/// Blocks until `turn` holds something other than `seen`, and returns it.
fn wait_until_changed(turn: &AtomicU32, seen: u32) -> u32 {
    loop {
        let now = turn.load(Ordering::Acquire);
        if now != seen {
            return now;
        }
        #[cfg(target_os = "linux")]
        futex_wait(turn, seen);
        #[cfg(not(target_os = "linux"))]
        thread::park();
    }
}

#[cfg(target_os = "linux")]
fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: FUTEX_WAIT on a valid, aligned u32 that outlives the call; it returns at once
    // if the word no longer holds `expected`, and spurious returns are handled by the caller.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

#[cfg(target_os = "linux")]
fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE on a valid, aligned u32; wakes at most one waiter.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
    }
}
