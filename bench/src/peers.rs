//! The Rust peers compared against: echo servers on mio and on tokio, run by
//! the harness as subcommands of its own binary.
//!
//! Each is written the way its library's documentation teaches, not tuned
//! beyond it, so the comparison shows what a user gets.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

/// The size of the read buffer, shared by all connections (mio) or owned by
/// each (tokio).
const MIO_BUFFER: usize = 64 * 1024;
/// The buffer each tokio connection task owns, as in tokio's own echo
/// example (which uses 1 KiB; 4 KiB holds a whole 4 KiB message).
const TOKIO_BUFFER: usize = 4 * 1024;

const LISTENER: Token = Token(usize::MAX);

/// A mio connection and the output its socket has not taken yet.
struct MioConn {
    stream: TcpStream,
    pending: Vec<u8>,
}

/// A single-threaded mio echo server: edge-triggered (mio's only mode), one
/// read buffer for all connections, output the socket refuses kept per
/// connection, and no reading while it is pending (backpressure).
pub fn serve_mio(address: SocketAddr) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(address)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    eprintln!("listening on {address} (mio)");

    let mut conns: HashMap<Token, MioConn> = HashMap::new();
    let mut next_token = 0;
    let mut buffer = vec![0u8; MIO_BUFFER];
    let mut events = Events::with_capacity(1024);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in &events {
            if event.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            stream.set_nodelay(true)?;
                            let token = Token(next_token);
                            next_token += 1;
                            poll.registry().register(
                                &mut stream,
                                token,
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            let pending = Vec::new();
                            conns.insert(token, MioConn { stream, pending });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            eprintln!("accept: {e}");
                            break;
                        }
                    }
                }
                continue;
            }
            let Some(conn) = conns.get_mut(&event.token()) else {
                continue;
            };
            if echo_mio(conn, &mut buffer).is_err() {
                conns.remove(&event.token());
            }
        }
    }
}

/// Flushes pending output, then echoes until the socket has nothing more or
/// refuses output. An error (or end of stream) closes the connection.
fn echo_mio(conn: &mut MioConn, buffer: &mut [u8]) -> io::Result<()> {
    loop {
        while !conn.pending.is_empty() {
            match conn.stream.write(&conn.pending) {
                Ok(n) => {
                    conn.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let n = match conn.stream.read(buffer) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let written = match conn.stream.write(&buffer[..n]) {
            Ok(written) => written,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        conn.pending.extend_from_slice(&buffer[written..n]);
    }
}

/// Which tokio runtime to run the echo server on.
#[derive(Debug, Clone, Copy)]
pub enum TokioFlavor {
    /// `current_thread`: one thread runs every task.
    CurrentThread,
    /// `multi_thread` with this many worker threads.
    MultiThread(usize),
}

/// A tokio echo server: one task per connection, each with its own buffer,
/// reading and writing back with `write_all`.
pub fn serve_tokio(address: SocketAddr, flavor: TokioFlavor) -> io::Result<()> {
    let runtime = match flavor {
        TokioFlavor::CurrentThread => tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?,
        TokioFlavor::MultiThread(workers) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_io()
            .build()?,
    };
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(address).await?;
        eprintln!("listening on {address} (tokio {flavor:?})");
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    eprintln!("accept: {e}");
                    continue;
                }
            };
            tokio::spawn(echo_tokio(stream));
        }
    })
}

async fn echo_tokio(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if stream.set_nodelay(true).is_err() {
        return;
    }
    let mut buffer = vec![0u8; TOKIO_BUFFER];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buffer[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
