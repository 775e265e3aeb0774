//! The tunables every loop of a server runs with, set through
//! [`ServerBuilder`](crate::ServerBuilder).

use std::time::Duration;

/// Tunables of a loop, set through the server builder.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_connections: usize,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) high_watermark: usize,
    pub(crate) low_watermark: usize,
    pub(crate) max_input: usize,
    pub(crate) read_budget: usize,
    pub(crate) max_buffered: usize,
    pub(crate) linger: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            idle_timeout: None,
            max_connections: 100_000,
            shutdown_timeout: Duration::from_secs(30),
            high_watermark: 256 * 1024,
            low_watermark: 64 * 1024,
            max_input: 64 * 1024,
            read_budget: 256 * 1024,
            max_buffered: 64 * 1024 * 1024,
            linger: Duration::from_secs(5),
        }
    }
}
