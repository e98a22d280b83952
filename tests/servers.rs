//! The example servers (`examples/{echo,http_hello,mini_redis,chat}.rs`) under load and
//! with awkward input. This file includes the examples' source, so the servers run
//! in-process: on the test's own hub (clients as green threads beside them), or on an OS
//! thread of their own while an external load generator runs. Everything is loopback-only
//! and bounded in time.
//!
//! `wrk`, `redis-benchmark` and `redis-cli` come from `.ci/install-deps`; a test that needs
//! one fails with that advice when it is missing. Those tests are skipped when the target is
//! not x86_64: CI runs aarch64 under qemu-user on an x86_64 host, where load figures mean
//! nothing; the in-process tests cover the same server code there.

#[allow(dead_code)]
#[path = "../examples/chat.rs"]
mod chat;
#[allow(dead_code)]
#[path = "../examples/echo.rs"]
mod echo;
#[allow(dead_code)]
#[path = "../examples/http_hello.rs"]
mod http_hello;
#[allow(dead_code)]
#[path = "../examples/mini_redis.rs"]
mod mini_redis;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use verdant::net::TcpStream;
use verdant::{StreamServer, Timeout};

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Runs the server `make` builds on an OS thread (its own hub) for the rest of the test
/// process; returns its address.
fn serve_on_thread(make: fn(SocketAddr) -> io::Result<StreamServer>) -> SocketAddr {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let server = make(loopback()).unwrap();
        tx.send(server.local_addr().unwrap()).unwrap();
        server.serve_forever().unwrap();
    });
    rx.recv().unwrap()
}

/// Whether the load-generator tests run here (see the module docs).
fn load_tools_apply() -> bool {
    if cfg!(target_arch = "x86_64") {
        return true;
    }
    eprintln!(
        "skipped: load generators only run on x86_64 (this {} build runs under qemu-user)",
        std::env::consts::ARCH
    );
    false
}

/// Runs an external tool bounded by `timeout(1)`; fails clearly if it is not installed.
fn run_tool(seconds: u32, tool: &str, args: &[&str]) -> String {
    if Command::new(tool).arg("--version").output().is_err() {
        panic!("`{tool}` is not installed: run .ci/install-deps (it installs wrk, redis-tools)");
    }
    let out = Command::new("timeout")
        .arg(seconds.to_string())
        .arg(tool)
        .args(args)
        .output()
        .expect("run timeout(1)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{tool} {args:?}: {:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    stdout
}

#[test]
fn echo_a_thousand_concurrent_connections_check_every_byte() {
    const CONNECTIONS: usize = 1000;
    let _bound = Timeout::start(Duration::from_secs(120));
    let server = StreamServer::bind(loopback(), echo::handle).unwrap();
    server.start().unwrap();
    let addr = server.local_addr().unwrap();
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            verdant::spawn(move || {
                let len = 1 + (i * 37) % 6000;
                let payload: Vec<u8> = (0..len).map(|j| (i * 7 + j * 13) as u8).collect();
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(&payload).unwrap();
                s.shutdown(Shutdown::Write).unwrap();
                let mut back = Vec::with_capacity(len);
                s.read_to_end(&mut back).unwrap();
                assert_eq!(back, payload, "connection {i}");
                back.len()
            })
        })
        .collect();
    let bytes: usize = verdant::joinall(clients)
        .into_iter()
        .map(|r| r.unwrap())
        .sum();
    assert_eq!(bytes, (0..CONNECTIONS).map(|i| 1 + (i * 37) % 6000).sum());
    server.stop(Duration::from_secs(5));
    assert_eq!(server.connection_count(), 0);
}

const HELLO_KEEP_ALIVE: &str =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!";

/// Sends `parts` with pauses between them (so the server sees separate reads), then reads
/// until the server closes or `expect_len` bytes arrived.
fn http_exchange(addr: SocketAddr, parts: &[&str], expect_len: Option<usize>) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for part in parts {
        s.write_all(part.as_bytes()).unwrap();
        verdant::sleep(Duration::from_millis(20)).unwrap();
    }
    let mut got = Vec::new();
    match expect_len {
        Some(n) => {
            got.resize(n, 0);
            s.read_exact(&mut got).unwrap();
            // Nothing more: the connection stays open and silent.
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let mut more = [0; 1];
            assert_eq!(
                s.read(&mut more).unwrap_err().kind(),
                io::ErrorKind::TimedOut,
                "kept alive, nothing extra"
            );
        }
        None => drop(s.read_to_end(&mut got).unwrap()),
    }
    String::from_utf8(got).unwrap()
}

#[test]
fn http_hello_keep_alive_pipelining_and_partial_heads() {
    let _bound = Timeout::start(Duration::from_secs(60));
    let server = StreamServer::bind(loopback(), http_hello::handle).unwrap();
    server.start().unwrap();
    let addr = server.local_addr().unwrap();
    let get = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let one = HELLO_KEEP_ALIVE.len();

    // Three pipelined requests in one write: three responses, connection kept.
    let three = get.repeat(3);
    assert_eq!(
        http_exchange(addr, &[&three], Some(3 * one)),
        HELLO_KEEP_ALIVE.repeat(3)
    );
    // A head split across reads, even inside "\r\n\r\n"; then a second one.
    assert_eq!(
        http_exchange(
            addr,
            &["GE", "T / HTTP/1.1\r\nHo", "st: x\r\n\r", "\n", get],
            Some(2 * one)
        ),
        HELLO_KEEP_ALIVE.repeat(2)
    );
    // Connection: close (any case) ends the connection after its response; what follows
    // it is not answered.
    let close = http_exchange(
        addr,
        &[&format!(
            "{get}GET / HTTP/1.1\r\nconnection: Close\r\n\r\n{get}"
        )],
        None,
    );
    assert!(close.starts_with(HELLO_KEEP_ALIVE), "{close}");
    assert!(close[one..].contains("Connection: close\r\n"), "{close}");
    assert_eq!(close.matches("Hello, world!").count(), 2, "{close}");
    // HTTP/1.0 closes unless it asks for keep-alive.
    let old = http_exchange(addr, &["GET / HTTP/1.0\r\n\r\n"], None);
    assert!(old.contains("Connection: close\r\n") && old.ends_with("Hello, world!"));
    let old_keep = "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    let reply = http_exchange(addr, &[old_keep, old_keep], Some(2 * (one + 24)));
    assert_eq!(reply.matches("Connection: keep-alive\r\n").count(), 2);
    // A body announced by Content-Length is skipped, even when it comes in pieces.
    let post = "POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123";
    assert_eq!(
        http_exchange(addr, &[post, "456789", get], Some(2 * one)),
        HELLO_KEEP_ALIVE.repeat(2)
    );
    // Malformed and oversized heads are refused and the connection closes.
    let bad = http_exchange(addr, &["NONSENSE\r\n\r\n"], None);
    assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");
    let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(10_000));
    let too_large = http_exchange(addr, &[&huge], None);
    assert!(too_large.starts_with("HTTP/1.1 431 "), "{too_large}");
    server.stop(Duration::from_secs(1));
}

#[test]
fn http_hello_under_wrk_answers_every_request() {
    if !load_tools_apply() {
        return;
    }
    let addr = serve_on_thread(|a| StreamServer::bind(a, http_hello::handle));
    let url = format!("http://{addr}/");
    let out = run_tool(60, "wrk", &["-t1", "-c50", "-d2s", &url]);
    let requests: u64 = out
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk's output:\n{out}"));
    assert!(requests > 0, "{out}");
    assert!(!out.contains("Socket errors"), "socket errors:\n{out}");
    assert!(!out.contains("Non-2xx"), "non-2xx responses:\n{out}");
}

/// Every "NAME: N requests per second" of redis-benchmark's output (it redraws progress
/// lines with '\r').
fn benchmark_results(out: &str) -> Vec<(String, f64)> {
    out.split(['\r', '\n'])
        .filter_map(|l| {
            let (name, rest) = l.trim().split_once(": ")?;
            let rps = rest
                .strip_suffix(" msec")?
                .split(" requests per second")
                .next()?;
            Some((name.to_owned(), rps.trim().parse().ok()?))
        })
        .collect()
}

#[test]
fn mini_redis_under_redis_benchmark_answers_every_request() {
    if !load_tools_apply() {
        return;
    }
    let addr = serve_on_thread(mini_redis::server);
    let port = addr.port().to_string();
    for pipeline in ["1", "16"] {
        let args = [
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "ping,set,get",
            "-n",
            "20000",
            "-c",
            "50",
            "-P",
            pipeline,
            "-q",
        ];
        let out = run_tool(120, "redis-benchmark", &args);
        let results = benchmark_results(&out);
        for test in ["PING_INLINE", "PING_MBULK", "SET", "GET"] {
            let rps = results.iter().find(|(n, _)| n == test).map(|r| r.1);
            assert!(
                rps.is_some_and(|r| r > 0.0),
                "-P {pipeline}: no result for {test}:\n{out}"
            );
        }
        let lower = out.to_lowercase();
        assert!(
            !lower.contains("error") && !lower.contains("warn"),
            "-P {pipeline}:\n{out}"
        );
    }
}

#[test]
fn mini_redis_round_trips_with_redis_cli() {
    if !load_tools_apply() {
        return;
    }
    let addr = serve_on_thread(mini_redis::server);
    let port = addr.port().to_string();
    let cli = |args: &str| -> String {
        let mut argv = vec!["-h", "127.0.0.1", "-p", &port];
        argv.extend(args.split(' '));
        run_tool(30, "redis-cli", &argv).trim_end().to_owned()
    };
    let script = [
        ("PING", "PONG"),
        ("ECHO hello", "hello"),
        ("SET greeting hi", "OK"),
        ("GET greeting", "hi"),
        ("INCR counter", "1"),
        ("INCR counter", "2"),
        (
            "INCR greeting",
            "ERR value is not an integer or out of range",
        ),
        ("EXPIRE counter 100", "1"),
        ("TTL counter", "100"),
        ("EXPIRE missing 100", "0"),
        ("DEL greeting counter missing", "2"),
        ("GET greeting", ""),
        ("SET short lived PX 50", "OK"),
        ("NOSUCH x", "ERR unknown command 'NOSUCH'"),
    ];
    for (cmd, want) in script {
        assert_eq!(cli(cmd), want, "redis-cli {cmd}");
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(cli("GET short"), "", "expired");
}

#[test]
fn mini_redis_pipelined_and_split_commands_in_process() {
    let _bound = Timeout::start(Duration::from_secs(30));
    let server = mini_redis::server(loopback()).unwrap();
    server.start().unwrap();
    let mut s = TcpStream::connect(server.local_addr().unwrap()).unwrap();
    // Pipelined, with a command split inside a bulk string, and an inline command.
    s.write_all(b"*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nva")
        .unwrap();
    verdant::sleep(Duration::from_millis(20)).unwrap();
    s.write_all(b"lue\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\nINCR n\r\n*2\r\n$4\r\nECHO\r\n$0\r\n\r\n")
        .unwrap();
    let want = b"+PONG\r\n+OK\r\n$5\r\nvalue\r\n:1\r\n$0\r\n\r\n";
    let mut got = vec![0; want.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
    // A protocol error gets an error reply and the connection closes.
    s.write_all(b"*1\r\n?oops\r\n").unwrap();
    let mut rest = String::new();
    s.read_to_string(&mut rest).unwrap();
    assert!(rest.starts_with("-ERR Protocol error"), "{rest}");
    server.stop(Duration::from_secs(1));
}

#[test]
fn resp_parser_waits_for_complete_commands() {
    let cmd = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n";
    for cut in 0..cmd.len() {
        assert_eq!(
            mini_redis::parse_command(&cmd[..cut]),
            Ok(None),
            "cut {cut}"
        );
    }
    let (args, used) = mini_redis::parse_command(cmd).unwrap().unwrap();
    assert_eq!((args, used), (vec![&b"GET"[..], b"key"], cmd.len()));
    assert!(mini_redis::parse_command(b"*1\r\n$3\r\nGETxx").is_err());
}

#[test]
fn chat_broadcasts_lines_to_every_client() {
    let _bound = Timeout::start(Duration::from_secs(30));
    let server = chat::server(loopback()).unwrap();
    server.start().unwrap();
    let addr = server.local_addr().unwrap();
    let mut clients: Vec<_> = (0..3)
        .map(|_| {
            let s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            BufReader::new(s)
        })
        .collect();
    while server.connection_count() < 3 {
        verdant::sleep(Duration::from_millis(1)).unwrap();
    }
    verdant::sleep(Duration::from_millis(20)).unwrap();
    let sender = clients[0].get_ref().local_addr().unwrap();
    clients[0].get_mut().write_all(b"hello, room\n").unwrap();
    for c in &mut clients {
        let mut line = String::new();
        c.read_line(&mut line).unwrap();
        assert_eq!(line, format!("{sender}: hello, room\n"));
    }
    // One leaves; the others still hear each other.
    drop(clients.remove(1));
    while server.connection_count() > 2 {
        verdant::sleep(Duration::from_millis(1)).unwrap();
    }
    let sender = clients[1].get_ref().local_addr().unwrap();
    clients[1].get_mut().write_all(b"still here\n").unwrap();
    for c in &mut clients {
        let mut line = String::new();
        c.read_line(&mut line).unwrap();
        assert_eq!(line, format!("{sender}: still here\n"));
    }
    // Stopping kills the handlers still connected; their writers end with them.
    server.stop(Duration::from_millis(50));
    for c in &mut clients {
        let mut rest = String::new();
        assert_eq!(c.read_to_string(&mut rest).unwrap_or(0), 0);
    }
}
