//! Result formats (`table`, `csv`, `tsv`, `json`, `ndjson`, `markdown`, `line`), written to
//! any `std::io::Write` so every format is testable without a terminal.

use std::fmt;
use std::io::Write;
use std::str::FromStr;

use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

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
}

impl OutputFormat {
    /// Every format's name.
    pub const NAMES: &'static [&'static str] =
        &["table", "csv", "tsv", "json", "ndjson", "markdown", "line"];
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
        };
        f.write_str(Self::NAMES[i])
    }
}

/// Options for [`write_batches`].
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// The format.
    pub format: OutputFormat,
    /// In `table` format, the widest a column may be before it is truncated with `…`.
    pub max_column_width: usize,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            format: OutputFormat::Table,
            max_column_width: 40,
        }
    }
}

fn io(e: std::io::Error) -> Error {
    Error::Execution(format!("cannot write output: {e}"))
}

fn arrow(e: datafusion::arrow::error::ArrowError) -> Error {
    Error::Execution(format!("cannot format output: {e}"))
}

/// Write `batches` (with `schema`, which names the columns even when there are no rows).
pub fn write_batches(
    out: &mut dyn Write,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    options: &WriteOptions,
) -> Result<()> {
    match options.format {
        OutputFormat::Table => write_table(out, schema, batches, options.max_column_width),
        OutputFormat::Markdown => write_markdown(out, schema, batches),
        OutputFormat::Line => write_line(out, schema, batches),
        OutputFormat::Csv => write_delimited(out, schema, batches, ','),
        OutputFormat::Tsv => write_delimited(out, schema, batches, '\t'),
        OutputFormat::Json => {
            let mut w = datafusion::arrow::json::ArrayWriter::new(&mut *out);
            for b in batches {
                w.write(b).map_err(arrow)?;
            }
            w.finish().map_err(arrow)?;
            if batches.iter().all(|b| b.num_rows() == 0) {
                out.write_all(b"[]").map_err(io)?;
            }
            out.write_all(b"\n").map_err(io)
        }
        OutputFormat::Ndjson => {
            let mut w = datafusion::arrow::json::LineDelimitedWriter::new(&mut *out);
            for b in batches {
                w.write(b).map_err(arrow)?;
            }
            w.finish().map_err(arrow)
        }
    }
}

/// Delimited text with a header; NULL is an empty field and the empty string is `""`, so the
/// two stay apart, as DuckDB writes them.
fn write_delimited(
    out: &mut dyn Write,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    delimiter: char,
) -> Result<()> {
    let field = |s: &str| -> String {
        if s.is_empty() || s.contains([delimiter, '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let sep = delimiter.to_string();
    let names: Vec<String> = schema.fields().iter().map(|f| field(f.name())).collect();
    writeln!(out, "{}", names.join(&sep)).map_err(io)?;
    for (cells, nulls) in cells_with_nulls(batches)? {
        let row: Vec<String> = cells
            .iter()
            .zip(nulls)
            .map(|(c, null)| if null { String::new() } else { field(c) })
            .collect();
        writeln!(out, "{}", row.join(&sep)).map_err(io)?;
    }
    Ok(())
}

/// Cells as text: `NULL` for nulls (an empty string stays empty).
fn cells(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>> {
    Ok(cells_with_nulls(batches)?
        .into_iter()
        .map(|(c, _)| c)
        .collect())
}

/// Cells as text, with which of them are NULL.
fn cells_with_nulls(batches: &[RecordBatch]) -> Result<Vec<(Vec<String>, Vec<bool>)>> {
    let opts = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for b in batches {
        let fmts = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(arrow)?;
        for r in 0..b.num_rows() {
            let nulls: Vec<bool> = b.columns().iter().map(|c| c.is_null(r)).collect();
            let text = fmts
                .iter()
                .zip(&nulls)
                .map(|(f, null)| {
                    if *null {
                        "NULL".to_string()
                    } else {
                        f.value(r).to_string()
                    }
                })
                .collect();
            rows.push((text, nulls));
        }
    }
    Ok(rows)
}

fn truncate(s: &str, width: usize) -> String {
    let one_line = s.replace(['\n', '\r'], " ");
    if one_line.chars().count() <= width {
        return one_line;
    }
    let mut out: String = one_line.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn write_table(
    out: &mut dyn Write,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    max_width: usize,
) -> Result<()> {
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    if names.is_empty() {
        return Ok(());
    }
    let rows: Vec<Vec<String>> = cells(batches)?
        .into_iter()
        .map(|r| r.iter().map(|c| truncate(c, max_width.max(4))).collect())
        .collect();
    let header: Vec<String> = names
        .iter()
        .map(|n| truncate(n, max_width.max(4)))
        .collect();
    let widths: Vec<usize> = (0..names.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain(std::iter::once(header[i].chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let numeric: Vec<bool> = schema
        .fields()
        .iter()
        .map(|f| f.data_type().is_numeric())
        .collect();
    let rule: String = widths
        .iter()
        .map(|w| "-".repeat(w + 2))
        .collect::<Vec<_>>()
        .join("+");
    let line = |cells: &[String], align_numbers: bool| -> String {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
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
                max_column_width: 40,
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
                max_column_width: 40,
            },
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "id,name\n7,\"say \"\"hi\"\", then\nleave\"\n"
        );
        assert_eq!(
            render(OutputFormat::Json),
            "[{\"id\":1,\"name\":\"a|b\"},{\"name\":\"\"},{\"id\":300}]\n"
        );
        assert_eq!(
            render(OutputFormat::Ndjson),
            "{\"id\":1,\"name\":\"a|b\"}\n{\"name\":\"\"}\n{\"id\":300}\n"
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
        assert_eq!(truncate("abcdefgh", 5), "abcd…");
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
}
