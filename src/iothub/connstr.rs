//! IoT Hub and Event Hubs connection strings.
//!
//! Two forms are understood:
//! - the IoT Hub **service** connection string of a shared access policy:
//!   `HostName=<hub>.azure-devices.net;SharedAccessKeyName=<policy>;SharedAccessKey=<base64 key>`,
//!   or with a ready-made token instead of the key:
//!   `HostName=…;SharedAccessKeyName=<policy>;SharedAccessSignature=SharedAccessSignature sr=…&sig=…&se=…&skn=…`;
//! - the **Event Hub-compatible** one of the built-in endpoint:
//!   `Endpoint=sb://<namespace>.servicebus.windows.net/;SharedAccessKeyName=…;SharedAccessKey=…;EntityPath=<name>`.
//!
//! Keys are matched case-insensitively (Azure's own parsers do the same); unknown keys are ignored.
//! Errors name the missing or malformed part and never repeat any value of the string.

use crate::config::Secret;
use crate::iothub::sas::{self, KeyEncoding, SasError};
use std::time::Duration;

/// Why a connection string was refused. No variant carries a secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConnStrError {
    #[error("the connection string is empty")]
    Empty,
    #[error("connection string part {0} has no '=' (expected Key=Value pairs separated by ';')")]
    NoEquals(usize),
    #[error("the connection string has no {0}")]
    Missing(&'static str),
    #[error("the connection string's {0} is empty")]
    EmptyValue(&'static str),
    #[error(
        "the connection string has both SharedAccessKey and SharedAccessSignature; give only one"
    )]
    KeyAndSignature,
    #[error("this is a device connection string (it has DeviceId); the IoT Hub service needs a shared access policy's connection string, e.g. the 'service' policy")]
    DeviceConnectionString,
    #[error("the connection string's SharedAccessKey is not valid base64")]
    KeyNotBase64,
    #[error("the connection string's SharedAccessSignature is not a valid SAS token: {0}")]
    BadSignature(SasError),
    #[error("the connection string's Endpoint must look like sb://<namespace>/")]
    BadEndpoint,
    /// The value is not repeated: with a missing `;` it would carry the rest of the string
    /// (e.g. the key).
    #[error("the connection string's HostName is not a host name (expected e.g. myhub.azure-devices.net, without a scheme, path or spaces; is a ';' missing?)")]
    BadHostName,
}

fn parse_pairs(s: &str) -> Result<Vec<(String, String)>, ConnStrError> {
    if s.trim().is_empty() {
        return Err(ConnStrError::Empty);
    }
    let mut out = Vec::new();
    for (i, part) in s.split(';').enumerate() {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (k, v) = part.split_once('=').ok_or(ConnStrError::NoEquals(i + 1))?;
        out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    Ok(out)
}

fn take(pairs: &[(String, String)], key: &str) -> Option<String> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

fn required(
    pairs: &[(String, String)],
    key: &str,
    name: &'static str,
) -> Result<String, ConnStrError> {
    match take(pairs, key) {
        None => Err(ConnStrError::Missing(name)),
        Some(v) if v.is_empty() => Err(ConnStrError::EmptyValue(name)),
        Some(v) => Ok(v),
    }
}

/// How a service connection string authenticates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceCredential {
    /// A policy key: tokens are generated (and renewed) from it.
    Key(Secret),
    /// A fixed SAS token: used as is until its expiry (`se`, epoch seconds); it cannot be renewed.
    Token { token: Secret, expiry: u64 },
}

/// A parsed IoT Hub service connection string. `Debug` hides the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IotHubConnectionString {
    /// `HostName` as given, e.g. `myhub.azure-devices.net` (may carry `:port` for emulators).
    pub host_name: String,
    /// `SharedAccessKeyName` (the policy), e.g. `service`.
    pub key_name: String,
    pub credential: ServiceCredential,
}

impl IotHubConnectionString {
    /// Parses `HostName=…;SharedAccessKeyName=…;SharedAccessKey=…` (or `SharedAccessSignature=…`).
    pub fn parse(s: &Secret) -> Result<Self, ConnStrError> {
        let pairs = parse_pairs(s.expose())?;
        if take(&pairs, "deviceid").is_some() {
            return Err(ConnStrError::DeviceConnectionString);
        }
        let host_name = required(&pairs, "hostname", "HostName")?;
        let host_part = host_name.split(':').next().unwrap_or_default();
        if host_part.is_empty()
            || host_name.contains('/')
            || host_name.contains(char::is_whitespace)
        {
            return Err(ConnStrError::BadHostName);
        }
        let key = take(&pairs, "sharedaccesskey");
        let sig = take(&pairs, "sharedaccesssignature");
        let credential = match (key, sig) {
            (Some(_), Some(_)) => return Err(ConnStrError::KeyAndSignature),
            (Some(k), None) => {
                if k.is_empty() {
                    return Err(ConnStrError::EmptyValue("SharedAccessKey"));
                }
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(k.as_bytes())
                    .map_err(|_| ConnStrError::KeyNotBase64)?;
                ServiceCredential::Key(Secret::new(k))
            }
            (None, Some(t)) => {
                if t.is_empty() {
                    return Err(ConnStrError::EmptyValue("SharedAccessSignature"));
                }
                let parsed = sas::parse_token(&t).map_err(ConnStrError::BadSignature)?;
                ServiceCredential::Token {
                    token: Secret::new(t),
                    expiry: parsed.expiry,
                }
            }
            (None, None) => return Err(ConnStrError::Missing("SharedAccessKey")),
        };
        let key_name = match take(&pairs, "sharedaccesskeyname") {
            Some(n) if !n.is_empty() => n,
            Some(_) => return Err(ConnStrError::EmptyValue("SharedAccessKeyName")),
            None => match &credential {
                // A token names its policy in `skn`.
                ServiceCredential::Token { token, .. } => sas::parse_token(token.expose())
                    .ok()
                    .and_then(|p| p.key_name)
                    .ok_or(ConnStrError::Missing("SharedAccessKeyName"))?,
                ServiceCredential::Key(_) => {
                    return Err(ConnStrError::Missing("SharedAccessKeyName"))
                }
            },
        };
        Ok(IotHubConnectionString {
            host_name,
            key_name,
            credential,
        })
    }

    /// The host without any `:port`.
    pub fn host(&self) -> &str {
        self.host_name.split(':').next().unwrap_or(&self.host_name)
    }

    /// The port given in `HostName`, if any.
    pub fn port(&self) -> Option<u16> {
        self.host_name
            .split_once(':')
            .and_then(|(_, p)| p.parse().ok())
    }

    /// The hub name: the first DNS label of the host (`myhub` for `myhub.azure-devices.net`).
    pub fn hub_name(&self) -> &str {
        self.host().split('.').next().unwrap_or_default()
    }

    /// SASL PLAIN user name IoT Hub expects for a policy: `<policy>@sas.root.<hub>`.
    pub fn sasl_plain_username(&self) -> String {
        format!("{}@sas.root.{}", self.key_name, self.hub_name())
    }

    /// The token audience (`sr`) of IoT Hub service tokens: the host name as given.
    pub fn audience(&self) -> &str {
        &self.host_name
    }

    /// A service SAS token valid for `ttl`, and its expiry (epoch seconds). With a fixed
    /// `SharedAccessSignature` the given token is returned as is, expired or not.
    pub fn token(&self, ttl: Duration) -> Result<(Secret, u64), SasError> {
        match &self.credential {
            ServiceCredential::Key(key) => {
                let expiry = sas::expiry_in(ttl);
                let t = sas::generate_token(
                    self.audience(),
                    &self.key_name,
                    key.expose(),
                    KeyEncoding::Base64Decoded,
                    expiry,
                )?;
                Ok((Secret::new(t), expiry))
            }
            ServiceCredential::Token { token, expiry } => Ok((token.clone(), *expiry)),
        }
    }

    /// True when tokens can be renewed (a key, not a fixed signature).
    pub fn can_renew(&self) -> bool {
        matches!(self.credential, ServiceCredential::Key(_))
    }
}

/// A parsed Event Hub-compatible connection string. `Debug` hides the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventHubConnectionString {
    /// `Endpoint` as given, e.g. `sb://ihsuprodxx.servicebus.windows.net/`.
    pub endpoint: String,
    /// Host (and `:port` if given) of the endpoint.
    pub namespace_host: String,
    pub key_name: String,
    pub key: Secret,
    /// `EntityPath`: the Event Hub-compatible name. Optional in the string; callers that need it
    /// should use [`EventHubConnectionString::entity_path`].
    pub entity_path: Option<String>,
    /// `UseDevelopmentEmulator=true` (plain AMQP, no TLS).
    pub use_development_emulator: bool,
}

impl EventHubConnectionString {
    pub fn parse(s: &Secret) -> Result<Self, ConnStrError> {
        let pairs = parse_pairs(s.expose())?;
        let endpoint = required(&pairs, "endpoint", "Endpoint")?;
        let (scheme, rest) = endpoint
            .split_once("://")
            .ok_or(ConnStrError::BadEndpoint)?;
        if !scheme.eq_ignore_ascii_case("sb")
            && !scheme.eq_ignore_ascii_case("amqps")
            && !scheme.eq_ignore_ascii_case("amqp")
        {
            return Err(ConnStrError::BadEndpoint);
        }
        let namespace_host = rest.trim_end_matches('/').to_string();
        if namespace_host.is_empty() || namespace_host.contains('/') {
            return Err(ConnStrError::Missing("Endpoint host"));
        }
        let key_name = required(&pairs, "sharedaccesskeyname", "SharedAccessKeyName")?;
        let key = Secret::new(required(&pairs, "sharedaccesskey", "SharedAccessKey")?);
        let entity_path = take(&pairs, "entitypath").filter(|e| !e.is_empty());
        let use_development_emulator = take(&pairs, "usedevelopmentemulator")
            .map(|v| v.eq_ignore_ascii_case("true"))
            .unwrap_or(false);
        Ok(EventHubConnectionString {
            endpoint,
            namespace_host,
            key_name,
            key,
            entity_path,
            use_development_emulator,
        })
    }

    /// `EntityPath`, or an error naming it.
    pub fn entity_path(&self) -> Result<&str, ConnStrError> {
        self.entity_path
            .as_deref()
            .ok_or(ConnStrError::Missing("EntityPath"))
    }

    /// The namespace host without any `:port`.
    pub fn host(&self) -> &str {
        self.namespace_host
            .split(':')
            .next()
            .unwrap_or(&self.namespace_host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "c2VjcmV0LWtleS1ieXRlcw==";

    fn cs(s: &str) -> Secret {
        Secret::new(s)
    }

    #[test]
    fn parses_service_connection_string() {
        let c = IotHubConnectionString::parse(&cs(&format!(
            "HostName=myhub.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey={KEY}"
        )))
        .unwrap();
        assert_eq!(c.host_name, "myhub.azure-devices.net");
        assert_eq!(c.key_name, "service");
        assert_eq!(c.hub_name(), "myhub");
        assert_eq!(c.sasl_plain_username(), "service@sas.root.myhub");
        assert_eq!(c.port(), None);
        assert!(c.can_renew());
        let (tok, exp) = c.token(Duration::from_secs(3600)).unwrap();
        let p = sas::parse_token(tok.expose()).unwrap();
        assert_eq!(p.resource, "myhub.azure-devices.net");
        assert_eq!(p.key_name.as_deref(), Some("service"));
        assert_eq!(p.expiry, exp);
        sas::verify_token(&p, KEY, KeyEncoding::Base64Decoded, sas::now_epoch()).unwrap();
    }

    #[test]
    fn keys_are_case_insensitive_and_order_free() {
        let c = IotHubConnectionString::parse(&cs(&format!(
            " sharedaccesskey={KEY} ; HOSTNAME=127.0.0.1:5671;sharedAccessKeyName=svc;"
        )))
        .unwrap();
        assert_eq!(c.host(), "127.0.0.1");
        assert_eq!(c.port(), Some(5671));
        assert_eq!(c.key_name, "svc");
    }

    #[test]
    fn errors_name_the_missing_part_and_never_the_key() {
        let e = IotHubConnectionString::parse(&cs(&format!(
            "SharedAccessKeyName=service;SharedAccessKey={KEY}"
        )))
        .unwrap_err();
        assert_eq!(e, ConnStrError::Missing("HostName"));
        assert!(e.to_string().contains("HostName"));

        let e = IotHubConnectionString::parse(&cs(
            "HostName=h.azure-devices.net;SharedAccessKeyName=service",
        ))
        .unwrap_err();
        assert!(e.to_string().contains("SharedAccessKey"), "{e}");

        let e = IotHubConnectionString::parse(&cs(&format!(
            "HostName=h.azure-devices.net;SharedAccessKey={KEY}"
        )))
        .unwrap_err();
        assert_eq!(e, ConnStrError::Missing("SharedAccessKeyName"));

        let e = IotHubConnectionString::parse(&cs(
            "HostName=h;SharedAccessKeyName=s;SharedAccessKey=not base64 but secret!!",
        ))
        .unwrap_err();
        assert_eq!(e, ConnStrError::KeyNotBase64);
        assert!(!e.to_string().contains("secret!!"));

        let e = IotHubConnectionString::parse(&cs("HostName=h;mysecretvalue")).unwrap_err();
        assert_eq!(e, ConnStrError::NoEquals(2));
        assert!(!e.to_string().contains("mysecretvalue"));

        assert_eq!(
            IotHubConnectionString::parse(&cs("  ")).unwrap_err(),
            ConnStrError::Empty
        );
        let e = IotHubConnectionString::parse(&cs(&format!(
            "HostName=h;DeviceId=d1;SharedAccessKey={KEY}"
        )))
        .unwrap_err();
        assert_eq!(e, ConnStrError::DeviceConnectionString);
    }

    #[test]
    fn debug_hides_the_key() {
        let c = IotHubConnectionString::parse(&cs(&format!(
            "HostName=h.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey={KEY}"
        )))
        .unwrap();
        let d = format!("{c:?}");
        assert!(!d.contains(KEY), "{d}");
        assert!(d.contains("[hidden]"));
    }

    #[test]
    fn accepts_a_fixed_signature() {
        let tok = sas::generate_token(
            "myhub.azure-devices.net",
            "service",
            KEY,
            KeyEncoding::Base64Decoded,
            4_000_000_000,
        )
        .unwrap();
        let c = IotHubConnectionString::parse(&cs(&format!(
            "HostName=myhub.azure-devices.net;SharedAccessSignature={tok}"
        )))
        .unwrap();
        assert_eq!(c.key_name, "service", "taken from skn");
        assert!(!c.can_renew());
        let (t, exp) = c.token(Duration::from_secs(1)).unwrap();
        assert_eq!(t.expose(), tok);
        assert_eq!(exp, 4_000_000_000);

        let e = IotHubConnectionString::parse(&cs(&format!(
            "HostName=h;SharedAccessKeyName=s;SharedAccessKey={KEY};SharedAccessSignature={tok}"
        )))
        .unwrap_err();
        assert_eq!(e, ConnStrError::KeyAndSignature);
        let e = IotHubConnectionString::parse(&cs(
            "HostName=h;SharedAccessKeyName=s;SharedAccessSignature=Bearer xyz",
        ))
        .unwrap_err();
        assert!(matches!(e, ConnStrError::BadSignature(_)));
    }

    #[test]
    fn parses_event_hub_compatible_string() {
        let c = EventHubConnectionString::parse(&cs(&format!(
            "Endpoint=sb://ihsuprod.servicebus.windows.net/;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY};EntityPath=myhub"
        )))
        .unwrap();
        assert_eq!(c.namespace_host, "ihsuprod.servicebus.windows.net");
        assert_eq!(c.host(), "ihsuprod.servicebus.windows.net");
        assert_eq!(c.key_name, "iothubowner");
        assert_eq!(c.key.expose(), KEY);
        assert_eq!(c.entity_path().unwrap(), "myhub");
        assert!(!c.use_development_emulator);
        assert!(!format!("{c:?}").contains(KEY));

        let c = EventHubConnectionString::parse(&cs(&format!(
            "endpoint=sb://127.0.0.1:5672;sharedaccesskeyname=k;sharedaccesskey={KEY};UseDevelopmentEmulator=true"
        )))
        .unwrap();
        assert_eq!(c.namespace_host, "127.0.0.1:5672");
        assert!(c.use_development_emulator);
        assert_eq!(
            c.entity_path().unwrap_err(),
            ConnStrError::Missing("EntityPath")
        );

        let e = EventHubConnectionString::parse(&cs(&format!(
            "Endpoint=https://x/;SharedAccessKeyName=k;SharedAccessKey={KEY}"
        )))
        .unwrap_err();
        assert_eq!(e, ConnStrError::BadEndpoint);
        let e = EventHubConnectionString::parse(&cs(
            "Endpoint=sb://x/;SharedAccessKeyName=k;EntityPath=e",
        ))
        .unwrap_err();
        assert_eq!(e, ConnStrError::Missing("SharedAccessKey"));
    }

    #[test]
    fn errors_never_echo_the_host_or_a_key_after_a_missing_semicolon() {
        let planted = "UGxhbnRlZFNlY3JldEtleQ==";
        for bad in [
            format!("HostName=secret-hub.azure-devices.net SharedAccessKeyName=service;SharedAccessKey={planted}"),
            format!("HostName=h.azure-devices.net/SharedAccessKey={planted};SharedAccessKeyName=s"),
            format!("HostName=h;SharedAccessKeyName=s;SharedAccessKey={planted} x"),
        ] {
            let e = IotHubConnectionString::parse(&cs(&bad)).unwrap_err();
            let text = format!("{e} {e:?}");
            assert!(!text.contains(planted), "{text}");
            assert!(!text.contains("secret-hub"), "{text}");
        }
        let e = EventHubConnectionString::parse(&cs(&format!(
            "Endpoint=sbx{planted}://x/;SharedAccessKeyName=k;SharedAccessKey={planted}"
        )))
        .unwrap_err();
        assert!(!format!("{e} {e:?}").contains(planted));
    }

    proptest::proptest! {
        /// Arbitrary strings with a planted key anywhere: never a panic, and a refusal never
        /// carries the key.
        #[test]
        fn parse_errors_never_carry_the_planted_key(
            prefix in "[ -~]{0,40}",
            suffix in "[ -~]{0,40}",
            sep in proptest::sample::select(vec!["", ";", " ", "=", "/"]),
        ) {
            let planted = "UGxhbnRlZFNlY3JldEtleQ==";
            let s = format!("{prefix}{sep}SharedAccessKey={planted}{suffix}");
            if let Err(e) = IotHubConnectionString::parse(&cs(&s)) {
                let text = format!("{e} {e:?}");
                proptest::prop_assert!(!text.contains(planted), "{}", text);
            }
            if let Err(e) = EventHubConnectionString::parse(&cs(&s)) {
                let text = format!("{e} {e:?}");
                proptest::prop_assert!(!text.contains(planted), "{}", text);
            }
        }
    }
}
