//! The interactive prompt: multi-line statements ending at `;`, history in the XDG state
//! folder, completion of keywords, tables, columns and quoted paths, and meta commands.

use std::path::PathBuf;
use std::process::ExitCode;

use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Editor, Helper, Highlighter, Hinter};
use strata::output::{OutputFormat, WriteOptions};
use strata::{Engine, Error};

const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "ORDER",
    "LIMIT",
    "OFFSET",
    "HAVING",
    "JOIN",
    "LEFT",
    "RIGHT",
    "FULL",
    "OUTER",
    "INNER",
    "CROSS",
    "ON",
    "USING",
    "AS",
    "AND",
    "OR",
    "NOT",
    "IN",
    "IS",
    "NULL",
    "DISTINCT",
    "UNION",
    "ALL",
    "EXCEPT",
    "INTERSECT",
    "WITH",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "CREATE",
    "EXTERNAL",
    "TABLE",
    "VIEW",
    "DROP",
    "INSERT",
    "INTO",
    "VALUES",
    "COPY",
    "TO",
    "STORED",
    "LOCATION",
    "EXPLAIN",
    "ANALYZE",
    "DESCRIBE",
    "SHOW",
    "TABLES",
    "COLUMNS",
    "COUNT",
    "SUM",
    "AVG",
    "MIN",
    "MAX",
    "BETWEEN",
    "LIKE",
    "ILIKE",
    "EXISTS",
    "OVER",
    "PARTITION",
    "ROWS",
    "CAST",
    "read_parquet",
    "read_csv",
    "read_json",
    "read_files",
    "list_files",
    "parquet_metadata",
];

/// Completion and multi-line input for the prompt.
#[derive(Helper, Hinter, Highlighter)]
struct StrataHelper {
    words: Vec<String>,
    files: FilenameCompleter,
}

impl Completer for StrataHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        // Inside an open quote: complete a path.
        if before.matches('\'').count() % 2 == 1 {
            let quote = before.rfind('\'').map(|q| q + 1).unwrap_or(0);
            let (start, mut pairs) = self.files.complete(&line[quote..], pos - quote, ctx)?;
            for p in &mut pairs {
                p.replacement = p.replacement.trim_matches('\'').to_string();
            }
            return Ok((quote + start, pairs));
        }
        let start = before
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map(|i| i + 1)
            .unwrap_or(0);
        let prefix = before[start..].to_ascii_lowercase();
        if prefix.is_empty() {
            return Ok((pos, Vec::new()));
        }
        let mut out: Vec<Pair> = self
            .words
            .iter()
            .filter(|w| w.to_ascii_lowercase().starts_with(&prefix))
            .map(|w| Pair {
                display: w.clone(),
                replacement: w.clone(),
            })
            .collect();
        out.dedup_by(|a, b| a.replacement == b.replacement);
        Ok((start, out))
    }
}

impl Validator for StrataHelper {
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        let input = ctx.input().trim();
        Ok(
            if input.is_empty() || input.starts_with('\\') || ends_statement(input) {
                ValidationResult::Valid(None)
            } else {
                ValidationResult::Incomplete
            },
        )
    }
}

/// Whether the text ends with a `;` outside quotes and comments.
fn ends_statement(text: &str) -> bool {
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

fn history_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("strata").join("history"))
}

/// Keywords, table names and the tables' column names, for completion.
async fn names(engine: &Engine) -> Vec<String> {
    let mut words: Vec<String> = KEYWORDS.iter().map(|k| k.to_string()).collect();
    if let Some(schema) = engine
        .session()
        .catalog("datafusion")
        .and_then(|c| c.schema("public"))
    {
        for t in schema.table_names() {
            if let Ok(Some(table)) = schema.table(&t).await {
                words.extend(table.schema().fields().iter().map(|f| f.name().clone()));
            }
            words.push(t);
        }
    }
    words.sort();
    words.dedup();
    words
}

/// Run the prompt until `\q` or Ctrl-D.
pub async fn run(
    engine: &Engine,
    mut options: WriteOptions,
    quiet: bool,
) -> Result<ExitCode, Error> {
    let mut editor: Editor<StrataHelper, DefaultHistory> =
        Editor::new().map_err(|e| Error::Config(format!("cannot start the prompt: {e}")))?;
    editor.set_helper(Some(StrataHelper {
        words: names(engine).await,
        files: FilenameCompleter::new(),
    }));
    let history = history_path();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    let mut timing = !quiet;
    if !quiet {
        println!(
            "Strata {} — type \\? for help, \\q to quit.",
            env!("CARGO_PKG_VERSION")
        );
    }
    loop {
        let line = match editor.readline("strata> ") {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => {
                println!("(To quit, type \\q or press Ctrl-D.)");
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(Error::Config(format!("prompt: {e}"))),
        };
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(text);
        if let Some(h) = &history {
            if let Some(dir) = h.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = editor.save_history(h);
        }
        if text.starts_with('\\') {
            match meta(engine, text, &mut options, &mut timing).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => eprintln!("Error: {e}"),
            }
            continue;
        }
        match Engine::split_statements(text) {
            Ok(stmts) => {
                for stmt in stmts {
                    let mut out = std::io::stdout().lock();
                    if let Err(e) =
                        super::run_statement(engine, &stmt, &mut out, &options, !timing).await
                    {
                        drop(out);
                        super::report(&mut std::io::stderr(), &e, &stmt);
                        break;
                    }
                }
            }
            Err(e) => eprintln!("Error: {e}"),
        }
        if let Some(h) = editor.helper_mut() {
            h.words = names(engine).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

const HELP: &str = "\
\\q                quit (also Ctrl-D)
\\?                this help
\\dt               list tables
\\d [NAME]         list tables, or describe table NAME
\\timing           toggle the timing line
\\format NAME      output format: table, csv, tsv, json, ndjson, markdown, line
Statements end with ';' and may span lines. Ctrl-C cancels a running query.";

/// Run a meta command; `Ok(true)` means quit.
async fn meta(
    engine: &Engine,
    text: &str,
    options: &mut WriteOptions,
    timing: &mut bool,
) -> Result<bool, Error> {
    let mut parts = text.split_whitespace();
    let cmd = parts.next().unwrap_or("");
    let arg = parts.next();
    let mut out = std::io::stdout().lock();
    let table_opts = WriteOptions {
        format: options.format,
        ..WriteOptions::default()
    };
    match (cmd, arg) {
        ("\\q", _) | ("\\quit", _) => return Ok(true),
        ("\\?", _) | ("\\h", _) | ("\\help", _) => println!("{HELP}"),
        ("\\dt", _) | ("\\d", None) => {
            super::run_statement(
                engine,
                "SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name",
                &mut out,
                &table_opts,
                true,
            )
            .await?
        }
        ("\\d", Some(name)) => {
            let quoted = name.replace('"', "\"\"");
            super::run_statement(engine, &format!("DESCRIBE \"{quoted}\""), &mut out, &table_opts, true)
                .await?
        }
        ("\\timing", _) => {
            *timing = !*timing;
            println!("Timing is {}.", if *timing { "on" } else { "off" });
        }
        ("\\format", Some(f)) => {
            options.format = f.parse::<OutputFormat>()?;
            println!("Output format is {}.", options.format);
        }
        ("\\format", None) => println!("Output format is {}.", options.format),
        _ => {
            return Err(Error::Config(format!(
                "unknown command {cmd}; \\? lists the commands"
            )));
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_end_at_a_semicolon_outside_quotes() {
        assert!(ends_statement("SELECT 1;"));
        assert!(ends_statement("SELECT 1; -- done"));
        assert!(!ends_statement("SELECT 1"));
        assert!(!ends_statement("SELECT ';"));
        assert!(!ends_statement("SELECT 1 /* ; */"));
    }

    #[test]
    fn history_lives_in_the_state_folder() {
        let p = history_path().unwrap();
        assert!(p.ends_with("strata/history"), "{}", p.display());
    }

    fn complete(line: &str) -> Vec<String> {
        let helper = StrataHelper {
            words: vec![
                "violations".into(),
                "violation_code".into(),
                "SELECT".into(),
            ],
            files: FilenameCompleter::new(),
        };
        let history = DefaultHistory::new();
        let ctx = Context::new(&history);
        helper
            .complete(line, line.len(), &ctx)
            .unwrap()
            .1
            .into_iter()
            .map(|p| p.replacement)
            .collect()
    }

    #[test]
    fn words_complete_by_prefix() {
        assert_eq!(
            complete("SELECT * FROM viol"),
            vec!["violations", "violation_code"]
        );
        assert_eq!(complete("sel"), vec!["SELECT"]);
        assert!(complete("SELECT ").is_empty());
    }
}
