//! The interactive prompt: multi-line statements ending at `;`, history in the XDG state
//! folder, completion of keywords, functions, tables, columns and quoted paths, syntax
//! colours, and meta commands.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::{CmdKind, Highlighter};
use rustyline::history::DefaultHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{CompletionType, Config, Context, Editor, Helper, Hinter};
use strata::Engine;
use strata::output::OutputFormat;

use super::CliError;

use super::shell::Shell;

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
    "ASC",
    "DESC",
    "NULLS",
    "FIRST",
    "LAST",
    "SET",
    "FORMAT",
    "PARTITION_BY",
    "HEADER",
    "TRUE",
    "FALSE",
    "INTERVAL",
    "DATE",
    "TIMESTAMP",
    "FILTER",
    "WINDOW",
    "QUALIFY",
    "RECURSIVE",
    "REPLACE",
    "IF",
];

/// Strata's table functions, offered with the SQL functions.
const TABLE_FUNCTIONS: &[&str] = &[
    "read_files",
    "read_parquet",
    "read_csv",
    "read_tsv",
    "read_json",
    "read_ndjson",
    "read_arrow",
    "read_avro",
    "list_files",
    "parquet_metadata",
];

/// Completion, colours and multi-line input for the prompt.
#[derive(Helper, Hinter)]
struct StrataHelper {
    /// Keywords, function names and table names.
    words: Vec<String>,
    /// Each table's columns, by lower-case table name.
    columns: HashMap<String, Vec<String>>,
    files: FilenameCompleter,
    color: bool,
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
        // Columns of the tables the statement names come first.
        let named: Vec<&Vec<String>> = words_of(line)
            .filter_map(|w| self.columns.get(&w.to_ascii_lowercase()))
            .collect();
        let mut seen = std::collections::HashSet::new();
        let out: Vec<Pair> = named
            .into_iter()
            .flatten()
            .chain(self.words.iter())
            .filter(|w| w.to_ascii_lowercase().starts_with(&prefix))
            .filter(|w| seen.insert(w.as_str()))
            .map(|w| Pair {
                display: w.clone(),
                replacement: w.clone(),
            })
            .collect();
        Ok((start, out))
    }
}

/// The identifier-like words of a text.
fn words_of(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
}

impl Highlighter for StrataHelper {
    fn highlight<'l>(&self, line: &'l str, _pos: usize) -> Cow<'l, str> {
        if self.color && !line.starts_with('\\') {
            Cow::Owned(highlight_sql(line))
        } else {
            Cow::Borrowed(line)
        }
    }

    fn highlight_char(&self, _line: &str, _pos: usize, _kind: CmdKind) -> bool {
        self.color
    }
}

const KEYWORD_STYLE: &str = "\x1b[1;34m";
const STRING_STYLE: &str = "\x1b[32m";
const NUMBER_STYLE: &str = "\x1b[33m";
const COMMENT_STYLE: &str = "\x1b[90m";
const RESET: &str = "\x1b[0m";

/// SQL with ANSI colours: keywords, string literals, numbers and comments. The text itself
/// is unchanged, so the cursor stays where it is.
fn highlight_sql(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len() * 2);
    let mut i = 0;
    let styled = |out: &mut String, style: &str, text: &[char]| {
        out.push_str(style);
        out.extend(text);
        out.push_str(RESET);
    };
    while i < chars.len() {
        let c = chars[i];
        let rest = &chars[i..];
        let end = if rest.starts_with(&['-', '-']) {
            let n = rest.iter().position(|c| *c == '\n').unwrap_or(rest.len());
            styled(&mut out, COMMENT_STYLE, &rest[..n]);
            n
        } else if rest.starts_with(&['/', '*']) {
            let n = rest
                .windows(2)
                .skip(1)
                .position(|w| w == ['*', '/'])
                .map(|p| p + 3)
                .unwrap_or(rest.len());
            styled(&mut out, COMMENT_STYLE, &rest[..n]);
            n
        } else if c == '\'' {
            let mut n = 1;
            while n < rest.len() {
                if rest[n] == '\'' {
                    if rest.get(n + 1) == Some(&'\'') {
                        n += 2;
                        continue;
                    }
                    n += 1;
                    break;
                }
                n += 1;
            }
            styled(&mut out, STRING_STYLE, &rest[..n]);
            n
        } else if c == '"' {
            let n = rest[1..]
                .iter()
                .position(|c| *c == '"')
                .map(|p| p + 2)
                .unwrap_or(rest.len());
            out.extend(&rest[..n]);
            n
        } else if c.is_alphanumeric() || c == '_' {
            let n = rest
                .iter()
                .position(|c| !(c.is_alphanumeric() || *c == '_' || *c == '.'))
                .unwrap_or(rest.len());
            let word: String = rest[..n].iter().collect();
            if c.is_ascii_digit() && word.chars().all(|c| c.is_ascii_digit() || c == '.') {
                styled(&mut out, NUMBER_STYLE, &rest[..n]);
            } else {
                // A dotted name is not a keyword, but its parts are plain words.
                let n = rest
                    .iter()
                    .position(|c| !(c.is_alphanumeric() || *c == '_'))
                    .unwrap_or(rest.len());
                let word: String = rest[..n].iter().collect();
                if KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(&word)) {
                    styled(&mut out, KEYWORD_STYLE, &rest[..n]);
                } else {
                    out.push_str(&word);
                }
                i += n;
                continue;
            }
            n
        } else {
            out.push(c);
            1
        };
        i += end;
    }
    out
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

/// Keywords, function names, table names, and each table's columns, for completion.
async fn names(engine: &Engine) -> (Vec<String>, HashMap<String, Vec<String>>) {
    let mut words: Vec<String> = KEYWORDS.iter().map(|k| k.to_string()).collect();
    words.extend(TABLE_FUNCTIONS.iter().map(|f| f.to_string()));
    let state = engine.session().state();
    words.extend(state.scalar_functions().keys().cloned());
    words.extend(state.aggregate_functions().keys().cloned());
    words.extend(state.window_functions().keys().cloned());
    let mut columns = HashMap::new();
    if let Some(schema) = engine
        .session()
        .catalog("datafusion")
        .and_then(|c| c.schema("public"))
    {
        for t in schema.table_names() {
            if let Ok(Some(table)) = schema.table(&t).await {
                let cols = table
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect();
                columns.insert(t.to_ascii_lowercase(), cols);
            }
            words.push(t);
        }
    }
    words.sort_by_key(|w| w.to_ascii_lowercase());
    words.dedup();
    (words, columns)
}

/// Run the prompt until `\q` or Ctrl-D.
pub async fn run(shell: &mut Shell) -> Result<ExitCode, CliError> {
    let config = Config::builder()
        .completion_type(CompletionType::List)
        .history_ignore_dups(true)
        .map_err(|e| CliError::Usage(format!("cannot start the prompt: {e}")))?
        .max_history_size(10_000)
        .map_err(|e| CliError::Usage(format!("cannot start the prompt: {e}")))?
        .build();
    let mut editor: Editor<StrataHelper, DefaultHistory> = Editor::with_config(config)
        .map_err(|e| CliError::Usage(format!("cannot start the prompt: {e}")))?;
    let (words, columns) = names(&shell.engine).await;
    editor.set_helper(Some(StrataHelper {
        words,
        columns,
        files: FilenameCompleter::new(),
        color: shell.color,
    }));
    let history = history_path();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    if !shell.quiet {
        println!(
            "Strata {} — type \\? for help, \\q to quit.",
            env!("CARGO_PKG_VERSION")
        );
    }
    let mut last = String::new();
    loop {
        let line = match editor.readline("strata> ") {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => {
                println!("(To quit, type \\q or press Ctrl-D.)");
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(CliError::Usage(format!("prompt: {e}"))),
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
            match meta(shell, text, &mut last).await {
                Ok(Meta::Quit) => break,
                Ok(Meta::Done) => {}
                Ok(Meta::Run(sql)) => {
                    let _ = editor.add_history_entry(sql.trim());
                    run_script(shell, &sql).await;
                    last = sql;
                }
                Err(e) => super::report(&mut std::io::stderr(), &e, "", shell.color),
            }
        } else {
            last = text.to_string();
            run_script(shell, text).await;
        }
        let (words, columns) = names(&shell.engine).await;
        if let Some(h) = editor.helper_mut() {
            h.words = words;
            h.columns = columns;
            h.color = shell.color;
        }
    }
    shell.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Run the statements of `text`, stopping at the first error.
async fn run_script(shell: &mut Shell, text: &str) {
    match Engine::split_statements(text) {
        Ok(stmts) => {
            for stmt in stmts {
                if let Err(e) = shell.run(&stmt).await {
                    let _ = shell.flush();
                    super::report(&mut std::io::stderr(), &e, &stmt, shell.color);
                    break;
                }
            }
        }
        Err(e) => super::report(&mut std::io::stderr(), &e.into(), text, shell.color),
    }
}

const HELP: &str = "\
\\q                 quit (also Ctrl-D)
\\?                 this help
\\dt                list tables
\\d [NAME]          list tables, or describe table NAME
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

enum Meta {
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
async fn meta(shell: &mut Shell, text: &str, last: &mut String) -> Result<Meta, CliError> {
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
            run_script(shell, &sql).await;
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
                "\\q", "\\?", "\\dt", "\\d", "\\timing", "\\format", "\\o", "\\i", "\\e", "\\set",
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
        complete_at(line, line.len())
    }

    fn complete_at(line: &str, pos: usize) -> Vec<String> {
        let helper = StrataHelper {
            words: vec!["violations".into(), "vintage".into(), "SELECT".into()],
            columns: HashMap::from([(
                "violations".to_string(),
                vec!["violation_code".to_string(), "year".to_string()],
            )]),
            files: FilenameCompleter::new(),
            color: true,
        };
        let history = DefaultHistory::new();
        let ctx = Context::new(&history);
        helper
            .complete(line, pos, &ctx)
            .unwrap()
            .1
            .into_iter()
            .map(|p| p.replacement)
            .collect()
    }

    #[test]
    fn words_complete_by_prefix() {
        assert_eq!(complete("SELECT * FROM viol"), vec!["violations"]);
        // Columns come from the tables the statement names.
        assert_eq!(
            complete("SELECT * FROM violations WHERE vi"),
            vec!["violation_code", "violations", "vintage"]
        );
        assert_eq!(complete("SELECT ye"), Vec::<String>::new());
        assert_eq!(complete_at("SELECT ye FROM violations", 9), vec!["year"]);
        assert_eq!(complete("sel"), vec!["SELECT"]);
        assert!(complete("SELECT ").is_empty());
    }

    #[test]
    fn highlighting_colours_without_changing_the_text() {
        let line = "SELECT 'a''b', 42, x.y -- note";
        let h = highlight_sql(line);
        assert!(h.contains("\x1b[1;34mSELECT\x1b[0m"), "{h:?}");
        assert!(h.contains("\x1b[32m'a''b'\x1b[0m"), "{h:?}");
        assert!(h.contains("\x1b[33m42\x1b[0m"), "{h:?}");
        assert!(h.contains("\x1b[90m-- note\x1b[0m"), "{h:?}");
        let plain: String = strip_ansi(&h);
        assert_eq!(plain, line);
        // An unterminated string or comment is coloured to the end.
        assert_eq!(strip_ansi(&highlight_sql("SELECT 'ab")), "SELECT 'ab");
        assert_eq!(strip_ansi(&highlight_sql("/* x")), "/* x");
    }

    fn strip_ansi(s: &str) -> String {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }
}
