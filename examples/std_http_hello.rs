//! `http_hello` written the way thread-per-connection code is written with `std::net` —
//! a blocking `TcpListener::accept` loop, a blocking `TcpStream` per connection — run as
//! one green thread per connection after `verdant::monkey::patch_all()`. The request loop is
//! `http_hello::serve_connection`, the very code `http_hello` runs, here over std types (this
//! file includes `http_hello.rs`). `scripts/bench-monkey-http` compares the two servers' CPU
//! time per request.
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

use http_hello::serve_connection;

/// Serves one connection with http_hello's request loop, over a std stream.
fn handle(mut conn: TcpStream) {
    if serve_connection(&mut conn) {
        let _ = conn.shutdown(Shutdown::Write);
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

fn main() {
    verdant::monkey::patch_all();
    let listener = TcpListener::bind(("127.0.0.1", http_hello::port_arg())).unwrap_or_else(|e| {
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
