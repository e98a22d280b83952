//! A small Redis: the RESP protocol with PING, ECHO, SET (EX/PX), GET, DEL, INCR, EXPIRE,
//! TTL, EXISTS, plus the CONFIG GET, SELECT, CLIENT and COMMAND calls that `redis-cli` and
//! `redis-benchmark` make when they connect. One green thread per connection, all of them
//! on one hub sharing the keyspace through an `Rc<RefCell<HashMap>>` (no locks: green
//! threads on one hub never run at the same time, and no borrow is held across a blocking
//! call). Pipelined commands are answered together, with one write per read.
//!
//! ```text
//! cargo run --release --example mini_redis -- --port 6380
//! # listening on 127.0.0.1:6380
//! redis-cli -p 6380 set greeting hello     # OK
//! redis-benchmark -p 6380 -t ping,set,get -n 100000 -c 50 -P 16 -q
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use verdant::net::TcpStream;
use verdant::StreamServer;

/// The longest request accepted (bigger ones get an error and the connection closes).
pub const MAX_REQUEST: usize = 64 * 1024 * 1024;

/// A value and the instant it expires at, if any.
struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

/// The keyspace every connection of one server shares.
#[derive(Clone, Default)]
pub struct Db {
    map: Rc<RefCell<HashMap<Vec<u8>, Entry>>>,
}

/// A parse failure: the client sent something that is not RESP.
#[derive(Debug, PartialEq, Eq)]
pub struct ProtocolError(pub &'static str);

/// A parsed command's arguments (borrowed from the input) and the bytes it took.
pub type Command<'a> = (Vec<&'a [u8]>, usize);

/// Parses one command from the front of `buf`: `Ok(Some((args, consumed)))`, `Ok(None)`
/// if the command is not complete yet. Accepts RESP arrays of bulk strings (what clients
/// send) and inline commands (`PING\r\n`, what telnet users type).
pub fn parse_command(buf: &[u8]) -> Result<Option<Command<'_>>, ProtocolError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] != b'*' {
        let Some(end) = find_crlf(buf, 0) else {
            return Ok(None);
        };
        let args = buf[..end]
            .split(|b| b.is_ascii_whitespace())
            .filter(|a| !a.is_empty())
            .collect();
        return Ok(Some((args, end + 2)));
    }
    let Some((count, mut pos)) = parse_int_line(buf, 1)? else {
        return Ok(None);
    };
    let count = usize::try_from(count).map_err(|_| ProtocolError("invalid multibulk length"))?;
    let mut args = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        match buf.get(pos) {
            None => return Ok(None),
            Some(b'$') => {}
            Some(_) => return Err(ProtocolError("expected '$'")),
        }
        let Some((len, start)) = parse_int_line(buf, pos + 1)? else {
            return Ok(None);
        };
        let len = usize::try_from(len).map_err(|_| ProtocolError("invalid bulk length"))?;
        if len > MAX_REQUEST {
            return Err(ProtocolError("invalid bulk length"));
        }
        if buf.len() < start + len + 2 {
            return Ok(None);
        }
        if &buf[start + len..start + len + 2] != b"\r\n" {
            return Err(ProtocolError("bulk string not followed by CRLF"));
        }
        args.push(&buf[start..start + len]);
        pos = start + len + 2;
    }
    Ok(Some((args, pos)))
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let nl = from + buf[from..].iter().position(|&b| b == b'\n')?;
    (nl > from && buf[nl - 1] == b'\r').then_some(nl - 1)
}

/// `<integer>\r\n` at `from`: the integer and the position after the line.
fn parse_int_line(buf: &[u8], from: usize) -> Result<Option<(i64, usize)>, ProtocolError> {
    let Some(end) = find_crlf(buf, from) else {
        if buf.len() - from > 20 {
            return Err(ProtocolError("invalid length line"));
        }
        return Ok(None);
    };
    let n = parse_i64(&buf[from..end]).ok_or(ProtocolError("invalid length"))?;
    Ok(Some((n, end + 2)))
}

fn parse_i64(s: &[u8]) -> Option<i64> {
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Whether `key` holds a value at `now`, removing it if it has expired.
fn live(map: &mut HashMap<Vec<u8>, Entry>, key: &[u8], now: Instant) -> bool {
    match map.get(key).and_then(|e| e.expires) {
        Some(at) if at <= now => {
            map.remove(key);
            false
        }
        _ => map.contains_key(key),
    }
}

fn simple(out: &mut Vec<u8>, s: &str) {
    out.push(b'+');
    out.extend_from_slice(s.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn error(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(b"-");
    out.extend_from_slice(s.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn integer(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(format!(":{n}\r\n").as_bytes());
}

fn bulk(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => out.extend_from_slice(b"$-1\r\n"),
        Some(b) => {
            out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
    }
}

fn wrong_args(out: &mut Vec<u8>, cmd: &[u8]) {
    let cmd = String::from_utf8_lossy(cmd).to_lowercase();
    error(
        out,
        &format!("ERR wrong number of arguments for '{cmd}' command"),
    );
}

impl Db {
    /// An empty keyspace.
    pub fn new() -> Db {
        Db::default()
    }

    /// Runs one command, appending its RESP reply to `out`. Returns false for `QUIT`.
    pub fn execute(&self, args: &[&[u8]], out: &mut Vec<u8>) -> bool {
        let Some(name) = args.first() else {
            return true;
        };
        let cmd = name.to_ascii_uppercase();
        let now = Instant::now();
        let mut map = self.map.borrow_mut();
        match (cmd.as_slice(), args.len()) {
            (b"PING", 1) => simple(out, "PONG"),
            (b"PING", 2) => bulk(out, Some(args[1])),
            (b"ECHO", 2) => bulk(out, Some(args[1])),
            (b"GET", 2) => {
                let found = live(&mut map, args[1], now);
                bulk(out, found.then(|| map[args[1]].value.as_slice()));
            }
            (b"SET", 3..) => {
                let mut expires = None;
                match args[3..] {
                    [] => {}
                    [unit, n]
                        if unit.eq_ignore_ascii_case(b"EX") || unit.eq_ignore_ascii_case(b"PX") =>
                    {
                        match parse_i64(n).filter(|&n| n > 0) {
                            Some(n) if unit.eq_ignore_ascii_case(b"EX") => {
                                expires = Some(now + Duration::from_secs(n as u64))
                            }
                            Some(n) => expires = Some(now + Duration::from_millis(n as u64)),
                            None => {
                                error(out, "ERR invalid expire time in 'set' command");
                                return true;
                            }
                        }
                    }
                    _ => {
                        error(out, "ERR syntax error");
                        return true;
                    }
                }
                let entry = Entry {
                    value: args[2].to_vec(),
                    expires,
                };
                match map.get_mut(args[1]) {
                    Some(e) => *e = entry,
                    None => drop(map.insert(args[1].to_vec(), entry)),
                }
                simple(out, "OK");
            }
            (b"DEL", 2..) | (b"EXISTS", 2..) => {
                let mut n = 0;
                for key in &args[1..] {
                    if live(&mut map, key, now) {
                        n += 1;
                        if cmd == b"DEL" {
                            map.remove(*key);
                        }
                    }
                }
                integer(out, n);
            }
            (b"INCR", 2) => {
                let current = if live(&mut map, args[1], now) {
                    match parse_i64(&map[args[1]].value) {
                        Some(n) => n,
                        None => {
                            error(out, "ERR value is not an integer or out of range");
                            return true;
                        }
                    }
                } else {
                    0
                };
                let Some(next) = current.checked_add(1) else {
                    error(out, "ERR increment or decrement would overflow");
                    return true;
                };
                let value = next.to_string().into_bytes();
                match map.get_mut(args[1]) {
                    Some(e) => e.value = value,
                    None => drop(map.insert(
                        args[1].to_vec(),
                        Entry {
                            value,
                            expires: None,
                        },
                    )),
                }
                integer(out, next);
            }
            (b"EXPIRE", 3) => {
                let Some(secs) = parse_i64(args[2]) else {
                    error(out, "ERR value is not an integer or out of range");
                    return true;
                };
                if !live(&mut map, args[1], now) {
                    integer(out, 0);
                } else if secs <= 0 {
                    map.remove(args[1]);
                    integer(out, 1);
                } else {
                    map.get_mut(args[1]).unwrap().expires =
                        Some(now + Duration::from_secs(secs as u64));
                    integer(out, 1);
                }
            }
            (b"TTL", 2) => {
                let ttl = if !live(&mut map, args[1], now) {
                    -2
                } else {
                    match map[args[1]].expires {
                        None => -1,
                        Some(at) => (at - now).as_secs_f64().round() as i64,
                    }
                };
                integer(out, ttl);
            }
            (b"CONFIG", 3) if args[1].eq_ignore_ascii_case(b"GET") => {
                // redis-benchmark asks for "save" and "appendonly" when it starts.
                let value: &[u8] = if args[2].eq_ignore_ascii_case(b"appendonly") {
                    b"no"
                } else {
                    b""
                };
                out.extend_from_slice(b"*2\r\n");
                bulk(out, Some(args[2]));
                bulk(out, Some(value));
            }
            (b"SELECT", 2) | (b"CLIENT", 2..) => simple(out, "OK"),
            (b"COMMAND", _) => out.extend_from_slice(b"*0\r\n"),
            (b"QUIT", 1) => {
                simple(out, "OK");
                return false;
            }
            (b"PING" | b"ECHO" | b"GET" | b"SET" | b"DEL" | b"EXISTS" | b"INCR", _)
            | (b"EXPIRE" | b"TTL" | b"SELECT" | b"CONFIG" | b"QUIT", _) => wrong_args(out, name),
            _ => {
                let name = String::from_utf8_lossy(name);
                error(out, &format!("ERR unknown command '{name}'"));
            }
        }
        true
    }

    /// Serves one connection: answers every complete command of each read, in one write.
    pub fn handle(&self, mut conn: TcpStream) {
        let mut buf = vec![0; 16 * 1024];
        let mut out = Vec::with_capacity(16 * 1024);
        let mut filled = 0;
        loop {
            if filled == buf.len() {
                if buf.len() >= MAX_REQUEST {
                    return;
                }
                buf.resize(buf.len() * 2, 0);
            }
            let n = match conn.read(&mut buf[filled..]) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            filled += n;
            let mut pos = 0;
            let mut open = true;
            while open {
                match parse_command(&buf[pos..filled]) {
                    Ok(Some((args, used))) => {
                        pos += used;
                        open = self.execute(&args, &mut out);
                    }
                    Ok(None) => break,
                    Err(ProtocolError(e)) => {
                        error(&mut out, &format!("ERR Protocol error: {e}"));
                        open = false;
                    }
                }
            }
            buf.copy_within(pos..filled, 0);
            filled -= pos;
            if !out.is_empty() {
                if conn.write_all(&out).is_err() {
                    return;
                }
                out.clear();
            }
            if !open {
                return;
            }
        }
    }
}

/// A server whose connections share one keyspace.
pub fn server(addr: SocketAddr) -> std::io::Result<StreamServer> {
    let db = Db::new();
    StreamServer::bind(addr, move |conn, _peer| db.handle(conn))
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
    let server = server(SocketAddr::from(([127, 0, 0, 1], port_arg()))).unwrap_or_else(|e| {
        eprintln!("bind: {e}");
        std::process::exit(1)
    });
    println!("listening on {}", server.local_addr().unwrap());
    server.serve_forever().unwrap();
}
