//! Kafka's config providers: `${file:/path:key}`, `${env:VAR}`, `${dir:/path:file}`.
//!
//! Enabled as in Kafka, in the worker file:
//! ```text
//! config.providers=file,env,dir
//! config.providers.file.class=org.apache.kafka.common.config.provider.FileConfigProvider
//! config.providers.env.class=org.apache.kafka.common.config.provider.EnvVarConfigProvider
//! config.providers.dir.class=org.apache.kafka.common.config.provider.DirectoryConfigProvider
//! ```
//! References are resolved in worker and connector values. Unlike Kafka, which leaves a reference it
//! cannot resolve in place, an unresolvable reference is a configuration error here: a literal
//! `${file:…}` would otherwise end up as an access key.

use super::properties;
use regex::Regex;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

pub const FILE_PROVIDER: &str = "org.apache.kafka.common.config.provider.FileConfigProvider";
pub const ENV_PROVIDER: &str = "org.apache.kafka.common.config.provider.EnvVarConfigProvider";
pub const DIR_PROVIDER: &str = "org.apache.kafka.common.config.provider.DirectoryConfigProvider";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    File,
    Env,
    Dir,
}

/// The providers a worker file configures.
#[derive(Clone, Debug, Default)]
pub struct Providers {
    by_name: BTreeMap<String, Kind>,
}

/// Kafka's `ConfigTransformer` pattern: `${provider:[path:]key}`.
fn pattern() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"\$\{([^}]*?):(([^}]*?):)?([^}]*?)\}").unwrap())
}

impl Providers {
    /// Reads `config.providers` and `config.providers.<name>.class` from the worker's raw properties.
    /// Returns the providers and one `(key, message)` per problem.
    pub fn from_worker(props: &BTreeMap<String, String>) -> (Providers, Vec<(String, String)>) {
        let mut out = Providers::default();
        let mut problems = Vec::new();
        let Some(list) = props.get("config.providers") else {
            return (out, problems);
        };
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let key = format!("config.providers.{name}.class");
            match props.get(&key).map(|s| s.trim()) {
                Some(FILE_PROVIDER) | Some("FileConfigProvider") => {
                    out.by_name.insert(name.to_string(), Kind::File);
                }
                Some(ENV_PROVIDER) | Some("EnvVarConfigProvider") => {
                    out.by_name.insert(name.to_string(), Kind::Env);
                }
                Some(DIR_PROVIDER) | Some("DirectoryConfigProvider") => {
                    out.by_name.insert(name.to_string(), Kind::Dir);
                }
                Some(other) => problems.push((
                    key,
                    format!(
                        "unsupported config provider class {other}; supported: {FILE_PROVIDER}, {ENV_PROVIDER}, {DIR_PROVIDER}"
                    ),
                )),
                None => problems.push((
                    key,
                    format!("config.providers lists '{name}' but this key, its class, is missing"),
                )),
            }
        }
        (out, problems)
    }

    /// True when `value` holds at least one `${…:…}` reference.
    pub fn has_reference(value: &str) -> bool {
        pattern().is_match(value)
    }

    /// Replaces every reference in `value`. The error message never contains a resolved value.
    pub fn resolve(&self, value: &str) -> Result<String, String> {
        let mut out = String::with_capacity(value.len());
        let mut last = 0;
        for caps in pattern().captures_iter(value) {
            let whole = caps.get(0).unwrap();
            out.push_str(&value[last..whole.start()]);
            let provider = caps.get(1).map_or("", |m| m.as_str());
            let path = caps.get(3).map(|m| m.as_str());
            let key = caps.get(4).map_or("", |m| m.as_str());
            out.push_str(&self.lookup(provider, path, key, whole.as_str())?);
            last = whole.end();
        }
        out.push_str(&value[last..]);
        Ok(out)
    }

    fn lookup(
        &self,
        provider: &str,
        path: Option<&str>,
        key: &str,
        reference: &str,
    ) -> Result<String, String> {
        let kind = self.by_name.get(provider).ok_or_else(|| {
            format!(
                "{reference}: config provider '{provider}' is not enabled (add it to config.providers in the worker file)"
            )
        })?;
        match kind {
            Kind::Env => {
                if path.is_some_and(|p| !p.is_empty()) {
                    return Err(format!(
                        "{reference}: the env provider takes ${{{provider}:VARIABLE}}"
                    ));
                }
                std::env::var(key)
                    .map_err(|_| format!("{reference}: environment variable {key} is not set"))
            }
            Kind::File => {
                let path = path.filter(|p| !p.is_empty()).ok_or_else(|| {
                    format!("{reference}: the file provider takes ${{{provider}:/path/to/file.properties:key}}")
                })?;
                let props = properties::load_file(Path::new(path))
                    .map_err(|e| format!("{reference}: {e}"))?;
                props
                    .get(key)
                    .cloned()
                    .ok_or_else(|| format!("{reference}: {path} has no key {key}"))
            }
            Kind::Dir => {
                let dir = path.filter(|p| !p.is_empty()).ok_or_else(|| {
                    format!("{reference}: the dir provider takes ${{{provider}:/path/to/dir:file}}")
                })?;
                if key.contains('/') || key == ".." || key == "." {
                    return Err(format!("{reference}: {key} is not a file name"));
                }
                let file = Path::new(dir).join(key);
                std::fs::read(&file)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .map_err(|e| format!("{reference}: cannot read {}: {e}", file.display()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn providers() -> Providers {
        let mut p = BTreeMap::new();
        p.insert("config.providers".into(), "file, env,dir".into());
        p.insert("config.providers.file.class".into(), FILE_PROVIDER.into());
        p.insert("config.providers.env.class".into(), ENV_PROVIDER.into());
        p.insert("config.providers.dir.class".into(), DIR_PROVIDER.into());
        let (prov, problems) = Providers::from_worker(&p);
        assert!(problems.is_empty(), "{problems:?}");
        prov
    }

    #[test]
    fn resolves_each_provider() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secrets.properties");
        std::fs::write(&f, "key=s3cr3t\nother=x\n").unwrap();
        std::fs::write(dir.path().join("token"), "abc").unwrap();
        std::env::set_var("IOTCONNECT_TEST_PROVIDER_VAR", "from-env");
        let p = providers();
        let fref = format!("${{file:{}:key}}", f.display());
        assert_eq!(p.resolve(&fref).unwrap(), "s3cr3t");
        assert_eq!(
            p.resolve("${env:IOTCONNECT_TEST_PROVIDER_VAR}").unwrap(),
            "from-env"
        );
        let dref = format!("pre-${{dir:{}:token}}-post", dir.path().display());
        assert_eq!(p.resolve(&dref).unwrap(), "pre-abc-post");
        assert_eq!(p.resolve("plain").unwrap(), "plain");
    }

    #[test]
    fn unresolvable_references_are_errors_without_values() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.properties");
        std::fs::write(&f, "key=s3cr3t\n").unwrap();
        let p = providers();
        let e = p
            .resolve(&format!("${{file:{}:nokey}}", f.display()))
            .unwrap_err();
        assert!(e.contains("has no key nokey"), "{e}");
        assert!(!e.contains("s3cr3t"));
        assert!(p
            .resolve("${file:/nonexistent/x.properties:k}")
            .unwrap_err()
            .contains("cannot read"));
        assert!(p
            .resolve("${env:IOTCONNECT_SURELY_UNSET_VAR}")
            .unwrap_err()
            .contains("not set"));
        assert!(p
            .resolve("${vault:a:b}")
            .unwrap_err()
            .contains("not enabled"));
    }

    #[test]
    fn class_problems_are_reported() {
        let mut raw = BTreeMap::new();
        raw.insert("config.providers".into(), "file,x".into());
        raw.insert(
            "config.providers.x.class".into(),
            "com.example.Vault".into(),
        );
        let (_, problems) = Providers::from_worker(&raw);
        assert_eq!(problems.len(), 2);
        assert_eq!(problems[0].0, "config.providers.file.class");
        assert_eq!(problems[1].0, "config.providers.x.class");
    }
}
