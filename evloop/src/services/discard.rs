use crate::context::Context;
use crate::service::{Action, Handler, Input};

/// Discard (RFC 863): reads and drops everything, sends nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Discard;

impl Handler for Discard {
    fn on_data(&mut self, input: &mut Input<'_>, _cx: &mut Context<'_>) -> Action {
        input.consume_all();
        Action::Continue
    }
}
