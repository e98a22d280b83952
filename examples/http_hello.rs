//! "Hello, world!" over HTTP/1.1 with keep-alive and pipelining, one green thread per
//! connection, the request head parsed by hand — the handler of the issue's server
//! benchmark (`scripts/bench-http` runs `wrk` against it and against `tokio_hello`, which
//! uses the same [`respond`]).
//!
//! ```text
//! cargo run --release --example http_hello -- --port 8080
//! # listening on 127.0.0.1:8080
//! wrk -t1 -c100 -d5s http://127.0.0.1:8080/
//! ```
//!
//! What the parser handles: several pipelined requests in one read, a head split across
//! reads, `Connection: close`, HTTP/1.0 (closes unless `Connection: keep-alive`), request
//! bodies announced by `Content-Length` (skipped). A head longer than [`MAX_HEAD`] gets
//! `431` and the connection closes; so does a malformed head (`400`).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};

use verdant::net::TcpStream;
use verdant::StreamServer;

/// The response body.
pub const BODY: &[u8] = b"Hello, world!";

/// The longest request head accepted (and the size of the read buffer).
pub const MAX_HEAD: usize = 8 * 1024;

const OK_KEEP_ALIVE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!";
const OK_KEEP_ALIVE_10: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: keep-alive\r\n\r\nHello, world!";
const OK_CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: close\r\n\r\nHello, world!";
const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const HEAD_TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// What [`respond`] made of the bytes it was given.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of input used up (complete heads and the bodies they announced).
    pub consumed: usize,
    /// Body bytes still to skip after `consumed` (the rest of a body not yet received).
    pub skip: usize,
    /// The connection must close once the output is written.
    pub close: bool,
}

/// Answers every complete request head in `input`, appending the responses to `out`.
/// Stops after a request that closes the connection. Bytes after the last complete head
/// are not consumed: the caller keeps them and calls again with more.
///
/// Never inlined, so that every server calls the same code (tokio's build kept it out of
/// line on its own, verdant's inlined it into the connection loop).
#[inline(never)]
pub fn respond(input: &[u8], out: &mut Vec<u8>) -> Progress {
    let mut p = Progress::default();
    while let Some(end) = find_head_end(&input[p.consumed..]) {
        let head = &input[p.consumed..p.consumed + end];
        p.consumed += end + 4;
        let Some(req) = parse_head(head) else {
            out.extend_from_slice(BAD_REQUEST);
            p.close = true;
            return p;
        };
        out.extend_from_slice(match (req.keep_alive, req.http10) {
            (false, _) => OK_CLOSE,
            (true, false) => OK_KEEP_ALIVE,
            (true, true) => OK_KEEP_ALIVE_10,
        });
        let body = req.content_length.min(input.len() - p.consumed);
        p.consumed += body;
        p.skip = req.content_length - body;
        if !req.keep_alive {
            p.close = true;
            return p;
        }
        if p.skip > 0 {
            return p;
        }
    }
    p
}

/// Where the head's closing "\r\n\r\n" starts.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 4 <= buf.len() {
        match buf[i + 3] {
            b'\n' if &buf[i..i + 4] == b"\r\n\r\n" => return Some(i),
            b'\n' | b'\r' => i += 1,
            _ => i += 4,
        }
    }
    None
}

struct Head {
    keep_alive: bool,
    http10: bool,
    content_length: usize,
}

fn parse_head(head: &[u8]) -> Option<Head> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next()?;
    let version = request_line.rsplit(|&b| b == b' ').next()?;
    let http10 = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        _ => return None,
    };
    let mut keep_alive = !http10;
    let mut content_length = 0;
    for line in lines {
        let colon = line.iter().position(|&b| b == b':')?;
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"connection") {
            if value.eq_ignore_ascii_case(b"close") {
                keep_alive = false;
            } else if value.eq_ignore_ascii_case(b"keep-alive") {
                keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            content_length = std::str::from_utf8(value).ok()?.parse().ok()?;
        }
    }
    Some(Head {
        keep_alive,
        http10,
        content_length,
    })
}

/// Serves one connection until the client closes it, asks to close, or errs.
pub fn handle(mut conn: TcpStream, _peer: SocketAddr) {
    if serve_connection(&mut conn) {
        let _ = conn.shutdown(Shutdown::Write);
    }
}

/// The request loop of one connection, for any blocking stream (`verdant::net` here,
/// `std::net` after `patch_all()` in `std_http_hello`, so both serve with the same code).
/// Returns whether the connection should be shut down for writing (the server asked to
/// close); `false` when the client closed it or an I/O error ended it.
pub fn serve_connection<S: Read + Write>(conn: &mut S) -> bool {
    let mut buf = vec![0; MAX_HEAD];
    let mut out = Vec::with_capacity(4 * 1024);
    let (mut filled, mut skip) = (0, 0);
    loop {
        let n = match conn.read(&mut buf[filled..]) {
            Ok(0) | Err(_) => return false,
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
            out.extend_from_slice(HEAD_TOO_LARGE);
        }
        if !out.is_empty() {
            if conn.write_all(&out).is_err() {
                return false;
            }
            out.clear();
        }
        if p.close || too_large {
            return true;
        }
    }
}

/// The value of `--port N` among the arguments; 0 (any free port) when absent.
pub fn port_arg() -> u16 {
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
