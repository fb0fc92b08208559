//! Argument parsing for commands, with one wording for each refusal. Public, as the rest of the
//! command API: a command of your own parses with these, and they stay when the examples go.
//!
//! Numbers are plain ASCII digits: no sign, no spaces, no `_`, no exponent. Leading zeros are
//! accepted (`00010` is 10), since they cannot be misread.

use crate::protocol::{self, ErrorCode, MAX_TOPIC, Response};

/// Refuses any argument: the command is its name alone.
pub fn none(command: &'static str, argument: Option<&str>) -> Result<(), Response> {
    match argument {
        None => Ok(()),
        Some(_) => Err(Response::err_with(ErrorCode::BadArgument, format!("{command} takes no argument"))),
    }
}

/// A number from 0 to `max`, in plain ASCII digits.
pub fn number(command: &'static str, argument: Option<&str>, max: u64) -> Result<u64, Response> {
    argument
        .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse::<u64>().ok())
        .filter(|&value| value <= max)
        .ok_or_else(|| {
            Response::err_with(ErrorCode::BadArgument, format!("{command} takes a number from 0 to {max}"))
        })
}

/// A topic name, as [`protocol::is_topic`] says.
pub fn topic<'a>(command: &'static str, word: &'a str) -> Result<&'a str, Response> {
    if !protocol::is_topic(word) {
        return Err(Response::err_with(
            ErrorCode::BadArgument,
            format!("{command}: a topic is 1 to {MAX_TOPIC} printable ASCII characters"),
        ));
    }
    Ok(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_plain_digits_within_bounds() {
        assert_eq!(number("N", Some("0"), 10), Ok(0));
        assert_eq!(number("N", Some("00010"), 10), Ok(10));
        let refused = Err(Response::err_with(ErrorCode::BadArgument, "N takes a number from 0 to 10"));
        for bad in ["", "+5", "-1", " 5", "5 ", "1e1", "1_0", "11", "٣", "99999999999999999999999"] {
            assert_eq!(number("N", Some(bad), 10), refused, "{bad:?}");
        }
        assert_eq!(number("N", None, 10), refused);
    }

    #[test]
    fn topics_are_bounded_words() {
        assert_eq!(topic("T", "news"), Ok("news"));
        assert_eq!(topic("T", &"x".repeat(MAX_TOPIC)).map(str::len), Ok(MAX_TOPIC));
        assert_eq!(topic("T", "orders.eu-west/1"), Ok("orders.eu-west/1"));
        for bad in ["", "a\tb", "\u{1b}", "caf\u{e9}", "a\u{202e}b", "a\u{200b}b", &"x".repeat(MAX_TOPIC + 1)]
        {
            assert!(topic("T", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn none_refuses_even_an_empty_argument() {
        assert_eq!(none("PING", None), Ok(()));
        let refused = Err(Response::err_with(ErrorCode::BadArgument, "PING takes no argument"));
        assert_eq!(none("PING", Some("")), refused, "`PING ` has an empty argument");
        assert_eq!(none("PING", Some("now")), refused);
    }
}
