//! Result formats (`table`, `csv`, `tsv`, `json`, `ndjson`, `markdown`, `line`), written to
//! any `std::io::Write` so every format is testable without a terminal.

use std::fmt;
use std::io::Write;
use std::str::FromStr;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::arrow::json::writer::{JsonArray, LineDelimited};
use datafusion::arrow::json::{Writer as JsonWriter, WriterBuilder as JsonWriterBuilder};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// Aligned columns with a border; NULL shown as `NULL`, wide cells truncated.
    #[default]
    Table,
    /// Comma-separated values with a header line.
    Csv,
    /// Tab-separated values with a header line.
    Tsv,
    /// One JSON array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// A Markdown table.
    Markdown,
    /// One `column = value` line per cell, rows separated by a blank line.
    Line,
    /// A Parquet file (zstd); only to a file.
    Parquet,
    /// An Arrow IPC file; only to a file.
    Arrow,
}

impl OutputFormat {
    /// Every format's name.
    pub const NAMES: &'static [&'static str] = &[
        "table", "csv", "tsv", "json", "ndjson", "markdown", "line", "parquet", "arrow",
    ];

    /// Whether the format is binary (written only to files, never to a terminal).
    pub fn is_binary(self) -> bool {
        matches!(self, OutputFormat::Parquet | OutputFormat::Arrow)
    }
}

impl FromStr for OutputFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "table" => OutputFormat::Table,
            "csv" => OutputFormat::Csv,
            "tsv" => OutputFormat::Tsv,
            "json" => OutputFormat::Json,
            "ndjson" | "jsonl" => OutputFormat::Ndjson,
            "markdown" | "md" => OutputFormat::Markdown,
            "line" => OutputFormat::Line,
            "parquet" => OutputFormat::Parquet,
            "arrow" | "ipc" => OutputFormat::Arrow,
            other => {
                return Err(Error::Config(format!(
                    "unknown output format '{other}'; valid formats are {}",
                    Self::NAMES.join(", ")
                )));
            }
        })
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = match self {
            OutputFormat::Table => 0,
            OutputFormat::Csv => 1,
            OutputFormat::Tsv => 2,
            OutputFormat::Json => 3,
            OutputFormat::Ndjson => 4,
            OutputFormat::Markdown => 5,
            OutputFormat::Line => 6,
            OutputFormat::Parquet => 7,
            OutputFormat::Arrow => 8,
        };
        f.write_str(Self::NAMES[i])
    }
}

/// Options for [`ResultWriter`] and [`write_batches`].
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// The format.
    pub format: OutputFormat,
    /// In `table` format, the widest a column may be before it is truncated with `…`.
    pub max_column_width: usize,
    /// In `table` format, the widest the whole table may be (the terminal's width, say):
    /// wide columns are narrowed, then middle columns left out (shown as `…`), to fit.
    pub max_table_width: Option<usize>,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            format: OutputFormat::Table,
            max_column_width: 40,
            max_table_width: None,
        }
    }
}

fn io(e: std::io::Error) -> Error {
    Error::Execution(format!("cannot write output: {e}"))
}

fn arrow(e: datafusion::arrow::error::ArrowError) -> Error {
    Error::Execution(format!("cannot format output: {e}"))
}

/// Where a [`ResultWriter`] writes.
pub type Out<'a> = &'a mut (dyn Write + Send);

/// Writes one result, batch by batch, in one format. Text formats that align columns
/// (`table`, `markdown`, `line`) hold the batches until [`ResultWriter::finish`]; the others
/// write each batch as it comes.
pub struct ResultWriter<'a> {
    schema: SchemaRef,
    options: WriteOptions,
    sink: Sink<'a>,
}

enum Sink<'a> {
    Held(Out<'a>, Vec<RecordBatch>),
    Delimited(Out<'a>, char),
    Json(JsonWriter<Out<'a>, JsonArray>),
    Ndjson(JsonWriter<Out<'a>, LineDelimited>),
    Parquet(Box<ArrowWriter<Out<'a>>>),
    Arrow(Box<FileWriter<Out<'a>>>),
}

impl<'a> ResultWriter<'a> {
    /// Start writing a result with `schema` (which names the columns even when no rows come).
    pub fn new(out: Out<'a>, schema: &SchemaRef, options: &WriteOptions) -> Result<Self> {
        let json = || JsonWriterBuilder::new().with_explicit_nulls(true);
        let sink = match options.format {
            OutputFormat::Table | OutputFormat::Markdown | OutputFormat::Line => {
                Sink::Held(out, Vec::new())
            }
            OutputFormat::Csv | OutputFormat::Tsv => {
                let delimiter = if options.format == OutputFormat::Csv {
                    ','
                } else {
                    '\t'
                };
                let names: Vec<String> = schema
                    .fields()
                    .iter()
                    .map(|f| quote_field(f.name(), delimiter))
                    .collect();
                writeln!(out, "{}", names.join(&delimiter.to_string())).map_err(io)?;
                Sink::Delimited(out, delimiter)
            }
            OutputFormat::Json => Sink::Json(json().build(out)),
            OutputFormat::Ndjson => Sink::Ndjson(json().build(out)),
            OutputFormat::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .build();
                Sink::Parquet(Box::new(
                    ArrowWriter::try_new(out, schema.clone(), Some(props))
                        .map_err(|e| Error::Execution(format!("cannot write Parquet: {e}")))?,
                ))
            }
            OutputFormat::Arrow => {
                Sink::Arrow(Box::new(FileWriter::try_new(out, schema).map_err(arrow)?))
            }
        };
        Ok(ResultWriter {
            schema: schema.clone(),
            options: options.clone(),
            sink,
        })
    }

    /// Write (or hold) one batch.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        match &mut self.sink {
            Sink::Held(_, batches) => batches.push(batch.clone()),
            Sink::Delimited(out, delimiter) => write_delimited_rows(*out, batch, *delimiter)?,
            Sink::Json(w) => w.write(batch).map_err(arrow)?,
            Sink::Ndjson(w) => w.write(batch).map_err(arrow)?,
            Sink::Parquet(w) => w
                .write(batch)
                .map_err(|e| Error::Execution(format!("cannot write Parquet: {e}")))?,
            Sink::Arrow(w) => w.write(batch).map_err(arrow)?,
        }
        Ok(())
    }

    /// Finish the result (write held rows, close arrays and file footers).
    pub fn finish(self) -> Result<()> {
        let schema = &self.schema;
        match self.sink {
            Sink::Held(out, batches) if is_explain(schema) => {
                write_explain(out, &batches, self.options.format)
            }
            Sink::Held(out, batches) => match self.options.format {
                OutputFormat::Markdown => write_markdown(out, schema, &batches),
                OutputFormat::Line => write_line(out, schema, &batches),
                _ => write_table(out, schema, &batches, &self.options),
            },
            Sink::Delimited(out, _) => out.flush().map_err(io),
            Sink::Json(mut w) => {
                // The writer prints `[]` for an empty result.
                w.finish().map_err(arrow)?;
                w.into_inner().write_all(b"\n").map_err(io)
            }
            Sink::Ndjson(mut w) => w.finish().map_err(arrow),
            Sink::Parquet(w) => w
                .close()
                .map(|_| ())
                .map_err(|e| Error::Execution(format!("cannot write Parquet: {e}"))),
            Sink::Arrow(mut w) => w.finish().map_err(arrow),
        }
    }
}

/// Whether a result is `EXPLAIN` output (`plan_type`, `plan`).
fn is_explain(schema: &SchemaRef) -> bool {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    names == ["plan_type", "plan"]
        && schema
            .fields()
            .iter()
            .all(|f| matches!(f.data_type(), DataType::Utf8 | DataType::Utf8View))
}

/// `EXPLAIN` output as plan blocks rather than table cells: indented under each plan's kind,
/// or fenced in Markdown.
fn write_explain(out: &mut dyn Write, batches: &[RecordBatch], format: OutputFormat) -> Result<()> {
    let mut first = true;
    for b in batches {
        let kinds = cast(b.column(0), &DataType::Utf8).map_err(arrow)?;
        let plans = cast(b.column(1), &DataType::Utf8).map_err(arrow)?;
        let (kinds, plans) = (kinds.as_string::<i32>(), plans.as_string::<i32>());
        for r in 0..b.num_rows() {
            if !first {
                writeln!(out).map_err(io)?;
            }
            first = false;
            let (kind, plan) = (kinds.value(r), plans.value(r).trim_end());
            if format == OutputFormat::Markdown {
                writeln!(out, "**{kind}**\n\n```text\n{plan}\n```").map_err(io)?;
            } else {
                writeln!(out, "{kind}").map_err(io)?;
                for line in plan.lines() {
                    writeln!(out, "  {line}").map_err(io)?;
                }
            }
        }
    }
    Ok(())
}

/// Write `batches` (with `schema`, which names the columns even when there are no rows).
pub fn write_batches(
    out: Out<'_>,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    options: &WriteOptions,
) -> Result<()> {
    let mut w = ResultWriter::new(out, schema, options)?;
    for b in batches {
        w.write(b)?;
    }
    w.finish()
}

fn quote_field(s: &str, delimiter: char) -> String {
    let mut field = String::new();
    push_field(&mut field, s, delimiter);
    field
}

/// Append `s` to `line` as one delimited field: in double quotes (doubled inside) when it is
/// empty or holds the delimiter, a quote or a line break.
fn push_field(line: &mut String, s: &str, delimiter: char) {
    if s.is_empty() || s.contains([delimiter, '"', '\n', '\r']) {
        line.push('"');
        for piece in s.split_inclusive('"') {
            line.push_str(piece);
            if piece.ends_with('"') {
                line.push('"');
            }
        }
        line.push('"');
    } else {
        line.push_str(s);
    }
}

/// Delimited rows: NULL is an empty field and the empty string is `""`, so the two stay
/// apart, as DuckDB writes them.
fn write_delimited_rows(out: &mut dyn Write, batch: &RecordBatch, delimiter: char) -> Result<()> {
    let opts = FormatOptions::default();
    let columns = batch
        .columns()
        .iter()
        .map(|c| {
            Ok((
                ArrayFormatter::try_new(c.as_ref(), &opts)?,
                c.logical_nulls(),
            ))
        })
        .collect::<std::result::Result<Vec<_>, datafusion::arrow::error::ArrowError>>()
        .map_err(arrow)?;
    let (mut line, mut cell) = (String::new(), String::new());
    for r in 0..batch.num_rows() {
        line.clear();
        for (k, (format, nulls)) in columns.iter().enumerate() {
            if k > 0 {
                line.push(delimiter);
            }
            if nulls.as_ref().is_some_and(|n| n.is_null(r)) {
                continue;
            }
            cell.clear();
            format.value(r).write(&mut cell).map_err(arrow)?;
            push_field(&mut line, &cell, delimiter);
        }
        line.push('\n');
        out.write_all(line.as_bytes()).map_err(io)?;
    }
    Ok(())
}

/// Cells as text: `NULL` for nulls (an empty string stays empty).
fn cells(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>> {
    let opts = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for b in batches {
        let columns = b
            .columns()
            .iter()
            .map(|c| {
                Ok((
                    ArrayFormatter::try_new(c.as_ref(), &opts)?,
                    c.logical_nulls(),
                ))
            })
            .collect::<std::result::Result<Vec<_>, datafusion::arrow::error::ArrowError>>()
            .map_err(arrow)?;
        for r in 0..b.num_rows() {
            // Logical nulls: a column of untyped NULLs (`SELECT NULL`) has no validity bitmap.
            let row = columns
                .iter()
                .map(|(f, nulls)| match nulls {
                    Some(n) if n.is_null(r) => "NULL".to_string(),
                    _ => f.value(r).to_string(),
                })
                .collect();
            rows.push(row);
        }
    }
    Ok(rows)
}

/// One column's cells as text, in one buffer: each cell on one line (line breaks become
/// spaces), `NULL` for nulls, with its width in characters measured once.
struct ColumnText {
    text: String,
    /// Where each cell ends in `text`.
    ends: Vec<usize>,
    /// Each cell's width in characters.
    widths: Vec<usize>,
}

impl ColumnText {
    fn new(batches: &[RecordBatch], column: usize, opts: &FormatOptions) -> Result<Self> {
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let mut col = ColumnText {
            text: String::new(),
            ends: Vec::with_capacity(rows),
            widths: Vec::with_capacity(rows),
        };
        for b in batches {
            let array = b.column(column);
            let format = ArrayFormatter::try_new(array.as_ref(), opts).map_err(arrow)?;
            // Logical nulls: a column of untyped NULLs (`SELECT NULL`) has no validity bitmap.
            let nulls = array.logical_nulls();
            for r in 0..b.num_rows() {
                let start = col.text.len();
                if nulls.as_ref().is_some_and(|n| n.is_null(r)) {
                    col.text.push_str("NULL");
                } else {
                    format.value(r).write(&mut col.text).map_err(arrow)?;
                    if col.text[start..].contains(['\n', '\r']) {
                        let one_line = col.text[start..].replace(['\n', '\r'], " ");
                        col.text.truncate(start);
                        col.text.push_str(&one_line);
                    }
                }
                let cell = &col.text[start..];
                col.widths.push(if cell.is_ascii() {
                    cell.len()
                } else {
                    cell.chars().count()
                });
                col.ends.push(col.text.len());
            }
        }
        Ok(col)
    }

    fn cell(&self, row: usize) -> &str {
        let start = if row == 0 { 0 } else { self.ends[row - 1] };
        &self.text[start..self.ends[row]]
    }
}

/// Append `cell` (`chars` characters wide) to `line` in a column `width` characters wide:
/// cut to `width` with a `…` when longer, padded with spaces on the left or the right.
fn push_cell(line: &mut String, cell: &str, chars: usize, width: usize, right: bool) {
    line.push(' ');
    if chars > width {
        let keep = width.saturating_sub(1);
        let cut = cell.char_indices().nth(keep).map_or(cell.len(), |(i, _)| i);
        line.push_str(&cell[..cut]);
        line.push('…');
    } else {
        let pad = width - chars;
        if right {
            line.extend(std::iter::repeat_n(' ', pad));
            line.push_str(cell);
        } else {
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', pad));
        }
    }
    line.push(' ');
}

fn write_table(
    out: &mut dyn Write,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    options: &WriteOptions,
) -> Result<()> {
    let names: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| f.name().replace(['\n', '\r'], " "))
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    let max_width = options.max_column_width.max(4);
    let opts = FormatOptions::default().with_null("NULL");
    let columns = (0..names.len())
        .map(|i| ColumnText::new(batches, i, &opts))
        .collect::<Result<Vec<_>>>()?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let name_widths: Vec<usize> = names.iter().map(|n| n.chars().count()).collect();
    let mut widths: Vec<usize> = columns
        .iter()
        .zip(&name_widths)
        .map(|(c, name)| {
            c.widths
                .iter()
                .chain(std::iter::once(name))
                .map(|w| (*w).min(max_width))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let shown = match options.max_table_width {
        Some(limit) => fit_columns(&mut widths, limit),
        None => (0..names.len()).map(Some).collect(),
    };
    let numeric: Vec<bool> = schema
        .fields()
        .iter()
        .map(|f| f.data_type().is_numeric())
        .collect();
    let rule: String = shown
        .iter()
        .map(|c| "-".repeat(c.map(|i| widths[i]).unwrap_or(1) + 2))
        .collect::<Vec<_>>()
        .join("+");
    let rule = format!("+{rule}+\n");
    let mut line = String::new();
    out.write_all(rule.as_bytes()).map_err(io)?;
    table_line(&mut line, &shown, &widths, |i| {
        (&names[i], name_widths[i], false)
    });
    out.write_all(line.as_bytes()).map_err(io)?;
    out.write_all(rule.as_bytes()).map_err(io)?;
    for r in 0..rows {
        table_line(&mut line, &shown, &widths, |i| {
            (columns[i].cell(r), columns[i].widths[r], numeric[i])
        });
        out.write_all(line.as_bytes()).map_err(io)?;
    }
    out.write_all(rule.as_bytes()).map_err(io)
}

/// One line of a table into `line`: the `shown` columns' cells (`cell(i)` gives column `i`'s
/// text, its width in characters and whether it aligns right), `…` for left-out columns.
fn table_line<'a>(
    line: &mut String,
    shown: &[Option<usize>],
    widths: &[usize],
    cell: impl Fn(usize) -> (&'a str, usize, bool),
) {
    line.clear();
    line.push('|');
    for (k, col) in shown.iter().enumerate() {
        if k > 0 {
            line.push('|');
        }
        match *col {
            Some(i) => {
                let (text, chars, right) = cell(i);
                push_cell(line, text, chars, widths[i], right);
            }
            None => line.push_str(" … "),
        }
    }
    line.push_str("|\n");
}

/// Narrow the widest columns, then leave out middle columns, until a table with these column
/// widths fits in `limit` characters. Returns the columns to show in order; `None` marks the
/// place of the left-out columns.
fn fit_columns(widths: &mut [usize], limit: usize) -> Vec<Option<usize>> {
    // Each column takes its width plus " | "; the table adds one border character.
    let total = |ws: &[usize]| ws.iter().map(|w| w + 3).sum::<usize>() + 1;
    let floor: Vec<usize> = widths.iter().map(|w| (*w).min(6)).collect();
    while total(widths) > limit {
        let widest = (0..widths.len())
            .filter(|&i| widths[i] > floor[i])
            .max_by_key(|&i| (widths[i], std::cmp::Reverse(i)));
        match widest {
            Some(i) => widths[i] -= 1,
            None => break,
        }
    }
    let n = widths.len();
    if total(widths) <= limit {
        return (0..n).map(Some).collect();
    }
    // Keep columns from both ends, alternately, while they fit next to a `…` column.
    let (mut left, mut right) = (Vec::new(), Vec::new());
    let mut used = 1 + 4;
    let (mut lo, mut hi) = (0, n);
    let mut take_left = true;
    while lo < hi {
        let i = if take_left { lo } else { hi - 1 };
        if used + widths[i] + 3 > limit {
            break;
        }
        used += widths[i] + 3;
        if take_left {
            left.push(Some(i));
            lo += 1;
        } else {
            right.push(Some(i));
            hi -= 1;
        }
        take_left = !take_left;
    }
    right.reverse();
    left.push(None);
    left.extend(right);
    left
}

fn write_markdown(out: &mut dyn Write, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<()> {
    let esc = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    let names: Vec<String> = schema.fields().iter().map(|f| esc(f.name())).collect();
    writeln!(out, "| {} |", names.join(" | ")).map_err(io)?;
    let seps: Vec<&str> = schema
        .fields()
        .iter()
        .map(|f| {
            if f.data_type().is_numeric() {
                "---:"
            } else {
                "---"
            }
        })
        .collect();
    writeln!(out, "| {} |", seps.join(" | ")).map_err(io)?;
    for r in cells(batches)? {
        let r: Vec<String> = r.iter().map(|c| esc(c)).collect();
        writeln!(out, "| {} |", r.join(" | ")).map_err(io)?;
    }
    Ok(())
}

fn write_line(out: &mut dyn Write, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<()> {
    let names: Vec<&String> = schema.fields().iter().map(|f| f.name()).collect();
    let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    for (i, r) in cells(batches)?.iter().enumerate() {
        if i > 0 {
            writeln!(out).map_err(io)?;
        }
        for (n, c) in names.iter().zip(r) {
            writeln!(out, "{n:>width$} = {c}").map_err(io)?;
        }
    }
    Ok(())
}

/// `n` bytes in the largest unit that keeps a whole part, e.g. `3.1 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `n` with its thousands separated by commas, e.g. `1,204,332`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn sample() -> (SchemaRef, Vec<RecordBatch>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None, Some(300)])),
                Arc::new(StringArray::from(vec![Some("a|b"), Some(""), None])),
            ],
        )
        .unwrap();
        (schema, vec![batch])
    }

    fn render(format: OutputFormat) -> String {
        let (schema, batches) = sample();
        let mut out = Vec::new();
        write_batches(
            &mut out,
            &schema,
            &batches,
            &WriteOptions {
                format,
                ..WriteOptions::default()
            },
        )
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn table_aligns_numbers_and_shows_null_apart_from_empty() {
        assert_eq!(
            render(OutputFormat::Table),
            "+------+------+\n| id   | name |\n+------+------+\n|    1 | a|b  |\n| NULL |      |\n|  300 | NULL |\n+------+------+\n"
        );
    }

    #[test]
    fn csv_tsv_and_json_formats() {
        assert_eq!(render(OutputFormat::Csv), "id,name\n1,a|b\n,\"\"\n300,\n");
        assert_eq!(
            render(OutputFormat::Tsv),
            "id\tname\n1\ta|b\n\t\"\"\n300\t\n"
        );
        let (schema, _) = sample();
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![7])),
                Arc::new(StringArray::from(vec!["say \"hi\", then\nleave"])),
            ],
        )
        .unwrap();
        let mut out = Vec::new();
        write_batches(
            &mut out,
            &schema,
            &[b],
            &WriteOptions {
                format: OutputFormat::Csv,
                ..WriteOptions::default()
            },
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "id,name\n7,\"say \"\"hi\"\", then\nleave\"\n"
        );
        assert_eq!(
            render(OutputFormat::Json),
            "[{\"id\":1,\"name\":\"a|b\"},{\"id\":null,\"name\":\"\"},{\"id\":300,\"name\":null}]\n"
        );
        assert_eq!(
            render(OutputFormat::Ndjson),
            "{\"id\":1,\"name\":\"a|b\"}\n{\"id\":null,\"name\":\"\"}\n{\"id\":300,\"name\":null}\n"
        );
    }

    #[test]
    fn markdown_and_line_formats() {
        assert_eq!(
            render(OutputFormat::Markdown),
            "| id | name |\n| ---: | --- |\n| 1 | a\\|b |\n| NULL |  |\n| 300 | NULL |\n"
        );
        assert_eq!(
            render(OutputFormat::Line),
            "  id = 1\nname = a|b\n\n  id = NULL\nname = \n\n  id = 300\nname = NULL\n"
        );
    }

    #[test]
    fn wide_cells_are_truncated_and_formats_parse() {
        let mut line = String::new();
        push_cell(&mut line, "abcdefgh", 8, 5, false);
        push_cell(&mut line, "añb", 3, 5, true);
        push_cell(&mut line, "日本語のテキスト", 8, 4, false);
        assert_eq!(line, " abcd…    añb  日本語… ");
        assert_eq!(
            "MD".parse::<OutputFormat>().unwrap(),
            OutputFormat::Markdown
        );
        assert!(
            "xml"
                .parse::<OutputFormat>()
                .unwrap_err()
                .to_string()
                .contains("valid formats")
        );
    }

    #[test]
    fn wide_tables_fit_the_width() {
        let mut w = vec![10, 40, 10];
        // 10+3 + 40+3 + 10+3 + 1 = 70 > 50: the widest column gives way first.
        assert_eq!(fit_columns(&mut w, 50), vec![Some(0), Some(1), Some(2)]);
        assert_eq!(w, vec![10, 20, 10]);
        let mut w = vec![8; 12];
        let shown = fit_columns(&mut w, 40);
        assert_eq!(shown, vec![Some(0), Some(1), None, Some(11)]);
        assert_eq!(w[0], 6);
        let (schema, batches) = sample();
        let mut out = Vec::new();
        let opts = WriteOptions {
            max_table_width: Some(12),
            ..WriteOptions::default()
        };
        write_batches(&mut out, &schema, &batches, &opts).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.lines().all(|l| l.chars().count() <= 12), "{text}");
        assert!(text.contains(" … "), "{text}");
    }

    // The table writer as it was first written (a `String` per cell, cut and padded cell by
    // cell): the fast writer must print exactly what it printed.
    fn reference_truncate(s: &str, width: usize) -> String {
        let one_line = s.replace(['\n', '\r'], " ");
        if one_line.chars().count() <= width {
            return one_line;
        }
        let mut out: String = one_line.chars().take(width.saturating_sub(1)).collect();
        out.push('…');
        out
    }
    fn reference_table(
        out: &mut dyn Write,
        schema: &SchemaRef,
        batches: &[RecordBatch],
        options: &WriteOptions,
    ) -> Result<()> {
        let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        if names.is_empty() {
            return Ok(());
        }
        let max_width = options.max_column_width.max(4);
        let rows: Vec<Vec<String>> = cells(batches)?
            .into_iter()
            .map(|r| r.iter().map(|c| reference_truncate(c, max_width)).collect())
            .collect();
        let header: Vec<String> = names
            .iter()
            .map(|n| reference_truncate(n, max_width))
            .collect();
        let mut widths: Vec<usize> = (0..names.len())
            .map(|i| {
                rows.iter()
                    .map(|r| r[i].chars().count())
                    .chain(std::iter::once(header[i].chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let shown = match options.max_table_width {
            Some(limit) => fit_columns(&mut widths, limit),
            None => (0..names.len()).map(Some).collect(),
        };
        let numeric: Vec<bool> = schema
            .fields()
            .iter()
            .map(|f| f.data_type().is_numeric())
            .collect();
        let rule: String = shown
            .iter()
            .map(|c| "-".repeat(c.map(|i| widths[i]).unwrap_or(1) + 2))
            .collect::<Vec<_>>()
            .join("+");
        let line = |cells: &[String], align_numbers: bool| -> String {
            let parts: Vec<String> = shown
                .iter()
                .map(|col| {
                    let Some(i) = *col else {
                        return " … ".to_string();
                    };
                    let c = reference_truncate(&cells[i], widths[i]);
                    let pad = widths[i] - c.chars().count();
                    if align_numbers && numeric[i] {
                        format!(" {}{} ", " ".repeat(pad), c)
                    } else {
                        format!(" {}{} ", c, " ".repeat(pad))
                    }
                })
                .collect();
            format!("|{}|", parts.join("|"))
        };
        writeln!(out, "+{rule}+").map_err(io)?;
        writeln!(out, "{}", line(&header, false)).map_err(io)?;
        writeln!(out, "+{rule}+").map_err(io)?;
        for r in &rows {
            writeln!(out, "{}", line(r, true)).map_err(io)?;
        }
        writeln!(out, "+{rule}+").map_err(io)
    }

    #[test]
    fn tables_print_as_the_reference_writer_does() {
        let next = crate::testing::numbers(0x9e37_79b9_7f4a_7c15_u64);
        let pieces = [
            "a",
            "bc",
            "",
            " ",
            "\n",
            "\r\n",
            "ñ",
            "日本",
            "…",
            "wide text",
            "|",
        ];
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("a long\ncolumn name", DataType::Utf8, true),
        ]));
        let text = || {
            (next(5) > 0).then(|| {
                (0..next(6))
                    .map(|_| pieces[next(pieces.len() as u64) as usize])
                    .collect::<String>()
            })
        };
        for round in 0..200 {
            let batches: Vec<RecordBatch> = (0..1 + next(3))
                .map(|_| {
                    let rows = next(5) as usize;
                    let s: Vec<Option<String>> = (0..rows).map(|_| text()).collect();
                    let t: Vec<Option<String>> = (0..rows).map(|_| text()).collect();
                    let n: Vec<Option<i64>> = (0..rows)
                        .map(|_| (next(4) > 0).then(|| next(1 << 40) as i64 - (1 << 39)))
                        .collect();
                    RecordBatch::try_new(
                        schema.clone(),
                        vec![
                            Arc::new(Int64Array::from(n)),
                            Arc::new(StringArray::from(s)),
                            Arc::new(StringArray::from(t)),
                        ],
                    )
                    .unwrap()
                })
                .collect();
            let options = WriteOptions {
                max_column_width: next(30) as usize,
                max_table_width: (next(2) == 0).then(|| 5 + next(60) as usize),
                ..WriteOptions::default()
            };
            let (mut fast, mut reference) = (Vec::new(), Vec::new());
            write_table(&mut fast, &schema, &batches, &options).unwrap();
            reference_table(&mut reference, &schema, &batches, &options).unwrap();
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                String::from_utf8(reference).unwrap(),
                "round {round}"
            );
        }
    }

    #[test]
    fn parquet_and_arrow_files_round_trip() {
        let (schema, batches) = sample();
        for format in [OutputFormat::Parquet, OutputFormat::Arrow] {
            let mut out = Vec::new();
            let opts = WriteOptions {
                format,
                ..WriteOptions::default()
            };
            write_batches(&mut out, &schema, &batches, &opts).unwrap();
            let bytes = bytes::Bytes::from(out);
            let read: Vec<RecordBatch> = if format == OutputFormat::Parquet {
                parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(bytes, 1024)
                    .unwrap()
                    .collect::<std::result::Result<_, _>>()
                    .unwrap()
            } else {
                datafusion::arrow::ipc::reader::FileReader::try_new(
                    std::io::Cursor::new(bytes),
                    None,
                )
                .unwrap()
                .collect::<std::result::Result<_, _>>()
                .unwrap()
            };
            assert_eq!(read, batches, "{format}");
        }
    }
}
