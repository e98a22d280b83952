//! gevent's classic demo with plain std code: after `verdant::monkey::patch_all()`, one green
//! thread per URL fetches with a blocking `std::net::TcpStream`, and each page's size is
//! printed as it arrives. The server (also plain std, also green threads) delays every
//! response by 200 ms, so 10 fetches take about 200 ms, not 2 s. Runs offline.
//!
//! ```sh
//! cargo run --release --features monkey --example monkey_fetch
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

const PAGES: usize = 10;

fn main() {
    verdant::monkey::patch_all();

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
    let addr = listener.local_addr().expect("local address");
    // A slow server: 200 ms per response, page n is n KiB.
    verdant::spawn(move || {
        for conn in listener.incoming() {
            let mut conn = conn.expect("accept");
            verdant::spawn(move || {
                let mut request_line = String::new();
                BufReader::new(&conn)
                    .read_line(&mut request_line)
                    .expect("read request");
                let n: usize = request_line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|path| path.trim_start_matches("/page/").parse().ok())
                    .unwrap_or(0);
                std::thread::sleep(Duration::from_millis(200));
                let body = vec![b'x'; n * 1024];
                let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                conn.write_all(head.as_bytes()).expect("write head");
                conn.write_all(&body).expect("write body");
            });
        }
    });

    let start = Instant::now();
    let fetches: Vec<_> = (1..=PAGES)
        .map(|n| {
            verdant::spawn(move || {
                let url = format!("http://{addr}/page/{n}");
                let mut s = TcpStream::connect(addr).expect("connect");
                write!(s, "GET /page/{n} HTTP/1.0\r\n\r\n").expect("send request");
                let mut response = Vec::new();
                s.read_to_end(&mut response).expect("read response");
                let body = response
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map_or(0, |at| response.len() - at - 4);
                println!("{url}: {body} bytes after {:?}", start.elapsed());
            })
        })
        .collect();
    for r in verdant::joinall(fetches) {
        r.expect("fetch");
    }
    let took = start.elapsed();
    println!("{PAGES} fetches of 200 ms each took {took:?} on one OS thread");
    assert!(
        took < Duration::from_millis(200 * PAGES as u64 / 2),
        "the fetches did not overlap"
    );
}
