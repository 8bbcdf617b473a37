//! SIGTERM / SIGINT stop the worker gracefully; a second SIGINT exits at once (safe: nothing is
//! committed before it was delivered); SIGHUP re-reads the log level from `IOTCONNECT_LOG`.

use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

/// Returns at the first SIGTERM or SIGINT. Installs the SIGHUP and second-SIGINT handlers.
pub async fn wait_for_shutdown() {
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM received, stopping"); break; }
            _ = int.recv() => { info!("SIGINT received, stopping (press Ctrl-C again to exit at once)"); break; }
            _ = hup.recv() => reload_log_level(),
        }
    }
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = int.recv() => {
                    warn!("second SIGINT: exiting now; uncommitted positions will be re-read after restart");
                    std::process::exit(130);
                }
                _ = hup.recv() => reload_log_level(),
            }
        }
    });
}

fn reload_log_level() {
    let spec = super::logging::filter_from_env();
    match super::logging::set_filter(&spec) {
        Ok(()) => info!("SIGHUP: log level set to {spec}"),
        Err(e) => warn!("SIGHUP: cannot apply log level {spec}: {e}"),
    }
}
