//! What the benchmark reads from and sets on the machine: CPU placement (`sched_setaffinity` on
//! every thread of this process, so children and threads created later inherit it), CPU time of
//! this process (`getrusage(RUSAGE_SELF)`: user + sys of all its threads, children excluded),
//! resident memory and the load average.
//!
//! Invariant: a child process started while this process is pinned to a core set inherits that set
//! (the broker through its start script, the emulator child), so "pin to core 0, start the
//! services, pin to core 1, measure" places the services and the measured code on different cores.

use std::time::Duration;

/// The online cores of this machine (not of this process's affinity mask, which pinning narrows).
pub fn cores() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as usize
    } else {
        1
    }
}

/// Resets this process's peak RSS (VmHWM) to its current RSS (`/proc/self/clear_refs`, value 5), so
/// a phase's peak is its own.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Places every current thread of this process on `cores` (threads and processes started later
/// by these threads inherit it).
pub fn pin_self(cores: &[usize]) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set and CPU_SET only writes inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cores {
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    let mut done = 0;
    for entry in std::fs::read_dir("/proc/self/task")? {
        let Some(tid) = entry?
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: a valid set of the size passed; a thread that ended meanwhile gives ESRCH.
        let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) };
        if rc == 0 {
            done += 1;
        } else {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(e);
            }
        }
    }
    if done == 0 {
        return Err(std::io::Error::other(
            "no thread of this process was placed",
        ));
    }
    Ok(())
}

/// All cores of the machine.
pub fn all_cores() -> Vec<usize> {
    (0..cores()).collect()
}

/// User + system CPU time of this process so far (all threads; children excluded).
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn status_kb(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
}

/// Peak resident set size of this process (VmHWM), MB.
pub fn peak_rss_mb() -> f64 {
    status_kb("VmHWM:") / 1024.0
}

/// Current resident set size of this process (VmRSS), MB.
pub fn rss_mb() -> f64 {
    status_kb("VmRSS:") / 1024.0
}

/// The 1-minute load average (the machine is shared: this says how noisy a figure is).
pub fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// One measured phase: wall time, CPU time of this process and the machine's load.
#[derive(Clone, Copy, Debug, Default)]
pub struct Measured {
    pub events: u64,
    pub wall: Duration,
    pub cpu: Duration,
    /// 1-minute load average at the end of the phase.
    pub load: f64,
}

impl Measured {
    pub fn per_s(&self) -> f64 {
        self.events as f64 / self.wall.as_secs_f64().max(1e-9)
    }
    pub fn cpu_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.events.max(1) as f64
    }
}

/// Starts a measurement of this process's wall and CPU time.
pub struct Meter {
    t0: std::time::Instant,
    cpu0: Duration,
}

impl Meter {
    pub fn start() -> Meter {
        Meter {
            t0: std::time::Instant::now(),
            cpu0: cpu_time(),
        }
    }
    pub fn stop(self, events: u64) -> Measured {
        Measured {
            events,
            wall: self.t0.elapsed(),
            cpu: cpu_time().saturating_sub(self.cpu0),
            load: load1(),
        }
    }
}
