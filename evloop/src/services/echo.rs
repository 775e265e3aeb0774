use crate::context::Context;
use crate::service::{Action, Handler, Input};

/// Echo (RFC 862): sends back every byte it receives, in order. When the
/// client half-closes, the rest of the echo is delivered before the close.
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl Handler for Echo {
    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Action {
        cx.write(input.bytes());
        input.consume_all();
        Action::Continue
    }
}
