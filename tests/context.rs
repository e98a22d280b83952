//! Per-OS-thread state that a switch deliberately does not save.
//!
//! `arch/x86_64_sysv.s` and `arch/aarch64_aapcs.s` document that the floating-point control
//! register (MXCSR on x86_64, FPCR on aarch64: rounding mode, flush-to-zero) belongs to the
//! OS thread, not to the green thread: a coroutine that changes the rounding mode changes it
//! for its resumer too, and the other way round. These tests pin that behaviour down, so a
//! change to the switch that starts saving (or clobbering) the register is noticed.

use std::hint::black_box;
use verdant::coroutine::{Coroutine, CoroutineResult};

/// Rounding modes, as the architecture encodes them in its control register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rounding {
    Nearest,
    Down,
    Up,
}

#[cfg(target_arch = "x86_64")]
mod fp {
    use super::Rounding;
    use core::arch::asm;

    pub type Control = u32;

    const RC_SHIFT: u32 = 13;
    const RC_MASK: u32 = 0b11 << RC_SHIFT;

    pub fn control() -> u32 {
        let mut csr = 0u32;
        // SAFETY: stmxcsr stores the 32-bit MXCSR into `csr`; it has no other effect.
        unsafe { asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags)) };
        csr
    }

    pub fn set_control(csr: u32) {
        // SAFETY: ldmxcsr loads a valid MXCSR value (one read with `control`, with only the
        // rounding-control field changed); reserved bits stay as they were.
        unsafe { asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, preserves_flags)) };
    }

    pub fn rounding() -> Rounding {
        match (control() & RC_MASK) >> RC_SHIFT {
            0b00 => Rounding::Nearest,
            0b01 => Rounding::Down,
            0b10 => Rounding::Up,
            _ => panic!("toward zero"),
        }
    }

    pub fn set_rounding(mode: Rounding) {
        let rc = match mode {
            Rounding::Nearest => 0b00,
            Rounding::Down => 0b01,
            Rounding::Up => 0b10,
        };
        set_control((control() & !RC_MASK) | (rc << RC_SHIFT));
    }
}

#[cfg(target_arch = "aarch64")]
mod fp {
    use super::Rounding;
    use core::arch::asm;

    pub type Control = u64;

    const RMODE_SHIFT: u64 = 22;
    const RMODE_MASK: u64 = 0b11 << RMODE_SHIFT;

    pub fn control() -> u64 {
        let fpcr: u64;
        // SAFETY: reading FPCR has no side effects.
        unsafe { asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack, preserves_flags)) };
        fpcr
    }

    pub fn set_control(fpcr: u64) {
        // SAFETY: writes a value read with `control`, with only the RMode field changed.
        unsafe { asm!("msr fpcr, {}", in(reg) fpcr, options(nomem, nostack, preserves_flags)) };
    }

    pub fn rounding() -> Rounding {
        match (control() & RMODE_MASK) >> RMODE_SHIFT {
            0b00 => Rounding::Nearest,
            0b01 => Rounding::Up,
            0b10 => Rounding::Down,
            _ => panic!("toward zero"),
        }
    }

    pub fn set_rounding(mode: Rounding) {
        let rmode = match mode {
            Rounding::Nearest => 0b00,
            Rounding::Up => 0b01,
            Rounding::Down => 0b10,
        };
        set_control((control() & !RMODE_MASK) | (rmode << RMODE_SHIFT));
    }
}

/// Restores the thread's floating-point control register however the test ends.
struct RestoreFp(fp::Control);

impl Drop for RestoreFp {
    fn drop(&mut self) {
        fp::set_control(self.0);
    }
}

/// 1/3 is inexact, so rounding down and up give neighbouring, different doubles. The
/// operands go through `black_box` so the division happens at run time, under the mode set
/// in the control register.
fn one_third() -> f64 {
    black_box(1.0f64) / black_box(3.0f64)
}

#[test]
fn rounding_mode_set_in_a_coroutine_is_seen_by_its_resumer() {
    let _restore = RestoreFp(fp::control());
    assert_eq!(fp::rounding(), Rounding::Nearest);
    let mut co: Coroutine<(), (), ()> = Coroutine::new(|y, ()| {
        fp::set_rounding(Rounding::Down);
        y.suspend(());
        fp::set_rounding(Rounding::Up);
        y.suspend(());
        fp::set_rounding(Rounding::Nearest);
    });
    assert_eq!(co.resume(()), CoroutineResult::Yield(()));
    assert_eq!(
        fp::rounding(),
        Rounding::Down,
        "MXCSR/FPCR is per OS thread"
    );
    let down = one_third();
    assert_eq!(co.resume(()), CoroutineResult::Yield(()));
    assert_eq!(fp::rounding(), Rounding::Up);
    let up = one_third();
    assert!(
        down < up,
        "{down:e} < {up:e}: the rounding mode reached the resumer"
    );
    assert_eq!(co.resume(()), CoroutineResult::Return(()));
    assert_eq!(fp::rounding(), Rounding::Nearest);
    let nearest = one_third();
    assert!(nearest == down || nearest == up);
}

#[test]
fn rounding_mode_set_by_the_resumer_is_seen_inside_the_coroutine() {
    let _restore = RestoreFp(fp::control());
    let mut co: Coroutine<(), (Rounding, f64), ()> = Coroutine::new(|y, ()| loop {
        y.suspend((fp::rounding(), one_third()));
    });
    fp::set_rounding(Rounding::Down);
    let CoroutineResult::Yield((seen, down)) = co.resume(()) else {
        panic!("the coroutine loops forever")
    };
    assert_eq!(seen, Rounding::Down);
    fp::set_rounding(Rounding::Up);
    let CoroutineResult::Yield((seen, up)) = co.resume(()) else {
        panic!("the coroutine loops forever")
    };
    assert_eq!(seen, Rounding::Up);
    assert!(down < up, "{down:e} < {up:e}");
}
