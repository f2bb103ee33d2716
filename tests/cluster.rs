//! Queries on a Ballista cluster started inside the test process give the same answers as
//! local execution.

use strata::Engine;
use strata::datafusion::arrow::util::pretty::pretty_format_batches;

async fn answer(engine: &Engine, sql: &str) -> String {
    let batches = engine.sql(sql).await.unwrap().collect().await.unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_local_cluster_answers_like_local_execution() {
    let root = env!("CARGO_MANIFEST_DIR");
    let local = Engine::builder()
        .catalog(format!("{root}/strata.toml"))
        .build()
        .await
        .unwrap();
    let cluster = Engine::builder()
        .catalog(format!("{root}/strata.toml"))
        .cluster("local:2")
        .build()
        .await
        .unwrap();
    assert_eq!(cluster.runner().name(), "cluster");
    for sql in [
        "SELECT year, count(*) AS n FROM violations GROUP BY year ORDER BY year",
        "SELECT registration_state, count(DISTINCT plate_id) AS plates FROM violations GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5",
    ] {
        assert_eq!(
            answer(&cluster, sql).await,
            answer(&local, sql).await,
            "{sql}"
        );
    }
}

mod processes {
    //! A cluster of separate `strata scheduler` and `strata executor` processes on loopback.

    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::{Child, Command, Output, Stdio};

    const ROOT: &str = env!("CARGO_MANIFEST_DIR");

    /// A server process, killed when dropped.
    pub struct Server {
        child: Child,
        /// The address it announced.
        pub addr: String,
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
        Server { child, addr }
    }

    /// A scheduler and `n` executors with two slots each.
    pub fn cluster(n: usize) -> (Server, Vec<Server>) {
        let scheduler = start(
            &["scheduler", "--bind", "127.0.0.1:0"],
            "listening on df://",
        );
        let executors = (0..n)
            .map(|_| {
                start(
                    &[
                        "executor",
                        "--scheduler",
                        &scheduler.addr,
                        "--bind",
                        "127.0.0.1:0",
                        "--slots",
                        "2",
                    ],
                    "serving shuffle data on ",
                )
            })
            .collect();
        (scheduler, executors)
    }

    pub fn strata(args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(args)
            .current_dir(ROOT)
            .output()
            .expect("run strata")
    }

    /// The body of `GET path` on `addr`.
    pub fn http_get(addr: &str, path: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        text.split_once("\r\n\r\n").unwrap().1.to_string()
    }
}

#[test]
fn scheduler_and_executor_processes_answer_like_local_execution() {
    let (scheduler, _executors) = processes::cluster(2);
    let url = format!("df://{}", scheduler.addr);
    for sql in [
        "SELECT year, month, count(*) AS n, count(DISTINCT plate_id) AS plates FROM violations GROUP BY year, month ORDER BY year, month",
        "SELECT registration_state, sum(violation_precinct) AS s FROM violations_csv GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5",
        "SELECT v.registration_state, count(*) FROM violations v JOIN (VALUES ('NY'), ('NJ')) AS s(code) ON v.registration_state = s.code GROUP BY 1 ORDER BY 1",
    ] {
        let local = processes::strata(&["-q", "--format", "csv", "-c", sql]);
        let cluster = processes::strata(&["-q", "--format", "csv", "--cluster", &url, "-c", sql]);
        assert!(
            cluster.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&cluster.stderr)
        );
        assert!(!local.stdout.is_empty());
        assert_eq!(
            String::from_utf8_lossy(&cluster.stdout),
            String::from_utf8_lossy(&local.stdout),
            "{sql}"
        );
    }

    // The REST API knows both executors and the jobs; \jobs lists them.
    let executors = processes::http_get(&scheduler.addr, "/api/executors");
    assert_eq!(executors.matches("\"vcores\":2").count(), 2, "{executors}");
    let jobs = processes::strata(&["-q", "--format", "csv", "--cluster", &url, "-c", "\\jobs"]);
    let text = String::from_utf8_lossy(&jobs.stdout);
    assert!(
        jobs.status.success(),
        "{}",
        String::from_utf8_lossy(&jobs.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "job_id,name,status,stages,started,seconds");
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[1..].iter().all(|l| l.contains(",Completed,")),
        "{text}"
    );
    assert!(text.contains(",violations_csv,"), "{text}");
}
