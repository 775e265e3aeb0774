use crate::service::{Action, Handler, Input};

/// Discard (RFC 863): reads and drops everything, sends nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Discard;

impl Handler for Discard {
    fn on_data(&mut self, input: &mut Input<'_>, _output: &mut Vec<u8>) -> Action {
        input.consume_all();
        Action::Continue
    }
}
