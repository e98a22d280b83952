//! The monkey shim with HTTP clients nobody here wrote: `ureq` (pure Rust over
//! `std::net`) and libcurl (C, through the `curl` crate, built from source) fetching from a
//! local server that delays each response by 200 ms.
//!
//! After `patch_all()`, 100 fetches from 100 green threads on one OS thread overlap and
//! finish in about 200 ms; before it, they run one after another (5 fetches take at least
//! 5 x 200 ms). The clients are unmodified: ureq blocks in std's `connect`, `send`, `recv`
//! (and, with timeouts, `poll` and `SO_RCVTIMEO`); libcurl makes its sockets non-blocking
//! and waits in its own `select` loop (curl-sys builds it without `HAVE_POLL`). Both reach
//! the shim's hooks.
//!
//! The server runs on OS threads of its own (a thread per connection, no hub), so it behaves
//! the same patched or not. Patching is process-wide and permanent, so every test runs in a
//! child process of its own (this binary re-run with `--exact <name>`).
#![cfg(target_os = "linux")]

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::time::{Duration, Instant};
#[macro_use]
mod support;

use support::Log;
use verdant::monkey::{self, Family};

/// How long the server waits before each response.
const DELAY: Duration = Duration::from_millis(200);

/// The figure: 100 fetches overlap and take about `DELAY` (0.3-0.8 s natively in a
/// debug build; the tests print it). The proof of overlap is the order of events: every
/// fetch started before any ended. The time bound is a quarter of the sequential
/// 100 x 200 ms = 20 s natively; elsewhere (aarch64 here runs under qemu-user, where a debug
/// build on a loaded machine spent 7-12 s of mostly CPU on 100 ureq requests) only what a
/// sequential run could not beat.
const FETCHES: usize = 100;
const OVERLAP_BOUND: Duration = if cfg!(target_arch = "x86_64") {
    Duration::from_secs(5)
} else {
    Duration::from_secs(20)
};

/// Unpatched fetches: few, because they take `DELAY` each.
const SEQUENTIAL_FETCHES: usize = 5;

/// A slow HTTP/1.1 server on 127.0.0.1, an OS thread per connection (no hub: the shim
/// passes its calls straight through). `GET /<n>` answers after `DELAY` with a body of `n`
/// bytes; `GET /<n>?delay=<ms>` after `ms` milliseconds instead. Every response closes the
/// connection.
fn slow_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(&conn);
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    return;
                }
                // Skip the headers.
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let target = request_line.split_whitespace().nth(1).unwrap_or("/");
                let (path, query) = target.split_once('?').unwrap_or((target, ""));
                let size: usize = path.trim_start_matches('/').parse().unwrap_or(0);
                let delay = query
                    .strip_prefix("delay=")
                    .and_then(|ms| ms.parse().ok())
                    .map_or(DELAY, Duration::from_millis);
                std::thread::sleep(delay);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
                );
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(&vec![b'x'; size]);
            });
        }
    });
    addr
}

/// `n` green threads on this OS thread, green thread `i` fetching `/<i>` with `fetch`
/// (which returns the body's length); checks every body and returns the log and the time
/// the whole batch took.
fn fetch_in_green_threads(
    n: usize,
    fetch: impl Fn(&str) -> usize + Clone + 'static,
) -> (Log, Duration) {
    let addr = slow_server();
    let log = Log::default();
    let start = Instant::now();
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (log, fetch) = (log.clone(), fetch.clone());
            verdant::spawn(move || {
                log.push(i, "start");
                let got = fetch(&format!("http://{addr}/{i}"));
                log.push(i, "end");
                assert_eq!(got, i, "body length of /{i}");
            })
        })
        .collect();
    for r in verdant::joinall(handles) {
        r.unwrap();
    }
    let took = start.elapsed();
    println!("{n} fetches of {DELAY:?} each took {took:?}");
    (log, took)
}

fn assert_overlapped(log: &Log, took: Duration) {
    assert!(log.all_started_before_any_ended(), "{:?}", log.events());
    assert!(
        took < OVERLAP_BOUND,
        "{FETCHES} fetches of {DELAY:?} took {took:?}: they did not overlap"
    );
}

fn assert_sequential(log: &Log, took: Duration) {
    assert!(log.strictly_sequential(), "{:?}", log.events());
    assert!(
        took >= DELAY * SEQUENTIAL_FETCHES as u32,
        "{SEQUENTIAL_FETCHES} unpatched fetches took only {took:?}"
    );
}

fn ureq_get(agent: &ureq::Agent, url: &str) -> Result<usize, ureq::Error> {
    let mut response = agent.get(url).call()?;
    Ok(response.body_mut().read_to_vec()?.len())
}

/// An agent with every timeout ureq offers except `timeout_resolve`/`timeout_global`
/// (those make ureq resolve on a new OS thread): std's `connect_timeout` (a non-blocking
/// connect, then `poll`) and `set_read_timeout`/`set_write_timeout` (`SO_RCVTIMEO`,
/// `SO_SNDTIMEO`).
fn ureq_agent_with_timeouts(recv: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_send_request(Some(Duration::from_secs(10)))
        .timeout_recv_response(Some(recv))
        .timeout_recv_body(Some(Duration::from_secs(10)))
        .build()
        .into()
}

fn curl_get(url: &str) -> Result<usize, curl::Error> {
    let mut easy = curl::easy::Easy::new();
    easy.url(url)?;
    let mut len = 0;
    {
        let mut transfer = easy.transfer();
        transfer.write_function(|data| {
            len += data.len();
            Ok(data.len())
        })?;
        transfer.perform()?;
    }
    assert_eq!(easy.response_code()?, 200);
    Ok(len)
}

isolated! {
    fn ureq_fetches_run_sequentially_before_patching() {
        assert!(!monkey::is_patched(Family::Sockets));
        let agent = ureq::Agent::new_with_defaults();
        let (log, took) =
            fetch_in_green_threads(SEQUENTIAL_FETCHES, move |url| ureq_get(&agent, url).unwrap());
        assert_sequential(&log, took);
    }

    fn ureq_fetches_overlap_after_patch_all() {
        monkey::patch_all();
        let agent = ureq::Agent::new_with_defaults();
        let (log, took) =
            fetch_in_green_threads(FETCHES, move |url| ureq_get(&agent, url).unwrap());
        assert_overlapped(&log, took);
    }

    fn ureq_with_timeouts_overlaps_after_patch_all() {
        monkey::patch_all();
        let agent = ureq_agent_with_timeouts(Duration::from_secs(10));
        let (log, took) =
            fetch_in_green_threads(FETCHES, move |url| ureq_get(&agent, url).unwrap());
        assert_overlapped(&log, took);
    }

    fn ureq_read_timeout_fires_while_other_green_threads_run() {
        monkey::patch_all();
        let addr = slow_server();
        // One quick fetch first, so that first-use costs (qemu-user translating the code,
        // under load) do not eat the timeout before any wait.
        let warm = format!("http://{addr}/1?delay=0");
        verdant::spawn(move || ureq_get(&ureq::Agent::new_with_defaults(), &warm).unwrap())
            .join()
            .unwrap();
        // ureq waits for the response head with SO_RCVTIMEO set to 1 s; the server
        // answers after 5 s. Meanwhile another green thread ticks every 10 ms.
        let ticks = Rc::new(RefCell::new(0u32));
        let ticker = {
            let ticks = ticks.clone();
            verdant::spawn(move || {
                for _ in 0..20 {
                    std::thread::sleep(Duration::from_millis(10));
                    *ticks.borrow_mut() += 1;
                }
            })
        };
        let fetch = {
            let ticks = ticks.clone();
            verdant::spawn(move || {
                let agent = ureq_agent_with_timeouts(Duration::from_secs(1));
                let start = Instant::now();
                let got = ureq_get(&agent, &format!("http://{addr}/10?delay=5000"));
                (got, start.elapsed(), *ticks.borrow())
            })
        };
        let (got, took, ticked_meanwhile) = fetch.join().unwrap();
        assert!(
            matches!(got, Err(ureq::Error::Timeout(_))),
            "expected ureq's timeout, got {got:?} after {took:?}"
        );
        assert!(took >= Duration::from_secs(1), "timed out early: {took:?}");
        assert!(took < Duration::from_secs(4), "the timeout did not fire: {took:?}");
        // The ticker ran during the wait: the wait was on the hub, not in the OS thread.
        assert!(ticked_meanwhile > 0, "no tick during the {took:?} wait");
        ticker.join().unwrap();
        assert_eq!(*ticks.borrow(), 20);
    }

    fn curl_fetches_run_sequentially_before_patching() {
        assert!(!monkey::is_patched(Family::Sockets));
        let (log, took) =
            fetch_in_green_threads(SEQUENTIAL_FETCHES, |url| curl_get(url).unwrap());
        assert_sequential(&log, took);
    }

    fn curl_fetches_overlap_after_patch_all() {
        curl::init();
        monkey::patch_all();
        let (log, took) = fetch_in_green_threads(FETCHES, |url| curl_get(url).unwrap());
        assert_overlapped(&log, took);
    }

    fn curl_timeout_fires_while_other_green_threads_run() {
        monkey::patch_all();
        let addr = slow_server();
        // One quick fetch first (curl's global init, and qemu-user translating the code
        // under load, must not eat the timeout before any wait). Then the server answers
        // after 5 s, curl gives up after 1 s, and another green thread ticks meanwhile.
        let warm = format!("http://{addr}/1?delay=0");
        verdant::spawn(move || curl_get(&warm).unwrap())
            .join()
            .unwrap();
        let ticks = Rc::new(RefCell::new(0u32));
        let ticker = {
            let ticks = ticks.clone();
            verdant::spawn(move || {
                for _ in 0..20 {
                    std::thread::sleep(Duration::from_millis(10));
                    *ticks.borrow_mut() += 1;
                }
            })
        };
        let fetch = {
            let ticks = ticks.clone();
            verdant::spawn(move || {
                let start = Instant::now();
                let got = (|| {
                    let mut easy = curl::easy::Easy::new();
                    easy.url(&format!("http://{addr}/10?delay=5000"))?;
                    easy.timeout(Duration::from_secs(1))?;
                    easy.perform()
                })();
                (got, start.elapsed(), *ticks.borrow())
            })
        };
        let (got, took, ticked_meanwhile) = fetch.join().unwrap();
        assert!(
            got.as_ref().is_err_and(curl::Error::is_operation_timedout),
            "expected curl's timeout, got {got:?} after {took:?}"
        );
        assert!(took >= Duration::from_millis(990), "timed out early: {took:?}");
        assert!(took < Duration::from_secs(4), "the timeout did not fire: {took:?}");
        // The ticker ran during the wait: the wait was on the hub, not in the OS thread.
        assert!(ticked_meanwhile > 0, "no tick during the {took:?} wait");
        ticker.join().unwrap();
        assert_eq!(*ticks.borrow(), 20);
    }
}
