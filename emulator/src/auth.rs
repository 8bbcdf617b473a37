//! Token checks of both endpoints and the SASL mechanisms of the AMQP listener.

use crate::sas::{self, KeyUse};
use crate::Secret;
use fe2o3_amqp::acceptor::sasl_acceptor::{SaslAcceptor, SaslServerFrame};
use fe2o3_amqp::types::primitives::{Array, Symbol};
use fe2o3_amqp::types::sasl::{SaslCode, SaslInit, SaslOutcome, SaslResponse};
use std::sync::{Arc, Mutex};

/// What a verified token grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Lower-case entity path the token covers (empty = the whole namespace).
    pub path: String,
    /// Expiry, epoch seconds.
    pub expiry: u64,
}

/// Splits a token audience / resource such as `amqps://ns.example/hub/ConsumerGroups/x` into
/// (lower-case host, lower-case path without leading or trailing '/').
pub fn split_resource(resource: &str) -> (String, String) {
    let r = resource.trim();
    let r = r.split_once("://").map_or(r, |(_, rest)| rest);
    let (host, path) = r.split_once('/').unwrap_or((r, ""));
    (
        host.to_ascii_lowercase(),
        path.trim_matches('/').to_ascii_lowercase(),
    )
}

/// Whether `grant_path` (lower-case) covers `entity_path` (any case): equal, or a prefix ending at a
/// path segment boundary, or the namespace (empty).
pub fn covers(grant_path: &str, entity_path: &str) -> bool {
    let entity = entity_path.trim_matches('/').to_ascii_lowercase();
    grant_path.is_empty()
        || entity == grant_path
        || (entity.starts_with(grant_path)
            && entity.as_bytes().get(grant_path.len()) == Some(&b'/'))
}

/// Token verification against the hub's one shared access policy.
#[derive(Clone, Debug)]
pub struct Verifier {
    pub key_name: String,
    pub key: Secret,
    /// Names that the IoT Hub service audience (`sr`) may carry: the advertised host name and
    /// `<hub>.azure-devices.net`, lower-case.
    pub iothub_hosts: Vec<String>,
}

impl Verifier {
    /// Parses `token`, checks its policy name, signature and expiry.
    fn check(&self, token: &str, key_use: KeyUse) -> Result<sas::Token, String> {
        let parsed = sas::parse(token)?;
        if let Some(n) = parsed.key_name.as_deref() {
            if n != self.key_name {
                return Err(format!(
                    "the shared access policy '{n}' does not exist on this hub"
                ));
            }
        }
        sas::verify(&parsed, self.key.expose(), key_use, sas::now())?;
        Ok(parsed)
    }

    /// Event Hubs convention (HMAC keyed with the key string's bytes). Returns what the token grants.
    pub fn verify_eventhub(&self, token: &str) -> Result<Grant, String> {
        let parsed = self.check(token, KeyUse::Text)?;
        let (_, path) = split_resource(&parsed.resource);
        Ok(Grant {
            path,
            expiry: parsed.expiry,
        })
    }

    /// IoT Hub service convention (`sr` = hub host name, optionally `/devices/<id>`, HMAC keyed with
    /// the base64-decoded key). Returns the token's (lower-case) path and expiry.
    pub fn verify_iothub(&self, token: &str) -> Result<(String, u64), String> {
        let parsed = self.check(token, KeyUse::Base64)?;
        let (host, path) = split_resource(&parsed.resource);
        if !self.iothub_hosts.contains(&host) {
            return Err(format!(
                "the token audience '{}' is not this hub (expected one of {:?})",
                parsed.resource, self.iothub_hosts
            ));
        }
        Ok((path, parsed.expiry))
    }

    /// [`Verifier::verify_iothub`] for the service endpoint: the audience must be the hub itself.
    pub fn verify_iothub_service(&self, token: &str) -> Result<u64, String> {
        match self.verify_iothub(token)? {
            (path, expiry) if path.is_empty() => Ok(expiry),
            (path, _) => Err(format!(
                "the token audience path '{path}' is not the hub's service endpoint"
            )),
        }
    }

    /// A device token (`sr` = the hub host, any device) valid for `ttl`, signed with the key.
    pub fn device_token(&self, host: &str, ttl: std::time::Duration) -> String {
        sas::sign(
            host,
            Some(&self.key_name),
            self.key.expose(),
            KeyUse::Base64,
            sas::now() + ttl.as_secs(),
        )
        .unwrap_or_default()
    }
}

/// Per-connection authorisation state, filled by CBS put-token and SASL PLAIN.
#[derive(Debug, Default)]
pub struct ConnAuth {
    /// Event Hub-compatible endpoint grants.
    pub eventhub: Vec<Grant>,
    /// Expiry of the IoT Hub service authorisation (epoch seconds), if any.
    pub iothub_service: Option<u64>,
}

impl ConnAuth {
    pub fn eventhub_allows(&self, entity_path: &str, now: u64) -> bool {
        self.eventhub
            .iter()
            .any(|g| g.expiry > now && covers(&g.path, entity_path))
    }

    pub fn iothub_allows(&self, now: u64) -> bool {
        self.iothub_service.is_some_and(|e| e > now)
    }
}

pub type SharedConnAuth = Arc<Mutex<ConnAuth>>;

/// SASL: ANONYMOUS and MSSBCBS (Microsoft's "authorise later on `$cbs`" mechanism, which uamqp-based
/// clients such as Python's azure-iot-hub insist on; Azure offers it too), both followed by CBS, and
/// PLAIN with `<policy>@sas.root.<hub>` and an IoT Hub service SAS token as password.
#[derive(Clone, Debug)]
pub struct EmulatorSasl {
    pub verifier: Arc<Verifier>,
    pub hub_name: String,
    pub auth: SharedConnAuth,
    /// `no_auth`: PLAIN accepts anything.
    pub open: bool,
}

impl EmulatorSasl {
    fn plain(&self, init: &SaslInit) -> SaslCode {
        let Some(resp) = init.initial_response.as_ref() else {
            return SaslCode::Auth;
        };
        let mut parts = resp.split(|b| *b == 0);
        let (_authzid, Some(user), Some(pass)) = (parts.next(), parts.next(), parts.next()) else {
            return SaslCode::Auth;
        };
        let (Ok(user), Ok(pass)) = (std::str::from_utf8(user), std::str::from_utf8(pass)) else {
            return SaslCode::Auth;
        };
        if self.open {
            self.auth
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iothub_service = Some(u64::MAX);
            return SaslCode::Ok;
        }
        let expected_user = format!("{}@sas.root.{}", self.verifier.key_name, self.hub_name);
        if !user.eq_ignore_ascii_case(&expected_user) {
            tracing::info!(user, "SASL PLAIN refused: unknown user name");
            return SaslCode::Auth;
        }
        match self.verifier.verify_iothub_service(pass) {
            Ok(expiry) => {
                self.auth
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iothub_service = Some(expiry);
                SaslCode::Ok
            }
            Err(e) => {
                tracing::info!(reason = %e, "SASL PLAIN refused");
                SaslCode::Auth
            }
        }
    }
}

impl SaslAcceptor for EmulatorSasl {
    fn mechanisms(&self) -> Array<Symbol> {
        Array::from(vec![
            Symbol::from("MSSBCBS"),
            Symbol::from("PLAIN"),
            Symbol::from("ANONYMOUS"),
        ])
    }

    fn on_init(&mut self, init: SaslInit) -> SaslServerFrame {
        let code = match init.mechanism.as_str() {
            "ANONYMOUS" | "MSSBCBS" => SaslCode::Ok,
            "PLAIN" => self.plain(&init),
            _ => SaslCode::Auth,
        };
        SaslServerFrame::Outcome(SaslOutcome {
            code,
            additional_data: None,
        })
    }

    fn on_response(&mut self, _response: SaslResponse) -> SaslServerFrame {
        SaslServerFrame::Outcome(SaslOutcome {
            code: SaslCode::Sys,
            additional_data: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier() -> Verifier {
        Verifier {
            key_name: "service".into(),
            key: Secret::new("c2VjcmV0a2V5"),
            iothub_hosts: vec!["127.0.0.1:5671".into(), "myhub.azure-devices.net".into()],
        }
    }

    #[test]
    fn resources_and_coverage() {
        assert_eq!(
            split_resource("amqps://127.0.0.1/MyHub/"),
            ("127.0.0.1".into(), "myhub".into())
        );
        assert_eq!(
            split_resource("127.0.0.1:5671"),
            ("127.0.0.1:5671".into(), String::new())
        );
        assert!(covers(
            "myhub",
            "MyHub/ConsumerGroups/$Default/Partitions/0"
        ));
        assert!(covers("", "anything"));
        assert!(!covers(
            "myhub",
            "myhub2/ConsumerGroups/$Default/Partitions/0"
        ));
        assert!(!covers("other", "myhub"));
    }

    fn token(resource: &str, key_name: &str, key_use: KeyUse, expiry: u64) -> String {
        sas::sign(resource, Some(key_name), "c2VjcmV0a2V5", key_use, expiry).unwrap()
    }

    #[test]
    fn eventhub_tokens_use_the_raw_key() {
        let v = verifier();
        let exp = sas::now() + 60;
        let good = token("amqps://127.0.0.1/myhub", "service", KeyUse::Text, exp);
        assert_eq!(
            v.verify_eventhub(&good),
            Ok(Grant {
                path: "myhub".into(),
                expiry: exp
            })
        );
        let decoded = token("amqps://127.0.0.1/myhub", "service", KeyUse::Base64, exp);
        assert!(v.verify_eventhub(&decoded).is_err());
        let other_policy = token("sb://x/myhub", "owner", KeyUse::Text, exp);
        assert!(v.verify_eventhub(&other_policy).is_err());
        let expired = token("sb://x/myhub", "service", KeyUse::Text, 5);
        assert!(v.verify_eventhub(&expired).unwrap_err().contains("expired"));
    }

    #[test]
    fn iothub_tokens_use_the_decoded_key_and_the_host() {
        let v = verifier();
        let exp = sas::now() + 60;
        let good = token("myhub.azure-devices.net", "service", KeyUse::Base64, exp);
        assert_eq!(v.verify_iothub_service(&good), Ok(exp));
        let wrong_host = token("otherhub.azure-devices.net", "service", KeyUse::Base64, exp);
        assert!(v.verify_iothub_service(&wrong_host).is_err());
        let raw = token("myhub.azure-devices.net", "service", KeyUse::Text, exp);
        assert!(v.verify_iothub_service(&raw).is_err());
        let device = token(
            "myhub.azure-devices.net/devices/d1",
            "service",
            KeyUse::Base64,
            exp,
        );
        assert_eq!(v.verify_iothub(&device), Ok(("devices/d1".into(), exp)));
        assert!(v.verify_iothub_service(&device).is_err());
        let handed_out = v.device_token("127.0.0.1:5671", std::time::Duration::from_secs(60));
        assert_eq!(
            v.verify_iothub(&handed_out).map(|(p, _)| p),
            Ok(String::new())
        );
    }

    #[test]
    fn conn_auth_expiry() {
        let mut a = ConnAuth::default();
        a.eventhub.push(Grant {
            path: "myhub".into(),
            expiry: 100,
        });
        assert!(a.eventhub_allows("myhub/ConsumerGroups/$Default/Partitions/1", 99));
        assert!(!a.eventhub_allows("myhub/ConsumerGroups/$Default/Partitions/1", 100));
        assert!(!a.iothub_allows(0));
        a.iothub_service = Some(10);
        assert!(a.iothub_allows(9));
    }
}
