//! A string that must never reach a log line, an error message or REST output.

use std::fmt;

/// Secret configuration value (access keys, connection strings, passwords).
///
/// `Debug` and `Display` print `[hidden]`; the only way to the text is [`Secret::expose`], so every
/// place that uses the secret is easy to find.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

/// What every masked value prints as (Kafka's `Password.HIDDEN`).
pub const HIDDEN: &str = "[hidden]";

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret text. Use only to sign, to authenticate or to pass to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(HIDDEN)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(HIDDEN)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let s = Secret::new("c2VjcmV0");
        assert_eq!(format!("{s}"), "[hidden]");
        assert_eq!(format!("{s:?}"), "[hidden]");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some([hidden])");
        assert_eq!(s.expose(), "c2VjcmV0");
    }
}
