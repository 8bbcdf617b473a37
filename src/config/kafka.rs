//! Kafka client settings: Connect's worker keys translated to librdkafka, with the settings Connect
//! forces (kafka-connect.md §2.2, §2.3) in Connect's precedence order.
//!
//! Most Java client keys have the same name in librdkafka and pass through unchanged; librdkafka itself
//! then rejects unknown names and bad values (checked offline by `validate`). The keys below differ.

use super::connector::ConnectorConfig;
use super::worker::WorkerConfig;
use super::Problems;
use rdkafka::ClientConfig;
use std::collections::BTreeMap;

/// Which client a setting is for (for messages and the Java-only key list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Producer,
    Consumer,
    Admin,
}

/// What happens to one Java key.
enum Rule {
    /// Same meaning under another librdkafka name.
    Rename(&'static str),
    /// Java-only, no effect here (serializers, JMX, …): dropped.
    Drop,
    /// Java-only and matters: refuse with the librdkafka alternative.
    Refuse(&'static str),
}

fn rule(key: &str) -> Option<Rule> {
    Some(match key {
        "key.serializer" | "value.serializer" | "key.deserializer" | "value.deserializer" => Rule::Drop,
        "max.block.ms" | "interceptor.classes" | "metric.reporters" | "metrics.num.samples"
        | "metrics.sample.window.ms" | "metrics.recording.level" | "security.providers"
        | "ssl.protocol" | "ssl.enabled.protocols" | "ssl.keymanager.algorithm"
        | "ssl.trustmanager.algorithm" | "ssl.secure.random.implementation" | "ssl.provider"
        | "ssl.engine.factory.class" | "default.api.timeout.ms" | "exclude.internal.topics"
        | "sasl.login.class" | "sasl.login.callback.handler.class" | "sasl.client.callback.handler.class"
        | "sasl.kerberos.ticket.renew.window.factor" | "sasl.kerberos.ticket.renew.jitter"
        | "sasl.kerberos.min.time.before.relogin" | "ssl.truststore.password" | "ssl.truststore.type"
        | "ssl.keystore.type" | "max.poll.records" | "metrics.context.connect.kafka.cluster.id"
        | "metrics.context.connect.group.id" | "auto.include.jmx.reporter" => Rule::Drop,
        "sasl.mechanism" => Rule::Rename("sasl.mechanisms"),
        "buffer.memory" => Rule::Rename("queue.buffering.max.kbytes"),
        "max.request.size" => Rule::Rename("message.max.bytes"),
        "receive.buffer.bytes" => Rule::Rename("socket.receive.buffer.bytes"),
        "send.buffer.bytes" => Rule::Rename("socket.send.buffer.bytes"),
        "ssl.truststore.location" => Rule::Refuse(
            "Java trust stores (JKS/PKCS12) are not readable here: export the CA as PEM (keytool -exportcert -rfc -alias <ca> -keystore <file>) and set ssl.ca.location=/path/ca.pem",
        ),
        "ssl.truststore.certificates" => Rule::Refuse("set ssl.ca.location=/path/ca.pem (or ssl.ca.pem) instead"),
        "ssl.keystore.certificate.chain" => Rule::Refuse("set ssl.certificate.location=/path/cert.pem (or ssl.certificate.pem) instead"),
        _ => return None,
    })
}

/// Translates Java client keys to librdkafka keys. Problems name `prefix + key`.
pub fn translate(
    file: &str,
    prefix: &str,
    props: &BTreeMap<String, String>,
    problems: &mut Problems,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in props {
        let key = format!("{prefix}{k}");
        match k.as_str() {
            "sasl.jaas.config" => match jaas(v) {
                Ok(pairs) => out.extend(pairs),
                Err(m) => problems.push(file, &key, m),
            },
            "ssl.keystore.location" => {
                let ty = props
                    .get("ssl.keystore.type")
                    .map(|s| s.to_ascii_uppercase());
                match ty.as_deref() {
                    Some("PKCS12") => {
                        out.insert("ssl.keystore.location".into(), v.clone());
                    }
                    Some("PEM") => {
                        out.insert("ssl.certificate.location".into(), v.clone());
                    }
                    _ => problems.push(
                        file,
                        &key,
                        "JKS key stores are not readable here: convert to PKCS#12 (keytool -importkeystore -deststoretype PKCS12) and set ssl.keystore.type=PKCS12, or use ssl.certificate.location + ssl.key.location (PEM)",
                    ),
                }
            }
            "ssl.endpoint.identification.algorithm" => {
                let v = if v.is_empty() {
                    "none".to_string()
                } else {
                    v.to_ascii_lowercase()
                };
                out.insert(k.clone(), v);
            }
            "partition.assignment.strategy" => {
                let mapped: Vec<&str> = v
                    .split(',')
                    .map(|s| match s.trim().rsplit('.').next().unwrap_or("") {
                        "RangeAssignor" | "range" => "range",
                        "RoundRobinAssignor" | "roundrobin" => "roundrobin",
                        "CooperativeStickyAssignor" | "cooperative-sticky" => "cooperative-sticky",
                        _ => "",
                    })
                    .collect();
                if mapped.iter().any(|m| m.is_empty()) {
                    problems.push(file, &key, format!("unsupported assignor in {v}: use RangeAssignor, RoundRobinAssignor or CooperativeStickyAssignor"));
                } else {
                    out.insert(k.clone(), mapped.join(","));
                }
            }
            "buffer.memory" => match v.parse::<u64>() {
                Ok(bytes) => {
                    out.insert(
                        "queue.buffering.max.kbytes".into(),
                        (bytes / 1024).max(1).to_string(),
                    );
                }
                Err(_) => problems.push(
                    file,
                    &key,
                    format!("Invalid value {v}: Not a number of type LONG"),
                ),
            },
            _ => match rule(k) {
                Some(Rule::Drop) => {}
                Some(Rule::Rename(to)) => {
                    out.insert(to.to_string(), v.clone());
                }
                Some(Rule::Refuse(alt)) => problems.push(file, &key, alt.to_string()),
                None => {
                    out.insert(k.clone(), v.clone());
                }
            },
        }
    }
    out
}

/// `sasl.jaas.config` → librdkafka keys (PLAIN/SCRAM username+password, Kerberos keytab+principal).
fn jaas(v: &str) -> Result<Vec<(String, String)>, String> {
    let module = v.split_whitespace().next().unwrap_or("");
    let opt = |name: &str| -> Option<String> {
        let i = v.find(&format!("{name}="))?;
        let rest = &v[i + name.len() + 1..];
        if let Some(q) = rest.strip_prefix('"') {
            q.find('"').map(|e| q[..e].to_string())
        } else {
            Some(rest.split([' ', ';']).next().unwrap_or("").to_string())
        }
    };
    match module.rsplit('.').next().unwrap_or("") {
        "PlainLoginModule" | "ScramLoginModule" => match (opt("username"), opt("password")) {
            (Some(u), Some(p)) => Ok(vec![("sasl.username".into(), u), ("sasl.password".into(), p)]),
            _ => Err("sasl.jaas.config: the login module needs username=\"…\" and password=\"…\"".into()),
        },
        "Krb5LoginModule" => {
            let mut out = Vec::new();
            if let Some(k) = opt("keyTab") {
                out.push(("sasl.kerberos.keytab".to_string(), k));
            }
            if let Some(p) = opt("principal") {
                out.push(("sasl.kerberos.principal".to_string(), p));
            }
            Ok(out)
        }
        "OAuthBearerLoginModule" => Err("sasl.jaas.config: OAUTHBEARER login modules are Java classes; use librdkafka's sasl.oauthbearer.* settings".into()),
        _ => Err("sasl.jaas.config: unsupported login module (supported: PlainLoginModule, ScramLoginModule, Krb5LoginModule)".into()),
    }
}

/// A finished librdkafka configuration plus the problems found building it.
pub struct ClientSettings {
    pub config: ClientConfig,
}

fn to_client_config(map: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in map {
        c.set(k, v);
    }
    c
}

/// Producer for source task `task` of `connector` (Connect's base layer, then `producer.*`, then
/// `producer.override.*`).
///
/// Where we differ from Connect 3.2: idempotence is on (Connect turns it off for old brokers;
/// librdkafka's idempotent producer keeps per-partition order with 5 requests in flight, instead of
/// Connect's 1), and `linger.ms` is 5 ms. Both can be overridden with `producer.*` keys.
pub fn producer_settings(
    worker: &WorkerConfig,
    connector: &ConnectorConfig,
    task: usize,
) -> Result<ClientSettings, Problems> {
    let forced = [
        ("acks", "all".to_string()),
        ("enable.idempotence", "true".to_string()),
        ("max.in.flight.requests.per.connection", "5".to_string()),
        ("delivery.timeout.ms", "2147483647".to_string()),
        ("linger.ms", "5".to_string()),
        (
            "client.id",
            format!("connector-producer-{}-{task}", connector.name),
        ),
    ];
    layered(
        worker,
        connector,
        &forced,
        ("producer.", &worker.producer),
        ("producer.override.", &connector.producer_override),
    )
}

/// Consumer for sink task `task` (group `connect-<name>`, auto-commit off, earliest).
pub fn consumer_settings(
    worker: &WorkerConfig,
    connector: &ConnectorConfig,
    task: usize,
) -> Result<ClientSettings, Problems> {
    let forced = [
        ("group.id", format!("connect-{}", connector.name)),
        (
            "client.id",
            format!("connector-consumer-{}-{task}", connector.name),
        ),
        ("enable.auto.commit", "false".to_string()),
        ("enable.auto.offset.store", "false".to_string()),
        ("auto.offset.reset", "earliest".to_string()),
    ];
    layered(
        worker,
        connector,
        &forced,
        ("consumer.", &worker.consumer),
        ("consumer.override.", &connector.consumer_override),
    )
}

/// Connect's precedence: `bootstrap.servers` and the forced settings, then the worker's prefixed keys,
/// then the connector's `*.override.*` keys.
fn layered(
    worker: &WorkerConfig,
    connector: &ConnectorConfig,
    forced: &[(&str, String)],
    (worker_prefix, worker_keys): (&str, &BTreeMap<String, String>),
    (override_prefix, override_keys): (&str, &BTreeMap<String, String>),
) -> Result<ClientSettings, Problems> {
    let mut problems = Problems::default();
    let mut m = BTreeMap::new();
    m.insert(
        "bootstrap.servers".to_string(),
        worker.bootstrap_servers.clone(),
    );
    for (k, v) in forced {
        m.insert(k.to_string(), v.clone());
    }
    m.extend(translate(
        &worker.file.display_name(),
        worker_prefix,
        worker_keys,
        &mut problems,
    ));
    m.extend(translate(
        &connector.file.display_name(),
        override_prefix,
        override_keys,
        &mut problems,
    ));
    finish(m, problems)
}

/// Producer for the sink's dead letter queue / feedback topic (`connector-dlq-producer-<conn>-<task>`).
pub fn dlq_producer_settings(
    worker: &WorkerConfig,
    connector: &ConnectorConfig,
    task: usize,
) -> Result<ClientSettings, Problems> {
    let mut s = producer_settings(worker, connector, task)?;
    s.config.set(
        "client.id",
        format!("connector-dlq-producer-{}-{task}", connector.name),
    );
    Ok(s)
}

/// The admin client of the start-up check: top-level worker keys, as in Connect.
pub fn admin_settings(worker: &WorkerConfig) -> Result<ClientSettings, Problems> {
    let mut problems = Problems::default();
    let mut m = BTreeMap::new();
    m.insert(
        "bootstrap.servers".to_string(),
        worker.bootstrap_servers.clone(),
    );
    let wf = worker.file.display_name();
    m.extend(translate(&wf, "", &worker.admin, &mut problems));
    finish(m, problems)
}

fn finish(m: BTreeMap<String, String>, problems: Problems) -> Result<ClientSettings, Problems> {
    if problems.is_empty() {
        Ok(ClientSettings {
            config: to_client_config(&m),
        })
    } else {
        Err(problems)
    }
}

/// librdkafka's own verdict on a configuration, without connecting: unknown keys and bad values.
fn librdkafka_check(file: &str, prefix: &str, config: &ClientConfig, problems: &mut Problems) {
    if let Err(e) = config.create_native_config() {
        let (key, msg) = match &e {
            rdkafka::error::KafkaError::ClientConfig(_, msg, key, _) => (key.clone(), msg.clone()),
            other => ("-".to_string(), other.to_string()),
        };
        problems.push(
            file,
            &format!("{prefix}{key}"),
            format!("rejected by librdkafka: {msg}"),
        );
    }
}

/// Offline checks of the clients a connector will create (used by `validate` and at start-up).
pub fn check_connector_clients(worker: &WorkerConfig, connector: &ConnectorConfig) -> Problems {
    let mut problems = Problems::default();
    let wf = worker.file.display_name();
    let (settings, prefix) = match connector.kind {
        super::ConnectorKind::Source => (producer_settings(worker, connector, 0), "producer."),
        super::ConnectorKind::Sink => (consumer_settings(worker, connector, 0), "consumer."),
    };
    match settings {
        Ok(s) => librdkafka_check(&wf, prefix, &s.config, &mut problems),
        Err(p) => problems.extend(p),
    }
    if connector.kind == super::ConnectorKind::Sink {
        if let Some(v) = worker.consumer.get("max.poll.records") {
            tracing::info!(
                "consumer.max.poll.records={v} is no longer needed: iotconnect sends cloud-to-device messages pipelined over one connection"
            );
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(props: &[(&str, &str)]) -> (BTreeMap<String, String>, Problems) {
        let m: BTreeMap<String, String> = props
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut p = Problems::default();
        let out = translate("w.properties", "producer.", &m, &mut p);
        (out, p)
    }

    #[test]
    fn passes_through_same_named_keys_and_renames_the_rest() {
        let (out, p) = t(&[
            ("linger.ms", "20"),
            ("sasl.mechanism", "PLAIN"),
            ("buffer.memory", "33554432"),
            (
                "key.serializer",
                "org.apache.kafka.common.serialization.ByteArraySerializer",
            ),
            ("max.request.size", "2000000"),
        ]);
        assert!(p.is_empty());
        assert_eq!(out["linger.ms"], "20");
        assert_eq!(out["sasl.mechanisms"], "PLAIN");
        assert_eq!(out["queue.buffering.max.kbytes"], "32768");
        assert_eq!(out["message.max.bytes"], "2000000");
        assert!(!out.contains_key("key.serializer"));
    }

    #[test]
    fn jaas_plain_and_kerberos() {
        let (out, p) = t(&[(
            "sasl.jaas.config",
            "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"$ConnectionString\" password=\"Endpoint=sb://x/;SharedAccessKey=k\";",
        )]);
        assert!(p.is_empty());
        assert_eq!(out["sasl.username"], "$ConnectionString");
        assert_eq!(out["sasl.password"], "Endpoint=sb://x/;SharedAccessKey=k");
        let (out, _) = t(&[(
            "sasl.jaas.config",
            "com.sun.security.auth.module.Krb5LoginModule required useKeyTab=true storeKey=true keyTab=\"/etc/kafka.keytab\" principal=\"kafka/edge@EXAMPLE.COM\";",
        )]);
        assert_eq!(out["sasl.kerberos.keytab"], "/etc/kafka.keytab");
        assert_eq!(out["sasl.kerberos.principal"], "kafka/edge@EXAMPLE.COM");
    }

    #[test]
    fn java_key_stores_are_refused_with_the_alternative() {
        let (_, p) = t(&[
            ("ssl.truststore.location", "/etc/ts.jks"),
            ("ssl.keystore.location", "/etc/ks.jks"),
        ]);
        let msgs: Vec<String> = p.0.iter().map(|x| x.to_string()).collect();
        assert_eq!(msgs.len(), 2);
        assert!(msgs[0].starts_with("w.properties:producer.ssl.keystore.location:"));
        assert!(msgs[1].starts_with("w.properties:producer.ssl.truststore.location:"));
        assert!(msgs[1].contains("ssl.ca.location"));
        let (out, p) = t(&[
            ("ssl.keystore.location", "/etc/ks.p12"),
            ("ssl.keystore.type", "PKCS12"),
        ]);
        assert!(p.is_empty());
        assert_eq!(out["ssl.keystore.location"], "/etc/ks.p12");
    }

    #[test]
    fn assignors_map_to_librdkafka_names() {
        let m: BTreeMap<String, String> = [(
            "partition.assignment.strategy".to_string(),
            "org.apache.kafka.clients.consumer.CooperativeStickyAssignor".to_string(),
        )]
        .into();
        let mut p = Problems::default();
        let out = translate("w", "consumer.", &m, &mut p);
        assert_eq!(out["partition.assignment.strategy"], "cooperative-sticky");
    }
}
