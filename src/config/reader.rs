//! Typed reads from one properties file, collecting every problem instead of stopping at the first.

use super::problem::Problems;
use super::properties::Properties;
use super::Secret;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Reads typed values from one file's resolved properties, remembering which keys were consumed.
pub struct Reader<'a> {
    pub file: String,
    props: &'a Properties,
    pub problems: Problems,
    known: BTreeSet<String>,
    known_prefixes: Vec<String>,
}

impl<'a> Reader<'a> {
    pub fn new(file: impl Into<String>, props: &'a Properties) -> Self {
        Reader {
            file: file.into(),
            props,
            problems: Problems::default(),
            known: BTreeSet::new(),
            known_prefixes: Vec::new(),
        }
    }

    pub fn problem(&mut self, key: &str, message: impl Into<String>) {
        let file = self.file.clone();
        self.problems.push(&file, key, message);
    }

    /// Marks keys the runtime knows but does not use (accepted without a warning).
    pub fn accept(&mut self, keys: &[&str]) {
        for k in keys {
            self.known.insert((*k).to_string());
        }
    }

    pub fn accept_prefix(&mut self, prefix: &str) {
        self.known_prefixes.push(prefix.to_string());
    }

    pub fn is_set(&self, key: &str) -> bool {
        self.props.contains_key(key)
    }

    /// The raw value, trimmed as Kafka's `ConfigDef` trims typed values.
    pub fn string(&mut self, key: &str) -> Option<String> {
        self.known.insert(key.to_string());
        self.props.get(key).map(|v| v.trim().to_string())
    }

    /// The value exactly as written (connector-private keys reach connectors untrimmed in Java).
    pub fn raw(&mut self, key: &str) -> Option<String> {
        self.known.insert(key.to_string());
        self.props.get(key).cloned()
    }

    /// Like `string`, but an empty value counts as absent.
    pub fn non_empty(&mut self, key: &str) -> Option<String> {
        self.string(key).filter(|v| !v.is_empty())
    }

    pub fn required(&mut self, key: &str) -> Option<String> {
        match self.string(key) {
            Some(v) if !v.is_empty() => Some(v),
            Some(_) => {
                self.problem(key, "must not be empty");
                None
            }
            None => {
                self.problem(
                    key,
                    format!("Missing required configuration \"{key}\" which has no default value."),
                );
                None
            }
        }
    }

    pub fn secret(&mut self, key: &str) -> Option<Secret> {
        self.known.insert(key.to_string());
        self.props
            .get(key)
            .map(|v| Secret::new(v.trim()))
            .filter(|s| !s.is_empty())
    }

    pub fn int(&mut self, key: &str, default: i64, min: i64, max: i64) -> i64 {
        match self.string(key) {
            None => default,
            Some(v) => {
                match v.parse::<i64>() {
                    Ok(n) if n >= min && n <= max => n,
                    Ok(n) => {
                        let range = if max == i64::MAX {
                            format!("Value must be at least {min}")
                        } else {
                            format!("Value must be between {min} and {max}")
                        };
                        self.problem(
                            key,
                            format!("Invalid value {n} for configuration {key}: {range}"),
                        );
                        default
                    }
                    Err(_) => {
                        self.problem(
                        key,
                        format!("Invalid value {v} for configuration {key}: Not a number of type INT"),
                    );
                        default
                    }
                }
            }
        }
    }

    pub fn optional_int(&mut self, key: &str, min: i64, max: i64) -> Option<i64> {
        self.non_empty(key).map(|_| self.int(key, 0, min, max))
    }

    pub fn millis(&mut self, key: &str, default_ms: i64) -> Duration {
        Duration::from_millis(self.int(key, default_ms, 0, i64::MAX) as u64)
    }

    pub fn boolean(&mut self, key: &str, default: bool) -> bool {
        match self.string(key) {
            None => default,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => {
                    self.problem(
                        key,
                        format!("Invalid value {v} for configuration {key}: Expected value to be either true or false"),
                    );
                    default
                }
            },
        }
    }

    pub fn one_of(&mut self, key: &str, default: &str, allowed: &[&str]) -> String {
        match self.string(key) {
            None => default.to_string(),
            Some(v) if allowed.contains(&v.as_str()) => v,
            Some(v) => {
                self.problem(
                    key,
                    format!(
                        "Invalid value {v} for configuration {key}: String must be one of: {}",
                        allowed.join(", ")
                    ),
                );
                default.to_string()
            }
        }
    }

    /// Every key under `prefix`, prefix stripped, values trimmed.
    pub fn prefixed(&mut self, prefix: &str) -> BTreeMap<String, String> {
        self.known_prefixes.push(prefix.to_string());
        self.props
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(prefix)
                    .filter(|rest| !rest.is_empty())
                    .map(|rest| (rest.to_string(), v.trim().to_string()))
            })
            .collect()
    }

    /// Keys present in the file that nothing read or accepted.
    pub fn unknown_keys(&self) -> Vec<String> {
        self.props
            .keys()
            .filter(|k| {
                !self.known.contains(*k) && !self.known_prefixes.iter().any(|p| k.starts_with(p))
            })
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_reads_collect_problems() {
        let mut p = Properties::new();
        p.insert("n".into(), " 42 ".into());
        p.insert("bad".into(), "abc".into());
        p.insert("neg".into(), "-1".into());
        p.insert("b".into(), "TRUE".into());
        p.insert("x.a".into(), "1".into());
        p.insert("extra".into(), "?".into());
        let mut r = Reader::new("w.properties", &p);
        assert_eq!(r.int("n", 0, 0, 100), 42);
        assert_eq!(r.int("bad", 7, 0, 100), 7);
        assert_eq!(r.int("neg", 7, 1, i64::MAX), 7);
        assert!(r.boolean("b", false));
        assert_eq!(r.required("missing"), None);
        assert_eq!(r.prefixed("x.").get("a").map(String::as_str), Some("1"));
        assert_eq!(r.unknown_keys(), vec!["extra".to_string()]);
        let msgs: Vec<String> = r.problems.0.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            msgs,
            vec![
                "w.properties:bad: Invalid value abc for configuration bad: Not a number of type INT",
                "w.properties:neg: Invalid value -1 for configuration neg: Value must be at least 1",
                "w.properties:missing: Missing required configuration \"missing\" which has no default value.",
            ]
        );
    }
}
