//! Every example the project shows runs: the `Examples:` of `strata --help` and of each
//! subcommand's help, and the code blocks of README.md and of the library's module docs
//! (shell commands, SQL, catalog files, the Python client), against the bundled `data/` and
//! `strata.toml` in a scratch folder. Examples that name a store, a scheduler or a server
//! run against test servers started here (S3 URLs against moto, the cluster's and the Flight
//! server's well-known ports replaced by free ones). Rust examples are doc tests. An example
//! that cannot run says why in the README itself (`<!-- example: skip: REASON -->` before
//! its block).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[path = "common/skip.rs"]
mod skip;
use skip::skip;
#[path = "common/test_servers.rs"]
mod test_servers;
use test_servers::{Server, http, start_moto};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");
const WAIT: Duration = Duration::from_secs(120);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One example: where it comes from, its language and its text.
#[derive(Debug, Clone)]
struct Example {
    origin: String,
    language: String,
    text: String,
}

/// The `Examples:` lines of a help text: each a command, without the description that
/// follows it after a run of spaces.
fn help_examples(help: &str, origin: &str) -> Vec<Example> {
    let Some((_, tail)) = help.split_once("Examples:\n") else {
        return Vec::new();
    };
    tail.lines()
        .take_while(|l| l.starts_with("  "))
        .map(|l| {
            let command = without_description(l.trim());
            Example {
                origin: origin.to_string(),
                language: "sh".into(),
                text: command.to_string(),
            }
        })
        .collect()
}

/// A help line up to the description after it: the first run of three spaces outside
/// quotes.
fn without_description(line: &str) -> &str {
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, ' ') if line[i..].starts_with("   ") => return &line[..i],
            _ => {}
        }
    }
    line
}

/// The fenced code blocks of a Markdown text (or of doc comments with their `//!` taken
/// off), with the skip reason written before a block.
fn code_blocks(markdown: &str, origin: &str) -> Vec<(Example, Option<String>)> {
    let mut out = Vec::new();
    let mut lines = markdown.lines().enumerate();
    let mut skip_reason: Option<String> = None;
    while let Some((n, line)) = lines.next() {
        if let Some(reason) = line
            .trim()
            .strip_prefix("<!-- example: skip:")
            .and_then(|r| r.strip_suffix("-->"))
        {
            skip_reason = Some(reason.trim().to_string());
            continue;
        }
        let Some(language) = line.trim().strip_prefix("```") else {
            continue;
        };
        // A block inside a list item is indented as its fence is.
        let indent = line.len() - line.trim_start().len();
        let mut text = String::new();
        for (_, l) in lines.by_ref() {
            if l.trim() == "```" {
                break;
            }
            let unindented = match l.get(..indent) {
                Some(lead) if lead.trim().is_empty() => &l[indent..],
                _ => l.trim_start(),
            };
            text.push_str(unindented);
            text.push('\n');
        }
        out.push((
            Example {
                origin: format!("{origin}:{}", n + 1),
                language: language.to_string(),
                text,
            },
            skip_reason.take(),
        ));
    }
    out
}

/// A scratch folder with the bundled data and catalog, and the scripts the help's examples
/// read (`report.sql`, `heavy.sql`: a user's own files).
fn sandbox() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(root().join("data"), dir.path().join("data")).unwrap();
    std::fs::copy(root().join("strata.toml"), dir.path().join("strata.toml")).unwrap();
    std::fs::write(
        dir.path().join("report.sql"),
        "SELECT registration_state, count(*) AS n FROM violations GROUP BY 1 ORDER BY n DESC LIMIT 5;\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("heavy.sql"),
        "SELECT a.year, count(*) FROM violations a JOIN violations b ON a.plate_id = b.plate_id GROUP BY 1;\n",
    )
    .unwrap();
    dir
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Ports and hosts of the examples, replaced by the test's own.
struct Ports {
    scheduler: u16,
    flight: u16,
    postgres: u16,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            scheduler: free_port(),
            flight: free_port(),
            postgres: free_port(),
        }
    }

    fn apply(&self, text: &str) -> String {
        text.replace("50050", &self.scheduler.to_string())
            .replace("50051", &self.flight.to_string())
            .replace(":5432", &format!(":{}", self.postgres))
            .replace("-p 5432", &format!("-p {}", self.postgres))
            .replace("10.0.0.5", "127.0.0.1")
            .replace("localhost", "127.0.0.1")
            .replace("sched.example", "127.0.0.1")
    }
}

/// A server started by an example (or for one), stopped when dropped.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The environment every example runs with: the strata binary first on PATH, S3 URLs
/// against the test server, the catalog's secrets, no colours or progress lines.
fn environment(s3: u16, ports: &Ports) -> BTreeMap<String, String> {
    let bin = Path::new(STRATA).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    [
        ("PATH", path),
        ("AWS_ENDPOINT", format!("http://127.0.0.1:{s3}")),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("MINIO_ACCESS_KEY", "test".into()),
        ("MINIO_SECRET_KEY", "test".into()),
        ("NO_COLOR", "1".into()),
        ("STRATA_NO_PROGRESS", "true".into()),
        // Servers the examples start without an address listen on the test's ports.
        ("STRATA_BIND", format!("127.0.0.1:{}", ports.scheduler)),
        ("STRATA_FLIGHT", format!("127.0.0.1:{}", ports.flight)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn shell(command: &str, dir: &Path, env: &BTreeMap<String, String>) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(command).current_dir(dir).envs(env);
    cmd
}

/// Run a command to its end; it must succeed.
fn run(example: &Example, command: &str, dir: &Path, env: &BTreeMap<String, String>) {
    let mut cmd = shell(command, dir, env);
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "example at {} failed: {command}\nstdout: {}\nstderr: {}",
        example.origin,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Start a server command and wait until it says it is serving; it must not fail first.
fn start_server(
    example: &Example,
    command: &str,
    dir: &Path,
    env: &BTreeMap<String, String>,
) -> Background {
    // `exec`: the server replaces the shell, so stopping the child stops the server.
    let mut child = shell(&format!("exec {command}"), dir, env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut said = String::new();
        let mut ready = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !ready && (line.contains(" listening on ") || line.contains(" serving ")) {
                ready = true;
                let _ = tx.send(Ok(()));
            }
            said.push_str(&line);
            said.push('\n');
        }
        if !ready {
            let _ = tx.send(Err(said));
        }
    });
    match rx.recv_timeout(WAIT) {
        Ok(Ok(())) => Background(child),
        Ok(Err(said)) => panic!(
            "example at {} did not start: {command}\n{said}",
            example.origin
        ),
        Err(_) => panic!(
            "example at {} did not say it was serving within {WAIT:?}: {command}",
            example.origin
        ),
    }
}

/// Whether a command is a server that runs until stopped.
fn is_server(command: &str) -> bool {
    let words: Vec<&str> = command.split_whitespace().collect();
    words.first() == Some(&"strata")
        && matches!(words.get(1), Some(&"scheduler" | &"executor" | &"serve"))
}

/// The commands of a shell block: comments dropped, `\` continuations joined, and
/// `cargo run --` read as the `strata` it builds.
fn commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = strip_comment(line).trim_end().to_string();
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(&line);
        let command = current.trim().replace("cargo run --", "strata");
        if !command.is_empty() {
            out.push(command);
        }
        current.clear();
    }
    out
}

/// A shell line without its `# comment` (a `#` outside quotes, after a space).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match (quote, b) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(b),
            (None, b'#') if i == 0 || bytes[i - 1] == b' ' => return &line[..i],
            _ => {}
        }
    }
    line
}

/// The test servers and folder the examples run with.
struct Stage {
    _s3: Server,
    ports: Ports,
    env: BTreeMap<String, String>,
    dir: tempfile::TempDir,
    /// Servers started for the examples that need one (a scheduler with an executor, a
    /// Flight SQL server), kept while the examples of one block run.
    servers: Vec<Background>,
}

impl Stage {
    fn new(s3: Server) -> Stage {
        let ports = Ports::new();
        let env = environment(s3.port, &ports);
        Stage {
            _s3: s3,
            ports,
            env,
            dir: sandbox(),
            servers: Vec::new(),
        }
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Start the servers an example refers to without starting them itself.
    fn provide(&mut self, example: &Example, commands: &[String]) {
        let starts = |role: &str| {
            commands
                .iter()
                .any(|c| c.split_whitespace().nth(1) == Some(role))
        };
        let text = &example.text;
        let names_scheduler = text.contains("50050") || text.contains("--scheduler");
        if names_scheduler && !starts("scheduler") {
            let sched = format!("strata scheduler --bind 127.0.0.1:{}", self.ports.scheduler);
            let exec = format!(
                "strata executor --scheduler 127.0.0.1:{} --bind 127.0.0.1:0",
                self.ports.scheduler
            );
            self.servers
                .push(start_server(example, &sched, self.dir(), &self.env));
            if !starts("executor") {
                self.servers
                    .push(start_server(example, &exec, self.dir(), &self.env));
            }
        }
        let names_flight = text.contains("grpc://");
        let names_postgres = text.contains("psql ") || text.contains("postgres://");
        if (names_flight || names_postgres) && !starts("serve") {
            let serve = format!(
                "strata serve --flight 127.0.0.1:{} --postgres 127.0.0.1:{}",
                self.ports.flight, self.ports.postgres
            );
            self.servers
                .push(start_server(example, &serve, self.dir(), &self.env));
        }
    }

    fn run_shell(&mut self, example: &Example) {
        let commands: Vec<String> = commands(&example.text)
            .into_iter()
            .map(|c| self.ports.apply(&c))
            .collect();
        self.provide(example, &commands);
        let mut started = Vec::new();
        for command in &commands {
            if let Some(server) = command.strip_suffix('&') {
                started.push(start_server(example, server.trim(), self.dir(), &self.env));
            } else if is_server(command) {
                // A server on its own line: it starts and serves, then stops.
                drop(start_server(example, command, self.dir(), &self.env));
            } else {
                run(example, command, self.dir(), &self.env);
            }
        }
        drop(started);
        self.servers.clear();
    }

    fn run_sql(&mut self, example: &Example) {
        let file = self.dir().join("example.sql");
        std::fs::write(&file, &example.text).unwrap();
        run(example, "strata -f example.sql", self.dir(), &self.env);
    }

    fn run_catalog(&mut self, example: &Example) {
        let file = self.dir().join("example.toml");
        std::fs::write(&file, &example.text).unwrap();
        let mut cmd = shell(
            "strata --catalog example.toml -q --format csv -c 'SHOW TABLES'",
            self.dir(),
            &self.env,
        );
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        let listed = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "catalog at {} failed to load: {}",
            example.origin,
            String::from_utf8_lossy(&out.stderr)
        );
        let parsed: toml::Table = example.text.parse().unwrap();
        let tables = parsed
            .get("tables")
            .and_then(|t| t.as_table())
            .map(|t| t.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        for t in tables {
            assert!(
                listed.contains(&t),
                "table {t} of the catalog at {} is not listed: {listed}",
                example.origin
            );
        }
    }

    fn run_python(&mut self, example: &Example) -> bool {
        let importable = Command::new("python3")
            .args(["-c", "import adbc_driver_flightsql.dbapi, pyarrow"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !importable {
            skip(
                "every_example_runs",
                &format!(
                    "the Python example at {} needs adbc-driver-flightsql and pyarrow",
                    example.origin
                ),
            );
            return false;
        }
        self.provide(example, &[]);
        let file = self.dir().join("example.py");
        std::fs::write(&file, self.ports.apply(&example.text)).unwrap();
        run(example, "python3 example.py", self.dir(), &self.env);
        self.servers.clear();
        true
    }
}

/// The help texts and their origin: `strata --help` and each subcommand's.
fn help_texts() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for sub in [
        "",
        "convert",
        "scheduler",
        "executor",
        "serve",
        "hash-secret",
    ] {
        let mut cmd = Command::new(STRATA);
        if !sub.is_empty() {
            cmd.arg(sub);
        }
        let help = cmd.arg("--help").output().unwrap();
        assert!(help.status.success());
        let origin = format!("strata {sub} --help").replace("  ", " ");
        out.push((origin, String::from_utf8_lossy(&help.stdout).into_owned()));
    }
    out
}

/// The module docs of the library's sources, with their `//!` taken off.
fn module_docs() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root().join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let docs: String = text
                    .lines()
                    .filter_map(|l| l.trim_start().strip_prefix("//!"))
                    .map(|l| format!("{}\n", l.strip_prefix(' ').unwrap_or(l)))
                    .collect();
                let name = path.strip_prefix(root()).unwrap().display().to_string();
                out.push((name, docs));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_example_runs() {
    let s3 = match start_moto() {
        Ok(s) => s,
        Err(e) => {
            skip(
                "every_example_runs",
                &format!("the S3 test server (python3 -m moto.server) is unavailable: {e}"),
            );
            return;
        }
    };
    // The bucket the examples name, with the trips they read.
    assert_eq!(http(s3.port, "PUT", "/bucket", &[], b""), 200);
    let mut stage = Stage::new(s3);
    let setup = Example {
        origin: "setup".into(),
        language: "sh".into(),
        text: String::new(),
    };
    run(
        &setup,
        "strata -c \"COPY (SELECT * FROM violations WHERE year = 2024) TO 's3://bucket/trips/year=2024/part-0.parquet'\"",
        stage.dir(),
        &stage.env,
    );

    let mut examples: Vec<(Example, Option<String>)> = Vec::new();
    for (origin, help) in help_texts() {
        examples.extend(help_examples(&help, &origin).into_iter().map(|e| (e, None)));
    }
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    examples.extend(code_blocks(&readme, "README.md"));
    for (origin, docs) in module_docs() {
        examples.extend(code_blocks(&docs, &origin));
    }

    let started = Instant::now();
    let mut ran: BTreeMap<String, usize> = BTreeMap::new();
    let mut skipped = Vec::new();
    for (example, skip_reason) in &examples {
        if let Some(reason) = skip_reason {
            skipped.push(format!("{}: {reason}", example.origin));
            continue;
        }
        // Each example starts from the bundled files alone, as a user's copy would.
        stage.dir = sandbox();
        let counted = match example.language.as_str() {
            "sh" => {
                stage.run_shell(example);
                true
            }
            "sql" => {
                stage.run_sql(example);
                true
            }
            "toml" => {
                stage.run_catalog(example);
                true
            }
            "python" => stage.run_python(example),
            // Rust examples are doc tests; layouts and plans are text.
            _ => false,
        };
        if counted {
            let source = example.origin.split(':').next().unwrap().to_string();
            *ran.entry(source).or_default() += 1;
        }
    }
    let total: usize = ran.values().sum();
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!(
            "examples: {total} ran in {:.1} s ({ran:?}); skipped with a reason: {skipped:?}\n",
            started.elapsed().as_secs_f64()
        )
        .as_bytes(),
    );
    // Every help text and the README show examples; none may go missing unnoticed.
    for source in [
        "strata --help",
        "strata convert --help",
        "strata serve --help",
        "README.md",
    ] {
        assert!(
            ran.get(source).is_some_and(|n| *n > 0),
            "no examples ran from {source}"
        );
    }
}

#[test]
fn help_examples_are_read_without_their_descriptions() {
    let help = "Usage: x\n\nExamples:\n  strata                 open the prompt\n  strata -c \"SELECT   1\"\n\nMore text";
    let found: Vec<String> = help_examples(help, "h")
        .into_iter()
        .map(|e| e.text)
        .collect();
    assert_eq!(found, ["strata", "strata -c \"SELECT   1\""]);
    assert_eq!(
        commands("strata a \\\n  --b c   # note\n\nstrata 'x # y'\n"),
        ["strata a    --b c", "strata 'x # y'"]
    );
}
