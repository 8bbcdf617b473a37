//! `iotconnect status`: a human view of a running worker, read from its REST API (`/`,
//! `/connectors?expand=status&expand=info`) and its Prometheus `/metrics`: connectors, tasks,
//! per-partition position and lag, age of the last event and of the last commit, C2D in flight.
//!
//! Exit codes: 0 every connector and task is healthy, 1 a connector or task is FAILED, 2 the worker
//! could not be asked (unreachable, refused credentials, unexpected answer).

use super::client::Endpoint;
use crate::config::Secret;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;

pub const EXIT_FAILED_TASK: u8 = 1;
pub const EXIT_UNREACHABLE: u8 = 2;

/// Environment variable holding the REST password when `--user` names only the user.
pub const PASSWORD_ENV: &str = "IOTCONNECT_REST_PASSWORD";

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The worker's REST listener.
    #[arg(long, default_value = "http://127.0.0.1:8083")]
    pub url: String,
    /// Basic credentials, `USER` (password from $IOTCONNECT_REST_PASSWORD) or `USER:PASSWORD`.
    #[arg(long)]
    pub user: Option<String>,
    /// Seconds to wait for each answer.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
}

/// One sample of the text exposition format.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses Prometheus/OpenMetrics text (samples only; comments skipped; malformed lines ignored).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_sample)
        .collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => (&line[..i], &line[i..]),
        None => return None,
    };
    let mut labels = BTreeMap::new();
    let rest = if let Some(r) = rest.strip_prefix('{') {
        let end = r.find('}')?;
        for pair in split_labels(&r[..end]) {
            let (k, v) = pair.split_once('=')?;
            labels.insert(
                k.trim().to_string(),
                unescape({
                    let v = v.trim();
                    v.strip_prefix('"')
                        .and_then(|x| x.strip_suffix('"'))
                        .unwrap_or(v)
                }),
            );
        }
        &r[end + 1..]
    } else {
        rest
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Label value escapes of the exposition format: `\\`, `\"`, `\n`.
fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(x) => out.push(x),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Splits `a="x",b="y,z"` at the commas outside quotes.
fn split_labels(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

struct Metrics(Vec<Sample>);

impl Metrics {
    fn get(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        self.0
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                want.iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .reduce(|a, b| a + b)
    }

    /// Label values of `label` among samples of `name` for a connector.
    fn values_of(&self, name: &str, connector: &str, label: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .0
            .iter()
            .filter(|s| {
                s.name == name && s.labels.get("connector").map(String::as_str) == Some(connector)
            })
            .filter_map(|s| s.labels.get(label).cloned())
            .collect();
        v.sort_by_key(|p| (p.parse::<u64>().unwrap_or(u64::MAX), p.clone()));
        v.dedup();
        v
    }
}

/// `3s`, `4m05s`, `2h03m`.
pub fn age(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "-".into();
    }
    let s = seconds.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn num(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x}"))
}

/// Runs `iotconnect status`, writing the view to `out`; returns the exit code.
pub fn run(args: &StatusArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    match view(args, out) {
        Ok(failed) => {
            if failed {
                EXIT_FAILED_TASK
            } else {
                0
            }
        }
        Err(e) => {
            let _ = writeln!(err, "iotconnect status: {e:#}");
            EXIT_UNREACHABLE
        }
    }
}

fn endpoint(args: &StatusArgs) -> anyhow::Result<Endpoint> {
    let mut ep = Endpoint::parse(&args.url)?;
    ep.timeout = std::time::Duration::from_secs(args.timeout.max(1));
    ep.credentials = match &args.user {
        None => None,
        Some(u) if u.contains(':') => Some(Secret::new(u.clone())),
        Some(u) => {
            let pass = std::env::var(PASSWORD_ENV).map_err(|_| {
                anyhow::anyhow!(
                    "--user {u} without a password: give USER:PASSWORD or set {PASSWORD_ENV}"
                )
            })?;
            Some(Secret::new(format!("{u}:{pass}")))
        }
    };
    Ok(ep)
}

fn get_json(ep: &Endpoint, path: &str) -> anyhow::Result<Value> {
    let (code, body) = ep.get(path)?;
    if code != 200 {
        let msg = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| body.chars().take(200).collect());
        anyhow::bail!("GET {path} answered {code}: {msg}");
    }
    serde_json::from_str(&body).map_err(|e| anyhow::anyhow!("GET {path}: not JSON: {e}"))
}

/// Writes the view; returns whether anything is FAILED.
fn view(args: &StatusArgs, out: &mut dyn Write) -> anyhow::Result<bool> {
    let ep = endpoint(args)?;
    let root = get_json(&ep, "/")?;
    let connectors = get_json(&ep, "/connectors?expand=status&expand=info")?;
    let (code, text) = ep.get("/metrics")?;
    let metrics = Metrics(if code == 200 {
        parse_metrics(&text)
    } else {
        Vec::new()
    });
    let mut failed = false;
    writeln!(
        out,
        "worker {} at {}: iotconnect {}, Kafka cluster {}, up {}, RSS {}",
        connectors
            .as_object()
            .and_then(|m| m.values().next())
            .and_then(|c| c["status"]["connector"]["worker_id"].as_str())
            .unwrap_or("-"),
        args.url,
        root["version"].as_str().unwrap_or("?"),
        root["kafka_cluster_id"].as_str().unwrap_or("?"),
        metrics
            .get("iotconnect_process_uptime_seconds", &[])
            .map_or("-".into(), age),
        metrics
            .get("iotconnect_process_resident_memory_bytes", &[])
            .map_or("-".into(), |b| format!("{:.1} MB", b / 1e6)),
    )?;
    let Some(map) = connectors.as_object() else {
        anyhow::bail!("GET /connectors?expand=status did not answer a JSON object");
    };
    if map.is_empty() {
        writeln!(out, "no connectors")?;
    }
    for (name, c) in map {
        let st = &c["status"];
        let kind = st["type"].as_str().unwrap_or("?");
        let state = st["connector"]["state"].as_str().unwrap_or("?");
        failed |= state == "FAILED";
        writeln!(out, "\n{name} ({kind}) {state}")?;
        for t in st["tasks"].as_array().into_iter().flatten() {
            let id = t["id"].as_u64().unwrap_or(0).to_string();
            let tstate = t["state"].as_str().unwrap_or("?");
            failed |= tstate == "FAILED";
            let labels = [("connector", name.as_str()), ("task", id.as_str())];
            let mut line = format!(
                "  task {id}  {tstate}  last commit {} ago",
                metrics
                    .get(
                        "iotconnect_offset_commit_seconds_since_last_success",
                        &labels
                    )
                    .map_or("-".into(), age)
            );
            if kind == "sink" {
                line.push_str(&format!(
                    "  C2D in flight {}  sent {}  accepted {}  rejected {}  throttled {}",
                    num(metrics.get("iotconnect_c2d_in_flight", &labels)),
                    num(metrics.get("iotconnect_c2d_sent_total", &labels)),
                    num(metrics.get("iotconnect_c2d_accepted_total", &labels)),
                    num(metrics.get("iotconnect_c2d_rejected_total", &labels)),
                    num(metrics.get("iotconnect_c2d_throttled_total", &labels)),
                ));
            } else {
                line.push_str(&format!(
                    "  records polled {}  written {}",
                    num(metrics.get("iotconnect_source_record_poll_total", &labels)),
                    num(metrics.get("iotconnect_source_record_write_total", &labels)),
                ));
            }
            writeln!(out, "{line}")?;
            if let Some(trace) = t["trace"].as_str() {
                let first = trace.lines().next().unwrap_or("");
                writeln!(out, "    error: {first}")?;
            }
        }
        if kind == "source" {
            let parts = metrics.values_of(
                "iotconnect_source_partition_committed_sequence_number",
                name,
                "partition",
            );
            if !parts.is_empty() {
                writeln!(
                    out,
                    "  {:<10} {:>14} {:>14} {:>10} {:>11} {:>12}",
                    "partition",
                    "committed seq",
                    "last enqueued",
                    "lag",
                    "last event",
                    "last commit"
                )?;
            }
            for p in parts {
                let l = [("connector", name.as_str()), ("partition", p.as_str())];
                let seq = |n: &str| {
                    metrics.get(n, &l).map_or("-".into(), |v| {
                        if v < 0.0 {
                            "none".into()
                        } else {
                            format!("{v}")
                        }
                    })
                };
                writeln!(
                    out,
                    "  {:<10} {:>14} {:>14} {:>10} {:>11} {:>12}",
                    p,
                    seq("iotconnect_source_partition_committed_sequence_number"),
                    seq("iotconnect_source_partition_last_enqueued_sequence_number"),
                    num(metrics.get("iotconnect_source_partition_lag_events", &l)),
                    metrics
                        .get("iotconnect_source_partition_seconds_since_last_event", &l)
                        .map_or("-".into(), |s| format!("{} ago", age(s))),
                    metrics
                        .get("iotconnect_source_partition_seconds_since_last_commit", &l)
                        .map_or("-".into(), |s| format!("{} ago", age(s))),
                )?;
            }
        }
    }
    Ok(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_exposition_format() {
        let s = parse_metrics(
            "# TYPE x counter\nx_total{connector=\"a,b\",task=\"0\"} 3\nup 1\nbad line\ny{q=\"\\\"\"} 2.5\n# EOF\n",
        );
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].labels["connector"], "a,b");
        assert_eq!(s[0].value, 3.0);
        assert_eq!(s[1].name, "up");
        assert_eq!(s[2].labels["q"], "\"");
    }

    #[test]
    fn ages() {
        assert_eq!(age(3.4), "3s");
        assert_eq!(age(65.0), "1m05s");
        assert_eq!(age(7380.0), "2h03m");
        assert_eq!(age(f64::NAN), "-");
    }
}
