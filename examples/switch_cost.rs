//! What does a context switch cost on this machine?
//!
//! ```text
//! cargo run --release --example switch_cost            # about 5 s
//! cargo run --release --example switch_cost -- --quick # smoke run (CI, qemu): well under 1 s natively
//! ```
//!
//! Prints the CPU, the context-switch backend compiled in, and the cost of one switch (one
//! transfer of control; a resume + suspend round trip is two) for a verdant `Coroutine`, a
//! verdant `Greenlet` (symmetric `switch`, values passed as `Box<dyn Any>`), corosensei (the fastest stackful coroutine crate, measured in the same run), and two OS
//! threads handing a token back and forth through a futex. Then the cost of creating a
//! coroutine, running it to completion and dropping it.
//!
//! Method: each measurement first finds a batch size that takes a few milliseconds, then
//! times that batch many times and reports the median (and the fastest run). Absolute
//! figures move with CPU frequency and noisy neighbours; the ratios between lines measured
//! in one run are what to compare across machines. `VERDANT_QUICK=1` is the same as
//! `--quick`.

use std::hint::black_box;
use std::time::{Duration, Instant};
use verdant::coroutine::{Coroutine, CoroutineResult};
use verdant::greenlet::{Greenlet, Value};

#[path = "../benches/support/os_thread.rs"]
mod os_thread;

/// How long to measure.
struct Plan {
    batch_time: Duration,
    runs: usize,
}

/// Nanoseconds per operation.
struct Figure {
    median: f64,
    min: f64,
}

/// Times `op` (which performs `per_call` operations per call) and returns ns per operation.
fn measure(plan: &Plan, per_call: u64, mut op: impl FnMut()) -> Figure {
    let time_batch = |op: &mut dyn FnMut(), n: u64| {
        let start = Instant::now();
        for _ in 0..n {
            op();
        }
        start.elapsed()
    };
    // Warm up and find a batch that takes at least `batch_time`.
    let mut n = 1u64;
    while time_batch(&mut op, n) < plan.batch_time && n < 1 << 40 {
        n *= 2;
    }
    let mut samples: Vec<f64> = (0..plan.runs)
        .map(|_| time_batch(&mut op, n).as_nanos() as f64 / (n * per_call) as f64)
        .collect();
    samples.sort_by(f64::total_cmp);
    Figure {
        median: samples[samples.len() / 2],
        min: samples[0],
    }
}

fn verdant_switch(plan: &Plan) -> Figure {
    let mut co: Coroutine<u64, u64, ()> = Coroutine::new(|y, mut x: u64| loop {
        x = y.suspend(x.wrapping_add(1));
    });
    let mut i = 0u64;
    measure(plan, 2, || {
        i += 1;
        if let CoroutineResult::Yield(v) = co.resume(black_box(i)) {
            black_box(v);
        }
    })
}

/// `()` boxes into a `Value` without allocating, so this is the switch alone.
fn greenlet_switch(plan: &Plan) -> Figure {
    let main = Greenlet::current();
    let echo = Greenlet::new(move |_| loop {
        main.switch(());
    });
    measure(plan, 2, || {
        black_box(echo.switch(()));
    })
}

fn corosensei_switch(plan: &Plan) -> Figure {
    let mut co = corosensei::Coroutine::new(|y: &corosensei::Yielder<u64, u64>, mut x: u64| loop {
        x = y.suspend(x.wrapping_add(1));
    });
    let mut i = 0u64;
    measure(plan, 2, || {
        i += 1;
        if let corosensei::CoroutineResult::Yield(v) = co.resume(black_box(i)) {
            black_box(v);
        }
    })
}

fn os_thread_switch(plan: &Plan) -> Figure {
    let mut pair = os_thread::PingPong::new();
    measure(plan, 2, || pair.round_trip())
}

fn verdant_spawn(plan: &Plan) -> Figure {
    measure(plan, 1, || {
        let mut co: Coroutine<u64, (), u64> = Coroutine::new(|_, x| x + 1);
        black_box(co.resume(black_box(41)));
    })
}

fn greenlet_spawn(plan: &Plan) -> Figure {
    measure(plan, 1, || {
        let g = Greenlet::new(|v: Value| v);
        black_box(g.switch(()));
    })
}

fn corosensei_spawn(plan: &Plan) -> Figure {
    let mut stack = Some(corosensei::stack::DefaultStack::default());
    measure(plan, 1, || {
        let mut co = corosensei::Coroutine::with_stack(
            stack.take().expect("stack returned"),
            |_: &corosensei::Yielder<u64, ()>, x: u64| x + 1,
        );
        black_box(co.resume(black_box(41)));
        stack = Some(co.into_stack());
    })
}

/// The CPU's marketing name, or what the kernel says about it, or the machine name.
fn cpu_name() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        info.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if let Some(name) = field("model name").or_else(|| field("Hardware")) {
        // qemu-user shows the host's /proc/cpuinfo to the emulated program.
        let host_x86 = field("vendor_id").is_some() && !cfg!(target_arch = "x86_64");
        return if host_x86 {
            format!(
                "{name} (the host's CPU: this {} build runs emulated)",
                machine()
            )
        } else {
            name
        };
    }
    if let (Some(implementer), Some(part)) = (field("CPU implementer"), field("CPU part")) {
        return format!("{} (implementer {implementer}, part {part})", machine());
    }
    machine()
}

/// `uname -m`.
fn machine() -> String {
    // SAFETY: `utsname` is plain C data; uname fills it with NUL-terminated strings.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid out-pointer.
    if unsafe { libc::uname(&mut uts) } == 0 {
        // SAFETY: on success `machine` is NUL-terminated within the array.
        let name = unsafe { std::ffi::CStr::from_ptr(uts.machine.as_ptr()) };
        return name.to_string_lossy().into_owned();
    }
    std::env::consts::ARCH.to_string()
}

fn row(what: &str, f: &Figure) {
    println!(
        "  {what:<28} {:>9.2} ns   (fastest run {:.2})",
        f.median, f.min
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var_os("VERDANT_QUICK").is_some_and(|v| v != "0");
    let plan = if quick {
        Plan {
            batch_time: Duration::from_millis(2),
            runs: 5,
        }
    } else {
        Plan {
            batch_time: Duration::from_millis(25),
            runs: 21,
        }
    };

    println!("CPU:     {}", cpu_name());
    println!("arch:    {}", machine());
    println!("backend: {}", verdant::CONTEXT_BACKEND);
    println!(
        "method:  median of {} timed batches of >= {} ms each{}",
        plan.runs,
        plan.batch_time.as_millis(),
        if quick {
            " (--quick: rough figures)"
        } else {
            ""
        }
    );
    println!();
    println!("one switch (one transfer of control; resume + suspend = 2 switches):");
    let verdant = verdant_switch(&plan);
    row("verdant Coroutine", &verdant);
    let greenlet = greenlet_switch(&plan);
    row("verdant Greenlet", &greenlet);
    let corosensei = corosensei_switch(&plan);
    row("corosensei 0.3", &corosensei);
    let os = os_thread_switch(&plan);
    row("OS threads (futex hand-off)", &os);
    println!();
    println!("create + run to completion + drop:");
    let verdant_spawn = verdant_spawn(&plan);
    row("verdant Coroutine (pooled)", &verdant_spawn);
    let greenlet_spawn = greenlet_spawn(&plan);
    row("verdant Greenlet (pooled)", &greenlet_spawn);
    let corosensei_spawn = corosensei_spawn(&plan);
    row("corosensei (reused stack)", &corosensei_spawn);
    println!();
    println!(
        "verdant / corosensei:  Coroutine switch {:.2}x, Greenlet switch {:.2}x, \
         Coroutine spawn {:.2}x, Greenlet spawn {:.2}x",
        verdant.median / corosensei.median,
        greenlet.median / corosensei.median,
        verdant_spawn.median / corosensei_spawn.median,
        greenlet_spawn.median / corosensei_spawn.median
    );
    println!(
        "OS threads / verdant:  Coroutine {:.0}x, Greenlet {:.0}x",
        os.median / verdant.median,
        os.median / greenlet.median
    );
}
