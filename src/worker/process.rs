//! What both worker modes (`standalone`, `distributed`) do the same way as a process: the tokio
//! runtime, Connect's exit codes, how a failed start step is logged, the worker's configuration dump,
//! and the wait for SIGTERM/SIGINT with systemd's READY/STOPPING around it.
//!
//! Exit codes (Connect's, kafka-connect.md §10): 1 usage (clap), [`EXIT_INIT`] 2 an error before the
//! worker runs (invalid worker file, Kafka unreachable, REST port taken), [`EXIT_CONNECTOR`] 3 a
//! connector could not be created (or its offsets are unreadable), [`EXIT_STOP_FAILED`] 4 the stop was
//! not clean (a task's final run failed, or its final offsets were not stored). A start step that
//! fails logs its error chain once, then Connect's closing line, then exits with its code: every
//! start step goes through [`Step`] so the wording and the code never drift apart between the modes.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;
use tracing::{error, info};

pub const EXIT_INIT: u8 = 2;
pub const EXIT_CONNECTOR: u8 = 3;
pub const EXIT_STOP_FAILED: u8 = 4;

/// Runs a worker mode's body on a multi-threaded runtime and returns its exit code.
pub fn block_on<F>(body: F) -> ExitCode
where
    F: Future<Output = ExitCode>,
{
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return ExitCode::from(EXIT_INIT);
        }
    };
    let code = rt.block_on(body);
    // Do not wait for blocking librdkafka threads that are still draining.
    rt.shutdown_timeout(Duration::from_secs(1));
    code
}

/// A start step's failure class: which closing line and exit code its error gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Before any connector exists: "Stopping due to error", exit 2.
    Init,
    /// Creating a connector (or its offsets): "Stopping after connector error", exit 3.
    Connector,
}

impl Step {
    pub fn code(self) -> ExitCode {
        ExitCode::from(match self {
            Step::Init => EXIT_INIT,
            Step::Connector => EXIT_CONNECTOR,
        })
    }

    /// Logs `e` (its whole chain) and the closing line; returns the exit code.
    pub fn fail(self, e: impl std::fmt::Display) -> ExitCode {
        error!("{e:#}");
        self.stop()
    }

    /// Logs only the closing line (the cause was logged already); returns the exit code.
    pub fn stop(self) -> ExitCode {
        match self {
            Step::Init => error!("Stopping due to error"),
            Step::Connector => error!("Stopping after connector error"),
        }
        self.code()
    }

    /// `Ok(v)`, or the failure logged and its exit code as the error (for `?` in a start sequence).
    pub fn check<T, E: std::fmt::Display>(self, r: Result<T, E>) -> Result<T, ExitCode> {
        r.map_err(|e| self.fail(e))
    }
}

/// Connect's start-up dump of the worker configuration (secrets already masked by the caller),
/// e.g. `StandaloneConfig values: \n\tbootstrap.servers = …`.
pub fn log_values(title: &str, masked: std::collections::BTreeMap<String, String>) {
    let mut values = format!("{title} values: ");
    for (k, v) in masked {
        values.push_str(&format!("\n\t{k} = {v}"));
    }
    info!("{values}");
}

/// Connect's "started" line, systemd READY=1 (with `status` as the unit's STATUS= line, refreshed
/// and used for watchdog pings), then waits for SIGTERM/SIGINT; logs "stopping" and tells systemd.
pub async fn run_until_signal<S>(status: S)
where
    S: Fn() -> String + Send + Sync + 'static,
{
    info!("Kafka Connect started");
    super::systemd::ready(status);
    super::signals::wait_for_shutdown().await;
    super::systemd::stopping();
    info!("Kafka Connect stopping");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_exit_with_connects_codes() {
        assert_eq!(Step::Init.code(), ExitCode::from(2));
        assert_eq!(Step::Connector.code(), ExitCode::from(3));
        let r: Result<(), ExitCode> = Step::Connector.check(Err("no such topic"));
        assert_eq!(r, Err(ExitCode::from(3)));
        assert_eq!(Step::Init.check::<u8, &str>(Ok(7)), Ok(7));
    }
}
