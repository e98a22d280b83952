//! `http_hello` written the way thread-per-connection code is written with `std::net` —
//! a blocking `TcpListener::accept` loop, a blocking `TcpStream` per connection — run as
//! one green thread per connection after `verdant::monkey::patch_all()`. The request loop is
//! `http_hello::handle` with std types (this file includes `http_hello.rs` and calls its
//! `respond`). `scripts/bench-monkey-http` compares the two servers' CPU time per request.
//!
//! ```text
//! cargo run --release --features monkey --example std_http_hello -- --port 8080
//! # listening on 127.0.0.1:8080
//! wrk -t1 -c100 -d5s http://127.0.0.1:8080/
//! ```
//!
//! `--smoke` serves a few requests from plain std clients (green threads of the same OS
//! thread) and exits: what `scripts/run-examples` runs.

#[allow(dead_code)]
#[path = "http_hello.rs"]
mod http_hello;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};

use http_hello::{respond, MAX_HEAD};

/// Serves one connection: `http_hello::handle` on a `std::net::TcpStream`.
fn handle(mut conn: TcpStream) {
    let mut buf = vec![0; MAX_HEAD];
    let mut out = Vec::with_capacity(4 * 1024);
    let (mut filled, mut skip) = (0, 0);
    loop {
        let n = match conn.read(&mut buf[filled..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let dropped = n.min(skip);
        skip -= dropped;
        buf.copy_within(filled + dropped..filled + n, filled);
        filled += n - dropped;
        let p = respond(&buf[..filled], &mut out);
        buf.copy_within(p.consumed..filled, 0);
        filled -= p.consumed;
        skip += p.skip;
        let too_large = !p.close && filled == buf.len();
        if too_large {
            out.extend_from_slice(b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
        if !out.is_empty() {
            if conn.write_all(&out).is_err() {
                return;
            }
            out.clear();
        }
        if p.close || too_large {
            let _ = conn.shutdown(Shutdown::Write);
            return;
        }
    }
}

/// The accept loop: one green thread per connection, as thread-per-connection code would
/// spawn one OS thread per connection. A failed accept (EMFILE, ECONNABORTED) is reported
/// and the loop goes on, as `verdant::StreamServer` does.
fn serve(listener: TcpListener) {
    loop {
        match listener.accept() {
            Ok((conn, _peer)) => drop(verdant::spawn(move || handle(conn))),
            Err(e) => eprintln!("accept: {e}"),
        }
    }
}

/// A few keep-alive requests, pipelined and not, from plain std clients.
fn smoke(addr: SocketAddr) {
    let clients: Vec<_> = (0..10)
        .map(|_| {
            verdant::spawn(move || {
                let mut s = TcpStream::connect(addr).expect("connect");
                let req = b"GET / HTTP/1.1\r\nHost: smoke\r\n\r\n";
                s.write_all(&[&req[..], &req[..]].concat()).expect("send");
                let response = &http_hello::BODY;
                let mut got = Vec::new();
                let mut buf = [0; 1024];
                while got
                    .windows(response.len())
                    .filter(|w| w == response)
                    .count()
                    < 2
                {
                    let n = s.read(&mut buf).expect("read");
                    assert!(n > 0, "the server closed a keep-alive connection");
                    got.extend_from_slice(&buf[..n]);
                }
                s.write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
                    .expect("send");
                s.read_to_end(&mut got).expect("read to the end");
                assert!(got.ends_with(response), "{}", String::from_utf8_lossy(&got));
            })
        })
        .collect();
    for r in verdant::joinall(clients) {
        r.expect("smoke client");
    }
    println!("smoke: 10 connections, 30 requests served");
}

/// The value of `--port N` among the arguments; 0 (any free port) when absent.
fn port_arg() -> u16 {
    let args: Vec<String> = std::env::args().collect();
    let value = args
        .iter()
        .position(|a| a == "--port")
        .and_then(|i| args.get(i + 1));
    value.map_or(0, |p| p.parse().expect("--port takes a port number"))
}

fn main() {
    verdant::monkey::patch_all();
    let listener = TcpListener::bind(("127.0.0.1", port_arg())).unwrap_or_else(|e| {
        eprintln!("bind: {e}");
        std::process::exit(1)
    });
    let addr = listener.local_addr().unwrap();
    println!("listening on {addr}");
    let server = verdant::spawn(move || serve(listener));
    if std::env::args().any(|a| a == "--smoke") {
        smoke(addr);
        // The accept loop never ends (like a thread-per-connection server's).
        std::process::exit(0);
    }
    server.join().expect("accept loop");
}
