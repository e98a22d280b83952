//! The peer of `http_hello` for `scripts/bench-http`: the same handler on tokio's
//! current_thread runtime, a task per connection, the same hand-parsed request loop (this
//! file includes `http_hello.rs` and calls its `respond`), the same listen backlog (4096).
//!
//! ```text
//! cargo run --release --example tokio_hello -- --port 8081
//! # listening on 127.0.0.1:8081
//! ```

#[allow(dead_code)]
#[path = "http_hello.rs"]
mod http_hello;

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use http_hello::{respond, MAX_HEAD};

/// Serves one connection: `http_hello::handle` with `.await`s.
async fn handle(mut conn: TcpStream) {
    let mut buf = vec![0; MAX_HEAD];
    let mut out = Vec::with_capacity(4 * 1024);
    let (mut filled, mut skip) = (0, 0);
    loop {
        let n = match conn.read(&mut buf[filled..]).await {
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
            return;
        }
        if !out.is_empty() {
            if conn.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if p.close {
            let _ = conn.shutdown().await;
            return;
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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    rt.block_on(async {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], port_arg())))
            .unwrap();
        let listener = socket.listen(4096).unwrap();
        println!("listening on {}", listener.local_addr().unwrap());
        loop {
            if let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(handle(conn));
            }
        }
    });
}
