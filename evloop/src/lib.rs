//! evloop: a kernel event queue under one small API, a reactor per core, and
//! a TCP server on top.
#![deny(missing_docs)]

pub mod poll;
