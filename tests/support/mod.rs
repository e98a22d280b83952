//! Running a test's crashing half in a child process.
//!
//! A test that may crash the process (a guard-page hit, an abort) re-executes the test
//! binary with `--exact <test name>` and [`SCENARIO_VAR`] set; in the child, the same test
//! function sees [`is_child`] return true, runs the dangerous part and dies (or exits). The
//! parent asserts on the child's exit status and output.
//!
//! Under qemu-user without binfmt_misc the kernel cannot execute the foreign test binary
//! directly; the child is then started through the emulator, named by
//! `VERDANT_TEST_RUNNER` or else `qemu-<arch>-static`.

// Each test file uses part of these helpers.
#![allow(dead_code, unused_macros)]

use std::io;
use std::process::{Command, ExitStatus, Output};

/// Environment variable set (by `scripts/aarch64-test`, or here when a child had to be
/// started through the emulator) when the tests run under qemu-user.
pub const EMULATED_VAR: &str = "VERDANT_EMULATED";

/// Whether this process runs under an emulator (qemu-user), whose own allocations share the
/// process's mapping count and address-space limits.
pub fn is_emulated() -> bool {
    std::env::var_os(EMULATED_VAR).is_some()
}

/// Environment variable naming the scenario a child process runs.
pub const SCENARIO_VAR: &str = "VERDANT_TEST_CHILD";

/// Whether this process is the child started to run `scenario`.
pub fn is_child(scenario: &str) -> bool {
    std::env::var(SCENARIO_VAR).is_ok_and(|s| s == scenario)
}

/// What a child process did.
pub struct Child {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Child {
    /// The signal that killed the child, if one did.
    pub fn signal(&self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        self.status.signal()
    }

    /// Everything the child printed, for assertion messages.
    pub fn transcript(&self) -> String {
        format!(
            "status: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs the test `test_name` of this test binary in a child process with `scenario` set.
pub fn run_child(test_name: &str, scenario: &str) -> Child {
    use std::sync::atomic::{AtomicBool, Ordering};
    /// Set once the kernel refused to run this binary directly (qemu-user without
    /// binfmt_misc): later children go through the emulator at once, one fork of the
    /// emulator fewer each (see [`start_limit`]).
    static NOT_DIRECT: AtomicBool = AtomicBool::new(false);
    let exe = std::env::current_exe().expect("path of the test binary");
    // --include-ignored: the parent may be running an #[ignore]d test by request.
    let args = [
        test_name,
        "--exact",
        "--include-ignored",
        "--nocapture",
        "--test-threads=1",
    ];
    let run = |program: &std::ffi::OsStr, prefix: Option<&std::path::Path>| -> io::Result<Output> {
        let mut cmd = Command::new(program);
        if let Some(exe) = prefix {
            cmd.arg(exe).env(EMULATED_VAR, "qemu-user");
        }
        cmd.args(args)
            .env(SCENARIO_VAR, scenario)
            .env("RUST_BACKTRACE", "0");
        output_within(cmd, child_deadline())
    };
    let through_runner = || {
        let runner = std::env::var("VERDANT_TEST_RUNNER")
            .unwrap_or_else(|_| format!("qemu-{}-static", std::env::consts::ARCH));
        run(runner.as_ref(), Some(&exe))
    };
    // Under qemu-user the failed exec shows either as ENOEXEC or, when glibc's posix_spawn
    // child cannot report it, as exit status 127 with no output.
    let not_executable = |r: &io::Result<Output>| match r {
        Err(e) => e.raw_os_error() == Some(libc::ENOEXEC),
        Ok(out) => out.status.code() == Some(127) && out.stdout.is_empty(),
    };
    let output = if NOT_DIRECT.load(Ordering::Relaxed) {
        through_runner()
    } else {
        match run(exe.as_os_str(), None) {
            r if not_executable(&r) => {
                NOT_DIRECT.store(true, Ordering::Relaxed);
                through_runner()
            }
            other => other,
        }
    }
    .expect("start the child process");
    Child {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// How long a child may run before it is killed and the test fails: 300 s, or
/// `VERDANT_TEST_CHILD_TIMEOUT` seconds. A hung child must fail its test with a transcript,
/// not hang the whole suite until CI's step timeout.
fn child_deadline() -> std::time::Duration {
    let secs = std::env::var("VERDANT_TEST_CHILD_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    std::time::Duration::from_secs(secs)
}

/// How long a child under qemu-user may stay silent before it counts as never started: 60 s,
/// or `VERDANT_TEST_CHILD_START_TIMEOUT` seconds; `None` (no such limit) on native runs.
///
/// Every child prints libtest's "running 1 test" first, within a second or two even under
/// the emulator. qemu-user 7.2 runs posix_spawn's `clone(CLONE_VM | CLONE_VFORK)` as a full
/// `fork` of the emulator, and that fork of a process with several threads (the test
/// harness's) once left a child that never reached `exec` or `main` and printed nothing for
/// 300 s (CI, the aarch64 monkey step, 2026-11-23). Such a child did nothing yet, so it is
/// killed and started again, up to [`START_ATTEMPTS`] times in all; the transcript says so.
fn start_limit() -> Option<std::time::Duration> {
    if !is_emulated() {
        return None;
    }
    let secs = std::env::var("VERDANT_TEST_CHILD_START_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Some(std::time::Duration::from_secs(secs))
}

/// How many times a child that never started is started in all (see [`start_limit`]).
const START_ATTEMPTS: u32 = 3;

/// `cmd.output()`, but the child is killed (SIGKILL) once `limit` has passed; the output
/// then ends with a line saying so and the status is the kill's. Under an emulator, a child
/// that prints nothing within [`start_limit`] is killed and started again.
fn output_within(mut cmd: Command, limit: std::time::Duration) -> io::Result<Output> {
    let mut notes = String::new();
    for attempt in 1..=START_ATTEMPTS {
        let start_limit = start_limit().filter(|_| attempt < START_ATTEMPTS);
        match attempt_within(&mut cmd, limit, start_limit)? {
            Attempt::Done(mut output) => {
                output.stderr.extend_from_slice(notes.as_bytes());
                return Ok(output);
            }
            Attempt::NeverStarted(after) => notes.push_str(&format!(
                "\n[support] attempt {attempt}: the child printed nothing in {after:?} and was \
                 killed and started again (an emulator fork that never reached exec or main)\n"
            )),
        }
    }
    unreachable!("the last attempt has no start limit")
}

/// What one start of a child came to.
enum Attempt {
    /// It ran (to its end, or until `limit`).
    Done(Output),
    /// It printed nothing within the start limit and was killed.
    NeverStarted(std::time::Duration),
}

/// One start of `cmd` for [`output_within`].
fn attempt_within(
    cmd: &mut Command,
    limit: std::time::Duration,
    start_limit: Option<std::time::Duration>,
) -> io::Result<Attempt> {
    use std::io::Read;
    use std::process::Stdio;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let started = std::time::Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Set by the first byte on either pipe.
    let spoke = Arc::new(AtomicBool::new(false));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        let spoke = spoke.clone();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => {
                        spoke.store(true, Ordering::Relaxed);
                        bytes.extend_from_slice(&chunk[..n]);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            bytes
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        let elapsed = started.elapsed();
        if start_limit.is_some_and(|l| elapsed >= l) && !spoke.load(Ordering::Relaxed) {
            let _ = child.kill();
            child.wait()?;
            let _ = (out.join(), err.join());
            return Ok(Attempt::NeverStarted(elapsed));
        }
        if elapsed >= limit {
            timed_out = true;
            let _ = child.kill();
            break child.wait()?;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let stdout = out.join().unwrap_or_default();
    let mut stderr = err.join().unwrap_or_default();
    if timed_out {
        stderr.extend_from_slice(
            format!("\n[support] child killed after {limit:?}: it did not finish\n").as_bytes(),
        );
    }
    Ok(Attempt::Done(Output {
        status,
        stdout,
        stderr,
    }))
}

/// Defines tests whose bodies each run in a child process of their own (this binary re-run
/// with `--exact <name>`), for tests that change process-wide state for good, such as
/// `verdant::monkey::patch_all()`. Needs `#[macro_use] mod support;` at the crate root.
macro_rules! isolated {
    ($($(#[$m:meta])* fn $name:ident() $body:block)*) => {$(
        $(#[$m])*
        #[test]
        fn $name() {
            if crate::support::is_child(stringify!($name)) {
                $body
            } else {
                crate::support::run_isolated(stringify!($name));
            }
        }
    )*};
}

/// The parent's half of [`isolated!`]: runs the test `name` in a child and asserts that it
/// passed there.
pub fn run_isolated(name: &str) {
    let child = run_child(name, name);
    assert!(
        child.status.success() && child.stdout.contains("1 passed"),
        "{name} failed in its child process:\n{}",
        child.transcript()
    );
}

/// An event log shared by the green threads of one OS thread.
#[derive(Clone, Default)]
pub struct Log(std::rc::Rc<std::cell::RefCell<Vec<(usize, &'static str)>>>);

impl Log {
    pub fn push(&self, id: usize, what: &'static str) {
        self.0.borrow_mut().push((id, what));
    }

    pub fn events(&self) -> Vec<(usize, &'static str)> {
        self.0.borrow().clone()
    }

    /// Whether every "start" came before every "end": the waits overlapped.
    pub fn all_started_before_any_ended(&self) -> bool {
        let ev = self.events();
        let last_start = ev.iter().rposition(|e| e.1 == "start");
        let first_end = ev.iter().position(|e| e.1 == "end");
        matches!((last_start, first_end), (Some(s), Some(e)) if s < e)
    }

    /// Whether each green thread's start was followed at once by its end: no overlap.
    pub fn strictly_sequential(&self) -> bool {
        self.events()
            .chunks(2)
            .all(|p| p.len() == 2 && p[0] == (p[0].0, "start") && p[1] == (p[0].0, "end"))
    }
}
