//! A cluster of separate `strata scheduler` and `strata executor` processes on loopback,
//! for tests and benchmarks.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A server process, killed when dropped.
pub struct Server {
    child: Child,
    /// The address it announced.
    pub addr: String,
    /// Its work folder, removed after it is killed.
    _work_dir: Option<tempfile::TempDir>,
}

impl Server {
    /// The process id.
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The work folder it was given, if any.
    #[allow(dead_code)]
    pub fn work_dir(&self) -> Option<&std::path::Path> {
        self._work_dir.as_ref().map(|d| d.path())
    }
}

/// CPU time (user and system) a process has used, in clock ticks (0 once it is gone).
#[allow(dead_code)]
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `strata ARGS` and wait for the line announcing its address (after `marker`).
pub fn start(args: &[&str], marker: &str) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .current_dir(ROOT)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start strata");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines
        .next()
        .and_then(|l| l.ok())
        .unwrap_or_else(|| panic!("strata {args:?} said nothing"));
    let addr = line
        .split_once(marker)
        .map(|(_, rest)| rest.split_whitespace().next().unwrap_or("").to_string())
        .unwrap_or_else(|| panic!("unexpected first line: {line}"));
    // Keep draining its log so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        addr,
        _work_dir: None,
    }
}

/// A scheduler and `n` executors with two slots each.
pub fn cluster(n: usize) -> (Server, Vec<Server>) {
    cluster_scheduling(n, "push")
}

/// A scheduler and `n` executors with two slots each, getting tasks by `scheduling`
/// (`push` or `pull`).
pub fn cluster_scheduling(n: usize, scheduling: &str) -> (Server, Vec<Server>) {
    cluster_with(n, scheduling, 2)
}

/// A scheduler and `n` executors with `slots` slots each, getting tasks by `scheduling`.
pub fn cluster_with(n: usize, scheduling: &str, slots: usize) -> (Server, Vec<Server>) {
    let slots = slots.to_string();
    let scheduler = start(
        &[
            "scheduler",
            "--bind",
            "127.0.0.1:0",
            "--scheduling",
            scheduling,
        ],
        "listening on df://",
    );
    let executors = (0..n)
        .map(|_| {
            let dir = tempfile::tempdir().unwrap();
            let mut executor = start(
                &[
                    "executor",
                    "--scheduler",
                    &scheduler.addr,
                    "--bind",
                    "127.0.0.1:0",
                    "--slots",
                    &slots,
                    "--scheduling",
                    scheduling,
                    "--work-dir",
                    dir.path().to_str().unwrap(),
                ],
                "serving shuffle data on ",
            );
            executor._work_dir = Some(dir);
            executor
        })
        .collect();
    (scheduler, executors)
}
