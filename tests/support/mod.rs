//! Test support: a real Kafka-protocol broker per test binary, the `iotconnect` binary as a child
//! process, and small Kafka helpers. Everything binds to 127.0.0.1 on free ports and is cleaned up:
//! child processes get SIGTERM when the test process ends (PR_SET_PDEATHSIG) or when dropped.
#![allow(dead_code)]

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The repository root (this package is its `tests/` directory).
pub const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Makes `cmd`'s child receive SIGTERM when the thread that spawned it ends.
fn die_with_parent(cmd: &mut Command) {
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Waits until `cond` holds, polling every 50 ms; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub struct Broker {
    pub bootstrap: String,
    pub data_dir: PathBuf,
    pub pid: u32,
}

fn broker_binary() -> PathBuf {
    if let Ok(p) = std::env::var("KAFKA_BROKER_BIN") {
        return PathBuf::from(p);
    }
    let out = Command::new(format!("{REPO}/scripts/kafka-broker.sh"))
        .arg("bin")
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/kafka-broker.sh bin");
    assert!(out.status.success(), "scripts/kafka-broker.sh bin failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The broker of this test binary (SQLite storage), started on first use.
pub fn broker() -> &'static Broker {
    static BROKER: OnceLock<Broker> = OnceLock::new();
    BROKER.get_or_init(|| start_broker("sqlite://broker.db"))
}

/// Starts a broker from a thread that lives as long as the process, so PR_SET_PDEATHSIG fires only
/// when the test process exits.
pub fn start_broker(storage: &str) -> Broker {
    let bin = broker_binary();
    let port = free_port();
    let data_dir = std::env::temp_dir().join(format!(
        "iotconnect-test-broker-{}-{port}",
        std::process::id()
    ));
    std::fs::create_dir_all(&data_dir).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let dir = data_dir.clone();
    let storage = storage.to_string();
    std::thread::spawn(move || {
        let log = std::fs::File::create(dir.join("broker.log")).unwrap();
        let mut cmd = Command::new(&bin);
        cmd.current_dir(&dir)
            .env_remove("STORAGE_ENGINE")
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://127.0.0.1:{port}"),
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{port}"),
                "--storage-engine",
                &storage,
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().expect("start the broker");
        tx.send(child.id()).unwrap();
        let _ = child.wait();
        // Remove the data once the broker is gone (normally at process exit, when nobody waits).
        let _ = std::fs::remove_dir_all(&dir);
    });
    let pid = rx.recv().unwrap();
    let bootstrap = format!("127.0.0.1:{port}");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("log_level", "3")
        .create()
        .unwrap();
    wait_until(
        "the broker to answer Metadata",
        Duration::from_secs(30),
        || {
            consumer
                .fetch_metadata(None, Duration::from_millis(500))
                .is_ok()
        },
    );
    Broker {
        bootstrap,
        data_dir,
        pid,
    }
}

/// Creates a topic with `partitions` partitions and waits until its metadata shows them.
pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let res = rt
        .block_on(admin.create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .unwrap();
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    wait_until(
        &format!("topic {topic} in metadata"),
        Duration::from_secs(10),
        || {
            consumer
                .fetch_metadata(Some(topic), Duration::from_secs(2))
                .map(|m| {
                    m.topics()
                        .first()
                        .is_some_and(|t| t.partitions().len() == partitions as usize)
                })
                .unwrap_or(false)
        },
    );
}

/// A unique topic name for one test.
pub fn unique(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp: Option<i64>,
}

/// Reads a topic from the beginning of every partition until `n` records arrived (or panics after
/// `timeout`). Reads at most `n` and returns them in partition/offset order per partition.
pub fn read_topic(bootstrap: &str, topic: &str, n: usize, timeout: Duration) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < n {
        if Instant::now() > deadline {
            panic!(
                "read {} of {n} records from {topic} within {timeout:?}",
                out.len()
            );
        }
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            out.push(Record {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(|k| k.to_vec()),
                value: m.payload().map(|v| v.to_vec()),
                headers: m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| (x.key.to_string(), x.value.map(|v| v.to_vec())))
                            .collect()
                    })
                    .unwrap_or_default(),
                timestamp: m.timestamp().to_millis(),
            });
        }
    }
    out
}

/// The committed offset of `group` per partition 0..`partitions` of `topic` (-1: none).
pub fn try_committed_offsets(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> rdkafka::error::KafkaResult<Vec<i64>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let r = c.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(r.elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => -1,
        })
        .collect())
}

/// [`try_committed_offsets`]; panics when the broker does not answer.
pub fn committed_offsets(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    try_committed_offsets(bootstrap, group, topic, partitions)
        .unwrap_or_else(|e| panic!("committed offsets of {group} on {topic}: {e}"))
}

/// Number of records in a topic (sum of high watermarks; SQLite storage reports them right).
pub fn topic_size(bootstrap: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    md.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            let (lo, hi) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .unwrap();
            hi - lo
        })
        .sum()
}

/// Produces records (key, value) and waits for every acknowledgement.
pub fn produce(bootstrap: &str, topic: &str, records: &[(Option<&str>, &[u8])]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for (k, v) in records {
            let mut r = FutureRecord::to(topic).payload(*v);
            if let Some(k) = k {
                r = r.key(*k);
            }
            producer
                .send(r, Duration::from_secs(10))
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    });
}

pub fn write_file(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

/// A test CA and a server certificate for 127.0.0.1 signed by it, written into a directory.
pub struct Pki {
    /// `ca.pem`
    pub ca: PathBuf,
    /// `server.pem`
    pub cert: PathBuf,
    /// `server.key`
    pub key: PathBuf,
    pub ca_pem: String,
    pub ca_der: rustls::pki_types::CertificateDer<'static>,
}

/// Generates a [`Pki`] into `dir` (fresh keys each call).
pub fn pki(dir: &Path) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "iotconnect test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let pki = Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        ca_pem: ca.pem(),
        ca_der: ca.der().clone(),
    };
    std::fs::write(&pki.ca, &pki.ca_pem).unwrap();
    std::fs::write(&pki.cert, cert.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    pki
}

/// Path of the `iotconnect` binary of this workspace (see [`workspace_bin`]).
pub fn iotconnect_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("iotconnect", "iotconnect"))
        .clone()
}

/// Path of the `iotconnect-emulator` binary of this workspace (see [`workspace_bin`]).
pub fn emulator_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("iotconnect-emulator", "iotconnect-emulator"))
        .clone()
}

/// Path of binary `bin` of workspace package `package`, next to the test binary's target directory
/// (`target/<profile>/`). Brought up to date there first (same profile; a no-op when fresh): a test
/// binary of this package is not rebuilt when only the product's sources change, so it must not run
/// a stale binary. Built together with this package (`-p iotconnect-tests`) so that dependency
/// features unify as in `cargo test --workspace` and the artifacts of that build are reused (alone,
/// `-p iotconnect` would compile fe2o3-amqp without `acceptor`, i.e. a second copy of the product).
/// Callers do this once per test binary.
fn workspace_bin(package: &str, bin: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> -> target/<profile>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile> directory")
        .to_path_buf();
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "iotconnect-tests",
        "-p",
        package,
        "--bin",
        bin,
    ]);
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd
        .current_dir(REPO)
        .status()
        .unwrap_or_else(|e| panic!("cargo build -p {package}: {e}"));
    assert!(status.success(), "building {bin} failed");
    let path = dir.join(bin);
    assert!(path.exists(), "{} missing", path.display());
    path
}

/// `iotconnect` running as a child process, its stderr collected line by line.
pub struct Process {
    child: Option<Child>,
    pub lines: Arc<Mutex<Vec<String>>>,
    pub stdout: Arc<Mutex<Vec<String>>>,
}

impl Process {
    pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Process {
        let mut cmd = Command::new(iotconnect_bin());
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().expect("spawn iotconnect");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let err = child.stderr.take().unwrap();
        let out = child.stdout.take().unwrap();
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if std::env::var_os("IOTCONNECT_TEST_ECHO").is_some() {
                    eprintln!("[child] {line}");
                }
                l.lock().unwrap().push(line);
            }
        });
        let o = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                o.lock().unwrap().push(line);
            }
        });
        Process {
            child: Some(child),
            lines,
            stdout,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits until a stderr line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self
                .lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(needle))
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "no log line containing {needle:?} within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` (e.g. libc::SIGTERM) to the process.
    pub fn signal(&self, signal: i32) {
        unsafe {
            libc::kill(self.pid() as i32, signal);
        }
    }

    /// Waits for the exit status (panics after `timeout`). Returns the exit code (None if signalled).
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                panic!(
                    "process did not exit within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM and wait for the exit code.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        self.signal(libc::SIGTERM);
        self.wait(timeout)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if c.try_wait().ok().flatten().is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A systemd notification socket (`NOTIFY_SOCKET`) for one worker process: collects what the
/// worker sends (`READY=1`, `STATUS=…`, `WATCHDOG=1`, `STOPPING=1`), one datagram a line.
pub struct NotifySocket {
    pub path: PathBuf,
    sock: std::os::unix::net::UnixDatagram,
    pub seen: String,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    pub fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        NotifySocket {
            path,
            sock,
            seen: String::new(),
            _dir: dir,
        }
    }

    /// `("NOTIFY_SOCKET", path)` for [`Process::spawn`].
    pub fn env(&self) -> (&'static str, &str) {
        ("NOTIFY_SOCKET", self.path.to_str().unwrap())
    }

    /// Receives until what was received contains `needle`; panics after `timeout`.
    pub fn expect(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while !self.seen.contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle} in notifications: {}",
                self.seen
            );
            if let Ok(n) = self.sock.recv(&mut buf) {
                self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                self.seen.push('\n');
            }
        }
    }
}
