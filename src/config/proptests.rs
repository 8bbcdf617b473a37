//! Property tests of the configuration parsers: Java properties on arbitrary bytes, connection
//! strings and SAS tokens with a planted key that must never reach an error message, and the
//! configuration loader with a planted secret that must never reach `Debug`, a problem or a warning.

use super::properties;
use super::{ConnectorConfig, LoadedFile, Secret, WorkerConfig};
use crate::iothub::connstr::{EventHubConnectionString, IotHubConnectionString};
use crate::iothub::sas;
use proptest::prelude::*;
use std::collections::BTreeMap;

/// A key that no generated text can contain by accident (upper-case marker, other text is lower).
fn planted_key() -> impl Strategy<Value = String> {
    "[A-Za-z0-9+/]{16,40}".prop_map(|k| format!("PLANTEDKEY{k}=="))
}

/// Values of the other parts: lower-case, with the separators that make parsing interesting.
fn junk() -> impl Strategy<Value = String> {
    "[a-z0-9 :/._;=&%-]{0,24}"
}

#[derive(Clone, Debug)]
enum Part {
    Pair(String, String),
    Bare(String),
    Key,
    Signature,
}

fn part() -> impl Strategy<Value = Part> {
    let names = prop::sample::select(vec![
        "HostName",
        "hostname",
        "Endpoint",
        "SharedAccessKeyName",
        "EntityPath",
        "DeviceId",
        "UseDevelopmentEmulator",
        "SharedAccessKey",
        "x",
    ]);
    prop_oneof![
        (names, junk()).prop_map(|(n, v)| Part::Pair(n.to_string(), v)),
        junk().prop_map(Part::Bare),
        Just(Part::Key),
        Just(Part::Signature),
    ]
}

fn render(parts: &[Part], key: &str) -> String {
    parts
        .iter()
        .map(|p| match p {
            Part::Pair(n, v) => format!("{n}={v}"),
            Part::Bare(v) => v.clone(),
            Part::Key => format!("SharedAccessKey={key}"),
            Part::Signature => format!(
                "SharedAccessSignature=SharedAccessSignature sr=hub&sig={key}&se=99999999999&skn=service"
            ),
        })
        .collect::<Vec<_>>()
        .join(";")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary bytes never panic the Java properties parser, and what it returns is stable:
    /// parsing is deterministic.
    #[test]
    fn properties_parse_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let a = properties::parse(&bytes);
        let b = properties::parse(&bytes);
        prop_assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }

    /// Properties made of the characters that matter to the format, more often than random bytes.
    #[test]
    fn properties_parse_format_characters(text in "[a-c=: \\t\\\\#!\\r\\nu0-9D]{0,200}") {
        let _ = properties::parse(text.as_bytes());
    }

    #[test]
    fn service_connection_string_errors_never_show_the_key(
        parts in prop::collection::vec(part(), 0..8),
        key in planted_key(),
    ) {
        let s = render(&parts, &key);
        if let Err(e) = IotHubConnectionString::parse(&Secret::new(s.clone())) {
            prop_assert!(!e.to_string().contains(&key), "{} leaks the key of {}", e, s);
            let shown = format!("{:?}", e);
                prop_assert!(!shown.contains(&key));
        }
        if let Ok(c) = IotHubConnectionString::parse(&Secret::new(s)) {
            let shown = format!("{:?}", c);
                prop_assert!(!shown.contains(&key));
        }
    }

    #[test]
    fn event_hub_connection_string_errors_never_show_the_key(
        parts in prop::collection::vec(part(), 0..8),
        key in planted_key(),
    ) {
        let s = render(&parts, &key);
        match EventHubConnectionString::parse(&Secret::new(s.clone())) {
            Err(e) => {
                prop_assert!(!e.to_string().contains(&key), "{} leaks the key of {}", e, s);
                let shown = format!("{:?}", e);
                prop_assert!(!shown.contains(&key));
            }
            Ok(c) => {
                let shown = format!("{:?}", c);
                prop_assert!(!shown.contains(&key));
                if let Err(e) = c.entity_path() {
                    prop_assert!(!e.to_string().contains(&key));
                }
            }
        }
    }

    #[test]
    fn sas_token_errors_never_show_the_signature(
        fields in prop::collection::vec(("(sr|sig|se|skn|x)", junk()), 0..6),
        key in planted_key(),
        prefix in prop::bool::ANY,
    ) {
        let mut parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        parts.push(format!("sig={key}"));
        let token = format!(
            "{}{}",
            if prefix { "SharedAccessSignature " } else { "" },
            parts.join("&")
        );
        if let Err(e) = sas::parse_token(&token) {
            prop_assert!(!e.to_string().contains(&key));
        }
        // Signing with a key that is not base64 fails without echoing it.
        if let Err(e) = sas::generate_token("hub", "service", &key.replace('=', "%"), sas::KeyEncoding::Base64Decoded, 1) {
            prop_assert!(!e.to_string().contains("PLANTEDKEY"));
        }
    }

    /// A secret planted in any secret-named key of a worker or connector file never shows in
    /// `Debug` of the typed configs, in a problem or in a warning, whatever else the file holds.
    #[test]
    fn planted_secrets_never_reach_debug_problems_or_warnings(
        key in planted_key(),
        secret_key in prop::sample::select(vec![
            "producer.sasl.password", "consumer.ssl.key.password", "admin.sasl.jaas.config",
            "ssl.keystore.key", "value.converter.basic.auth.user.info", "my.api.token",
            "cloud.credentials", "producer.sasl.oauthbearer.client.secret",
        ]),
        connector_key in prop::sample::select(vec![
            "IotHub.AccessKeyValue", "IotHub.ConnectionString", "IotHub.SasToken",
            "producer.override.sasl.password", "consumer.override.sasl.jaas.config",
        ]),
        extra in prop::collection::btree_map("[a-zA-Z.]{1,12}", junk(), 0..4),
    ) {
        let mut worker: BTreeMap<String, String> = extra.clone();
        worker.insert("key.converter".into(), super::STRING_CONVERTER.into());
        worker.insert("value.converter".into(), super::STRING_CONVERTER.into());
        worker.insert("offset.storage.file.filename".into(), "/tmp/x.offsets".into());
        worker.insert(secret_key.to_string(), key.clone());
        let wf = LoadedFile { path: "w.properties".into(), raw: worker.clone(), resolved: worker };
        let shown = format!("{wf:?}");
        prop_assert!(!shown.contains(&key), "{}", shown);
        match WorkerConfig::from_file(&wf) {
            Ok(w) => {
                let shown = format!("{:?}", w);
                prop_assert!(!shown.contains(&key));
                prop_assert!(!w.warnings.join("\n").contains(&key));
            }
            Err(p) => prop_assert!(!p.to_string().contains(&key)),
        }
        let mut c: BTreeMap<String, String> = extra;
        c.insert("name".into(), "src".into());
        c.insert("connector.class".into(), "IotHubSource".into());
        c.insert("Kafka.Topic".into(), "iotin".into());
        c.insert("IotHub.EventHubCompatibleName".into(), "hub".into());
        c.insert("IotHub.EventHubCompatibleEndpoint".into(), "sb://ns.example:5671/".into());
        c.insert("IotHub.AccessKeyName".into(), "service".into());
        c.insert("IotHub.AccessKeyValue".into(), "b3RoZXI=".into());
        c.insert(connector_key.to_string(), key.clone());
        let cf = LoadedFile { path: "c.properties".into(), raw: c.clone(), resolved: c };
        match ConnectorConfig::from_file(&cf) {
            Ok(conf) => {
                let shown = format!("{:?}", conf);
                prop_assert!(!shown.contains(&key));
                prop_assert!(!conf.warnings.join("\n").contains(&key));
            }
            Err(p) => prop_assert!(!p.to_string().contains(&key), "{}", p),
        }
    }
}
