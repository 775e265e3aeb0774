//! evloop: a kernel event queue under one small API, a reactor per core, and
//! a TCP server on top.
#![deny(missing_docs)]

pub mod net;
pub mod poll;
mod reactor;
pub mod server;
pub mod service;
pub mod services;
mod stats;
mod timer;

pub use reactor::LoopReport;
pub use server::{Balance, Report, Server, ServerBuilder, ShutdownHandle};
pub use service::{Action, CloseReason, Handler, Input, Service};
pub use stats::Counters;
