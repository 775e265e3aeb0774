//! The seed program, "A TCP server with kqueue", rewritten step for step on
//! evloop's `poll` API — the door for readers who come from the article.
//!
//! Run it with `cargo run -p evloop --example seed` and talk to it with
//! `nc 127.0.0.1 1815`. Each step is numbered as in the article; where the
//! C code had a flaw, the comment says what changed and why.
//!
//! The full server (`evloop serve log`) adds what a production server needs
//! on top: write buffers, backpressure, limits, timers, threads, shutdown.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{TcpListener, TcpStream};

use evloop::poll::{Events, Interest, Poller, Token};

/// The listening socket's token; clients get tokens counting up from 1.
const LISTENER: Token = Token(0);

fn main() -> io::Result<()> {
    // 1. Create the listening socket and bind it to port 1815.
    //    The seed bound INADDR_ANY (every interface) with a backlog of 3; we
    //    bind loopback only (exposing a server is a choice) and std uses a
    //    large backlog. Non-blocking, because one loop serves everyone.
    let listener = TcpListener::bind("127.0.0.1:1815")?;
    listener.set_nonblocking(true)?;
    println!("listening on {}", listener.local_addr()?);

    // 2. Prepare the kernel queue (kqueue() / epoll_create1()) and register
    //    the listening socket for read events (EV_SET + kevent, or epoll_ctl).
    let poller = Poller::new()?;
    poller.register(&listener, LISTENER, Interest::READABLE)?;

    let mut clients: HashMap<Token, TcpStream> = HashMap::new();
    let mut next_token = 1;
    // The seed asked for one event per kevent call; we take up to 64 per call.
    let mut events = Events::with_capacity(64);

    // 3. The event loop.
    loop {
        poller.wait(&mut events, None)?;
        for event in events.iter() {
            if event.token() == LISTENER {
                // 4. A client wants to connect: accept it and register it.
                //    The seed accepted one per event; edge-triggered events
                //    require accepting until the queue is empty.
                loop {
                    match listener.accept() {
                        Ok((stream, peer)) => {
                            stream.set_nonblocking(true)?;
                            let token = Token(next_token);
                            next_token += 1;
                            poller.register(&stream, token, Interest::READABLE)?;
                            println!("client connected: {peer}");
                            clients.insert(token, stream);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        // The seed registered the failed descriptor anyway.
                        Err(e) => {
                            eprintln!("accept: {e}");
                            break;
                        }
                    }
                }
                continue;
            }

            // 5. A client is readable: read and print how much.
            //    The seed closed on EV_EOF at once, losing bytes still in the
            //    socket; here EOF is only the end of reading: read until the
            //    socket says 0 (EOF) or WouldBlock (no more for now).
            let Some(stream) = clients.get_mut(&event.token()) else {
                continue;
            };
            let mut buf = [0u8; 1024];
            let closed = loop {
                match stream.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(n) => println!("read {n} bytes"),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // The seed printed a failed recv as a huge size.
                    Err(e) => {
                        eprintln!("read: {e}");
                        break true;
                    }
                }
            };

            // 6. The client disconnected: close the socket, which also
            //    removes it from the kernel queue.
            if closed {
                println!("client has disconnected");
                clients.remove(&event.token());
            }
        }
    }
}
