//! The `strata` binary end to end: batch modes, output formats, exit status and errors.

use std::io::Write;
use std::process::{Command, Output, Stdio};

#[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
#[path = "common/skip.rs"]
mod skip;

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
fn sql_given_with_c_may_start_with_a_comment() {
    let sql = "-- the count of 2024\nSELECT count(*) AS n FROM violations WHERE year = 2024";
    let out = strata(&["-q", "--format", "csv", "-c", sql], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "n\n3546\n");
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
    interrupt_while_running("SELECT sum(value % 7) FROM generate_series(1, 5000000000)");
    // A nested loop join keeps the runtime's workers busy inside one batch at a time: the
    // interrupt must still be noticed at once.
    interrupt_while_running(
        "SELECT count(*), sum(length(a.street_name || b.street_name)) FROM violations a, violations b WHERE a.plate_id <> b.plate_id",
    );
}

/// Start `sql`, send SIGINT once it burns CPU, and check that it stops with status 130.
fn interrupt_while_running(sql: &str) {
    let child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["-c", sql])
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
        "{sql}: {:?}",
        sent.elapsed()
    );
    assert_eq!(out.status.code(), Some(130), "{sql}");
    assert_eq!(text(&out.stderr), "Error: query cancelled\n", "{sql}");
}

/// Run with `-q` and return standard output, checking success.
fn quiet(args: &[&str]) -> String {
    let mut all = vec!["-q"];
    all.extend_from_slice(args);
    let out = strata(&all, None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn every_text_format() {
    let q = "SELECT 1 AS id, CAST(NULL AS VARCHAR) AS n, '' AS e, 'a,b' AS t";
    let run = |format: &str| quiet(&["--format", format, "-c", q]);
    assert_eq!(
        run("table"),
        "+----+------+---+-----+\n| id | n    | e | t   |\n+----+------+---+-----+\n|  1 | NULL |   | a,b |\n+----+------+---+-----+\n"
    );
    assert_eq!(run("csv"), "id,n,e,t\n1,,\"\",\"a,b\"\n");
    assert_eq!(run("tsv"), "id\tn\te\tt\n1\t\t\"\"\ta,b\n");
    assert_eq!(
        run("json"),
        "[{\"id\":1,\"n\":null,\"e\":\"\",\"t\":\"a,b\"}]\n"
    );
    assert_eq!(
        run("ndjson"),
        "{\"id\":1,\"n\":null,\"e\":\"\",\"t\":\"a,b\"}\n"
    );
    assert_eq!(
        run("markdown"),
        "| id | n | e | t |\n| ---: | --- | --- | --- |\n| 1 | NULL |  | a,b |\n"
    );
    assert_eq!(run("line"), "id = 1\n n = NULL\n e = \n t = a,b\n");
    // Without -q, table output ends with the row count and time.
    let out = strata(&["-c", q], None);
    let stdout = text(&out.stdout);
    let last = stdout.lines().last().unwrap();
    assert!(
        last.starts_with("1 row in ") && last.ends_with(" s"),
        "{stdout}"
    );
    // An untyped NULL is an empty field too, like a typed one.
    let nulls = "SELECT NULL AS n, CAST(NULL AS INT) AS m, '' AS e";
    assert_eq!(quiet(&["--format", "csv", "-c", nulls]), "n,m,e\n,,\"\"\n");
    assert_eq!(
        quiet(&["--format", "tsv", "-c", nulls]),
        "n\tm\te\n\t\t\"\"\n"
    );
    assert_eq!(
        quiet(&["--format", "json", "-c", nulls]),
        "[{\"n\":null,\"m\":null,\"e\":\"\"}]\n"
    );
    // An empty result still names its columns.
    assert_eq!(
        quiet(&["--format", "csv", "-c", "SELECT 1 AS a WHERE false"]),
        "a\n"
    );
    assert_eq!(
        quiet(&["--format", "json", "-c", "SELECT 1 AS a WHERE false"]),
        "[]\n"
    );
}

#[test]
fn parquet_and_arrow_results_go_to_files_only() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["top.parquet", "top.arrow"] {
        let file = dir.path().join(name);
        let f = file.to_str().unwrap();
        quiet(&[
            "-o",
            f,
            "-c",
            "SELECT person_id, last_name FROM people ORDER BY person_id LIMIT 25",
        ]);
        let back = quiet(&[
            "--format",
            "csv",
            "-c",
            &format!("SELECT count(*) AS n, max(person_id) AS m FROM '{f}'"),
        ]);
        assert_eq!(back, "n,m\n25,25\n", "{name}");
    }
    let out = strata(&["--format", "parquet", "-c", "SELECT 1"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("parquet output goes to a file"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn max_rows_cuts_what_is_shown_and_says_so() {
    let out = strata(
        &[
            "--format",
            "csv",
            "--max-rows",
            "2",
            "-c",
            "SELECT person_id FROM people ORDER BY 1",
        ],
        None,
    );
    assert_eq!(text(&out.stdout), "person_id\n1\n2\n");
    assert!(
        text(&out.stderr).starts_with("80 rows (2 shown"),
        "{}",
        text(&out.stderr)
    );
    // From the environment, too; a file gets every row.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("all.csv");
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["-q", "-o", file.to_str().unwrap(), "-c"])
        .arg("SELECT person_id FROM people")
        .env("STRATA_MAX_ROWS", "3")
        .env("STRATA_FORMAT", "csv")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 81);
}

#[test]
fn explain_renders_in_every_format() {
    let q = "EXPLAIN SELECT count(*) FROM violations WHERE violation_code > 10";
    let table = quiet(&["-c", q]);
    assert!(table.starts_with("logical_plan\n  "), "{table}");
    assert!(table.contains("\nphysical_plan\n  "), "{table}");
    assert!(
        table.contains("    "),
        "plan lines keep their indentation: {table}"
    );
    let md = quiet(&["--format", "markdown", "-c", q]);
    assert!(md.contains("**physical_plan**\n\n```text\n"), "{md}");
    let csv = quiet(&["--format", "csv", "-c", q]);
    assert!(csv.starts_with("plan_type,plan\nlogical_plan,\""), "{csv}");
    let json = quiet(&["--format", "json", "-c", q]);
    assert!(json.contains("\"plan_type\":\"physical_plan\""), "{json}");

    // EXPLAIN ANALYZE shows rows, time and spilling per operator; no progress line is ever
    // written to a standard error that is not a terminal.
    let out = strata(
        &[
            "-q",
            "--memory-limit",
            "20M",
            "-c",
            "EXPLAIN ANALYZE SELECT value FROM generate_series(1, 2000000) ORDER BY value DESC",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    let sort = plan
        .lines()
        .find(|l| l.contains("SortExec"))
        .unwrap_or_else(|| panic!("{plan}"));
    assert!(sort.contains("output_rows=2.00 M"), "{sort}");
    assert!(sort.contains("elapsed_compute="), "{sort}");
    assert!(!sort.contains("spill_count=0"), "{sort}");
    assert!(sort.contains("spill_count="), "{sort}");
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn the_timing_line_says_what_a_query_spilled() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sorted.csv");
    let file = file.to_str().unwrap();
    let sort = "SELECT value FROM generate_series(1, 2000000) ORDER BY value DESC";
    let run = |limit: &str| {
        let out = strata(
            &[
                "--memory-limit",
                limit,
                "--format",
                "csv",
                "-o",
                file,
                "-c",
                sort,
            ],
            None,
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(
            std::fs::read_to_string(file).unwrap().lines().count(),
            2_000_001
        );
        text(&out.stdout)
    };
    let said = run("20M");
    let (head, spilled) = said
        .trim_end()
        .split_once(", ")
        .unwrap_or_else(|| panic!("no spill in {said}"));
    assert!(head.starts_with("2000000 rows in "), "{said}");
    let (size, unit) = spilled
        .strip_suffix(" spilled to disk")
        .and_then(|s| s.split_once(' '))
        .unwrap_or_else(|| panic!("{said}"));
    assert!(
        size.parse::<f64>().unwrap() > 0.0 && unit.ends_with("iB"),
        "{said}"
    );
    // Nothing spilled, nothing said.
    let said = run("1G");
    assert!(said.trim_end().ends_with(" s"), "{said}");
    assert!(!said.contains("spilled"), "{said}");
}

#[test]
fn set_changes_session_settings() {
    let out = quiet(&[
        "--format",
        "csv",
        "-c",
        "SET threads = 3; SET batch_size = 77; SHOW threads; SHOW batch_size",
    ]);
    assert_eq!(
        out,
        "name,value\ndatafusion.execution.target_partitions,3\nname,value\ndatafusion.execution.batch_size,77\n"
    );
    let out = strata(&["-c", "SET no_such_setting = 1"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("Error: "),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn help_documents_every_option_with_examples() {
    let out = strata(&["--help"], None);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for option in [
        "--command",
        "--file",
        "--catalog",
        "--threads",
        "--memory-limit",
        "--cluster",
        "--quiet",
        "--format",
        "--max-rows",
        "--output",
        "--continue-on-error",
        "--no-color",
        "--no-progress",
        "STRATA_FORMAT",
        "Examples:",
        "convert",
    ] {
        assert!(help.contains(option), "--help lacks {option}:\n{help}");
    }
}

#[test]
fn convert_moves_a_dataset_and_checks_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let dest = format!("{}/violations/", dir.path().display());
    let out = strata(
        &[
            "convert",
            "data/violations_csv",
            &dest,
            "--partition-by",
            "year",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.starts_with("Converted 7123 rows"), "{said}");
    assert!(said.contains("read back 7123 rows"), "{said}");
    assert!(dir.path().join("violations/year=2023").is_dir());
    let counts = quiet(&[
        "--format",
        "csv",
        "-c",
        &format!("SELECT year, count(*) AS n FROM '{dest}' GROUP BY year ORDER BY year"),
    ]);
    assert_eq!(counts, "year,n\n2023,3577\n2024,3546\n");
    // A catalog table to one compressed CSV file.
    let file = format!("{}/people.csv.gz", dir.path().display());
    let out = strata(&["-q", "convert", "people", &file], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let n = quiet(&[
        "--format",
        "csv",
        "-c",
        &format!("SELECT count(*) AS n FROM '{file}'"),
    ]);
    assert_eq!(n, "n\n80\n");
    // Nothing is overwritten, and a missing source is a clear error.
    let out = strata(&["convert", "people", &file], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );
    let out = strata(
        &[
            "convert",
            "data/nothing_here",
            &format!("{}/x.parquet", dir.path().display()),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("data/nothing_here"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn user_errors_exit_1_without_panicking() {
    for (sql, expect) in [
        ("SELEC 1", "syntax error at 1:1"),
        (
            "SELECT * FROM 'data/missing.parquet'",
            "data/missing.parquet",
        ),
        ("SELECT nosuch FROM people", "column 'nosuch' not found"),
        ("SELECT * FROM peeple", "did you mean 'people'?"),
    ] {
        let out = strata(&["-c", sql], None);
        assert_eq!(out.status.code(), Some(1), "{sql}");
        let err = text(&out.stderr);
        assert!(
            err.starts_with("Error: ") && err.contains(expect),
            "{sql}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let out = strata(&["-f", "no/such/file.sql"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read no/such/file.sql"));
}

#[test]
fn scripts_may_use_meta_commands() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("counts.csv");
    let script = dir.path().join("s.sql");
    std::fs::write(
        &script,
        format!(
            "\\format csv\n\\timing\nSELECT 1 AS a;\n\\o {}\nSELECT count(*) AS n FROM people;\n\\o\n\\q\nSELECT 'not reached' AS b;\n",
            out_file.display()
        ),
    )
    .unwrap();
    let out = strata(&["-f", script.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("a\n1\n"), "{stdout}");
    assert!(!stdout.contains("not reached"), "{stdout}");
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), "n\n80\n");
    // A failing meta command stops the batch with status 1.
    let out = strata(&["-c", "\\format xml\nSELECT 1;"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("unknown output format 'xml'"));
    assert!(out.stdout.is_empty() || !text(&out.stdout).contains("| 1"));
}

#[test]
fn queries_run_on_a_cluster_inside_the_process() {
    let out = quiet(&[
        "--cluster",
        "local:2",
        "--format",
        "csv",
        "-c",
        "SELECT year, count(DISTINCT plate_id) > 0 AS some, count(*) AS n FROM violations GROUP BY year ORDER BY year",
    ]);
    assert_eq!(out, "year,some,n\n2023,true,3577\n2024,true,3546\n");
    let out = strata(&["--cluster", "nonsense", "-c", "SELECT 1"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("df://host:port"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_corrupt_parquet_file_is_one_line_naming_it_and_no_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trunc.parquet");
    std::fs::write(&path, b"PAR1\0\0\0garbage-not-a-footerPAR1").unwrap();
    let sql = format!("SELECT * FROM '{}'", path.display());
    // The reader panics on this footer; even with backtraces asked for the user sees one line.
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["-c", &sql, "-c", "SELECT 1"])
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "Error: {}: corrupt Parquet footer: it gives a metadata length of",
            path.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_parquet_chunk_pointing_past_the_end_of_the_file_is_an_error() {
    // A column chunk whose offsets point terabytes past the end: reading the range whole
    // would exhaust memory; the query fails with one line instead, under a 4 GiB cap.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("fuzz/regressions/parquet/allocation-for-a-range-past-the-end.parquet");
    let sql = format!("SELECT * FROM '{}'", path.display());
    let out = Command::new("sh")
        .args(["-c", "ulimit -v 4194304; exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_strata"))
        .args(["-c", &sql])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "Error: {}: a read asked for bytes",
            path.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("of a 11840-byte file"), "{stderr}");
}

#[test]
fn a_select_list_may_repeat_a_name() {
    assert_eq!(
        quiet(&["--format", "csv", "-c", "SELECT 1 AS c, 2 AS c"]),
        "c,c\n1,2\n"
    );
    assert_eq!(
        quiet(&[
            "--format",
            "csv",
            "-c",
            "SELECT person_id, 76 AS person_id, (SELECT 1), (SELECT 2) FROM people ORDER BY 1 LIMIT 1"
        ]),
        "person_id,person_id,(SELECT 1),(SELECT 2)\n1,76,1,2\n"
    );
    // In a derived table and a CTE too; `*` shows each name as written.
    assert_eq!(
        quiet(&[
            "--format",
            "csv",
            "-c",
            "WITH c AS (SELECT 1 AS x, 2 AS x) SELECT * FROM (SELECT person_id, 76 AS person_id FROM people) AS s, c ORDER BY 1 LIMIT 1"
        ]),
        "person_id,person_id,x,x\n1,76,1,2\n"
    );
}

#[test]
fn serve_refuses_other_machines_without_users_and_tls_and_reads_its_catalog_section() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    std::fs::write(&users, "").unwrap();
    let users = users.to_str().unwrap();
    for (args, missing) in [
        (
            vec!["serve", "--flight", "0.0.0.0:0"],
            "authentication (--users) or TLS",
        ),
        (
            vec!["serve", "--flight", "0.0.0.0:0", "--users", users],
            "has no TLS",
        ),
        (
            vec!["serve", "--postgres", "0.0.0.0:0", "--users", users],
            "has no TLS",
        ),
        (
            vec![
                "serve",
                "--flight",
                "127.0.0.1:0",
                "--dashboard",
                "0.0.0.0:0",
                "--users",
                users,
            ],
            "TLS (--tls-cert, --tls-key)",
        ),
    ] {
        let out = strata(&args, None);
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert!(err.contains("can be reached from other machines"), "{err}");
        assert!(err.contains(missing), "{err}");
        assert!(err.contains("--insecure"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    // A certificate without its key is refused, from the command line or the catalog file.
    let out = strata(&["serve", "--tls-cert", "cert.pem"], None);
    assert!(text(&out.stderr).contains("TLS needs both --tls-cert and --tls-key"));
    let catalog = dir.path().join("strata.toml");
    std::fs::write(
        &catalog,
        "[server]\nflight = \"0.0.0.0:0\"\ntls_cert = \"missing.pem\"\ntls_key = \"missing.key\"\n",
    )
    .unwrap();
    let out = strata(&["serve", "--catalog", catalog.to_str().unwrap()], None);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    // The section's paths are the catalog folder's.
    let expected = dir.path().canonicalize().unwrap().join("missing.pem");
    assert!(
        err.contains(&format!("TLS: {}", expected.display())),
        "{err}"
    );
    assert!(err.contains("cannot read it"), "{err}");
}

#[test]
fn plan_draws_the_last_querys_plan_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("plan.svg");
    let dot = dir.path().join("plan.dot");
    let out = strata(
        &[
            "-q",
            "--format",
            "csv",
            "-c",
            "SELECT count(*) AS n FROM 'data/people'",
            "-c",
            &format!("\\plan {}", svg.display()),
            "-c",
            &format!("\\plan {}", dot.display()),
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "n\n80\n");
    let svg = std::fs::read_to_string(svg).unwrap();
    assert!(svg.starts_with("<svg "), "{svg}");
    assert!(
        svg.contains(">1 row · "),
        "the root returned one row: {svg}"
    );
    assert!(svg.contains("DataSourceExec"), "{svg}");
    let dot = std::fs::read_to_string(dot).unwrap();
    assert_eq!(
        dot.matches(" -> ").count() + 1,
        svg.matches("<g class=\"operator\"").count(),
        "{dot}"
    );

    let none = strata(&["-c", "\\plan x.svg"], None);
    assert_eq!(none.status.code(), Some(1));
    assert!(
        text(&none.stderr).contains("no query has run yet"),
        "{}",
        text(&none.stderr)
    );
}

/// A build for x86-64-v3 (`.cargo/config.toml`) run on an older CPU, emulated by QEMU's user
/// mode (Debian's `qemu-user`): one line saying what to do, exit status 1, no crash on an
/// illegal instruction; and on a CPU model that has those instructions it answers.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
#[test]
fn a_build_for_x86_64_v3_stops_with_one_line_on_an_older_cpu() {
    let test = "a_build_for_x86_64_v3_stops_with_one_line_on_an_older_cpu";
    let on = |cpu: &str| {
        Command::new("qemu-x86_64")
            .args([
                "-cpu",
                cpu,
                env!("CARGO_BIN_EXE_strata"),
                "-q",
                "--format",
                "csv",
            ])
            .args(["-c", "SELECT 6 * 7 AS answer"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .output()
    };
    let old = match on("Westmere") {
        Ok(out) => out,
        Err(e) => return skip::skip(test, &format!("qemu-x86_64 does not run: {e}")),
    };
    let stderr = text(&old.stderr);
    assert_eq!(old.status.code(), Some(1), "{stderr}");
    assert!(old.stdout.is_empty(), "{}", text(&old.stdout));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("Error: this strata was built for x86-64-v3 CPUs")
            && stderr.contains("RUSTFLAGS=\"-C target-cpu=x86-64\""),
        "{stderr}"
    );

    let new = on("Haswell").expect("qemu-x86_64 runs");
    assert!(new.status.success(), "{}", text(&new.stderr));
    assert_eq!(text(&new.stdout), "answer\n42\n");
}

/// A process that runs its statements and exits backs its memory with small pages (no
/// transparent huge pages: the kernel zeroes all 2 MiB of one on the first write to it); a
/// server keeps them, and so does a run whose environment chooses with `MIMALLOC_ALLOW_THP`.
#[cfg(target_os = "linux")]
#[test]
fn only_processes_that_run_and_exit_turn_huge_pages_off() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    // Whether the process started with `args` allows transparent huge pages, read from /proc
    // once it has printed a line starting with `ready` (after it chose, while it waits: for
    // its standard input, or for clients).
    let huge_pages = |args: &[&str], ready: &str, allow: Option<&str>| -> bool {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        match allow {
            Some(v) => cmd.env("MIMALLOC_ALLOW_THP", v),
            None => cmd.env_remove("MIMALLOC_ALLOW_THP"),
        };
        let mut child = cmd.spawn().unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while !line.starts_with(ready) {
            line.clear();
            assert_ne!(stderr.read_line(&mut line).unwrap(), 0, "no line {ready:?}");
        }
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        drop(child.stdin.take());
        if args.first() == Some(&"serve") {
            child.kill().unwrap();
            child.wait().unwrap();
        } else {
            assert!(child.wait().unwrap().success());
        }
        let flag = status
            .lines()
            .find_map(|l| l.strip_prefix("THP_enabled:"))
            .unwrap_or_else(|| panic!("no THP_enabled in {status}"));
        flag.trim() == "1"
    };
    let batch = ["--dashboard", "127.0.0.1:0", "-f", "-"];
    assert!(
        !huge_pages(&batch, "Dashboard: ", None),
        "a batch run kept them"
    );
    assert!(
        huge_pages(&batch, "Dashboard: ", Some("1")),
        "MIMALLOC_ALLOW_THP=1 was not followed"
    );
    let serve = ["serve", "--flight", "127.0.0.1:0"];
    assert!(
        huge_pages(&serve, "strata serving", None),
        "a server turned them off"
    );
}
