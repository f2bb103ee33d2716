//! The interactive prompt: statements ending at `;` over as many lines as they take (each
//! further line behind a `...>` prompt), history in the XDG state folder, completion of keywords, functions, tables, columns and quoted paths, syntax
//! colours, and meta commands.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::{CmdKind, Highlighter};
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Context, Editor, Helper, Hinter};
use strata::Engine;

use super::CliError;

use super::meta::{Flow, Meta, ends_statement, meta, run_script};
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
    "postgres_scan",
    "mysql_scan",
    "sqlite_scan",
];

/// The prompt of a statement's first line, and of each line that continues it, aligned.
const PROMPT: &str = "strata> ";
const CONTINUATION: &str = "   ...> ";

/// Completion and colours for the prompt.
#[derive(Helper, Hinter)]
struct StrataHelper {
    /// Keywords, function names and table names.
    words: Vec<String>,
    /// Each table's columns, by lower-case table name (filled in the background as catalog
    /// tables load).
    columns: Arc<Mutex<HashMap<String, Vec<String>>>>,
    files: FilenameCompleter,
    color: bool,
    /// The earlier lines of the statement being typed: the tables they name complete
    /// columns on the line being typed.
    pending: String,
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
        let named: Vec<String> = {
            let columns = self.columns.lock().unwrap_or_else(|p| p.into_inner());
            words_of(&self.pending)
                .chain(words_of(line))
                .filter_map(|w| columns.get(&w.to_ascii_lowercase()))
                .flatten()
                .cloned()
                .collect()
        };
        let mut seen = std::collections::HashSet::new();
        let out: Vec<Pair> = named
            .iter()
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

/// Enter always ends a line: a statement that is not complete goes on at a continuation
/// prompt, line by line, as in psql.
impl Validator for StrataHelper {}

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
    // Columns of the tables already loaded; a catalog table is not read just to complete it
    // (its columns come once a statement has used it).
    let mut columns = HashMap::new();
    for t in engine.table_names() {
        if let Some(schema) = engine.loaded_table_schema(&t).await {
            columns.insert(t.to_ascii_lowercase(), column_names(&schema));
        }
        words.push(t);
    }
    // The tables of attached databases, by their whole names.
    let session = engine.session();
    for catalog in session.catalog_names() {
        let Some(provider) = session
            .catalog(&catalog)
            .filter(|_| catalog != "datafusion")
        else {
            continue;
        };
        for schema in provider.schema_names() {
            if let Some(tables) = provider
                .schema(&schema)
                .filter(|_| schema != "information_schema")
            {
                words.extend(
                    tables
                        .table_names()
                        .iter()
                        .map(|t| format!("{catalog}.{schema}.{t}")),
                );
            }
        }
    }
    words.sort_by_key(|w| w.to_ascii_lowercase());
    words.dedup();
    (words, columns)
}

fn column_names(schema: &strata::datafusion::arrow::datatypes::Schema) -> Vec<String> {
    schema.fields().iter().map(|f| f.name().clone()).collect()
}

/// Resolve every table of the default schema and record its columns.
async fn load_columns(
    ctx: strata::datafusion::prelude::SessionContext,
    columns: Arc<Mutex<HashMap<String, Vec<String>>>>,
) {
    let Some(schema) = ctx.catalog("datafusion").and_then(|c| c.schema("public")) else {
        return;
    };
    for name in schema.table_names() {
        // A table that cannot be loaded reports its error when a statement uses it.
        if let Ok(Some(table)) = schema.table(&name).await {
            columns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.to_ascii_lowercase(), column_names(&table.schema()));
        }
    }
}

/// Add a statement or command to the history, and save the history.
fn remember(editor: &mut Editor<StrataHelper, DefaultHistory>, history: Option<&Path>, text: &str) {
    let _ = editor.add_history_entry(text);
    if let Some(h) = history {
        if let Some(dir) = h.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = editor.save_history(h);
    }
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
    let (words, loaded) = names(&shell.engine).await;
    let columns = Arc::new(Mutex::new(loaded));
    editor.set_helper(Some(StrataHelper {
        words,
        columns: columns.clone(),
        files: FilenameCompleter::new(),
        color: shell.color,
        pending: String::new(),
    }));
    // Load the catalog's tables in the background so their columns complete, without making
    // the prompt wait for them.
    tokio::spawn(load_columns(shell.engine.session().clone(), columns));
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
    // The lines typed so far of a statement that has not ended.
    let mut statement = String::new();
    loop {
        if let Some(h) = editor.helper_mut() {
            h.pending.clone_from(&statement);
        }
        let prompt = if statement.is_empty() {
            PROMPT
        } else {
            CONTINUATION
        };
        let line = match editor.readline(prompt) {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) if !statement.is_empty() => {
                // Ctrl-C in a statement drops it, as in psql.
                statement.clear();
                continue;
            }
            Err(ReadlineError::Interrupted) => {
                println!("(To quit, type \\q or press Ctrl-D.)");
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(CliError::Usage(format!("prompt: {e}"))),
        };
        let text = line.trim();
        if statement.is_empty() && text.is_empty() {
            continue;
        }
        // A meta command runs on a line of its own, between statements.
        if statement.is_empty() && text.starts_with('\\') {
            remember(&mut editor, history.as_deref(), text);
            match meta(shell, text, &mut last).await {
                Ok(Meta::Quit) => break,
                Ok(Meta::Done) => {}
                Ok(Meta::Run(sql)) => {
                    remember(&mut editor, history.as_deref(), sql.trim());
                    if run_script(shell, &sql, false).await == Flow::Quit {
                        break;
                    }
                    last = sql;
                }
                Err(e) => super::report(&mut std::io::stderr(), &e, "", shell.color),
            }
        } else {
            if !statement.is_empty() {
                statement.push('\n');
            }
            statement.push_str(line.trim_end());
            if !ends_statement(statement.trim()) {
                continue;
            }
            let sql = std::mem::take(&mut statement);
            let sql = sql.trim();
            remember(&mut editor, history.as_deref(), sql);
            last = sql.to_string();
            if run_script(shell, sql, false).await == Flow::Quit {
                break;
            }
        }
        let (words, loaded) = names(&shell.engine).await;
        if let Some(h) = editor.helper_mut() {
            h.words = words;
            h.columns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(loaded);
            h.color = shell.color;
        }
    }
    shell.flush()?;
    Ok(ExitCode::SUCCESS)
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
            columns: Arc::new(Mutex::new(HashMap::from([(
                "violations".to_string(),
                vec!["violation_code".to_string(), "year".to_string()],
            )]))),
            files: FilenameCompleter::new(),
            color: true,
            pending: String::new(),
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
