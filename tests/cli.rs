//! The `strata` binary end to end: batch modes, output formats, exit status and errors.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn strata(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("strata runs");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn quiet_csv_output_is_exactly_the_result() {
    let out = strata(
        &[
            "-q",
            "--format",
            "csv",
            "-c",
            "SELECT year, count(*) AS n FROM violations GROUP BY year ORDER BY year",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "year,n\n2023,3577\n2024,3546\n");
}

#[test]
fn table_output_has_a_timing_line() {
    let out = strata(&["-c", "SELECT 'x' AS a"], None);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("| a |"), "{stdout}");
    assert!(
        stdout.lines().last().unwrap().starts_with("1 row in "),
        "{stdout}"
    );
}

#[test]
fn files_and_stdin_run_statement_by_statement() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("q.sql");
    std::fs::write(
        &file,
        "CREATE TABLE t AS VALUES (1), (2);\nSELECT sum(column1) AS s FROM t;\n",
    )
    .unwrap();
    let out = strata(
        &["-q", "--format", "csv", "-f", file.to_str().unwrap()],
        None,
    );
    assert_eq!(text(&out.stdout), "s\n3\n");
    let out = strata(
        &["-q", "--format", "ndjson"],
        Some("SELECT 1 AS a; SELECT 2 AS a;"),
    );
    assert_eq!(text(&out.stdout), "{\"a\":1}\n{\"a\":2}\n");
}

#[test]
fn the_first_error_stops_a_batch_with_status_1() {
    let out = strata(
        &[
            "-q",
            "--format",
            "csv",
            "-c",
            "SELECT 1 AS a; SELECT * FROM nope; SELECT 3 AS a",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "a\n1\n");
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("Error: table 'nope' not found"),
        "{stderr}"
    );
    // The offending statement, with a caret under the unknown table.
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert_eq!(lines[1], "  SELECT * FROM nope");
    assert_eq!(lines[2], "                ^");
}

#[test]
fn bad_options_are_errors() {
    let out = strata(&["--format", "xml", "-c", "SELECT 1"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("valid formats are"));
    let out = strata(&["--memory-limit", "lots", "-c", "SELECT 1"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("invalid size 'lots'"));
}

#[test]
fn continue_on_error_runs_the_rest_and_still_fails() {
    let out = strata(
        &[
            "-q",
            "--format",
            "csv",
            "--continue-on-error",
            "-c",
            "SELECT 1 AS a; SELECT * FROM nope; SELECT 3 AS a",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "a\n1\na\n3\n");
}

#[test]
fn output_goes_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.json");
    let out = strata(
        &[
            "-q",
            "--format",
            "json",
            "-o",
            file.to_str().unwrap(),
            "-c",
            "SELECT last_name FROM people WHERE person_id = 1",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "[{\"last_name\":\"Gonzalez\"}]\n"
    );
}

#[test]
fn ctrl_c_cancels_the_running_query() {
    let child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "-c",
            "SELECT sum(value % 7) FROM generate_series(1, 5000000000)",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the query is running: the engine is built once the process has read its
    // catalog; poll the process state rather than sleeping a fixed time.
    let started = std::time::Instant::now();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
        // Field 14 is user CPU time in ticks: the query has started burning CPU.
        let utime: u64 = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(11))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if utime > 60 || started.elapsed() > std::time::Duration::from_secs(20) {
            break;
        }
    }
    let sent = std::time::Instant::now();
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        sent.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(out.status.code(), Some(130));
    assert_eq!(text(&out.stderr), "Error: query cancelled\n");
}
