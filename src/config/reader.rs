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
                let hint = self.misspelling_of(key).map_or(String::new(), |k| {
                    format!(" The file has \"{k}\": did you mean \"{key}\"?")
                });
                self.problem(
                    key,
                    format!(
                        "Missing required configuration \"{key}\" which has no default value.{hint}"
                    ),
                );
                None
            }
        }
    }

    /// A key present in the file that looks like a misspelling of `key` (nothing read it yet).
    pub fn misspelling_of(&self, key: &str) -> Option<&str> {
        self.props
            .keys()
            .filter(|k| *k != key && !self.known.contains(*k))
            .filter_map(|k| close_to(k, key).map(|d| (d, k.as_str())))
            .min()
            .map(|(_, k)| k)
    }

    /// The known key an unknown `key` is probably a misspelling of.
    pub fn suggestion_for(&self, key: &str) -> Option<&str> {
        self.known
            .iter()
            .filter(|k| k.as_str() != key)
            .filter_map(|k| close_to(key, k).map(|d| (d, k.as_str())))
            .min()
            .map(|(_, k)| k)
    }

    /// Kafka's unknown-key warning, with a "did you mean" when a known key is close.
    pub fn unknown_key_warnings(&self) -> Vec<String> {
        self.unknown_keys()
            .into_iter()
            .map(|key| {
                let hint = self
                    .suggestion_for(&key)
                    .map_or(String::new(), |k| format!(" Did you mean '{k}'?"));
                format!(
                    "{}:{key}: The configuration '{key}' was supplied but isn't a known config.{hint}",
                    self.file
                )
            })
            .collect()
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

    /// A period or timeout that must be at least 1 ms: 0 would make a timer fire in a busy loop (or
    /// panic, as `tokio::time::interval(0)` does), so it is refused here rather than at run time.
    pub fn positive_millis(&mut self, key: &str, default_ms: i64) -> Duration {
        if let Some(v) = self.string(key) {
            if v.parse::<i64>().is_ok_and(|n| n <= 0) {
                self.problem(
                    key,
                    format!("Invalid value {v} for configuration {key}: Value must be at least 1 (a period of 0 ms is not possible)"),
                );
                return Duration::from_millis(default_ms as u64);
            }
        }
        Duration::from_millis(self.int(key, default_ms, 1, i64::MAX) as u64)
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

/// Case-insensitive Levenshtein distance between `a` and `b` when it is small enough to be a typo
/// (at most 1 for short keys, up to 3 for long ones).
fn close_to(a: &str, b: &str) -> Option<usize> {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let limit = (a.len().max(b.len()) / 5).clamp(1, 3);
    if a.len().abs_diff(b.len()) > limit {
        return None;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    let d = prev[b.len()];
    (d <= limit).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misspelled_required_key_gets_did_you_mean() {
        let mut p = Properties::new();
        p.insert("Kafka.Topc".into(), "iotin".into());
        p.insert("IotHub.accesskeyname".into(), "service".into());
        p.insert("unrelated.key".into(), "x".into());
        let mut r = Reader::new("s.properties", &p);
        assert_eq!(r.required("Kafka.Topic"), None);
        assert_eq!(r.required("IotHub.AccessKeyName"), None);
        assert_eq!(r.required("BatchSize"), None);
        let msgs: Vec<String> = r.problems.0.iter().map(|p| p.to_string()).collect();
        assert_eq!(msgs[0], "s.properties:Kafka.Topic: Missing required configuration \"Kafka.Topic\" which has no default value. The file has \"Kafka.Topc\": did you mean \"Kafka.Topic\"?");
        assert!(
            msgs[1].ends_with("did you mean \"IotHub.AccessKeyName\"?"),
            "{}",
            msgs[1]
        );
        assert!(!msgs[2].contains("did you mean"), "{}", msgs[2]);
        let w = r.unknown_key_warnings();
        assert!(
            w.iter().any(|l| l.contains(
                "'Kafka.Topc' was supplied but isn't a known config. Did you mean 'Kafka.Topic'?"
            )),
            "{w:?}"
        );
        assert!(
            w.iter()
                .any(|l| l.ends_with("'unrelated.key' was supplied but isn't a known config.")),
            "{w:?}"
        );
    }

    #[test]
    fn zero_and_negative_periods_are_refused() {
        let mut p = Properties::new();
        p.insert("zero".into(), "0".into());
        p.insert("neg".into(), "-5".into());
        p.insert("ok".into(), "250".into());
        let mut r = Reader::new("w.properties", &p);
        assert_eq!(r.positive_millis("ok", 7), Duration::from_millis(250));
        assert_eq!(r.positive_millis("absent", 7), Duration::from_millis(7));
        assert_eq!(r.positive_millis("zero", 7), Duration::from_millis(7));
        assert_eq!(r.positive_millis("neg", 7), Duration::from_millis(7));
        assert_eq!(r.problems.len(), 2);
        assert!(r.problems.0[0].message.contains("Value must be at least 1"));
    }

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
