//! Datasets: a table made of files at one or more locations (file, directory, glob, URL) in
//! one format, with hive-style `key=value/` partitions discovered, typed and pruned. Builds
//! DataFusion `ListingTable`s; knows nothing of SQL text, the CLI or the catalog file.

mod avro_blocks;
mod avro_records;
mod ipc_checks;
mod location;
mod options;
mod partitions;
mod summary;
mod table;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::config::{CsvOptions, TableOptions};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::arrow::ArrowFormat;
use datafusion::datasource::file_format::avro::AvroFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig};
use datafusion::error::DataFusionError;
use datafusion::execution::cache::cache_manager::FileStatisticsCache;
use futures::{FutureExt, TryStreamExt};
use object_store::ObjectMeta;

pub use location::{Location, looks_like_location};
pub use options::{Compression, DatasetOptions, Format, parse_type_name};
pub use partitions::PartitionColumn;
pub use summary::{ColumnSummary, DatasetSummary, PartitionSummary};
pub use table::DatasetTable;

/// Errors resolving or reading a dataset. Every message names the location it is about.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DatasetError {
    /// The location does not exist.
    #[error("no such file or directory: {location}")]
    NotFound {
        /// The location as written.
        location: String,
    },
    /// The location exists but holds no data files (or a glob matched nothing).
    #[error("{}", if *glob { format!("glob matches no files: {location}") } else { format!("no data files found at {location}") })]
    NoFiles {
        /// The location as written.
        location: String,
        /// Whether the location was a glob.
        glob: bool,
    },
    /// The location cannot be parsed.
    #[error("invalid location '{location}': {message}")]
    InvalidLocation {
        /// The location as written.
        location: String,
        /// Why.
        message: String,
    },
    /// The format cannot be determined.
    #[error(
        "cannot tell the format of {location}: {message}; set it with format = 'parquet|csv|json|arrow|avro'"
    )]
    UnknownFormat {
        /// The location as written.
        location: String,
        /// What was found.
        message: String,
    },
    /// An option is invalid.
    #[error("option '{key}': {message}")]
    Option {
        /// The option key.
        key: String,
        /// Why.
        message: String,
    },
    /// Partition directories are inconsistent.
    #[error("inconsistent partition directories under {location}: {message}")]
    Partitions {
        /// The location as written.
        location: String,
        /// Which paths disagree.
        message: String,
    },
    /// A file could not be read.
    #[error("{}: {}", file.as_ref().unwrap_or(location), crate::types::sql_names_in_message(message))]
    Read {
        /// The dataset location as written.
        location: String,
        /// The file at fault, when known.
        file: Option<String>,
        /// Why.
        message: String,
    },
    /// The object store could not be reached or refused the request.
    #[error("{location}: {message}")]
    Store {
        /// The location as written.
        location: String,
        /// Why.
        message: String,
    },
    /// A table in a database.
    #[error(transparent)]
    Database(Box<crate::databases::DatabaseError>),
}

impl From<crate::databases::DatabaseError> for DatasetError {
    fn from(e: crate::databases::DatabaseError) -> Self {
        DatasetError::Database(Box::new(e))
    }
}

impl DatasetError {
    fn read(location: &str, err: DataFusionError) -> Self {
        if let Some(ours) = find_ours(&err) {
            return ours;
        }
        let is_store = err
            .iter()
            .any(|e| matches!(e, DataFusionError::ObjectStore(_)));
        let message = crate::error::clean_message(&err.find_root().strip_backtrace());
        if is_store {
            if message.contains("not found") || message.contains("NotFound") {
                return DatasetError::NotFound {
                    location: location.into(),
                };
            }
            return DatasetError::Store {
                location: location.into(),
                message,
            };
        }
        DatasetError::Read {
            location: location.into(),
            file: None,
            message,
        }
    }
}

fn find_ours(err: &DataFusionError) -> Option<DatasetError> {
    err.iter().find_map(|e| match e {
        DataFusionError::External(inner) => inner.downcast_ref::<DatasetError>().cloned(),
        _ => None,
    })
}

/// A dataset: where its files are and how to read them.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetSpec {
    /// One or more locations (file, directory, glob or URL).
    pub locations: Vec<String>,
    /// How to read the files.
    pub options: DatasetOptions,
    /// The folder relative local paths resolve against (default: the working directory).
    pub base_dir: Option<PathBuf>,
}

impl DatasetSpec {
    /// A dataset at one location with inferred options.
    pub fn new(location: impl Into<String>) -> Self {
        DatasetSpec {
            locations: vec![location.into()],
            options: DatasetOptions::default(),
            base_dir: None,
        }
    }

    /// Set the options.
    pub fn with_options(mut self, options: DatasetOptions) -> Self {
        self.options = options;
        self
    }

    /// Set one option by key (see [`DatasetOptions::set`]).
    pub fn option(mut self, key: &str, value: &str) -> Result<Self, DatasetError> {
        self.options.set(key, value)?;
        Ok(self)
    }

    /// Resolve relative local paths against `dir`.
    pub fn with_base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = Some(dir.into());
        self
    }

    fn display(&self) -> String {
        self.locations.join(", ")
    }

    /// The table this spec names: a database table when its location is a database URL
    /// (with the `table` option), else the dataset of files it names.
    pub async fn open(
        self,
        state: &dyn Session,
    ) -> Result<Arc<dyn datafusion::catalog::TableProvider>, DatasetError> {
        match self.locations.as_slice() {
            [url] if crate::databases::is_database_url(url) => {
                let table = self
                    .options
                    .table
                    .as_deref()
                    .ok_or_else(|| DatasetError::Option {
                        key: "table".into(),
                        message: format!("{url} is a database: name its table with table = 'name'"),
                    })?;
                Ok(
                    crate::databases::open_table(url, table, self.base_dir.as_deref(), state)
                        .await?,
                )
            }
            _ => Ok(Dataset::resolve(self, state).await?.provider()),
        }
    }
}

/// A dataset resolved against its store: the listing table and what was discovered.
#[derive(Debug)]
pub struct Dataset {
    /// The spec it came from.
    pub spec: DatasetSpec,
    /// The format read.
    pub format: Format,
    /// The partition columns discovered or declared.
    pub partitions: Vec<PartitionColumn>,
    /// The DataFusion table.
    pub table: Arc<DatasetTable>,
    locations: Vec<Location>,
    extension: String,
}

/// One data file of a dataset.
#[derive(Debug, Clone)]
pub struct DataFile {
    /// The file as a user would write it: a local path or a store URL.
    pub url: String,
    /// The listing URL of the location it was found under (names its store).
    pub store_url: datafusion::datasource::listing::ListingTableUrl,
    /// Size, path within the store and modification time.
    pub meta: ObjectMeta,
    /// Its partition directories (`year=2024/month=7`), if any.
    pub partition: Option<String>,
}

impl Dataset {
    /// Resolve `spec`: parse locations, list files, infer format, partitions and schema.
    pub async fn resolve(spec: DatasetSpec, state: &dyn Session) -> Result<Dataset, DatasetError> {
        use futures::FutureExt;
        let location = spec.display();
        // A reader that panics on a malformed file (a truncated Parquet footer) fails this
        // dataset, not the process.
        std::panic::AssertUnwindSafe(Self::resolve_files(spec, state))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                Err(DatasetError::Read {
                    location,
                    file: None,
                    message: format!(
                        "cannot be read: {}",
                        crate::error::panic_message(panic.as_ref())
                    ),
                })
            })
    }

    async fn resolve_files(
        spec: DatasetSpec,
        state: &dyn Session,
    ) -> Result<Dataset, DatasetError> {
        if spec.locations.is_empty() {
            return Err(DatasetError::InvalidLocation {
                location: String::new(),
                message: "a dataset needs at least one location".into(),
            });
        }
        let base_dir = match &spec.base_dir {
            Some(d) => d.clone(),
            None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        };
        if let Some(url) = spec
            .locations
            .iter()
            .find(|l| crate::databases::is_database_url(l))
        {
            return Err(DatasetError::InvalidLocation {
                location: url.clone(),
                message: "a database is one location with its table named (table = 'name'), \
                          or read with postgres_scan, mysql_scan or sqlite_scan"
                    .into(),
            });
        }
        let locations = spec
            .locations
            .iter()
            .map(|l| Location::parse(l, &base_dir))
            .collect::<Result<Vec<_>, _>>()?;

        if let Some(other) = locations
            .iter()
            .find(|l| l.url.object_store() != locations[0].url.object_store())
        {
            return Err(DatasetError::InvalidLocation {
                location: other.original.clone(),
                message: format!(
                    "all locations of one dataset must be in one store, but '{}' is in {} and this one in {}",
                    locations[0].original,
                    locations[0].url.object_store().as_str(),
                    other.url.object_store().as_str()
                ),
            });
        }

        // List every location once: the listing drives format, partition and schema inference.
        let mut listed: Vec<(Location, Vec<ObjectMeta>)> = Vec::with_capacity(locations.len());
        for loc in locations {
            let files = list_files(&loc, state).await?;
            listed.push((loc, files));
        }

        let (format, compression, extension) =
            decide_format(&spec, &listed).map_err(|message| DatasetError::UnknownFormat {
                location: spec.display(),
                message,
            })?;

        // Keep only the files the format reads (extension filter, never hidden files).
        for (loc, files) in listed.iter_mut() {
            files.retain(|m| {
                m.size > 0
                    && m.location
                        .as_ref()
                        .to_ascii_lowercase()
                        .ends_with(&extension)
            });
            if files.is_empty() {
                return Err(DatasetError::NoFiles {
                    location: loc.original.clone(),
                    glob: loc.has_glob,
                });
            }
        }

        let hive = spec.options.hive_partitioning.unwrap_or(true);
        let partitions = if hive {
            partitions::discover(&listed, &spec.options.partition_types)?
        } else {
            Vec::new()
        };

        let file_format = build_format(format, compression, &spec.options, state.table_options());

        let store = state
            .runtime_env()
            .object_store(&listed[0].0.url)
            .map_err(|e| DatasetError::read(&spec.display(), e))?;
        let objects: Vec<ObjectMeta> = listed.iter().flat_map(|(_, f)| f.iter().cloned()).collect();
        let remote = listed[0].0.url.scheme() != "file";
        let schema: SchemaRef = if format == Format::Arrow && remote {
            arrow_file_schema(&store, &objects)
                .await
                .map_err(|message| DatasetError::Read {
                    location: spec.display(),
                    file: None,
                    message,
                })?
        } else {
            // Footers the Parquet and Arrow readers would panic on (or allocate without
            // bound for), and Avro blocks the reader would loop on, are checked first in
            // local files: a few small reads each.
            let base = listed[0].0.url.object_store();
            let malformed = match format {
                Format::Parquet if !remote => {
                    malformed_parquet(&store, base.as_str(), &objects).await
                }
                Format::Arrow if !remote => {
                    ipc_checks::malformed_arrow(&store, base.as_str(), &objects).await
                }
                Format::Avro if !remote => malformed_avro(&store, base.as_str(), &objects).await,
                _ => None,
            };
            if let Some((file, why)) = malformed {
                return Err(DatasetError::Read {
                    location: spec.display(),
                    file: Some(file),
                    message: why,
                });
            }
            let inferred =
                std::panic::AssertUnwindSafe(file_format.infer_schema(state, &store, &objects))
                    .catch_unwind()
                    .await;
            match inferred {
                Ok(schema) => schema.map_err(|e| DatasetError::read(&spec.display(), e))?,
                Err(panic) => {
                    let message = crate::error::panic_message(panic.as_ref());
                    let bad = match format {
                        Format::Parquet => {
                            let base = listed[0].0.url.object_store();
                            malformed_parquet(&store, base.as_str(), &objects).await
                        }
                        _ => None,
                    };
                    return Err(DatasetError::Read {
                        location: spec.display(),
                        file: bad.as_ref().map(|(file, _)| file.clone()),
                        message: bad.map_or(message, |(_, why)| why),
                    });
                }
            }
        };
        check_partition_clash(&schema, &partitions, &spec)?;

        let locations: Vec<Location> = listed.into_iter().map(|(l, _)| l).collect();
        let partition_cols: Vec<(String, DataType)> = partitions
            .iter()
            .map(|p| (p.name.clone(), p.data_type.clone()))
            .collect();
        let table = listing_table(
            &locations,
            file_format,
            &extension,
            partition_cols.clone(),
            schema,
            state.runtime_env().cache_manager.get_file_statistic_cache(),
        )
        .map_err(|e| DatasetError::read(&spec.display(), e))?;
        let recipe = table::Recipe {
            locations: spec.locations.clone(),
            base_dir: Some(base_dir),
            options: spec.options.clone(),
            format,
            compression,
            extension: extension.clone(),
            partitions: partition_cols.into_iter().map(|(n, _)| n).collect(),
        };
        Ok(Dataset {
            spec,
            format,
            partitions,
            table: Arc::new(DatasetTable::new(Arc::new(table), recipe)),
            locations,
            extension,
        })
    }

    /// List the dataset's data files now.
    pub async fn files(&self, state: &dyn Session) -> Result<Vec<DataFile>, DatasetError> {
        data_files(&self.locations, &self.extension, state).await
    }

    /// The table as a DataFusion provider.
    pub fn provider(&self) -> Arc<dyn TableProvider> {
        self.table.clone()
    }
}

/// The data files at `locations` now: those of a dataset's format (`extension`), not empty.
pub(crate) async fn data_files(
    locations: &[Location],
    extension: &str,
    state: &dyn Session,
) -> Result<Vec<DataFile>, DatasetError> {
    let mut out = Vec::new();
    for loc in locations {
        let files = list_files(loc, state).await?;
        let url = loc.url.get_url();
        for meta in files {
            if meta.size == 0
                || !meta
                    .location
                    .as_ref()
                    .to_ascii_lowercase()
                    .ends_with(extension)
            {
                continue;
            }
            let path = meta.location.as_ref();
            let display = if url.scheme() == "file" {
                format!("/{path}")
            } else {
                format!("{}://{}/{path}", url.scheme(), url.host_str().unwrap_or(""))
            };
            let rel = path
                .strip_prefix(loc.url.prefix().as_ref())
                .unwrap_or(path)
                .trim_start_matches('/');
            let dirs: Vec<&str> = rel
                .split('/')
                .rev()
                .skip(1)
                .filter(|s| s.contains('='))
                .collect();
            let partition =
                (!dirs.is_empty()).then(|| dirs.into_iter().rev().collect::<Vec<_>>().join("/"));
            out.push(DataFile {
                url: display,
                store_url: loc.url.clone(),
                meta,
                partition,
            });
        }
    }
    Ok(out)
}

/// An object's name as a user wrote it: a path for local files, a URL otherwise.
pub(super) fn object_name(base: &str, meta: &ObjectMeta) -> String {
    match base.strip_prefix("file://") {
        Some(_) => format!("/{}", meta.location),
        None => format!("{base}{}", meta.location),
    }
}

/// The first of `objects` whose Parquet footer is malformed, and what is wrong with it: the
/// reader panics on some of these instead of failing (local files are checked before reading,
/// remote ones after a panic).
async fn malformed_parquet(
    store: &Arc<dyn object_store::ObjectStore>,
    base: &str,
    objects: &[ObjectMeta],
) -> Option<(String, String)> {
    use object_store::ObjectStoreExt;
    for meta in objects {
        let name = object_name(base, meta);
        let size = meta.size;
        if size < 12 {
            return Some((
                name,
                format!("not a Parquet file: {size} bytes is too small"),
            ));
        }
        let Ok(tail) = store.get_range(&meta.location, size - 8..size).await else {
            continue;
        };
        if &tail[4..] != b"PAR1" {
            return Some((name, "not a Parquet file: no PAR1 footer".into()));
        }
        let length = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) as u64;
        if length + 12 > size {
            return Some((
                name,
                format!(
                    "corrupt Parquet footer: it gives a metadata length of {length} bytes, but the file has {size}"
                ),
            ));
        }
    }
    None
}

/// The first Avro container file whose blocks the reader would loop on or read past its
/// end, and why.
async fn malformed_avro(
    store: &Arc<dyn object_store::ObjectStore>,
    base: &str,
    objects: &[ObjectMeta],
) -> Option<(String, String)> {
    for meta in objects {
        if let Err(why) = avro_blocks::check(store, &meta.location, meta.size).await {
            return Some((object_name(base, meta), why));
        }
    }
    None
}

/// The schema of Arrow IPC files in an object store, read from their footers. (DataFusion's
/// inference reads the start of the object as a stream and fails on files from other stores.)
async fn arrow_file_schema(
    store: &Arc<dyn object_store::ObjectStore>,
    objects: &[ObjectMeta],
) -> Result<SchemaRef, String> {
    use datafusion::arrow::datatypes::Schema;
    use datafusion::arrow::ipc;
    use object_store::ObjectStoreExt;
    let mut schemas = Vec::with_capacity(objects.len());
    for meta in objects {
        let name = meta.location.as_ref();
        let size = meta.size;
        if size < 16 {
            return Err(format!("{name}: too small to be an Arrow IPC file"));
        }
        let tail = store
            .get_range(&meta.location, size - 10..size)
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        if &tail[4..] != b"ARROW1" {
            return Err(format!(
                "{name}: not an Arrow IPC file (no ARROW1 footer); Arrow IPC streams are read from local files only"
            ));
        }
        let footer_len = i32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        if footer_len <= 0 || footer_len as u64 > size - 10 {
            return Err(format!("{name}: corrupt Arrow IPC footer"));
        }
        let footer = store
            .get_range(&meta.location, size - 10 - footer_len as u64..size - 10)
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        let fb = ipc::root_as_footer(&footer)
            .map_err(|e| format!("{name}: corrupt Arrow IPC footer: {e}"))?;
        let schema = fb
            .schema()
            .ok_or_else(|| format!("{name}: Arrow IPC footer has no schema"))?;
        ipc_checks::check_ipc_footer(&fb, size).map_err(|e| format!("{name}: {e}"))?;
        schemas.push(ipc::convert::fb_to_schema(schema));
    }
    Schema::try_merge(schemas)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

fn check_partition_clash(
    schema: &SchemaRef,
    partitions: &[PartitionColumn],
    spec: &DatasetSpec,
) -> Result<(), DatasetError> {
    for p in partitions {
        if schema.field_with_name(&p.name).is_ok() {
            return Err(DatasetError::Partitions {
                location: spec.display(),
                message: format!(
                    "partition column '{}' is also a column inside the files; set hive_partitioning = false to read the files' own column",
                    p.name
                ),
            });
        }
    }
    Ok(())
}

/// List all files under a location, with DataFusion's glob semantics.
async fn list_files(loc: &Location, state: &dyn Session) -> Result<Vec<ObjectMeta>, DatasetError> {
    let store = state
        .runtime_env()
        .object_store(&loc.url)
        .map_err(|e| DatasetError::read(&loc.original, e))?;
    let mut files: Vec<ObjectMeta> = loc
        .url
        .list_all_files(state, store.as_ref(), "")
        .await
        .map_err(|e| DatasetError::read(&loc.original, e))?
        .try_collect()
        .await
        .map_err(|e| DatasetError::read(&loc.original, e))?;
    files.retain(|m| {
        !is_hidden(m.location.as_ref(), loc.url.prefix().as_ref()) && loc.names(&m.location)
    });
    files.sort_by(|a, b| a.location.cmp(&b.location));
    if files.is_empty() {
        if !loc.has_glob && !loc.is_collection {
            return Err(DatasetError::NotFound {
                location: loc.original.clone(),
            });
        }
        return Err(DatasetError::NoFiles {
            location: loc.original.clone(),
            glob: loc.has_glob,
        });
    }
    Ok(files)
}

/// Files and folders starting with `.` or `_` (Spark's `_SUCCESS`, `.crc` files) are not data.
fn is_hidden(path: &str, prefix: &str) -> bool {
    let rel = path.strip_prefix(prefix).unwrap_or(path);
    rel.split('/')
        .filter(|s| !s.is_empty())
        .any(|s| s.starts_with('.') || (s.starts_with('_') && !s.contains('=')))
}

/// Split a file name into (format extension, compression).
fn file_suffix(path: &str) -> (Option<String>, Compression) {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    let mut parts = name.rsplit('.');
    let last = parts.next().unwrap_or("");
    if !name.contains('.') {
        return (None, Compression::None);
    }
    match Compression::from_extension(last) {
        Some(c) => (
            parts
                .next()
                .filter(|_| name.matches('.').count() >= 2)
                .map(str::to_string),
            c,
        ),
        None => (Some(last.to_string()), Compression::None),
    }
}

/// Decide format, compression and the file-name suffix to read.
fn decide_format(
    spec: &DatasetSpec,
    listed: &[(Location, Vec<ObjectMeta>)],
) -> Result<(Format, Compression, String), String> {
    // Count suffixes of the listed files.
    let mut counts: HashMap<(Option<String>, Compression), usize> = HashMap::new();
    for (_, files) in listed {
        for f in files {
            *counts.entry(file_suffix(f.location.as_ref())).or_default() += 1;
        }
    }
    let mut by_count: Vec<_> = counts.into_iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.0.cmp(&b.0.0)));

    let opts = &spec.options;
    let format = match opts.format {
        Some(f) => f,
        None => by_count
            .iter()
            .find_map(|((ext, _), _)| ext.as_deref().and_then(Format::from_extension))
            .ok_or_else(|| {
                let seen: Vec<String> = by_count
                    .iter()
                    .take(5)
                    .map(|((e, _), _)| e.clone().unwrap_or_else(|| "(none)".into()))
                    .collect();
                format!(
                    "no known file extension among its files (found: {})",
                    seen.join(", ")
                )
            })?,
    };

    // The most common suffix that belongs to this format decides extension and compression.
    let matching = by_count
        .iter()
        .find(|((ext, _), _)| ext.as_deref().and_then(Format::from_extension) == Some(format));
    let (ext_from_files, comp_from_files) = match matching {
        Some(((Some(ext), comp), _)) => (format!(".{ext}{}", comp.suffix()), *comp),
        _ => (String::new(), Compression::None),
    };
    let compression = opts.compression.unwrap_or(comp_from_files);
    if matches!(format, Format::Parquet | Format::Arrow | Format::Avro)
        && compression != Compression::None
    {
        return Err(format!(
            "{format} files carry their own compression; compression applies to csv and json only"
        ));
    }
    let extension = match &opts.file_extension {
        Some(e) => e.to_ascii_lowercase(),
        None if opts.format.is_some() && matching.is_none() => String::new(),
        None => ext_from_files,
    };
    Ok((format, compression, extension))
}

/// The DataFusion file format for `format` with `opts` applied.
pub(crate) fn file_format(
    format: Format,
    opts: &DatasetOptions,
    table_options: &TableOptions,
) -> Arc<dyn FileFormat> {
    build_format(
        format,
        opts.compression.unwrap_or(Compression::None),
        opts,
        table_options,
    )
}

/// The listing table over `locations`: files with `extension` read with `format`, the
/// partition columns after the file columns of `file_schema`. Its files' statistics are kept
/// in `statistics` (the runtime's cache), so a query plans without reading every footer
/// again; the cache checks each entry against the size and modification time of the file
/// each query lists, so a changed file is read again.
fn listing_table(
    locations: &[Location],
    format: Arc<dyn FileFormat>,
    extension: &str,
    partition_cols: Vec<(String, DataType)>,
    file_schema: SchemaRef,
    statistics: Option<Arc<FileStatisticsCache>>,
) -> datafusion::error::Result<ListingTable> {
    let options = ListingOptions::new(format)
        .with_file_extension(extension)
        .with_table_partition_cols(partition_cols);
    let urls = locations.iter().map(|l| l.url.clone()).collect();
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(file_schema);
    Ok(ListingTable::try_new(config)?.with_cache(statistics))
}

fn build_format(
    format: Format,
    compression: Compression,
    opts: &DatasetOptions,
    table_options: &TableOptions,
) -> Arc<dyn FileFormat> {
    let fct = match compression {
        Compression::None => FileCompressionType::UNCOMPRESSED,
        Compression::Gzip => FileCompressionType::GZIP,
        Compression::Bzip2 => FileCompressionType::BZIP2,
        Compression::Xz => FileCompressionType::XZ,
        Compression::Zstd => FileCompressionType::ZSTD,
    };
    match format {
        Format::Parquet => {
            Arc::new(ParquetFormat::default().with_options(table_options.parquet.clone()))
        }
        Format::Csv => {
            let mut o: CsvOptions = table_options.csv.clone();
            o.has_header = Some(opts.header.unwrap_or(true));
            if let Some(d) = opts.delimiter {
                o.delimiter = d;
            }
            if let Some(q) = opts.quote {
                o.quote = q;
            }
            if opts.escape.is_some() {
                o.escape = opts.escape;
            }
            if let Some(n) = &opts.null_string {
                o.null_value = Some(n.clone());
                o.null_regex = Some(format!("^{}$", regex_escape(n)));
            }
            if let Some(n) = opts.schema_infer_max_records {
                o.schema_infer_max_rec = Some(n);
            }
            Arc::new(
                CsvFormat::default()
                    .with_options(o)
                    .with_file_compression_type(fct),
            )
        }
        Format::Json => {
            let mut f = JsonFormat::default()
                .with_options(table_options.json.clone())
                .with_file_compression_type(fct);
            if let Some(n) = opts.schema_infer_max_records {
                f = f.with_schema_infer_max_rec(n);
            }
            Arc::new(f)
        }
        Format::Arrow => Arc::new(ArrowFormat),
        Format::Avro => Arc::new(AvroFormat),
    }
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_split_compression() {
        assert_eq!(
            file_suffix("a/b/part-0.csv.gz"),
            (Some("csv".into()), Compression::Gzip)
        );
        assert_eq!(
            file_suffix("x.parquet"),
            (Some("parquet".into()), Compression::None)
        );
        assert_eq!(file_suffix("README"), (None, Compression::None));
    }

    #[test]
    fn hidden_files_are_skipped() {
        assert!(is_hidden("d/_SUCCESS", "d"));
        assert!(is_hidden("d/.x.crc", "d"));
        assert!(!is_hidden("d/year=2024/a.parquet", "d"));
        assert!(!is_hidden("d/a_b.parquet", "d"));
    }
}
