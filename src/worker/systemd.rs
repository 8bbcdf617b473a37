//! systemd `Type=notify` support: READY=1 once the tasks run, STATUS= summaries, WATCHDOG=1 pings
//! when `WatchdogSec=` is set, STOPPING=1 at shutdown. Without `NOTIFY_SOCKET` every call is a no-op.

use sd_notify::NotifyState;
use std::time::Duration;
use tracing::debug;

use super::runtime::Worker;
use super::task::TaskState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        debug!("sd_notify failed: {e}");
    }
}

/// One-line summary, e.g. `2 connectors, 2/2 tasks running`.
pub fn summary(worker: &Worker) -> String {
    let (mut running, mut total, mut failed) = (0, 0, 0);
    for c in &worker.connectors {
        for t in &c.tasks {
            total += 1;
            match t.state() {
                TaskState::Running | TaskState::Paused => running += 1,
                TaskState::Failed(_) => failed += 1,
                _ => {}
            }
        }
    }
    let mut s = format!(
        "{} connector(s), {running}/{total} task(s) running",
        worker.connectors.len()
    );
    if failed > 0 {
        s.push_str(&format!(", {failed} FAILED"));
    }
    s
}

/// READY=1 plus a status line (`status()`, e.g. [`summary`] of the running worker); starts the
/// watchdog/status pinger when systemd asked for one.
pub fn ready<S>(status: S)
where
    S: Fn() -> String + Send + Sync + 'static,
{
    let summary = status;
    let status = summary();
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
    let usec = watchdog_usec();
    let watchdog = usec.is_some();
    let usec = usec.unwrap_or(0);
    let period = if watchdog {
        Duration::from_micros(usec / 2).max(Duration::from_millis(100))
    } else {
        Duration::from_secs(10)
    };
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let status = summary();
            if watchdog {
                send(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
            } else {
                send(&[NotifyState::Status(&status)]);
            }
        }
    });
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// libsystemd's `sd_watchdog_enabled` rule: `WATCHDOG_USEC` is set and `WATCHDOG_PID` is either
/// absent or our pid. (The sd-notify crate insists on `WATCHDOG_PID`, which systemd always sets but
/// supervisors other than systemd may not.)
fn watchdog_usec() -> Option<u64> {
    let usec = std::env::var("WATCHDOG_USEC")
        .ok()?
        .parse::<u64>()
        .ok()
        .filter(|u| *u > 0)?;
    match std::env::var("WATCHDOG_PID") {
        Ok(pid) if pid.parse::<u32>().ok() != Some(std::process::id()) => None,
        _ => Some(usec),
    }
}
