//! `strata convert`: copy a dataset to another format, store or partitioning with one streaming
//! `COPY`, or into a database table with one `INSERT` in one transaction, then read the
//! destination back and compare row counts.

use std::process::ExitCode;
use std::time::Instant;

use strata::{DatasetSpec, Engine, Error};

use super::CliError;

use super::progress::ProgressBar;
use super::shell::Interrupts;

#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    /// The source: a catalog table, or a file, directory, glob or URL.
    #[arg(value_name = "SRC")]
    source: String,
    /// The destination file, or directory (ending in `/`, or with --partition-by), or a
    /// database table: `postgres://host/db?table=t`, `mysql://…?table=t`, `sqlite:f.db?table=t`
    /// (appended to, or created with the source's columns; in one transaction).
    #[arg(value_name = "DST")]
    destination: String,
    /// Destination format: parquet, csv, tsv, json or arrow (default: from DST's extension,
    /// else parquet).
    #[arg(long)]
    format: Option<String>,
    /// Write hive-style `col=value/` directories by these columns (comma-separated).
    #[arg(long, value_name = "COLS")]
    partition_by: Option<String>,
}

/// The format and compression a destination's name implies.
fn format_of(destination: &str) -> (Option<&'static str>, Option<&'static str>) {
    let name = destination
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut parts: Vec<&str> = name.split('.').skip(1).collect();
    let compression = match parts.last().copied() {
        Some("gz") => Some("gzip"),
        Some("bz2") => Some("bzip2"),
        Some("xz") => Some("xz"),
        Some("zst") => Some("zstd"),
        _ => None,
    };
    if compression.is_some() {
        parts.pop();
    }
    let format = match parts.last().copied() {
        Some("parquet") => Some("parquet"),
        Some("csv") => Some("csv"),
        Some("tsv") => Some("tsv"),
        Some("json" | "ndjson" | "jsonl") => Some("json"),
        Some("arrow" | "ipc" | "feather") => Some("arrow"),
        _ => None,
    };
    (format, compression)
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The `COPY` statement for a conversion.
fn copy_statement(args: &ConvertArgs, from: &str) -> Result<(String, String), CliError> {
    let (implied, compression) = format_of(&args.destination);
    let format = match &args.format {
        Some(f) => f.to_ascii_lowercase(),
        None => implied.unwrap_or("parquet").to_string(),
    };
    if !["parquet", "csv", "tsv", "json", "ndjson", "arrow"].contains(&format.as_str()) {
        return Err(CliError::Usage(format!(
            "cannot convert to '{format}'; formats are parquet, csv, tsv, json, arrow"
        )));
    }
    let mut options = vec![format!("FORMAT {format}")];
    if let Some(c) = compression.filter(|_| matches!(format.as_str(), "csv" | "tsv" | "json")) {
        options.push(format!("COMPRESSION {c}"));
    }
    if let Some(cols) = &args.partition_by {
        let cols: Vec<&str> = cols
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        if cols.is_empty() {
            return Err(CliError::Usage("--partition-by needs column names".into()));
        }
        // The partition names are written into directory names as they are, so they must be
        // plain identifiers (DataFusion keeps the quotes of quoted ones).
        if let Some(bad) = cols.iter().find(|c| {
            !c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
                || c.starts_with(|ch: char| ch.is_ascii_digit())
        }) {
            return Err(CliError::Usage(format!(
                "--partition-by: '{bad}' is not a plain column name (letters, digits, _)"
            )));
        }
        options.push(format!("PARTITION_BY ({})", cols.join(", ")));
    }
    Ok((
        format!(
            "COPY (SELECT * FROM {from}) TO {} ({})",
            quote_literal(&args.destination),
            options.join(", ")
        ),
        format,
    ))
}

/// The source as a name to select from: a catalog table, or the location registered.
async fn source(engine: &Engine, args: &ConvertArgs) -> Result<String, CliError> {
    if engine.table_names().contains(&args.source) {
        return Ok(quote_ident(&args.source));
    }
    if strata::databases::is_database_url(&args.source) {
        let (url, table) = strata::databases::split_table_option(&args.source);
        let Some(table) = table.filter(|t| !t.is_empty()) else {
            return Err(CliError::Usage(format!(
                "name the table to read: {url}?table=NAME"
            )));
        };
        let state = engine.session().state();
        let provider = strata::databases::open_table(&url, &table, None, &state)
            .await
            .map_err(Error::from)?;
        replace_table(engine, "__strata_source", provider)?;
    } else {
        engine
            .register_location("__strata_source", &args.source)
            .await?;
    }
    Ok("__strata_source".to_string())
}

/// Register `table` as `name`, in place of any table of that name.
fn replace_table(
    engine: &Engine,
    name: &str,
    table: std::sync::Arc<dyn strata::datafusion::catalog::TableProvider>,
) -> Result<(), CliError> {
    let session = engine.session();
    session.deregister_table(name).map_err(Error::from)?;
    session.register_table(name, table).map_err(Error::from)?;
    Ok(())
}

/// Runs `statement` with a progress bar on a terminal, cancelled by Ctrl-C, and returns the
/// rows it wrote.
async fn write(
    engine: &Engine,
    statement: &str,
    started: Instant,
    progress: bool,
) -> Result<u64, CliError> {
    let mut interrupts = Interrupts::new()?;
    let mut result = engine.execute(statement).await?;
    let bar = (progress && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .then(|| ProgressBar::start(result.progress(), started));
    let outcome = tokio::select! {
        r = result.collect() => r,
        _ = interrupts.recv() => {
            result.cancel_handle().cancel();
            Err(Error::Cancelled)
        }
    };
    if let Some(bar) = bar {
        bar.finish();
    }
    Ok(outcome?
        .iter()
        .filter(|b| b.num_columns() > 0)
        .filter_map(|b| column_total(b.column(0)))
        .sum())
}

/// The row count of `table`.
async fn count(engine: &Engine, table: &str) -> Result<u64, CliError> {
    let mut check = engine.sql(&format!("SELECT count(*) FROM {table}")).await?;
    Ok(check
        .collect()
        .await?
        .iter()
        .filter_map(|b| column_total(b.column(0)))
        .sum())
}

/// Run a conversion; the exit status is 1 when the row counts differ.
pub async fn run(
    engine: &Engine,
    args: &ConvertArgs,
    quiet: bool,
    progress: bool,
) -> Result<ExitCode, CliError> {
    if strata::databases::is_database_url(&args.destination) {
        return into_database(engine, args, quiet, progress).await;
    }
    let started = Instant::now();
    if !args.destination.contains("://") && std::path::Path::new(&args.destination).exists() {
        return Err(CliError::Usage(format!(
            "{} already exists; remove it or choose another destination",
            args.destination
        )));
    }
    let from = source(engine, args).await?;
    let (copy, format) = copy_statement(args, &from)?;
    let written = write(engine, &copy, started, progress).await?;

    // Read the destination back.
    let read_format = if format == "tsv" { "tsv" } else { &format };
    let spec = DatasetSpec::new(&args.destination)
        .option("format", read_format)
        .map_err(Error::from)?;
    let spec = if args.partition_by.is_some() {
        spec.option("hive_partitioning", "true")
            .map_err(Error::from)?
    } else {
        spec
    };
    engine.register("__strata_destination", spec).await?;
    let read_back = count(engine, "__strata_destination").await?;
    if read_back != written {
        return Err(CliError::Usage(format!(
            "wrote {written} rows to {} but read back {read_back}",
            args.destination
        )));
    }
    if !quiet {
        println!(
            "Converted {written} rows from {} to {} ({format}) in {:.3} s; read back {read_back} rows.",
            args.source,
            args.destination,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Write the source into a database table (`postgres://…/db?table=t`): appended to the table
/// if it exists, else into a new table with the source's columns, in one transaction.
async fn into_database(
    engine: &Engine,
    args: &ConvertArgs,
    quiet: bool,
    progress: bool,
) -> Result<ExitCode, CliError> {
    let started = Instant::now();
    if args.format.is_some() || args.partition_by.is_some() {
        return Err(CliError::Usage(
            "--format and --partition-by are for files; a database table takes the rows as \
             they are"
                .into(),
        ));
    }
    let (url, table) = strata::databases::split_table_option(&args.destination);
    let Some(table) = table.filter(|t| !t.is_empty()) else {
        return Err(CliError::Usage(format!(
            "name the table to write: {url}?table=NAME"
        )));
    };
    let from = source(engine, args).await?;
    let schema = engine
        .sql(&format!("SELECT * FROM {from} LIMIT 0"))
        .await?
        .schema();
    let state = engine.session().state();
    let (destination, existed) =
        strata::databases::open_for_writing(&url, &table, &schema, None, &state)
            .await
            .map_err(Error::from)?;
    // Columns go by name: each of the source's must be one of the table's.
    let columns = destination.schema();
    if let Some(missing) = schema
        .fields()
        .iter()
        .find(|f| columns.field_with_name(f.name()).is_err())
    {
        let names: Vec<&str> = columns.fields().iter().map(|f| f.name().as_str()).collect();
        return Err(CliError::Usage(format!(
            "table '{table}' has no column '{}' (its columns: {})",
            missing.name(),
            names.join(", ")
        )));
    }
    replace_table(engine, "__strata_destination", destination)?;
    let names: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| quote_ident(f.name()))
        .collect();
    let names = names.join(", ");
    let insert = format!("INSERT INTO __strata_destination ({names}) SELECT {names} FROM {from}");
    let written = write(engine, &insert, started, progress).await?;
    let how = if existed { "appended to" } else { "created" };
    if !existed {
        let read_back = count(engine, "__strata_destination").await?;
        if read_back != written {
            return Err(CliError::Usage(format!(
                "wrote {written} rows to table '{table}' but read back {read_back}"
            )));
        }
    }
    if !quiet {
        println!(
            "Converted {written} rows from {} to table '{table}' of {url} ({how}) in {:.3} s.",
            args.source,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The sum of an integer column.
fn column_total(col: &strata::datafusion::arrow::array::ArrayRef) -> Option<u64> {
    use strata::datafusion::arrow::array::AsArray;
    use strata::datafusion::arrow::compute::{cast, sum};
    use strata::datafusion::arrow::datatypes::{DataType, UInt64Type};
    let c = cast(col, &DataType::UInt64).ok()?;
    let c = c.as_primitive::<UInt64Type>();
    if c.is_empty() {
        return Some(0);
    }
    sum(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_follow_the_destination_name() {
        assert_eq!(format_of("out/v.csv.gz"), (Some("csv"), Some("gzip")));
        assert_eq!(format_of("s3://b/x.parquet"), (Some("parquet"), None));
        assert_eq!(format_of("out/violations/"), (None, None));
        let args = ConvertArgs {
            source: "people".into(),
            destination: "out/".into(),
            format: None,
            partition_by: Some("year, month".into()),
        };
        assert_eq!(
            copy_statement(&args, "\"people\"").unwrap().0,
            "COPY (SELECT * FROM \"people\") TO 'out/' (FORMAT parquet, PARTITION_BY (year, month))"
        );
    }
}
