//! The library's error type: one variant per thing a user can get wrong or act on,
//! each rendered as a single clear line that names the table, file, line or column.

use std::fmt;

use datafusion::error::DataFusionError;

use crate::catalog::CatalogError;
use crate::dataset::DatasetError;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A position in SQL text, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line number, starting at 1.
    pub line: usize,
    /// Column number, starting at 1.
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` in `text`.
    pub fn at(text: &str, offset: usize) -> Position {
        let before = &text[..offset.min(text.len())];
        Position {
            line: before.matches('\n').count() + 1,
            column: before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1,
        }
    }
}

impl From<datafusion::sql::sqlparser::tokenizer::Location> for Position {
    fn from(at: datafusion::sql::sqlparser::tokenizer::Location) -> Position {
        Position {
            line: at.line as usize,
            column: at.column as usize,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Everything that can go wrong in Strata, as a user would want to read it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SQL text does not parse.
    #[error("{}", with_position("syntax error", message, position))]
    Syntax {
        /// What the parser expected and found.
        message: String,
        /// Where in the SQL text.
        position: Option<Position>,
    },
    /// The SQL parses but cannot be planned: unknown table, column, function, type error.
    #[error("{}", with_position("", message, position))]
    Plan {
        /// What is wrong, with a suggestion where one exists.
        message: String,
        /// Where in the SQL text, when known.
        position: Option<Position>,
    },
    /// A dataset could not be resolved or read.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// The catalog file is invalid.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// An engine setting is invalid.
    #[error("invalid setting: {0}")]
    Config(String),
    /// The query failed while running.
    #[error("{0}")]
    Execution(String),
    /// The query was cancelled.
    #[error("query cancelled")]
    Cancelled,
    /// The query ran out of memory under the configured limit.
    #[error("out of memory: {0}")]
    ResourcesExhausted(String),
    /// The statement reaches a file or store outside the engine's confinement.
    #[error("not allowed: {0}")]
    NotAllowed(String),
}

impl From<crate::databases::DatabaseError> for Error {
    fn from(e: crate::databases::DatabaseError) -> Self {
        Error::Dataset(e.into())
    }
}

impl From<crate::confine::Refused> for Error {
    fn from(refused: crate::confine::Refused) -> Self {
        Error::NotAllowed(refused.0)
    }
}

/// The text a panic carried, for an error that replaces it.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".into());
    format!("internal error ({text})")
}

/// DataFusion's allocation failure on one line: what failed, and how to give it more room.
pub(crate) fn out_of_memory(message: &str) -> String {
    let failure = message
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("Error: "))
        .unwrap_or_else(|| message.lines().next().unwrap_or(message).trim());
    let failure = failure.trim_end_matches('.');
    format!("{failure}; raise the limit with --memory-limit or SET memory_limit")
}

fn with_position(prefix: &str, message: &str, position: &Option<Position>) -> String {
    let mut out = String::new();
    if !prefix.is_empty() {
        out.push_str(prefix);
        if let Some(p) = position {
            out.push_str(&format!(" at {p}"));
        }
        out.push_str(": ");
        out.push_str(message);
    } else {
        out.push_str(message);
        if let Some(p) = position {
            out.push_str(&format!(" (at {p})"));
        }
    }
    out
}

impl Error {
    /// The position in the SQL text this error refers to, if any.
    pub fn position(&self) -> Option<Position> {
        match self {
            Error::Syntax { position, .. } | Error::Plan { position, .. } => *position,
            _ => None,
        }
    }

    pub(crate) fn plan(message: impl Into<String>) -> Self {
        Error::Plan {
            message: message.into(),
            position: None,
        }
    }
}

impl From<DataFusionError> for Error {
    fn from(err: DataFusionError) -> Self {
        match classify(err) {
            Error::Plan { message, position } => Error::Plan {
                message: crate::types::sql_names_in_message(&message).into_owned(),
                position,
            },
            Error::Execution(message) => {
                Error::Execution(crate::types::sql_names_in_message(&message).into_owned())
            }
            other => other,
        }
    }
}

impl From<Error> for DataFusionError {
    fn from(err: Error) -> Self {
        match err {
            Error::Dataset(e) => DataFusionError::External(Box::new(e)),
            other => DataFusionError::External(Box::new(other)),
        }
    }
}

/// Turn a DataFusion error into the variant a user can act on, with the noise of nested
/// prefixes ("External error: Arrow error: ...") removed.
fn classify(err: DataFusionError) -> Error {
    let position = err
        .diagnostic()
        .and_then(|d| d.span)
        .filter(|s| s.start.line > 0)
        .map(|s| Position {
            line: s.start.line as usize,
            column: s.start.column as usize,
        });

    // Errors of our own that travelled through DataFusion come back as themselves.
    for e in err.iter() {
        if let DataFusionError::External(inner) = e {
            if let Some(ours) = inner.downcast_ref::<DatasetError>() {
                return Error::Dataset(ours.clone());
            }
            if let Some(ours) = inner.downcast_ref::<Error>() {
                return clone_shallow(ours);
            }
        }
    }

    let root = err.find_root();
    match root {
        DataFusionError::SQL(parser_err, _) => {
            let text = parser_err.to_string();
            let text = text
                .strip_prefix("sql parser error: ")
                .unwrap_or(&text)
                .to_string();
            let (message, pos) = split_parser_position(&text);
            Error::Syntax {
                message,
                position: pos.or(position),
            }
        }
        DataFusionError::ResourcesExhausted(m) => Error::ResourcesExhausted(out_of_memory(m)),
        DataFusionError::Plan(m) => Error::Plan {
            message: m.clone(),
            position,
        },
        DataFusionError::SchemaError(e, _) => Error::Plan {
            message: e.to_string(),
            position,
        },
        DataFusionError::NotImplemented(m) => Error::Plan {
            message: format!("not supported: {m}"),
            position,
        },
        DataFusionError::Configuration(m) => Error::Config(m.clone()),
        DataFusionError::Execution(m) if m.contains("cancelled") => Error::Cancelled,
        _ => Error::Execution(clean_message(&root.strip_backtrace())),
    }
}

fn clone_shallow(err: &Error) -> Error {
    match err {
        Error::Syntax { message, position } => Error::Syntax {
            message: message.clone(),
            position: *position,
        },
        Error::Plan { message, position } => Error::Plan {
            message: message.clone(),
            position: *position,
        },
        Error::Dataset(e) => Error::Dataset(e.clone()),
        Error::Cancelled => Error::Cancelled,
        Error::ResourcesExhausted(m) => Error::ResourcesExhausted(m.clone()),
        Error::NotAllowed(m) => Error::NotAllowed(m.clone()),
        other => Error::Execution(other.to_string()),
    }
}

/// Split "... at Line: 3, Column: 7" off a parser message.
fn split_parser_position(text: &str) -> (String, Option<Position>) {
    if let Some(idx) = text.rfind(" at Line: ") {
        let tail = &text[idx + " at Line: ".len()..];
        let mut parts = tail.split(", Column: ");
        let line = parts.next().and_then(|s| s.trim().parse().ok());
        let column = parts
            .next()
            .and_then(|s| s.trim().trim_end_matches('.').parse().ok());
        if let (Some(line), Some(column)) = (line, column) {
            return (text[..idx].to_string(), Some(Position { line, column }));
        }
    }
    (text.to_string(), None)
}

/// Remove the layers of category prefixes DataFusion and Arrow stack onto a message.
pub(crate) fn clean_message(text: &str) -> String {
    const PREFIXES: &[&str] = &[
        "External error: ",
        "Arrow error: ",
        "Execution error: ",
        "Error during planning: ",
        "Object Store error: ",
        "ParquetError: ",
        "Parquet error: ",
        "IO error: ",
        "Generic LocalFileSystem error: ",
        "Internal error: ",
        "Context(\"",
    ];
    let mut s = text.trim();
    loop {
        let before = s;
        for p in PREFIXES {
            if let Some(rest) = s.strip_prefix(p) {
                s = rest.trim_start();
            }
        }
        if before == s {
            break;
        }
    }
    // DataFusion's invitation to report its internal errors upstream is not the user's concern.
    let s = match s.find("\nThis issue was likely caused by a bug in DataFusion") {
        Some(i) => s[..i].trim_end(),
        None => s,
    };
    s.to_string()
}

/// The candidate closest to `name` by edit distance, if it is close enough to be a likely typo.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lname = name.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (edit_distance(&lname, &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= (c.len().max(lname.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance where swapping two neighbouring characters counts as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_position_is_split_off() {
        let (m, p) =
            split_parser_position("Expected: end of statement, found: x at Line: 2, Column: 9");
        assert_eq!(m, "Expected: end of statement, found: x");
        assert_eq!(p, Some(Position { line: 2, column: 9 }));
    }

    #[test]
    fn closest_finds_typos_only() {
        let names = ["violations", "people", "events"];
        assert_eq!(closest("violation", names), Some("violations"));
        assert_eq!(closest("peeple", names), Some("people"));
        assert_eq!(closest("zzzzzz", names), None);
        assert_eq!(closest("hedaer", ["header", "quote"]), Some("header"));
        assert_eq!(closest("qq", ["a", "b c"]), None);
    }

    #[test]
    fn prefixes_are_removed() {
        assert_eq!(
            clean_message("External error: Arrow error: Csv error: bad"),
            "Csv error: bad"
        );
    }

    #[test]
    fn out_of_memory_is_one_line() {
        let m = "Additional allocation failed for TopK[0] with top memory consumers (across reservations) as:\n  TopK[0]#0(can spill: false) consumed 14.5 MB, peak 14.5 MB.\nError: Failed to allocate additional 10.1 MB for TopK[0] with 14.5 MB already allocated for this reservation - 5.5 MB remain available for the total memory pool: greedy(used: 14.5 MB, pool_size: 20.0 MB)";
        let e = Error::ResourcesExhausted(out_of_memory(m)).to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(
            e.starts_with("out of memory: Failed to allocate additional 10.1 MB for TopK[0]"),
            "{e}"
        );
    }
}
