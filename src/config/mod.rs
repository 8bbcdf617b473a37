//! Configuration: Java .properties loading (`properties`, `providers`, `reader`), typed worker configs
//! (`worker`, `distributed`, `rest`, `kafka` for the clients' settings) and connector configs
//! (`connector` the common keys, `source`, `sink`, `transport` the hub endpoint keys both share).
//!
//! Loading never stops at the first problem: every problem of every file is collected and reported
//! as `FILE:KEY: message`, and no message ever contains the value of a secret key.

pub mod connector;
pub mod distributed;
pub mod kafka;
pub mod problem;
pub mod properties;
#[cfg(test)]
mod proptests;
pub mod providers;
pub mod reader;
pub mod rest;
pub mod secret;
pub mod sink;
pub mod source;
pub mod transport;
pub mod worker;

pub use connector::{ConnectorConfig, ConnectorKind, SinkConfig, SourceConfig, Topics};
pub use problem::{Problem, Problems};
pub use providers::Providers;
pub use reader::Reader;
pub use secret::Secret;
pub use worker::WorkerConfig;

use properties::Properties;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One properties file: what it says and what it means once `${provider:…}` references are resolved.
///
/// `Debug` shows [`LoadedFile::masked`] only: never a secret value, never a resolved reference.
#[derive(Clone)]
pub struct LoadedFile {
    pub path: PathBuf,
    /// As written (references unresolved). REST and `validate` show these, as Kafka's REST GET does.
    pub raw: Properties,
    /// References resolved. Only the typed configs read these.
    pub resolved: Properties,
}

impl LoadedFile {
    pub fn display_name(&self) -> String {
        self.path.display().to_string()
    }

    /// Loads `path` and resolves references with `providers`; problems name the file and key.
    pub fn load(path: &Path, providers: &Providers) -> Result<LoadedFile, Problems> {
        let mut problems = Problems::default();
        let name = path.display().to_string();
        let raw = match properties::load_file(path) {
            Ok(p) => p,
            Err(e) => {
                problems.push(&name, "-", e.to_string());
                return Err(problems);
            }
        };
        let mut resolved = Properties::new();
        for (k, v) in &raw {
            match providers.resolve(v) {
                Ok(r) => {
                    resolved.insert(k.clone(), r);
                }
                Err(msg) => problems.push(&name, k, msg),
            }
        }
        if problems.is_empty() {
            Ok(LoadedFile {
                path: path.to_path_buf(),
                raw,
                resolved,
            })
        } else {
            Err(problems)
        }
    }

    /// The configuration as it is safe to show: secret keys as `[hidden]`, provider references as
    /// written (never their resolved values).
    pub fn masked(&self) -> BTreeMap<String, String> {
        self.raw
            .iter()
            .map(|(k, v)| {
                let shown = if is_secret_key(k) && !Providers::has_reference(v) {
                    secret::HIDDEN.to_string()
                } else {
                    v.clone()
                };
                (k.clone(), shown)
            })
            .collect()
    }
}

impl std::fmt::Debug for LoadedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedFile")
            .field("path", &self.path)
            .field("config", &self.masked())
            .finish_non_exhaustive()
    }
}

/// A map of settings as it is safe to show: values of secret keys as `[hidden]` (for `Debug`).
pub fn masked_map(map: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    map.iter()
        .map(|(k, v)| {
            let shown = if is_secret_key(k) {
                secret::HIDDEN
            } else {
                v.as_str()
            };
            (k.as_str(), shown)
        })
        .collect()
}

/// Keys whose values are secrets: Kafka's PASSWORD-typed keys (`*password`, `sasl.jaas.config`,
/// `*secret*`, key material), the IoT Hub connector's keys and connection strings, and anything
/// named like a token or credentials (`*token*`, `*credentials*`, `*basic.auth.user.info`), and
/// `IotHub.Proxy` (its URL may carry `user:password@`).
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.ends_with("password")
        || k.ends_with("sasl.jaas.config")
        || k.contains("secret")
        || k.contains("token")
        || k.contains("credentials")
        || k.ends_with("basic.auth.user.info")
        || k.ends_with("iothub.proxy")
        || k.ends_with("iothub.accesskeyvalue")
        || k.ends_with("iothub.connectionstring")
        || k.ends_with("sharedaccesskey")
        || k.ends_with("ssl.keystore.key")
        || k.ends_with("ssl.key.pem")
        || k.ends_with("sasl.oauthbearer.client.secret")
}

/// The converter classes iotconnect implements (Kafka Connect's own).
pub const JSON_CONVERTER: &str = "org.apache.kafka.connect.json.JsonConverter";
pub const STRING_CONVERTER: &str = "org.apache.kafka.connect.storage.StringConverter";
pub const BYTE_ARRAY_CONVERTER: &str = "org.apache.kafka.connect.converters.ByteArrayConverter";
pub const CONVERTERS: &[&str] = &[JSON_CONVERTER, STRING_CONVERTER, BYTE_ARRAY_CONVERTER];

/// `key.converter` / `value.converter` and their `<prefix>.*` settings (`Debug` masks secrets, e.g.
/// `value.converter.basic.auth.user.info`).
#[derive(Clone, PartialEq, Eq)]
pub struct ConverterSpec {
    pub class: String,
    pub props: BTreeMap<String, String>,
}

impl std::fmt::Debug for ConverterSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConverterSpec")
            .field("class", &self.class)
            .field("props", &masked_map(&self.props))
            .finish()
    }
}

impl ConverterSpec {
    /// Reads `<key>` and `<key>.*`. With `required`, a missing class is a problem.
    pub fn read(r: &mut Reader, key: &str, required: bool) -> Option<ConverterSpec> {
        let props = r.prefixed(&format!("{key}."));
        let class = if required {
            r.required(key)?
        } else {
            r.non_empty(key)?
        };
        if !CONVERTERS.contains(&class.as_str()) {
            r.problem(
                key,
                format!(
                    "Class {class} cannot be found or is not a supported converter; use one of {}",
                    CONVERTERS.join(", ")
                ),
            );
            return None;
        }
        if let Some(v) = props.get("schemas.enable") {
            if !matches!(v.to_ascii_lowercase().as_str(), "true" | "false") {
                r.problem(
                    &format!("{key}.schemas.enable"),
                    format!("Invalid value {v} for configuration schemas.enable: Expected value to be either true or false"),
                );
            }
        }
        Some(ConverterSpec { class, props })
    }
}

/// Everything `iotconnect standalone` / `validate` needs, loaded and checked. `Debug` hides secrets
/// (every part's own `Debug` does).
#[derive(Debug)]
pub struct Loaded {
    pub worker: WorkerConfig,
    pub connectors: Vec<ConnectorConfig>,
    pub warnings: Vec<String>,
}

/// Where loading failed: the worker file (Connect exits 2) or a connector file (exit 3).
#[derive(Debug)]
pub struct LoadError {
    pub worker_failed: bool,
    pub problems: Problems,
    pub warnings: Vec<String>,
}

/// Loads the worker file and every connector file, reporting every problem of every file.
pub fn load_all(worker_path: &Path, connector_paths: &[PathBuf]) -> Result<Loaded, LoadError> {
    let mut problems = Problems::default();
    let mut warnings = Vec::new();
    // The providers come from the worker file's raw properties (references there are not resolved).
    let worker_raw = match properties::load_file(worker_path) {
        Ok(p) => Some(p),
        Err(e) => {
            problems.push(&worker_path.display().to_string(), "-", e.to_string());
            None
        }
    };
    let providers = match &worker_raw {
        Some(raw) => {
            let (providers, provider_problems) = Providers::from_worker(raw);
            for (k, m) in provider_problems {
                problems.push(&worker_path.display().to_string(), &k, m);
            }
            providers
        }
        None => Providers::default(),
    };
    let worker = if worker_raw.is_some() {
        match LoadedFile::load(worker_path, &providers).and_then(|f| WorkerConfig::from_file(&f)) {
            Ok(w) => {
                warnings.extend(w.warnings.iter().cloned());
                Some(w)
            }
            Err(p) => {
                problems.extend(p);
                None
            }
        }
    } else {
        None
    };
    let worker_failed = !problems.is_empty();
    let mut connectors: Vec<ConnectorConfig> = Vec::new();
    for path in connector_paths {
        match LoadedFile::load(path, &providers).and_then(|f| ConnectorConfig::from_file(&f)) {
            Ok(c) => {
                warnings.extend(c.warnings.iter().cloned());
                if let Some(other) = connectors.iter().find(|o| o.name == c.name) {
                    problems.push(
                        &path.display().to_string(),
                        "name",
                        format!(
                            "Connector {} already exists (also defined in {})",
                            c.name,
                            other.file.display_name()
                        ),
                    );
                }
                connectors.push(c)
            }
            Err(p) => problems.extend(p),
        }
    }
    if let Some(w) = &worker {
        for c in &connectors {
            problems.extend(kafka::check_connector_clients(w, c));
        }
    }
    match worker {
        Some(worker) if problems.is_empty() => Ok(Loaded {
            worker,
            connectors,
            warnings,
        }),
        _ => Err(LoadError {
            worker_failed,
            problems,
            warnings,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_include_tokens_credentials_and_basic_auth_user_info() {
        for k in [
            "sasl.jaas.config",
            "producer.ssl.key.password",
            "IotHub.AccessKeyValue",
            "IotHub.ConnectionString",
            "sasl.oauthbearer.client.secret",
            "IotHub.SasToken",
            "my.api.token.value",
            "cloud.credentials",
            "gcp.credentials.json",
            "basic.auth.user.info",
            "value.converter.basic.auth.user.info",
            "ssl.keystore.key",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        assert!(!is_secret_key("bootstrap.servers"));
        assert!(!is_secret_key("IotHub.AccessKeyName"));
        assert!(!is_secret_key("Kafka.Topic"));
    }

    #[test]
    fn debug_of_loaded_file_shows_masked_values_and_references_only() {
        let mut raw = Properties::new();
        raw.insert("IotHub.AccessKeyValue".into(), "k3y-value".into());
        raw.insert("my.token".into(), "t0ken".into());
        raw.insert("note".into(), "${env:X}".into());
        let mut resolved = raw.clone();
        resolved.insert("note".into(), "res0lved".into());
        let f = LoadedFile {
            path: "f.properties".into(),
            raw,
            resolved,
        };
        let shown = format!("{f:?} {f:#?}");
        for s in ["k3y-value", "t0ken", "res0lved"] {
            assert!(!shown.contains(s), "{shown}");
        }
        assert!(
            shown.contains("${env:X}") && shown.contains("[hidden]"),
            "{shown}"
        );
    }
}
