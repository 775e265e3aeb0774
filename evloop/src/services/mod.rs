//! The services `evloop serve` runs: each a few lines on the [`Handler`](crate::Handler) API.

mod chargen;
mod daytime;
mod discard;
mod echo;
mod log;

pub use chargen::Chargen;
pub use daytime::Daytime;
pub use discard::Discard;
pub use echo::Echo;
pub use log::Log;
