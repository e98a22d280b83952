//! The stall monitor: a green thread that blocks its OS thread is reported by name, id and
//! spawn site, with the system call it is blocked in where the platform tells; a hub that
//! switches is not reported; `stop` ends the reports.
//!
//! Tests run in parallel in this process, each with its own monitor of its own thread's hub
//! (reports are filtered by green thread or OS thread name where other hubs could show up).
//! Nothing here patches libc: `std::thread::sleep` really blocks the hub.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use verdant::monitor::{self, Config, Stall, Syscall};

/// Waits cooperatively (the hub keeps switching) for a report that `pred` accepts, for at
/// most 20 s (qemu is slow); returns every report seen meanwhile, the accepted one last.
fn wait_for(rx: &Receiver<Stall>, pred: impl Fn(&Stall) -> bool) -> Vec<Stall> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(stall) => {
                let found = pred(&stall);
                seen.push(stall);
                if found {
                    return seen;
                }
            }
            Err(TryRecvError::Empty) if Instant::now() < deadline => {
                verdant::sleep(Duration::from_millis(5)).unwrap();
            }
            Err(e) => panic!("no matching report ({e:?}); reports seen: {seen:#?}"),
        }
    }
}

/// A monitor configuration that sends every report to the returned receiver and sets the
/// returned flag once a stall of the green thread named `name` is reported.
fn collect(name: &'static str) -> (Config, Receiver<Stall>, Arc<AtomicBool>) {
    let (tx, rx) = mpsc::channel();
    let seen = Arc::new(AtomicBool::new(false));
    let flag = seen.clone();
    let config = Config::new().report(move |stall| {
        if stall.green_thread_name() == Some(name) && !stall.is_over() {
            flag.store(true, Ordering::SeqCst);
        }
        let _ = tx.send(stall.clone());
    });
    (config, rx, seen)
}

/// Blocks the OS thread, never switching, by calling `step` until the monitor reported the
/// stall (`seen`) or 20 s passed: no fixed duration that a loaded machine or qemu, where the
/// monitor's thread may wait long for a CPU, could make too short.
fn hold_until_seen(seen: &AtomicBool, mut step: impl FnMut()) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.load(Ordering::SeqCst) && Instant::now() < deadline {
        step();
    }
}

/// Waits cooperatively (at most 20 s) until the monitor that reported to `rx` is gone (its
/// reporter, holding the sender, dropped), failing on any report meanwhile.
fn expect_no_report_until_gone(rx: &Receiver<Stall>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match rx.try_recv() {
            Err(TryRecvError::Disconnected) => return,
            Err(TryRecvError::Empty) if Instant::now() < deadline => {
                verdant::sleep(Duration::from_millis(10)).unwrap();
            }
            other => panic!("expected no report and a dropped reporter, got {other:?}"),
        }
    }
}

/// Whether the platform reports syscalls as the test binary's own CPU numbers them:
/// native Linux x86_64 (aarch64 runs here under qemu-user, where `/proc` shows the host's).
const NATIVE_SYSCALLS: bool = cfg!(all(target_os = "linux", target_arch = "x86_64"));

#[test]
fn a_green_thread_blocked_in_a_syscall_is_reported_with_its_name_id_site_and_syscall() {
    let (config, rx, seen) = collect("sleeper");
    let monitor = monitor::start_with(config);
    // Sleeps of a length that is no multiple of the monitor's 50 ms period, so that its
    // sample does not keep landing on the instant between two sleeps ("running").
    let line = line!() + 3;
    let sleeper = verdant::Builder::new()
        .name("sleeper")
        .spawn(move || hold_until_seen(&seen, || std::thread::sleep(Duration::from_millis(333))))
        .unwrap();
    let id = sleeper.id();
    sleeper.join().unwrap();
    let is_sleeper = |s: &Stall| s.green_thread_id() == id;
    let reports = wait_for(&rx, |s| is_sleeper(s) && s.is_over());
    monitor.stop();

    let stall = reports
        .iter()
        .find(|s| is_sleeper(s) && !s.is_over())
        .unwrap_or_else(|| panic!("no stall report before its end: {reports:#?}"));
    assert_eq!(stall.green_thread_name(), Some("sleeper"));
    assert!(!stall.is_main_green_thread());
    let site = stall
        .spawned_at()
        .expect("spawned while watched: site known");
    assert!(site.file().ends_with("monitor.rs"), "{site}");
    assert_eq!(site.line(), line, "{site}");
    assert_eq!(stall.thread_id(), std::thread::current().id());
    assert!(stall.duration() >= monitor::DEFAULT_THRESHOLD, "{stall:?}");
    if cfg!(target_os = "linux") {
        assert!(stall.os_thread_id().is_some());
    }
    if NATIVE_SYSCALLS {
        // glibc's nanosleep is clock_nanosleep on current systems, nanosleep on old ones.
        let name = stall.syscall().name();
        assert!(
            matches!(name, Some("clock_nanosleep" | "nanosleep")),
            "{:?}",
            stall.syscall()
        );
    }
    let text = stall.to_string();
    assert!(
        text.contains(&format!("green thread #{id} 'sleeper' (spawned at {site})")),
        "{text}"
    );
    assert!(text.contains("has not switched for"), "{text}");
    eprintln!("{text}");

    let end = reports.last().unwrap();
    assert!(end.is_over());
    assert_eq!(end.green_thread_name(), Some("sleeper"));
    assert!(end.duration() >= stall.duration(), "{end:?}");
    assert!(end.to_string().contains("switched again after"), "{end}");
    eprintln!("{end}");
}

#[test]
fn a_busy_loop_is_reported_as_running() {
    let (config, rx, seen) = collect("spinner");
    let monitor = monitor::start_with(config);
    let spinner = verdant::Builder::new()
        .name("spinner")
        .spawn(move || {
            let mut n = 0u64;
            hold_until_seen(&seen, || {
                for _ in 0..10_000 {
                    n = std::hint::black_box(n.wrapping_mul(31).wrapping_add(7));
                }
            });
            n
        })
        .unwrap();
    let id = spinner.id();
    spinner.join().unwrap();
    let reports = wait_for(&rx, |s| s.green_thread_id() == id && !s.is_over());
    monitor.stop();
    let stall = reports.last().unwrap();
    assert_eq!(stall.green_thread_name(), Some("spinner"));
    eprintln!("{stall}");
    if NATIVE_SYSCALLS {
        assert_eq!(stall.syscall(), Syscall::Running);
        assert!(stall.to_string().contains("running, not in a system call"));
    }
}

#[test]
fn a_hub_that_switches_is_not_reported() {
    let (config, rx, seen) = collect("blocker");
    let threshold = Duration::from_millis(200);
    let monitor = monitor::start_with(config.threshold(threshold));
    // 10 green threads, 60 short sleeps each: the hub switches all the time, and idles in
    // between (its own loop waiting is never a stall).
    let sleepers: Vec<_> = (0..10)
        .map(|i| {
            verdant::Builder::new()
                .name(format!("short-sleeper-{i}"))
                .spawn(|| {
                    for _ in 0..60 {
                        verdant::sleep(Duration::from_millis(3)).unwrap();
                    }
                })
                .unwrap()
        })
        .collect();
    for r in verdant::joinall(sleepers) {
        r.unwrap();
    }
    // Idle on the hub for longer than the threshold: not a stall either.
    verdant::sleep(threshold * 3).unwrap();
    let before: Vec<Stall> = rx.try_iter().collect();
    assert!(
        before.is_empty(),
        "reports for a switching hub: {before:#?}"
    );

    // The same monitor does see a real stall: the silence above was not a dead monitor.
    let blocker = verdant::Builder::new()
        .name("blocker")
        .spawn(move || hold_until_seen(&seen, || std::thread::sleep(threshold / 2)))
        .unwrap();
    let id = blocker.id();
    blocker.join().unwrap();
    wait_for(&rx, |s| s.green_thread_id() == id);
    monitor.stop();
}

#[test]
fn stop_ends_the_reports() {
    let (tx, rx) = mpsc::channel();
    let monitor = monitor::start_with(Config::new().report_to(tx));
    monitor.stop();
    verdant::Builder::new()
        .name("blocker-after-stop")
        .spawn(|| std::thread::sleep(Duration::from_millis(400)))
        .unwrap()
        .join()
        .unwrap();
    // Nothing was reported, and the reporter (this channel's sender) goes with the
    // monitor: once stopped, it can never report again.
    expect_no_report_until_gone(&rx);
}

#[test]
fn watch_new_hubs_reports_a_thread_started_later() {
    let (config, rx, seen) = collect("inner");
    let monitor = monitor::start_with(config.watch_new_hubs(true));
    let thread = std::thread::Builder::new()
        .name("stalling-os-thread".into())
        .spawn(move || {
            let h = verdant::Builder::new()
                .name("inner")
                .spawn(move || {
                    hold_until_seen(&seen, || std::thread::sleep(Duration::from_millis(100)))
                })
                .unwrap();
            let id = h.id();
            h.join().unwrap();
            id
        })
        .unwrap();
    // Joined on the thread pool: this thread's hub keeps switching meanwhile.
    let id = verdant::spawn_blocking(move || thread.join().unwrap())
        .join()
        .unwrap();
    let reports = wait_for(&rx, |s| {
        s.thread_name() == Some("stalling-os-thread") && s.green_thread_id() == id
    });
    monitor.stop();
    let stall = reports.last().unwrap();
    assert_eq!(stall.green_thread_name(), Some("inner"));
    assert_ne!(stall.thread_id(), std::thread::current().id());
}

#[test]
fn a_report_callback_may_stop_its_own_monitor() {
    use std::sync::Mutex;
    let slot: Arc<Mutex<Option<monitor::Monitor>>> = Arc::default();
    let (tx, rx) = mpsc::channel();
    let in_callback = slot.clone();
    let seen = Arc::new(AtomicBool::new(false));
    let flag = seen.clone();
    let monitor = monitor::start_with(Config::new().report(move |stall| {
        flag.store(true, Ordering::SeqCst);
        let _ = tx.send(stall.clone());
        // Dropping the monitor from its own report: must not deadlock.
        drop(in_callback.lock().unwrap().take());
    }));
    *slot.lock().unwrap() = Some(monitor);
    let held = seen.clone();
    verdant::spawn(move || {
        hold_until_seen(&held, || std::thread::sleep(Duration::from_millis(100)))
    })
    .join()
    .unwrap();
    verdant::spawn(|| std::thread::sleep(Duration::from_millis(300)))
        .join()
        .unwrap();
    // One report, then the callback stopped the monitor: the second stall is not seen.
    let first = wait_for(&rx, |_| true);
    assert_eq!(first.len(), 1);
    expect_no_report_until_gone(&rx);
    assert!(slot.lock().unwrap().is_none());
}

/// After `monkey::patch_all()` a blocking `std::thread::sleep` waits on the hub and is no
/// longer a stall, while a busy loop still is: the monitor shows what the shim does not
/// cover. Patching is process-wide, so the scenario runs in a child process.
#[cfg(all(feature = "monkey", target_os = "linux"))]
#[test]
fn after_patch_all_a_sleep_is_no_stall_but_a_busy_loop_still_is() {
    #[path = "support/mod.rs"]
    mod support;
    const SCENARIO: &str = "monitor-after-patch-all";
    if !support::is_child(SCENARIO) {
        let child = support::run_child(
            "after_patch_all_a_sleep_is_no_stall_but_a_busy_loop_still_is",
            SCENARIO,
        );
        assert!(child.status.success(), "{}", child.transcript());
        return;
    }
    verdant::monkey::patch_all();
    let (config, rx, seen) = collect("spinner");
    let monitor = monitor::start_with(config);
    let sleeper = verdant::Builder::new()
        .name("patched-sleeper")
        .spawn(|| std::thread::sleep(Duration::from_millis(400)))
        .unwrap();
    let sleeper_id = sleeper.id();
    sleeper.join().unwrap();
    let spinner = verdant::Builder::new()
        .name("spinner")
        .spawn(move || hold_until_seen(&seen, || std::hint::black_box(())))
        .unwrap();
    let spinner_id = spinner.id();
    spinner.join().unwrap();
    let reports = wait_for(&rx, |s| s.green_thread_id() == spinner_id);
    monitor.stop();
    assert!(
        reports.iter().all(|s| s.green_thread_id() != sleeper_id),
        "a patched sleep was reported: {reports:#?}"
    );
}
