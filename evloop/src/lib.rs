//! evloop: the kernel event queue under one small API, a reactor per core,
//! and a TCP and Unix socket server on top.
//!
//! * [`poll`] — `epoll` (Linux) or `kqueue` (macOS, FreeBSD, NetBSD, …)
//!   behind [`Poller`](poll::Poller), [`Events`](poll::Events) and a
//!   cross-thread [`Waker`](poll::Waker). Use it alone for your own loop
//!   (see `examples/seed.rs`).
//! * `ring` (Linux) — io_uring behind a safe API that owns every buffer
//!   the kernel may touch: multishot accept and receive into provided
//!   buffers, sends that keep their buffer until their completion.
//! * [`Server`] — one event loop per thread, on the readiness queue or on
//!   io_uring ([`Driver`], chosen at start-up), each with its connections,
//!   buffers, backpressure, idle timers and limits; signals and graceful
//!   shutdown.
//! * [`Service`] and [`Handler`] — what runs on a connection: bytes in,
//!   bytes out. [`services`] has the ones `evloop serve` runs;
//!   [`proxy`] puts any of them behind the PROXY protocol (v1 and v2);
//!   `tls` (the `tls` feature) behind TLS 1.3 and 1.2, by rustls;
//!   [`testing`] drives one connection of any of them in memory, for tests
//!   and fuzzers.
//!
//! # Example
//!
//! An echo server on a free loopback port, a client, and a graceful stop:
//!
//! ```
//! use std::io::{Read, Write};
//! use evloop::{Server, services::Echo};
//!
//! let server = Server::builder()
//!     .listen("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap())
//!     .threads(2)
//!     .build(Echo)?;
//! let addr = server.local_addrs()[0].inet().unwrap();
//! let shutdown = server.shutdown_handle();
//! let running = std::thread::spawn(move || server.run());
//!
//! let mut client = std::net::TcpStream::connect(addr)?;
//! client.write_all(b"hello")?;
//! client.shutdown(std::net::Shutdown::Write)?;
//! let mut echo = String::new();
//! client.read_to_string(&mut echo)?;
//! assert_eq!(echo, "hello");
//!
//! shutdown.shutdown();
//! let report = running.join().unwrap()?;
//! assert!(report.is_clean());
//! assert_eq!(report.total().bytes_out, 5);
//! # Ok::<(), std::io::Error>(())
//! ```
#![deny(missing_docs)]

pub mod activation;
mod address;
mod clock;
mod config;
mod context;
mod driver;
mod error;
mod net;
pub mod poll;
pub mod proxy;
mod reactor;
#[cfg(target_os = "linux")]
pub mod ring;
mod server;
mod service;
pub mod services;
mod signals;
mod stats;
mod sys;
mod timer;
#[cfg(feature = "tls")]
pub mod tls;

pub use address::{Address, ParseAddressError};
pub use context::{ConnId, Context, Credentials};
pub use driver::{Driver, ParseDriverError};
pub use reactor::LoopReport;
pub use reactor::testing;
pub use server::{Balance, Report, Server, ServerBuilder, ShutdownHandle, State, StatsHandle};
pub use service::{Action, CloseReason, Handler, Input, Service};
pub use stats::{Counters, LoopStats};

// The crate README's examples compile as doctests. It is the package's own
// file, so they run from the published package too.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
