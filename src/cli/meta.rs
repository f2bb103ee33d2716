//! Meta commands (`\dt`, `\format`, `\o`, `\set`, ...) and scripts that mix them with SQL:
//! the same commands work at the prompt and in `-f` files.

use std::path::PathBuf;

use strata::Engine;
use strata::output::OutputFormat;

use super::CliError;
use super::shell::Shell;

pub const HELP: &str = "\
\\q                 quit (also Ctrl-D)
\\?                 this help
\\dt                list tables
\\d [NAME]          list tables, or describe table NAME
\\jobs              recent jobs on the cluster (with --cluster): status, stages, time
\\dashboard [ADDR]  serve the dashboard of this session's queries (default
                   127.0.0.1:8787) and print its link
\\plan FILE         draw the plan of the last query, with what each operator did, as
                   SVG (FILE.svg) or Graphviz (FILE.dot)
\\timing            toggle the timing line
\\format NAME       output format: table, csv, tsv, json, ndjson, markdown, line
                   (parquet and arrow with \\o FILE)
\\o [FILE]          send results to FILE (text formats append; .parquet/.arrow hold the
                   latest result); without FILE, back to the screen
\\i FILE            run the SQL in FILE
\\e                 edit the last statement in $EDITOR, then run it
\\set [NAME VALUE]  show or change a setting: format, max_rows, max_width, timing, pager,
                   progress, color
Statements end with ';' and may span lines; Tab completes, Ctrl-R searches history.
Ctrl-C cancels a running query. SET name = value changes engine settings
(threads, batch_size, memory_limit, or any datafusion.* name); SHOW ALL lists them.";

pub enum Meta {
    Quit,
    Done,
    /// Statements to run (from `\e`).
    Run(String),
}

fn on_off(value: &str) -> Result<bool, CliError> {
    match value.to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        _ => Err(CliError::Usage(format!(
            "expected on or off, found '{value}'"
        ))),
    }
}

fn settings(shell: &Shell) -> Vec<(&'static str, String)> {
    let flag = |b: bool| if b { "on" } else { "off" }.to_string();
    vec![
        ("format", shell.options.format.to_string()),
        ("max_rows", shell.max_rows.to_string()),
        ("max_width", shell.options.max_column_width.to_string()),
        ("timing", flag(shell.timing)),
        (
            "pager",
            shell.pager.clone().unwrap_or_else(|| "off".to_string()),
        ),
        ("progress", flag(shell.progress)),
        ("color", flag(shell.color)),
        (
            "output",
            shell
                .output()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "stdout".to_string()),
        ),
    ]
}

fn set(shell: &mut Shell, name: &str, value: &str) -> Result<(), CliError> {
    let number = |v: &str| {
        v.parse::<usize>()
            .map_err(|_| CliError::Usage(format!("{name} needs a number, found '{v}'")))
    };
    match name {
        "format" => shell.options.format = value.parse()?,
        "max_rows" => shell.max_rows = number(value)?,
        "max_width" => shell.options.max_column_width = number(value)?.max(4),
        "timing" => shell.timing = on_off(value)?,
        "progress" => shell.progress = on_off(value)?,
        "color" => shell.color = on_off(value)?,
        "pager" => {
            shell.pager = match value.to_ascii_lowercase().as_str() {
                "off" | "false" | "0" | "no" => None,
                "on" | "true" | "1" | "yes" => super::pager_command(),
                _ => Some(value.to_string()),
            }
        }
        _ => {
            let names: Vec<&str> = settings(shell).iter().map(|(n, _)| *n).collect();
            let hint = strata::error::closest(name, names.iter().copied())
                .map(|c| format!("did you mean '{c}'? "))
                .unwrap_or_default();
            return Err(CliError::Usage(format!(
                "unknown setting '{name}'; {hint}settings are {}",
                names.join(", ")
            )));
        }
    }
    Ok(())
}

/// Run a meta command.
pub async fn meta(shell: &mut Shell, text: &str, last: &mut String) -> Result<Meta, CliError> {
    let (cmd, rest) = match text.split_once(char::is_whitespace) {
        Some((c, r)) => (c, r.trim()),
        None => (text, ""),
    };
    let arg = (!rest.is_empty()).then_some(rest);
    let quiet = shell.quiet;
    let say = |msg: String| {
        if !quiet {
            println!("{msg}");
        }
    };
    match (cmd, arg) {
        ("\\q" | "\\quit", _) => return Ok(Meta::Quit),
        ("\\?" | "\\h" | "\\help", _) => println!("{HELP}"),
        ("\\dt", _) | ("\\d", None) => {
            shell
                .run_plain(
                    "SELECT table_name, table_type FROM information_schema.tables \
                     WHERE table_schema = 'public' ORDER BY table_name",
                )
                .await?
        }
        ("\\jobs", _) => {
            let started = std::time::Instant::now();
            let jobs = shell.engine.cluster_jobs().await?;
            shell.show(jobs, started).await?
        }
        ("\\dashboard", address) => {
            let url = shell.open_dashboard(address).await?;
            println!("Dashboard: {url}");
        }
        ("\\plan", Some(file)) => {
            let session = shell.engine.session().session_id();
            let plan =
                shell.engine.monitor().last_plan(&session).ok_or_else(|| {
                    CliError::Usage("no query has run yet in this session".into())
                })?;
            let text = if file.to_ascii_lowercase().ends_with(".dot") {
                strata::plan_graph::dot(&plan)
            } else {
                strata::plan_graph::svg(&plan)
            };
            std::fs::write(file, text)
                .map_err(|e| CliError::Usage(format!("cannot write {file}: {e}")))?;
            say(format!(
                "Plan of {} operators written to {file}.",
                plan.count()
            ));
        }
        ("\\plan", None) => return Err(CliError::Usage("\\plan needs a file name".into())),
        ("\\d", Some(name)) => {
            let quoted = name.trim_end_matches(';').replace('"', "\"\"");
            shell.run_plain(&format!("DESCRIBE \"{quoted}\"")).await?
        }
        ("\\timing", _) => {
            shell.timing = !shell.timing;
            say(format!(
                "Timing is {}.",
                if shell.timing { "on" } else { "off" }
            ));
        }
        ("\\format", Some(f)) => {
            shell.options.format = f.parse::<OutputFormat>()?;
            say(format!("Output format is {}.", shell.options.format));
        }
        ("\\format", None) => println!("Output format is {}.", shell.options.format),
        ("\\o" | "\\output", file) => {
            shell.set_output(file.map(PathBuf::from))?;
            match file {
                Some(f) => say(format!("Results go to {f}.")),
                None => say("Results go to the screen.".to_string()),
            }
        }
        ("\\i" | "\\include", Some(file)) => {
            let sql = std::fs::read_to_string(file)
                .map_err(|e| CliError::Usage(format!("cannot read {file}: {e}")))?;
            if Box::pin(run_script(shell, &sql, false)).await == Flow::Quit {
                return Ok(Meta::Quit);
            }
        }
        ("\\i" | "\\include", None) => return Err(CliError::Usage("\\i needs a file name".into())),
        ("\\e" | "\\edit", _) => {
            let edited = edit(last)?;
            if edited.trim().is_empty() {
                return Ok(Meta::Done);
            }
            *last = edited.clone();
            return Ok(Meta::Run(edited));
        }
        ("\\set", None) => {
            for (name, value) in settings(shell) {
                println!("{name:<10} {value}");
            }
        }
        ("\\set", Some(rest)) => {
            let (name, value) = rest
                .split_once(char::is_whitespace)
                .map(|(n, v)| (n, v.trim()))
                .ok_or_else(|| CliError::Usage("usage: \\set NAME VALUE".into()))?;
            set(shell, name, value)?;
        }
        _ => {
            let known = [
                "\\q",
                "\\?",
                "\\dt",
                "\\d",
                "\\jobs",
                "\\dashboard",
                "\\timing",
                "\\format",
                "\\o",
                "\\i",
                "\\e",
                "\\set",
            ];
            let hint = strata::error::closest(cmd, known.iter().copied())
                .map(|c| format!("did you mean {c}? "))
                .unwrap_or_default();
            return Err(CliError::Usage(format!(
                "unknown command {cmd}; {hint}\\? lists the commands"
            )));
        }
    }
    Ok(Meta::Done)
}

/// Open `text` in `$VISUAL`/`$EDITOR` (default `vi`) and return what was saved.
fn edit(text: &str) -> Result<String, CliError> {
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".to_string());
    let dir = tempfile_dir()?;
    let path = dir.join("statement.sql");
    std::fs::write(&path, format!("{text}\n"))
        .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", path.display())))?;
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&path)
        .status()
        .map_err(|e| CliError::Usage(format!("cannot run {editor}: {e}")))?;
    let edited = std::fs::read_to_string(&path).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    if !status.success() {
        return Err(CliError::Usage(format!("{editor} exited with {status}")));
    }
    Ok(edited)
}

/// A fresh private folder for the editor's file.
fn tempfile_dir() -> Result<PathBuf, CliError> {
    let dir = std::env::temp_dir().join(format!("strata-edit-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::Usage(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir)
}

/// Whether the text ends with a `;` outside quotes and comments.
pub fn ends_statement(text: &str) -> bool {
    match Engine::split_statements(text) {
        Ok(_) => {
            // Strip trailing comments and white space, then look for the terminator.
            let code: String = text
                .lines()
                .map(|l| match l.find("--") {
                    Some(i) if l[..i].matches('\'').count() % 2 == 0 => &l[..i],
                    _ => l,
                })
                .collect::<Vec<_>>()
                .join("\n");
            code.trim_end().ends_with(';')
        }
        // An open quote or comment: keep reading.
        Err(_) => false,
    }
}

/// How a script ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    /// Every statement ran.
    Done,
    /// A statement or command failed (and the script stopped there unless told to go on).
    Failed,
    /// `\q`.
    Quit,
    /// Ctrl-C.
    Cancelled,
}

/// A piece of a script: SQL statements, or one meta command line.
#[derive(Debug, PartialEq, Eq)]
enum Chunk {
    Sql(String),
    Meta(String),
}

/// Whether `sql` holds no unfinished statement, so a meta command may follow.
fn at_boundary(sql: &str) -> bool {
    match Engine::split_statements(sql) {
        Ok(stmts) if stmts.is_empty() => true,
        Ok(_) => ends_statement(sql),
        Err(_) => false,
    }
}

/// Split a script into SQL and meta command lines (a line starting with `\` between
/// statements).
fn chunks(text: &str) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut sql = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with('\\') && at_boundary(&sql) {
            if !sql.trim().is_empty() {
                out.push(Chunk::Sql(std::mem::take(&mut sql)));
            }
            sql.clear();
            out.push(Chunk::Meta(line.trim().to_string()));
        } else {
            sql.push_str(line);
            sql.push('\n');
        }
    }
    if !sql.trim().is_empty() {
        out.push(Chunk::Sql(sql));
    }
    out
}

/// Run a script: statements and meta commands in order. Errors are reported as they happen;
/// the script stops at the first one unless `keep_going`.
pub async fn run_script(shell: &mut Shell, text: &str, keep_going: bool) -> Flow {
    let mut failed = false;
    for chunk in chunks(text) {
        match chunk {
            Chunk::Meta(line) => {
                let mut last = String::new();
                match meta(shell, &line, &mut last).await {
                    Ok(Meta::Quit) => return Flow::Quit,
                    Ok(Meta::Done) => {}
                    Ok(Meta::Run(_)) => {
                        let e = CliError::Usage("\\e works at the prompt only".into());
                        super::report(&mut std::io::stderr(), &e, "", shell.color);
                        failed = true;
                    }
                    Err(e) => {
                        super::report(&mut std::io::stderr(), &e, "", shell.color);
                        failed = true;
                    }
                }
            }
            Chunk::Sql(sql) => match Engine::split_statements(&sql) {
                Ok(stmts) => {
                    for stmt in stmts {
                        if let Err(e) = shell.run(&stmt).await {
                            let _ = shell.flush();
                            super::report(&mut std::io::stderr(), &e, &stmt, shell.color);
                            if e.is_cancelled() {
                                return Flow::Cancelled;
                            }
                            failed = true;
                            if !keep_going {
                                return Flow::Failed;
                            }
                        }
                    }
                }
                Err(e) => {
                    super::report(&mut std::io::stderr(), &e.into(), &sql, shell.color);
                    failed = true;
                }
            },
        }
        if failed && !keep_going {
            return Flow::Failed;
        }
    }
    if failed { Flow::Failed } else { Flow::Done }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_lines_split_scripts_between_statements() {
        let script = "\\format csv\nSELECT 1;\n-- note\n\\timing\nSELECT\n'\\not meta'\n;\n\\q\n";
        assert_eq!(
            chunks(script),
            vec![
                Chunk::Meta("\\format csv".into()),
                Chunk::Sql("SELECT 1;\n-- note\n".into()),
                Chunk::Meta("\\timing".into()),
                Chunk::Sql("SELECT\n'\\not meta'\n;\n".into()),
                Chunk::Meta("\\q".into()),
            ]
        );
        // Inside a statement a backslash line is SQL.
        assert_eq!(
            chunks("SELECT\n\\x\n;"),
            vec![Chunk::Sql("SELECT\n\\x\n;\n".into())]
        );
    }
}
