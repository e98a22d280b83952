//! A line-based chat room: every line a client sends goes to every connected client
//! (the sender too), prefixed with the sender's address.
//!
//! Each client has a [`Queue`] of lines to send and two green threads: the connection's
//! handler reads lines and puts them into every client's queue; a writer green thread
//! takes lines from this client's queue and writes them. A slow reader therefore never
//! holds up the others: its lines wait in its own queue.
//!
//! ```text
//! cargo run --release --example chat -- --port 7001
//! # listening on 127.0.0.1:7001
//! nc 127.0.0.1 7001      # in two terminals; type lines in either
//! ```

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;

use verdant::net::TcpStream;
use verdant::{Queue, StreamServer};

/// The longest line accepted; a client that sends a longer one is disconnected.
pub const MAX_LINE: usize = 64 * 1024;

/// One client's queue of lines to send.
type Outbox = Queue<Arc<[u8]>>;

/// The connected clients' outgoing queues, by connection number.
#[derive(Clone, Default)]
pub struct Room {
    clients: Rc<RefCell<HashMap<u64, Outbox>>>,
    next_id: Rc<Cell<u64>>,
}

impl Room {
    /// An empty room.
    pub fn new() -> Room {
        Room::default()
    }

    /// Clients connected now.
    pub fn len(&self) -> usize {
        self.clients.borrow().len()
    }

    /// Whether nobody is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `line` for every client.
    fn broadcast(&self, line: Arc<[u8]>) {
        for queue in self.clients.borrow().values() {
            let _ = queue.put(line.clone());
        }
    }

    /// Serves one client until it disconnects.
    pub fn handle(&self, conn: TcpStream, peer: SocketAddr) {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let outgoing = Queue::new();
        self.clients.borrow_mut().insert(id, outgoing.clone());
        // Leaves the room however the handler ends (even killed by StreamServer::stop):
        // closing the queue ends the writer.
        let _leave = Leave {
            room: self.clone(),
            id,
        };

        let mut writer_conn = match conn.try_clone() {
            Ok(c) => c,
            Err(_) => return,
        };
        let writer_queue = outgoing.clone();
        let writer = verdant::spawn(move || {
            while let Ok(line) = writer_queue.get() {
                if writer_conn.write_all(&line).is_err() {
                    // Wake the reader: the client is gone.
                    let _ = writer_conn.shutdown(Shutdown::Both);
                    break;
                }
            }
        });

        let mut reader = BufReader::new(&conn);
        let mut line = Vec::new();
        loop {
            line.clear();
            match (&mut reader)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut line)
            {
                Ok(0) | Err(_) => break,
                Ok(_) if line.last() != Some(&b'\n') => break,
                Ok(_) => {
                    let mut msg = format!("{peer}: ").into_bytes();
                    msg.extend_from_slice(&line);
                    self.broadcast(msg.into());
                }
            }
        }
        outgoing.close();
        let _ = writer.join();
    }
}

/// Removes a client from the room and closes its queue when dropped.
struct Leave {
    room: Room,
    id: u64,
}

impl Drop for Leave {
    fn drop(&mut self) {
        if let Some(queue) = self.room.clients.borrow_mut().remove(&self.id) {
            queue.close();
        }
    }
}

/// A chat server.
pub fn server(addr: SocketAddr) -> std::io::Result<StreamServer> {
    let room = Room::new();
    StreamServer::bind(addr, move |conn, peer| room.handle(conn, peer))
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
