//! SQL text handling before planning: parsing into statements, and finding Strata's table
//! functions (`read_parquet(...)`, `list_files(...)`, ...) so their arguments — locations,
//! lists and `key = value` options — can be resolved asynchronously before planning.

use std::ops::ControlFlow;

use datafusion::error::DataFusionError;
use datafusion::sql::parser::{DFParserBuilder, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, FunctionArg, FunctionArgExpr, Ident, ObjectName, TableAlias, TableFactor,
    TableFunctionArgs, Value, ValueWithSpan, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::{GenericDialect, dialect_from_str};
use datafusion::sql::sqlparser::keywords::Keyword as K;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::{Span, Token, TokenWithSpan, Tokenizer};

use crate::error::{Error, Result};

/// The table functions Strata resolves before planning.
pub const TABLE_FUNCTIONS: &[&str] = &[
    "read_files",
    "read_parquet",
    "read_csv",
    "read_csv_auto",
    "read_tsv",
    "read_json",
    "read_json_auto",
    "read_ndjson",
    "read_arrow",
    "read_ipc",
    "read_avro",
    "list_files",
    "parquet_metadata",
    "postgres_scan",
    "mysql_scan",
    "sqlite_scan",
];

/// A constant argument of a table function call.
#[derive(Debug, Clone, PartialEq)]
pub enum ArgValue {
    /// A string (or bare identifier).
    Text(String),
    /// A list of strings: `['a.csv', 'b.csv']`.
    List(Vec<String>),
}

impl ArgValue {
    /// The value as option text.
    pub fn as_text(&self) -> String {
        match self {
            ArgValue::Text(s) => s.clone(),
            ArgValue::List(v) => v.join(","),
        }
    }
}

/// A call to one of [`TABLE_FUNCTIONS`], with its arguments evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct TableFunctionCall {
    /// The function name, lowercase.
    pub name: String,
    /// Positional arguments.
    pub positional: Vec<ArgValue>,
    /// `key = value` / `key => value` options, keys lowercase.
    pub named: Vec<(String, ArgValue)>,
}

/// Parse SQL text into statements with the given dialect name.
pub fn parse_statements(sql: &str, dialect: &str) -> Result<Vec<DfStatement>> {
    let dialect = dialect_from_str(dialect)
        .ok_or_else(|| Error::Config(format!("unknown SQL dialect '{dialect}'")))?;
    // The nesting checks read the tokens the parser then parses; text that does not
    // tokenize goes to the parser as it is, for its error.
    let parser = match Tokenizer::new(dialect.as_ref(), sql).tokenize_with_location() {
        Ok(tokens) => {
            check_token_depth(&tokens)?;
            check_subquery_depth(&tokens)?;
            DFParserBuilder::new(tokens)
        }
        Err(_) => DFParserBuilder::new(sql),
    };
    let statements = parser
        .with_dialect(dialect.as_ref())
        .with_recursion_limit(PARSER_RECURSION_LIMIT)
        .build()
        .and_then(|mut parser| parser.parse_statements())
        .map_err(|e| match e {
            DataFusionError::SQL(ref cause, _)
                if matches!(**cause, ParserError::RecursionLimitExceeded) =>
            {
                Error::Syntax {
                    message: format!(
                        "brackets, subqueries or prefix operators (NOT, -) nest more than \
                         {PARSER_RECURSION_LIMIT} deep here; split the statement up"
                    ),
                    position: deepest_bracket(sql),
                }
            }
            e => Error::from(e),
        })?;
    Ok(statements.into_iter().collect())
}

/// How deep the parser may recurse: a bracket costs it one level, a subquery two or three, a
/// prefix operator (`NOT`, `-`) one. The parser's default (50) refused 45 nested brackets,
/// which DuckDB and PostgreSQL accept. What plans and names the parsed statement recurses
/// further, some of it on stack segments of 2 MiB: in a debug build, 160 nested `NOT`s or 100
/// nested derived tables overflow such a segment where 128 and 90 do not.
const PARSER_RECURSION_LIMIT: usize = 128;

/// Where brackets (and `CASE ... END`) nest deepest in `sql`: the first token at that depth.
fn deepest_bracket(sql: &str) -> Option<crate::error::Position> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .ok()?;
    let (mut depth, mut deepest, mut at) = (0usize, 0usize, None);
    for token in &tokens {
        match &token.token {
            Token::LParen | Token::LBracket | Token::LBrace => depth += 1,
            Token::Word(w) if w.keyword == K::CASE => depth += 1,
            Token::RParen | Token::RBracket | Token::RBrace => depth = depth.saturating_sub(1),
            Token::Word(w) if w.keyword == K::END => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > deepest {
            deepest = depth;
            at = Some(token.span.start);
        }
    }
    at.map(crate::error::Position::from)
}

/// How deep subqueries in expressions (scalar, `IN`, `EXISTS`) may nest. DataFusion's time
/// to plan them doubles with each level (it checks each subquery's plan once more for every
/// subquery around it), and planning cannot be cancelled: in a release build 16 levels take
/// 0.3 s, 20 levels 4.5 s, 24 levels over a minute. Derived tables (`FROM (SELECT ...)`) do
/// not add to it.
pub const MAX_SUBQUERY_DEPTH: usize = 20;

/// Refuse SQL whose subqueries in expressions nest deeper than [`MAX_SUBQUERY_DEPTH`], judged
/// from its tokens: a bracket that opens with `SELECT`, `WITH` or `VALUES` and does not follow
/// `FROM`, `JOIN` or `LATERAL`.
fn check_subquery_depth(tokens: &[TokenWithSpan]) -> Result<()> {
    // Each open bracket: whether it holds a subquery in an expression.
    let mut open: Vec<bool> = Vec::new();
    let mut subqueries = 0usize;
    // The last token and the one before it, whitespace aside.
    let (mut last, mut before): (Option<&Token>, Option<&Token>) = (None, None);
    for token in tokens {
        match &token.token {
            Token::Whitespace(_) => continue,
            Token::LParen => open.push(false),
            Token::RParen => subqueries -= usize::from(open.pop() == Some(true)),
            Token::Word(w) if matches!(w.keyword, K::SELECT | K::WITH | K::VALUES) => {
                let derived = matches!(before, Some(Token::Word(b))
                    if matches!(b.keyword, K::FROM | K::JOIN | K::LATERAL));
                if matches!(last, Some(Token::LParen)) && !derived {
                    if let Some(top) = open.last_mut() {
                        *top = true;
                    }
                    subqueries += 1;
                    if subqueries > MAX_SUBQUERY_DEPTH {
                        return Err(Error::Syntax {
                            message: format!(
                                "subqueries nest more than {MAX_SUBQUERY_DEPTH} deep here; \
                                 planning them takes time that doubles with each level"
                            ),
                            position: Some(token.span.start.into()),
                        });
                    }
                }
            }
            _ => {}
        }
        (last, before) = (Some(&token.token), last);
    }
    Ok(())
}

/// How deep expressions may nest (DuckDB's `max_expression_depth` is 1000): what walks a
/// deeper one (copying, rewriting, planning, naming, dropping it) could overflow its thread's
/// stack, and planning takes time that grows faster than the depth. The deepest allowed takes
/// about 2 MiB of stack in a debug build; the `strata` command's threads have 16 MiB.
pub const MAX_EXPRESSION_DEPTH: usize = 256;

/// Refuse SQL whose expressions nest deeper than [`MAX_EXPRESSION_DEPTH`], judged from its
/// tokens before anything is parsed. The parser limits nesting by brackets itself, but builds
/// a chain of operators (`1 + 1 + ...`, `a = 1 OR a = 2 OR ...`) one level deeper per
/// operator. The depth at a token is bounded by the operators before it in each open
/// bracket (parentheses, `[ ]`, `CASE ... END`); a comma or a keyword that starts another
/// part of the statement (`WHERE`, `AS`, `WHEN`, ...) ends a chain.
pub fn check_expression_depth(sql: &str) -> Result<()> {
    // Shallow text cannot nest that deep.
    if sql.len() < MAX_EXPRESSION_DEPTH {
        return Ok(());
    }
    // Text that does not tokenize gets the parser's error.
    match Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location() {
        Ok(tokens) => check_token_depth(&tokens),
        Err(_) => Ok(()),
    }
}

/// [`check_expression_depth`] of tokenized SQL.
fn check_token_depth(tokens: &[TokenWithSpan]) -> Result<()> {
    // Operators so far in the chain of each open bracket, and their sum.
    let mut chains: Vec<usize> = vec![0];
    let mut depth = 0usize;
    for token in tokens {
        let last = chains.len() - 1;
        match &token.token {
            Token::Whitespace(_)
            | Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::Period
            | Token::Placeholder(_) => {}
            Token::LParen | Token::LBracket | Token::LBrace => chains.push(0),
            Token::Word(w) if w.keyword == K::CASE => chains.push(0),
            Token::RParen | Token::RBracket | Token::RBrace if chains.len() > 1 => {
                depth -= chains.pop().unwrap_or(0);
            }
            Token::Word(w) if w.keyword == K::END && chains.len() > 1 => {
                depth -= chains.pop().unwrap_or(0);
            }
            Token::Comma | Token::SemiColon => {
                depth -= std::mem::take(&mut chains[last]);
            }
            Token::Word(w) => match w.keyword {
                K::AND
                | K::OR
                | K::XOR
                | K::NOT
                | K::IS
                | K::IN
                | K::LIKE
                | K::ILIKE
                | K::SIMILAR
                | K::REGEXP
                | K::RLIKE
                | K::BETWEEN
                | K::COLLATE
                | K::AT
                | K::DIV
                | K::OVERLAPS => {
                    chains[last] += 1;
                    depth += 1;
                }
                K::SELECT
                | K::FROM
                | K::WHERE
                | K::GROUP
                | K::HAVING
                | K::ORDER
                | K::LIMIT
                | K::OFFSET
                | K::UNION
                | K::EXCEPT
                | K::INTERSECT
                | K::JOIN
                | K::ON
                | K::USING
                | K::WINDOW
                | K::QUALIFY
                | K::VALUES
                | K::WITH
                | K::AS
                | K::WHEN
                | K::THEN
                | K::ELSE
                | K::RETURNING => {
                    depth -= std::mem::take(&mut chains[last]);
                }
                _ => {}
            },
            // Every other symbol may be an operator.
            _ => {
                chains[last] += 1;
                depth += 1;
            }
        }
        if depth + chains.len() > MAX_EXPRESSION_DEPTH {
            return Err(Error::Syntax {
                message: format!(
                    "expressions nest more than {MAX_EXPRESSION_DEPTH} deep here; split the \
                     expression up (a long chain of OR'ed equalities is an IN list)"
                ),
                position: Some(token.span.start.into()),
            });
        }
    }
    Ok(())
}

/// Find the table-function calls in `stmt`, replace each call's arguments by a single string
/// key produced by `key_for`, and return the calls in order with their keys.
pub fn extract_table_functions(
    stmt: &mut DfStatement,
    mut key_for: impl FnMut() -> String,
) -> Result<Vec<(String, TableFunctionCall)>> {
    let mut v = Extractor {
        key_for: &mut key_for,
        calls: Vec::new(),
    };
    let flow = match stmt {
        DfStatement::Statement(s) => s.visit(&mut v),
        DfStatement::Explain(e) => match e.statement.as_mut() {
            DfStatement::Statement(s) => s.visit(&mut v),
            _ => ControlFlow::Continue(()),
        },
        DfStatement::CopyTo(c) => match &mut c.source {
            datafusion::sql::parser::CopyToSource::Query(q) => q.visit(&mut v),
            _ => ControlFlow::Continue(()),
        },
        _ => ControlFlow::Continue(()),
    };
    if let ControlFlow::Break(e) = flow {
        return Err(e);
    }
    Ok(v.calls)
}

struct Extractor<'a> {
    key_for: &'a mut dyn FnMut() -> String,
    calls: Vec<(String, TableFunctionCall)>,
}

impl VisitorMut for Extractor<'_> {
    type Break = Error;

    fn pre_visit_table_factor(&mut self, tf: &mut TableFactor) -> ControlFlow<Error> {
        if let Some(path) = quoted_location(tf) {
            // `FROM 'data/x.parquet'` reads the files, named after the file's stem.
            let key = (self.key_for)();
            if let TableFactor::Table {
                name, args, alias, ..
            } = tf
            {
                *name = ObjectName::from(vec![Ident::new("read_files")]);
                *args = Some(TableFunctionArgs {
                    args: vec![key_arg(&key)],
                    settings: None,
                });
                if alias.is_none() {
                    *alias = Some(table_alias(&stem_of(&path)));
                }
            }
            self.calls.push((
                key,
                TableFunctionCall {
                    name: "read_files".into(),
                    positional: vec![ArgValue::Text(path)],
                    named: vec![],
                },
            ));
            return ControlFlow::Continue(());
        }
        let TableFactor::Table {
            name,
            args: Some(args),
            alias,
            ..
        } = tf
        else {
            return ControlFlow::Continue(());
        };
        let fname = name.to_string().to_ascii_lowercase();
        if !TABLE_FUNCTIONS.contains(&fname.as_str()) {
            return ControlFlow::Continue(());
        }
        let call = match evaluate_args(&fname, args) {
            Ok(c) => c,
            Err(e) => return ControlFlow::Break(e),
        };
        let key = (self.key_for)();
        args.args = vec![key_arg(&key)];
        if alias.is_none() {
            // Keep columns addressable as read_csv.x, as DuckDB does.
            *alias = Some(table_alias(&fname));
        }
        self.calls.push((key, call));
        ControlFlow::Continue(())
    }
}

fn key_arg(key: &str) -> FunctionArg {
    FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(ValueWithSpan {
        value: Value::SingleQuotedString(key.to_string()),
        span: Span::empty(),
    })))
}

fn table_alias(name: &str) -> TableAlias {
    TableAlias {
        name: Ident::new(name),
        columns: vec![],
        explicit: false,
        at: None,
    }
}

/// A relation written as a quoted location: `FROM 'data/x.csv'` or `FROM "s3://b/k/"`.
fn quoted_location(tf: &TableFactor) -> Option<String> {
    let TableFactor::Table {
        name, args: None, ..
    } = tf
    else {
        return None;
    };
    let [part] = name.0.as_slice() else {
        return None;
    };
    let ident = part.as_ident()?;
    (ident.quote_style.is_some() && crate::dataset::looks_like_location(&ident.value))
        .then(|| ident.value.clone())
}

/// The file stem of a location, as a table name: `data/people.csv` -> `people`.
fn stem_of(location: &str) -> String {
    let last = location
        .trim_end_matches('/')
        .rsplit('/')
        .find(|s| !s.contains(['*', '?', '[']) && !s.is_empty())
        .unwrap_or(location);
    last.split('.').next().unwrap_or(last).to_string()
}

fn evaluate_args(fname: &str, args: &TableFunctionArgs) -> Result<TableFunctionCall> {
    let mut call = TableFunctionCall {
        name: fname.to_string(),
        positional: Vec::new(),
        named: Vec::new(),
    };
    for arg in &args.args {
        match arg {
            FunctionArg::Named {
                name,
                arg: FunctionArgExpr::Expr(e),
                ..
            } => call
                .named
                .push((name.value.to_ascii_lowercase(), constant(fname, e)?)),
            FunctionArg::ExprNamed {
                name: Expr::Identifier(name),
                arg: FunctionArgExpr::Expr(e),
                ..
            } => call
                .named
                .push((name.value.to_ascii_lowercase(), constant(fname, e)?)),
            FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            })) if matches!(left.as_ref(), Expr::Identifier(_)) => {
                let Expr::Identifier(name) = left.as_ref() else {
                    unreachable!()
                };
                call.named
                    .push((name.value.to_ascii_lowercase(), constant(fname, right)?));
            }
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => {
                call.positional.push(constant(fname, e)?)
            }
            other => {
                return Err(Error::plan(format!(
                    "{fname}: unsupported argument {other}; pass a path, a list of paths or key = value options"
                )));
            }
        }
    }
    Ok(call)
}

fn constant(fname: &str, e: &Expr) -> Result<ArgValue> {
    match e {
        Expr::Value(v) => value_text(&v.value)
            .map(ArgValue::Text)
            .ok_or_else(|| not_constant(fname, e)),
        Expr::Identifier(i) => Ok(ArgValue::Text(i.value.clone())),
        Expr::Array(a) => a
            .elem
            .iter()
            .map(|x| match x {
                Expr::Value(v) => value_text(&v.value).ok_or_else(|| not_constant(fname, x)),
                _ => Err(not_constant(fname, x)),
            })
            .collect::<Result<Vec<_>>>()
            .map(ArgValue::List),
        Expr::Nested(inner) => constant(fname, inner),
        Expr::UnaryOp { op, expr } => match (op, constant(fname, expr)?) {
            (datafusion::sql::sqlparser::ast::UnaryOperator::Minus, ArgValue::Text(t)) => {
                Ok(ArgValue::Text(format!("-{t}")))
            }
            _ => Err(not_constant(fname, e)),
        },
        _ => Err(not_constant(fname, e)),
    }
}

fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::SingleQuotedString(s)
        | Value::DoubleQuotedString(s)
        | Value::EscapedStringLiteral(s)
        | Value::TripleSingleQuotedString(s) => Some(s.clone()),
        Value::Number(n, _) => Some(n.to_string()),
        Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn not_constant(fname: &str, e: &Expr) -> Error {
    Error::plan(format!(
        "{fname}: argument {e} must be a constant string, number, boolean or list of strings"
    ))
}

/// Split SQL text into statements on `;` outside quotes, comments and dollar-quoted strings.
/// Each statement keeps its original text; empty statements are dropped.
pub fn split_statements(text: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' | b'"' | b'`' => {
                let q = bytes[i];
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == q {
                        if i + 1 < bytes.len() && bytes[i + 1] == q {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                if i >= bytes.len() {
                    return Err(Error::Syntax {
                        message: format!("unterminated {} quote", q as char),
                        position: Some(crate::error::Position::at(text, text.len())),
                    });
                }
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let end = text[i + 2..].find("*/").map(|e| i + 2 + e + 1);
                match end {
                    Some(e) => i = e,
                    None => {
                        return Err(Error::Syntax {
                            message: "unterminated /* comment".into(),
                            position: Some(crate::error::Position::at(text, i)),
                        });
                    }
                }
            }
            b'$' if bytes.get(i + 1) == Some(&b'$') => match text[i + 2..].find("$$") {
                Some(e) => i = i + 2 + e + 1,
                None => {
                    return Err(Error::Syntax {
                        message: "unterminated $$ string".into(),
                        position: Some(crate::error::Position::at(text, i)),
                    });
                }
            },
            b';' => {
                push_statement(&mut out, &text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    push_statement(&mut out, &text[start..]);
    Ok(out)
}

fn push_statement(out: &mut Vec<String>, s: &str) {
    if has_code(s) {
        out.push(s.trim().to_string());
    }
}

/// Whether text holds anything but white space and comments.
fn has_code(s: &str) -> bool {
    let mut rest = s.trim_start();
    loop {
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.split_once('\n').map(|x| x.1).unwrap_or("").trim_start();
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.split_once("*/").map(|x| x.1).unwrap_or("").trim_start();
        } else {
            return !rest.is_empty();
        }
    }
}

/// `DESCRIBE 'path'` (as in DuckDB) becomes `DESCRIBE SELECT * FROM 'path'`; other statements
/// are returned unchanged.
pub fn rewrite_describe_path(stmt: &str) -> String {
    let trimmed = stmt.trim().trim_end_matches(';').trim_end();
    let lower = trimmed.to_ascii_lowercase();
    let rest = ["describe ", "desc "]
        .iter()
        .find_map(|k| lower.starts_with(k).then(|| trimmed[k.len()..].trim()));
    match rest {
        Some(r)
            if r.len() >= 2
                && r.starts_with('\'')
                && r.ends_with('\'')
                && !r[1..r.len() - 1].contains('\'') =>
        {
            format!("DESCRIBE SELECT * FROM {r}")
        }
        _ => stmt.to_string(),
    }
}

/// Where a parser error that ran out of input points: the end of the statement.
pub fn end_position(text: &str) -> crate::error::Position {
    crate::error::Position::at(text, text.trim_end().len())
}

/// A plan drawn as a picture rather than as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanPicture {
    /// An SVG drawing ([`crate::plan_graph::svg`]).
    Svg,
    /// A Graphviz graph ([`crate::plan_graph::dot`]).
    Dot,
}

/// `EXPLAIN [ANALYZE] FORMAT svg|dot <query>`, or `EXPLAIN (ANALYZE, FORMAT svg) <query>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PictureExplain {
    /// The picture asked for.
    pub picture: PlanPicture,
    /// Run the query, and draw the plan with what each operator did.
    pub analyze: bool,
    /// The query to draw (empty if the statement ends before one).
    pub query: String,
}

/// The picture an `EXPLAIN` asks for, if it asks for one (DataFusion's own formats are left
/// to it).
pub fn picture_explain(text: &str) -> Option<PictureExplain> {
    let tokens = Tokenizer::new(&GenericDialect {}, text).tokenize().ok()?;
    let sig: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i], Token::Whitespace(_)))
        .collect();
    let word = |n: usize| match sig.get(n).map(|&i| &tokens[i]) {
        Some(Token::Word(w)) => Some(w.value.to_ascii_lowercase()),
        Some(Token::SingleQuotedString(s)) | Some(Token::DoubleQuotedString(s)) => {
            Some(s.to_ascii_lowercase())
        }
        _ => None,
    };
    if word(0)? != "explain" {
        return None;
    }
    let (mut analyze, mut format) = (false, None);
    let mut n = 1;
    if sig.get(1).map(|&i| &tokens[i]) == Some(&Token::LParen) {
        // `(ANALYZE [true|false], FORMAT name, ...)`
        n = 2;
        loop {
            match sig.get(n).map(|&i| &tokens[i])? {
                Token::RParen => break,
                Token::Comma => n += 1,
                _ => {
                    let option = word(n)?;
                    let value = word(n + 1)
                        .filter(|_| !matches!(tokens[sig[n + 1]], Token::Comma | Token::RParen));
                    match option.as_str() {
                        "analyze" => {
                            analyze = value
                                .as_deref()
                                .is_none_or(|v| matches!(v, "true" | "on" | "1"))
                        }
                        "format" => format = value.clone(),
                        _ => {}
                    }
                    n += 1 + usize::from(value.is_some());
                }
            }
        }
        n += 1;
    } else {
        if word(n).as_deref() == Some("analyze") {
            analyze = true;
            n += 1;
        }
        if word(n).as_deref() == Some("format") {
            format = word(n + 1);
            n += 2;
        }
    }
    let picture = match format?.as_str() {
        "svg" => PlanPicture::Svg,
        "dot" => PlanPicture::Dot,
        _ => return None,
    };
    // Empty when nothing follows: the statement is an EXPLAIN missing its query.
    let query = sig
        .get(n)
        .map(|&from| tokens[from..].iter().map(|t| t.to_string()).collect())
        .unwrap_or_default();
    Some(PictureExplain {
        picture,
        analyze,
        query,
    })
}

/// Accept DuckDB's `COPY ... TO 'target' (FORMAT parquet, PARTITION_BY (a, b), HEADER, ...)`
/// by rewriting the option list into DataFusion's `STORED AS`, `PARTITIONED BY` and `OPTIONS`.
/// Other statements are returned unchanged.
pub fn rewrite_copy_options(stmt: &str) -> Result<String> {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, stmt).tokenize() else {
        return Ok(stmt.to_string());
    };
    let significant = |t: &Token| !matches!(t, Token::Whitespace(_));
    let word = |t: &Token, w: &str| matches!(t, Token::Word(x) if x.value.eq_ignore_ascii_case(w));
    let sig: Vec<usize> = (0..tokens.len())
        .filter(|&i| significant(&tokens[i]))
        .collect();
    if sig.is_empty() || !word(&tokens[sig[0]], "COPY") {
        return Ok(stmt.to_string());
    }
    // Find `TO '<target>' (` at depth 0.
    let mut depth = 0i32;
    let mut open = None;
    for (n, &i) in sig.iter().enumerate() {
        match &tokens[i] {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            t if depth == 0 && word(t, "TO") => {
                if let (Some(&s), Some(&p)) = (sig.get(n + 1), sig.get(n + 2))
                    && matches!(tokens[s], Token::SingleQuotedString(_))
                    && tokens[p] == Token::LParen
                {
                    open = Some(p);
                }
                break;
            }
            _ => {}
        }
    }
    let Some(open) = open else {
        return Ok(stmt.to_string());
    };
    let mut close = None;
    let mut depth = 0;
    for (i, t) in tokens.iter().enumerate().skip(open) {
        match t {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    close = Some(i);
                    break;
                }
            }
            _ => {}
        }
    }
    let Some(close) = close else {
        return Ok(stmt.to_string());
    };

    // Split the option list into items at depth-0 commas.
    let mut items: Vec<Vec<&Token>> = vec![Vec::new()];
    let mut depth = 0;
    for t in &tokens[open + 1..close] {
        match t {
            Token::Comma if depth == 0 => items.push(Vec::new()),
            Token::Whitespace(_) => {}
            other => {
                if *other == Token::LParen {
                    depth += 1;
                } else if *other == Token::RParen {
                    depth -= 1;
                }
                if let Some(v) = items.last_mut() {
                    v.push(other);
                }
            }
        }
    }
    let raw = |t: &Token| -> String {
        match t {
            Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => s.clone(),
            Token::Word(w) => w.value.clone(),
            Token::Number(n, _) => n.clone(),
            other => other.to_string(),
        }
    };
    let mut stored_as = None;
    let mut partitioned = None;
    let mut options: Vec<(String, String)> = Vec::new();
    for item in items.into_iter().filter(|i| !i.is_empty()) {
        let key = raw(item[0]).to_ascii_lowercase();
        let value: String = item[1..]
            .iter()
            .map(|t| raw(t))
            .collect::<Vec<_>>()
            .join("");
        match key.as_str() {
            "format" => stored_as = Some(value.to_ascii_uppercase()),
            "partition_by" => {
                let cols: Vec<String> = item[1..]
                    .iter()
                    .filter(|t| matches!(t, Token::Word(_) | Token::DoubleQuotedString(_)))
                    .map(|t| t.to_string())
                    .collect();
                partitioned = Some(cols.join(", "));
            }
            "overwrite" | "overwrite_or_ignore" | "per_thread_output" | "use_tmp_file" => {}
            "header" => options.push((
                "format.has_header".into(),
                if value.is_empty() {
                    "true".into()
                } else {
                    value.to_ascii_lowercase()
                },
            )),
            "delimiter" | "delim" | "sep" => options.push((
                "format.delimiter".into(),
                if value == "\\t" { "\t".into() } else { value },
            )),
            "quote" => options.push(("format.quote".into(), value)),
            "escape" => options.push(("format.escape".into(), value)),
            "null" | "nullstr" => options.push(("format.null_value".into(), value)),
            "compression" | "codec" => {
                options.push(("format.compression".into(), value.to_ascii_lowercase()))
            }
            "row_group_size" => options.push(("format.max_row_group_size".into(), value)),
            other => options.push((format!("format.{other}"), value)),
        }
    }
    let mut out: String = tokens[..open].iter().map(|t| t.to_string()).collect();
    out.truncate(out.trim_end().len());
    if let Some(f) = stored_as {
        out.push_str(&format!(" STORED AS {f}"));
    }
    if let Some(p) = partitioned {
        out.push_str(&format!(" PARTITIONED BY ({p})"));
    }
    if !options.is_empty() {
        let opts: Vec<String> = options
            .iter()
            .map(|(k, v)| format!("'{}' '{}'", k, v.replace('\'', "''")))
            .collect();
        out.push_str(&format!(" OPTIONS ({})", opts.join(", ")));
    }
    out.extend(tokens[close + 1..].iter().map(|t| t.to_string()));
    Ok(out)
}

/// Short names for the settings users change most, accepted by `SET` and `SHOW`.
pub const SETTING_ALIASES: &[(&str, &str)] = &[
    ("threads", "datafusion.execution.target_partitions"),
    (
        "target_partitions",
        "datafusion.execution.target_partitions",
    ),
    ("batch_size", "datafusion.execution.batch_size"),
    ("memory_limit", "datafusion.runtime.memory_limit"),
    ("temp_directory", "datafusion.runtime.temp_directory"),
    ("spill_dir", "datafusion.runtime.temp_directory"),
    (
        "pushdown_filters",
        "datafusion.execution.parquet.pushdown_filters",
    ),
];

/// Replace a short setting name in `SET name = value` / `SHOW name` with its full name.
pub fn expand_setting_alias(stmt: &mut DfStatement) {
    use datafusion::sql::sqlparser::ast::{Set, Statement};
    let DfStatement::Statement(s) = stmt else {
        return;
    };
    let name = match s.as_mut() {
        Statement::Set(Set::SingleAssignment { variable, .. }) => variable,
        Statement::ShowVariable { variable } => {
            if let [one] = variable.as_mut_slice()
                && let Some((_, full)) = SETTING_ALIASES
                    .iter()
                    .find(|(a, _)| one.value.eq_ignore_ascii_case(a))
            {
                *variable = full.split('.').map(Ident::new).collect();
            }
            return;
        }
        _ => return,
    };
    let text = name.to_string();
    if let Some((_, full)) = SETTING_ALIASES
        .iter()
        .find(|(a, _)| text.eq_ignore_ascii_case(a))
    {
        *name = ObjectName::from(full.split('.').map(Ident::new).collect::<Vec<_>>());
    }
}

/// The prefix of the names [`alias_duplicate_names`] gives SELECT items.
pub const ITEM_PREFIX: &str = "__strata_item_";

/// For a query whose SELECT list repeats an output name (`SELECT 1 AS c, 2 AS c`,
/// `SELECT x, 76 AS x FROM t`, two unaliased subqueries), which PostgreSQL allows: give each
/// item whose name repeats, and each unaliased item that is neither a column nor `*` (whose
/// name DataFusion makes up, and may make up twice), a name of its own (`__strata_item_N`),
/// and return the name each should be shown with: its alias, column name or SQL text.
/// `None` when the outermost SELECT list has no such item.
pub fn alias_duplicate_names(stmt: &mut DfStatement) -> Option<Vec<(String, String)>> {
    use datafusion::sql::sqlparser::ast::{SelectItem, SetExpr, Statement};
    let DfStatement::Statement(s) = stmt else {
        return None;
    };
    let query = match s.as_mut() {
        Statement::Query(query) => query,
        // An INSERT's rows go to the table's columns by position: their names are not shown.
        Statement::Insert(insert) => {
            let source = insert.source.as_mut()?;
            let mut renamed = DfStatement::Statement(Box::new(Statement::Query(source.clone())));
            alias_duplicate_names(&mut renamed)?;
            if let DfStatement::Statement(s) = renamed
                && let Statement::Query(query) = *s
            {
                *source = query;
            }
            return Some(Vec::new());
        }
        _ => return None,
    };
    let mut body = query.body.as_mut();
    // A set operation's columns are named by its first SELECT.
    while let SetExpr::SetOperation { left, .. } = body {
        body = left.as_mut();
    }
    let SetExpr::Select(select) = body else {
        return None;
    };
    let shown: Vec<Option<String>> = select
        .projection
        .iter()
        .map(|item| match item {
            SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.clone()),
            SelectItem::UnnamedExpr(Expr::Identifier(i)) => Some(i.value.clone()),
            SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) => {
                parts.last().map(|i| i.value.clone())
            }
            SelectItem::UnnamedExpr(e) => Some(e.to_string()),
            _ => None,
        })
        .collect();
    let repeated = |name: &str| shown.iter().flatten().filter(|n| *n == name).count() > 1;
    let mut names = Vec::new();
    for (i, (item, name)) in select.projection.iter_mut().zip(&shown).enumerate() {
        let Some(name) = name else { continue };
        let expression = matches!(item, SelectItem::UnnamedExpr(e)
            if !matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_)));
        if !repeated(name) && !expression {
            continue;
        }
        let internal = format!("{ITEM_PREFIX}{i}");
        let expr = match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e.clone(),
            _ => continue,
        };
        *item = SelectItem::ExprWithAlias {
            expr,
            alias: Ident::new(&internal),
        };
        names.push((internal, name.clone()));
    }
    let nested = rename_nested_duplicates(stmt);
    (!names.is_empty() || nested).then_some(names)
}

/// The marker in the name [`alias_duplicate_names`] gives a repeated name in a derived table
/// or subquery (`a` becomes `a__strata_dup_1`); results show the name before it.
pub const DUPLICATE_MARK: &str = "__strata_dup_";

/// In every SELECT but the outermost (derived tables, CTEs, subqueries), a name that repeats
/// one before it gets a name of its own: PostgreSQL accepts `(SELECT a, b AS a FROM t) AS s`
/// and `SELECT *` over it shows two columns `a`. Returns whether any was renamed.
fn rename_nested_duplicates(stmt: &mut DfStatement) -> bool {
    use datafusion::sql::sqlparser::ast::{Query, SelectItem, SetExpr};
    struct Nested {
        depth: usize,
        renamed: bool,
    }
    impl VisitorMut for Nested {
        type Break = ();
        fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
            self.depth += 1;
            if self.depth == 1 {
                return ControlFlow::Continue(());
            }
            let mut body = query.body.as_mut();
            while let SetExpr::SetOperation { left, .. } = body {
                body = left.as_mut();
            }
            let SetExpr::Select(select) = body else {
                return ControlFlow::Continue(());
            };
            let mut seen: Vec<String> = Vec::new();
            for (i, item) in select.projection.iter_mut().enumerate() {
                let name = match item {
                    SelectItem::ExprWithAlias { alias, .. } => alias.value.clone(),
                    SelectItem::UnnamedExpr(Expr::Identifier(i)) => i.value.clone(),
                    SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) => {
                        match parts.last() {
                            Some(p) => p.value.clone(),
                            None => continue,
                        }
                    }
                    _ => continue,
                };
                if !seen.contains(&name) {
                    seen.push(name);
                    continue;
                }
                let expr = match item {
                    SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                        e.clone()
                    }
                    _ => continue,
                };
                *item = SelectItem::ExprWithAlias {
                    expr,
                    alias: Ident::new(format!("{name}{DUPLICATE_MARK}{i}")),
                };
                self.renamed = true;
            }
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _query: &mut Query) -> ControlFlow<()> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
    }
    let mut v = Nested {
        depth: 0,
        renamed: false,
    };
    visit_statement(stmt, &mut v);
    v.renamed
}

/// Aggregate functions an outer aggregate inside a subquery may be.
const OUTER_AGGREGATES: [&str; 10] = [
    "count", "sum", "avg", "min", "max", "bool_and", "bool_or", "every", "stddev", "variance",
];

/// The prefix of the columns [`hoist_outer_aggregates`] adds.
const OUTER_AGGREGATE_PREFIX: &str = "__strata_outer_agg_";

/// The name of the grouped copy of a FROM clause of several tables that
/// [`hoist_outer_aggregates`] reads outer aggregates from.
const OUTER_AGGREGATE_SOURCE: &str = "__strata_outer";

/// An aggregate of the outer query's columns inside a subquery (`SELECT g, (SELECT count(*)
/// FROM u WHERE u.x < min(t.a)) FROM t GROUP BY g`) is, as in PostgreSQL, the outer query's
/// aggregate over each group. For a grouped query whose subqueries name such aggregates with
/// the qualifiers of its FROM clause's tables, each is computed beside the rows and the
/// subquery reads it as a column of the group: over one table as a window over the groups
/// (`min(t.a) OVER (PARTITION BY g)`, the WHERE clause applied first); over several, from a
/// grouped copy of the FROM and WHERE clauses joined on the groups. Returns whether anything
/// was rewritten.
pub fn hoist_outer_aggregates(stmt: &mut DfStatement) -> bool {
    use datafusion::sql::sqlparser::ast::{Query, SetExpr};
    let DfStatement::Statement(s) = stmt else {
        return false;
    };
    // Every grouped SELECT of the statement, innermost first: the top one, derived tables,
    // CTEs and subqueries alike.
    struct Selects {
        hoisted: bool,
    }
    impl VisitorMut for Selects {
        type Break = ();
        fn post_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
            if let SetExpr::Select(select) = q.body.as_mut() {
                self.hoisted |= hoist_in_select(select);
            }
            ControlFlow::Continue(())
        }
    }
    let mut selects = Selects { hoisted: false };
    let _ = s.visit(&mut selects);
    selects.hoisted
}

/// [`hoist_outer_aggregates`] for one SELECT.
fn hoist_in_select(select: &mut datafusion::sql::sqlparser::ast::Select) -> bool {
    use datafusion::sql::sqlparser::ast::{GroupByExpr, SetExpr, Statement};
    let GroupByExpr::Expressions(groups, modifiers) = &select.group_by else {
        return false;
    };
    if groups.is_empty() || !modifiers.is_empty() || select.from.is_empty() {
        return false;
    }
    // The names the FROM clause's tables go by.
    let mut qualifiers = Vec::new();
    for relation in select
        .from
        .iter()
        .flat_map(|f| std::iter::once(&f.relation).chain(f.joins.iter().map(|j| &j.relation)))
    {
        let name = match relation {
            TableFactor::Table { alias: Some(a), .. }
            | TableFactor::Derived { alias: Some(a), .. } => a.name.value.clone(),
            TableFactor::Table {
                name, alias: None, ..
            } => match name.0.last() {
                Some(part) => part.to_string(),
                None => return false,
            },
            _ => return false,
        };
        qualifiers.push(name);
    }
    // One table: the aggregates become windows over its rows, under its own name. Several:
    // they come from a grouped copy of the FROM clause, joined on the groups.
    let single = qualifiers.len() == 1;
    let target = if single {
        qualifiers[0].clone()
    } else {
        OUTER_AGGREGATE_SOURCE.to_string()
    };
    // The groups as expressions (an ordinal or a SELECT alias stands for its item).
    let mut partition = Vec::with_capacity(groups.len());
    for g in groups.iter() {
        let item = match g {
            Expr::Value(ValueWithSpan {
                value: Value::Number(n, _),
                ..
            }) => n
                .parse::<usize>()
                .ok()
                .and_then(|i| select.projection.get(i.wrapping_sub(1))),
            Expr::Identifier(id) => select.projection.iter().find(|item| {
                matches!(item, datafusion::sql::sqlparser::ast::SelectItem::ExprWithAlias { alias, .. } if alias.value == id.value)
            }),
            _ => None,
        };
        let expr = match item {
            Some(datafusion::sql::sqlparser::ast::SelectItem::UnnamedExpr(e))
            | Some(datafusion::sql::sqlparser::ast::SelectItem::ExprWithAlias {
                expr: e, ..
            }) => e.clone(),
            Some(_) => return false,
            None => g.clone(),
        };
        if expr.to_string().to_ascii_uppercase().contains("SELECT") {
            return false;
        }
        partition.push(expr.to_string());
    }

    struct Hoist {
        qualifiers: Vec<String>,
        /// The name the hoisted columns are read under.
        target: String,
        /// For each enclosing subquery, whether it names the table itself (binding the
        /// qualifier to its own rows, where nothing is hoisted).
        scopes: Vec<bool>,
        found: Vec<String>,
    }
    impl Hoist {
        /// Whether `e` refers only to `qualifier.column` columns of the FROM clause, at
        /// least one.
        fn outer_only(&self, e: &Expr) -> bool {
            let mut outer = 0;
            let mut other = false;
            let _ = datafusion::sql::sqlparser::ast::visit_expressions(e, |x: &Expr| {
                match x {
                    Expr::CompoundIdentifier(parts)
                        if parts.len() == 2
                            && self
                                .qualifiers
                                .iter()
                                .any(|q| parts[0].value.eq_ignore_ascii_case(q)) =>
                    {
                        outer += 1
                    }
                    Expr::Identifier(_)
                    | Expr::CompoundIdentifier(_)
                    | Expr::Subquery(_)
                    | Expr::Exists { .. }
                    | Expr::InSubquery { .. } => other = true,
                    _ => {}
                }
                ControlFlow::<()>::Continue(())
            });
            outer > 0 && !other
        }
    }
    impl VisitorMut for Hoist {
        type Break = ();
        fn pre_visit_query(
            &mut self,
            q: &mut datafusion::sql::sqlparser::ast::Query,
        ) -> ControlFlow<()> {
            let rebinds = q.to_string().split_whitespace().any(|w| {
                let w = w.trim_end_matches([',', ')']);
                self.qualifiers.iter().any(|q| w.eq_ignore_ascii_case(q))
            });
            self.scopes.push(rebinds);
            ControlFlow::Continue(())
        }
        fn post_visit_query(
            &mut self,
            _q: &mut datafusion::sql::sqlparser::ast::Query,
        ) -> ControlFlow<()> {
            self.scopes.pop();
            ControlFlow::Continue(())
        }
        fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            if self.scopes.is_empty() || self.scopes.contains(&true) {
                return ControlFlow::Continue(());
            }
            let Expr::Function(f) = e else {
                return ControlFlow::Continue(());
            };
            let name = f.name.to_string().to_ascii_lowercase();
            let datafusion::sql::sqlparser::ast::FunctionArguments::List(list) = &f.args else {
                return ControlFlow::Continue(());
            };
            let args_outer = list.args.iter().all(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) => self.outer_only(x),
                _ => false,
            });
            if !OUTER_AGGREGATES.contains(&name.as_str())
                || f.over.is_some()
                || f.filter.is_some()
                || list.duplicate_treatment.is_some()
                || list.args.is_empty()
                || !args_outer
            {
                return ControlFlow::Continue(());
            }
            let column = format!("{OUTER_AGGREGATE_PREFIX}{}", self.found.len());
            self.found.push(f.to_string());
            *e = Expr::CompoundIdentifier(vec![Ident::new(&self.target), Ident::new(column)]);
            ControlFlow::Continue(())
        }
    }
    let mut hoist = Hoist {
        qualifiers,
        target: target.clone(),
        scopes: Vec::new(),
        found: Vec::new(),
    };
    // Only inside subqueries of the SELECT list and HAVING.
    for item in select.projection.iter_mut() {
        let _ = item.visit(&mut hoist);
    }
    if let Some(having) = select.having.as_mut() {
        let _ = having.visit(&mut hoist);
    }
    if hoist.found.is_empty() {
        return false;
    }
    let dialect = datafusion::sql::sqlparser::dialect::GenericDialect {};
    let parse_select = |text: &str| -> Option<Box<datafusion::sql::sqlparser::ast::Select>> {
        let mut parsed =
            datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, text).ok()?;
        let Some(Statement::Query(q)) = parsed.pop() else {
            return None;
        };
        match *q.body {
            SetExpr::Select(s) => Some(s),
            _ => None,
        }
    };
    let added = (0..hoist.found.len()).map(|i| {
        Expr::CompoundIdentifier(vec![
            Ident::new(&target),
            Ident::new(format!("{OUTER_AGGREGATE_PREFIX}{i}")),
        ])
    });
    if single {
        let windows: Vec<String> = hoist
            .found
            .iter()
            .enumerate()
            .map(|(i, call)| {
                format!(
                    "{call} OVER (PARTITION BY {}) AS {OUTER_AGGREGATE_PREFIX}{i}",
                    partition.join(", ")
                )
            })
            .collect();
        let filter = select
            .selection
            .take()
            .map(|w| format!(" WHERE {w}"))
            .unwrap_or_default();
        let text = format!(
            "SELECT 1 FROM (SELECT *, {} FROM {}{filter}) AS {}",
            windows.join(", "),
            select.from[0].relation,
            Ident::new(&target)
        );
        let Some(mut derived) = parse_select(&text) else {
            return false;
        };
        select.from = std::mem::take(&mut derived.from);
    } else {
        // SELECT ... FROM a JOIN b ... WHERE w GROUP BY g becomes SELECT ... FROM a JOIN b ...,
        // (SELECT g AS k0, agg AS a0 FROM a JOIN b ... WHERE w GROUP BY g) AS src
        // WHERE w AND src.k0 IS NOT DISTINCT FROM g GROUP BY g, src.a0.
        let from: Vec<String> = select.from.iter().map(|f| f.to_string()).collect();
        let keys: Vec<String> = partition
            .iter()
            .enumerate()
            .map(|(i, g)| format!("{g} AS {OUTER_AGGREGATE_PREFIX}k{i}"))
            .chain(
                hoist
                    .found
                    .iter()
                    .enumerate()
                    .map(|(i, call)| format!("{call} AS {OUTER_AGGREGATE_PREFIX}{i}")),
            )
            .collect();
        let filter = select
            .selection
            .as_ref()
            .map(|w| format!(" WHERE {w}"))
            .unwrap_or_default();
        let matches: Vec<String> = partition
            .iter()
            .enumerate()
            .map(|(i, g)| format!("{target}.{OUTER_AGGREGATE_PREFIX}k{i} IS NOT DISTINCT FROM {g}"))
            .collect();
        let outer_filter = match &select.selection {
            Some(w) => format!("({w}) AND {}", matches.join(" AND ")),
            None => matches.join(" AND "),
        };
        let text = format!(
            "SELECT 1 FROM {}, (SELECT {} FROM {}{filter} GROUP BY {}) AS {target} WHERE {outer_filter}",
            from.join(", "),
            keys.join(", "),
            from.join(", "),
            partition.join(", "),
        );
        let Some(mut rewritten) = parse_select(&text) else {
            return false;
        };
        select.from = std::mem::take(&mut rewritten.from);
        select.selection = rewritten.selection.take();
    }
    let GroupByExpr::Expressions(groups, _) = &mut select.group_by else {
        return false;
    };
    groups.extend(added);
    true
}

/// Numbers written with an exponent (`1e10`, `2.5E-3`) are DOUBLE, as in DuckDB; other
/// numbers with a fraction are exact decimals (`parse_float_as_decimal`).
pub fn exponent_literals_as_double(stmt: &mut DfStatement) {
    use datafusion::sql::sqlparser::ast::{CastKind, DataType as SqlType};
    struct Exponents;
    impl VisitorMut for Exponents {
        type Break = ();
        fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
            if let Expr::Value(ValueWithSpan {
                value: Value::Number(n, _),
                span,
            }) = expr
                && n.contains(['e', 'E'])
            {
                *expr = Expr::Cast {
                    kind: CastKind::Cast,
                    expr: Box::new(Expr::Value(ValueWithSpan {
                        value: Value::SingleQuotedString(n.clone()),
                        span: *span,
                    })),
                    data_type: SqlType::Double(
                        datafusion::sql::sqlparser::ast::ExactNumberInfo::None,
                    ),
                    array: false,
                    format: None,
                };
            }
            ControlFlow::Continue(())
        }
    }
    visit_statement(stmt, &mut Exponents);
}

/// `a IS [NOT] DISTINCT FROM b AND c` means `(a IS [NOT] DISTINCT FROM b) AND c`, as in
/// PostgreSQL (IS binds tighter than NOT, AND and OR); the SQL parser reads the whole rest of
/// the expression as the right operand. Its right operand is re-associated here, unless the
/// query wrote the parentheses.
pub fn distinct_from_precedence(stmt: &mut DfStatement) {
    use datafusion::sql::sqlparser::ast::BinaryOperator;
    /// `left IS [NOT] DISTINCT FROM right`, with `right` split at its first AND or OR.
    fn reassociate(left: Expr, right: Expr, negated: bool) -> Expr {
        match right {
            Expr::BinaryOp {
                left: first,
                op: op @ (BinaryOperator::And | BinaryOperator::Or),
                right: rest,
            } => Expr::BinaryOp {
                left: Box::new(reassociate(left, *first, negated)),
                op,
                right: rest,
            },
            right if negated => Expr::IsNotDistinctFrom(Box::new(left), Box::new(right)),
            right => Expr::IsDistinctFrom(Box::new(left), Box::new(right)),
        }
    }
    struct Precedence;
    impl VisitorMut for Precedence {
        type Break = ();
        fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
            let negated = match expr {
                Expr::IsDistinctFrom(_, r) | Expr::IsNotDistinctFrom(_, r)
                    if matches!(
                        r.as_ref(),
                        Expr::BinaryOp {
                            op: BinaryOperator::And | BinaryOperator::Or,
                            ..
                        }
                    ) =>
                {
                    matches!(expr, Expr::IsNotDistinctFrom(..))
                }
                _ => return ControlFlow::Continue(()),
            };
            let placeholder = Expr::Value(ValueWithSpan {
                value: Value::Null,
                span: datafusion::sql::sqlparser::tokenizer::Span::empty(),
            });
            if let Expr::IsDistinctFrom(l, r) | Expr::IsNotDistinctFrom(l, r) =
                std::mem::replace(expr, placeholder)
            {
                *expr = reassociate(*l, *r, negated);
            }
            ControlFlow::Continue(())
        }
    }
    visit_statement(stmt, &mut Precedence);
}

/// `(a, b) [NOT] IN (SELECT x, y ...)`, a row compared with a subquery's rows, which
/// DataFusion does not plan: rewritten into EXISTS tests with PostgreSQL's answer, TRUE when
/// some row equals, NULL when none does but some comparison is unknown, FALSE otherwise.
pub fn expand_row_in_subqueries(stmt: &mut DfStatement) -> Result<()> {
    struct Rows(Option<Error>);
    impl VisitorMut for Rows {
        type Break = ();
        fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
            let Expr::InSubquery {
                expr: left,
                subquery,
                negated,
            } = expr
            else {
                return ControlFlow::Continue(());
            };
            let items = match left.as_ref() {
                Expr::Tuple(items) if items.len() > 1 => items,
                _ => return ControlFlow::Continue(()),
            };
            let columns: Vec<String> = (0..items.len()).map(|i| format!("__c{i}")).collect();
            let equal = items
                .iter()
                .zip(&columns)
                .map(|(item, c)| format!("__strata_row.{c} = ({item})"))
                .collect::<Vec<_>>()
                .join(" AND ");
            let rows = format!(
                "SELECT 1 FROM ({subquery}) AS __strata_row({})",
                columns.join(", ")
            );
            let test = format!(
                "CASE WHEN EXISTS ({rows} WHERE {equal}) THEN TRUE \
                 WHEN EXISTS ({rows} WHERE ({equal}) IS NULL) THEN NULL ELSE FALSE END"
            );
            let text = if *negated {
                format!("NOT ({test})")
            } else {
                test
            };
            let dialect = datafusion::sql::sqlparser::dialect::GenericDialect {};
            match datafusion::sql::sqlparser::parser::Parser::new(&dialect)
                .try_with_sql(&text)
                .and_then(|mut p| p.parse_expr())
            {
                Ok(rewritten) => *expr = rewritten,
                Err(e) => {
                    self.0 = Some(Error::plan(format!("row IN subquery: {e}")));
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = Rows(None);
    visit_statement(stmt, &mut v);
    v.0.map_or(Ok(()), Err)
}

/// Visit the SQL statement inside `stmt` (also under EXPLAIN and COPY).
fn visit_statement<V: VisitorMut<Break = ()>>(stmt: &mut DfStatement, v: &mut V) {
    let _ = match stmt {
        DfStatement::Statement(s) => s.visit(v),
        DfStatement::Explain(e) => match e.statement.as_mut() {
            DfStatement::Statement(s) => s.visit(v),
            _ => ControlFlow::Continue(()),
        },
        DfStatement::CopyTo(c) => match &mut c.source {
            datafusion::sql::parser::CopyToSource::Query(q) => q.visit(v),
            _ => ControlFlow::Continue(()),
        },
        _ => ControlFlow::Continue(()),
    };
}

/// Rewrite `x op ANY/ALL (subquery)` so the subquery's output is a derived table's column.
///
/// DataFusion decorrelates these into joins whose predicate names the outer column; when the
/// subquery reads the same table as the outer query, the outer `t.x` is captured by the inner
/// `t` and the comparison becomes `t.x > t.x`, a silently wrong answer. Reading the subquery
/// through `(subquery) AS __strata_sq(__strata_v)` keeps the two scopes apart.
/// Returns whether anything was rewritten. A subquery that refers to the outer query cannot be
/// isolated this way; callers plan the original statement when the rewritten one fails.
pub fn isolate_quantified_subqueries(stmt: &mut DfStatement) -> bool {
    struct Isolate(bool);
    impl VisitorMut for Isolate {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
            let right = match expr {
                Expr::AllOp { right, .. } | Expr::AnyOp { right, .. } => right,
                _ => return ControlFlow::Continue(()),
            };
            if let Expr::Subquery(q) = right.as_mut()
                && let Some(wrapped) = wrap_subquery(q)
            {
                *q = wrapped;
                self.0 = true;
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = Isolate(false);
    visit_statement(stmt, &mut v);
    v.0
}

fn wrap_subquery(
    inner: &datafusion::sql::sqlparser::ast::Query,
) -> Option<Box<datafusion::sql::sqlparser::ast::Query>> {
    use datafusion::sql::sqlparser::ast::{SetExpr, Statement};
    let text = "SELECT __strata_v FROM (SELECT 1) AS __strata_sq(__strata_v)";
    let dialect = datafusion::sql::sqlparser::dialect::GenericDialect {};
    let mut parsed = datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, text).ok()?;
    let Statement::Query(mut outer) = parsed.pop()? else {
        return None;
    };
    let SetExpr::Select(select) = outer.body.as_mut() else {
        return None;
    };
    let TableFactor::Derived { subquery, .. } = &mut select.from.first_mut()?.relation else {
        return None;
    };
    **subquery = inner.clone();
    Some(outer)
}

/// Number `?` parameters `$1`, `$2`, … in the order they appear, as drivers that send `?`
/// (JDBC, ODBC, ADBC) mean them; after the highest `$n` when a statement has both.
pub fn number_placeholders(stmt: &mut DfStatement) {
    struct Numbering {
        last: usize,
        assign: bool,
    }
    impl VisitorMut for Numbering {
        type Break = ();
        fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
            if let Expr::Value(ValueWithSpan {
                value: Value::Placeholder(p),
                ..
            }) = expr
            {
                if p == "?" && self.assign {
                    self.last += 1;
                    *p = format!("${}", self.last);
                } else if let Some(n) = p.strip_prefix('$').and_then(|n| n.parse().ok()) {
                    self.last = self.last.max(n);
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut numbering = Numbering {
        last: 0,
        assign: false,
    };
    visit_statement(stmt, &mut numbering);
    numbering.assign = true;
    visit_statement(stmt, &mut numbering);
}

/// Whether a statement only reads: queries, `EXPLAIN` of one, `SHOW`, `DESCRIBE`. Anything
/// else writes files, changes tables or changes settings.
pub fn only_reads(stmt: &DfStatement) -> bool {
    use datafusion::sql::sqlparser::ast::Statement as S;
    match stmt {
        DfStatement::Statement(s) => matches!(
            s.as_ref(),
            S::Query(_)
                | S::ShowTables { .. }
                | S::ShowColumns { .. }
                | S::ShowVariable { .. }
                | S::ShowVariables { .. }
                | S::ShowFunctions { .. }
                | S::ShowCreate { .. }
                | S::ShowSchemas { .. }
                | S::ShowDatabases { .. }
                | S::ExplainTable { .. }
        ),
        // EXPLAIN ANALYZE runs what it explains.
        DfStatement::Explain(e) => only_reads(&e.statement),
        DfStatement::CreateExternalTable(_) | DfStatement::CopyTo(_) | DfStatement::Reset(_) => {
            false
        }
    }
}

/// The setting a statement changes (`SET name = ...`, `RESET name`), if it changes one; for
/// the other forms of `SET` (`SET TIME ZONE ...`), the statement's text.
pub fn changed_setting(stmt: &DfStatement) -> Option<String> {
    use datafusion::sql::parser::ResetStatement;
    use datafusion::sql::sqlparser::ast::{Set, Statement as S};
    match stmt {
        DfStatement::Statement(s) => match s.as_ref() {
            S::Set(Set::SingleAssignment { variable, .. }) => Some(variable.to_string()),
            S::Set(_) => Some(s.to_string()),
            _ => None,
        },
        DfStatement::Reset(ResetStatement::Variable(name)) => Some(name.to_string()),
        _ => None,
    }
}

/// The name and URL of `ATTACH 'url' AS name`, if `stmt` is one.
pub(crate) fn attach_statement(stmt: &DfStatement) -> Result<Option<(String, String)>> {
    use datafusion::sql::sqlparser::ast::{Expr, Statement, Value};
    let DfStatement::Statement(s) = stmt else {
        return Ok(None);
    };
    let Statement::AttachDatabase {
        schema_name,
        database_file_name,
        ..
    } = s.as_ref()
    else {
        return Ok(None);
    };
    let url = match database_file_name {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(url) => Some(url.clone()),
            _ => None,
        },
        _ => None,
    };
    let Some(url) = url else {
        return Err(Error::plan(
            "ATTACH takes the database as a quoted URL: ATTACH 'postgres://host/db' AS name",
        ));
    };
    Ok(Some((schema_name.value.clone(), url)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_expressions_are_refused_before_they_are_parsed() {
        let chain = |n: usize, op: &str| format!("SELECT 1{}", format!(" {op} 1").repeat(n));
        assert!(check_expression_depth(&chain(250, "+")).is_ok());
        for op in ["+", "||", "OR", "AND", "::", "="] {
            let err = check_expression_depth(&chain(20_000, op))
                .unwrap_err()
                .to_string();
            assert!(err.contains("nest more than 256 deep"), "{op}: {err}");
        }
        // Chains under each other add up: brackets and CASE do not start over.
        let nested = format!("SELECT {}1{}", "1 + 1 + 1 + (".repeat(100), ")".repeat(100));
        assert!(check_expression_depth(&nested).is_err());
        let cases = format!(
            "SELECT {}1{}",
            "1 + 1 + CASE WHEN true THEN ".repeat(100),
            " END".repeat(100)
        );
        assert!(check_expression_depth(&cases).is_err());
        // Long flat lists are not deep: columns, IN lists, VALUES rows, CASE arms, clauses.
        let many: Vec<String> = (0..5000).map(|i| format!("a + {i}")).collect();
        assert!(check_expression_depth(&format!("SELECT {}", many.join(", "))).is_ok());
        let rows: Vec<String> = (0..5000).map(|i| format!("({i}, 'x' || {i})")).collect();
        assert!(check_expression_depth(&format!("VALUES {}", rows.join(", "))).is_ok());
        let arms: Vec<String> = (0..2000)
            .map(|i| format!("WHEN a = {i} THEN {i}"))
            .collect();
        let case = format!("SELECT CASE {} END FROM t", arms.join(" "));
        assert!(check_expression_depth(&case).is_ok());
        let list: Vec<String> = (0..5000).map(|i| i.to_string()).collect();
        let sql = format!("SELECT * FROM t WHERE a IN ({}) AND b = 1", list.join(", "));
        assert!(check_expression_depth(&sql).is_ok());
        // The error points at where the limit is passed.
        let err = parse_statements(&format!("SELECT\n{}", chain(500, "+")), "generic")
            .unwrap_err()
            .to_string();
        assert!(err.contains("at 2:"), "{err}");
    }

    #[test]
    fn brackets_nest_deeper_than_the_parsers_default() {
        let nested = |n: usize| format!("SELECT\n{}1{}", "(".repeat(n), ")".repeat(n));
        assert!(parse_statements(&nested(120), "generic").is_ok());
        // Past the parser's limit, the error points at the deepest bracket.
        let err = parse_statements(&nested(200), "generic").unwrap_err();
        assert_eq!(
            err.position(),
            Some(crate::error::Position {
                line: 2,
                column: 200
            }),
            "{err}"
        );
        assert!(err.to_string().contains("nest more than 128 deep"), "{err}");
        let derived = |n: usize| {
            format!(
                "SELECT * FROM {}(VALUES (1)) t{}",
                "(SELECT * FROM ".repeat(n),
                ") t".repeat(n)
            )
        };
        assert!(parse_statements(&derived(60), "generic").is_ok());
        let err = parse_statements(&derived(100), "generic").unwrap_err();
        assert!(err.to_string().contains("nest more than 128 deep"), "{err}");
    }

    #[test]
    fn subqueries_in_expressions_nest_twenty_deep() {
        let nested = |n: usize| format!("SELECT {}1{}", "(SELECT ".repeat(n), ")".repeat(n));
        assert!(parse_statements(&nested(20), "generic").is_ok());
        let err = parse_statements(&nested(21), "generic").unwrap_err();
        assert!(
            err.to_string()
                .contains("subqueries nest more than 20 deep"),
            "{err}"
        );
        // At the 21st SELECT.
        assert_eq!(err.position().map(|p| p.column), Some(9 + 20 * 8));
        // EXISTS and IN count; derived tables in between do not, nor do brackets that hold
        // no subquery.
        let mixed = format!(
            "SELECT 1 WHERE {}1 IN (SELECT (1)){}",
            "EXISTS (SELECT * FROM (SELECT 1) t WHERE ".repeat(19),
            ")".repeat(19)
        );
        assert!(parse_statements(&mixed, "generic").is_ok());
        let deeper = mixed.replacen("EXISTS", "EXISTS (SELECT 1 WHERE EXISTS", 1) + ")";
        let err = parse_statements(&deeper, "generic").unwrap_err();
        assert!(
            err.to_string()
                .contains("subqueries nest more than 20 deep"),
            "{err}"
        );
    }

    fn extract(sql: &str) -> (Vec<TableFunctionCall>, String) {
        let mut stmts = parse_statements(sql, "generic").unwrap();
        let mut n = 0;
        let calls = extract_table_functions(&mut stmts[0], || {
            n += 1;
            format!("k{n}")
        })
        .unwrap();
        (
            calls.into_iter().map(|(_, c)| c).collect(),
            stmts[0].to_string(),
        )
    }

    #[test]
    fn calls_are_found_and_rewritten() {
        let (calls, text) = extract(
            "SELECT * FROM read_csv(['a.csv', 'b.csv'], header = false, delim => ';') JOIN read_parquet('x.parquet') p ON true",
        );
        assert_eq!(calls.len(), 2);
        assert_eq!(
            calls[0].positional,
            vec![ArgValue::List(vec!["a.csv".into(), "b.csv".into()])]
        );
        assert_eq!(
            calls[0].named,
            vec![
                ("header".into(), ArgValue::Text("false".into())),
                ("delim".into(), ArgValue::Text(";".into()))
            ]
        );
        assert!(text.contains("read_csv('k1') read_csv JOIN"), "{text}");
        assert!(text.contains("read_parquet('k2') p"), "{text}");
    }

    #[test]
    fn quoted_paths_become_reads_named_after_the_file() {
        let (calls, text) = extract("SELECT * FROM 'data/people.csv' JOIN t ON true");
        assert_eq!(calls[0].name, "read_files");
        assert_eq!(
            calls[0].positional,
            vec![ArgValue::Text("data/people.csv".into())]
        );
        assert!(text.contains("read_files('k1') people"), "{text}");
        assert_eq!(stem_of("data/v/**/*.parquet"), "v");
    }

    #[test]
    fn statements_split_outside_quotes_and_comments() {
        let s = split_statements("SELECT ';'; -- a;b\nSELECT 2 /* ; */;\n\n-- only\n").unwrap();
        assert_eq!(s, vec!["SELECT ';'", "-- a;b\nSELECT 2 /* ; */"]);
        assert!(split_statements("SELECT 'x").is_err());
    }

    #[test]
    fn duckdb_copy_options_are_rewritten() {
        let out = rewrite_copy_options(
            "COPY (SELECT 1 AS a) TO 'out/' (FORMAT parquet, PARTITION_BY (a, b), COMPRESSION zstd)",
        )
        .unwrap();
        assert_eq!(
            out,
            "COPY (SELECT 1 AS a) TO 'out/' STORED AS PARQUET PARTITIONED BY (a, b) OPTIONS ('format.compression' 'zstd')"
        );
        let out = rewrite_copy_options("COPY t TO 'x.csv' (HEADER, DELIMITER '|')").unwrap();
        assert!(
            out.ends_with("OPTIONS ('format.has_header' 'true', 'format.delimiter' '|')"),
            "{out}"
        );
        let same = "COPY t TO 'x.csv' STORED AS CSV";
        assert_eq!(rewrite_copy_options(same).unwrap(), same);
    }

    #[test]
    fn quantified_subqueries_are_isolated() {
        let mut stmts =
            parse_statements("SELECT * FROM t WHERE x > ALL (SELECT x FROM t)", "generic").unwrap();
        assert!(isolate_quantified_subqueries(&mut stmts[0]));
        assert_eq!(
            stmts[0].to_string(),
            "SELECT * FROM t WHERE x > ALL(SELECT __strata_v FROM (SELECT x FROM t) AS __strata_sq (__strata_v))"
        );
    }

    #[test]
    fn repeated_output_names_get_names_of_their_own() {
        let mut stmts = parse_statements(
            "SELECT x, 76 AS x, y, (SELECT 1), (SELECT 1) FROM t ORDER BY y",
            "generic",
        )
        .unwrap();
        let names = alias_duplicate_names(&mut stmts[0]).unwrap();
        assert_eq!(
            stmts[0].to_string(),
            "SELECT x AS __strata_item_0, 76 AS __strata_item_1, y, (SELECT 1) AS __strata_item_3, (SELECT 1) AS __strata_item_4 FROM t ORDER BY y"
        );
        let shown: Vec<&str> = names.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(shown, ["x", "x", "(SELECT 1)", "(SELECT 1)"]);
        let mut plain = parse_statements("SELECT a, 2 AS b FROM t", "generic").unwrap();
        assert_eq!(alias_duplicate_names(&mut plain[0]), None);
    }

    #[test]
    fn a_row_in_a_subquery_becomes_exists_tests() {
        let mut stmts = parse_statements(
            "SELECT (a, b + 1) NOT IN (SELECT x, y FROM u) FROM t",
            "generic",
        )
        .unwrap();
        expand_row_in_subqueries(&mut stmts[0]).unwrap();
        let text = stmts[0].to_string();
        assert!(
            text.starts_with("SELECT NOT (CASE WHEN EXISTS (SELECT 1 FROM (SELECT x, y FROM u) AS __strata_row (__c0, __c1) WHERE __strata_row.__c0 = (a) AND __strata_row.__c1 = (b + 1)) THEN true"),
            "{text}"
        );
        assert!(
            text.contains(") IS NULL) THEN NULL ELSE false END)"),
            "{text}"
        );
    }

    #[test]
    fn is_distinct_from_binds_tighter_than_and_or() {
        use datafusion::sql::sqlparser::ast::{BinaryOperator, SelectItem, SetExpr, Statement};
        let first_item = |sql: &str| -> Expr {
            let mut stmts = parse_statements(sql, "generic").unwrap();
            distinct_from_precedence(&mut stmts[0]);
            let DfStatement::Statement(s) = &stmts[0] else {
                panic!("not a statement")
            };
            let Statement::Query(q) = s.as_ref() else {
                panic!("not a query")
            };
            let SetExpr::Select(select) = q.body.as_ref() else {
                panic!("not a select")
            };
            match &select.projection[0] {
                SelectItem::UnnamedExpr(e) => e.clone(),
                other => panic!("{other}"),
            }
        };
        // ((a IS NOT DISTINCT FROM 1) AND b = 2) OR c
        let e = first_item("SELECT a IS NOT DISTINCT FROM 1 AND b = 2 OR c");
        let Expr::BinaryOp {
            left,
            op: BinaryOperator::Or,
            ..
        } = e
        else {
            panic!("{e}")
        };
        let Expr::BinaryOp {
            left: test,
            op: BinaryOperator::And,
            ..
        } = *left
        else {
            panic!("{left}")
        };
        assert!(matches!(*test, Expr::IsNotDistinctFrom(..)), "{test}");
        // Written parentheses are kept.
        let e = first_item("SELECT a IS DISTINCT FROM (b AND c)");
        assert!(matches!(e, Expr::IsDistinctFrom(..)), "{e}");
    }

    /// `sql` with its outer aggregates hoisted, or `None` when nothing was.
    fn hoisted(sql: &str) -> Option<String> {
        let mut stmts = parse_statements(sql, "generic").unwrap();
        hoist_outer_aggregates(&mut stmts[0]).then(|| stmts[0].to_string())
    }

    #[test]
    fn outer_aggregates_in_subqueries_become_windows_over_the_groups() {
        assert_eq!(
            hoisted(
                "SELECT g, (SELECT count(*) FROM u WHERE u.x < min(t.a)) FROM t WHERE t.b > 0 GROUP BY 1"
            )
            .as_deref(),
            Some(
                "SELECT g, (SELECT count(*) FROM u WHERE u.x < t.__strata_outer_agg_0) FROM (SELECT *, min(t.a) OVER (PARTITION BY g) AS __strata_outer_agg_0 FROM t WHERE t.b > 0) AS t GROUP BY 1, t.__strata_outer_agg_0"
            )
        );
        // The same inside a derived table.
        assert_eq!(
            hoisted(
                "SELECT sum(c) FROM (SELECT g, (SELECT count(*) FROM u WHERE u.x < min(t.a)) AS c FROM t GROUP BY g) AS q"
            )
            .as_deref(),
            Some(
                "SELECT sum(c) FROM (SELECT g, (SELECT count(*) FROM u WHERE u.x < t.__strata_outer_agg_0) AS c FROM (SELECT *, min(t.a) OVER (PARTITION BY g) AS __strata_outer_agg_0 FROM t) AS t GROUP BY g, t.__strata_outer_agg_0) AS q"
            )
        );
        // Over a join: from a grouped copy of the FROM and WHERE clauses.
        assert_eq!(
            hoisted(
                "SELECT t.g, (SELECT count(*) FROM u WHERE u.x < min(v.b)) FROM t JOIN v ON t.a = v.a WHERE v.b > 0 GROUP BY t.g"
            )
            .as_deref(),
            Some(
                "SELECT t.g, (SELECT count(*) FROM u WHERE u.x < __strata_outer.__strata_outer_agg_0) FROM t JOIN v ON t.a = v.a, (SELECT t.g AS __strata_outer_agg_k0, min(v.b) AS __strata_outer_agg_0 FROM t JOIN v ON t.a = v.a WHERE v.b > 0 GROUP BY t.g) AS __strata_outer WHERE (v.b > 0) AND __strata_outer.__strata_outer_agg_k0 IS NOT DISTINCT FROM t.g GROUP BY t.g, __strata_outer.__strata_outer_agg_0"
            )
        );
        // A subquery over the same table keeps its own aggregate.
        for sql in [
            "SELECT g, (SELECT max(t.a) FROM t) FROM t GROUP BY g",
            "SELECT t.g, (SELECT max(v.a) FROM v) FROM t JOIN v ON t.a = v.a GROUP BY t.g",
        ] {
            assert_eq!(hoisted(sql), None, "{sql}");
        }
    }

    #[test]
    fn describe_of_a_path_describes_its_rows() {
        assert_eq!(
            rewrite_describe_path("DESCRIBE 'data/x.csv';"),
            "DESCRIBE SELECT * FROM 'data/x.csv'"
        );
        assert_eq!(rewrite_describe_path("describe people"), "describe people");
        assert_eq!(
            end_position("SELECT 1 +\n  "),
            crate::error::Position {
                line: 1,
                column: 11
            }
        );
    }

    #[test]
    fn non_constant_arguments_are_rejected() {
        let mut stmts = parse_statements("SELECT * FROM read_csv(a || 'b')", "generic").unwrap();
        let err = extract_table_functions(&mut stmts[0], || "k".into()).unwrap_err();
        assert!(err.to_string().contains("must be a constant"), "{err}");
    }

    #[test]
    fn explain_asks_for_a_picture_in_either_form() {
        let drawn =
            picture_explain("EXPLAIN ANALYZE FORMAT svg SELECT a FROM t WHERE b = 'x y'").unwrap();
        assert_eq!(drawn.picture, PlanPicture::Svg);
        assert!(drawn.analyze);
        assert_eq!(drawn.query, "SELECT a FROM t WHERE b = 'x y'");
        let drawn = picture_explain("explain (format 'dot', analyze false)\n select 1").unwrap();
        assert_eq!(drawn.picture, PlanPicture::Dot);
        assert!(!drawn.analyze);
        assert_eq!(drawn.query, "select 1");
        assert!(
            picture_explain("EXPLAIN (ANALYZE, FORMAT svg) SELECT 1")
                .unwrap()
                .analyze
        );
        // DataFusion's own formats, and statements that are not EXPLAIN, are not pictures.
        assert_eq!(picture_explain("EXPLAIN FORMAT tree SELECT 1"), None);
        assert_eq!(picture_explain("EXPLAIN SELECT 1"), None);
        assert_eq!(picture_explain("SELECT 'EXPLAIN FORMAT svg'"), None);
        // Asked for with nothing to draw: the query is empty, for an error that says so.
        assert_eq!(picture_explain("EXPLAIN FORMAT svg ").unwrap().query, "");
        assert_eq!(picture_explain("EXPLAIN (FORMAT dot)").unwrap().query, "");
    }
}
