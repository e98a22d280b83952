//! An echo server: every byte a client sends comes back, one green thread per connection.
//!
//! ```text
//! cargo run --release --example echo -- --port 7000
//! # listening on 127.0.0.1:7000
//! printf 'hello\n' | nc -q1 127.0.0.1 7000
//! ```
//!
//! `--port 0` (the default) picks a free port; the first line printed names it. The tests
//! (`tests/servers.rs`) include this file and run [`handle`] in-process.

use std::io::{Read, Write};
use std::net::SocketAddr;

use verdant::net::TcpStream;
use verdant::StreamServer;

/// Serves one connection: writes back whatever it reads, until end-of-file or an error.
pub fn handle(mut conn: TcpStream, _peer: SocketAddr) {
    let mut buf = [0; 16 * 1024];
    while let Ok(n @ 1..) = conn.read(&mut buf) {
        if conn.write_all(&buf[..n]).is_err() {
            break;
        }
    }
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
    let server = StreamServer::bind(("127.0.0.1", port_arg()), handle).unwrap_or_else(|e| {
        eprintln!("bind: {e}");
        std::process::exit(1)
    });
    println!("listening on {}", server.local_addr().unwrap());
    server.serve_forever().unwrap();
}
