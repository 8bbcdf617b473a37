//! REST protection settings, with Kafka Connect's keys and file formats:
//!
//! * `rest.extension.classes=org.apache.kafka.connect.rest.basic.auth.extension.BasicAuthSecurityRestExtension`
//!   turns on HTTP Basic authentication. As in Connect, the credentials come from the JAAS file named by
//!   the `java.security.auth.login.config` system property (here: the worker key of that name, or
//!   `-Djava.security.auth.login.config=…` in `KAFKA_OPTS`), whose `KafkaConnect` entry names
//!   `org.apache.kafka.connect.rest.basic.auth.extension.PropertyFileLoginModule` with
//!   `file="/path/credentials.properties"`, a properties file of `user=password` lines.
//! * `access.control.allow.origin` (comma list, `*` for any) and `access.control.allow.methods`
//!   (default `GET,POST,HEAD`, Jetty's): browsers' cross-origin requests.
//!
//! Invariant: passwords are [`Secret`]s from the moment they are read; no message here repeats one.

use super::properties;
use super::Secret;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const BASIC_AUTH_EXTENSION: &str =
    "org.apache.kafka.connect.rest.basic.auth.extension.BasicAuthSecurityRestExtension";
pub const PROPERTY_FILE_LOGIN_MODULE: &str =
    "org.apache.kafka.connect.rest.basic.auth.extension.PropertyFileLoginModule";
/// The JAAS entry Connect's filter logs in with.
pub const JAAS_ENTRY: &str = "KafkaConnect";
pub const JAAS_CONFIG_KEY: &str = "java.security.auth.login.config";
/// Jetty's `CrossOriginFilter` default when `access.control.allow.methods` is empty.
pub const DEFAULT_ALLOWED_METHODS: &str = "GET,POST,HEAD";

/// HTTP Basic users, read from the PropertyFileLoginModule's file.
#[derive(Clone, Debug)]
pub struct BasicAuth {
    pub jaas_file: PathBuf,
    pub credentials_file: PathBuf,
    pub users: BTreeMap<String, Secret>,
}

/// How the REST server protects itself.
#[derive(Clone, Debug, Default)]
pub struct RestSecurity {
    pub basic_auth: Option<BasicAuth>,
    /// `access.control.allow.origin`: empty = no cross-origin request is served.
    pub allowed_origins: Vec<String>,
    /// `access.control.allow.methods`, upper-case.
    pub allowed_methods: Vec<String>,
}

/// Reads the REST keys of the worker file. Problems are `(key, message)`.
pub fn read(
    props: &BTreeMap<String, String>,
    kafka_opts: Option<&str>,
) -> (RestSecurity, Vec<(String, String)>) {
    let mut problems = Vec::new();
    let mut out = RestSecurity {
        allowed_origins: list(props.get("access.control.allow.origin")),
        allowed_methods: list(props.get("access.control.allow.methods"))
            .into_iter()
            .map(|m| m.to_ascii_uppercase())
            .collect(),
        ..Default::default()
    };
    if out.allowed_methods.is_empty() {
        out.allowed_methods = list(Some(&DEFAULT_ALLOWED_METHODS.to_string()));
    }
    let classes = list(props.get("rest.extension.classes"));
    for class in &classes {
        if class != BASIC_AUTH_EXTENSION {
            problems.push((
                "rest.extension.classes".to_string(),
                format!("REST extension {class} is not available; iotconnect provides {BASIC_AUTH_EXTENSION}"),
            ));
        }
    }
    if !classes.iter().any(|c| c == BASIC_AUTH_EXTENSION) {
        return (out, problems);
    }
    let (key, jaas) = match props.get(JAAS_CONFIG_KEY).map(|s| s.trim().to_string()) {
        Some(p) if !p.is_empty() => (JAAS_CONFIG_KEY.to_string(), Some(p)),
        _ => (
            "rest.extension.classes".to_string(),
            kafka_opts.and_then(jaas_from_kafka_opts),
        ),
    };
    let Some(jaas) = jaas else {
        problems.push((
            key,
            format!("{BASIC_AUTH_EXTENSION} needs a JAAS file: set {JAAS_CONFIG_KEY}=/path/connect_jaas.conf in the worker file (or -D{JAAS_CONFIG_KEY}=… in KAFKA_OPTS)"),
        ));
        return (out, problems);
    };
    match load_basic_auth(Path::new(&jaas)) {
        Ok(auth) => out.basic_auth = Some(auth),
        Err(m) => problems.push((key, m)),
    }
    (out, problems)
}

fn list(v: Option<&String>) -> Vec<String> {
    v.map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

/// `-Djava.security.auth.login.config=/path` (or `==/path`) among the JVM options in `KAFKA_OPTS`.
pub fn jaas_from_kafka_opts(opts: &str) -> Option<String> {
    let prefix = format!("-D{JAAS_CONFIG_KEY}=");
    opts.split_whitespace()
        .filter_map(|o| o.strip_prefix(&prefix))
        .map(|p| p.trim_start_matches('=').trim_matches('"').to_string())
        .next_back()
}

/// Reads the JAAS file, finds the `KafkaConnect` entry's PropertyFileLoginModule and loads its users.
pub fn load_basic_auth(jaas_file: &Path) -> Result<BasicAuth, String> {
    let text = std::fs::read_to_string(jaas_file)
        .map_err(|e| format!("cannot read the JAAS file {}: {e}", jaas_file.display()))?;
    let entries = parse_jaas(&text).map_err(|m| format!("{}: {m}", jaas_file.display()))?;
    let modules = entries
        .into_iter()
        .find(|(name, _)| name == JAAS_ENTRY)
        .map(|(_, m)| m)
        .ok_or_else(|| format!("{} has no {JAAS_ENTRY} {{ … }}; entry", jaas_file.display()))?;
    let [module] = modules.as_slice() else {
        return Err(format!(
            "{}: the {JAAS_ENTRY} entry must hold exactly one login module, {PROPERTY_FILE_LOGIN_MODULE}",
            jaas_file.display()
        ));
    };
    if module.class != PROPERTY_FILE_LOGIN_MODULE {
        return Err(format!(
            "{}: login module {} is not available; use {PROPERTY_FILE_LOGIN_MODULE}",
            jaas_file.display(),
            module.class
        ));
    }
    let file = module.options.get("file").ok_or_else(|| {
        format!(
            "{}: {PROPERTY_FILE_LOGIN_MODULE} needs file=\"/path/credentials.properties\"",
            jaas_file.display()
        )
    })?;
    let credentials_file = PathBuf::from(file);
    let users = properties::load_file(&credentials_file)
        .map_err(|e| format!("cannot load the REST credentials: {e}"))?
        .into_iter()
        .map(|(u, p)| (u, Secret::new(p)))
        .collect::<BTreeMap<_, _>>();
    if users.is_empty() {
        return Err(format!(
            "{} holds no user=password line: nobody could use the REST API",
            credentials_file.display()
        ));
    }
    Ok(BasicAuth {
        jaas_file: jaas_file.to_path_buf(),
        credentials_file,
        users,
    })
}

/// One login module line of a JAAS entry.
#[derive(Debug, PartialEq, Eq)]
pub struct LoginModule {
    pub class: String,
    pub flag: String,
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, PartialEq, Eq)]
enum Tok {
    Word(String),
    Quoted(String),
    Punct(char),
}

fn tokens(text: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                loop {
                    match chars.next() {
                        Some('/') if prev == '*' => break,
                        Some(c) => prev = c,
                        None => return Err("unterminated /* comment".into()),
                    }
                }
            }
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '{' | '}' | ';' | '=' => out.push(Tok::Punct(c)),
            '"' | '\'' => {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some('\\') => {
                            if let Some(n) = chars.next() {
                                s.push(n)
                            }
                        }
                        Some(q) if q == c => break,
                        Some(x) => s.push(x),
                        None => return Err("unterminated quoted value".into()),
                    }
                }
                out.push(Tok::Quoted(s));
            }
            c => {
                let mut s = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || "{};=\"'".contains(n) {
                        break;
                    }
                    s.push(n);
                    chars.next();
                }
                out.push(Tok::Word(s));
            }
        }
    }
    Ok(out)
}

/// Parses a JAAS login configuration (`Name { Class Flag key="value"…; … };`…).
pub fn parse_jaas(text: &str) -> Result<Vec<(String, Vec<LoginModule>)>, String> {
    let toks = tokens(text)?;
    let mut i = 0;
    let mut entries = Vec::new();
    let word = |t: Option<&Tok>| match t {
        Some(Tok::Word(w)) => Some(w.clone()),
        _ => None,
    };
    while i < toks.len() {
        let name = word(toks.get(i)).ok_or("expected an entry name")?;
        if toks.get(i + 1) != Some(&Tok::Punct('{')) {
            return Err(format!("expected '{{' after {name}"));
        }
        i += 2;
        let mut modules = Vec::new();
        while toks.get(i) != Some(&Tok::Punct('}')) {
            let class =
                word(toks.get(i)).ok_or(format!("{name}: expected a login module class"))?;
            let flag = word(toks.get(i + 1))
                .filter(|f| {
                    ["required", "requisite", "sufficient", "optional"]
                        .contains(&f.to_ascii_lowercase().as_str())
                })
                .ok_or(format!(
                    "{name}: {class} needs a flag (required, requisite, sufficient or optional)"
                ))?;
            i += 2;
            let mut options = BTreeMap::new();
            while toks.get(i) != Some(&Tok::Punct(';')) {
                let key =
                    word(toks.get(i)).ok_or(format!("{name}: expected option=value or ';'"))?;
                if toks.get(i + 1) != Some(&Tok::Punct('=')) {
                    return Err(format!("{name}: expected '=' after {key}"));
                }
                let value = match toks.get(i + 2) {
                    Some(Tok::Quoted(v)) | Some(Tok::Word(v)) => v.clone(),
                    _ => return Err(format!("{name}: option {key} has no value")),
                };
                options.insert(key, value);
                i += 3;
            }
            i += 1;
            modules.push(LoginModule {
                class,
                flag,
                options,
            });
        }
        i += 1;
        if toks.get(i) == Some(&Tok::Punct(';')) {
            i += 1;
        }
        entries.push((name, modules));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_connects_jaas_file_and_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("creds.properties");
        std::fs::write(&creds, "admin=s3cret-pass\n# comment\nops: other\n").unwrap();
        let jaas = dir.path().join("connect_jaas.conf");
        std::fs::write(
            &jaas,
            format!(
                "// Connect's REST users\nKafkaServer {{ x.Y required a=\"1\"; }};\n\
                 KafkaConnect {{\n  {PROPERTY_FILE_LOGIN_MODULE} required\n  file=\"{}\";\n}};\n",
                creds.display()
            ),
        )
        .unwrap();
        let auth = load_basic_auth(&jaas).unwrap();
        assert_eq!(auth.users["admin"].expose(), "s3cret-pass");
        assert_eq!(auth.users["ops"].expose(), "other");
        assert!(!format!("{auth:?}").contains("s3cret-pass"));

        let mut props = BTreeMap::new();
        props.insert(
            "rest.extension.classes".to_string(),
            BASIC_AUTH_EXTENSION.to_string(),
        );
        let opts = format!("-Xmx1g -D{JAAS_CONFIG_KEY}={}", jaas.display());
        let (sec, problems) = read(&props, Some(&opts));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(sec.basic_auth.unwrap().users.len(), 2);
        assert_eq!(sec.allowed_methods, vec!["GET", "POST", "HEAD"]);

        let (_, problems) = read(&props, None);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].1.contains(JAAS_CONFIG_KEY), "{problems:?}");
    }

    #[test]
    fn refuses_other_modules_and_extensions() {
        let dir = tempfile::tempdir().unwrap();
        let jaas = dir.path().join("j.conf");
        std::fs::write(
            &jaas,
            "KafkaConnect { org.eclipse.jetty.jaas.spi.LdapLoginModule required; };",
        )
        .unwrap();
        assert!(load_basic_auth(&jaas)
            .unwrap_err()
            .contains("is not available"));
        std::fs::write(&jaas, "KafkaConnect { a.B required file=\"x\" }").unwrap();
        assert!(load_basic_auth(&jaas).is_err());
        let mut props = BTreeMap::new();
        props.insert(
            "rest.extension.classes".to_string(),
            "com.example.Ext".to_string(),
        );
        let (_, problems) = read(&props, None);
        assert!(problems[0].1.contains("com.example.Ext is not available"));
    }
}
