//! `ECHO <text>`: answered `OK <text>` at once. **Example domain code: replace it.**
//!
//! It stands for the *instant* kind of command: answered on the spot, no task, no job queue, so a
//! pipelined burst of them costs one read and one write system call. The text comes back exactly
//! as sent, spaces included; `ECHO` alone answers `OK`.

use super::{Context, Reply, Spec};
use crate::protocol::Response;

pub(super) const ECHO: Spec = Spec {
    name: "ECHO",
    usage: "<text>",
    help: "OK <text>, exactly as sent",
    ends_connection: false,
    pushes: false,
    examples: &[("ECHO hello world", "OK hello world"), ("echo  two  spaces ", "OK  two  spaces ")],
    start,
};

fn start(argument: Option<&str>, _: &mut Context) -> Result<Reply, Response> {
    Ok(Reply::ready(Response::ok(argument.unwrap_or_default().to_owned())))
}

#[cfg(test)]
mod tests {
    use crate::commands::tests::{answer, context};

    #[tokio::test(flavor = "current_thread")]
    async fn the_text_comes_back_exactly() {
        let context = &mut context();
        for (line, expected) in
            [("ECHO  a  b ", "OK  a  b "), ("ECHO ", "OK"), ("ECHO", "OK"), ("ECHO \t", "OK \t")]
        {
            assert_eq!(answer(line, context).await, expected, "{line:?}");
        }
    }
}
