//! `--fanout-url` and `--fanout-prefix`: the broker's address and the channel prefix, parsed
//! and shown here with the other settings; what connects to the broker is `crate::fanout::relay`.

use std::fmt;

use redis::IntoConnectionInfo as _;

/// The broker's address, as `--fanout-url` takes it: `redis://[user:password@]host:port[/db]`,
/// or `rediss://` for TLS. Shown (in logs, errors and `Debug`) without its password.
#[derive(Clone, PartialEq, Eq)]
pub struct FanoutUrl {
    url: String,
    shown: String,
    db: i64,
}

impl FanoutUrl {
    /// Parses a `redis://` or `rediss://` URL (what `--fanout-url` accepts), or says why not in
    /// one line that never holds the password. redis-rs's `#insecure` (no certificate check) is
    /// refused: a private CA is what `--fanout-ca` is for.
    pub fn parse(text: &str) -> Result<Self, String> {
        let shown = without_password(text);
        if !(text.starts_with("redis://") || text.starts_with("rediss://")) {
            return Err(format!(
                "{shown} is not a redis:// or rediss:// URL, such as redis://127.0.0.1:6379"
            ));
        }
        if cfg!(not(feature = "tls")) && text.starts_with("rediss://") {
            return Err(format!("{shown}: rediss:// needs TLS, and this build has none (the `tls` feature)"));
        }
        if text.contains('#') {
            return Err(format!("{shown}: no #fragment (#insecure): give --fanout-ca for a private CA"));
        }
        // redis-rs's errors are fixed words, never the URL.
        let info =
            text.into_connection_info().map_err(|error| format!("{shown} is not a Redis URL: {error}"))?;
        Ok(Self { url: text.to_owned(), shown, db: info.redis_settings().db() })
    }

    /// The URL as given, password and all: for the broker's client only, never shown.
    pub(crate) fn with_password(&self) -> &str {
        &self.url
    }

    /// Whether it speaks TLS (`rediss://`).
    pub fn tls(&self) -> bool {
        self.url.starts_with("rediss://")
    }

    /// The channel prefix for this broker unless `--fanout-prefix` says otherwise: the program's
    /// name and the database, so deployments on other databases of one Redis stay apart (Redis
    /// pub/sub ignores the database).
    pub fn default_prefix(&self) -> String {
        format!("{}:{}:", env!("CARGO_PKG_NAME"), self.db)
    }
}

/// `text` with the password of its `user:password@` (everything before the last `@` of the
/// authority) as `***`, whether or not the rest parses.
fn without_password(text: &str) -> String {
    let (scheme, rest) = text.split_once("://").unwrap_or(("", text));
    let authority = rest.split('/').next().unwrap_or_default();
    match authority.rsplit_once('@') {
        Some((userinfo, _)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            let scheme = if scheme.is_empty() { String::new() } else { format!("{scheme}://") };
            format!("{scheme}{user}:***@{}", &rest[userinfo.len() + 1..])
        }
        _ => text.to_owned(),
    }
}

/// `--fanout-url`'s parser. Not a plain function: clap would print the value it refuses, and
/// with it the password; this error names the flag and shows the URL without it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FanoutUrlParser;

impl clap::builder::TypedValueParser for FanoutUrlParser {
    type Value = FanoutUrl;

    fn parse_ref(
        &self,
        _command: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<FanoutUrl, clap::Error> {
        let flag = arg.and_then(clap::Arg::get_long).unwrap_or("fanout-url");
        let refused = |why: String| {
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("--{flag}: {why}\n"))
        };
        let text = value.to_str().ok_or_else(|| refused("not UTF-8".to_owned()))?;
        FanoutUrl::parse(text).map_err(refused)
    }
}

/// Checks a channel prefix (`--fanout-prefix`): 1 to 64 of `A-Z a-z 0-9 : . _ / -`, so it is
/// one word, and no glob character of a Redis ACL pattern (`&PREFIX*`) or of PSUBSCRIBE.
pub(crate) fn prefix(text: &str) -> Result<String, String> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b":._/-".contains(&b);
    if text.is_empty() || text.len() > 64 || !text.bytes().all(allowed) {
        return Err("1 to 64 of A-Z a-z 0-9 : . _ / -".to_owned());
    }
    Ok(text.to_owned())
}

impl fmt::Display for FanoutUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for FanoutUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FanoutUrl({})", self.shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_is_a_redis_url_and_is_shown_without_its_password() {
        let url = FanoutUrl::parse("redis://app:s3cret@redis.internal:6380/2").unwrap();
        assert_eq!(url.to_string(), "redis://app:***@redis.internal:6380/2");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(url.default_prefix(), format!("{}:2:", env!("CARGO_PKG_NAME")));
        assert_eq!(FanoutUrl::parse("redis://127.0.0.1:6379").unwrap().to_string(), "redis://127.0.0.1:6379");
        let managed = FanoutUrl::parse("rediss://u:s3cret@managed.example:6380");
        if cfg!(feature = "tls") {
            assert!(managed.unwrap().tls());
        } else {
            let refused = managed.unwrap_err();
            assert!(refused.contains("u:***@") && refused.contains("the `tls` feature"), "{refused}");
        }
        for bad in ["127.0.0.1:6379", "http://x", "redis://host:notaport", "rediss://host:1/#insecure"] {
            assert!(FanoutUrl::parse(bad).is_err(), "{bad} was accepted");
        }
        // Refused, and still shown without the password.
        for bad in ["redis://u:s3cret@host:notaport", "redis://u:s3cret@host:1/notadb", "http://u:s3cret@x"] {
            let refused = FanoutUrl::parse(bad).unwrap_err();
            assert!(refused.contains("u:***@") && !refused.contains("s3cret"), "{refused}");
        }
    }

    #[test]
    fn a_prefix_is_one_word_without_glob_characters() {
        assert_eq!(prefix("payments-api:0:"), Ok("payments-api:0:".to_owned()));
        for bad in ["", "a b", "a*", "a?", "[a]", "a\\b", &"x".repeat(65)] {
            assert!(prefix(bad).is_err(), "{bad:?}");
        }
    }
}
