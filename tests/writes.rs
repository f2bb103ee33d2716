//! `COPY ... TO` output appears whole or not at all: a write that fails, runs out of room,
//! is cancelled with Ctrl-C or killed leaves an existing destination as it was.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A fresh directory for one test, holding a destination with old content.
fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strata-writes-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("out.csv"), "old\n").unwrap();
    dir
}

fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(strata::write::TEMPORARY_PREFIX))
        .collect()
}

fn destination(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("out.csv")).unwrap()
}

fn run(dir: &Path, sql: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["-q", "-c", sql])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Rows enough that writing them takes far longer than noticing the write has begun.
const LONG_COPY: &str = "COPY (SELECT x, repeat('y', 60) AS pad FROM generate_series(1, 200000000) AS t(x)) TO 'out.csv'";

fn spawn(dir: &Path, sql: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["-q", "-c", sql])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait until the temporary output has some bytes in it: the write is under way.
fn wait_for_partial_output(dir: &Path) {
    let started = Instant::now();
    loop {
        let written: u64 = temporaries(dir)
            .iter()
            .filter_map(|n| std::fs::metadata(dir.join(n)).ok())
            .map(|m| m.len())
            .sum();
        if written > 0 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the write never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_finished_copy_replaces_the_destination_and_leaves_nothing_else() {
    let dir = workdir("finished");
    let out = run(
        &dir,
        "COPY (SELECT x FROM generate_series(1, 3) AS t(x)) TO 'out.csv'",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(destination(&dir), "x\n1\n2\n3\n");
    assert!(temporaries(&dir).is_empty());

    // A partitioned directory: its files are moved in beside what is there.
    std::fs::create_dir_all(dir.join("parts")).unwrap();
    std::fs::write(dir.join("parts/keep.txt"), "kept").unwrap();
    let out = run(
        &dir,
        "COPY (SELECT x, x % 2 AS k FROM generate_series(1, 4) AS t(x)) TO 'parts/' STORED AS CSV PARTITIONED BY (k)",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.join("parts/keep.txt").exists());
    let partitions: Vec<_> = std::fs::read_dir(dir.join("parts"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("k="))
        .collect();
    assert_eq!(partitions.len(), 2, "{partitions:?}");
    assert!(temporaries(&dir).is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_copy_failing_midway_leaves_the_destination_as_it_was() {
    let dir = workdir("failing");
    // Division by zero at row 60000, after several batches have been written.
    let out = run(
        &dir,
        "COPY (SELECT x, 100 / (x - 60000) AS y FROM generate_series(1, 100000) AS t(x)) TO 'out.csv'",
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("Error: cannot write out.csv: ")
            && stderr.contains("out.csv is unchanged"),
        "{stderr}"
    );
    assert_eq!(destination(&dir), "old\n");
    assert!(temporaries(&dir).is_empty(), "{:?}", temporaries(&dir));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_full_disk_leaves_the_destination_as_it_was() {
    let dir = workdir("full");
    // A file size limit of 256 KiB stands in for a full disk: writing past it fails with
    // EFBIG (the signal it would send is ignored).
    let script = format!(
        "ulimit -f 256; trap '' XFSZ; exec '{}' -q -c \"{}\"",
        env!("CARGO_BIN_EXE_strata"),
        "COPY (SELECT x, repeat('y', 60) AS pad FROM generate_series(1, 100000) AS t(x)) TO 'out.csv'"
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .current_dir(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("could not be finished"), "{stderr}");
    assert_eq!(destination(&dir), "old\n");
    assert!(temporaries(&dir).is_empty(), "{:?}", temporaries(&dir));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ctrl_c_midway_leaves_the_destination_as_it_was() {
    let dir = workdir("interrupted");
    let child = spawn(&dir, LONG_COPY);
    wait_for_partial_output(&dir);
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert_eq!(destination(&dir), "old\n");
    assert!(temporaries(&dir).is_empty(), "{:?}", temporaries(&dir));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_killed_writer_leaves_the_destination_as_it_was() {
    let dir = workdir("killed");
    let mut child = spawn(&dir, LONG_COPY);
    wait_for_partial_output(&dir);
    child.kill().unwrap();
    child.wait().unwrap();
    // The temporary output of a killed process stays (hidden); the destination is intact.
    assert_eq!(destination(&dir), "old\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_insert_failing_midway_adds_no_rows() {
    let dir = workdir("insert");
    std::fs::create_dir_all(dir.join("tbl")).unwrap();
    let table = "CREATE EXTERNAL TABLE e (x BIGINT, y BIGINT) STORED AS CSV LOCATION 'tbl/'";
    let out = run(
        &dir,
        &format!(
            "{table}; INSERT INTO e VALUES (1, 2); INSERT INTO e SELECT x, 100 / (x - 60000) FROM generate_series(1, 100000) AS t(x)"
        ),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tbl is unchanged"), "{stderr}");
    let out = run(&dir, &format!("{table}; SELECT count(*) AS n FROM e"));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("| 1 |"),
        "{out:?}"
    );
    assert!(temporaries(&dir).is_empty(), "{:?}", temporaries(&dir));
    std::fs::remove_dir_all(&dir).unwrap();
}
