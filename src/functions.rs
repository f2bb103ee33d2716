//! Strata's table functions: `read_files`, `read_parquet`, `read_csv`, `read_json`,
//! `read_arrow`, `read_avro` (DuckDB-compatible), `list_files`, `parquet_metadata`, and the
//! database tables of `postgres_scan`, `mysql_scan` and `sqlite_scan`.
//!
//! DataFusion plans table functions synchronously, but reading a dataset means listing a store
//! and inferring a schema. So the engine resolves each call asynchronously before planning
//! (see [`crate::sql`]) and leaves the table here, under a key that replaces the call's
//! arguments; the registered functions only hand the prepared table over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;
use datafusion_datasource_parquet::metadata::DFParquetMetadata;
use parquet::file::statistics::Statistics;

use crate::dataset::{Dataset, DatasetError, DatasetOptions, DatasetSpec, Format};
use crate::error::{Error, Result};
use crate::sql::{ArgValue, TableFunctionCall};

/// Tables prepared for table-function calls in statements being planned, by key.
#[derive(Debug, Default)]
pub struct PreparedTables {
    tables: Mutex<HashMap<String, Arc<dyn TableProvider>>>,
}

impl PreparedTables {
    pub(crate) fn insert(&self, key: String, table: Arc<dyn TableProvider>) {
        self.lock().insert(key, table);
    }

    pub(crate) fn remove(&self, keys: &[String]) {
        let mut t = self.lock();
        for k in keys {
            t.remove(k);
        }
    }

    fn get(&self, key: &str) -> Option<Arc<dyn TableProvider>> {
        self.lock().get(key).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<dyn TableProvider>>> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The DataFusion side of a Strata table function: hands over the prepared table.
#[derive(Debug)]
pub(crate) struct PreparedFunction {
    pub name: &'static str,
    pub prepared: Arc<PreparedTables>,
}

impl TableFunctionImpl for PreparedFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        if let [Expr::Literal(ScalarValue::Utf8(Some(key)), _)] = args.exprs()
            && let Some(t) = self.prepared.get(key)
        {
            return Ok(t);
        }
        Err(DataFusionError::Plan(format!(
            "{}(...) must be called with constant arguments in a SQL statement",
            self.name
        )))
    }
}

/// Resolve a table-function call to a table.
pub(crate) async fn resolve_call(
    call: &TableFunctionCall,
    state: &dyn Session,
    lookup_table: &(dyn Fn(&str) -> Option<DatasetSpec> + Send + Sync),
) -> Result<Arc<dyn TableProvider>> {
    let fname = call.name.as_str();
    if let Some(backend) = fname.strip_suffix("_scan") {
        return database_table(backend, call, state).await;
    }
    let first = call.positional.first().ok_or_else(|| {
        Error::plan(format!(
            "{fname}() needs a location: {fname}('path/or/glob') or {fname}(['a', 'b'])"
        ))
    })?;
    if call.positional.len() > 1 {
        return Err(Error::plan(format!(
            "{fname}() takes one location or a list of locations; write options as key = value"
        )));
    }
    let locations = match first {
        ArgValue::Text(t) => vec![t.clone()],
        ArgValue::List(l) => l.clone(),
    };
    match fname {
        "list_files" => {
            let spec = match (locations.as_slice(), call.named.is_empty()) {
                ([one], true) => lookup_table(one).unwrap_or_else(|| DatasetSpec::new(one)),
                _ => spec_from(locations, None, &call.named)?,
            };
            let ds = Dataset::resolve(spec, state).await?;
            list_files_table(&ds, state).await
        }
        "parquet_metadata" => {
            let spec = spec_from(locations, Some(Format::Parquet), &call.named)?;
            let ds = Dataset::resolve(spec, state).await?;
            parquet_metadata_table(&ds, state).await
        }
        _ => {
            let format = match fname {
                "read_parquet" => Some(Format::Parquet),
                "read_csv" | "read_csv_auto" | "read_tsv" => Some(Format::Csv),
                "read_json" | "read_json_auto" | "read_ndjson" => Some(Format::Json),
                "read_arrow" | "read_ipc" => Some(Format::Arrow),
                "read_avro" => Some(Format::Avro),
                _ => None,
            };
            let mut spec = spec_from(locations, format, &call.named)?;
            if fname == "read_tsv" && spec.options.delimiter.is_none() {
                spec.options.delimiter = Some(b'\t');
            }
            Ok(Dataset::resolve(spec, state).await?.provider())
        }
    }
}

/// `postgres_scan(url, [schema,] table)`, `mysql_scan(url, table)`, `sqlite_scan(file, table)`.
async fn database_table(
    backend: &str,
    call: &TableFunctionCall,
    state: &dyn Session,
) -> Result<Arc<dyn TableProvider>> {
    let fname = &call.name;
    let usage = || {
        let first = if backend == "sqlite" {
            "file.db"
        } else {
            "url"
        };
        Error::plan(format!(
            "{fname}() takes the database and its table: {fname}('{first}', 'table') or \
             {fname}('{first}', 'schema', 'table')"
        ))
    };
    if !call.named.is_empty() {
        return Err(usage());
    }
    let text = |v: &ArgValue| match v {
        ArgValue::Text(t) => Ok(t.clone()),
        ArgValue::List(_) => Err(usage()),
    };
    let (url, table) = match call.positional.as_slice() {
        [url, table] => (text(url)?, text(table)?),
        [url, schema, table] => (text(url)?, format!("{}.{}", text(schema)?, text(table)?)),
        _ => return Err(usage()),
    };
    let url = match backend {
        "sqlite" if !url.to_ascii_lowercase().starts_with("sqlite:") => format!("sqlite:{url}"),
        _ => url,
    };
    let wanted = match backend {
        "postgres" => crate::databases::Backend::Postgres,
        "mysql" => crate::databases::Backend::MySql,
        _ => crate::databases::Backend::Sqlite,
    };
    let parsed =
        crate::databases::DatabaseUrl::parse(&url, None, &|name: &str| std::env::var(name).ok())
            .map_err(|e| Error::Dataset(e.into()))?;
    if parsed.backend != wanted {
        return Err(Error::plan(format!(
            "{fname}() reads {} tables; '{url}' is a {} URL",
            wanted.name(),
            parsed.backend.name()
        )));
    }
    crate::databases::open_table(&url, &table, None, state)
        .await
        .map_err(|e| Error::Dataset(e.into()))
}

fn spec_from(
    locations: Vec<String>,
    format: Option<Format>,
    named: &[(String, ArgValue)],
) -> Result<DatasetSpec> {
    let mut options = DatasetOptions {
        format,
        ..Default::default()
    };
    for (k, v) in named {
        match k.as_str() {
            // DuckDB options that are always on in Strata.
            "auto_detect" | "union_by_name" => {}
            _ => options.set(k, &v.as_text())?,
        }
    }
    Ok(DatasetSpec {
        locations,
        options,
        base_dir: None,
    })
}

/// One row per data file of a dataset: path, size, modification time and partition directory.
async fn list_files_table(ds: &Dataset, state: &dyn Session) -> Result<Arc<dyn TableProvider>> {
    let files = ds.files(state).await?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("size", DataType::Int64, false),
        Field::new(
            "last_modified",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("partition", DataType::Utf8, true),
    ]));
    let paths: Vec<String> = files.iter().map(|f| f.url.clone()).collect();
    let partitions: Vec<Option<String>> = files.iter().map(|f| f.partition.clone()).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(paths)),
        Arc::new(Int64Array::from_iter_values(
            files.iter().map(|f| f.meta.size as i64),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                files
                    .iter()
                    .map(|f| f.meta.last_modified.timestamp_micros()),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from(partitions)),
    ];
    mem_table(schema, columns)
}

/// One row per column chunk of every Parquet file: row groups, sizes, encodings and statistics.
async fn parquet_metadata_table(
    ds: &Dataset,
    state: &dyn Session,
) -> Result<Arc<dyn TableProvider>> {
    let files = ds.files(state).await?;
    let mut cols: [Vec<Option<String>>; 7] = Default::default();
    let mut ints: [Vec<Option<i64>>; 7] = Default::default();
    for f in &files {
        let store = state
            .runtime_env()
            .object_store(&f.store_url)
            .map_err(Error::from)?;
        let md = DFParquetMetadata::new(store.as_ref(), &f.meta)
            .fetch_metadata()
            .await
            .map_err(|e| DatasetError::Read {
                location: ds.spec.locations.join(", "),
                file: Some(f.url.clone()),
                message: format!("not a readable Parquet file: {e}"),
            })?;
        for (rg_i, rg) in md.row_groups().iter().enumerate() {
            for (c_i, c) in rg.columns().iter().enumerate() {
                cols[0].push(Some(f.url.clone()));
                cols[1].push(Some(c.column_path().string()));
                cols[2].push(Some(c.column_type().to_string()));
                let codec = c.compression().to_string();
                cols[3].push(Some(codec.split('(').next().unwrap_or(&codec).to_string()));
                let ((min, max), nulls) = match c.statistics() {
                    Some(s) => (stat_bounds(s), s.null_count_opt()),
                    None => ((None, None), None),
                };
                cols[4].push(min);
                cols[5].push(max);
                cols[6].push(Some(
                    c.encodings()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                ));
                ints[0].push(Some(rg_i as i64));
                ints[1].push(Some(rg.num_rows()));
                ints[2].push(Some(c_i as i64));
                ints[3].push(Some(c.num_values()));
                ints[4].push(nulls.map(|n| n as i64));
                ints[5].push(Some(c.compressed_size()));
                ints[6].push(Some(c.uncompressed_size()));
            }
        }
    }
    let s = |n: &str| Field::new(n, DataType::Utf8, true);
    let i = |n: &str| Field::new(n, DataType::Int64, true);
    let schema = Arc::new(Schema::new(vec![
        s("file_name"),
        i("row_group_id"),
        i("row_group_num_rows"),
        i("column_id"),
        s("path_in_schema"),
        s("type"),
        s("compression"),
        s("encodings"),
        i("num_values"),
        i("null_count"),
        s("stats_min"),
        s("stats_max"),
        i("total_compressed_size"),
        i("total_uncompressed_size"),
    ]));
    let [file, path, ty, comp, min, max, enc] = cols;
    let [rg, rg_rows, col_id, nvals, nulls, csize, usize_] = ints;
    let str_col = |v: Vec<Option<String>>| Arc::new(StringArray::from(v)) as ArrayRef;
    let int_col = |v: Vec<Option<i64>>| Arc::new(Int64Array::from(v)) as ArrayRef;
    mem_table(
        schema,
        vec![
            str_col(file),
            int_col(rg),
            int_col(rg_rows),
            int_col(col_id),
            str_col(path),
            str_col(ty),
            str_col(comp),
            str_col(enc),
            int_col(nvals),
            int_col(nulls),
            str_col(min),
            str_col(max),
            int_col(csize),
            int_col(usize_),
        ],
    )
}

/// A column chunk's min and max statistics as text.
fn stat_bounds(s: &Statistics) -> (Option<String>, Option<String>) {
    fn pair<T>(
        min: Option<T>,
        max: Option<T>,
        f: impl Fn(T) -> String,
    ) -> (Option<String>, Option<String>) {
        (min.map(&f), max.map(&f))
    }
    let bytes = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match s {
        Statistics::Boolean(v) => pair(v.min_opt(), v.max_opt(), |x| x.to_string()),
        Statistics::Int32(v) => pair(v.min_opt(), v.max_opt(), |x| x.to_string()),
        Statistics::Int64(v) => pair(v.min_opt(), v.max_opt(), |x| x.to_string()),
        Statistics::Float(v) => pair(v.min_opt(), v.max_opt(), |x| x.to_string()),
        Statistics::Double(v) => pair(v.min_opt(), v.max_opt(), |x| x.to_string()),
        Statistics::ByteArray(v) => pair(v.min_opt(), v.max_opt(), |x| bytes(x.data())),
        Statistics::FixedLenByteArray(v) => pair(v.min_opt(), v.max_opt(), |x| bytes(x.data())),
        Statistics::Int96(v) => pair(v.min_opt(), v.max_opt(), |x| format!("{x:?}")),
    }
}

fn mem_table(schema: Arc<Schema>, columns: Vec<ArrayRef>) -> Result<Arc<dyn TableProvider>> {
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(DataFusionError::from)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}
