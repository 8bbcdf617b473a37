//! Test-only: compiles tests/java/JavaCheck.java with the installed JDK and runs it.

#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Lowercase hex of `b` (how the Java checks print bytes).
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A small deterministic generator (xorshift64*), so failures are reproducible.
pub struct Gen(pub u64);

impl Gen {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

pub struct Jdk {
    classes: tempfile::TempDir,
}

impl Jdk {
    /// `None` (with a notice on stderr) when no JDK is installed.
    pub fn compile() -> Option<Jdk> {
        let javac_ok = Command::new("javac")
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !javac_ok {
            eprintln!("NOTICE: javac not found; skipping the cross-check against the JDK");
            return None;
        }
        let classes = tempfile::tempdir().expect("temp dir");
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("java/JavaCheck.java");
        let out = Command::new("javac")
            .arg("-d")
            .arg(classes.path())
            .arg(&src)
            .output()
            .expect("run javac");
        assert!(
            out.status.success(),
            "javac failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(Jdk { classes })
    }

    /// Compiles JavaCheck and JacksonCheck against Debian's Jackson jars
    /// (`libjackson2-databind-java`); `None` with a notice when the JDK or the jars are missing.
    pub fn compile_with_jackson() -> Option<Jdk> {
        let jars: Vec<PathBuf> = [
            "jackson-core.jar",
            "jackson-databind.jar",
            "jackson-annotations.jar",
        ]
        .iter()
        .map(|j| PathBuf::from("/usr/share/java").join(j))
        .collect();
        if !jars.iter().all(|j| j.exists()) {
            eprintln!("NOTICE: Jackson jars not found in /usr/share/java (apt-get install libjackson2-databind-java); skipping the Jackson cross-check");
            return None;
        }
        let jdk = Jdk::compile()?;
        let classpath = Self::classpath_of(&jdk, &jars);
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("java/JacksonCheck.java");
        let out = Command::new("javac")
            .arg("-cp")
            .arg(&classpath)
            .arg("-d")
            .arg(jdk.classes.path())
            .arg(&src)
            .output()
            .expect("run javac");
        assert!(
            out.status.success(),
            "javac failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(Jdk {
            classes: jdk.classes,
        })
    }

    fn classpath_of(jdk: &Jdk, jars: &[PathBuf]) -> String {
        let mut parts = vec![jdk.classes.path().display().to_string()];
        parts.extend(jars.iter().map(|j| j.display().to_string()));
        parts.join(":")
    }

    /// Runs `JavaCheck <args>` with `input` on stdin (JVM time zone UTC); returns stdout.
    pub fn run(&self, args: &[&str], input: &str) -> String {
        self.run_class("JavaCheck", args, input)
    }

    /// Runs `JacksonCheck <args>` (needs [`Jdk::compile_with_jackson`]).
    pub fn run_jackson(&self, args: &[&str], input: &str) -> String {
        self.run_class("JacksonCheck", args, input)
    }

    fn run_class(&self, class: &str, args: &[&str], input: &str) -> String {
        let jars: Vec<PathBuf> = [
            "jackson-core.jar",
            "jackson-databind.jar",
            "jackson-annotations.jar",
        ]
        .iter()
        .map(|j| PathBuf::from("/usr/share/java").join(j))
        .collect();
        let classpath = Self::classpath_of(self, &jars);
        let mut child = Command::new("java")
            .arg("-Duser.timezone=UTC")
            .arg("-cp")
            .arg(classpath)
            .arg(class)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run java");
        let mut stdin = child.stdin.take().expect("stdin");
        let input = input.to_string();
        let writer = std::thread::spawn(move || {
            stdin.write_all(input.as_bytes()).expect("write to java");
        });
        let out = child.wait_with_output().expect("java output");
        writer.join().expect("writer thread");
        assert!(
            out.status.success(),
            "JavaCheck {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }
}
