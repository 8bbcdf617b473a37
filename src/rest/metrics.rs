//! Prometheus metrics: the counterparts of Kafka Connect's source-task, sink-task and error metrics,
//! plus what Connect never had (per-partition hub lag, cloud-to-device outcomes, reconnects).
//!
//! One process-wide set, registered at first use; the code that does the work increments it.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

pub type Labels = Vec<(String, String)>;
pub type CounterFamily = Family<Labels, Counter>;
pub type GaugeFamily = Family<Labels, Gauge>;
pub type FloatGaugeFamily = Family<Labels, Gauge<f64, AtomicU64>>;

/// Labels for a task: `connector`, `task`.
pub fn task_labels(connector: &str, task: usize) -> Labels {
    vec![
        ("connector".to_string(), connector.to_string()),
        ("task".to_string(), task.to_string()),
    ]
}

pub struct Metrics {
    registry: Registry,
    pub source_record_poll: CounterFamily,
    pub source_record_write: CounterFamily,
    pub source_record_active: GaugeFamily,
    pub batch_size_max: GaugeFamily,
    pub offset_commit_success: CounterFamily,
    pub offset_commit_failure: CounterFamily,
    /// Unix time (seconds) of the last successful offset commit, per task.
    pub offset_commit_last_success: FloatGaugeFamily,
    pub offset_commit_seconds_since: FloatGaugeFamily,
    /// Per hub partition: last enqueued sequence number (from $management) minus last committed.
    pub partition_lag: GaugeFamily,
    pub partition_last_enqueued_sequence: GaugeFamily,
    pub partition_committed_sequence: GaugeFamily,
    /// Per hub partition (source stall watchdog, see source/stall.rs).
    pub partition_seconds_since_last_event: FloatGaugeFamily,
    pub partition_seconds_since_last_commit: FloatGaugeFamily,
    pub partition_stall_recoveries: CounterFamily,
    pub partition_stalled: GaugeFamily,
    pub partition_records_skipped: CounterFamily,
    pub sink_record_read: CounterFamily,
    pub sink_record_send: CounterFamily,
    pub c2d_sent: CounterFamily,
    pub c2d_accepted: CounterFamily,
    pub c2d_rejected: CounterFamily,
    pub c2d_throttled: CounterFamily,
    pub c2d_in_flight: GaugeFamily,
    pub dlq_produce: CounterFamily,
    pub record_errors: CounterFamily,
    pub reconnects: CounterFamily,
    pub task_running: GaugeFamily,
    /// Task runs that ended FAILED (error or panic); counted by the worker's supervisor.
    pub task_failures: CounterFamily,
    process_rss: Gauge,
    process_uptime: Gauge<f64, AtomicU64>,
    started: Instant,
    last_commit: Mutex<Vec<(Labels, f64)>>,
}

macro_rules! reg {
    ($r:expr, $name:expr, $help:expr, $m:expr) => {{
        let m = $m;
        $r.register($name, $help, m.clone());
        m
    }};
}

impl Metrics {
    fn new() -> Metrics {
        let mut r = Registry::with_prefix("iotconnect");
        Metrics {
            source_record_poll: reg!(
                r,
                "source_record_poll",
                "Records received from IoT Hub (Connect source-record-poll-total)",
                CounterFamily::default()
            ),
            source_record_write: reg!(
                r,
                "source_record_write",
                "Records acknowledged by Kafka (Connect source-record-write-total)",
                CounterFamily::default()
            ),
            source_record_active: reg!(
                r,
                "source_record_active_count",
                "Records sent to Kafka and not yet acknowledged",
                GaugeFamily::default()
            ),
            batch_size_max: reg!(
                r,
                "batch_size_max",
                "Largest batch handled by a task",
                GaugeFamily::default()
            ),
            offset_commit_success: reg!(
                r,
                "offset_commit_success",
                "Successful offset commits",
                CounterFamily::default()
            ),
            offset_commit_failure: reg!(
                r,
                "offset_commit_failure",
                "Failed offset commits",
                CounterFamily::default()
            ),
            offset_commit_last_success: reg!(
                r,
                "offset_commit_last_success_timestamp_seconds",
                "Unix time of the last successful offset commit",
                FloatGaugeFamily::default()
            ),
            offset_commit_seconds_since: reg!(
                r,
                "offset_commit_seconds_since_last_success",
                "Seconds since the last successful offset commit",
                FloatGaugeFamily::default()
            ),
            partition_lag: reg!(
                r,
                "source_partition_lag_events",
                "Hub partition: last enqueued sequence number minus last committed sequence number",
                GaugeFamily::default()
            ),
            partition_last_enqueued_sequence: reg!(
                r,
                "source_partition_last_enqueued_sequence_number",
                "Hub partition: last enqueued sequence number ($management)",
                GaugeFamily::default()
            ),
            partition_committed_sequence: reg!(
                r,
                "source_partition_committed_sequence_number",
                "Hub partition: sequence number of the last committed event",
                GaugeFamily::default()
            ),
            partition_seconds_since_last_event: reg!(
                r,
                "source_partition_seconds_since_last_event",
                "Hub partition: seconds since its receiver last delivered an event",
                FloatGaugeFamily::default()
            ),
            partition_seconds_since_last_commit: reg!(
                r,
                "source_partition_seconds_since_last_commit",
                "Hub partition: seconds since an offset of it was last committed",
                FloatGaugeFamily::default()
            ),
            partition_stall_recoveries: reg!(
                r,
                "source_partition_stall_recoveries",
                "Hub partition: links torn down and reopened by the stall watchdog",
                CounterFamily::default()
            ),
            partition_stalled: reg!(
                r,
                "source_partition_stalled",
                "Hub partition: 1 while it stays stalled after a recovery attempt",
                GaugeFamily::default()
            ),
            partition_records_skipped: reg!(
                r,
                "source_partition_records_skipped",
                "Hub partition: records skipped as record errors under errors.tolerance=all",
                CounterFamily::default()
            ),
            sink_record_read: reg!(
                r,
                "sink_record_read",
                "Records consumed from Kafka (Connect sink-record-read-total)",
                CounterFamily::default()
            ),
            sink_record_send: reg!(
                r,
                "sink_record_send",
                "Records turned into cloud-to-device messages (Connect sink-record-send-total)",
                CounterFamily::default()
            ),
            c2d_sent: reg!(
                r,
                "c2d_sent",
                "Cloud-to-device messages sent (every attempt)",
                CounterFamily::default()
            ),
            c2d_accepted: reg!(
                r,
                "c2d_accepted",
                "Cloud-to-device messages accepted by IoT Hub",
                CounterFamily::default()
            ),
            c2d_rejected: reg!(
                r,
                "c2d_rejected",
                "Cloud-to-device messages rejected by IoT Hub, by reason",
                CounterFamily::default()
            ),
            c2d_throttled: reg!(
                r,
                "c2d_throttled",
                "Cloud-to-device sends throttled by IoT Hub (retried)",
                CounterFamily::default()
            ),
            c2d_in_flight: reg!(
                r,
                "c2d_in_flight",
                "Cloud-to-device messages sent and not yet settled",
                GaugeFamily::default()
            ),
            dlq_produce: reg!(
                r,
                "deadletterqueue_produce_requests",
                "Records written to the dead letter queue",
                CounterFamily::default()
            ),
            record_errors: reg!(
                r,
                "total_record_errors",
                "Records that failed (errors.tolerance)",
                CounterFamily::default()
            ),
            reconnects: reg!(
                r,
                "reconnects",
                "Reconnections to IoT Hub after a connection or link loss",
                CounterFamily::default()
            ),
            task_running: reg!(
                r,
                "task_running",
                "1 when the task is RUNNING",
                GaugeFamily::default()
            ),
            task_failures: reg!(
                r,
                "task_failures",
                "Task runs that ended FAILED (an error or a panic)",
                CounterFamily::default()
            ),
            process_rss: reg!(
                r,
                "process_resident_memory_bytes",
                "Resident set size of the process",
                Gauge::default()
            ),
            process_uptime: reg!(
                r,
                "process_uptime_seconds",
                "Seconds since the process started",
                Gauge::<f64, AtomicU64>::default()
            ),
            started: Instant::now(),
            last_commit: Mutex::new(Vec::new()),
            registry: r,
        }
    }

    /// Makes every per-task series of a task exist from its start (at 0), so that a counter that has
    /// not counted yet (no rejection, no throttling) is still exposed and `rate()` works from the start.
    pub fn declare_task(&self, labels: &Labels, sink: bool) {
        let counters: &[&CounterFamily] = if sink {
            &[
                &self.sink_record_read,
                &self.sink_record_send,
                &self.c2d_sent,
                &self.c2d_accepted,
                &self.c2d_rejected,
                &self.c2d_throttled,
                &self.dlq_produce,
            ]
        } else {
            &[&self.source_record_poll, &self.source_record_write]
        };
        for c in counters
            .iter()
            .chain([&&self.offset_commit_success, &&self.offset_commit_failure])
            .chain([&&self.record_errors, &&self.reconnects])
        {
            let _ = c.get_or_create(labels);
        }
        if sink {
            let _ = self.c2d_in_flight.get_or_create(labels);
        } else {
            let _ = self.source_record_active.get_or_create(labels);
        }
    }

    /// Records a successful commit for a task.
    pub fn commit_succeeded(&self, labels: &Labels) {
        self.offset_commit_success.get_or_create(labels).inc();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.offset_commit_last_success
            .get_or_create(labels)
            .set(now);
        let mut last = self.last_commit.lock().unwrap();
        match last.iter_mut().find(|(l, _)| l == labels) {
            Some(entry) => entry.1 = now,
            None => last.push((labels.clone(), now)),
        }
    }

    /// The text exposition format, refreshed process gauges included.
    pub fn render(&self) -> String {
        self.process_rss.set(rss_bytes() as i64);
        self.process_uptime
            .set(self.started.elapsed().as_secs_f64());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        // "time since last commit" derived at scrape time from the last-success timestamps.
        for (labels, ts) in self.last_commit.lock().unwrap().iter() {
            self.offset_commit_seconds_since
                .get_or_create(labels)
                .set((now - ts).max(0.0));
        }
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Resident set size from /proc/self/statm (pages × page size).
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * if page > 0 { page as u64 } else { 4096 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_text_format_with_derived_gauges() {
        let l = task_labels("src", 0);
        METRICS.source_record_poll.get_or_create(&l).inc_by(3);
        METRICS.commit_succeeded(&l);
        let text = METRICS.render();
        assert!(
            text.contains("iotconnect_source_record_poll_total{connector=\"src\",task=\"0\"} 3"),
            "{text}"
        );
        assert!(
            text.contains(
                "iotconnect_offset_commit_seconds_since_last_success{connector=\"src\",task=\"0\"}"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE iotconnect_process_resident_memory_bytes gauge"));
        assert!(text.trim_end().ends_with("# EOF"));
        assert!(rss_bytes() > 0);
    }
}
