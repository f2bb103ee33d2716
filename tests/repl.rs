//! The prompt driven through a real pseudo-terminal: completion, multi-line statements,
//! history, the pager, colours, meta commands and Ctrl-C.
#![cfg(unix)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// A `strata` prompt on a pseudo-terminal, and everything it has written so far.
struct Session {
    child: Child,
    input: File,
    screen: Arc<(Mutex<Vec<u8>>, Condvar)>,
    /// How much of the output earlier expectations consumed.
    seen: usize,
}

impl Session {
    fn start(state_dir: &Path, env: &[(&str, &str)]) -> Session {
        Self::start_sized(state_dir, env, 24)
    }

    fn start_sized(state_dir: &Path, env: &[(&str, &str)], rows: u16) -> Session {
        let size = nix::pty::Winsize {
            ws_row: rows,
            ws_col: 120,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(&size, None).expect("a pseudo-terminal");
        let slave = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", state_dir)
            .env("XDG_STATE_HOME", state_dir)
            .env("TERM", "xterm")
            .env("PAGER", "")
            .stdin(slave(&pty.slave))
            .stdout(slave(&pty.slave))
            .stderr(slave(&pty.slave));
        for (k, v) in env {
            cmd.env(k, v);
        }
        // SAFETY: only async-signal-safe calls between fork and exec: make the child a session
        // leader whose controlling terminal is the pseudo-terminal, as a shell would.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("strata starts");
        drop(pty.slave);
        let master = File::from(pty.master);
        let input = master.try_clone().unwrap();
        let screen = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let sink = screen.clone();
        std::thread::spawn(move || {
            let mut master = master;
            let mut buf = [0u8; 4096];
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let (lock, cv) = &*sink;
                lock.lock().unwrap().extend_from_slice(&buf[..n]);
                cv.notify_all();
            }
        });
        let mut s = Session {
            child,
            input,
            screen,
            seen: 0,
        };
        s.expect("type \\? for help");
        s
    }

    fn send(&mut self, keys: &str) {
        self.input.write_all(keys.as_bytes()).unwrap();
        self.input.flush().unwrap();
    }

    /// Wait for the prompt. Keys typed before it may be discarded when the prompt takes over
    /// the terminal, so tests type only at a prompt.
    fn at_prompt(&mut self) {
        self.expect("strata> ");
    }

    /// At the prompt, type a line and press Enter; wait until the prompt has taken it.
    fn line(&mut self, text: &str) {
        self.at_prompt();
        self.send(text);
        self.send("\r");
        self.expect(&format!("{text}\n"));
    }

    /// Type keys at the prompt.
    fn type_keys(&mut self, keys: &str) {
        self.at_prompt();
        self.send(keys);
    }

    /// Type a continuation line of a statement and press Enter.
    fn more(&mut self, text: &str) {
        self.send(text);
        self.send("\r");
    }

    /// All output so far, with terminal escape sequences removed.
    fn text(&self) -> String {
        strip(&self.raw())
    }

    fn raw(&self) -> String {
        String::from_utf8_lossy(&self.screen.0.lock().unwrap()).into_owned()
    }

    /// Wait until `needle` appears in the output after what earlier calls consumed; return the
    /// output up to and including it.
    fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let (lock, cv) = &*self.screen;
        let mut buf = lock.lock().unwrap();
        loop {
            let text = strip(&String::from_utf8_lossy(&buf));
            if let Some(at) = text[self.seen.min(text.len())..].find(needle) {
                let end = self.seen + at + needle.len();
                let out = text[self.seen..end].to_string();
                self.seen = end;
                return out;
            }
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "waited {WAIT:?} for {needle:?}; the terminal shows:\n{}",
                    &text[self.seen.min(text.len())..]
                );
            }
            buf = cv.wait_timeout(buf, deadline - now).unwrap().0;
        }
    }

    /// Quit with Ctrl-D and check the exit status.
    fn quit(mut self) {
        self.at_prompt();
        self.send("\x04");
        self.wait_exit();
    }

    /// Wait for the process to end successfully.
    fn wait_exit(mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{status}");
                return;
            }
            assert!(Instant::now() < deadline, "strata did not quit");
            let (lock, cv) = &*self.screen;
            let guard = lock.lock().unwrap();
            let _ = cv.wait_timeout(guard, Duration::from_millis(50)).unwrap();
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Remove ANSI escape sequences and carriage returns.
fn strip(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() || c == '~' {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            _ => out.push(c),
        }
    }
    out
}

#[test]
fn tab_completes_a_table_and_a_column() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Session::start(dir.path(), &[]);
    // Catalog tables load in the background; one that a statement has used certainly has.
    s.line("SELECT count(*) AS all_rows FROM violations;");
    s.expect("1 row in");
    // "viol" has several completions (violations, violations_csv, ...): Tab fills in their
    // common prefix. "summ" is a column of the table the statement names.
    s.type_keys("SELECT count(*) AS n FROM viol\t");
    s.send(" WHERE summ\t");
    s.more(" > 0;");
    let out = s.expect("row in");
    assert!(
        out.contains("FROM violations WHERE summons_number > 0;"),
        "{out}"
    );
    assert!(out.contains("7123"), "{out}");
    // A second Tab lists the candidates.
    s.type_keys("SELECT * FROM viol\t\t");
    let out = s.expect("violations_csv");
    assert!(out.contains("violations_avro"), "{out}");
    // Ctrl-C at the prompt drops the line and says how to quit.
    s.send("\x03");
    s.expect("To quit");
    s.quit();
}

#[test]
fn a_statement_spans_lines_until_the_semicolon() {
    let dir = tempfile::tempdir().unwrap();
    // `\e` hands the editor a file; this editor keeps a copy and changes nothing.
    let seen = dir.path().join("seen.sql");
    let editor = format!("tee {} >/dev/null <", seen.display());
    let mut s = Session::start(dir.path(), &[("EDITOR", editor.as_str())]);
    // Each line of an open statement gets a continuation prompt, aligned under the first.
    s.type_keys("SELECT\r");
    s.expect("\n   ...> ");
    s.more("  41 + 1");
    s.expect("\n   ...> ");
    s.more("  AS answer;");
    let out = s.expect("row in");
    assert!(out.contains("| answer |") && out.contains("42"), "{out}");
    // The statement goes to the editor and the history as typed, without prompts.
    s.line("\\e");
    s.expect("row in");
    let typed = "SELECT\n  41 + 1\n  AS answer;";
    assert_eq!(std::fs::read_to_string(&seen).unwrap().trim(), typed);
    // Ctrl-C in an open statement drops it; the next one starts afresh.
    s.type_keys("SELECT 'dropped'\r");
    s.expect("   ...> ");
    s.send("\x03");
    s.line("SELECT 'kept' AS k;");
    let out = s.expect("row in");
    assert!(
        out.contains("| kept |") && !out.contains("dropped"),
        "{out}"
    );
    // Two statements on one line run one after the other.
    s.line("SELECT 'one' AS a; SELECT 'two' AS b;");
    s.expect("one");
    s.expect("two");
    s.quit();
    let history = std::fs::read_to_string(dir.path().join("strata/history")).unwrap();
    assert!(history.contains("41 + 1"), "{history}");
    assert!(!history.contains("...>"), "{history}");
}

#[test]
fn history_is_recalled_and_kept_between_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Session::start(dir.path(), &[]);
    s.line("SELECT 'first-entry' AS h;");
    s.expect("1 row in");
    // Up arrow brings the statement back.
    s.type_keys("\x1b[A");
    s.send("\r");
    s.expect("first-entry");
    s.expect("1 row in");
    s.quit();
    assert!(dir.path().join("strata/history").is_file());

    // A new session searches the saved history with Ctrl-R.
    let mut s = Session::start(dir.path(), &[]);
    s.type_keys("\x12first-en");
    s.expect("first-en");
    s.send("\r");
    s.expect("1 row in");
    assert!(s.text().contains("| first-entry |"), "{}", s.text());
    s.quit();
}

#[test]
fn tall_results_go_through_the_pager_and_short_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Session::start(dir.path(), &[("PAGER", "sed 's/^/PAGED:/'")]);
    s.line("SELECT person_id FROM people ORDER BY person_id;");
    let out = s.expect("shows all)");
    assert!(out.contains("PAGED:|         1 |"), "{out}");
    // The prompt shows at most 40 rows and says how many there were.
    assert!(out.contains("PAGED:|        40 |"), "{out}");
    assert!(!out.contains("|        41 |"), "{out}");
    assert!(
        out.contains("80 rows in") && out.contains("(40 shown"),
        "{out}"
    );
    s.line("SELECT 'short' AS s;");
    let out = s.expect("row in");
    assert!(
        out.contains("| short |") && !out.contains("PAGED:"),
        "{out}"
    );
    s.quit();
}

#[test]
fn ctrl_c_cancels_a_slow_query_and_the_session_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Session::start(dir.path(), &[]);
    s.line("SELECT count(*) FROM generate_series(1, 100000000000) AS t(x) WHERE x % 7 = 3;");
    // The progress line appears after about a second.
    s.expect(" rows ");
    let sent = Instant::now();
    s.send("\x03");
    s.expect("query cancelled");
    let took = sent.elapsed();
    eprintln!("Ctrl-C to 'query cancelled': {took:?}");
    assert!(took < Duration::from_secs(1), "cancelling took {took:?}");
    s.line("SELECT 'still here' AS s;");
    s.expect("still here");
    // A cross join over a nested loop join makes its batches from memory, polling nothing
    // that gives way: it must stop all the same, and free the workers for the next query.
    s.line(
        "SELECT count(*), sum(length(a.street_name || b.street_name)) FROM violations a, \
         violations b, people c WHERE a.plate_id <> b.plate_id;",
    );
    s.expect(" rows ");
    let sent = Instant::now();
    s.send("\x03");
    s.expect("query cancelled");
    let took = sent.elapsed();
    assert!(took < Duration::from_secs(1), "cancelling took {took:?}");
    let asked = Instant::now();
    s.line("SELECT 'free again' AS s;");
    s.expect("free again");
    let answered = asked.elapsed();
    assert!(
        answered < Duration::from_secs(3),
        "the next query waited {answered:?}"
    );
    s.quit();
}

#[test]
fn colours_follow_no_color() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Session::start(dir.path(), &[]);
    s.line("SELECT 'x' AS c;");
    s.expect("1 row in");
    assert!(s.raw().contains("\x1b[1;34mSELECT"), "{:?}", s.raw());
    s.quit();
    let mut s = Session::start(dir.path(), &[("NO_COLOR", "1")]);
    s.line("SELECT 'x' AS c;");
    s.expect("1 row in");
    assert!(!s.raw().contains("\x1b[1;34m"), "{:?}", s.raw());
    s.quit();
    let mut s = Session::start(dir.path(), &[("STRATA_NO_COLOR", "true")]);
    s.line("SELECT 'x' AS c;");
    s.expect("1 row in");
    assert!(!s.raw().contains("\x1b[1;34m"), "{:?}", s.raw());
    s.quit();
}

#[test]
fn meta_commands() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Session::start(dir.path(), &[("EDITOR", "sed -i s/41/42/")]);
    s.line("\\?");
    s.expect("\\e");
    s.line("\\dt");
    let out = s.expect("violations_csv");
    assert!(out.contains("people"), "{out}");
    s.line("\\d people");
    let out = s.expect("date_of_birth");
    assert!(out.contains("person_id"), "{out}");
    s.line("\\d nosuch");
    s.expect("Error: table 'nosuch' not found");
    s.line("\\format csv");
    s.expect("Output format is csv.");
    s.line("SELECT 1 AS a, 'x' AS b;");
    s.expect("a,b\n1,x\n");
    s.line("\\format table");
    s.expect("Output format is table.");
    s.line("\\timing");
    s.expect("Timing is off.");
    s.line("\\timing");
    s.expect("Timing is on.");
    s.line("\\set max_rows 2");
    s.line("\\set");
    s.expect("max_rows   2");
    s.line("SELECT person_id FROM people ORDER BY 1;");
    s.expect("80 rows in");
    s.expect("(2 shown");
    s.line("\\set nonsense 1");
    s.expect("unknown setting 'nonsense'");

    // \o sends results to a file; .parquet files hold the latest result.
    let csv = dir.path().join("out.csv");
    s.line("\\format csv");
    s.expect("Output format is csv.");
    s.line(&format!("\\o {}", csv.display()));
    s.expect("Results go to");
    s.line("SELECT 7 AS seven;");
    s.expect("1 row in");
    let parquet = dir.path().join("out.parquet");
    s.line(&format!("\\o {}", parquet.display()));
    s.expect("Results go to");
    s.line("SELECT person_id FROM people;");
    s.expect("80 rows in");
    s.line("\\o");
    s.expect("Results go to the screen.");
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), "seven\n7\n");
    s.line(&format!(
        "SELECT count(*) AS n FROM '{}';",
        parquet.display()
    ));
    s.expect("n\n80\n");

    // \i runs a file; \e edits the last statement and runs it.
    let script = dir.path().join("script.sql");
    std::fs::write(&script, "SELECT 'from-file' AS f;\n").unwrap();
    s.line(&format!("\\i {}", script.display()));
    s.expect("from-file");
    s.line("SELECT 41 AS edited;");
    s.expect("41");
    s.line("\\e");
    s.expect("edited\n42\n");
    s.line("\\frobnicate");
    s.expect("Error: unknown command \\frobnicate");
    s.line("\\q");
    s.wait_exit();
}
